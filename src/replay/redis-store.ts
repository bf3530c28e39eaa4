import { Redis } from 'ioredis';
import { ReplayUnavailableError } from '../errors.js';
import type { Logger } from '../logger.js';
import { toKeyDigest } from './key-digest.js';
import type { ReplayStore } from './types.js';

/**
 * Bound on connecting and on each command (docs/configuration.md#replay): a
 * Redis that is down or hangs answers the exchange 503 in well under a second
 * instead of holding it open.
 */
const REDIS_TIMEOUT_MS = 500;
const DEFAULT_KEY_PREFIX = 'oidc-broker:replay:';

export interface RedisReplayStoreOptions {
  logger: Logger;
  /** Prepended to every key; tests give each run its own. */
  keyPrefix?: string;
}

/**
 * Replay store shared by every broker process that points at the same Redis
 * (`replay.url: redis://...`, docs/configuration.md#replay). A claim is one
 * atomic `SET key 1 PX ttl NX`, so two processes racing on one token cannot
 * both win. Keys are the prefix and the SHA-256 of the composite key, so their
 * length is bounded whatever the jti or issuer. Commands never queue while
 * disconnected: they fail at once (ReplayUnavailableError) and ioredis keeps
 * reconnecting in the background.
 */
export function createRedisReplayStore(url: string, options: RedisReplayStoreOptions): ReplayStore {
  const { logger } = options;
  const prefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX;
  const redis = new Redis(url, {
    connectTimeout: REDIS_TIMEOUT_MS,
    commandTimeout: REDIS_TIMEOUT_MS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  // Logged once per outage, not once per reconnection attempt.
  let down = false;
  redis.on('error', (err: Error) => {
    if (down) return;
    down = true;
    logger.warn('replay store unreachable', { error: err.message });
  });
  redis.on('ready', () => {
    if (!down) return;
    down = false;
    logger.info('replay store reachable again');
  });

  const redisKey = (key: string) => prefix + toKeyDigest(key);
  const failed = (cause: unknown) => {
    // A command that failed on a connection that looks up (a timeout on a half-open
    // connection, a primary turned replica) gets a fresh connection: otherwise a
    // dead socket would keep failing every command until TCP keepalive noticed.
    if (redis.status === 'ready') redis.disconnect(true);
    return new ReplayUnavailableError('The replay store could not be reached, so this single-use token cannot be checked; try again shortly.', { reason: 'replay_store_unreachable', cause });
  };

  return {
    async claim(key, expiresAtMs) {
      const ttlMs = Math.max(1, Math.ceil(expiresAtMs - Date.now()));
      try {
        return (await redis.set(redisKey(key), '1', 'PX', ttlMs, 'NX')) === 'OK';
      } catch (cause) {
        throw failed(cause);
      }
    },
    async release(key) {
      try {
        await redis.del(redisKey(key));
      } catch (cause) {
        throw failed(cause);
      }
    },
    async ping() {
      try {
        await redis.ping();
      } catch (cause) {
        throw failed(cause);
      }
    },
    async close() {
      // QUIT fails when there is no connection to send it on; then just drop the reconnection loop.
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
