// AWS grants end to end: the real broker app, the real STS SDK client, and a loopback
// STS that verifies the SigV4 signature and validates every AssumeRole parameter.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import fc from 'fast-check';
import { AUDIENCE, AUDITOR_TOKEN, type BrokerFixture } from './helpers/broker-fixture.js';
import { type ReceivedAssumeRole, type StsEmulator } from './emulators/index.js';
import { startAwsBroker, type AwsBroker } from './helpers/aws-broker.js';
import type { AuditRecord } from '../src/audit/types.js';
import { compilePolicies } from '../src/policy/compile.js';

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
  session_name: gh-\${repository_id}-\${run_id}
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
  'aws-tag.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  session_tags:
    ref: \${ref}
`,
  'aws-session-name.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  session_name: \${run_id}
`,
  'aws-source-identity.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: ${ROLE}
  source_identity: \${actor}
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

const CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', repository_id: '7654321', ref: 'refs/heads/main', actor: 'octocat', run_id: '42' };

let aws: AwsBroker;
let sts: StsEmulator;
let fx: BrokerFixture;
const secrets: string[] = [];

before(async () => {
  aws = await startAwsBroker({ policies: POLICIES, brokerKey: BROKER_KEY });
  ({ sts, fx } = aws);
});

after(() => aws.close());

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
    assert.equal(received.RoleSessionName, 'gh-7654321-42');
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

/** Each STS field a claim can fill: the policy that fills it from one claim, and what STS received there. */
const FIELDS = {
  'session tag': { policy: 'aws-tag', claim: 'ref', reason: 'session_tag_invalid', named: "session tag 'ref'", received: (r: ReceivedAssumeRole) => r.Tags.find((t) => t.Key === 'ref')?.Value },
  session_name: { policy: 'aws-session-name', claim: 'run_id', reason: 'session_name_invalid', named: 'session_name', received: (r: ReceivedAssumeRole) => r.RoleSessionName },
  source_identity: { policy: 'aws-source-identity', claim: 'actor', reason: 'source_identity_invalid', named: 'source_identity', received: (r: ReceivedAssumeRole) => r.SourceIdentity },
} as const;
type FieldName = keyof typeof FIELDS;

async function auditCount(): Promise<number> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  return (res.body.events as AuditRecord[]).length;
}

/**
 * Exchanges a token whose `claim` holds `value` for the field's policy. A
 * value is either refused (403 access_denied, one denied record whose reason
 * names the field, STS never called) or reaches STS byte for byte.
 */
async function sendThroughField(field: FieldName, value: string): Promise<{ refused: false; received: string } | { refused: true; reason: string }> {
  const { policy, claim, reason, named, received } = FIELDS[field];
  const calls = sts.callCount();
  const records = await auditCount();
  const res = await exchange(await mint({ ...CLAIMS, [claim]: value }), policy);
  assert.equal(await auditCount(), records + 1, 'one audit record per exchange');
  if (res.status === 200) {
    const call = sts.requests.at(-1)!;
    secrets.push(call.credentials!.SecretAccessKey, call.credentials!.SessionToken);
    assert.equal(sts.callCount(), calls + 1);
    assert.equal(received(call), value, `${field}: what STS received is the claim, byte for byte`);
    assert.equal((await lastRecord()).decision, 'issued');
    return { refused: false, received: received(call)! };
  }
  assert.equal(res.status, 403, JSON.stringify(res.body));
  assert.equal(res.body.error, 'access_denied');
  assert.equal(sts.callCount(), calls, 'STS is never called with a value that does not fit');
  const audit = await lastRecord();
  assert.equal(audit.decision, 'denied');
  assert.equal(audit.error, 'access_denied');
  const recorded = audit.reason ?? '';
  assert.ok(recorded.startsWith(`${reason}: The policy's ${named} cannot be filled from this token: `), recorded);
  assert.ok(res.body.error_description.includes(named), res.body.error_description);
  if (value.length > 40) assert.ok(!recorded.includes(value) && !res.body.error_description.includes(value), 'a long value is not echoed');
  return { refused: true, reason: recorded };
}

describe('a claim that does not fit an STS field is refused, never altered (two claims never share a value)', () => {
  test('branch names that were all rewritten to refs/heads/release_1: only that one passes, the rest are refused', async () => {
    assert.deepEqual(await sendThroughField('session tag', 'refs/heads/release_1'), { refused: false, received: 'refs/heads/release_1' });
    for (const [ref, char] of [['refs/heads/release#1', "'#' (U+0023)"], ['refs/heads/release(1', "'(' (U+0028)"], ['refs/heads/release;1', "';' (U+003B)"]]) {
      const outcome = await sendThroughField('session tag', ref!);
      assert.ok(outcome.refused, ref);
      assert.ok(outcome.reason.includes(`claim 'ref' holds ${char}`), outcome.reason);
    }
  });

  test('a session tag value of 256 characters passes; 257 is refused, not cut', async () => {
    assert.equal((await sendThroughField('session tag', 'a'.repeat(256))).refused, false);
    assert.equal((await sendThroughField('session tag', 'é'.repeat(256))).refused, false, 'AWS counts characters, not bytes');
    const outcome = await sendThroughField('session tag', 'a'.repeat(257));
    assert.ok(outcome.refused);
    assert.match(outcome.reason, /renders to 257 characters, and a session tag value holds at most 256/);
  });

  test('letters of any script, spaces and the tag punctuation reach STS unchanged', async () => {
    for (const value of ['refs/heads/größe-ü 1', 'aws:federated', 'v1.2.3+build=7@x', '', '東京/リリース']) {
      assert.deepEqual(await sendThroughField('session tag', value), { refused: false, received: value });
    }
  });

  test('session_name: fitting values pass; a value outside [\\w+=,.@-] or outside 2-64 characters is refused (no fallback, no cut)', async () => {
    for (const value of ['42', 'gh.acme_api-7@x=1,2+3', 'x'.repeat(64)]) assert.equal((await sendThroughField('session_name', value)).refused, false, value);
    for (const [value, problem] of [
      ['acme/api', "holds '/' (U+002F)"],
      ['x', 'renders to 1 characters, and a session name needs at least 2'],
      ['', 'renders to 0 characters'],
      ['x'.repeat(65), 'renders to 65 characters, and a session name holds at most 64'],
      ['dé', 'holds U+00E9'],
    ] as const) {
      const outcome = await sendThroughField('session_name', value);
      assert.ok(outcome.refused && outcome.reason.includes(problem), `${value}: ${JSON.stringify(outcome)}`);
    }
  });

  test('source_identity: fitting values pass; aws:, spaces and bad lengths are refused', async () => {
    for (const value of ['octocat', 'dependabot-bot@x']) assert.equal((await sendThroughField('source_identity', value)).refused, false, value);
    for (const [value, problem] of [
      ['aws:federated', "holds ':' (U+003A)"],
      ['octo cat', 'holds U+0020'],
      ['o', 'needs at least 2'],
      ['x'.repeat(65), 'holds at most 64'],
    ] as const) {
      const outcome = await sendThroughField('source_identity', value);
      assert.ok(outcome.refused && outcome.reason.includes(problem), `${value}: ${JSON.stringify(outcome)}`);
    }
  });

  const hostile: [string, string][] = [
    ['very long', 'x'.repeat(1500)],
    ['control characters', 'a\u0000b\nc\rd\te\u001b[31m'],
    ['query injection', 'x&Action=GetCallerIdentity&RoleArn=arn:aws:iam::999999999999:role/admin'],
    ['emoji and RTL override', '🚀deploy\u202Egnp.exe'],
    ['quotes and JSON', '"},{"Effect":"Allow","Action":"*","Resource":"*"}'],
  ];
  for (const [name, value] of hostile) {
    test(`hostile: ${name} is refused in every field, never sent in part`, async () => {
      for (const field of Object.keys(FIELDS) as FieldName[]) {
        const outcome = await sendThroughField(field, value);
        assert.ok(outcome.refused, field);
        assert.ok(!/[\u0000-\u001f\u202e]/.test(outcome.reason), 'no control or bidi character in the reason');
      }
    });
  }

  test('property: two distinct claim values that both pass reach STS as two distinct tags, each unchanged', async () => {
    const char = fc.constantFrom('a', 'Z', '0', '_', '-', '.', '/', ':', '=', '+', '@', ' ', 'é', '東', '\u00a0', '#', '(', ';', '*', '\n', '😀', '%', '\u202e');
    const claimValue = fc.oneof(
      { weight: 4, arbitrary: fc.string({ unit: char, maxLength: 12 }) },
      { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('a', 'é', '#'), minLength: 254, maxLength: 259 }) },
    );
    let bothPassed = 0;
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(claimValue, { minLength: 2, maxLength: 2 }), async ([first, second]) => {
        const a = await sendThroughField('session tag', first!);
        const b = await sendThroughField('session tag', second!);
        if (!a.refused && !b.refused) {
          bothPassed++;
          assert.notEqual(a.received, b.received);
        }
      }),
      // The examples make sure some pairs pass in every run, whatever the seed:
      // random pairs of this alphabet both pass only now and then.
      { numRuns: 40, examples: [[['refs/heads/main', 'refs/heads/main2']], [['a.b', 'a_b']], [['a'.repeat(256), 'a'.repeat(255)]]] },
    );
    assert.ok(bothPassed >= 3, 'the example pairs both passed');
  });
});

describe('a template whose own text cannot fit its STS field fails to load, at its line', () => {
  const compile = (grantLines: string[]) =>
    compilePolicies([{ path: 'p.yaml', text: ['issuer: local', 'claims: {repository: acme/api}', 'grant:', '  provider: aws', `  role_arn: ${ROLE}`, ...grantLines.map((l) => `  ${l}`), ''].join('\n') }], {
      issuers: new Map([['local', { audiences: [AUDIENCE] , tenantClaims: [] }]]),
      providers: new Set(['jwt', 'aws']),
    });
  // Line 6 is the first grant key after role_arn; a tag is on the line after `session_tags:`.
  const rows: [name: string, lines: string[], keyPath: string, line: number, message: RegExp][] = [
    ['a tag value with #', ['session_tags:', '  ref: "branch#${ref}"'], 'grant.session_tags.ref', 7, /'#' \(U\+0023\) is not allowed in a session tag value/],
    ['a tag value longer than 256 characters', ['session_tags:', `  ref: "${'x'.repeat(257)}\${ref}"`], 'grant.session_tags.ref', 7, /own text is 257 characters; a session tag value holds at most 256/],
    ['a session name with /', ['session_name: gh/${run_id}'], 'grant.session_name', 6, /'\/' \(U\+002F\) is not allowed in a session name/],
    ['a literal session name of one character', ['session_name: x'], 'grant.session_name', 6, /needs at least 2 characters, not 1/],
    ['a source identity with :', ['source_identity: "aws:${actor}"'], 'grant.source_identity', 6, /':' \(U\+003A\) is not allowed in a source identity/],
    ['a source identity longer than 64 characters', [`source_identity: ${'x'.repeat(65)}`], 'grant.source_identity', 6, /at most 64/],
  ];
  for (const [name, lines, keyPath, line, message] of rows) {
    test(name, () => {
      const result = compile(lines);
      assert.equal(result.ok, false);
      const issue = result.ok ? undefined : result.issues.find((i) => i.keyPath === keyPath);
      assert.ok(issue, JSON.stringify(result));
      assert.equal(issue.file, 'p.yaml');
      assert.equal(issue.line, line, 'the line of the key');
      assert.match(issue.message, message);
    });
  }

  test('templates whose text fits still load', () => {
    const result = compile(['session_name: gh-${run_id}', 'source_identity: ${actor}', 'session_tags:', '  ref: "git ${ref}"', '  empty: ""']);
    assert.ok(result.ok, JSON.stringify(result));
  });
});

describe('session policies never take an IAM wildcard or variable from a claim', () => {
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
