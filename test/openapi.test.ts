// Every response the real app gives, in every outcome we can provoke, must match openapi.yaml.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import request from 'supertest';
import { parse } from 'yaml';
import { createApp } from '../src/http/app.js';
import { createLimits } from '../src/limits/rate-limit.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

interface OpenApiResponse {
  $ref?: string;
  headers?: Record<string, unknown>;
  content?: Record<string, { schema: unknown }>;
}
interface OpenApi {
  paths: Record<string, Record<string, { responses: Record<string, OpenApiResponse> }>>;
  components: { responses: Record<string, OpenApiResponse> };
}

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'deny.yaml': `issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n`,
};

let fx: BrokerFixture;
let spec: OpenApi;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats.default(ajv);
const covered = new Set<string>();

before(async () => {
  spec = parse(await readFile(new URL('../openapi.yaml', import.meta.url), 'utf8')) as OpenApi;
  ajv.addSchema(spec, 'openapi');
  fx = await startBrokerFixture({ policies: POLICIES });
});
after(async () => fx.close());

function responseSpec(route: string, method: string, status: number): OpenApiResponse {
  const operation = spec.paths[route]?.[method];
  assert.ok(operation, `${method.toUpperCase()} ${route} is in openapi.yaml`);
  let response = operation.responses[String(status)];
  assert.ok(response, `${method.toUpperCase()} ${route} documents status ${status}`);
  if (response.$ref) response = spec.components.responses[response.$ref.split('/').pop()!]!;
  return response;
}

/** Validates status, content type and body of a real response against the spec. */
function check(res: request.Response, route: string, method = 'post'): void {
  const response = responseSpec(route, method, res.status);
  const mediaType = String(res.headers['content-type'] ?? '').split(';')[0]!;
  const content = response.content?.[mediaType];
  assert.ok(content, `${route} ${res.status} documents content type ${mediaType}`);
  const schema = resolveSchema(content.schema);
  const body = mediaType === 'application/json' ? res.body : res.text;
  const ok = ajv.validate(schema as object, body);
  assert.ok(ok, `${method.toUpperCase()} ${route} ${res.status}: ${ajv.errorsText(ajv.errors)}\n${JSON.stringify(body).slice(0, 500)}`);
  if (res.status >= 400) assert.equal(res.headers['x-request-id'], (res.body as { request_id?: string }).request_id);
  covered.add(`${method} ${route}`);
}

function resolveSchema(schema: unknown): unknown {
  // Rewrite local refs so they resolve inside the registered OpenAPI document.
  return JSON.parse(JSON.stringify(schema).replace(/"#\/components\//g, '"openapi#/components/'));
}

const mint = (claims: Record<string, unknown> = {}, options?: Parameters<BrokerFixture['issuer']['mint']>[1]) =>
  fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', event_name: 'push', ...claims }, options);
const exchange = (token: string | undefined, body: object = { policy: 'deploy' }, query = '') => {
  const req = request(fx.broker.app).post(`/v1/exchange${query}`);
  if (token) req.set('Authorization', `Bearer ${token}`);
  return req.send(body);
};

test('exchange responses match the spec in every outcome', async () => {
  check(await exchange(await mint()), '/v1/exchange');
  check(await exchange(await mint(), { policy: 'deploy' }, '?format=env'), '/v1/exchange');
  check(await exchange(await mint(), { policy: 'deploy', duration_seconds: -1 }), '/v1/exchange');
  check(await exchange(undefined), '/v1/exchange');
  check(await exchange(await mint({}, { expiresInSeconds: 1, issuedAt: 1_000_000 })), '/v1/exchange');
  check(await exchange(await mint({ repository: 'evil/api' })), '/v1/exchange');
  check(await exchange(await mint({ event_name: 'pull_request_target' })), '/v1/exchange');
  check(await exchange(await mint(), { policy: 'nope' }), '/v1/exchange');
  const token = await mint();
  await exchange(token);
  check(await exchange(token), '/v1/exchange');
  check(await exchange(await mint(), { policy: 'deploy', pad: 'x'.repeat(70_000) }), '/v1/exchange');

  fx.issuer.setFailure('500');
  const unknownKid = await mint({}, { kid: 'rotated-away' });
  check(await exchange(unknownKid), '/v1/exchange');
  fx.issuer.setFailure('none');

  const blocker = new Database(path.join(fx.dir, 'data', 'audit.db'));
  blocker.exec('BEGIN EXCLUSIVE');
  try {
    check(await exchange(await mint()), '/v1/exchange');
    check(await request(fx.broker.app).get('/readyz'), '/readyz', 'get');
    check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`), '/v1/audit/events', 'get');
  } finally {
    blocker.exec('ROLLBACK');
    blocker.close();
  }
});

test('service, well-known and audit responses match the spec', async () => {
  check(await request(fx.broker.app).get('/healthz'), '/healthz', 'get');
  check(await request(fx.broker.app).get('/readyz'), '/readyz', 'get');
  check(await request(fx.broker.app).get('/metrics'), '/metrics', 'get');
  // The admin listener's app (server.admin_port) answers the same documented shapes.
  check(await request(fx.broker.adminApp).get('/readyz'), '/readyz', 'get');
  check(await request(fx.broker.adminApp).get('/metrics'), '/metrics', 'get');
  check(await request(fx.broker.app).get('/.well-known/jwks.json'), '/.well-known/jwks.json', 'get');
  check(await request(fx.broker.app).get('/.well-known/openid-configuration'), '/.well-known/openid-configuration', 'get');
  const auth = `Bearer ${AUDITOR_TOKEN}`;
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ limit: 2 }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ decision: 'denied', 'claim.repository': 'evil/api' }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ limit: 'x' }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events'), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).set('Accept', 'application/x-ndjson').query({ limit: 2 }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).set('Accept', 'application/x-ndjson').query({ policy: 'none-such' }), '/v1/audit/events', 'get');
  const csv = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).set('Accept', 'text/csv').query({ 'claim.repository': 'acme/api' });
  check(csv, '/v1/audit/events', 'get');
  checkHeaders(csv, '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).set('Accept', 'text/html'), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).set('Accept', 'text/csv').query({ limit: '0' }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', auth), '/v1/audit/verify', 'get');
  check(await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', auth).query({ bucket: 'day', top: '3' }), '/v1/audit/stats', 'get');
  check(await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', auth).query({ since: '2026-01-01T00:00:00Z', until: '2026-03-01T00:00:00Z' }), '/v1/audit/stats', 'get');
  check(await request(fx.broker.app).get('/v1/audit/stats'), '/v1/audit/stats', 'get');
  check(await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', 'Bearer nope'), '/v1/audit/verify', 'get');

  // A broken chain (and a truncated one, whose break has no id) match the spec too.
  for (const broken of [
    { ok: false as const, events: 4, head: 'a'.repeat(64), last_seq: 4, broken: { seq: 5, id: '01JDQ8R3W6T8Z2B4V9K1M5N7PX', problem: 'hash_mismatch' as const } },
    { ok: false as const, events: 9, head: 'b'.repeat(64), last_seq: 9, broken: { seq: 10, id: null, problem: 'truncated' as const } },
  ]) {
    const app = createApp({ ...fx.broker.deps, audit: { ...fx.broker.deps.audit, verify: async () => broken } });
    const res = await request(app).get('/v1/audit/verify').set('Authorization', auth);
    assert.equal(res.body.ok, false);
    check(res, '/v1/audit/verify', 'get');
  }
});

test('console session responses, and the session cookie on the audit routes, match the spec', async () => {
  const session = (method: 'get' | 'post' | 'delete', origin: string | null = AUDIENCE) => {
    const req = request(fx.broker.app)[method]('/console/session');
    return origin === null ? req : req.set('Origin', origin);
  };
  const signedIn = await session('post').send({ token: AUDITOR_TOKEN });
  check(signedIn, '/console/session');
  const cookie = String(signedIn.headers['set-cookie']?.[0]).split(';')[0]!;
  check(await session('post').send({ token: 'wrong' }), '/console/session');
  check(await session('post').send({ token: AUDITOR_TOKEN, extra: 1 }), '/console/session');
  check(await session('post', 'http://evil.example').send({ token: AUDITOR_TOKEN }), '/console/session');
  check(await session('post').type('json').send(JSON.stringify({ token: 'x'.repeat(8192) })), '/console/session');
  check(await session('get').set('Cookie', cookie), '/console/session', 'get');
  check(await session('get'), '/console/session', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Cookie', cookie).query({ format: 'csv' }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/events').set('Cookie', cookie).query({ format: 'yaml' }), '/v1/audit/events', 'get');
  check(await request(fx.broker.app).get('/v1/audit/verify').set('Cookie', cookie), '/v1/audit/verify', 'get');
  const evaluate = (body: object, credential: 'cookie' | 'token' | 'none' = 'cookie', origin: string | null = AUDIENCE) => {
    const req = request(fx.broker.app).post('/v1/policies/evaluate');
    if (credential === 'cookie') req.set('Cookie', cookie);
    if (credential === 'token') req.set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    return (origin === null ? req : req.set('Origin', origin)).send(body);
  };
  const claims = { aud: AUDIENCE, repository: 'acme/api', event_name: 'push' };
  check(await evaluate({ policy: 'deploy', claims }), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'deploy', claims: { repository: 'evil/api' } }, 'token', null), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'deploy', token: 'not.a.token' }, 'token'), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'none-such', claims }), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'deploy', claims }, 'none'), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'deploy', claims }, 'cookie', 'http://evil.example'), '/v1/policies/evaluate');
  check(await evaluate({ policy: 'deploy', claims: { big: 'x'.repeat(70_000) } }, 'token'), '/v1/policies/evaluate');
  check(await request(fx.broker.app).get('/v1/policies').set('Cookie', cookie), '/v1/policies', 'get');
  check(await request(fx.broker.app).get('/v1/policies?x=1').set('Cookie', cookie), '/v1/policies', 'get');
  check(await request(fx.broker.app).get('/v1/policies'), '/v1/policies', 'get');
  check(await session('delete', null), '/console/session', 'delete');
  // 204 has no body to validate: its status and headers are what the spec says (the cookie's value: test/http-console.test.ts).
  const signedOut = await session('delete');
  assert.equal(signedOut.status, 204);
  assert.deepEqual(Object.keys(responseSpec('/console/session', 'delete', 204).headers ?? {}).sort(), ['Set-Cookie', 'X-Request-Id']);
  assert.ok(signedOut.headers['set-cookie'] !== undefined && signedOut.headers['x-request-id'] !== undefined);
  covered.add('delete /console/session');
});

test('explain responses match the spec in every outcome', async () => {
  const explain = (token: string | undefined, body: object = { policy: 'deploy' }) => {
    const req = request(fx.broker.app).post('/v1/explain');
    if (token) req.set('Authorization', `Bearer ${token}`);
    return req.send(body);
  };
  const allowed = await explain(await mint());
  check(allowed, '/v1/explain');
  checkHeaders(allowed, '/v1/explain', 'post');
  check(await explain(await mint({ repository: 'evil/api' })), '/v1/explain');
  check(await explain(await mint({ event_name: 'pull_request_target' })), '/v1/explain');
  check(await explain(await mint({}, { omit: ['repository'] })), '/v1/explain');
  check(await explain(await mint(), { policy: 'deny' }), '/v1/explain');
  check(await explain(await mint(), { policy: 'deploy', duration_seconds: -1 }), '/v1/explain');
  check(await explain(undefined), '/v1/explain');
  check(await explain(await mint({}, { expiresInSeconds: 1, issuedAt: 1_000_000 })), '/v1/explain');
  check(await explain(await mint(), { policy: 'nope' }), '/v1/explain');
  check(await explain(await mint(), { policy: 'deploy', pad: 'x'.repeat(70_000) }), '/v1/explain');

  const blocker = new Database(path.join(fx.dir, 'data', 'audit.db'));
  blocker.exec('BEGIN EXCLUSIVE');
  try {
    check(await explain(await mint()), '/v1/explain');
  } finally {
    blocker.exec('ROLLBACK');
    blocker.close();
  }
});

test('token exchange (/oauth2/token) responses match the spec in every outcome', async () => {
  const form = (params: Record<string, string>) => request(fx.broker.app).post('/oauth2/token').type('form').send(new URLSearchParams(params).toString());
  const params = async (extra: Record<string, string> = {}) => ({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: await mint(),
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    scope: 'deploy',
    ...extra,
  });
  const issued = await form(await params());
  check(issued, '/oauth2/token');
  checkHeaders(issued, '/oauth2/token', 'post');
  check(await form(await params({ grant_type: 'client_credentials' })), '/oauth2/token');
  check(await form(await params({ subject_token: 'not.a.jwt' })), '/oauth2/token');
  check(await form(await params({ scope: 'nope' })), '/oauth2/token');
  check(await form(await params({ subject_token: await mint({ repository: 'evil/api' }) })), '/oauth2/token');
  check(await request(fx.broker.app).post('/oauth2/token').send(await params()), '/oauth2/token');
  check(await form(await params({ pad: 'x'.repeat(70_000) })), '/oauth2/token');

  const blocker = new Database(path.join(fx.dir, 'data', 'audit.db'));
  blocker.exec('BEGIN EXCLUSIVE');
  try {
    const unavailable = await form(await params());
    check(unavailable, '/oauth2/token');
    checkHeaders(unavailable, '/oauth2/token', 'post');
  } finally {
    blocker.exec('ROLLBACK');
    blocker.close();
  }
});

test('rate-limited responses (429) match the spec on every route that answers them', async () => {
  const app = createApp({ ...fx.broker.deps, limits: createLimits({ refused_per_ip: 1, exchanges_per_subject: 1, explains_per_subject: 1, auditor_failures_per_ip: 1 }) });
  const limited = (res: request.Response, route: string, method = 'post') => {
    assert.equal(res.status, 429, `${route}: ${res.text}`);
    assert.match(String(res.headers['retry-after']), /^[1-9][0-9]?$/);
    check(res, route, method);
  };
  const sub = { sub: 'repo:acme/api:ref:refs/heads/limited' };
  const exchange = async () => request(app).post('/v1/exchange').set('Authorization', `Bearer ${await mint(sub)}`).send({ policy: 'deploy' });
  const explain = async () => request(app).post('/v1/explain').set('Authorization', `Bearer ${await mint(sub)}`).send({ policy: 'deploy' });
  assert.equal((await exchange()).status, 200);
  limited(await exchange(), '/v1/exchange');
  assert.equal((await explain()).status, 200);
  limited(await explain(), '/v1/explain');

  assert.equal((await request(app).get('/v1/audit/verify').set('Authorization', 'Bearer nope')).status, 401);
  limited(await request(app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`), '/v1/audit/verify', 'get');
  limited(await request(app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`), '/v1/audit/events', 'get');

  // One refusal uses up the address: every decision route answers 429 before reading the request.
  assert.equal((await request(app).post('/v1/exchange').send({ policy: 'deploy' })).status, 401);
  limited(await exchange(), '/v1/exchange');
  limited(await explain(), '/v1/explain');
  limited(await request(app).post('/oauth2/token').type('form').send('grant_type=x'), '/oauth2/token');
});

/** Validates the documented response headers that the real response carries. */
function checkHeaders(res: request.Response, route: string, method: string): void {
  const headers = (responseSpec(route, method, res.status).headers ?? {}) as Record<string, { schema?: unknown; $ref?: string }>;
  for (const [name, header] of Object.entries(headers)) {
    const value = res.headers[name.toLowerCase()];
    if (value === undefined || header.schema === undefined) continue;
    assert.ok(ajv.validate(resolveSchema(header.schema) as object, value), `${route} ${res.status} header ${name}: ${ajv.errorsText(ajv.errors)} (${String(value)})`);
  }
}

test('every documented operation was exercised, and nothing undocumented answers', async () => {
  const documented = Object.entries(spec.paths).flatMap(([route, ops]) => Object.keys(ops).filter((m) => ['get', 'post', 'put', 'delete', 'patch'].includes(m)).map((m) => `${m} ${route}`));
  assert.deepEqual([...covered].sort(), documented.sort());
  const unknown = await request(fx.broker.app).get('/v1/not-a-route');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error, 'not_found');
});
