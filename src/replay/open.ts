import type { Logger } from '../logger.js';
import { createMemoryReplayStore } from './memory-store.js';
import { createRedisReplayStore } from './redis-store.js';
import type { ReplayStore } from './types.js';

/** The replay store `replay.url` names (docs/configuration.md#replay): `memory:`, else a validated `redis://` or `rediss://` URL. */
export function openReplayStore(url: string, logger: Logger): ReplayStore {
  return url === 'memory:' ? createMemoryReplayStore() : createRedisReplayStore(url, { logger });
}
