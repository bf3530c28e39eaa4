// The web console's server side (docs/console.md) against the real app:
// security headers, the session cookie and its flags, CSRF refusals, expiry,
// and the cookie as an alternative to the Bearer token on the audit API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { createApp } from '../src/http/app.js';
import { createHash } from 'node:crypto';
import { issueConsoleSession, sessionTokenBinding } from '../src/http/console-session.js';
import { CONSOLE_ASSETS_DIR, CONSOLE_CSP } from '../src/http/routes/console.js';
import { generateSigningJwk, loadSigningKey } from '../src/keys/signing-key.js';
import { createLimits } from '../src/limits/rate-limit.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');
const BINDING = sessionTokenBinding(sha256Hex(AUDITOR_TOKEN));

const EXPECTED_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const COOKIE = 'oidc-broker-console';

let fx: BrokerFixture;

before(async () => {
  assert.ok(existsSync(path.join(CONSOLE_ASSETS_DIR, 'index.html')), `the console is not built in ${CONSOLE_ASSETS_DIR}: run \`npm run build\``);
  fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
  const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' });
  const issued = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
  assert.equal(issued.status, 200, issued.text);
});
after(async () => fx?.close());

/** Signs in on `app` and answers the cookie pair `name=value` (what a browser sends back). */
async function signIn(app = fx.broker.app): Promise<{ pair: string; setCookie: string; body: Record<string, unknown> }> {
  const agent = request(app);
  const res = await withOrigin(agent.post('/console/session')).send({ token: AUDITOR_TOKEN });
  assert.equal(res.status, 200, res.text);
  const setCookie = String(res.headers['set-cookie']?.[0] ?? '');
  return { pair: setCookie.split(';')[0]!, setCookie, body: res.body };
}

/**
 * Sets Origin to the broker's public origin (the fixture's server.public_url),
 * as a browser on the console page does. A request from the origin it was
 * sent to (the Host header) is accepted too: test/console-browser.test.ts.
 */
function withOrigin(req: request.Test): request.Test {
  return req.set('Origin', AUDIENCE);
}

describe('console pages', () => {
  test('the page, its script and its style are served with the strict CSP and no-sniff, no-referrer headers', async () => {
    assert.equal(CONSOLE_CSP, EXPECTED_CSP);
    for (const [route, type] of [
      ['/console', 'text/html'],
      ['/console/', 'text/html'],
      ['/console/app.js', 'text/javascript'],
      ['/console/app.css', 'text/css'],
    ] as const) {
      const res = await request(fx.broker.app).get(route);
      assert.equal(res.status, 200, route);
      assert.equal(String(res.headers['content-type']).split(';')[0], type, route);
      assert.equal(res.headers['content-security-policy'], EXPECTED_CSP, route);
      assert.equal(res.headers['x-content-type-options'], 'nosniff', route);
      assert.equal(res.headers['referrer-policy'], 'no-referrer', route);
      assert.equal(res.headers['x-frame-options'], 'DENY', route);
    }
    const page = await request(fx.broker.app).get('/console');
    assert.match(page.text, /<script type="module" src="\/console\/app.js"><\/script>/);
    assert.doesNotMatch(page.text, /<script>|<style|style=|https?:\/\//, 'no inline script or style, nothing from another origin');
  });

  test('an unknown console path is a 404 that still carries the console headers', async () => {
    const res = await request(fx.broker.app).get('/console/../../package.json');
    assert.equal(res.status, 404);
    const other = await request(fx.broker.app).get('/console/nothing.js');
    assert.equal(other.status, 404);
    assert.equal(other.body.error, 'not_found');
    assert.equal(other.headers['content-security-policy'], EXPECTED_CSP);
  });

  test('a broker whose console was not built says how to build it', async () => {
    const empty = await mkdtemp(path.join(tmpdir(), 'oidc-broker-console-'));
    try {
      const app = createApp({ ...fx.broker.deps, consoleAssetsDir: empty });
      const res = await request(app).get('/console');
      assert.equal(res.status, 404);
      assert.equal(res.body.error_description, 'The console is not built; run `npm run build`.');
      await writeFile(path.join(empty, 'index.html'), '<!doctype html><p>stub</p>');
      assert.equal((await request(app).get('/console')).text, '<!doctype html><p>stub</p>');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe('sign-in', () => {
  test('the right token gets an HttpOnly, SameSite=Strict session cookie that holds no token (no Secure on loopback http)', async () => {
    const { pair, setCookie, body } = await signIn();
    assert.match(setCookie, new RegExp(`^${COOKIE}=[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+; Path=/; HttpOnly; SameSite=Strict; Max-Age=900$`));
    assert.ok(!setCookie.includes(AUDITOR_TOKEN));
    assert.equal(body.auditor, 'secops');
    const expires = Date.parse(String(body.expires_at));
    assert.ok(Math.abs(expires - (Date.now() + 900_000)) < 60_000, 'expires in 15 minutes');
    const payload = JSON.parse(Buffer.from(pair.split('=')[1]!.split('.')[0]!, 'base64url').toString('utf8'));
    assert.deepEqual(Object.keys(payload).sort(), ['a', 'exp', 't']);
    assert.equal(payload.a, 'secops');
    // 64 bits of the token's SHA-256 (the config holds all of it), never the token.
    assert.equal(payload.t, sha256Hex(AUDITOR_TOKEN).slice(0, 16));

    const session = await request(fx.broker.app).get('/console/session').set('Cookie', pair);
    assert.equal(session.status, 200);
    assert.deepEqual(session.body, { auditor: 'secops', expires_at: new Date(payload.exp * 1000).toISOString() });
    assert.equal(session.headers['cache-control'], 'no-store');
    const byToken = await request(fx.broker.app).get('/console/session').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.deepEqual(byToken.body, { auditor: 'secops', expires_at: null });

    const lines = fx.logLines();
    assert.ok(lines.some((line) => line.includes('"msg":"console sign-in"') && line.includes('"auditor":"secops"')));
    assert.ok(!lines.some((line) => line.includes(AUDITOR_TOKEN)), 'the token is never logged');
  });

  test('an https broker sets a Secure, __Host- prefixed cookie and accepts its public origin', async () => {
    const app = createApp({ ...fx.broker.deps, publicUrl: 'https://broker.example.com' });
    const res = await request(app).post('/console/session').set('Origin', 'https://broker.example.com').send({ token: AUDITOR_TOKEN });
    assert.equal(res.status, 200, res.text);
    const setCookie = String(res.headers['set-cookie']?.[0]);
    assert.match(setCookie, /^__Host-oidc-broker-console=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Secure; Max-Age=900$/);
    const pair = setCookie.split(';')[0]!;
    assert.equal((await request(app).get('/v1/audit/verify').set('Cookie', pair)).status, 200);
    // The plain-http name is not this broker's cookie.
    assert.equal((await request(app).get('/v1/audit/verify').set('Cookie', `${COOKIE}=${pair.split('=')[1]}`)).status, 401);
  });

  test('the session lifetime is console.session_seconds', async () => {
    const app = createApp({ ...fx.broker.deps, consoleSessionSeconds: 60 });
    const { setCookie, body } = await signIn(app);
    assert.match(setCookie, /; Max-Age=60$/);
    assert.ok(Math.abs(Date.parse(String(body.expires_at)) - (Date.now() + 60_000)) < 30_000);
  });

  test('a wrong or missing token is refused with 401 and no cookie, logged without the token', async () => {
    const cases: [body: unknown, description: string][] = [
      [{ token: 'not-the-auditor-token' }, 'This token is not an auditor token.'],
      [{ token: '' }, 'An auditor bearer token is required.'],
      [{}, 'An auditor bearer token is required.'],
    ];
    for (const [body, description] of cases) {
      const res = await withOrigin(request(fx.broker.app).post('/console/session')).send(body as object);
      assert.equal(res.status, 401, JSON.stringify(body));
      assert.equal(res.body.error, 'invalid_token');
      assert.equal(res.body.error_description, description);
      assert.equal(res.headers['set-cookie'], undefined);
      assert.equal(res.headers['content-security-policy'], EXPECTED_CSP);
    }
    assert.ok(fx.logLines().some((line) => line.includes('"msg":"auditor authentication failed"') && line.includes('"reason":"not_an_auditor"')));
    assert.ok(!fx.logLines().some((line) => line.includes('not-the-auditor-token')));
  });

  test('bad bodies are refused with 400 and the reason', async () => {
    const post = () => withOrigin(request(fx.broker.app).post('/console/session'));
    const cases: [request.Test, string][] = [
      [post().type('form').send(`token=${AUDITOR_TOKEN}`), 'Send the sign-in as JSON with "Content-Type: application/json".'],
      [post().type('text/plain').send(AUDITOR_TOKEN), 'Send the sign-in as JSON with "Content-Type: application/json".'],
      [post().type('json').send('{"token":'), 'The request body is not valid JSON.'],
      [post().type('json').send('["x"]'), 'The request body must be a JSON object.'],
      [post().send({ token: AUDITOR_TOKEN, remember: true }), 'Unknown field "remember" in the request body; expected token.'],
      [post().send({ token: 42 }), 'The "token" field must be a string.'],
      [post().type('json').send(JSON.stringify({ token: 'x'.repeat(5000) })), 'The request body is too large.'],
    ];
    for (const [req, description] of cases) {
      const res = await req;
      assert.equal(res.body.error_description, description);
      assert.equal(res.status, description.includes('too large') ? 413 : 400, description);
      assert.equal(res.headers['set-cookie'], undefined);
    }
  });

  test('failed sign-ins count against auditor_failures_per_ip; asking who is signed in without a cookie does not', async () => {
    const app = createApp({ ...fx.broker.deps, limits: createLimits({ refused_per_ip: 100, exchanges_per_subject: 100, explains_per_subject: 100, auditor_failures_per_ip: 1 }) });
    // The console asks on every load before sign-in.
    for (let i = 0; i < 3; i += 1) {
      const probe = await request(app).get('/console/session');
      assert.equal(probe.status, 401);
      assert.equal(probe.body.error_description, 'Not signed in to the console.');
    }
    assert.equal((await withOrigin(request(app).post('/console/session')).send({ token: 'guess' })).status, 401);
    const limited = await withOrigin(request(app).post('/console/session')).send({ token: AUDITOR_TOKEN });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error, 'rate_limited');
    assert.equal(limited.headers['set-cookie'], undefined);
  });
});

describe('CSRF', () => {
  test('sign-in and sign-out are refused without the console origin', async () => {
    const foreign: [string, (req: request.Test) => request.Test][] = [
      ['no Origin', (req) => req],
      ['another origin', (req) => req.set('Origin', 'http://evil.example')],
      ['the same host on another port', (req) => req.set('Origin', 'http://127.0.0.1:1')],
      ['null', (req) => req.set('Origin', 'null')],
    ];
    for (const [what, set] of foreign) {
      const signInRes = await set(request(fx.broker.app).post('/console/session')).send({ token: AUDITOR_TOKEN });
      assert.equal(signInRes.status, 403, what);
      assert.equal(signInRes.body.error, 'access_denied', what);
      assert.equal(signInRes.body.error_description, 'The console accepts this request only from its own origin.', what);
      assert.equal(signInRes.headers['set-cookie'], undefined, what);
      const signOutRes = await set(request(fx.broker.app).delete('/console/session'));
      assert.equal(signOutRes.status, 403, what);
      assert.equal(signOutRes.headers['set-cookie'], undefined, what);
    }
  });

  test('the origin the request was sent to is accepted', async () => {
    const server = fx.broker.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const own = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const res = await request(own).post('/console/session').set('Origin', own).send({ token: AUDITOR_TOKEN });
      assert.equal(res.status, 200, res.text);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('the session cookie on the audit API', () => {
  test('opens /v1/audit/events in every format and /v1/audit/verify', async () => {
    const { pair } = await signIn();
    const events = await request(fx.broker.app).get('/v1/audit/events').set('Cookie', `other=1; ${pair}`).query({ decision: 'issued' });
    assert.equal(events.status, 200, events.text);
    assert.equal(events.body.events.length, 1);
    assert.equal(events.body.events[0].claims.repository, 'acme/api');
    const csv = await request(fx.broker.app).get('/v1/audit/events').set('Cookie', pair).query({ decision: 'issued', format: 'csv' });
    assert.equal(csv.status, 200);
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8; header=present');
    assert.match(String(csv.headers['content-disposition']), /^attachment; filename="audit-\d{8}T\d{6}Z\.csv"$/);
    assert.equal(csv.text.split('\r\n').length, 3, 'header, one record, final CRLF');
    const ndjson = await request(fx.broker.app).get('/v1/audit/events').set('Cookie', pair).set('Accept', 'text/csv').query({ format: 'ndjson' });
    assert.equal(ndjson.status, 200);
    assert.equal(ndjson.headers['content-type'], 'application/x-ndjson; charset=utf-8');
    assert.match(String(ndjson.headers['content-disposition']), /^attachment; filename="audit-\d{8}T\d{6}Z\.ndjson"$/);
    assert.equal(JSON.parse(ndjson.text.split('\n')[0]!).seq, 1);
    const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Cookie', pair);
    assert.equal(verify.status, 200);
    assert.equal(verify.body.ok, true);
  });

  test('a bad format parameter is a 400', async () => {
    const { pair } = await signIn();
    const bad = await request(fx.broker.app).get('/v1/audit/events?format=xml').set('Cookie', pair);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error_description, "'format' must be one of json, ndjson, csv.");
    const twice = await request(fx.broker.app).get('/v1/audit/events?format=csv&format=csv').set('Cookie', pair);
    assert.equal(twice.status, 400);
    assert.equal(twice.body.error_description, "Query parameter 'format' must be given once.");
  });

  test('a forged, altered, foreign-key or orphaned cookie is a 401', async () => {
    const { pair } = await signIn();
    const [payload, signature] = pair.split('=')[1]!.split('.') as [string, string];
    const otherPayload = Buffer.from(JSON.stringify({ a: 'secops', exp: 4_102_444_800 })).toString('base64url');
    const otherKey = await loadSigningKey(await keyFile());
    const forged = [
      `${payload}.${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`,
      `${otherPayload}.${signature}`,
      `${payload}`,
      `${payload}.${signature}.x`,
      'x'.repeat(2000),
      issueConsoleSession(otherKey, { auditor: 'secops', tokenBinding: BINDING, expiresAt: new Date(Date.now() + 600_000) }),
      issueConsoleSession(fx.broker.deps.activeSigningKey(), { auditor: 'not-an-auditor', tokenBinding: BINDING, expiresAt: new Date(Date.now() + 600_000) }),
      // The auditor's name with another token's binding: the token it signed in with was replaced.
      issueConsoleSession(fx.broker.deps.activeSigningKey(), { auditor: 'secops', tokenBinding: sessionTokenBinding(sha256Hex('an older token')), expiresAt: new Date(Date.now() + 600_000) }),
    ];
    for (const value of forged) {
      const res = await request(fx.broker.app).get('/v1/audit/events').set('Cookie', `${COOKIE}=${value}`);
      assert.equal(res.status, 401, value.slice(0, 80));
      assert.equal(res.body.error, 'invalid_token');
      assert.equal(res.body.error_description, 'The console session is not valid; sign in again.');
    }
    // Sent twice, the cookie is no cookie at all.
    const twice = await request(fx.broker.app).get('/v1/audit/verify').set('Cookie', `${pair}; ${pair}`);
    assert.equal(twice.status, 401);
    assert.equal(twice.body.error_description, 'An auditor bearer token is required.');
  });

  test('a session expires at its end, on every replica (no shared state)', async () => {
    const start = new Date('2026-12-01T10:00:00Z');
    const at = (seconds: number) => createApp({ ...fx.broker.deps, now: () => new Date(start.getTime() + seconds * 1000) });
    const { pair } = await signIn(at(0));
    // Another app over the same key file stands for another replica.
    assert.equal((await request(at(899)).get('/v1/audit/verify').set('Cookie', pair)).status, 200);
    for (const seconds of [900, 3600]) {
      const res = await request(at(seconds)).get('/v1/audit/verify').set('Cookie', pair);
      assert.equal(res.status, 401);
      assert.equal(res.body.error_description, 'The console session has expired; sign in again.');
      assert.match(String(res.headers['www-authenticate']), /^Bearer error="invalid_token"/);
    }
    const expired = issueConsoleSession(fx.broker.deps.activeSigningKey(), { auditor: 'secops', tokenBinding: BINDING, expiresAt: new Date(Date.now() - 1000) });
    assert.equal((await request(fx.broker.app).get('/console/session').set('Cookie', `${COOKIE}=${expired}`)).status, 401);
  });

  test("replacing an auditor's token in the config ends the sessions made with the old one", async () => {
    const { pair } = await signIn();
    assert.equal((await request(fx.broker.app).get('/v1/audit/verify').set('Cookie', pair)).status, 200);
    // The same auditor name with a new token: another broker start (or replica) with the changed config.
    const rotated = createApp({ ...fx.broker.deps, auditors: [{ name: 'secops', tokenSha256: sha256Hex('the new auditor token') }] });
    const res = await request(rotated).get('/v1/audit/verify').set('Cookie', pair);
    assert.equal(res.status, 401);
    assert.equal(res.body.error_description, 'The console session is not valid; sign in again.');
  });

  test('a Bearer header wins over the cookie', async () => {
    const { pair } = await signIn();
    const res = await request(fx.broker.app).get('/v1/audit/verify').set('Cookie', pair).set('Authorization', 'Bearer wrong');
    assert.equal(res.status, 401);
    assert.equal(res.body.error_description, 'This token is not an auditor token.');
  });

  test('sign-out clears the cookie', async () => {
    const res = await withOrigin(request(fx.broker.app).delete('/console/session'));
    assert.equal(res.status, 204);
    assert.equal(res.headers['set-cookie']?.[0], `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`);
    const after = await request(fx.broker.app).get('/console/session');
    assert.equal(after.status, 401);
    assert.equal(after.body.error_description, 'Not signed in to the console.');
  });
});

/** A signing key file that is not the broker's. */
async function keyFile(): Promise<string> {
  const file = path.join(fx.dir, 'other-key.jwk');
  await writeFile(file, JSON.stringify(await generateSigningJwk()), { mode: 0o600 });
  return file;
}
