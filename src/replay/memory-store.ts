import { toKeyDigest } from './key-digest.js';
import type { ReplayStore } from './types.js';

/**
 * Entries each claim looks at for expiry, going round the maps: more than the
 * one a claim adds, so a full round takes at most a third as many claims as
 * there are entries, and an expired entry is gone within a round. A sweep of
 * everything at once would stop the event loop for tens of milliseconds
 * with a million entries (docs/performance.md, "Memory under a soak").
 */
const SWEEP_STEP = 4;

/**
 * Claims are spread over this many maps by the first two hex digits of their
 * digest. A `Map` doubles its table in one step when it fills, and at a
 * million entries that one `set` stops the event loop for about 100 ms; a
 * 256th of the entries per map makes each such step well under a millisecond.
 */
const SHARDS = 256;

/** Shards a claim's sweep moves through at most, so a nearly empty store does not cost a claim 256 empty iterators. */
const SWEEP_SHARDS = 8;

/**
 * Single-process replay store. Entries live until the token expires; expired
 * ones are swept a few at a time as new ones arrive, so memory follows the
 * tokens still valid: an expired entry waits at most one round of the sweep,
 * which at a steady rate keeps the store within about 4/3 of the valid
 * claims (docs/performance.md, "Memory under a soak"). With no new claims
 * nothing is swept, and nothing grows. Replicas need the Redis store: this
 * one does not share state.
 */
export function createMemoryReplayStore(now: () => number = Date.now): Required<ReplayStore> {
  const shards = Array.from({ length: SHARDS }, () => new Map<string, number>());
  const shardOf = (digest: string) => shards[Number.parseInt(digest.slice(0, 2), 16)]!;
  /** Where the sweep goes on: a shard, and an iterator over it (which sees entries added after it started, and survives deletions). */
  let sweepShard = 0;
  let sweeping: Iterator<[string, number]> | undefined;

  function sweep(nowMs: number): void {
    for (let looked = 0, moved = 0; looked < SWEEP_STEP && moved < SWEEP_SHARDS; ) {
      const shard = shards[sweepShard]!;
      sweeping ??= shard.entries();
      const next = sweeping.next();
      if (next.done === true) {
        sweeping = undefined;
        sweepShard = (sweepShard + 1) % SHARDS;
        moved += 1;
        continue;
      }
      looked += 1;
      const [key, expiresAtMs] = next.value;
      if (expiresAtMs <= nowMs) shard.delete(key);
    }
  }

  return {
    async claim(key, expiresAtMs) {
      const nowMs = now();
      sweep(nowMs);
      const digest = toKeyDigest(key);
      const shard = shardOf(digest);
      const existing = shard.get(digest);
      if (existing !== undefined && existing > nowMs) return false;
      shard.set(digest, expiresAtMs);
      return true;
    },
    async release(key) {
      const digest = toKeyDigest(key);
      shardOf(digest).delete(digest);
    },
    async ping() {},
    async close() {
      for (const shard of shards) shard.clear();
    },
    entries: () => shards.reduce((total, shard) => total + shard.size, 0),
  };
}
