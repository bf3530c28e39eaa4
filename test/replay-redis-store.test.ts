// The Redis replay store against the real Redis at 127.0.0.1:6379 (docs/configuration.md#replay):
// key format, expiry, release, and one winner among racing processes. Each run uses its own prefix.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLogger } from '../src/logger.js';
import { createRedisReplayStore } from '../src/replay/redis-store.js';
import type { ReplayStore } from '../src/replay/types.js';

const URL = 'redis://127.0.0.1:6379/0';
const prefix = `oidc-broker-test:${randomUUID()}:`;
const logger = createLogger({ silent: true });
let raw: Redis;
let stores: ReplayStore[];

before(async () => {
  raw = new Redis(URL);
  stores = [createRedisReplayStore(URL, { logger, keyPrefix: prefix }), createRedisReplayStore(URL, { logger, keyPrefix: prefix })];
  // Nothing is queued before the connection is up (as /readyz says): wait for it.
  for (const store of stores) {
    while (!(await store.ping().then(() => true, () => false))) await new Promise((resolve) => setTimeout(resolve, 20));
  }
});
after(async () => {
  const keys = await raw.keys(`${prefix}*`);
  if (keys.length > 0) await raw.del(...keys);
  await raw.quit();
  await Promise.all(stores.map((s) => s.close()));
});

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

describe('Redis replay store', () => {
  test('a claim is the prefix and the SHA-256 of the key, expiring at the given time; release forgets it', async () => {
    const [store] = stores;
    const key = `deploy\nhttps://issuer.example\njti:${'x'.repeat(10_000)}`;
    const before = Date.now();
    const expiresAtMs = before + 600_000;
    assert.equal(await store!.claim(key, expiresAtMs), true);
    assert.equal(await store!.claim(key, expiresAtMs), false);
    const stored = `${prefix}${sha256(key)}`;
    assert.deepEqual(await raw.keys(`${prefix}*`), [stored]);
    assert.equal(await raw.get(stored), '1');
    const ttl = await raw.pttl(stored);
    assert.ok(ttl > 0 && ttl <= expiresAtMs - before, `PTTL ${ttl}`);
    await store!.release(key);
    assert.equal(await raw.exists(stored), 0);
    assert.equal(await store!.claim(key, expiresAtMs), true);
  });

  test('of many claims of one key racing on two connections, exactly one wins', async () => {
    const key = `deploy\nhttps://issuer.example\njti:${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 2]!.claim(key, Date.now() + 600_000)));
    assert.equal(results.filter(Boolean).length, 1);
  });
});
