/**
 * The GCP provider end to end: the real broker app (supertest), the real
 * `IAMCredentialsClient` in REST mode, Application Default Credentials found
 * through the loopback metadata emulator, and the IAM Credentials emulator.
 * Asserts the response, what the emulator received, the audit record, and that
 * no token reaches the audit database or the logs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { CLOUD_PLATFORM_SCOPE, startGcpEmulator, type GcpEmulator, type GcpFault, type IssuedGcpCredential } from './emulators/index.js';
import type { AuditRecord } from '../src/audit/types.js';
import { parseConfig } from '../src/config.js';
import { createBroker } from '../src/main.js';
import { PolicyLoadError } from '../src/policy/issues.js';

const PROJECT = 'emulator-project';
const DEPLOYER = `deployer@${PROJECT}.iam.gserviceaccount.com`;
const DELEGATE = `hop-one@${PROJECT}.iam.gserviceaccount.com`;
const LOCKED = `locked-away@${PROJECT}.iam.gserviceaccount.com`;
const UNKNOWN = `nobody-here@${PROJECT}.iam.gserviceaccount.com`;
/** The policy compiler accepts it; Google's account-id rule (6 to 30 characters) does not: 400 INVALID_ARGUMENT. */
const TOO_SHORT = `ab@${PROJECT}.iam.gserviceaccount.com`;
const STORAGE_READ = 'https://www.googleapis.com/auth/devstorage.read_only';
const USERINFO_EMAIL = 'https://www.googleapis.com/auth/userinfo.email';
/** providers.gcp.max_lifetime_seconds in this file: below Google's 3600 so the provider ceiling is visibly the config's. */
const PROVIDER_CEILING = 3000;
const TIMEOUT_SECONDS = 2;

const gcpPolicy = (name: string, grant: string, claims = '  repository: acme/api\n'): string =>
  `name: ${name}\nissuer: local\nclaims:\n${claims}grant:\n  provider: gcp\n${grant}`;

const POLICIES = {
  // Default scopes; grant ceiling (1800) below the provider's (3000).
  'gcp-deploy.yaml': gcpPolicy('gcp-deploy', `  service_account: ${DEPLOYER}\n  max_duration_seconds: 1800\n`),
  // Custom scopes and a delegate; grant ceiling (7200) above the provider's (3000).
  'gcp-scoped.yaml': gcpPolicy(
    'gcp-scoped',
    `  service_account: ${DEPLOYER}\n  scopes: [${STORAGE_READ}, ${USERINFO_EMAIL}]\n  delegates: [${DELEGATE}]\n  max_duration_seconds: 7200\n`,
  ),
  'gcp-id.yaml': gcpPolicy(
    'gcp-id',
    `  service_account: ${DEPLOYER}\n  token_type: id_token\n  id_token_audience: "https://\${repository}.example.com"\n`,
    '  repository_owner: acme\n',
  ),
  'gcp-locked.yaml': gcpPolicy('gcp-locked', `  service_account: ${LOCKED}\n`),
  'gcp-unknown.yaml': gcpPolicy('gcp-unknown', `  service_account: ${UNKNOWN}\n`),
  'gcp-too-short.yaml': gcpPolicy('gcp-too-short', `  service_account: ${TOO_SHORT}\n`),
};

const GOOD_CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', repository_owner: 'acme', ref: 'refs/heads/main' };

/** Env vars ADC reads; the file runs with only GCE_METADATA_HOST set, so a developer's gcloud login cannot leak in. */
const ADC_ENV = ['GCE_METADATA_HOST', 'GCE_METADATA_IP', 'METADATA_SERVER_DETECTION', 'GOOGLE_APPLICATION_CREDENTIALS', 'GOOGLE_CLOUD_PROJECT', 'GCLOUD_PROJECT', 'CLOUDSDK_CONFIG', 'HOME'] as const;

let emu: GcpEmulator;
let fx: BrokerFixture;
let home: string;
let restoreEnv: () => void;
/** CI tokens minted here; every credential issued is read back from the emulator at the end. */
const ciTokens: string[] = [];

async function mint(claims: Record<string, unknown> = GOOD_CLAIMS): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims });
  ciTokens.push(token);
  return token;
}

function exchangeCall(token: string, body: Record<string, unknown>, query = ''): request.Test {
  return request(fx.broker.app).post(`/v1/exchange${query}`).set('Authorization', `Bearer ${token}`).send(body);
}

async function auditEvents(): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return res.body.events as AuditRecord[];
}

/** The one audit record of the request that answered `res`. */
async function recordOf(res: request.Response): Promise<AuditRecord> {
  const requestId = String(res.headers['x-request-id']);
  const found = (await auditEvents()).filter((e) => e.request_id === requestId);
  assert.equal(found.length, 1, `one audit record for request ${requestId}`);
  return found[0]!;
}

function lastIssued<K extends IssuedGcpCredential['kind']>(kind: K): Extract<IssuedGcpCredential, { kind: K }> {
  const credential = emu.issuedCredentials().at(-1);
  assert.ok(credential, 'the emulator issued a credential');
  assert.equal(credential.kind, kind);
  return credential as Extract<IssuedGcpCredential, { kind: K }>;
}

function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

/** A 502 whose description is one sentence of the broker's, not Google's JSON or anything internal. */
function assertProviderErrorBody(res: request.Response): void {
  assert.equal(res.status, 502, JSON.stringify(res.body));
  assert.equal(res.body.error, 'provider_error');
  assert.equal(res.body.request_id, res.headers['x-request-id']);
  assert.equal(res.body.credentials, undefined);
  const description = res.body.error_description as string;
  assert.equal(typeof description, 'string');
  assert.match(description, /^[A-Z][^\n]*\.$/, 'one sentence');
  for (const leak of ['{', '}', '"', 'error', 'status', 'Permission ', 'iam.serviceAccounts', 'Gaia', 'Quota', 'googleapis.com/', '127.0.0.1', 'ya29', 'SyntaxError', 'Abort', 'DOCTYPE', 'stack']) {
    assert.ok(!description.includes(leak), `error_description holds ${JSON.stringify(leak)}: ${description}`);
  }
}

/** The `error` audit record of a provider failure. */
async function assertProviderErrorRecord(res: request.Response, policy: string, reasonCode: string): Promise<AuditRecord> {
  const record = await recordOf(res);
  assert.equal(record.decision, 'error');
  assert.equal(record.error, 'provider_error');
  assert.equal(record.policy, policy);
  assert.equal(record.provider, 'gcp');
  assert.match(record.target ?? '', /@.*\.gserviceaccount\.com$/, 'the record names the service account that was asked for');
  const reason = record.reason ?? '';
  assert.ok(reason.startsWith(`${reasonCode}: `), `reason ${reason} starts with ${reasonCode}`);
  assert.ok(reason.endsWith(res.body.error_description as string), 'the reason carries the sentence the caller saw');
  assert.equal(record.credential_id, null);
  assert.equal(record.expires_at, null);
  return record;
}

/** Runs `call` with `fault` injected into the IAM emulator, cleared afterwards whatever happens. */
async function withFault(fault: GcpFault, call: () => Promise<request.Response>): Promise<request.Response> {
  emu.setFault(fault);
  try {
    return await call();
  } finally {
    emu.setFault({ kind: 'none' });
  }
}

before(async () => {
  const saved = ADC_ENV.map((name) => [name, process.env[name]] as const);
  restoreEnv = () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  home = await mkdtemp(path.join(tmpdir(), 'provider-gcp-home-'));
  emu = await startGcpEmulator({ projectId: PROJECT, serviceAccounts: [DEPLOYER, DELEGATE], forbiddenServiceAccounts: [LOCKED] });
  // Before the first GCP call: google-auth-library caches what it detects.
  for (const name of ADC_ENV) delete process.env[name];
  process.env['HOME'] = home;
  process.env['CLOUDSDK_CONFIG'] = home;
  process.env['GCE_METADATA_HOST'] = emu.metadataHost;
  fx = await startBrokerFixture({
    policies: POLICIES,
    providerConfig: `  gcp:\n    endpoint: ${emu.iamUrl}\n    max_lifetime_seconds: ${PROVIDER_CEILING}\n    timeout_seconds: ${TIMEOUT_SECONDS}\n`,
  });
});

after(async () => {
  emu.setFault({ kind: 'none' });
  await fx?.close();
  await emu?.close();
  restoreEnv();
  await rm(home, { recursive: true, force: true });
});

describe('access_token grants', () => {
  test('answer the token Google issued, obtained with the broker\'s own metadata token; the record fingerprints it', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-deploy', duration_seconds: 600 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(Object.keys(res.body).sort(), ['credentials', 'expires_at', 'issuance_id', 'policy', 'provider']);
    assert.equal(res.body.policy, 'gcp-deploy');
    assert.equal(res.body.provider, 'gcp');

    const issued = lastIssued('access_token');
    assert.deepEqual(res.body.credentials, { access_token: issued.accessToken, token_type: 'Bearer' });
    assert.equal(res.body.expires_at, new Date(issued.expireTime).toISOString());
    assert.equal(issued.serviceAccount, DEPLOYER);
    assert.deepEqual(issued.scope, [CLOUD_PLATFORM_SCOPE], 'default scope');
    assert.deepEqual(issued.delegates, []);
    assert.equal(issued.lifetimeSeconds, 600);

    // What went over the wire, and with whose authority.
    const sent = emu.requests().at(-1)!;
    assert.equal(sent.method, 'generateAccessToken');
    assert.equal(sent.email, DEPLOYER);
    assert.deepEqual(sent.body, { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '600s' });
    const brokerTokens = emu.issuedBrokerTokens();
    assert.ok(brokerTokens.some((t) => t.token === sent.bearer), 'the bearer is a token the metadata server issued');
    assert.equal(sent.bearer, issued.bearer);
    assert.ok(brokerTokens.find((t) => t.token === sent.bearer)!.scopes.includes(CLOUD_PLATFORM_SCOPE));
    assert.ok(emu.metadataRequests().every((r) => r.flavor || r.httpStatus === 403), 'ADC always sends Metadata-Flavor');

    const record = await recordOf(res);
    assert.equal(record.id, res.body.issuance_id);
    assert.equal(record.decision, 'issued');
    assert.equal(record.error, null);
    assert.equal(record.policy, 'gcp-deploy');
    assert.equal(record.provider, 'gcp');
    assert.equal(record.target, DEPLOYER);
    assert.equal(record.credential_id, `sha256:${sha256Hex(issued.accessToken)}`);
    assert.equal(record.expires_at, res.body.expires_at);
    assert.equal(record.duration_seconds, 600);
    assert.equal(record.subject, GOOD_CLAIMS.sub);
    assert.equal((record.claims as Record<string, unknown>).repository, 'acme/api');
  });

  test('custom scopes and delegates are sent as Google expects them', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-scoped', duration_seconds: 900 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const issued = lastIssued('access_token');
    assert.equal(res.body.credentials.access_token, issued.accessToken);
    assert.deepEqual(issued.scope, [STORAGE_READ, USERINFO_EMAIL]);
    assert.deepEqual(issued.delegates, [DELEGATE]);
    assert.deepEqual(emu.requests().at(-1)!.body, { scope: [STORAGE_READ, USERINFO_EMAIL], lifetime: '900s', delegates: [`projects/-/serviceAccounts/${DELEGATE}`] });
    const record = await recordOf(res);
    assert.equal(record.target, DEPLOYER);
    assert.equal(record.credential_id, `sha256:${sha256Hex(issued.accessToken)}`);
  });

  const lifetimes: { label: string; policy: string; requested: number | undefined; expected: number }[] = [
    { label: 'below the ceiling is honoured', policy: 'gcp-deploy', requested: 120, expected: 120 },
    { label: 'above the grant ceiling (1800) is clamped to it, the provider allowing more', policy: 'gcp-deploy', requested: 40_000, expected: 1800 },
    { label: 'above the provider ceiling (3000) is clamped to it, the grant allowing more', policy: 'gcp-scoped', requested: 40_000, expected: PROVIDER_CEILING },
    { label: 'absent is the ceiling: min(grant, provider)', policy: 'gcp-scoped', requested: undefined, expected: PROVIDER_CEILING },
    { label: 'below the floor is raised to 60s', policy: 'gcp-deploy', requested: 5, expected: 60 },
  ];
  for (const row of lifetimes) {
    test(`lifetime: ${row.label}`, async () => {
      const body = row.requested === undefined ? { policy: row.policy } : { policy: row.policy, duration_seconds: row.requested };
      const res = await exchangeCall(await mint(), body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const issued = lastIssued('access_token');
      assert.equal(issued.lifetimeSeconds, row.expected);
      assert.equal(emu.requests().at(-1)!.body['lifetime'], `${row.expected}s`);
      assert.equal(res.body.expires_at, new Date(issued.expireTime).toISOString());
      const record = await recordOf(res);
      assert.equal(record.duration_seconds, row.expected);
      assert.equal(record.expires_at, res.body.expires_at);
    });
  }

  test('?format=env answers the variables gcloud and Terraform read', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-deploy' }, '?format=env');
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const token = lastIssued('access_token').accessToken;
    assert.equal(res.text, `export CLOUDSDK_AUTH_ACCESS_TOKEN='${token}'\nexport GOOGLE_OAUTH_ACCESS_TOKEN='${token}'\n`);
  });

  test('?format=credential_process is refused before anything is issued, and does not burn the token', async () => {
    const token = await mint();
    const callsBefore = emu.callCount();
    const issuedBefore = emu.issuedCredentials().length;
    const res = await exchangeCall(token, { policy: 'gcp-deploy' }, '?format=credential_process');
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.error, 'invalid_request');
    assert.match(res.body.error_description, /credential_process/);
    assert.equal(emu.callCount(), callsBefore, 'Google was not called');
    assert.equal(emu.issuedCredentials().length, issuedBefore);
    const record = await recordOf(res);
    assert.equal(record.decision, 'denied');
    assert.equal(record.error, 'invalid_request');
    assert.equal(record.provider, 'gcp');
    assert.ok(record.reason?.startsWith('format_not_supported: '), String(record.reason));
    assert.equal(record.credential_id, null);
    assert.equal((await exchangeCall(token, { policy: 'gcp-deploy' })).status, 200);
  });
});

describe('id_token grants', () => {
  test('answer a Google-signed ID token for the rendered audience', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-id' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const issued = lastIssued('id_token');
    assert.deepEqual(res.body.credentials, { id_token: issued.token });
    const audience = `https://${GOOD_CLAIMS.repository}.example.com`;
    assert.equal(issued.audience, audience);
    assert.equal(issued.serviceAccount, DEPLOYER);
    assert.equal(issued.includeEmail, true, 'include_email defaults to true');
    assert.deepEqual(emu.requests().at(-1)!.body, { audience, includeEmail: true });
    assert.ok(emu.issuedBrokerTokens().some((t) => t.token === issued.bearer));

    const { payload } = await jwtVerify(res.body.credentials.id_token as string, createLocalJWKSet(emu.idTokenJwks()), { issuer: 'https://accounts.google.com', audience });
    assert.equal(payload['email'], DEPLOYER);
    assert.equal(res.body.expires_at, new Date(payload.exp! * 1000).toISOString());

    const record = await recordOf(res);
    assert.equal(record.decision, 'issued');
    assert.equal(record.provider, 'gcp');
    assert.equal(record.target, DEPLOYER);
    assert.equal(record.credential_id, `sha256:${sha256Hex(issued.token)}`);
    assert.equal(record.expires_at, res.body.expires_at);
  });

  test('the audience reaches Google exactly as rendered: claims that differ only in characters a sanitiser would replace stay distinct', async () => {
    const sent = new Set<string>();
    for (const repository of ['acme/release_1', 'acme/release#1', 'acme/release(1', 'acme/release;1', 'acme/größe 1']) {
      const res = await exchangeCall(await mint({ ...GOOD_CLAIMS, repository }), { policy: 'gcp-id' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const audience = `https://${repository}.example.com`;
      assert.deepEqual(emu.requests().at(-1)!.body, { audience, includeEmail: true });
      assert.equal(lastIssued('id_token').audience, audience);
      sent.add(audience);
    }
    assert.equal(sent.size, 5);
  });

  test('?format=env answers GOOGLE_ID_TOKEN', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-id' }, '?format=env');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, `export GOOGLE_ID_TOKEN='${lastIssued('id_token').token}'\n`);
  });

  test('a token lacking the audience\'s claim is denied before Google is called, and is not burned', async () => {
    const { repository: _omitted, ...withoutRepository } = GOOD_CLAIMS;
    const token = await mint(withoutRepository);
    const callsBefore = emu.callCount();
    const res = await exchangeCall(token, { policy: 'gcp-id' });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.equal(res.body.error, 'access_denied');
    assert.match(res.body.error_description, /repository/);
    assert.equal(emu.callCount(), callsBefore);
    const record = await recordOf(res);
    assert.equal(record.decision, 'denied');
    assert.equal(record.error, 'access_denied');
    assert.ok(record.reason?.startsWith('template_claim_unusable: '), String(record.reason));
    assert.equal(record.credential_id, null);
    // Denied after the replay claim, but the claim was released: the same token is still refused for its claims, not as a replay.
    assert.equal((await exchangeCall(token, { policy: 'gcp-id' })).status, 403);
  });
});

describe('provider errors answer 502 provider_error with a sentence, and an error record with Google\'s status', () => {
  const rows: { label: string; policy: string; fault?: GcpFault; reason: string; calls: number }[] = [
    { label: 'the broker lacks Token Creator on the service account', policy: 'gcp-locked', reason: 'gcp:PERMISSION_DENIED', calls: 1 },
    { label: 'PERMISSION_DENIED is not retried', policy: 'gcp-deploy', fault: { kind: 'PERMISSION_DENIED', times: 1 }, reason: 'gcp:PERMISSION_DENIED', calls: 1 },
    { label: 'unknown service account', policy: 'gcp-unknown', reason: 'gcp:NOT_FOUND', calls: 1 },
    { label: 'a service account Google calls malformed', policy: 'gcp-too-short', reason: 'gcp:INVALID_ARGUMENT', calls: 1 },
    { label: 'UNAVAILABLE after 3 attempts', policy: 'gcp-deploy', fault: { kind: 'UNAVAILABLE' }, reason: 'gcp:UNAVAILABLE', calls: 3 },
    { label: 'RESOURCE_EXHAUSTED after 3 attempts', policy: 'gcp-deploy', fault: { kind: 'RESOURCE_EXHAUSTED' }, reason: 'gcp:RESOURCE_EXHAUSTED', calls: 3 },
    { label: 'INTERNAL after 3 attempts', policy: 'gcp-deploy', fault: { kind: 'INTERNAL' }, reason: 'gcp:INTERNAL', calls: 3 },
    { label: 'a 200 that is not JSON', policy: 'gcp-deploy', fault: { kind: 'garbage' }, reason: 'gcp:BAD_RESPONSE', calls: 1 },
  ];
  for (const row of rows) {
    test(`${row.label}: ${row.reason}, ${row.calls} call(s); the same CI token then succeeds`, async () => {
      const token = await mint();
      const issuedBefore = emu.issuedCredentials().length;
      const callsBefore = emu.callCount();
      const res = await withFault(row.fault ?? { kind: 'none' }, async () => await exchangeCall(token, { policy: row.policy }));
      assertProviderErrorBody(res);
      assert.equal(emu.callCount() - callsBefore, row.calls, 'IAM calls made');
      assert.equal(emu.issuedCredentials().length, issuedBefore, 'nothing issued');
      await assertProviderErrorRecord(res, row.policy, row.reason);

      // The replay claim was released: the same token goes through once Google answers.
      const retry = await exchangeCall(token, { policy: 'gcp-deploy' });
      assert.equal(retry.status, 200, JSON.stringify(retry.body));
      assert.equal(retry.body.credentials.access_token, lastIssued('access_token').accessToken);
    });
  }

  test('one UNAVAILABLE, then success: retried, 200, two calls', async () => {
    const callsBefore = emu.callCount();
    const issuedBefore = emu.issuedCredentials().length;
    const token = await mint();
    const res = await withFault({ kind: 'UNAVAILABLE', times: 1 }, async () => await exchangeCall(token, { policy: 'gcp-deploy' }));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(emu.callCount() - callsBefore, 2);
    assert.equal(emu.refusals().at(-1)!.status, 'UNAVAILABLE');
    assert.equal(emu.issuedCredentials().length, issuedBefore + 1);
    assert.equal(res.body.credentials.access_token, lastIssued('access_token').accessToken);
    assert.equal((await recordOf(res)).decision, 'issued');
  });

  test(`a hang: gcp:TIMEOUT within timeout_seconds (${TIMEOUT_SECONDS}) plus slack; the token then succeeds`, async () => {
    const token = await mint();
    const callsBefore = emu.callCount();
    const started = Date.now();
    const res = await withFault({ kind: 'hang' }, async () => await exchangeCall(token, { policy: 'gcp-deploy' }));
    const elapsedMs = Date.now() - started;
    assert.ok(elapsedMs < TIMEOUT_SECONDS * 1000 + 2500, `answered after ${elapsedMs} ms`);
    assertProviderErrorBody(res);
    assert.match(res.body.error_description, /in time/);
    assert.ok(emu.callCount() > callsBefore);
    assert.ok(emu.refusals().slice(-(emu.callCount() - callsBefore)).every((r) => r.status === 'hang'));
    await assertProviderErrorRecord(res, 'gcp-deploy', 'gcp:TIMEOUT');
    assert.equal((await exchangeCall(token, { policy: 'gcp-deploy' })).status, 200);
  });

  test('a failure is logged as a warning with the request id, and nothing upstream reaches the caller', async () => {
    const res = await exchangeCall(await mint(), { policy: 'gcp-unknown' });
    assertProviderErrorBody(res);
    const line = fx.logLines().find((l) => l.includes(String(res.headers['x-request-id'])) && l.includes('exchange failed'));
    assert.ok(line, 'the failure is logged');
    assert.match(line, /"level":"warn"/);
    assert.match(line, /gcp:NOT_FOUND/);
  });
});

// Last of the IAM calls: google-auth-library keeps the rejected metadata token until it nears expiry, so the broker stays refused.
describe('the broker\'s own credentials', () => {
  test('a metadata token Google no longer accepts: gcp:UNAUTHENTICATED, not retried', async () => {
    const token = await mint();
    emu.expireBrokerTokens();
    const callsBefore = emu.callCount();
    const res = await exchangeCall(token, { policy: 'gcp-deploy' });
    assertProviderErrorBody(res);
    assert.match(res.body.error_description, /broker's own credentials/);
    assert.equal(emu.callCount() - callsBefore, 1);
    assert.equal(emu.refusals().at(-1)!.status, 'UNAUTHENTICATED');
    await assertProviderErrorRecord(res, 'gcp-deploy', 'gcp:UNAUTHENTICATED');

    const metadataTokensBefore = emu.issuedBrokerTokens().length;
    const retry = await exchangeCall(await mint(), { policy: 'gcp-deploy' });
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.equal(emu.issuedBrokerTokens().length, metadataTokensBefore + 1, 'the broker fetched a fresh metadata token');
  });
});

describe('no token is ever stored or logged', () => {
  test('the audit chain verifies, and neither the audit database nor the logs hold a CI token, an issued token or the broker\'s own', async () => {
    const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.equal(verify.body.ok, true, JSON.stringify(verify.body));

    const issued = emu.issuedCredentials();
    assert.ok(issued.some((c) => c.kind === 'access_token') && issued.some((c) => c.kind === 'id_token'));
    const secrets = [
      ...ciTokens.map((t) => t.split('.')[2]!),
      ...issued.map((c) => (c.kind === 'access_token' ? c.accessToken : c.token.split('.')[2]!)),
      ...emu.issuedBrokerTokens().map((t) => t.token),
    ];
    assert.ok(secrets.length > 30);

    const db = new Database(path.join(fx.dir, 'data', 'audit.db'), { readonly: true });
    const rows = JSON.stringify(db.prepare('SELECT * FROM audit_events').all());
    db.close();
    const files = Buffer.concat([
      await readFile(path.join(fx.dir, 'data', 'audit.db')),
      await readFile(path.join(fx.dir, 'data', 'audit.db-wal')).catch(() => Buffer.alloc(0)),
    ]);
    const logs = fx.logLines().join('\n');
    assert.ok(logs.includes('gcp:'), 'the logs saw the GCP exchanges');
    for (const secret of secrets) {
      assert.ok(!rows.includes(secret), 'no token in audit rows');
      assert.ok(!files.includes(secret), 'no token in the database files');
      assert.ok(!logs.includes(secret), 'no token in the logs');
    }
    // Fingerprints are there instead.
    for (const c of issued) assert.ok(rows.includes(`sha256:${sha256Hex(c.kind === 'access_token' ? c.accessToken : c.token)}`));
    for (const c of issued) if (c.kind === 'id_token') assert.equal(decodeJwt(c.token).iss, 'https://accounts.google.com');
  });
});

describe('configuration', () => {
  // Not through startBrokerFixture: when createBroker rejects, the fixture leaks its dev issuer (the process never exits).
  test('a policy granting gcp without providers.gcp configured stops the broker from starting', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'provider-gcp-unconfigured-'));
    try {
      await mkdir(path.join(dir, 'policies'));
      await writeFile(path.join(dir, 'policies', 'needs-gcp.yaml'), gcpPolicy('needs-gcp', `  service_account: ${DEPLOYER}\n`));
      const configText = [
        'issuers:',
        '  - name: local',
        `    issuer: ${fx.issuer.url}`,
        `    audiences: [${AUDIENCE}]`,
        'policies:',
        '  dir: ./policies',
        'audit:',
        '  url: sqlite:./data/audit.db',
        'providers:',
        '  jwt:',
        '    signing_key_file: ./data/signing-key.jwk',
        '',
      ].join('\n');
      const configPath = path.join(dir, 'broker.yaml');
      const config = await parseConfig(configText, configPath, {});
      assert.equal(config.providers.gcp, undefined);
      await assert.rejects(createBroker(config, { logger: createCapturingLogger().logger }), (err: unknown) => {
        assert.ok(err instanceof PolicyLoadError, String(err));
        assert.match(err.message, /needs-gcp\.yaml:\d+: grant\.provider: /);
        assert.match(err.message, /'gcp'/);
        assert.equal(err.issues.length, 1);
        assert.equal(err.issues[0]!.keyPath, 'grant.provider');
        assert.equal(path.basename(err.issues[0]!.file), 'needs-gcp.yaml');
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
