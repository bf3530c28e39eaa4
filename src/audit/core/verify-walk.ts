/**
 * The verification walk (docs/audit.md, "Proving the log untampered"): the
 * chain from a start point to the head, in batches, checking on the way that
 * the derived query indexes (claim rows, hour ranges) agree with each record.
 * It runs where the backend's reads are cheapest: on the broker's event loop
 * for PostgreSQL (asynchronous I/O), inside the worker thread that owns the
 * connection for SQLite (AuditBackend.verifyChain), so rows never cross threads.
 */
import { hourOf } from '../query.js';
import { GENESIS_HASH, createChainVerifier, toClaimIndex } from '../record.js';
import { fromStoredRow } from '../rows.js';
import type { AuditRecord, ChainVerification, ChainVerifyOptions } from '../types.js';
import type { AuditBackend, StoredClaim } from './backend.js';

/**
 * Records read per step of the walk, between which the event loop runs: on
 * the broker's, requests (each step is one query's round trip, so fewer and
 * larger ones make a long walk quicker).
 */
const VERIFY_BATCH = 500;

/**
 * The same in the SQLite worker, where what runs between steps is the
 * appends queued meanwhile: a step of 100 records (a few milliseconds of
 * reading, parsing and hashing) is all an append waits for.
 */
export const WORKER_VERIFY_BATCH = 100;

/** The reads the walk needs. */
export type ChainSource = Pick<AuditBackend, 'head' | 'hourRanges' | 'readRange'>;

/**
 * AuditStore.verify over `source`'s reads. Records appended while it runs
 * are not walked: it stops at the head it read first.
 * @throws what the reads throw, as they threw it (the store maps it: a worker's error crosses as data).
 */
export async function verifyWalk(source: ChainSource, options: ChainVerifyOptions = {}, stepRecords = VERIFY_BATCH): Promise<ChainVerification> {
  const verifier = createChainVerifier(options);
  const from = options.from ?? { seq: 0, hash: GENESIS_HASH };
  const endSeq = (await source.head()).seq;
  // Read after the head: hour ranges only ever widen, so they cover every record up to endSeq.
  const hours = new Map((await source.hourRanges()).map((r) => [r.hour, r]));
  // A row at or before the start (where records were pruned) would be served by queries but never walked.
  const [stray] = options.partial === true ? [] : await source.readRange(Number.MIN_SAFE_INTEGER, from.seq, 1);
  if (stray !== undefined) {
    verifier.fail({ seq: Number(stray.row.seq), id: typeof stray.row.id === 'string' ? stray.row.id : null }, 'unexpected_record');
    return verifier.result();
  }
  let afterSeq = from.seq;
  while (afterSeq < endSeq) {
    const rows = await source.readRange(afterSeq, endSeq, stepRecords);
    const last = rows.at(-1);
    if (last === undefined) break;
    for (const { row, claims } of rows) {
      let record: AuditRecord;
      try {
        record = fromStoredRow(row);
      } catch {
        verifier.fail({ seq: Number(row.seq), id: typeof row.id === 'string' ? row.id : null }, 'unreadable');
        return verifier.result();
      }
      const range = hours.get(hourOf(record.time));
      // Time-window queries only find a record its hour's seq range covers, claim queries only one whose claim rows match.
      const indexed = range !== undefined && range.min <= record.seq && record.seq <= range.max && sameClaimIndex(record, claims);
      if (!verifier.next(record, indexed ? null : 'claim_index_mismatch')) return verifier.result();
    }
    afterSeq = Number(last.row.seq);
    // Let requests (on the broker's event loop) or appends (in the SQLite worker) run between batches of a long walk.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return verifier.result();
}

/** True if the claim rows stored for `record` are exactly its claim index (and carry its time, where kept). */
function sameClaimIndex(record: AuditRecord, stored: readonly StoredClaim[] | null): boolean {
  if (stored === null) return false;
  const expected = toClaimIndex(record.claims);
  if (expected.length !== stored.length) return false;
  // Compare as sets (the database's string order and JavaScript's differ). A
  // record's claim names are unique (object keys), so its index is a map from
  // name to value, and a stored row is in the set if the map gives its value.
  const want = new Map(expected);
  // The (seq, name) key keeps stored names unique; a file rewritten without it must not pass [(sub, x), (sub, x)] for [(sub, x), (repo, y)].
  if (new Set(stored.map((c) => c.name)).size !== stored.length) return false;
  return stored.every((c) => (c.time === null || c.time === record.time) && want.get(c.name) === c.value);
}
