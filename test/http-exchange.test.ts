import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createLocalJWKSet, jwtVerify } from 'jose';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import type { AuditRecord } from '../src/audit/types.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': `
name: deploy
description: deploy from main
issuer: local
claims:
  repository: acme/api
  ref: [refs/heads/main, refs/heads/release]
grant:
  provider: jwt
  audience: https://deploy.example.com
  max_duration_seconds: 600
  claims:
    repo: \${repository}
    ref: \${ref}
`,
  'reusable.yaml': localJwtPolicy('https://reuse.example.com', 'allow_token_reuse: true\n'),
  'needs-claim.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://env.example.com
  claims:
    env: \${environment}
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
const secrets: string[] = [];

async function mint(claims: Record<string, unknown> = GOOD_CLAIMS, options?: Parameters<BrokerFixture['issuer']['mint']>[1]): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims }, options);
  secrets.push(token);
  return token;
}

function exchangeCall(token: string | undefined, body: unknown = { policy: 'deploy' }, query = '') {
  const req = request(fx.broker.app).post(`/v1/exchange${query}`);
  if (token !== undefined) req.set('Authorization', `Bearer ${token}`);
  return req.send(body as object);
}

function auditDb(): Database.Database {
  return new Database(path.join(fx.dir, 'data', 'audit.db'), { readonly: true });
}

async function auditRecord(id: string): Promise<AuditRecord> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  const found = (res.body.events as AuditRecord[]).find((e) => e.id === id);
  assert.ok(found, `audit record ${id} exists`);
  return found;
}

async function lastAuditRecord(): Promise<AuditRecord> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  const events = res.body.events as AuditRecord[];
  assert.ok(events.length > 0);
  return events[events.length - 1]!;
}

function assertErrorBody(res: request.Response, status: number, code: string): void {
  assert.equal(res.status, status, `status for ${code}: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.error, code);
  assert.equal(typeof res.body.error_description, 'string');
  assert.ok(res.body.error_description.length > 0);
  assert.equal(res.body.request_id, res.headers['x-request-id']);
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
});

after(async () => {
  await fx.close();
});

describe('POST /v1/exchange issues a broker-signed token', () => {
  test('answers the credential, signed by the key served at /.well-known/jwks.json, with templated claims', async () => {
    const ciToken = await mint();
    const res = await exchangeCall(ciToken, { policy: 'deploy' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(Object.keys(res.body).sort(), ['credentials', 'expires_at', 'issuance_id', 'policy', 'provider']);
    assert.equal(res.body.policy, 'deploy');
    assert.equal(res.body.provider, 'jwt');
    assert.equal(res.body.credentials.token_type, 'Bearer');
    const issued = res.body.credentials.access_token as string;
    secrets.push(issued);

    const jwks = (await request(fx.broker.app).get('/.well-known/jwks.json')).body;
    assert.ok(jwks.keys.every((k: Record<string, unknown>) => k.d === undefined), 'no private key material served');
    const discovery = (await request(fx.broker.app).get('/.well-known/openid-configuration')).body;
    assert.equal(discovery.issuer, 'http://127.0.0.1:8080');
    assert.equal(discovery.token_endpoint, 'http://127.0.0.1:8080/oauth2/token', 'OAuth clients discover the RFC 8693 endpoint');
    assert.deepEqual(discovery.grant_types_supported, ['urn:ietf:params:oauth:grant-type:token-exchange']);
    const { payload, protectedHeader } = await jwtVerify(issued, createLocalJWKSet(jwks), { issuer: discovery.issuer, audience: 'https://deploy.example.com' });
    assert.equal(protectedHeader.alg, 'ES256');
    assert.equal(payload.sub, GOOD_CLAIMS.sub);
    assert.equal(payload.repo, 'acme/api');
    assert.equal(payload.ref, 'refs/heads/main');
    assert.equal(payload.jti, res.body.issuance_id);
    assert.equal(payload.exp! - payload.iat!, 600, 'default duration is the policy ceiling');
    assert.equal(new Date(res.body.expires_at).getTime(), payload.exp! * 1000);

    const record = await auditRecord(res.body.issuance_id);
    assert.equal(record.decision, 'issued');
    assert.equal(record.policy, 'deploy');
    assert.match(record.policy_sha256!, /^[0-9a-f]{64}$/);
    assert.equal(record.provider, 'jwt');
    assert.equal(record.target, 'https://deploy.example.com');
    assert.equal(record.credential_id, payload.jti);
    assert.equal(record.issuer, 'local');
    assert.equal(record.subject, GOOD_CLAIMS.sub);
    assert.deepEqual(record.audience, [AUDIENCE]);
    assert.equal((record.claims as Record<string, unknown>).repository, 'acme/api');
    assert.match(record.token_sha256!, /^[0-9a-f]{64}$/);
    assert.equal(record.duration_seconds, 600);
    assert.equal(record.expires_at, res.body.expires_at);
    assert.equal(record.request_id, res.headers['x-request-id']);
  });

  test('a shorter duration is honoured; a longer one is clamped to the ceiling', async () => {
    const short = await exchangeCall(await mint(), { policy: 'deploy', duration_seconds: 120 });
    assert.equal(short.status, 200);
    assert.ok(Math.abs(new Date(short.body.expires_at).getTime() - Date.now() - 120_000) < 5_000);
    const long = await exchangeCall(await mint(), { policy: 'deploy', duration_seconds: 40_000 });
    assert.equal(long.status, 200);
    assert.ok(Math.abs(new Date(long.body.expires_at).getTime() - Date.now() - 600_000) < 5_000);
  });

  test('?format=env answers shell export lines', async () => {
    const res = await exchangeCall(await mint(), { policy: 'deploy' }, '?format=env');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    assert.match(res.text, /^export OIDC_BROKER_TOKEN='[A-Za-z0-9_.-]+'\n$/);
  });

  test('the token may come in the body instead of the header', async () => {
    const res = await exchangeCall(undefined, { policy: 'deploy', token: await mint() });
    assert.equal(res.status, 200);
  });

  test('the request id is always the broker\'s own, never a caller-supplied one', async () => {
    const res = await exchangeCall(await mint()).set('X-Request-Id', 'ci-run-42.attempt-1');
    assert.notEqual(res.headers['x-request-id'], 'ci-run-42.attempt-1');
    assert.match(String(res.headers['x-request-id']), /^[0-9A-Z]{26}$/);
    assert.equal((await auditRecord(res.body.issuance_id)).request_id, res.headers['x-request-id']);
  });
});

describe('every refusal answers its status and code, and is audited', () => {
  const cases: { name: string; status: number; code: string; decision: 'denied' | 'error'; call: () => Promise<request.Response> }[] = [
    { name: 'no token at all', status: 401, code: 'invalid_token', decision: 'denied', call: async () => exchangeCall(undefined) },
    { name: 'Authorization not Bearer', status: 400, code: 'invalid_request', decision: 'denied', call: async () => request(fx.broker.app).post('/v1/exchange').set('Authorization', 'Basic Zm9vOmJhcg==').send({ policy: 'deploy' }) },
    { name: 'token in header and body', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deploy', token: await mint() }) },
    { name: 'no policy named', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), {}) },
    { name: 'policy not a string', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: ['deploy'] }) },
    { name: 'duration not an integer', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deploy', duration_seconds: '900' }) },
    { name: 'duration out of range', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deploy', duration_seconds: 0 }) },
    { name: 'unknown format', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deploy' }, '?format=xml') },
    { name: 'unknown body field (a typo must not silently change the request)', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deploy', duration: 60 }) },
    {
      name: 'body that is not JSON by content type',
      status: 400,
      code: 'invalid_request',
      decision: 'denied',
      call: async () => request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${await mint()}`).type('form').send('policy=deploy'),
    },
    {
      name: 'compressed body (never inflated)',
      status: 400,
      code: 'invalid_request',
      decision: 'denied',
      call: async () => request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${await mint()}`).set('Content-Type', 'application/json').set('Content-Encoding', 'gzip').send('garbage'),
    },
    { name: 'body is a JSON array', status: 400, code: 'invalid_request', decision: 'denied', call: async () => exchangeCall(await mint(), [1, 2]) },
    {
      name: 'body is not JSON',
      status: 400,
      code: 'invalid_request',
      decision: 'denied',
      call: async () => request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${await mint()}`).set('Content-Type', 'application/json').send('{"policy":'),
    },
    {
      name: 'body too large',
      status: 413,
      code: 'request_too_large',
      decision: 'denied',
      call: async () => exchangeCall(await mint(), { policy: 'deploy', padding: 'x'.repeat(100_000) }),
    },
    { name: 'garbage token', status: 401, code: 'invalid_token', decision: 'denied', call: async () => exchangeCall('not.a.jwt') },
    { name: 'expired token', status: 401, code: 'invalid_token', decision: 'denied', call: async () => exchangeCall(await mint(GOOD_CLAIMS, { issuedAt: Math.floor(Date.now() / 1000) - 3600, expiresInSeconds: 600 })) },
    { name: 'wrong audience', status: 401, code: 'invalid_token', decision: 'denied', call: async () => exchangeCall(await mint({ ...GOOD_CLAIMS, aud: 'https://elsewhere.example.com' })) },
    { name: 'unknown policy', status: 404, code: 'unknown_policy', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'no-such-policy' }) },
    { name: 'claims do not match', status: 403, code: 'access_denied', decision: 'denied', call: async () => exchangeCall(await mint({ ...GOOD_CLAIMS, ref: 'refs/heads/feature' })) },
    { name: 'deny policy matches', status: 403, code: 'access_denied', decision: 'denied', call: async () => exchangeCall(await mint({ ...GOOD_CLAIMS, event_name: 'pull_request_target' })) },
    { name: 'naming a deny policy', status: 403, code: 'access_denied', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'deny-prt' }) },
    { name: 'grant template needs an absent claim', status: 403, code: 'access_denied', decision: 'denied', call: async () => exchangeCall(await mint(), { policy: 'needs-claim' }) },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const res = await c.call();
      assertErrorBody(res, c.status, c.code);
      assert.equal(res.body.credentials, undefined);
      if (c.status === 401) assert.match(String(res.headers['www-authenticate']), /^Bearer error="invalid_token"/);
      const record = await lastAuditRecord();
      assert.equal(record.request_id, res.headers['x-request-id'], 'the refusal has its own record');
      assert.equal(record.decision, c.decision);
      assert.equal(record.error, c.code);
      assert.ok(record.reason && record.reason.length > 0);
      assert.equal(record.credential_id, null);
    });
  }

  test('a denial names the failing claim and the token value, not the expected one', async () => {
    const res = await exchangeCall(await mint({ ...GOOD_CLAIMS, ref: 'refs/heads/feature' }));
    assert.equal(res.status, 403);
    assert.match(res.body.error_description, /ref/);
    assert.match(res.body.error_description, /refs\/heads\/feature/);
  });

  test('with ?format=env a refusal is shell-inert: an echo to stderr and a failing command, whatever the claims hold', async () => {
    const hostile = "refs/heads/$(touch${IFS}/tmp/oidc_pwned)';`id`";
    const res = await exchangeCall(await mint({ ...GOOD_CLAIMS, ref: hostile }), { policy: 'deploy' }, '?format=env');
    assert.equal(res.status, 403);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const lines = res.text.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.equal(lines[1], 'false');
    // The whole message is one single-quoted word: POSIX shells expand nothing inside it.
    const quoted = /^echo '((?:[^']|'\\'')*)' >&2$/.exec(lines[0]!);
    assert.ok(quoted, lines[0]);
    assert.match(quoted[1]!.replace(/'\\''/g, "'"), /access_denied/);
  });

  test('a policy name with a lone UTF-16 surrogate is refused and recorded without breaking the chain', async () => {
    const res = await exchangeCall(await mint(), { policy: '\ud800x' });
    assert.equal(res.status, 404);
    const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.equal(verify.body.ok, true, JSON.stringify(verify.body));
  });

  test('a token that fails verification keeps what it claims under `unverified`, never `claims`', async () => {
    const res = await exchangeCall(await mint(GOOD_CLAIMS, { issuedAt: Math.floor(Date.now() / 1000) - 3600, expiresInSeconds: 600 }));
    assert.equal(res.status, 401);
    const record = await lastAuditRecord();
    assert.equal(record.claims, null);
    assert.equal(record.subject, null);
    assert.deepEqual(record.unverified, { iss: fx.issuer.url, sub: GOOD_CLAIMS.sub });
    assert.match(record.token_sha256!, /^[0-9a-f]{64}$/);
  });
});

describe('replay', () => {
  test('a token is exchanged at most once per policy', async () => {
    const token = await mint();
    assert.equal((await exchangeCall(token)).status, 200);
    const again = await exchangeCall(token);
    assertErrorBody(again, 409, 'token_replayed');
    assert.equal((await lastAuditRecord()).error, 'token_replayed');
    // Another policy is another exchange.
    assert.equal((await exchangeCall(token, { policy: 'reusable' })).status, 200);
  });

  test('allow_token_reuse lets the same token through again', async () => {
    const token = await mint();
    assert.equal((await exchangeCall(token, { policy: 'reusable' })).status, 200);
    assert.equal((await exchangeCall(token, { policy: 'reusable' })).status, 200);
  });

  test('a token without jti is keyed by its hash', async () => {
    const token = await mint(GOOD_CLAIMS, { omit: ['jti'] });
    assert.equal((await exchangeCall(token)).status, 200);
    assert.equal((await exchangeCall(token)).status, 409);
  });
});

describe('fail closed on the audit store', () => {
  test('a locked audit database answers 503 audit_unavailable and no credential, then recovers', async () => {
    const blocker = new Database(path.join(fx.dir, 'data', 'audit.db'));
    blocker.exec('BEGIN EXCLUSIVE');
    try {
      const token = await mint();
      const res = await exchangeCall(token);
      assertErrorBody(res, 503, 'audit_unavailable');
      assert.equal(res.body.credentials, undefined);
      assert.doesNotMatch(res.text, /access_token/);
      const ready = await request(fx.broker.app).get('/readyz');
      assertErrorBody(ready, 503, 'not_ready');
      assert.equal(ready.body.checks.audit, 'unavailable');
      blocker.exec('ROLLBACK');
      // A credential was minted (and dropped): the token stays spent, since its record might have
      // committed anyway on a database that failed after COMMIT. A fresh token succeeds.
      assertErrorBody(await exchangeCall(token), 409, 'token_replayed');
      const retry = await exchangeCall(await mint());
      assert.equal(retry.status, 200);
      assert.equal((await request(fx.broker.app).get('/readyz')).status, 200);
    } finally {
      if (blocker.inTransaction) blocker.exec('ROLLBACK');
      blocker.close();
    }
  });
});

describe('audit endpoints', () => {
  test('refuse callers without an auditor token, including CI tokens', async () => {
    for (const auth of [undefined, 'Bearer wrong', `Bearer ${await mint()}`, `Basic ${AUDITOR_TOKEN}`]) {
      const req = request(fx.broker.app).get('/v1/audit/events');
      if (auth) req.set('Authorization', auth);
      const res = await req;
      assert.equal(res.status, auth?.startsWith('Basic') ? 401 : 401);
      assert.equal(res.body.error, 'invalid_token');
      assert.equal(res.body.events, undefined);
    }
    assert.equal((await request(fx.broker.app).get('/v1/audit/verify')).status, 401);
  });

  test('filter by decision, policy and claim; paginate with a cursor; reject bad parameters', async () => {
    const auth = `Bearer ${AUDITOR_TOKEN}`;
    const denied = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ decision: 'denied', limit: 1000 });
    assert.equal(denied.status, 200);
    assert.ok(denied.body.events.length > 0);
    assert.ok(denied.body.events.every((e: AuditRecord) => e.decision === 'denied'));

    const byClaim = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ 'claim.ref': 'refs/heads/feature', limit: 1000 });
    assert.ok(byClaim.body.events.length > 0);
    assert.ok(byClaim.body.events.every((e: AuditRecord) => (e.claims as Record<string, unknown>).ref === 'refs/heads/feature'));

    const seen = new Set<string>();
    let cursor: string | null = null;
    do {
      const page: request.Response = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ policy: 'deploy', limit: 2, ...(cursor ? { cursor } : {}) });
      assert.equal(page.status, 200);
      assert.ok(page.body.events.length <= 2);
      for (const e of page.body.events as AuditRecord[]) {
        assert.equal(e.policy, 'deploy');
        assert.ok(!seen.has(e.id), 'no record twice');
        seen.add(e.id);
      }
      cursor = page.body.next_cursor;
    } while (cursor);
    const all = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ policy: 'deploy', limit: 1000 });
    assert.equal(seen.size, all.body.events.length);

    for (const [param, value] of [
      ['limit', '0'],
      ['limit', '1001'],
      ['limit', 'ten'],
      ['decision', 'maybe'],
      ['since', 'yesterday'],
      ['cursor', '!!!'],
      ['since', '2026-02-31T00:00:00Z'],
      ['colour', 'blue'],
    ] as const) {
      const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', auth).query({ [param]: value });
      assertErrorBody(res, 400, 'invalid_request');
      if (param !== 'cursor') assert.match(res.body.error_description, new RegExp(param));
    }
  });

  test('claim.__proto__ is a filter like any other, not a silent no-op', async () => {
    const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ 'claim.__proto__': 'x' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.events, []);
  });

  test('verify walks the chain', async () => {
    const res = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.ok, true);
    assert.ok(res.body.events > 10);
    assert.match(res.body.head, /^[0-9a-f]{64}$/);
  });

  test('auditor queries are logged with the auditor name', () => {
    assert.ok(fx.logLines().some((line) => line.includes('"audit query"') && line.includes('"auditor":"secops"')));
  });
});

describe('service routes', () => {
  test('/healthz, /readyz, unknown routes', async () => {
    assert.deepEqual((await request(fx.broker.app).get('/healthz')).body, { status: 'ok' });
    const ready = await request(fx.broker.app).get('/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.checks.policies, 4);
    assertErrorBody(await request(fx.broker.app).get('/v1/nope'), 404, 'not_found');
    assertErrorBody(await request(fx.broker.app).get('/v1/exchange'), 404, 'not_found');
  });

  test('/metrics counts exchanges by policy, provider and decision; policy labels are only configured names', async () => {
    await exchangeCall(await mint(), { policy: 'attacker-chosen-label-value' });
    const res = await request(fx.broker.app).get('/metrics');
    assert.equal(res.status, 200);
    assert.match(res.text, /broker_exchanges_total\{policy="deploy",provider="jwt",decision="issued"\} \d+/);
    assert.match(res.text, /broker_exchanges_total\{policy="unknown",provider="none",decision="denied"\} \d+/);
    assert.match(res.text, /broker_exchange_duration_seconds_bucket/);
    assert.match(res.text, /broker_audit_append_duration_seconds_count \d+/);
    // replay.url "memory:": one claim per issued exchange of a single-use policy, none expired yet.
    assert.match(res.text, /\nbroker_replay_entries [1-9]\d*\n/);
    assert.doesNotMatch(res.text, /attacker-chosen-label-value/);
  });
});

describe('no secret is ever stored or logged', () => {
  test('neither the audit database nor the logs hold a raw CI token or an issued credential', async () => {
    assert.ok(secrets.length > 20);
    const db = auditDb();
    const rows = db.prepare('SELECT * FROM audit_events').all();
    db.close();
    const dumped = JSON.stringify(rows);
    const files = Buffer.concat([await readFile(path.join(fx.dir, 'data', 'audit.db')), await readFile(path.join(fx.dir, 'data', 'audit.db-wal')).catch(() => Buffer.alloc(0))]);
    const logs = fx.logLines().join('\n');
    for (const secret of secrets) {
      const signature = secret.split('.')[2]!;
      assert.ok(!dumped.includes(signature), 'no token in audit rows');
      assert.ok(!files.includes(signature), 'no token in the database file');
      assert.ok(!logs.includes(signature), 'no token in the logs');
    }
  });
});
