// AWS grants end to end: the real broker app, the real STS SDK client, and a loopback
// STS that verifies the SigV4 signature and validates every AssumeRole parameter.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { startStsEmulator, type StsEmulator } from './emulators/index.js';
import type { AuditRecord } from '../src/audit/types.js';

const BROKER_KEY = { accessKeyId: 'AKIAOIDCBROKERTEST01', secretAccessKey: 'broker/secret/key/for/tests/only/000000000' };
const ROLE = 'arn:aws:iam::123456789012:role/deploy-api';

const POLICIES = {
  'aws-deploy.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  max_duration_seconds: 3600
  session_name: gh-\${repository}-\${run_id}
  source_identity: \${actor}
  session_tags:
    repository: \${repository}
    ref: \${ref}
  transitive_tag_keys: [repository]
  policy_arns: [arn:aws:iam::aws:policy/ReadOnlyAccess]
  external_id: oidc-broker-tests
  session_policy:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Action: ["s3:PutObject"]
        Resource: ["arn:aws:s3:::artifacts/\${repository}/*"]
`,
  'aws-minimal.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  max_duration_seconds: 1800
`,
  'aws-home.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  session_policy:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Action: ["s3:GetObject"]
        Resource: ["arn:aws:s3:::home/\${actor}/*"]
`,
  'jwt-only.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://x.example.com
`,
};

const CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', actor: 'octocat', run_id: '42' };

let sts: StsEmulator;
let fx: BrokerFixture;
const secrets: string[] = [];
const savedEnv = { ...process.env };

before(async () => {
  sts = await startStsEmulator({ ...BROKER_KEY, region: 'eu-west-1' });
  // The broker's own identity comes from the SDK's default chain: here, the environment.
  process.env.AWS_ACCESS_KEY_ID = BROKER_KEY.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = BROKER_KEY.secretAccessKey;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  fx = await startBrokerFixture({ policies: POLICIES, providerConfig: `  aws:\n    region: eu-west-1\n    endpoint: ${sts.url}\n    timeout_seconds: 3\n` });
});

after(async () => {
  await fx.close();
  await sts.close();
  process.env = savedEnv;
});

beforeEach(() => sts.setFault({ kind: 'none' }));

async function mint(claims: Record<string, unknown> = CLAIMS): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims });
  secrets.push(token);
  return token;
}

function exchange(token: string, policy: string, query = '', extra: object = {}) {
  return request(fx.broker.app).post(`/v1/exchange${query}`).set('Authorization', `Bearer ${token}`).send({ policy, ...extra });
}

async function record(id: string): Promise<AuditRecord> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  const found = (res.body.events as AuditRecord[]).find((e) => e.id === id);
  assert.ok(found);
  return found;
}

async function lastRecord(): Promise<AuditRecord> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  return (res.body.events as AuditRecord[]).at(-1)!;
}

describe('AssumeRole with a session scoped from verified claims', () => {
  test('answers exactly the credential STS issued, after sending every rendered parameter', async () => {
    const calls = sts.requests.length;
    const res = await exchange(await mint(), 'aws-deploy');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const received = sts.requests[calls]!;
    const issued = received.credentials!;
    secrets.push(issued.SecretAccessKey, issued.SessionToken);
    assert.deepEqual(res.body.credentials, {
      AccessKeyId: issued.AccessKeyId,
      SecretAccessKey: issued.SecretAccessKey,
      SessionToken: issued.SessionToken,
      Expiration: issued.Expiration.toISOString(),
    });
    assert.equal(res.body.provider, 'aws');
    assert.equal(res.body.expires_at, issued.Expiration.toISOString());

    assert.equal(received.RoleArn, ROLE);
    assert.equal(received.RoleSessionName, 'gh-acme-api-42');
    assert.equal(received.SourceIdentity, 'octocat');
    assert.equal(received.DurationSeconds, 3600);
    assert.deepEqual(received.Tags, [
      { Key: 'repository', Value: 'acme/api' },
      { Key: 'ref', Value: 'refs/heads/main' },
    ]);
    assert.deepEqual(received.TransitiveTagKeys, ['repository']);
    assert.deepEqual(received.PolicyArns, ['arn:aws:iam::aws:policy/ReadOnlyAccess']);
    assert.equal(received.ExternalId, 'oidc-broker-tests');
    assert.deepEqual(JSON.parse(received.Policy!), {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: ['s3:PutObject'], Resource: ['arn:aws:s3:::artifacts/acme/api/*'] }],
    });

    const audit = await record(res.body.issuance_id);
    assert.equal(audit.decision, 'issued');
    assert.equal(audit.provider, 'aws');
    assert.equal(audit.target, ROLE);
    assert.equal(audit.credential_id, issued.AccessKeyId);
    assert.equal(audit.duration_seconds, 3600);
  });

  test('durations are clamped to [900, max_duration_seconds]; the default is the ceiling', async () => {
    for (const [asked, expected] of [[undefined, 1800], [100, 900], [1000, 1000], [40_000, 1800]] as const) {
      const calls = sts.requests.length;
      const res = await exchange(await mint(), 'aws-minimal', '', asked === undefined ? {} : { duration_seconds: asked });
      assert.equal(res.status, 200);
      assert.equal(sts.requests[calls]!.DurationSeconds, expected, `asked ${asked}`);
      assert.match(sts.requests[calls]!.RoleSessionName!, /^oidc-broker-[0-9A-Z]{26}$/, 'default session name leads to the audit record');
    }
  });

  test('?format=env and ?format=credential_process', async () => {
    const env = await exchange(await mint(), 'aws-minimal', '?format=env');
    assert.equal(env.status, 200);
    const issued = sts.requests.at(-1)!.credentials!;
    secrets.push(issued.SecretAccessKey, issued.SessionToken);
    assert.equal(
      env.text,
      `export AWS_ACCESS_KEY_ID='${issued.AccessKeyId}'\nexport AWS_SECRET_ACCESS_KEY='${issued.SecretAccessKey}'\nexport AWS_SESSION_TOKEN='${issued.SessionToken}'\nexport AWS_REGION='eu-west-1'\n`,
    );
    const cp = await exchange(await mint(), 'aws-minimal', '?format=credential_process');
    assert.equal(cp.status, 200);
    const issued2 = sts.requests.at(-1)!.credentials!;
    secrets.push(issued2.SecretAccessKey, issued2.SessionToken);
    assert.deepEqual(cp.body, {
      Version: 1,
      AccessKeyId: issued2.AccessKeyId,
      SecretAccessKey: issued2.SecretAccessKey,
      SessionToken: issued2.SessionToken,
      Expiration: issued2.Expiration.toISOString(),
    });
  });

  test('credential_process for a non-AWS grant is refused before anything is issued', async () => {
    const res = await exchange(await mint(), 'jwt-only', '?format=credential_process');
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'invalid_request');
    assert.equal((await lastRecord()).error, 'invalid_request');
  });
});

describe('hostile claim values never break out of a parameter or make an invalid request', () => {
  const hostile: [string, string][] = [
    ['very long', 'x'.repeat(1500)],
    ['control characters', 'a\u0000b\nc\rd\te\u001b[31m'],
    ['aws: prefix', 'aws:federated'],
    ['query injection', 'x&Action=GetCallerIdentity&RoleArn=arn:aws:iam::999999999999:role/admin'],
    ['emoji and RTL override', '🚀deploy\u202Egnp.exe'],
    ['quotes and JSON', '"},{"Effect":"Allow","Action":"*","Resource":"*"}'],
  ];
  for (const [name, value] of hostile) {
    test(name, async () => {
      const calls = sts.requests.length;
      const res = await exchange(await mint({ ...CLAIMS, actor: value, ref: value, run_id: value }), 'aws-deploy');
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const received = sts.requests[calls]!;
      secrets.push(received.credentials!.SecretAccessKey, received.credentials!.SessionToken);
      assert.equal(received.RoleArn, ROLE, 'the role cannot be changed by a claim');
      assert.match(received.RoleSessionName!, /^[\w+=,.@-]{2,64}$/);
      assert.match(received.SourceIdentity!, /^[\w+=,.@-]{2,64}$/);
      assert.doesNotMatch(received.SourceIdentity!, /^aws:/i);
      for (const tag of received.Tags) assert.match(tag.Value, /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$/u);
      assert.equal(received.Tags.length, 2);
      assert.deepEqual(JSON.parse(received.Policy!).Statement[0].Resource, ['arn:aws:s3:::artifacts/acme/api/*']);
    });
  }

  for (const [name, actor, reason] of [
    ['an IAM wildcard', 'octo*', 'template_claim_unusable'],
    ['a single-character wildcard', 'oct?cat', 'template_claim_unusable'],
    ['an IAM policy variable', '${aws:username}', 'template_claim_unusable'],
    ['a value that makes the policy too large', 'x'.repeat(3000), 'session_policy_too_large'],
  ] as const) {
    test(`a claim with ${name} in a session policy is refused before STS is called`, async () => {
      const calls = sts.callCount();
      const res = await exchange(await mint({ ...CLAIMS, actor }), 'aws-home');
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.equal(res.body.error, 'access_denied');
      assert.equal(sts.callCount(), calls);
      assert.ok((await lastRecord()).reason?.startsWith(`${reason}: `));
    });
  }
});

describe('STS failures', () => {
  const cases: [fault: Parameters<StsEmulator['setFault']>[0], code: string][] = [
    [{ kind: 'AccessDenied' }, 'aws:AccessDenied'],
    [{ kind: 'ValidationError' }, 'aws:ValidationError'],
    [{ kind: 'MalformedPolicyDocument' }, 'aws:MalformedPolicyDocumentException'],
    [{ kind: 'Throttling' }, 'aws:Throttling'],
    [{ kind: 'InternalFailure' }, 'aws:InternalFailure'],
    [{ kind: 'garbage' }, 'aws:BadResponse'],
  ];
  for (const [fault, code] of cases) {
    test(`${fault.kind} answers 502 provider_error with a sentence and an error record`, async () => {
      sts.setFault(fault);
      const res = await exchange(await mint(), 'aws-minimal');
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.error, 'provider_error');
      assert.doesNotMatch(res.body.error_description, /arn:aws:sts|not authorized to perform|<Error>|Rate exceeded/, 'no upstream detail');
      assert.equal(res.body.credentials, undefined);
      const audit = await lastRecord();
      assert.equal(audit.decision, 'error');
      assert.equal(audit.error, 'provider_error');
      assert.ok(audit.reason?.startsWith(`${code}: `), audit.reason ?? '');
      assert.equal(audit.credential_id, null);
    });
  }

  test('AccessDenied is not retried; throttling is, with backoff, and then succeeds', async () => {
    sts.setFault({ kind: 'AccessDenied' });
    let before = sts.callCount();
    await exchange(await mint(), 'aws-minimal');
    assert.equal(sts.callCount() - before, 1);
    sts.setFault({ kind: 'Throttling', times: 2 });
    before = sts.callCount();
    const res = await exchange(await mint(), 'aws-minimal');
    assert.equal(res.status, 200);
    assert.equal(sts.callCount() - before, 3);
    secrets.push(sts.requests.at(-1)!.credentials!.SecretAccessKey, sts.requests.at(-1)!.credentials!.SessionToken);
  });

  test('a hung STS answers the caller within the configured timeout', async () => {
    sts.setFault({ kind: 'hang' });
    const started = Date.now();
    const res = await exchange(await mint(), 'aws-minimal');
    const elapsedMs = Date.now() - started;
    assert.equal(res.status, 502);
    assert.ok(elapsedMs < 3000 + 2000, `answered in ${elapsedMs} ms`);
    assert.ok((await lastRecord()).reason?.startsWith('aws:Timeout'));
  });

  test('after a provider failure the same token can be exchanged again', async () => {
    const token = await mint();
    sts.setFault({ kind: 'InternalFailure' });
    assert.equal((await exchange(token, 'aws-minimal')).status, 502);
    sts.setFault({ kind: 'none' });
    const retry = await exchange(token, 'aws-minimal');
    assert.equal(retry.status, 200);
    secrets.push(sts.requests.at(-1)!.credentials!.SecretAccessKey, sts.requests.at(-1)!.credentials!.SessionToken);
  });
});

test('no secret key, session token or CI token is stored or logged', async () => {
  const db = Buffer.concat([
    await readFile(path.join(fx.dir, 'data', 'audit.db')),
    await readFile(path.join(fx.dir, 'data', 'audit.db-wal')).catch(() => Buffer.alloc(0)),
  ]);
  const logs = fx.logLines().join('\n');
  assert.ok(secrets.length > 20);
  for (const secret of secrets) {
    const probe = secret.includes('.') ? secret.split('.')[2]! : secret;
    assert.ok(!db.includes(probe), 'not in the audit database');
    assert.ok(!logs.includes(probe), 'not in the logs');
  }
  assert.ok(!logs.includes(BROKER_KEY.secretAccessKey));
});
