/**
 * The STS emulator, driven by the real `@aws-sdk/client-sts` so every assertion is about what the
 * SDK actually sends and parses: signatures verified, every AssumeRole rule enforced, faults mapped.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient, type AssumeRoleCommandInput, type STSClientConfig } from '@aws-sdk/client-sts';
import { startStsEmulator, verifySigV4, type StsEmulator } from './emulators/index.js';
import { assertExpiresAfterIssue } from './helpers/lifetime.js';

const AKID = 'AKIAEMULATORTEST0001';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEMULATORKEY';
const ROLE_ARN = 'arn:aws:iam::210987654321:role/ci/deploy-prod';

function clientFor(sts: StsEmulator, overrides: Partial<STSClientConfig> = {}): STSClient {
  return new STSClient({
    endpoint: sts.url,
    region: 'us-east-1',
    credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
    maxAttempts: 1,
    ...overrides,
  });
}

function assumeRole(input: Partial<AssumeRoleCommandInput> = {}): AssumeRoleCommand {
  return new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'oidc-broker-test', ...input });
}

interface SdkError extends Error {
  $metadata: { httpStatusCode?: number; attempts?: number };
  $fault?: string;
}

/** Awaits `promise`, asserts it rejects with an SDK error of this name (and status), returns it. */
async function expectSdkError(promise: Promise<unknown>, name: string, status?: number, message?: RegExp): Promise<SdkError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected ${name}, but the call succeeded`);
  const err = caught as SdkError;
  assert.equal(err.name, name, `error: ${err.name}: ${err.message}`);
  if (status !== undefined) assert.equal(err.$metadata?.httpStatusCode, status, `status of ${err.name}: ${err.message}`);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}

const POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: ['s3:GetObject'], Resource: 'arn:aws:s3:::acme-artifacts/*' }],
});

describe('STS emulator: success', () => {
  let sts: StsEmulator;
  before(async () => {
    sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET, roleMaxSessionSeconds: 7200 });
  });
  after(() => sts.close());

  it('returns the recorded credential and receives every parameter as sent', async () => {
    const input: AssumeRoleCommandInput = {
      RoleArn: ROLE_ARN,
      RoleSessionName: 'gh-acme_api+run=42,x.y@z-1',
      DurationSeconds: 7200,
      Policy: POLICY,
      PolicyArns: [{ arn: 'arn:aws:iam::aws:policy/ReadOnlyAccess' }, { arn: 'arn:aws:iam::210987654321:policy/boundary' }],
      Tags: [
        { Key: 'repository', Value: 'acme/api' },
        { Key: 'ref', Value: 'refs/heads/main' },
        { Key: 'actor', Value: 'Zoë Ünïcode 42 =+-@:._/' },
        { Key: 'empty', Value: '' },
      ],
      TransitiveTagKeys: ['repository', 'ref'],
      ExternalId: 'ext-id:acme/api=1',
      SourceIdentity: 'octocat@github',
    };
    const startedMs = Date.now();
    const out = await clientFor(sts).send(new AssumeRoleCommand(input));
    const finishedMs = Date.now();
    assert.equal(sts.callCount(), 1);
    assert.equal(sts.requests.length, 1);
    const got = sts.requests[0]!;

    // What arrived.
    assert.equal(got.RoleArn, input.RoleArn);
    assert.equal(got.RoleSessionName, input.RoleSessionName);
    assert.equal(got.DurationSeconds, 7200);
    assert.equal(got.Policy, POLICY, 'the session policy arrives byte for byte');
    assert.deepEqual(got.PolicyArns, ['arn:aws:iam::aws:policy/ReadOnlyAccess', 'arn:aws:iam::210987654321:policy/boundary']);
    assert.deepEqual(got.Tags, input.Tags);
    assert.deepEqual(got.TransitiveTagKeys, ['repository', 'ref']);
    assert.equal(got.ExternalId, input.ExternalId);
    assert.equal(got.SourceIdentity, input.SourceIdentity);
    assert.match(got.body, /^Action=AssumeRole&Version=2011-06-15&/);
    for (const header of ['host', 'x-amz-date', 'x-amz-content-sha256', 'content-type']) {
      assert.ok(header in got.signedHeaders, `${header} is signed`);
    }
    assert.equal(got.signedHeaders['content-type'], 'application/x-www-form-urlencoded');
    assert.equal(got.status, 200);
    assert.equal(got.errorCode, undefined);

    // What was answered, and that the SDK parsed exactly it.
    const issued = got.credentials;
    assert.ok(issued);
    assert.equal(out.$metadata.httpStatusCode, 200);
    assert.deepEqual(out.Credentials, {
      AccessKeyId: issued.AccessKeyId,
      SecretAccessKey: issued.SecretAccessKey,
      SessionToken: issued.SessionToken,
      Expiration: issued.Expiration,
    });
    assert.match(issued.AccessKeyId, /^ASIA[A-Z0-9]{16}$/);
    assert.equal(issued.SecretAccessKey.length, 40);
    assert.ok(issued.SessionToken.length > 300);
    assertExpiresAfterIssue(issued.Expiration.getTime(), 7200_000, startedMs, finishedMs);
    assert.deepEqual(out.AssumedRoleUser, { AssumedRoleId: issued.AssumedRoleId, Arn: 'arn:aws:sts::210987654321:assumed-role/deploy-prod/gh-acme_api+run=42,x.y@z-1' });
    assert.match(issued.AssumedRoleId, /^AROA[A-Z0-9]{17}:gh-acme_api\+run=42,x\.y@z-1$/);
    assert.equal(out.SourceIdentity, 'octocat@github');
    assert.equal(typeof out.PackedPolicySize, 'number');
    assert.equal(out.PackedPolicySize, issued.PackedPolicySize);
    assert.ok(out.PackedPolicySize! > 0 && out.PackedPolicySize! <= 100);
  });

  it('issues a fresh random credential per call, a stable role id, and defaults to 3600 s', async () => {
    const client = clientFor(sts);
    const beforeA = Date.now();
    const a = await client.send(assumeRole());
    const afterA = Date.now();
    const b = await client.send(assumeRole());
    assert.notEqual(a.Credentials?.AccessKeyId, b.Credentials?.AccessKeyId);
    assert.notEqual(a.Credentials?.SecretAccessKey, b.Credentials?.SecretAccessKey);
    assert.notEqual(a.Credentials?.SessionToken, b.Credentials?.SessionToken);
    assert.equal(a.AssumedRoleUser?.AssumedRoleId, b.AssumedRoleUser?.AssumedRoleId);
    assert.equal(a.PackedPolicySize, undefined, 'no PackedPolicySize without policy or tags');
    assert.equal(a.SourceIdentity, undefined);
    assertExpiresAfterIssue(a.Credentials!.Expiration!.getTime(), 3600_000, beforeA, afterA);
    const [ra, rb] = sts.requests.slice(-2);
    assert.equal(ra?.credentials?.AccessKeyId, a.Credentials?.AccessKeyId);
    assert.equal(rb?.credentials?.AccessKeyId, b.Credentials?.AccessKeyId);
    assert.equal(ra?.DurationSeconds, undefined);
  });

  it('accepts the boundary values', async () => {
    const client = clientFor(sts);
    const rows: Partial<AssumeRoleCommandInput>[] = [
      { RoleSessionName: 'ab' },
      { RoleSessionName: 'a'.repeat(64) },
      { DurationSeconds: 900 },
      { DurationSeconds: 7200 },
      { SourceIdentity: 'xy' },
      { SourceIdentity: 'aws-not-reserved' },
      { ExternalId: 'a'.repeat(1224) },
      { Tags: Array.from({ length: 50 }, (_, i) => ({ Key: `k${i}`, Value: `v${i}` })), TransitiveTagKeys: Array.from({ length: 50 }, (_, i) => `K${i}`) },
      { Tags: [{ Key: 'k'.repeat(128), Value: 'v'.repeat(256) }] },
      { PolicyArns: Array.from({ length: 10 }, (_, i) => ({ arn: `arn:aws:iam::aws:policy/P${i}` })) },
      { RoleArn: 'arn:aws:iam::123456789012:role/r' },
    ];
    for (const row of rows) {
      const out = await client.send(assumeRole(row));
      assert.equal(out.$metadata.httpStatusCode, 200, JSON.stringify(row).slice(0, 80));
    }
  });
});

describe('STS emulator: signature verification', () => {
  let sts: StsEmulator;
  before(async () => {
    sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET });
  });
  after(() => sts.close());
  beforeEach(() => {
    sts.requests.length = 0;
  });

  it('rejects a wrong secret key: the signature check can fail', async () => {
    const calls = sts.callCount();
    const client = clientFor(sts, { credentials: { accessKeyId: AKID, secretAccessKey: `${SECRET.slice(0, -1)}X` } });
    await expectSdkError(client.send(assumeRole()), 'SignatureDoesNotMatch', 403, /signature we calculated does not match/);
    assert.equal(sts.callCount(), calls + 1);
    assert.equal(sts.requests.length, 0, 'an unauthenticated call is not recorded');
  });

  it('rejects an unknown access key id', async () => {
    const client = clientFor(sts, { credentials: { accessKeyId: 'AKIAUNKNOWNKEY000000', secretAccessKey: SECRET } });
    await expectSdkError(client.send(assumeRole()), 'InvalidClientTokenId', 403);
  });

  it('rejects a credential scope for another region', async () => {
    await expectSdkError(clientFor(sts, { region: 'eu-west-1' }).send(assumeRole()), 'SignatureDoesNotMatch', 403, /scoped to a valid region/);
  });

  it('rejects an x-amz-date more than 5 minutes off, either way', async () => {
    await expectSdkError(clientFor(sts, { systemClockOffset: -6 * 60_000 }).send(assumeRole()), 'SignatureDoesNotMatch', 403, /Signature expired/);
    await expectSdkError(clientFor(sts, { systemClockOffset: 6 * 60_000 }).send(assumeRole()), 'SignatureDoesNotMatch', 403, /not yet current/);
    const out = await clientFor(sts, { systemClockOffset: -4 * 60_000 }).send(assumeRole());
    assert.equal(out.$metadata.httpStatusCode, 200, 'within 5 minutes is fine');
  });

  it('recomputes the signature over the body and the signed headers', async () => {
    // A deserialize-step middleware runs after signing: it tampers with what goes on the wire.
    const tampered = (mutate: (request: { headers: Record<string, string>; body: string }) => void): STSClient => {
      const client = clientFor(sts);
      client.middlewareStack.add(
        (next) => async (args) => {
          mutate(args.request as { headers: Record<string, string>; body: string });
          return next(args);
        },
        { step: 'deserialize', name: 'tamperAfterSigning' },
      );
      return client;
    };
    // Body changed, declared hash left alone: the content hash check catches it.
    await expectSdkError(
      tampered((r) => {
        r.body = r.body.replace('oidc-broker-test', 'oidc-broker-evil');
      }).send(assumeRole()),
      'SignatureDoesNotMatch',
      403,
      /x-amz-content-sha256/,
    );
    // Body changed and its declared hash fixed up: only the signature itself can catch it.
    await expectSdkError(
      tampered((r) => {
        r.body = r.body.replace('oidc-broker-test', 'oidc-broker-evil');
        r.headers['x-amz-content-sha256'] = createHash('sha256').update(r.body).digest('hex');
      }).send(assumeRole()),
      'SignatureDoesNotMatch',
      403,
      /signature we calculated/,
    );
    // A signed header changed.
    await expectSdkError(
      tampered((r) => {
        r.headers['amz-sdk-request'] = 'attempt=9; max=9';
      }).send(assumeRole()),
      'SignatureDoesNotMatch',
      403,
    );
    assert.equal(sts.requests.length, 0);
  });

  it('rejects an unsigned request', async () => {
    const res = await fetch(sts.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `Action=AssumeRole&Version=2011-06-15&RoleArn=${encodeURIComponent(ROLE_ARN)}&RoleSessionName=x1`,
    });
    assert.equal(res.status, 403);
    const xml = await res.text();
    assert.match(xml, /^<ErrorResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/">/);
    assert.match(xml, /<Type>Sender<\/Type>\s*<Code>MissingAuthenticationToken<\/Code>/);
    assert.match(xml, /<RequestId>[0-9a-f-]{36}<\/RequestId>/);
  });

  it('verifies the AWS SigV4 test suite vector get-vanilla', () => {
    const authorization = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31';
    const request = { method: 'GET', url: '/', rawHeaders: ['Host', 'example.amazonaws.com', 'X-Amz-Date', '20150830T123600Z', 'Authorization', authorization], body: Buffer.alloc(0) };
    const expectation = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', region: 'us-east-1', service: 'service', now: new Date('2015-08-30T12:36:00Z') };
    assert.equal(verifySigV4(request, expectation).ok, true);
    const wrong = verifySigV4({ ...request, url: '/?a=b' }, expectation);
    assert.equal(wrong.ok, false);
    assert.equal(!wrong.ok && wrong.error.code, 'SignatureDoesNotMatch');
  });
});

describe('STS emulator: session token', () => {
  let sts: StsEmulator;
  before(async () => {
    sts = await startStsEmulator({ accessKeyId: 'ASIABROKERSESSION001', secretAccessKey: SECRET, sessionToken: 'broker-session-token', region: 'eu-central-1' });
  });
  after(() => sts.close());

  it('requires exactly the configured x-amz-security-token', async () => {
    const base = { region: 'eu-central-1' };
    const ok = await clientFor(sts, { ...base, credentials: { accessKeyId: 'ASIABROKERSESSION001', secretAccessKey: SECRET, sessionToken: 'broker-session-token' } }).send(assumeRole());
    assert.equal(ok.$metadata.httpStatusCode, 200);
    assert.equal(sts.requests[0]?.signedHeaders['x-amz-security-token'], 'broker-session-token');
    await expectSdkError(clientFor(sts, { ...base, credentials: { accessKeyId: 'ASIABROKERSESSION001', secretAccessKey: SECRET } }).send(assumeRole()), 'InvalidClientTokenId', 403);
    await expectSdkError(clientFor(sts, { ...base, credentials: { accessKeyId: 'ASIABROKERSESSION001', secretAccessKey: SECRET, sessionToken: 'other' } }).send(assumeRole()), 'InvalidClientTokenId', 403);
    assert.equal(sts.requests.length, 1);
  });
});

describe('STS emulator: AssumeRole validation', () => {
  let sts: StsEmulator;
  before(async () => {
    sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET });
  });
  after(() => sts.close());

  const tags = (n: number): { Key: string; Value: string }[] => Array.from({ length: n }, (_, i) => ({ Key: `key${i}`, Value: `value${i}` }));
  const rows: { name: string; input: Partial<AssumeRoleCommandInput>; code: string; message: RegExp }[] = [
    { name: 'missing RoleArn', input: { RoleArn: undefined }, code: 'ValidationError', message: /'roleArn' failed to satisfy constraint: Member must not be null/ },
    { name: 'RoleArn too short', input: { RoleArn: 'arn:aws:iam::1:r' }, code: 'ValidationError', message: /greater than or equal to 20/ },
    { name: 'RoleArn of a user', input: { RoleArn: 'arn:aws:iam::123456789012:user/deploy' }, code: 'ValidationError', message: /is invalid/ },
    { name: 'RoleArn with a short account', input: { RoleArn: 'arn:aws:iam::12345678901:role/deploy' }, code: 'ValidationError', message: /is invalid/ },
    { name: 'missing RoleSessionName', input: { RoleSessionName: undefined }, code: 'ValidationError', message: /'roleSessionName'.*must not be null/ },
    { name: 'session name with a space', input: { RoleSessionName: 'oidc broker' }, code: 'ValidationError', message: /'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern/ },
    { name: 'session name of 65 chars', input: { RoleSessionName: 'a'.repeat(65) }, code: 'ValidationError', message: /less than or equal to 64/ },
    { name: 'session name of 1 char', input: { RoleSessionName: 'a' }, code: 'ValidationError', message: /greater than or equal to 2/ },
    { name: 'duration 899', input: { DurationSeconds: 899 }, code: 'ValidationError', message: /'durationSeconds'.*greater than or equal to 900/ },
    { name: 'duration 43201', input: { DurationSeconds: 43201 }, code: 'ValidationError', message: /less than or equal to 43200/ },
    { name: 'duration above the role maximum', input: { DurationSeconds: 3601 }, code: 'ValidationError', message: /MaxSessionDuration/ },
    { name: 'source identity aws:x', input: { SourceIdentity: 'aws:x' }, code: 'ValidationError', message: /reserved prefix 'aws:'/ },
    { name: 'source identity AWS:xy', input: { SourceIdentity: 'AWS:xy' }, code: 'ValidationError', message: /reserved prefix/ },
    { name: 'source identity with a slash', input: { SourceIdentity: 'acme/api' }, code: 'ValidationError', message: /'sourceIdentity'.*pattern/ },
    { name: 'source identity of 65 chars', input: { SourceIdentity: 's'.repeat(65) }, code: 'ValidationError', message: /'sourceIdentity'.*64/ },
    { name: '51 tags', input: { Tags: tags(51) }, code: 'ValidationError', message: /'tags' failed to satisfy constraint: Member must have length less than or equal to 50/ },
    { name: 'tag value with a control char', input: { Tags: [{ Key: 'k', Value: 'bell\u0007' }] }, code: 'ValidationError', message: /'tags\.1\.member\.value'.*pattern/ },
    { name: 'tag value with an emoji', input: { Tags: [{ Key: 'k', Value: 'ship it \u{1F680}' }] }, code: 'ValidationError', message: /'tags\.1\.member\.value'.*pattern/ },
    { name: 'tag value with a comma', input: { Tags: [{ Key: 'k', Value: 'a,b' }] }, code: 'ValidationError', message: /'tags\.1\.member\.value'.*pattern/ },
    { name: 'tag value of 257 chars', input: { Tags: [{ Key: 'k', Value: 'v'.repeat(257) }] }, code: 'ValidationError', message: /less than or equal to 256/ },
    { name: 'empty tag key', input: { Tags: [{ Key: '', Value: 'v' }] }, code: 'ValidationError', message: /'tags\.1\.member\.key'.*greater than or equal to 1/ },
    { name: 'tag key of 129 chars', input: { Tags: [{ Key: 'k'.repeat(129), Value: 'v' }] }, code: 'ValidationError', message: /less than or equal to 128/ },
    { name: 'tag key with aws: prefix', input: { Tags: [{ Key: 'aws:repo', Value: 'v' }] }, code: 'ValidationError', message: /reserved prefix/ },
    { name: 'duplicate tag keys, case-insensitively', input: { Tags: [{ Key: 'Repo', Value: 'a' }, { Key: 'repo', Value: 'b' }] }, code: 'ValidationError', message: /Duplicate tag keys/ },
    { name: 'transitive key not among the tags', input: { Tags: [{ Key: 'repo', Value: 'a' }], TransitiveTagKeys: ['ref'] }, code: 'ValidationError', message: /transitive tag key 'ref' must be included/ },
    { name: '51 transitive keys', input: { Tags: tags(50), TransitiveTagKeys: Array.from({ length: 51 }, (_, i) => `key${i % 50}`) }, code: 'ValidationError', message: /'transitiveTagKeys'.*50/ },
    { name: 'external id of 1 char', input: { ExternalId: 'x' }, code: 'ValidationError', message: /'externalId'.*greater than or equal to 2/ },
    { name: 'external id with a space', input: { ExternalId: 'ext id' }, code: 'ValidationError', message: /'externalId'.*pattern/ },
    { name: 'external id of 1225 chars', input: { ExternalId: 'e'.repeat(1225) }, code: 'ValidationError', message: /1224/ },
    { name: '11 policy ARNs', input: { PolicyArns: Array.from({ length: 11 }, (_, i) => ({ arn: `arn:aws:iam::aws:policy/P${i}` })) }, code: 'ValidationError', message: /'policyArns'.*10/ },
    { name: 'a short policy ARN', input: { PolicyArns: [{ arn: 'arn:aws:iam::aws:p' }] }, code: 'ValidationError', message: /'policyArns\.1\.member\.arn'.*20/ },
    { name: 'a policy ARN that is not an ARN', input: { PolicyArns: [{ arn: 'ReadOnlyAccess-policy-name' }] }, code: 'ValidationError', message: /is invalid/ },
    { name: 'policy of 2049 chars', input: { Policy: `${POLICY.slice(0, -1)}${' '.repeat(2049 - POLICY.length)}}` }, code: 'ValidationError', message: /'policy'.*less than or equal to 2048/ },
    { name: 'policy outside Latin-1', input: { Policy: POLICY.replace('acme-artifacts', 'acme-\u0101rtifacts') }, code: 'ValidationError', message: /'policy'.*pattern/ },
    { name: 'malformed policy JSON', input: { Policy: '{"Version":"2012-10-17","Statement":[' }, code: 'MalformedPolicyDocumentException', message: /not in the valid JSON format/ },
    { name: 'policy without Statement', input: { Policy: '{"Version":"2012-10-17"}' }, code: 'MalformedPolicyDocumentException', message: /Statement/ },
    { name: 'policy without Version', input: { Policy: '{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}' }, code: 'MalformedPolicyDocumentException', message: /Version/ },
    { name: 'policy with a Principal', input: { Policy: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}]}' }, code: 'MalformedPolicyDocumentException', message: /principal/ },
    {
      name: 'packed policy too large',
      input: {
        Policy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: `arn:aws:s3:::${'b'.repeat(1800)}` }] }),
        Tags: [{ Key: 'k', Value: 'v'.repeat(256) }],
      },
      code: 'PackedPolicyTooLargeException',
      message: /Packed policy consumes \d+% of allotted space/,
    },
  ];

  for (const row of rows) {
    it(`rejects ${row.name}`, async () => {
      const recordedBefore = sts.requests.length;
      await expectSdkError(clientFor(sts).send(assumeRole(row.input)), row.code, 400, row.message);
      const recorded = sts.requests[recordedBefore];
      assert.ok(recorded, 'an authenticated but invalid call is recorded');
      assert.equal(recorded.status, 400);
      assert.equal(recorded.errorCode, row.code.replace(/Exception$/, ''));
      assert.equal(recorded.credentials, undefined);
    });
  }

  it('collects several member violations into one ValidationError, as STS does', async () => {
    await expectSdkError(clientFor(sts).send(assumeRole({ RoleSessionName: 'a b', DurationSeconds: 60 })), 'ValidationError', 400, /^2 validation errors detected: .*roleSessionName.*; .*durationSeconds/);
  });

  it('rejects unknown parameters, another Version and other actions', async () => {
    // A build-step middleware runs before signing, so these requests are correctly signed.
    const withBody = (mutate: (body: string) => string): STSClient => {
      const client = clientFor(sts);
      client.middlewareStack.add(
        (next) => async (args) => {
          const request = args.request as { body: string; headers: Record<string, string> };
          request.body = mutate(request.body);
          request.headers['content-length'] = String(Buffer.byteLength(request.body));
          return next(args);
        },
        { step: 'build', name: 'rewriteBody' },
      );
      return client;
    };
    await expectSdkError(withBody((b) => `${b}&Bogus=1`).send(assumeRole()), 'ValidationError', 400, /Bogus/);
    await expectSdkError(withBody((b) => `${b}&SerialNumber=arn%3Aaws%3Aiam%3A%3A123456789012%3Amfa%2Fme&TokenCode=123456`).send(assumeRole()), 'ValidationError', 400, /SerialNumber/);
    await expectSdkError(withBody((b) => `${b}&RoleSessionName=again`).send(assumeRole()), 'ValidationError', 400, /more than once/);
    await expectSdkError(withBody((b) => b.replace('Version=2011-06-15', 'Version=2010-01-01')).send(assumeRole()), 'InvalidAction', 400, /version 2010-01-01/);
    await expectSdkError(clientFor(sts).send(new GetCallerIdentityCommand({})), 'InvalidAction', 400, /GetCallerIdentity/);
  });
});

describe('STS emulator: faults', () => {
  let sts: StsEmulator;
  before(async () => {
    sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET, accountId: '111122223333' });
  });
  after(() => sts.close());
  beforeEach(() => sts.setFault({ kind: 'none' }));

  const rows = [
    { kind: 'AccessDenied', name: 'AccessDenied', status: 403, fault: 'client', message: /^User: arn:aws:iam::111122223333:user\/oidc-broker is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::210987654321:role\/ci\/deploy-prod$/ },
    { kind: 'Throttling', name: 'Throttling', status: 400, fault: 'client', message: /^Rate exceeded$/ },
    { kind: 'InternalFailure', name: 'InternalFailure', status: 500, fault: 'server', message: /internal error/ },
    { kind: 'ServiceUnavailable', name: 'ServiceUnavailable', status: 503, fault: 'server', message: /unavailable/ },
    { kind: 'ValidationError', name: 'ValidationError', status: 400, fault: 'client', message: /Injected/ },
    { kind: 'MalformedPolicyDocument', name: 'MalformedPolicyDocumentException', status: 400, fault: 'client', message: /Injected/ },
  ] as const;

  for (const row of rows) {
    it(`maps ${row.kind} to ${row.name} (${row.status}) for \`times\` calls`, async () => {
      const client = clientFor(sts);
      const calls = sts.callCount();
      sts.setFault({ kind: row.kind, times: 2 });
      const err = await expectSdkError(client.send(assumeRole()), row.name, row.status, row.message);
      assert.equal(err.$fault, row.fault);
      await expectSdkError(client.send(assumeRole()), row.name, row.status);
      const ok = await client.send(assumeRole());
      assert.equal(ok.$metadata.httpStatusCode, 200, 'the fault is used up');
      assert.equal(sts.callCount(), calls + 3);
      assert.deepEqual(sts.requests.slice(-3).map((r) => [r.status, r.errorCode]), [[row.status, row.kind], [row.status, row.kind], [200, undefined]]);
    });
  }

  it('keeps failing without `times`, until setFault none', async () => {
    const client = clientFor(sts);
    sts.setFault({ kind: 'ServiceUnavailable' });
    for (let i = 0; i < 4; i++) await expectSdkError(client.send(assumeRole()), 'ServiceUnavailable', 503);
    sts.setFault({ kind: 'none' });
    assert.equal((await client.send(assumeRole())).$metadata.httpStatusCode, 200);
  });

  it('answers garbage: a 200 the SDK cannot parse', async () => {
    sts.setFault({ kind: 'garbage', times: 1 });
    const err = await expectSdkError(clientFor(sts).send(assumeRole()), 'Error', 200, /XML parse error/);
    assert.match(err.message, /Deserialization error/);
  });

  it('checks the signature before injecting a fault', async () => {
    sts.setFault({ kind: 'AccessDenied', times: 1 });
    const client = clientFor(sts, { credentials: { accessKeyId: AKID, secretAccessKey: 'wrong' } });
    await expectSdkError(client.send(assumeRole()), 'SignatureDoesNotMatch', 403);
    await expectSdkError(clientFor(sts).send(assumeRole()), 'AccessDenied', 403, /not authorized/);
  });

  it('with the default retry strategy, the SDK retries Throttling and succeeds', async () => {
    const client = clientFor(sts, { maxAttempts: undefined });
    const calls = sts.callCount();
    sts.setFault({ kind: 'Throttling', times: 2 });
    const out = await client.send(assumeRole());
    assert.equal(out.$metadata.httpStatusCode, 200);
    assert.equal(out.$metadata.attempts, 3);
    assert.equal(sts.callCount(), calls + 3);
    assert.equal(out.Credentials?.AccessKeyId, sts.requests.at(-1)?.credentials?.AccessKeyId);
  });

  it('with the default retry strategy, the SDK does not retry AccessDenied', async () => {
    const client = clientFor(sts, { maxAttempts: undefined });
    const calls = sts.callCount();
    sts.setFault({ kind: 'AccessDenied', times: 1 });
    const err = await expectSdkError(client.send(assumeRole()), 'AccessDenied', 403);
    assert.equal(err.$metadata.attempts, 1);
    assert.equal(sts.callCount(), calls + 1);
  });
});

describe('STS emulator: hang', () => {
  it('an AbortSignal aborts a hung call, and close() still returns promptly', async () => {
    const sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET });
    sts.setFault({ kind: 'hang' });
    const client = clientFor(sts);
    const started = Date.now();
    await expectSdkError(client.send(assumeRole(), { abortSignal: AbortSignal.timeout(300) }), 'AbortError');
    assert.ok(Date.now() - started < 2000);
    assert.equal(sts.requests.at(-1)?.errorCode, 'hang');
    assert.equal(sts.requests.at(-1)?.status, undefined);
    const closing = Date.now();
    await sts.close();
    assert.ok(Date.now() - closing < 1000, 'close() does not wait for hung requests');
  });

  it('requestTimeout aborts only with throwOnRequestTimeout: true', async () => {
    const sts = await startStsEmulator({ accessKeyId: AKID, secretAccessKey: SECRET });
    sts.setFault({ kind: 'hang' });
    const throwing = clientFor(sts, { requestHandler: { requestTimeout: 300, throwOnRequestTimeout: true } });
    await expectSdkError(throwing.send(assumeRole()), 'TimeoutError', undefined, /requestTimeout/);

    // requestTimeout alone only logs a warning: the call is still pending well past it.
    const warnings: string[] = [];
    const lenient = clientFor(sts, { requestHandler: { requestTimeout: 100 }, logger: { debug() {}, info() {}, warn: (m: unknown) => warnings.push(String(m)), error() {} } });
    const pending = lenient.send(assumeRole()).then(
      () => 'resolved',
      (err: Error) => `rejected: ${err.name}`,
    );
    const early = await Promise.race([pending, new Promise((resolve) => setTimeout(() => resolve('still pending'), 800))]);
    assert.equal(early, 'still pending');
    assert.ok(warnings.some((w) => w.includes('throwOnRequestTimeout=true')), `warned: ${warnings.join(' | ')}`);

    const closing = Date.now();
    await sts.close();
    assert.ok(Date.now() - closing < 1000, 'close() does not wait for hung requests');
    assert.match(await pending, /^rejected: /, 'closing the emulator ends the pending call');
  });
});
