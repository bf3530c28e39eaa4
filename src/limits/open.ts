import { Redis } from 'ioredis';
import { createLimits, type Limits, type LimitsConfig } from './rate-limit.js';

/** Same bounds as the replay store: a limit check never waits long on Redis. */
const REDIS_TIMEOUT_MS = 500;
const KEY_PREFIX = 'oidc-broker:limits';

export interface OpenedLimits {
  limits: Limits;
  close(): Promise<void>;
}

/**
 * The broker's rate limits (docs/configuration.md#limits): counted in this
 * process's memory with `replay.url: memory:`, else in the same Redis as the
 * replay store, so every replica counts against one budget. A Redis that
 * cannot be reached is counted around in memory (see `createLimiter`).
 */
export function openLimits(config: LimitsConfig, replayUrl: string): OpenedLimits {
  if (replayUrl === 'memory:') return { limits: createLimits(config), close: async () => undefined };
  const redis = new Redis(replayUrl, { connectTimeout: REDIS_TIMEOUT_MS, commandTimeout: REDIS_TIMEOUT_MS, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  // Outages are logged by the replay store, which uses the same Redis; this client only reconnects.
  redis.on('error', () => undefined);
  return {
    limits: createLimits(config, { redis, keyPrefix: KEY_PREFIX }),
    close: async () => {
      redis.disconnect();
    },
  };
}
