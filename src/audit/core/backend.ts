/**
 * What a database must provide for the audit store (docs/audit.md), and the
 * one pure step every backend runs inside its append transaction.
 *
 * Everything dialect-free (the group-commit queue, the verification walk,
 * query paging, prune and checkpoint rules, error mapping) lives in
 * `store.ts` over this interface; a backend only moves rows. Every method is
 * async and passes data, never callbacks, so a backend may run its database
 * elsewhere (a worker thread) without the core changing.
 */
import { hourOf, type CompiledAuditQuery } from '../query.js';
import { hashRecord, toClaimIndex } from '../record.js';
import type { StoredRow } from '../rows.js';
import type { AuditCheckpoint, AuditEntry, AuditRecord, AuditStatsRows, ChainPoint, ChainVerification, ChainVerifyOptions } from '../types.js';

/** One row of the claim index: a scalar top-level claim of the record at `seq`, with its time. */
export interface ClaimRow {
  seq: number;
  name: string;
  value: string;
  time: string;
}

/** The lowest and highest seq of a record whose time falls in `hour` (`YYYY-MM-DDTHH`). */
export interface HourRange {
  hour: string;
  min: number;
  max: number;
}

/** A claim index row as read back; `time` is null where the backend does not keep it. */
export interface StoredClaim {
  name: string;
  value: string;
  time: string | null;
}

/** A stored record with its claim index rows, read in one snapshot; `claims` null if they cannot be read. */
export interface IndexedRow {
  row: StoredRow;
  claims: readonly StoredClaim[] | null;
}

export interface AuditBackend {
  /**
   * A character the backend's text columns cannot hold (PostgreSQL: U+0000),
   * or null. No canonical entry holds it (toCanonicalEntry); a filter holding
   * it matches nothing.
   */
  readonly forbiddenCharacter: string | null;
  /**
   * How long an append may wait in the queue for its batch before it fails:
   * the bound on one batch (both backends write off the event loop, so
   * appends queue behind a batch in flight).
   */
  readonly batchDeadlineMs: number;
  /**
   * True if `err`, from appendBatch, is the database refusing a value it was
   * given (a constraint, a trigger, a value or index entry it cannot hold),
   * which the same transaction without that entry might not meet; false for
   * a failure of the database itself (connection, timeout, lock, disk).
   */
  isValueRefusal(err: unknown): boolean;
  /**
   * One transaction, serialised against every other writer of the log
   * (the write lock): reads the head (the last record, or after everything
   * was pruned the latest prune checkpoint), removes claim rows above it
   * (leftovers of deleted records), finds which ids are taken, extends the
   * chain with `extendChain`, inserts the records, claim rows and hour
   * ranges, and commits. Resolves only after COMMIT, with one result per
   * entry: its record, or the error that refused that entry alone (its id
   * is taken). Rejects if the transaction failed: then nothing was written.
   */
  appendBatch(entries: readonly AuditEntry[]): Promise<(AuditRecord | Error)[]>;
  /** The last record's seq and hash, else the latest prune checkpoint's, else seq 0 and GENESIS_HASH. */
  head(): Promise<ChainPoint>;
  /** The lowest min and highest max seq of the hour ranges from `fromHour` to `toHour` (inclusive); null if none. */
  hourSpan(fromHour: string, toHour: string): Promise<{ lo: number; hi: number } | null>;
  /** Every stored hour range. */
  hourRanges(): Promise<HourRange[]>;
  /** The rows of one query page: seq above `query.afterSeq` (and at most `upperSeq`), in seq order, at most `query.limit + 1`. */
  readPage(query: CompiledAuditQuery, upperSeq: number | null): Promise<StoredRow[]>;
  /**
   * The stats aggregations (toStatsSelects) over the records a page of
   * `query` would walk (seq above `query.afterSeq`, at most `upperSeq`),
   * grouped by the first `bucketChars` characters of their time, with top
   * lists of `top` entries.
   */
  readStats(query: CompiledAuditQuery, upperSeq: number | null, bucketChars: number, top: number): Promise<AuditStatsRows>;
  /** Up to `limit` records with afterSeq < seq <= throughSeq, in seq order, each with its claim index rows. */
  readRange(afterSeq: number, throughSeq: number, limit: number): Promise<IndexedRow[]>;
  /**
   * The verification walk (verifyWalk) run beside the database, for a
   * backend whose database lives on another thread: the rows it reads then
   * never cross, only the verdict does. Absent, the store walks over
   * readRange itself.
   */
  verifyChain?(options?: ChainVerifyOptions): Promise<ChainVerification>;
  /** See AuditStore.pruneBoundary. */
  pruneBoundary(before: string): Promise<ChainPoint | null>;
  /**
   * In one transaction: if the record at anchor.seq has anchor.hash, stores
   * `anchor` and deletes every record, claim row and hour range through
   * anchor.seq, returning the number of records deleted; otherwise changes
   * nothing and returns null.
   */
  deleteThrough(anchor: AuditCheckpoint): Promise<number | null>;
  /** Stores a checkpoint; an identical one already stored is no error. */
  saveCheckpoint(checkpoint: AuditCheckpoint): Promise<void>;
  /** Every stored checkpoint, in seq order, then time. */
  checkpoints(): Promise<AuditCheckpoint[]>;
  /** Resolves if a write would succeed now (a write rolled back). */
  ping(): Promise<void>;
  /** Releases the database; every later call fails. Idempotent. */
  close(): Promise<void>;
}

/** What an append batch adds on top of the head. */
export interface ChainExtension {
  /** Per entry, in order: its record, or null if its id is taken (stored, or earlier in the batch). */
  results: (AuditRecord | null)[];
  /** The new records, in seq order, starting right after the head. */
  records: AuditRecord[];
  claims: ClaimRow[];
  /** One per hour the new records fall in, sorted by hour. */
  hours: HourRange[];
}

/**
 * The chain links (seq, prev_hash, hash) and derived rows for `entries`
 * (canonical, see toCanonicalEntry) on top of `head`, skipping entries whose
 * id is in `taken`. Pure: the backend calls it inside its append transaction
 * with the head read under the write lock, so nothing kept in memory can fork
 * the chain.
 */
export function extendChain(head: ChainPoint, entries: readonly AuditEntry[], taken: ReadonlySet<string>): ChainExtension {
  const ids = new Set(taken);
  const out: ChainExtension = { results: [], records: [], claims: [], hours: [] };
  const hours = new Map<string, HourRange>();
  let { seq, hash } = head;
  for (const entry of entries) {
    // A reused id is a caller bug, and that entry's alone: the rest of the batch commits without a gap.
    if (ids.has(entry.id)) {
      out.results.push(null);
      continue;
    }
    ids.add(entry.id);
    seq += 1;
    const record: AuditRecord = { ...entry, seq, prev_hash: hash, hash: hashRecord(hash, seq, entry) };
    hash = record.hash;
    out.results.push(record);
    out.records.push(record);
    for (const [name, value] of toClaimIndex(record.claims)) out.claims.push({ seq, name, value, time: record.time });
    const hour = hourOf(record.time);
    const range = hours.get(hour);
    if (range === undefined) hours.set(hour, { hour, min: seq, max: seq });
    else range.max = seq; // seqs ascend within the batch
  }
  out.hours = [...hours.values()].sort((a, b) => (a.hour < b.hour ? -1 : a.hour > b.hour ? 1 : 0));
  return out;
}
