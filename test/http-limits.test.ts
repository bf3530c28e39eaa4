import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import type { AuditRecord } from '../src/audit/types.js';
import { ConfigError, parseConfig } from '../src/config.js';
import { RateLimitedError } from '../src/errors.js';
import { createLimits } from '../src/limits/rate-limit.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'reusable.yaml': localJwtPolicy('https://reuse.example.com', 'allow_token_reuse: true\n'),
};

const claimsOf = (sub: string) => ({ aud: AUDIENCE, sub, repository: 'acme/api' });

async function allRecords(fx: BrokerFixture): Promise<AuditRecord[]> {
  return (await fx.broker.deps.audit.query({ limit: 1000 })).events;
}

async function metric(fx: BrokerFixture, line: string): Promise<number> {
  const text = (await request(fx.broker.app).get('/metrics')).text;
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  assert.ok(found, `metric ${line}`);
  return Number(found.split(' ')[1]);
}

/** The app on a loopback port, so a flood runs over kept-alive connections instead of a server per request. */
async function listen(fx: BrokerFixture): Promise<{ url: string; server: Server }> {
  const server = createServer(fx.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/**
 * `count` POSTs of a tokenless exchange (each refused 401 until the address is
 * limited), `concurrency` at a time. One at a time by default: requests already
 * past the check when the limit is reached finish as refusals, so the counts
 * asserted below are exact only for one address's requests in sequence.
 */
async function flood(url: string, count: number, headers: Record<string, string> = {}, concurrency = 1): Promise<{ status: number; retryAfter: string | null }[]> {
  const results: { status: number; retryAfter: string | null }[] = [];
  for (let sent = 0; sent < count; sent += concurrency) {
    const batch = Array.from({ length: Math.min(concurrency, count - sent) }, async () => {
      const res = await fetch(`${url}/v1/exchange`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"policy":"reusable"}' });
      await res.arrayBuffer();
      return { status: res.status, retryAfter: res.headers.get('retry-after') };
    });
    results.push(...(await Promise.all(batch)));
  }
  return results;
}

function tally(statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

describe('limits and trusted_proxies in the config', () => {
  const parse = (text: string) => parseConfig(text, '/etc/broker/broker.yaml', {});

  test('an absent section gets the documented defaults', async () => {
    const config = await parse('issuers: []\n');
    assert.deepEqual(config.limits, { refused_per_ip: 120, exchanges_per_subject: 60, explains_per_subject: 20, auditor_failures_per_ip: 10 });
    assert.deepEqual(config.server.trustedProxies, []);
  });

  test('0, a negative or a fractional limit is refused with the file, line, key and what is expected', async () => {
    for (const [value, expected] of [
      ['0', /cannot be 0/],
      ['-5', /cannot be 0, negative/],
      ['1.5', /expected int, got number 1\.5/],
    ] as const) {
      await assert.rejects(parse(`limits:\n  exchanges_per_subject: ${value}\n`), (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /^\/etc\/broker\/broker\.yaml:2: limits\.exchanges_per_subject: /);
        assert.match(err.message, expected);
        return true;
      });
    }
    await assert.rejects(parse('limits:\n  per_minute: 5\n'), /limits: unknown key 'per_minute'/);
  });

  test('a malformed trusted proxy is refused with the file, line, key and what is expected', async () => {
    const config = await parse('server:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7, "fd00::/8"]\n');
    assert.deepEqual(config.server.trustedProxies, ['10.0.0.0/8', '192.0.2.7', 'fd00::/8']);
    for (const bad of ['10.0.0.0/33', '10.0.0/8', 'proxy.internal', '10.0.0.0/8/1', 'fd00::/129', 'loopback']) {
      await assert.rejects(parse(`server:\n  trusted_proxies:\n    - ${JSON.stringify(bad)}\n`), (err: Error) => {
        assert.match(err.message, /^\/etc\/broker\/broker\.yaml:3: server\.trusted_proxies\[0\]: expected an IP address or a CIDR range/, bad);
        return true;
      });
    }
  });
});

describe('trusted proxies', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startBrokerFixture({ policies: POLICIES, trustedProxies: ['127.0.0.1/32', '::1', '198.51.100.0/24'] });
  });
  after(async () => fx.close());

  async function clientIpOf(app: Parameters<typeof request>[0], forwardedFor?: string): Promise<string | null> {
    const req = request(app).post('/v1/exchange').send({ policy: 'reusable' });
    if (forwardedFor !== undefined) req.set('X-Forwarded-For', forwardedFor);
    const res = await req;
    assert.equal(res.status, 401);
    const record = (await allRecords(fx)).find((r) => r.request_id === res.headers['x-request-id']);
    assert.ok(record);
    return record.client_ip;
  }

  test('from a trusted peer, client_ip is the first address from the right that is not a trusted proxy', async () => {
    assert.equal(await clientIpOf(fx.broker.app, '203.0.113.9'), '203.0.113.9');
    assert.equal(await clientIpOf(fx.broker.app, '192.0.2.1, 203.0.113.9, 198.51.100.4'), '203.0.113.9', 'a trusted proxy in the chain is skipped, a spoofed first hop is not believed');
    assert.match((await clientIpOf(fx.broker.app)) ?? '', /^(::ffff:)?127\.0\.0\.1$|^::1$/, 'no header: the peer');
  });

  test('from a peer that is not trusted, X-Forwarded-For is ignored', async () => {
    const untrusting = (await import('../src/http/app.js')).createApp({ ...fx.broker.deps, trustedProxies: ['198.51.100.0/24'] });
    assert.match((await clientIpOf(untrusting, '203.0.113.9')) ?? '', /^(::ffff:)?127\.0\.0\.1$|^::1$/);
  });
});

describe('refused_per_ip', () => {
  let fx: BrokerFixture;
  let url: string;
  let server: Server;
  before(async () => {
    fx = await startBrokerFixture({ policies: POLICIES, trustedProxies: ['127.0.0.1', '::1'], limits: { refused_per_ip: 5 } });
    ({ url, server } = await listen(fx));
  });
  after(async () => {
    await close(server);
    await fx.close();
  });

  test('a flood of 500 refused requests from one address: 5 refusals, then 429 with Retry-After; 7 records in all', async () => {
    const before = (await allRecords(fx)).length;
    const results = await flood(url, 500, { 'X-Forwarded-For': '192.0.2.10' });
    assert.deepEqual(tally(results.map((r) => r.status)), { 401: 5, 429: 495 });
    for (const r of results.filter((r) => r.status === 429)) {
      assert.match(r.retryAfter ?? '', /^[0-9]+$/);
      assert.ok(Number(r.retryAfter) >= 1 && Number(r.retryAfter) <= 60, `Retry-After ${r.retryAfter}`);
    }
    const during = (await allRecords(fx)).slice(before);
    assert.equal(during.length, 6, 'the refusals and the first limited request');
    const limited = during.filter((r) => r.error === 'rate_limited');
    assert.equal(limited.length, 1);
    assert.equal(limited[0]!.decision, 'denied');
    assert.equal(limited[0]!.client_ip, '192.0.2.10');
    assert.match(limited[0]!.reason!, /^refused_per_ip: Too many requests/);

    // The window's summary is written when it ends, or at shutdown: here, now.
    await fx.broker.deps.summaries.close();
    const summary = (await allRecords(fx)).slice(before + 6);
    assert.equal(summary.length, 1);
    assert.equal(summary[0]!.decision, 'denied');
    assert.equal(summary[0]!.error, 'rate_limited');
    assert.equal(summary[0]!.client_ip, '192.0.2.10');
    assert.match(summary[0]!.reason!, /^refused_per_ip: 494 dropped from \S+Z to \S+Z: answered 429 without records of their own/);
    assert.equal(await metric(fx, 'broker_rate_limited_total{limit="refused_per_ip",audited="false"}'), 494);
    assert.equal(await metric(fx, 'broker_rate_limited_total{limit="refused_per_ip",audited="true"}'), 1);
  });

  test('a flood from 20 addresses limits each on its own; records stay at refusals + first limited + one summary per address', async () => {
    const before = (await allRecords(fx)).length;
    const addresses = Array.from({ length: 20 }, (_, i) => `203.0.113.${i + 1}`);
    const results = await Promise.all(addresses.map((address) => flood(url, 40, { 'X-Forwarded-For': address })));
    for (const r of results) assert.deepEqual(tally(r.map((x) => x.status)), { 401: 5, 429: 35 });
    // An address that sent nothing wrong yet is not limited by the others.
    assert.deepEqual(tally((await flood(url, 1, { 'X-Forwarded-For': '203.0.113.200' })).map((r) => r.status)), { 401: 1 });
    await fx.broker.deps.summaries.close();
    const added = (await allRecords(fx)).slice(before);
    assert.equal(added.length, 20 * (5 + 1 + 1) + 1);
    for (const address of addresses) {
      const summaries = added.filter((r) => r.client_ip === address && / dropped from /.test(r.reason ?? ''));
      assert.equal(summaries.length, 1, address);
      assert.match(summaries[0]!.reason!, /: 34 dropped /);
    }
  });

  test('/oauth2/token is gated too, answered as an OAuth error with Retry-After', async () => {
    const headers = { 'X-Forwarded-For': '192.0.2.10' };
    const res = await fetch(`${url}/oauth2/token`, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=x' });
    assert.equal(res.status, 429);
    assert.equal(((await res.json()) as { error: string }).error, 'temporarily_unavailable');
    assert.match(res.headers.get('retry-after') ?? '', /^[0-9]+$/);
  });
});

describe('exchanges_per_subject and explains_per_subject', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startBrokerFixture({ policies: POLICIES, limits: { exchanges_per_subject: 3, explains_per_subject: 2 } });
  });
  after(async () => fx.close());

  test('the 4th exchange of a subject in a minute is 429 after verification, audited with the subject; another subject is not limited', async () => {
    const token = await fx.issuer.mint(claimsOf('repo:acme/api:ref:refs/heads/main'));
    for (let i = 0; i < 3; i += 1) assert.equal((await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'reusable' })).status, 200);
    const limited = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'reusable' });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error, 'rate_limited');
    assert.match(limited.headers['retry-after'] as string, /^[0-9]+$/);
    const record = (await allRecords(fx)).find((r) => r.request_id === limited.headers['x-request-id']);
    assert.equal(record?.decision, 'denied');
    assert.equal(record.error, 'rate_limited');
    assert.equal(record.subject, 'repo:acme/api:ref:refs/heads/main');
    assert.equal(record.issuer, 'local');
    assert.equal(record.credential_id, null, 'nothing issued');

    const other = await fx.issuer.mint(claimsOf('repo:acme/web:ref:refs/heads/main'));
    assert.equal((await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${other}`).send({ policy: 'reusable' })).status, 200);
    // A forged token is refused as invalid, not counted against the subject it names.
    assert.equal((await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token.slice(0, -4)}AAAA`).send({ policy: 'reusable' })).status, 401);
  });

  test('explains have their own, lower limit', async () => {
    const token = await fx.issuer.mint(claimsOf('repo:acme/docs:ref:refs/heads/main'));
    const explain = () => request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${token}`).send({ policy: 'reusable' });
    assert.equal((await explain()).status, 200);
    assert.equal((await explain()).status, 200);
    const limited = await explain();
    assert.equal(limited.status, 429);
    const record = (await allRecords(fx)).find((r) => r.request_id === limited.headers['x-request-id']);
    assert.match(record?.reason ?? '', /^explain: explains_per_subject: /);
    assert.equal((await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'reusable' })).status, 200, 'exchanges are counted apart');
  });
});

describe('exchanges_per_subject across two brokers sharing one Redis', () => {
  let redis: Redis;
  let a: BrokerFixture;
  let b: BrokerFixture;
  before(async () => {
    redis = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    await redis.connect();
    const limits = createLimits(
      { refused_per_ip: 100, exchanges_per_subject: 3, explains_per_subject: 100, auditor_failures_per_ip: 100 },
      { redis, keyPrefix: `oidc-broker-test:${randomUUID()}` },
    );
    a = await startBrokerFixture({ policies: POLICIES, brokerOptions: { limits } });
    // The same issuer for both replicas, as behind one load balancer.
    b = await startBrokerFixture({ policies: POLICIES, brokerOptions: { limits } });
  });
  after(async () => {
    await a.close();
    await b.close();
    redis.disconnect();
  });

  test('three exchanges through two replicas use up the subject; the fourth is 429 on either', async () => {
    const sub = `repo:acme/api:${randomUUID()}`;
    const onA = await a.issuer.mint(claimsOf(sub));
    const onB = await b.issuer.mint(claimsOf(sub));
    const call = (fx: BrokerFixture, token: string) => request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'reusable' });
    assert.equal((await call(a, onA)).status, 200);
    assert.equal((await call(b, onB)).status, 200);
    assert.equal((await call(a, onA)).status, 200);
    const first = await call(b, onB);
    assert.equal(first.status, 429);
    assert.equal((await call(a, onA)).status, 429);
    // The first limited request of the window is recorded once across replicas; the other replica's is summarised.
    const limitedOnB = (await allRecords(b)).filter((r) => r.error === 'rate_limited');
    const limitedOnA = (await allRecords(a)).filter((r) => r.error === 'rate_limited');
    assert.equal(limitedOnB.length, 1);
    assert.equal(limitedOnA.length, 0);
    await a.broker.deps.summaries.close();
    const summary = (await allRecords(a)).filter((r) => r.error === 'rate_limited');
    assert.equal(summary.length, 1);
    assert.match(summary[0]!.reason!, /^exchanges_per_subject: 1 dropped /);
  });
});

test('limits whose Redis cannot be reached count in the process memory meanwhile', async () => {
  // Never connected: the limiter does not wait on a queued command, it falls back at once.
  const unreachable = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, enableOfflineQueue: false });
  const limits = createLimits(
    { refused_per_ip: 2, exchanges_per_subject: 2, explains_per_subject: 2, auditor_failures_per_ip: 2 },
    { redis: unreachable, keyPrefix: `oidc-broker-test:${randomUUID()}` },
  );
  assert.equal(await limits.exchanges_per_subject.consume('local sub'), undefined);
  assert.equal(await limits.exchanges_per_subject.consume('local sub'), undefined);
  const first = await limits.exchanges_per_subject.consume('local sub');
  assert.ok(first instanceof RateLimitedError);
  assert.equal(first.limited.dropped, undefined, 'the first limited request is audited');
  assert.ok((await limits.exchanges_per_subject.consume('local sub'))?.limited.dropped, 'the next is summarised');

  assert.equal(await limits.refused_per_ip.check('192.0.2.1'), undefined);
  await limits.refused_per_ip.count('192.0.2.1');
  await limits.refused_per_ip.count('192.0.2.1');
  assert.ok((await limits.refused_per_ip.check('192.0.2.1')) instanceof RateLimitedError);
  unreachable.disconnect();
});

describe('failed auditor authentications', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startBrokerFixture({ policies: POLICIES, limits: { auditor_failures_per_ip: 3 } });
  });
  after(async () => fx.close());

  test('are logged without the token and counted; past the limit the address gets 429, even with the right token', async () => {
    const wrong = `wrong-${randomUUID()}`;
    for (let i = 0; i < 2; i += 1) assert.equal((await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${wrong}`)).status, 401);
    assert.equal((await request(fx.broker.app).get('/v1/audit/verify')).status, 401);
    for (let i = 0; i < 3; i += 1) {
      const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      assert.equal(res.status, 429);
      assert.equal(res.body.error, 'rate_limited');
      assert.match(res.headers['retry-after'] as string, /^[0-9]+$/);
    }
    const lines = fx.logLines();
    const failures = lines.filter((l) => l.includes('"auditor authentication failed"'));
    assert.equal(failures.length, 3);
    assert.ok(failures.every((l) => /"client_ip":"(::ffff:)?127\.0\.0\.1"/.test(l)), failures[0]);
    assert.equal(lines.filter((l) => l.includes('"auditor authentication rate limited"')).length, 1, 'one line per address and window');
    assert.ok(!lines.some((l) => l.includes(wrong) || l.includes(AUDITOR_TOKEN)), 'no token in the log');
    assert.equal(await metric(fx, 'broker_auditor_auth_failures_total{reason="not_an_auditor"}'), 2);
    assert.equal(await metric(fx, 'broker_auditor_auth_failures_total{reason="missing_auditor_token"}'), 1);
    assert.equal(await metric(fx, 'broker_rate_limited_total{limit="auditor_failures_per_ip",audited="false"}'), 3);
  });
});
