import { toKeyDigest } from './key-digest.js';
import type { ReplayStore } from './types.js';

/** How often, at most, a claim sweeps the expired entries (so `entries()` may count some expired ones). */
const SWEEP_EVERY_MS = 10_000;

/**
 * Single-process replay store. Entries live until the token expires; expired
 * ones are swept as new ones arrive, so memory is bounded by the tokens still
 * valid (docs/performance.md, "Memory under a soak"). Replicas need the Redis
 * store: this one does not share state.
 */
export function createMemoryReplayStore(now: () => number = Date.now): Required<ReplayStore> {
  const claims = new Map<string, number>();
  let nextSweepMs = 0;

  function sweep(nowMs: number): void {
    if (nowMs < nextSweepMs) return;
    for (const [key, expiresAtMs] of claims) if (expiresAtMs <= nowMs) claims.delete(key);
    nextSweepMs = nowMs + SWEEP_EVERY_MS;
  }

  return {
    async claim(key, expiresAtMs) {
      const nowMs = now();
      sweep(nowMs);
      const entry = toKeyDigest(key);
      const existing = claims.get(entry);
      if (existing !== undefined && existing > nowMs) return false;
      claims.set(entry, expiresAtMs);
      return true;
    },
    async release(key) {
      claims.delete(toKeyDigest(key));
    },
    async ping() {},
    async close() {
      claims.clear();
    },
    entries: () => claims.size,
  };
}
