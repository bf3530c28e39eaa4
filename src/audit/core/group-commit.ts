/**
 * Group commit (docs/audit.md): appends are queued and written together, one
 * batch of at most MAX_BATCH entries in flight at a time, each caller's
 * promise resolving only after its batch's COMMIT. When the database refuses
 * a value in a batch, the batch is split in halves and each written on its
 * own, down to the entries it refuses, so that one bad record fails only its
 * own append. When the database fails otherwise, the entries not yet written
 * and everything queued behind them fail at once (they would fail the same
 * way). With a deadline, no entry waits in the queue longer than one batch
 * may take.
 */
import type { AuditEntry, AuditRecord } from '../types.js';
import { writeFailed } from './errors.js';

/** At most this many queued entries per transaction: one commit stays short. */
export const MAX_BATCH = 500;

export interface GroupCommitOptions {
  /** Writes one batch in one transaction (AuditBackend.appendBatch). */
  write: (entries: readonly AuditEntry[]) => Promise<(AuditRecord | Error)[]>;
  /** Whether a failure of `write` is the database refusing a value (AuditBackend.isValueRefusal). */
  isValueRefusal: (err: unknown) => boolean;
  /** How long an entry may wait in the queue. */
  deadlineMs: number;
  /** Called after each committed batch with its latency, in seconds. */
  onAppendSeconds?: ((seconds: number) => void) | undefined;
}

export interface GroupCommit {
  /** Queues a canonical entry; resolves with its record once committed. */
  append(entry: AuditEntry): Promise<AuditRecord>;
  /** Refuses new appends and writes what is queued. */
  close(): Promise<void>;
}

interface Pending {
  entry: AuditEntry;
  /** performance.now() when queued. */
  queuedAt: number;
  resolve: (record: AuditRecord) => void;
  reject: (err: unknown) => void;
}

export function createGroupCommit(options: GroupCommitOptions): GroupCommit {
  const { write, isValueRefusal, deadlineMs, onAppendSeconds } = options;
  let closing = false;
  let queue: Pending[] = [];
  let scheduled = false;
  let inFlight: Promise<void> | null = null;

  function schedule(): void {
    if (scheduled || inFlight !== null || queue.length === 0) return;
    scheduled = true;
    // Once the appends made in this turn are queued, not on the next turn of
    // the event loop: an idle store starts writing while the broker still
    // verifies the other requests that arrived with this one, and those join
    // the next batch (docs/performance.md, "Group commit starts at once").
    queueMicrotask(() => {
      scheduled = false;
      startBatch();
    });
  }

  function startBatch(): void {
    if (inFlight !== null || queue.length === 0) return;
    // Behind a slow database the queue grows; nobody waits longer than a batch may take.
    const expired = performance.now() - deadlineMs;
    if (queue[0]!.queuedAt < expired) {
      const failure = writeFailed(new Error('timed out waiting in the append queue'));
      for (const p of queue.filter((p) => p.queuedAt < expired)) p.reject(failure);
      queue = queue.filter((p) => p.queuedAt >= expired);
      if (queue.length === 0) return;
    }
    const batch = queue.slice(0, MAX_BATCH);
    queue = queue.slice(batch.length);
    inFlight = writeBatch(batch).finally(() => {
      inFlight = null;
      schedule();
    });
  }

  /** Writes one batch and settles its promises; never rejects. */
  async function writeBatch(batch: readonly Pending[]): Promise<void> {
    try {
      await writeIsolating(batch);
    } catch (err) {
      const failure = writeFailed(err);
      const waiting = queue;
      queue = [];
      // Entries of the batch already settled (an earlier half that committed) ignore this.
      for (const p of [...batch, ...waiting]) p.reject(failure);
    }
  }

  /**
   * Writes `entries` in one transaction and settles their promises. If the
   * database refuses a value, writes each half on its own instead, so only
   * the entries it refuses alone fail: at most about 2·log2(n) transactions
   * per refused entry. Throws, leaving the unwritten entries pending, when
   * the database fails otherwise.
   */
  async function writeIsolating(entries: readonly Pending[]): Promise<void> {
    let results: (AuditRecord | Error)[];
    let seconds: number;
    try {
      const started = process.hrtime.bigint();
      results = await write(entries.map((p) => p.entry));
      seconds = Number(process.hrtime.bigint() - started) / 1e9;
    } catch (err) {
      if (!isValueRefusal(err)) throw err;
      if (entries.length === 1) {
        entries[0]!.reject(writeFailed(err));
        return;
      }
      const half = Math.ceil(entries.length / 2);
      await writeIsolating(entries.slice(0, half));
      await writeIsolating(entries.slice(half));
      return;
    }
    entries.forEach((p, i) => {
      const result = results[i];
      if (result !== undefined && !(result instanceof Error)) p.resolve(result);
      else p.reject(writeFailed(result ?? new Error('the batch returned no result for this entry')));
    });
    if (onAppendSeconds !== undefined) {
      try {
        onAppendSeconds(seconds);
      } catch {
        // A metrics callback must not turn a committed batch into a failure,
        // and the store never logs; the records above are already durable.
      }
    }
  }

  return {
    append(entry) {
      if (closing) return Promise.reject(writeFailed(new Error('the audit store is closed')));
      return new Promise<AuditRecord>((resolve, reject) => {
        queue.push({ entry, queuedAt: performance.now(), resolve, reject });
        schedule();
      });
    },

    async close() {
      closing = true;
      for (;;) {
        if (inFlight === null) startBatch();
        if (inFlight === null) break;
        await inFlight;
      }
    },
  };
}
