/**
 * The GCP emulators driven by the real `IAMCredentialsClient` (REST fallback)
 * with Application Default Credentials found through the metadata emulator.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { IAMCredentialsClient } from '@google-cloud/iam-credentials';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { CLOUD_PLATFORM_SCOPE, GOOGLE_HTTP_STATUS, startGcpEmulator, type GcpEmulator, type GoogleStatus } from './emulators/index.js';
import { assertExpiresAfterIssue } from './helpers/lifetime.js';

const DEPLOYER = 'deployer@emulator-project.iam.gserviceaccount.com';
const DELEGATE = 'hop-one@emulator-project.iam.gserviceaccount.com';
const LOCKED = 'locked-away@emulator-project.iam.gserviceaccount.com';
const UNKNOWN = 'nobody-here@emulator-project.iam.gserviceaccount.com';

/** Env vars ADC reads; the suite runs with only GCE_METADATA_HOST set, so a developer's gcloud login can't leak in. */
const ADC_ENV = ['GCE_METADATA_HOST', 'GCE_METADATA_IP', 'METADATA_SERVER_DETECTION', 'GOOGLE_APPLICATION_CREDENTIALS', 'GOOGLE_CLOUD_PROJECT', 'GCLOUD_PROJECT', 'CLOUDSDK_CONFIG', 'HOME'] as const;

function saveEnv(): () => void {
  const saved = ADC_ENV.map((name) => [name, process.env[name]] as const);
  return () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}

/**
 * The construction the broker's GCP provider should use: REST transport, the
 * endpoint split into host / port / protocol (`port` must be given on its own:
 * the client defaults it to 443, which overrides a port inside `apiEndpoint`),
 * ADC with cloud-platform scope, and a transporter timeout that aborts each
 * HTTP attempt (the per-call gax `timeout` is ignored in REST mode). A known
 * `projectId` spares ADC a `gcloud config config-helper` exec and a metadata
 * round trip (~0.6 s on the first call).
 */
function createIamClient(endpoint: string, options: { timeoutMs?: number; projectId?: string } = {}): IAMCredentialsClient {
  const url = new URL(endpoint);
  return new IAMCredentialsClient({
    fallback: true,
    apiEndpoint: url.hostname,
    port: Number(url.port) || (url.protocol === 'http:' ? 80 : 443),
    protocol: url.protocol.slice(0, -1),
    scopes: [CLOUD_PLATFORM_SCOPE],
    ...(options.projectId !== undefined ? { projectId: options.projectId } : {}),
    ...(options.timeoutMs !== undefined ? { clientOptions: { transporterOptions: { timeout: options.timeoutMs } } } : {}),
  });
}

const resource = (email: string): string => `projects/-/serviceAccounts/${email}`;

/** What a REST-mode failure looks like to the caller: HTTP status on `status` and `code`, Google's error JSON as the message. */
interface RestFailure {
  name: string;
  httpStatus: number | undefined;
  code: unknown;
  googleStatus: string | undefined;
  causeName: string | undefined;
  error: unknown;
}

async function failureOf(promise: Promise<unknown>): Promise<RestFailure> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected a rejection, got ${String(caught)}`);
  const e = caught as Error & { status?: unknown; code?: unknown; cause?: unknown };
  let googleStatus: string | undefined;
  try {
    const parsed = JSON.parse(e.message) as { error?: { status?: string } };
    googleStatus = parsed.error?.status;
  } catch {
    googleStatus = undefined;
  }
  return {
    name: e.name,
    httpStatus: typeof e.status === 'number' ? e.status : undefined,
    code: e.code,
    googleStatus,
    causeName: e.cause instanceof Error ? e.cause.name : undefined,
    error: caught,
  };
}

async function postJson(url: string, body: unknown, bearer?: string): Promise<{ status: number; json: { error?: { code: number; status: string; message: string } } & Record<string, unknown>; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(bearer !== undefined ? { Authorization: `Bearer ${bearer}` } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as never, headers: res.headers };
}

async function metadataToken(emu: GcpEmulator, scopes?: string): Promise<string> {
  const query = scopes ? `?scopes=${encodeURIComponent(scopes)}` : '';
  const res = await fetch(`http://${emu.metadataHost}/computeMetadata/v1/instance/service-accounts/default/token${query}`, { headers: { 'Metadata-Flavor': 'Google' } });
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

function accessTokenUrl(emu: GcpEmulator, email: string): string {
  return `${emu.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(email)}:generateAccessToken`;
}

describe('GCP emulator', () => {
  let emu: GcpEmulator;
  let restoreEnv: () => void;
  let home: string;

  before(async () => {
    restoreEnv = saveEnv();
    home = await mkdtemp(path.join(tmpdir(), 'gcp-emulator-home-'));
    emu = await startGcpEmulator({ serviceAccounts: [DEPLOYER, DELEGATE], forbiddenServiceAccounts: [LOCKED] });
    for (const name of ADC_ENV) delete process.env[name];
    process.env['HOME'] = home;
    process.env['CLOUDSDK_CONFIG'] = home;
    process.env['GCE_METADATA_HOST'] = emu.metadataHost;
  });

  after(async () => {
    restoreEnv();
    await emu.close();
    await rm(home, { recursive: true, force: true });
  });

  test('ADC detects the metadata emulator; generateAccessToken returns the recorded token, authorised by the metadata token', async () => {
    const client = createIamClient(emu.iamUrl);
    try {
      const before = Date.now();
      const [response] = await client.generateAccessToken({
        name: resource(DEPLOYER),
        scope: [CLOUD_PLATFORM_SCOPE],
        lifetime: { seconds: 900 },
        delegates: [resource(DELEGATE)],
      });
      const issuedBy = Date.now();

      const issued = emu.issuedCredentials();
      assert.equal(issued.length, 1);
      const credential = issued[0]!;
      assert.equal(credential.kind, 'access_token');
      assert.ok(credential.kind === 'access_token');
      assert.equal(response.accessToken, credential.accessToken);
      assert.deepEqual(credential.scope, [CLOUD_PLATFORM_SCOPE]);
      assert.deepEqual(credential.delegates, [DELEGATE]);
      assert.equal(credential.lifetimeSeconds, 900);
      // The client decodes expireTime into a Timestamp.
      const expireSeconds = Number(response.expireTime?.seconds);
      assert.equal(new Date(expireSeconds * 1000).toISOString().replace('.000Z', 'Z'), credential.expireTime);
      assertExpiresAfterIssue(expireSeconds * 1000, 900_000, before, issuedBy);

      // The IAM call carried the token the metadata server issued for cloud-platform.
      const brokerTokens = emu.issuedBrokerTokens();
      assert.equal(brokerTokens.length, 1);
      assert.deepEqual(brokerTokens[0]!.scopes, [CLOUD_PLATFORM_SCOPE]);
      assert.equal(brokerTokens[0]!.expiresInSeconds, 3599);
      const [request] = emu.requests();
      assert.ok(request);
      assert.equal(request.method, 'generateAccessToken');
      assert.equal(request.email, DEPLOYER);
      assert.equal(request.bearer, brokerTokens[0]!.token);
      assert.equal(credential.bearer, brokerTokens[0]!.token);
      assert.deepEqual(request.body, { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '900s', delegates: [resource(DELEGATE)] });
      // The wire shape google-gax's REST fallback sends.
      assert.equal(request.url, `/v1/projects/-/serviceAccounts/${DEPLOYER.replace('@', '%40')}:generateAccessToken?$alt=json%3Benum-encoding=int`);
      assert.equal(request.headers['content-type'], 'application/json');
      assert.match(String(request.headers['x-goog-api-client']), /gax\/\S+-fallback .*rest\//);
      assert.equal(request.headers['x-goog-request-params'], `name=${encodeURIComponent(resource(DEPLOYER))}`);

      // What ADC asked the metadata server, all with Metadata-Flavor: Google.
      const metadata = emu.metadataRequests();
      assert.ok(metadata.every((r) => r.flavor && r.httpStatus === 200 && r.method === 'GET'), JSON.stringify(metadata));
      assert.deepEqual(
        metadata.map((r) => r.path),
        ['/computeMetadata/v1/instance', '/computeMetadata/v1/project/project-id', '/computeMetadata/v1/instance/service-accounts/default/token'],
      );
      assert.deepEqual(metadata[2]!.query, { scopes: CLOUD_PLATFORM_SCOPE });
    } finally {
      await client.close();
    }
  });

  test('a client reuses its metadata token until it nears expiry; a new client fetches a new one', async () => {
    const client = createIamClient(emu.iamUrl, { projectId: emu.projectId });
    try {
      const tokensBefore = emu.issuedBrokerTokens().length;
      await client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] });
      await client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] });
      assert.equal(emu.issuedBrokerTokens().length, tokensBefore + 1);
      const [a, b] = emu.requests().slice(-2);
      assert.equal(a!.bearer, b!.bearer);
      // Absent lifetime means Google's default, 3600s.
      assert.deepEqual(a!.body, { scope: [CLOUD_PLATFORM_SCOPE] });
      const last = emu.issuedCredentials().at(-1);
      assert.ok(last?.kind === 'access_token');
      assert.equal(last.lifetimeSeconds, 3600);
    } finally {
      await client.close();
    }
  });

  test('generateIdToken returns a JWT for the requested audience, signed by the emulator', async () => {
    const client = createIamClient(emu.iamUrl, { projectId: emu.projectId });
    try {
      const audience = 'https://deploy.example.com';
      const [response] = await client.generateIdToken({ name: resource(DEPLOYER), audience, includeEmail: true });
      assert.ok(response.token);
      const { payload, protectedHeader } = await jwtVerify(response.token, createLocalJWKSet(emu.idTokenJwks()), { issuer: 'https://accounts.google.com', audience });
      assert.equal(protectedHeader.alg, 'RS256');
      assert.equal(payload['email'], DEPLOYER);
      assert.equal(payload['email_verified'], true);
      assert.match(String(payload.sub), /^\d{21}$/);
      assert.equal(payload['azp'], payload.sub);
      assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), 3600);

      const last = emu.issuedCredentials().at(-1);
      assert.ok(last?.kind === 'id_token');
      assert.equal(last.token, response.token);
      assert.equal(emu.requests().at(-1)!.method, 'generateIdToken');
      assert.deepEqual(emu.requests().at(-1)!.body, { audience, includeEmail: true });

      const [bare] = await client.generateIdToken({ name: resource(DEPLOYER), audience });
      const claims = decodeJwt(bare.token!);
      assert.equal(claims.aud, audience);
      assert.equal(claims['email'], undefined);
      // includeEmail=false is proto3's default, so the client omits it.
      assert.deepEqual(emu.requests().at(-1)!.body, { audience });

      // JWKS is also served where a verifier would fetch it.
      const jwks = (await (await fetch(`${emu.iamUrl}/oauth2/v3/certs`)).json()) as { keys: unknown[] };
      assert.deepEqual(jwks, emu.idTokenJwks());
    } finally {
      await client.close();
    }
  });

  describe('bearer check', () => {
    const body = { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '600s' };

    test('no Authorization header: 401 UNAUTHENTICATED, nothing issued', async () => {
      const issuedBefore = emu.issuedCredentials().length;
      const res = await postJson(accessTokenUrl(emu, DEPLOYER), body);
      assert.equal(res.status, 401);
      assert.deepEqual(Object.keys(res.json.error ?? {}).sort(), ['code', 'details', 'message', 'status']);
      assert.equal(res.json.error?.code, 401);
      assert.equal(res.json.error?.status, 'UNAUTHENTICATED');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="https://accounts.google.com/"');
      assert.equal(emu.issuedCredentials().length, issuedBefore);
      assert.equal(emu.refusals().at(-1)!.status, 'UNAUTHENTICATED');
    });

    for (const [label, bearer] of [
      ['a token the metadata server never issued', 'ya29.emu-metadata.forged'],
      ['an empty token', ''],
    ] as const) {
      test(`${label}: 401 UNAUTHENTICATED`, async () => {
        const res = await postJson(accessTokenUrl(emu, DEPLOYER), body, bearer);
        assert.equal(res.status, 401);
        assert.equal(res.json.error?.status, 'UNAUTHENTICATED');
      });
    }

    test('a valid metadata token passes with plain fetch; the response is Google JSON', async () => {
      const token = await metadataToken(emu);
      const res = await postJson(accessTokenUrl(emu, DEPLOYER), body, token);
      assert.equal(res.status, 200);
      assert.deepEqual(Object.keys(res.json).sort(), ['accessToken', 'expireTime']);
      assert.match(String(res.json['expireTime']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.equal(emu.requests().at(-1)!.bearer, token);
    });

    test('a token without cloud-platform or iam scope: 403 PERMISSION_DENIED (insufficient scopes)', async () => {
      const token = await metadataToken(emu, 'https://www.googleapis.com/auth/userinfo.email');
      const res = await postJson(accessTokenUrl(emu, DEPLOYER), body, token);
      assert.equal(res.status, 403);
      assert.equal(res.json.error?.status, 'PERMISSION_DENIED');
      assert.match(res.json.error?.message ?? '', /insufficient authentication scopes/);
    });

    test('an expired metadata token: the real client surfaces 401 (it does not re-fetch a token it believes valid)', async () => {
      const client = createIamClient(emu.iamUrl, { projectId: emu.projectId });
      try {
        await client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] });
        emu.expireBrokerTokens();
        const failure = await failureOf(client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] }));
        assert.equal(failure.httpStatus, 401);
        assert.equal(failure.googleStatus, 'UNAUTHENTICATED');
      } finally {
        await client.close();
      }
    });
  });

  describe('metadata server', () => {
    test('refuses requests without Metadata-Flavor: Google, and every response carries the header', async () => {
      const tokensBefore = emu.issuedBrokerTokens().length;
      for (const headers of [{}, { 'Metadata-Flavor': 'google' }, { 'Metadata-Flavor': 'Google', 'X-Forwarded-For': '10.0.0.1' }] as Record<string, string>[]) {
        const res = await fetch(`http://${emu.metadataHost}/computeMetadata/v1/instance/service-accounts/default/token`, { headers });
        assert.equal(res.status, 403, JSON.stringify(headers));
        assert.equal(res.headers.get('metadata-flavor'), 'Google');
        await res.arrayBuffer();
      }
      assert.equal(emu.issuedBrokerTokens().length, tokensBefore, 'no token for a refused request');
      assert.equal(emu.metadataRequests().at(-1)!.flavor, true); // X-Forwarded-For row
      assert.equal(emu.metadataRequests().at(-2)!.flavor, false);
    });

    test('serves email, project-id and universe; unknown paths 404', async () => {
      const get = async (p: string): Promise<[number, string, string | null]> => {
        const res = await fetch(`http://${emu.metadataHost}${p}`, { headers: { 'Metadata-Flavor': 'Google' } });
        return [res.status, await res.text(), res.headers.get('metadata-flavor')];
      };
      assert.deepEqual(await get('/computeMetadata/v1/instance/service-accounts/default/email'), [200, emu.brokerServiceAccount, 'Google']);
      assert.deepEqual(await get('/computeMetadata/v1/project/project-id'), [200, emu.projectId, 'Google']);
      assert.deepEqual(await get('/computeMetadata/v1/universe/universe-domain'), [200, 'googleapis.com', 'Google']);
      assert.equal((await get('/computeMetadata/v1/instance/nope'))[0], 404);
      assert.equal((await get(`/computeMetadata/v1/instance/service-accounts/${UNKNOWN}/token`))[0], 404);
      const tokenRes = await fetch(`http://${emu.metadataHost}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: { 'Metadata-Flavor': 'Google' } });
      assert.equal(tokenRes.headers.get('content-type'), 'application/json');
      const token = (await tokenRes.json()) as Record<string, unknown>;
      assert.deepEqual(Object.keys(token).sort(), ['access_token', 'expires_in', 'token_type']);
      assert.equal(token['token_type'], 'Bearer');
      assert.equal(token['expires_in'], 3599);
      assert.notEqual(token['access_token'], emu.issuedBrokerTokens()[0]!.token, 'tokens are random');
    });
  });

  describe('validation through the real client', () => {
    const cases: { label: string; call: (c: IAMCredentialsClient) => Promise<unknown>; status: GoogleStatus }[] = [
      { label: 'malformed service account email', call: (c) => c.generateAccessToken({ name: resource('not-an-email'), scope: [CLOUD_PLATFORM_SCOPE] }), status: 'INVALID_ARGUMENT' },
      { label: 'email outside iam.gserviceaccount.com', call: (c) => c.generateAccessToken({ name: resource('someone@example.com'), scope: [CLOUD_PLATFORM_SCOPE] }), status: 'INVALID_ARGUMENT' },
      { label: 'unknown service account', call: (c) => c.generateAccessToken({ name: resource(UNKNOWN), scope: [CLOUD_PLATFORM_SCOPE] }), status: 'NOT_FOUND' },
      { label: 'service account the broker may not impersonate', call: (c) => c.generateAccessToken({ name: resource(LOCKED), scope: [CLOUD_PLATFORM_SCOPE] }), status: 'PERMISSION_DENIED' },
      { label: 'id token for a service account the broker may not impersonate', call: (c) => c.generateIdToken({ name: resource(LOCKED), audience: 'x' }), status: 'PERMISSION_DENIED' },
      { label: 'project other than -', call: (c) => c.generateAccessToken({ name: `projects/emulator-project/serviceAccounts/${DEPLOYER}`, scope: [CLOUD_PLATFORM_SCOPE] }), status: 'INVALID_ARGUMENT' },
      { label: 'empty scope', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [] }), status: 'INVALID_ARGUMENT' },
      { label: 'lifetime 0s', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 0 } }), status: 'INVALID_ARGUMENT' },
      { label: 'lifetime 3601s', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 3601 } }), status: 'INVALID_ARGUMENT' },
      { label: 'lifetime 43200s without the extension', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 43200 } }), status: 'INVALID_ARGUMENT' },
      { label: 'delegate as a bare email', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], delegates: [DELEGATE] }), status: 'INVALID_ARGUMENT' },
      { label: 'delegate with a project id', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], delegates: [`projects/emulator-project/serviceAccounts/${DELEGATE}`] }), status: 'INVALID_ARGUMENT' },
      { label: 'unknown delegate', call: (c) => c.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], delegates: [resource(UNKNOWN)] }), status: 'NOT_FOUND' },
      { label: 'id token without audience', call: (c) => c.generateIdToken({ name: resource(DEPLOYER), includeEmail: true }), status: 'INVALID_ARGUMENT' },
    ];
    let client: IAMCredentialsClient;
    before(() => {
      client = createIamClient(emu.iamUrl, { projectId: emu.projectId });
    });
    after(async () => {
      await client.close();
    });
    for (const row of cases) {
      test(`${row.label}: ${GOOGLE_HTTP_STATUS[row.status]} ${row.status}`, async () => {
        const issuedBefore = emu.issuedCredentials().length;
        const failure = await failureOf(row.call(client));
        assert.equal(failure.httpStatus, GOOGLE_HTTP_STATUS[row.status]);
        assert.equal(failure.code, GOOGLE_HTTP_STATUS[row.status], 'REST errors carry the HTTP status as `code`, not the gRPC code');
        assert.equal(failure.googleStatus, row.status);
        assert.equal(emu.issuedCredentials().length, issuedBefore);
        assert.equal(emu.refusals().at(-1)!.status, row.status);
      });
    }
  });

  describe('validation of what the client cannot send (plain fetch, valid bearer)', () => {
    const rows: { label: string; url?: (emu: GcpEmulator) => string; body: unknown }[] = [
      { label: 'unknown JSON field', body: { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '900s', durationSeconds: 900 } },
      { label: 'scope as a string', body: { scope: CLOUD_PLATFORM_SCOPE } },
      { label: 'lifetime without the s suffix', body: { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '900' } },
      { label: 'lifetime as a number', body: { scope: [CLOUD_PLATFORM_SCOPE], lifetime: 900 } },
      { label: 'lifetime in minutes', body: { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '15m' } },
      { label: 'negative lifetime', body: { scope: [CLOUD_PLATFORM_SCOPE], lifetime: '-5s' } },
      { label: 'delegates as a string', body: { scope: [CLOUD_PLATFORM_SCOPE], delegates: resource(DELEGATE) } },
      { label: 'malformed JSON', body: '{"scope": [' },
      { label: 'a JSON array', body: '[]' },
      { label: 'name in the body that differs from the URL', body: { name: resource(DELEGATE), scope: [CLOUD_PLATFORM_SCOPE] } },
      { label: 'unknown query parameter', url: (e) => `${accessTokenUrl(e, DEPLOYER)}?lifetime=900s`, body: { scope: [CLOUD_PLATFORM_SCOPE] } },
      {
        label: 'id token: includeEmail as a string',
        url: (e) => `${e.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(DEPLOYER)}:generateIdToken`,
        body: { audience: 'https://a.example', includeEmail: 'yes' },
      },
      {
        label: 'id token: unknown field',
        url: (e) => `${e.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(DEPLOYER)}:generateIdToken`,
        body: { audience: 'https://a.example', scope: [CLOUD_PLATFORM_SCOPE] },
      },
      {
        label: 'id token: empty audience',
        url: (e) => `${e.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(DEPLOYER)}:generateIdToken`,
        body: { audience: '' },
      },
    ];
    for (const row of rows) {
      test(`${row.label}: 400 INVALID_ARGUMENT`, async () => {
        const token = await metadataToken(emu);
        const issuedBefore = emu.issuedCredentials().length;
        const res = await postJson(row.url ? row.url(emu) : accessTokenUrl(emu, DEPLOYER), row.body, token);
        assert.equal(res.status, 400, JSON.stringify(res.json));
        assert.equal(res.json.error?.code, 400);
        assert.equal(res.json.error?.status, 'INVALID_ARGUMENT');
        assert.equal(emu.issuedCredentials().length, issuedBefore);
      });
    }

    test('the snake_case proto name include_email is accepted, as Google accepts it', async () => {
      const token = await metadataToken(emu);
      const res = await postJson(`${emu.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(DEPLOYER)}:generateIdToken`, { audience: 'https://a.example', include_email: true }, token);
      assert.equal(res.status, 200);
      assert.equal(decodeJwt(String(res.json['token']))['email'], DEPLOYER);
    });

    test('unknown method or path: 404 NOT_FOUND', async () => {
      const token = await metadataToken(emu);
      const res = await postJson(`${emu.iamUrl}/v1/projects/-/serviceAccounts/${encodeURIComponent(DEPLOYER)}:signJwt`, { payload: '{}' }, token);
      assert.equal(res.status, 404);
      assert.equal(res.json.error?.status, 'NOT_FOUND');
    });
  });

  describe('faults', () => {
    let client: IAMCredentialsClient;
    before(() => {
      client = createIamClient(emu.iamUrl, { projectId: emu.projectId });
    });
    after(async () => {
      emu.setFault({ kind: 'none' });
      await client.close();
    });
    const call = (): Promise<unknown> => client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 600 } });

    for (const kind of ['PERMISSION_DENIED', 'UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'INTERNAL'] as const) {
      test(`${kind}: ${GOOGLE_HTTP_STATUS[kind]}, surfaced once (gax does not retry REST errors), then the fault is spent`, async () => {
        await call(); // warm: the metadata token is cached, so callCount counts only IAM calls below
        emu.setFault({ kind, times: 1 });
        const callsBefore = emu.callCount();
        const failure = await failureOf(call());
        assert.equal(failure.httpStatus, GOOGLE_HTTP_STATUS[kind]);
        assert.equal(failure.code, GOOGLE_HTTP_STATUS[kind]);
        assert.equal(failure.googleStatus, kind);
        assert.equal(emu.callCount(), callsBefore + 1, 'exactly one HTTP attempt');
        const bearer = emu.requests().at(-1)!.bearer;
        assert.ok(!inspect(failure.error, { depth: 10 }).includes(bearer), 'gaxios redacts the Authorization header in the error');
        await call();
        assert.equal(emu.callCount(), callsBefore + 2);
      });
    }

    test('garbage: a 200 with a non-JSON body surfaces as a SyntaxError without status', async () => {
      emu.setFault({ kind: 'garbage', times: 1 });
      const failure = await failureOf(call());
      assert.equal(failure.name, 'SyntaxError');
      assert.equal(failure.httpStatus, undefined);
      assert.equal(emu.refusals().at(-1)!.status, 'garbage');
    });

    test('times counts down; without times the fault lasts until cleared', async () => {
      emu.setFault({ kind: 'UNAVAILABLE', times: 2 });
      assert.equal((await failureOf(call())).httpStatus, 503);
      assert.equal((await failureOf(call())).httpStatus, 503);
      await call();
      emu.setFault({ kind: 'INTERNAL' });
      for (let i = 0; i < 3; i++) assert.equal((await failureOf(call())).httpStatus, 500);
      emu.setFault({ kind: 'none' });
      await call();
    });
  });

  test('connection refused surfaces as code ECONNREFUSED without status', async () => {
    const gone = await startGcpEmulator();
    const goneUrl = gone.iamUrl;
    await gone.close();
    const client = createIamClient(goneUrl, { projectId: 'p' });
    try {
      const failure = await failureOf(client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] }));
      assert.equal(failure.code, 'ECONNREFUSED');
      assert.equal(failure.httpStatus, undefined);
    } finally {
      await client.close();
    }
  });

  test('allowExtendedLifetime raises the ceiling to 43200s', async () => {
    const extended = await startGcpEmulator({ serviceAccounts: [DEPLOYER], allowExtendedLifetime: true });
    process.env['GCE_METADATA_HOST'] = extended.metadataHost; // read per request; detection stays cached from the first test
    const client = createIamClient(extended.iamUrl, { projectId: extended.projectId });
    try {
      await client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 43200 } });
      const issued = extended.issuedCredentials()[0];
      assert.ok(issued?.kind === 'access_token');
      assert.equal(issued.lifetimeSeconds, 43200);
      assert.equal(extended.issuedBrokerTokens()[0]!.token, issued.bearer);
      const failure = await failureOf(client.generateAccessToken({ name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE], lifetime: { seconds: 43201 } }));
      assert.equal(failure.httpStatus, 400);
    } finally {
      process.env['GCE_METADATA_HOST'] = emu.metadataHost;
      await client.close();
      await extended.close();
    }
  });

  test('hang: the per-call gax timeout is ignored in REST mode, the transporter timeout aborts, close() returns promptly', async () => {
    const hanging = await startGcpEmulator({ serviceAccounts: [DEPLOYER] });
    process.env['GCE_METADATA_HOST'] = hanging.metadataHost;
    const unbounded = createIamClient(hanging.iamUrl, { projectId: hanging.projectId });
    const bounded = createIamClient(hanging.iamUrl, { projectId: hanging.projectId, timeoutMs: 300 });
    try {
      const request = { name: resource(DEPLOYER), scope: [CLOUD_PLATFORM_SCOPE] };
      hanging.setFault({ kind: 'hang' });

      // gax's CallOptions.timeout becomes a gRPC deadline the REST stub never reads.
      const ignored = unbounded.generateAccessToken(request, { timeout: 200, retry: null });
      const settled = ignored.then(
        () => 'resolved',
        () => 'rejected',
      );
      const race = await Promise.race([settled, new Promise((resolve) => setTimeout(() => resolve('still pending'), 1000))]);
      assert.equal(race, 'still pending');

      // transporterOptions.timeout aborts each HTTP attempt (AbortSignal.timeout inside gaxios).
      const started = Date.now();
      const failure = await failureOf(bounded.generateAccessToken(request));
      const elapsedMs = Date.now() - started;
      assert.ok(elapsedMs >= 250 && elapsedMs < 2000, `aborted after ${elapsedMs} ms`);
      assert.equal(failure.causeName, 'AbortError');
      assert.equal(failure.httpStatus, undefined);
      assert.equal(failure.code, undefined);
      assert.ok(hanging.callCount() >= 2);
      assert.equal(hanging.refusals().filter((r) => r.status === 'hang').length, hanging.callCount());

      // close() destroys the still-open hung connection instead of waiting on it.
      const closing = Date.now();
      await hanging.close();
      assert.ok(Date.now() - closing < 1000, `close took ${Date.now() - closing} ms`);
      assert.equal(await settled, 'rejected', 'the unbounded call fails once its socket is destroyed');
    } finally {
      process.env['GCE_METADATA_HOST'] = emu.metadataHost;
      await unbounded.close();
      await bounded.close();
      await hanging.close();
    }
  });
});
