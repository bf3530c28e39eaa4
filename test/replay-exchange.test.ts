// Replay protection end to end (docs/policies/reference.md#replay-and-allow_token_reuse,
// docs/configuration.md#replay): the memory store and the real Redis at 127.0.0.1:6379,
// re-encoded signatures, and a Redis that is down or hangs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import request from 'supertest';
import path from 'node:path';
import { AUDIENCE, AUDITOR_TOKEN, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import { createBroker } from '../src/main.js';
import type { DevIssuerAlgorithm } from '../src/dev/issuer.js';
import type { AuditRecord } from '../src/audit/types.js';
import { localJwtPolicy } from './helpers/oidc.js';
import { passEverything, startRedisProxy, type RedisProxy } from './helpers/redis-proxy.js';

const REDIS_URL = 'redis://127.0.0.1:6379/0';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'other.yaml': localJwtPolicy('https://other.example.com'),
  'reusable.yaml': localJwtPolicy('https://reuse.example.com', 'allow_token_reuse: true\n'),
};

const CLAIMS = { aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' };
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** The order of the P-256 group. */
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/**
 * The same token with the last signature character changed to the other
 * encoding of the same bits: RS256 and ES256 signatures (256 and 64 bytes)
 * leave 4 unused bits in it.
 */
function withSpareBitFlipped(token: string): string {
  const last = token.at(-1)!;
  return token.slice(0, -1) + BASE64URL[BASE64URL.indexOf(last) ^ 1]!;
}

/** The same ES256 token with its signature (r, s) replaced by the other valid form (r, n - s). */
function withHighLowSSwapped(token: string): string {
  const dot = token.lastIndexOf('.');
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  const s = BigInt(`0x${signature.subarray(32).toString('hex')}`);
  const swapped = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex');
  return `${token.slice(0, dot)}.${Buffer.concat([signature.subarray(0, 32), swapped]).toString('base64url')}`;
}

function exchangeCall(fx: BrokerFixture, token: string, policy = 'deploy') {
  return request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
}

async function lastAuditRecord(fx: BrokerFixture): Promise<AuditRecord> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  const events = res.body.events as AuditRecord[];
  return events[events.length - 1]!;
}

/** A broker fixture once /readyz says it can issue: the Redis store queues nothing before it is connected. */
async function startReadyBroker(options: Parameters<typeof startBrokerFixture>[0]): Promise<BrokerFixture> {
  const fx = await startBrokerFixture(options);
  await eventually(async () => (await request(fx.broker.app).get('/readyz')).status === 200);
  return fx;
}

function replayConfig(url: string): string {
  return `replay:\n  url: "${url}"\n`;
}

for (const store of [{ name: 'memory', url: 'memory:' }, { name: 'Redis', url: REDIS_URL }]) {
  for (const alg of ['RS256', 'ES256'] as DevIssuerAlgorithm[]) {
    describe(`a jti-less ${alg} token with a re-encoded signature is the same token (${store.name} store)`, () => {
      let fx: BrokerFixture;
      before(async () => {
        fx = await startReadyBroker({ policies: POLICIES, issuerAlg: alg, extraConfig: replayConfig(store.url) });
      });
      after(async () => {
        await fx.close();
      });

      // Each re-encoding of the same signature is the same token for replay.
      const variants = [
        { name: 'the spare bits of the last signature character', reencode: withSpareBitFlipped },
        ...(alg === 'ES256' ? [{ name: 'the s and n - s forms of an ECDSA signature', reencode: withHighLowSSwapped }] : []),
      ];
      for (const { name, reencode } of variants) {
        test(name, async () => {
          const token = await fx.issuer.mint({ ...CLAIMS, nonce: randomUUID() }, { omit: ['jti'] });
          const variant = reencode(token);
          assert.notEqual(variant, token);
          assert.equal((await exchangeCall(fx, token)).status, 200);
          const again = await exchangeCall(fx, variant);
          assert.equal(again.status, 409, JSON.stringify(again.body));
          assert.equal(again.body.error, 'token_replayed');
          // The variant is a valid token of its own: another policy takes it.
          assert.equal((await exchangeCall(fx, variant, 'other')).status, 200);
        });
      }
    });
  }
}

describe('Redis replay store', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startReadyBroker({ policies: POLICIES, extraConfig: replayConfig(REDIS_URL) });
  });
  after(async () => {
    await fx.close();
  });

  test('a jti token is single use per policy, once under each other policy; reuse policies are unaffected', async () => {
    const token = await fx.issuer.mint(CLAIMS);
    assert.equal((await exchangeCall(fx, token)).status, 200);
    const again = await exchangeCall(fx, token);
    assert.equal(again.status, 409);
    assert.equal((await lastAuditRecord(fx)).error, 'token_replayed');
    assert.equal((await exchangeCall(fx, token, 'other')).status, 200);
    assert.equal((await exchangeCall(fx, token, 'reusable')).status, 200);
    assert.equal((await exchangeCall(fx, token, 'reusable')).status, 200);
    const ready = await request(fx.broker.app).get('/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.checks.replay, 'reachable');
  });

  test('a second broker on the same Redis knows the tokens the first one exchanged', async () => {
    // Same config (issuer, policies, Redis), its own audit database: another replica.
    const second = await createBroker(fx.config, { logger: createCapturingLogger().logger, audit: openSqliteAuditStore(path.join(fx.dir, 'data', 'second.db')) });
    try {
      await eventually(async () => (await request(second.app).get('/readyz')).status === 200);
      const token = await fx.issuer.mint(CLAIMS);
      assert.equal((await exchangeCall(fx, token)).status, 200);
      const elsewhere = await request(second.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(elsewhere.status, 409);
      assert.equal(elsewhere.body.error, 'token_replayed');
    } finally {
      await second.close();
    }
  });
});

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A TCP server that accepts connections and never answers: a Redis that hangs. */
async function startSilentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

for (const broken of ['unreachable', 'hanging'] as const) {
  describe(`a Redis that is ${broken}`, () => {
    let fx: BrokerFixture;
    let silent: Awaited<ReturnType<typeof startSilentServer>> | undefined;
    before(async () => {
      silent = broken === 'hanging' ? await startSilentServer() : undefined;
      const port = silent?.port ?? (await closedPort());
      fx = await startBrokerFixture({ policies: POLICIES, extraConfig: replayConfig(`redis://127.0.0.1:${port}/0`) });
    });
    after(async () => {
      await fx.close();
      await silent?.close();
    });

    test('single-use policies answer 503 replay_unavailable, issue nothing and audit an error', async () => {
      const res = await exchangeCall(fx, await fx.issuer.mint(CLAIMS));
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error, 'replay_unavailable');
      assert.equal(res.body.credentials, undefined);
      assert.equal(res.headers['retry-after'], '5');
      const record = await lastAuditRecord(fx);
      assert.equal(record.decision, 'error');
      assert.equal(record.error, 'replay_unavailable');
      assert.match(record.reason ?? '', /^replay_store_unreachable:/);
    });

    test('readiness says the replay store is unavailable', async () => {
      const res = await request(fx.broker.app).get('/readyz');
      assert.equal(res.status, 503);
      assert.equal(res.body.error, 'not_ready');
      assert.equal(res.body.checks.replay, 'unavailable');
    });

    test('allow_token_reuse policies keep working', async () => {
      const token = await fx.issuer.mint(CLAIMS);
      assert.equal((await exchangeCall(fx, token, 'reusable')).status, 200);
      assert.equal((await exchangeCall(fx, token, 'reusable')).status, 200);
    });
  });
}

/** Polls until `probe` holds; bounded by the test runner's timeout, not by a threshold of ours. */
async function eventually(probe: () => Promise<boolean>): Promise<void> {
  while (!(await probe())) await new Promise((resolve) => setTimeout(resolve, 50));
}

describe('a Redis that hangs after the handshake, or goes away and comes back', () => {
  let fx: BrokerFixture;
  let proxy: RedisProxy;
  const ready = async () => (await request(fx.broker.app).get('/readyz')).status === 200;
  before(async () => {
    proxy = await startRedisProxy();
    fx = await startReadyBroker({ policies: POLICIES, extraConfig: replayConfig(`redis://127.0.0.1:${proxy.port}/0`) });
  });
  after(async () => {
    await fx.close();
    await proxy.close();
  });

  test('commands that get no answer time out: 503 replay_unavailable; answers again once Redis does', async () => {
    // A Redis that hangs after the handshake: nothing the broker sends gets through.
    proxy.route(() => undefined);
    const res = await exchangeCall(fx, await fx.issuer.mint(CLAIMS));
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error, 'replay_unavailable');
    assert.equal((await request(fx.broker.app).get('/readyz')).body.checks.replay, 'unavailable');
    proxy.route(passEverything);
    await eventually(ready);
    assert.equal((await exchangeCall(fx, await fx.issuer.mint(CLAIMS))).status, 200);
  });

  test('reconnects on its own after Redis comes back', async () => {
    await proxy.cut();
    assert.equal((await exchangeCall(fx, await fx.issuer.mint(CLAIMS))).status, 503);
    assert.equal((await request(fx.broker.app).get('/readyz')).status, 503);
    await proxy.restore();
    await eventually(ready);
    const token = await fx.issuer.mint(CLAIMS);
    assert.equal((await exchangeCall(fx, token)).status, 200);
    assert.equal((await exchangeCall(fx, token)).status, 409);
  });
});
