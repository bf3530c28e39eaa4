import { toKeyDigest } from './key-digest.js';
import type { ReplayStore } from './types.js';

/**
 * Entries each claim looks at for expiry, going round the map: more than the
 * one a claim adds, so a full round takes at most a third as many claims as
 * there are entries, and an expired entry is gone within a round. A sweep of
 * the whole map at once would stop the event loop for tens of milliseconds
 * with a million entries (docs/performance.md, "Memory under a soak").
 */
const SWEEP_STEP = 4;

/**
 * Single-process replay store. Entries live until the token expires; expired
 * ones are swept a few at a time as new ones arrive, so memory follows the
 * tokens still valid: an expired entry waits at most one round of the sweep,
 * which at a steady rate keeps the map within about 4/3 of the valid claims
 * (docs/performance.md, "Memory under a soak"). With no new claims nothing
 * is swept, and nothing grows. Replicas need the Redis store: this one does
 * not share state.
 */
export function createMemoryReplayStore(now: () => number = Date.now): Required<ReplayStore> {
  const claims = new Map<string, number>();
  /** Where the sweep goes on; a Map iterator sees entries added after it started, and survives deletions. */
  let sweeping: Iterator<[string, number]> | undefined;

  function sweep(nowMs: number): void {
    for (let i = 0; i < SWEEP_STEP; i++) {
      sweeping ??= claims.entries();
      const next = sweeping.next();
      if (next.done === true) {
        sweeping = undefined;
        return;
      }
      const [key, expiresAtMs] = next.value;
      if (expiresAtMs <= nowMs) claims.delete(key);
    }
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
