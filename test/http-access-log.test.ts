// The access log (docs/operations.md#logging): one `request` line per request, with the route pattern, never the URL, a header or a token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const ACCESS_FIELDS = ['client_ip', 'duration_ms', 'level', 'method', 'msg', 'request_id', 'route', 'status', 'timestamp'];

let fx: BrokerFixture;
before(async () => {
  fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
});
after(async () => fx.close());

/** The `request` line of the request with this id; fails unless there is exactly one. */
function accessLine(requestId: string): Record<string, unknown> {
  const lines = fx
    .logLines()
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === 'request' && line.request_id === requestId);
  assert.equal(lines.length, 1, `one access line for ${requestId}`);
  return lines[0]!;
}

/** The whole log as text: what must hold no secret. */
function logText(): string {
  return fx.logLines().join('\n');
}

describe('access log', () => {
  test('an exchange: method, route, status, latency, request id and client address, at info; no token, no Authorization', async () => {
    const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' });
    const res = await request(fx.broker.app).post('/v1/exchange?format=json').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
    assert.equal(res.status, 200, res.text);
    const line = accessLine(res.headers['x-request-id'] as string);
    assert.deepEqual(Object.keys(line).sort(), ACCESS_FIELDS);
    assert.equal(line.level, 'info');
    assert.equal(line.method, 'POST');
    assert.equal(line.route, '/v1/exchange');
    assert.equal(line.status, 200);
    assert.equal(typeof line.duration_ms, 'number');
    assert.ok((line.duration_ms as number) >= 0);
    assert.match(line.client_ip as string, /^(::ffff:)?127\.0\.0\.1$/);
    const accessToken = (res.body as { credentials: { access_token: string } }).credentials.access_token;
    for (const secret of [token, accessToken, token.split('.')[2]!]) assert.ok(!logText().includes(secret), 'no token in the log');
    assert.doesNotMatch(logText(), /authorization|bearer/i);
  });

  test('a refusal is logged with its status, under the route it was refused on', async () => {
    const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', 'Bearer not-a-jwt').send({ policy: 'deploy' });
    assert.equal(res.status, 401);
    const line = accessLine(res.headers['x-request-id'] as string);
    assert.deepEqual([line.route, line.status, line.level], ['/v1/exchange', 401, 'info']);
    assert.ok(!logText().includes('not-a-jwt'));
  });

  test('a 404 has no route, and neither its path nor its query string is logged', async () => {
    const res = await request(fx.broker.app).get('/v1/no-such-route/eyJhbGciOiJub25lIn0?subject=repo:acme/private-repo');
    assert.equal(res.status, 404);
    const line = accessLine(res.headers['x-request-id'] as string);
    assert.deepEqual(Object.keys(line).sort(), ACCESS_FIELDS);
    assert.deepEqual([line.method, line.route, line.status, line.level], ['GET', null, 404, 'info']);
    assert.doesNotMatch(logText(), /no-such-route|eyJhbGciOiJub25lIn0|private-repo/);
  });

  test("an auditor's query: the route pattern, not the filters", async () => {
    const res = await request(fx.broker.app).get('/v1/audit/events?subject=repo:acme/secret-project&limit=1').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.equal(res.status, 200, res.text);
    const line = accessLine(res.headers['x-request-id'] as string);
    assert.deepEqual([line.method, line.route, line.status], ['GET', '/v1/audit/events', 200]);
    assert.doesNotMatch(JSON.stringify(line), /secret-project|limit/);
    assert.ok(!logText().includes(AUDITOR_TOKEN));
  });

  test('probes (/healthz, /readyz, /metrics) are logged at debug, on the API and on the admin app', async () => {
    for (const [app, path] of [
      [fx.broker.app, '/healthz'],
      [fx.broker.app, '/readyz'],
      [fx.broker.app, '/metrics'],
      [fx.broker.adminApp, '/healthz'],
      [fx.broker.adminApp, '/readyz'],
      [fx.broker.adminApp, '/metrics'],
    ] as const) {
      const res = await request(app).get(path);
      assert.equal(res.status, 200, `${path}: ${res.text}`);
      const line = accessLine(res.headers['x-request-id'] as string);
      assert.deepEqual([line.route, line.status, line.level], [path, 200, 'debug'], path);
    }
    // A 404 on the admin app is not a probe.
    const res = await request(fx.broker.adminApp).get('/v1/exchange');
    assert.deepEqual([accessLine(res.headers['x-request-id'] as string).level, res.status], ['info', 404]);
  });

  test('a caller that goes away before the answer: logged with no status, not completed', async () => {
    const server = http.createServer(fx.broker.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const received = new Promise<http.ServerResponse>((resolve) => server.once('request', (_req, res: http.ServerResponse) => resolve(res)));
      const req = http.request({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', method: 'POST', path: '/v1/exchange', headers: { 'content-type': 'application/json', 'content-length': '100' } });
      req.on('error', () => undefined);
      // Part of the body: the broker waits for the rest, and the caller leaves instead.
      req.write('{"policy":');
      const res = await received;
      const requestId = res.getHeader('x-request-id') as string;
      const closed = new Promise((resolve) => res.once('close', resolve));
      req.destroy();
      await closed;
      const line = accessLine(requestId);
      assert.deepEqual([line.route, line.status, line.completed, line.level], ['/v1/exchange', null, false, 'info']);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
