// POST /oauth2/token: RFC 8693 token exchange over the exchange pipeline, driven by a standard OAuth client over HTTP.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createLocalJWKSet, jwtVerify } from 'jose';
import * as client from 'openid-client';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import type { AuditRecord } from '../src/audit/types.js';

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const POLICIES = {
  'deploy.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://deploy.example.com
  max_duration_seconds: 600
`,
  'cloud.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/deploy
`,
  'deny-prt.yaml': `
issuer: local
effect: deny
claims:
  event_name: pull_request_target
`,
};

const GOOD_CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' };

let fx: BrokerFixture;
let server: http.Server;
let baseUrl: string;
let config: client.Configuration;
const secrets: string[] = [];

async function mint(claims: Record<string, unknown> = GOOD_CLAIMS, options?: Parameters<BrokerFixture['issuer']['mint']>[1]): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims }, options);
  secrets.push(token);
  return token;
}

function tokenCall(params: Record<string, string | string[]>) {
  const body = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) for (const v of [value].flat()) body.append(name, v);
  return request(fx.broker.app).post('/oauth2/token').type('form').send(body.toString());
}

async function exchangeParams(policy = 'deploy', extra: Record<string, string | string[]> = {}) {
  return { grant_type: GRANT, subject_token: await mint(), subject_token_type: JWT_TYPE, scope: policy, ...extra };
}

async function auditEvents(): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return res.body.events as AuditRecord[];
}

async function recordFor(requestId: string): Promise<AuditRecord> {
  const found = (await auditEvents()).filter((e) => e.request_id === requestId);
  assert.equal(found.length, 1, `exactly one audit record for request ${requestId}`);
  return found[0]!;
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES, providerConfig: '  aws:\n    region: us-east-1\n    endpoint: http://127.0.0.1:9\n' });
  server = http.createServer(fx.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  config = new client.Configuration({ issuer: baseUrl, token_endpoint: `${baseUrl}/oauth2/token` }, 'ci-job', undefined, client.None());
  client.allowInsecureRequests(config);
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await fx.close();
});

describe('a standard OAuth client (openid-client) exchanges a CI token', () => {
  test('genericGrantRequest gets an RFC 8693 response with a broker-signed JWT, audited as issued', async () => {
    const subject = await mint();
    const tokens = await client.genericGrantRequest(config, GRANT, { subject_token: subject, subject_token_type: JWT_TYPE, scope: 'deploy' });
    secrets.push(tokens.access_token);
    assert.equal(tokens.token_type, 'bearer'); // oauth4webapi lower-cases it
    assert.equal(tokens.issued_token_type, ACCESS_TOKEN_TYPE);
    assert.ok(tokens.expires_in! > 590 && tokens.expires_in! <= 600, String(tokens.expires_in));
    assert.match(String(tokens.issuance_id), /^[0-9A-Z]{26}$/);

    const jwks = (await request(fx.broker.app).get('/.well-known/jwks.json')).body;
    const { payload } = await jwtVerify(tokens.access_token, createLocalJWKSet(jwks), { issuer: 'http://127.0.0.1:8080', audience: 'https://deploy.example.com' });
    assert.equal(payload.sub, GOOD_CLAIMS.sub);
    assert.equal(payload.jti, tokens.issuance_id);

    const record = (await auditEvents()).find((e) => e.id === tokens.issuance_id);
    assert.ok(record);
    assert.equal(record.decision, 'issued');
    assert.equal(record.error, null);
    assert.equal(record.policy, 'deploy');
    assert.equal(record.provider, 'jwt');
    assert.equal(record.credential_id, payload.jti);

    // The subject token is consumed: a replay is an invalid_grant, audited as token_replayed.
    await assert.rejects(
      client.genericGrantRequest(config, GRANT, { subject_token: subject, subject_token_type: JWT_TYPE, scope: 'deploy' }),
      (err: unknown) => {
        assert.ok(err instanceof client.ResponseBodyError, String(err));
        assert.equal(err.error, 'invalid_grant');
        assert.equal(err.status, 400);
        return true;
      },
    );
    const last = (await auditEvents()).at(-1)!;
    assert.equal(last.decision, 'denied');
    assert.equal(last.error, 'token_replayed');
  });

  test('the policy may be named by audience, with an id_token subject type and requested_token_type jwt', async () => {
    const tokens = await client.genericGrantRequest(config, GRANT, {
      subject_token: await mint(),
      subject_token_type: ID_TOKEN_TYPE,
      audience: 'deploy',
      requested_token_type: JWT_TYPE,
    });
    secrets.push(tokens.access_token);
    assert.equal(tokens.issued_token_type, JWT_TYPE);
  });

  test('a denial reaches the client as an RFC 6749 error', async () => {
    await assert.rejects(
      client.genericGrantRequest(config, GRANT, { subject_token: await mint({ ...GOOD_CLAIMS, repository: 'evil/api' }), subject_token_type: JWT_TYPE, scope: 'deploy' }),
      (err: unknown) => err instanceof client.ResponseBodyError && err.error === 'invalid_grant' && err.status === 400,
    );
  });
});

describe('the raw response', () => {
  test('success is no-store JSON with exactly the RFC 8693 fields and issuance_id', async () => {
    const res = await tokenCall(await exchangeParams());
    assert.equal(res.status, 200, JSON.stringify(res.body));
    secrets.push(res.body.access_token);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers['pragma'], 'no-cache');
    assert.deepEqual(Object.keys(res.body).sort(), ['access_token', 'expires_in', 'issuance_id', 'issued_token_type', 'token_type']);
    assert.equal(res.body.token_type, 'Bearer');
    assert.equal((await recordFor(String(res.headers['x-request-id']))).decision, 'issued');
  });
});

describe('every refusal answers an RFC 6749 error and is audited', () => {
  const cases: { name: string; status: number; error: string; audited: string; decision?: 'denied' | 'error'; call: () => Promise<request.Response> }[] = [
    {
      name: 'JSON body',
      status: 400,
      error: 'invalid_request',
      audited: 'invalid_request',
      call: async () => request(fx.broker.app).post('/oauth2/token').send(await exchangeParams()),
    },
    { name: 'no body at all', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => request(fx.broker.app).post('/oauth2/token') },
    { name: 'missing grant_type', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall({ ...(await exchangeParams()), grant_type: '' }) },
    { name: 'other grant_type', status: 400, error: 'unsupported_grant_type', audited: 'invalid_request', call: async () => tokenCall({ ...(await exchangeParams()), grant_type: 'client_credentials' }) },
    { name: 'missing subject_token', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall({ grant_type: GRANT, subject_token_type: JWT_TYPE, scope: 'deploy' }) },
    { name: 'bad subject_token_type', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy', { subject_token_type: ACCESS_TOKEN_TYPE })) },
    { name: 'no policy named', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall({ ...(await exchangeParams()), scope: '' }) },
    { name: 'scope and audience differ', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy', { audience: 'cloud' })) },
    { name: 'two audiences', status: 400, error: 'invalid_target', audited: 'invalid_request', call: async () => tokenCall({ ...(await exchangeParams()), scope: [], audience: ['deploy', 'cloud'] }) },
    { name: 'two policies in scope', status: 400, error: 'invalid_target', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy cloud')) },
    { name: 'repeated grant_type', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy', { grant_type: [GRANT, GRANT] })) },
    { name: 'unsupported requested_token_type', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy', { requested_token_type: ID_TOKEN_TYPE })) },
    { name: 'actor_token', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('deploy', { actor_token: 'x', actor_token_type: JWT_TYPE })) },
    { name: 'garbage subject_token', status: 400, error: 'invalid_request', audited: 'invalid_token', call: async () => tokenCall({ ...(await exchangeParams()), subject_token: 'not.a.jwt' }) },
    {
      name: 'expired subject_token',
      status: 400,
      error: 'invalid_request',
      audited: 'invalid_token',
      call: async () => tokenCall({ ...(await exchangeParams()), subject_token: await mint(GOOD_CLAIMS, { issuedAt: Math.floor(Date.now() / 1000) - 3600, expiresInSeconds: 600 }) }),
    },
    { name: 'unknown policy', status: 400, error: 'invalid_target', audited: 'unknown_policy', call: async () => tokenCall(await exchangeParams('no-such-policy')) },
    { name: 'claims do not match', status: 400, error: 'invalid_grant', audited: 'access_denied', call: async () => tokenCall({ ...(await exchangeParams()), subject_token: await mint({ ...GOOD_CLAIMS, repository: 'evil/api' }) }) },
    { name: 'deny policy matches', status: 400, error: 'invalid_grant', audited: 'access_denied', call: async () => tokenCall({ ...(await exchangeParams()), subject_token: await mint({ ...GOOD_CLAIMS, event_name: 'pull_request_target' }) }) },
    { name: 'AWS grant (three-part credential)', status: 400, error: 'invalid_request', audited: 'invalid_request', call: async () => tokenCall(await exchangeParams('cloud')) },
    { name: 'body too large', status: 413, error: 'invalid_request', audited: 'request_too_large', call: async () => tokenCall(await exchangeParams('deploy', { pad: 'x'.repeat(70_000) })) },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const res = await c.call();
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.error, c.error);
      assert.equal(typeof res.body.error_description, 'string');
      assert.ok(res.body.error_description.length > 0);
      assert.equal(res.body.request_id, res.headers['x-request-id']);
      assert.equal(res.body.access_token, undefined);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.headers['www-authenticate'], undefined);
      const record = await recordFor(String(res.headers['x-request-id']));
      assert.equal(record.decision, c.decision ?? 'denied');
      assert.equal(record.error, c.audited);
      assert.ok(record.reason && record.reason.length > 0);
      assert.equal(record.credential_id, null);
    });
  }

  test('an AWS grant is refused before anything is minted and leaves the token unspent', async () => {
    const params = await exchangeParams('cloud');
    const first = await tokenCall(params);
    assert.equal(first.status, 400);
    assert.match(first.body.error_description, /\/v1\/exchange/);
    const record = await recordFor(String(first.headers['x-request-id']));
    assert.equal(record.provider, 'aws');
    assert.equal(record.policy, 'cloud');
    // STS at 127.0.0.1:9 would have failed with a provider error; the same refusal again means no call and no replay claim.
    const second = await tokenCall(params);
    assert.equal(second.status, 400);
    assert.equal(second.body.error, 'invalid_request');
    assert.equal((await recordFor(String(second.headers['x-request-id']))).error, 'invalid_request');
  });

  test('an unavailable audit log is temporarily_unavailable (503): fail closed, nothing issued', async () => {
    const blocker = new Database(path.join(fx.dir, 'data', 'audit.db'));
    blocker.exec('BEGIN EXCLUSIVE');
    let res: request.Response;
    try {
      res = await tokenCall(await exchangeParams());
    } finally {
      blocker.exec('ROLLBACK');
      blocker.close();
    }
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error, 'temporarily_unavailable');
    assert.equal(res.headers['retry-after'], '5');
    assert.equal(res.body.access_token, undefined);
    assert.equal((await auditEvents()).filter((e) => e.request_id === res.headers['x-request-id']).length, 0);
  });
});

test('no subject token or issued credential ever reaches the log', () => {
  const log = fx.logLines().join('\n');
  assert.ok(secrets.length > 10);
  for (const secret of secrets) assert.ok(!log.includes(secret), 'a token leaked into the log');
  // Signatures alone must not leak either.
  for (const secret of secrets) assert.ok(!log.includes(secret.split('.')[2]!), 'a token signature leaked into the log');
});
