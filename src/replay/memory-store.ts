import type { ReplayStore } from './types.js';

/**
 * Single-process replay store. Entries live until the token expires; expired
 * ones are swept as new ones arrive, so memory is bounded by the tokens still
 * valid. Replicas need the Redis store: this one does not share state.
 */
export function createMemoryReplayStore(now: () => number = Date.now): ReplayStore {
  const claims = new Map<string, number>();
  let nextSweepMs = 0;

  function sweep(nowMs: number): void {
    if (nowMs < nextSweepMs) return;
    for (const [key, expiresAtMs] of claims) if (expiresAtMs <= nowMs) claims.delete(key);
    nextSweepMs = nowMs + 10_000;
  }

  return {
    async claim(key, expiresAtMs) {
      const nowMs = now();
      sweep(nowMs);
      const existing = claims.get(key);
      if (existing !== undefined && existing > nowMs) return false;
      claims.set(key, expiresAtMs);
      return true;
    },
    async release(key) {
      claims.delete(key);
    },
    async ping() {},
    async close() {
      claims.clear();
    },
  };
}
