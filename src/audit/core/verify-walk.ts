/**
 * The verification walk (docs/audit.md, "Proving the log untampered"): the
 * chain from a start point to the head, in batches, checking on the way that
 * the derived query indexes (claim rows, hour ranges) agree with each record.
 */
import { hourOf } from '../query.js';
import { GENESIS_HASH, createChainVerifier, toClaimIndex } from '../record.js';
import { fromStoredRow } from '../rows.js';
import type { AuditRecord, ChainVerification, ChainVerifyOptions } from '../types.js';
import type { AuditBackend, StoredClaim } from './backend.js';
import { readFailed } from './errors.js';

/** Records read per step of the walk, between which the event loop runs. */
const VERIFY_BATCH = 500;

/** AuditStore.verify over a backend. @throws AuditUnavailableError when the store cannot be read. */
export async function verifyWalk(backend: AuditBackend, options: ChainVerifyOptions = {}): Promise<ChainVerification> {
  const verifier = createChainVerifier(options);
  const from = options.from ?? { seq: 0, hash: GENESIS_HASH };
  let endSeq: number;
  let hours: Map<string, [number, number]>;
  try {
    endSeq = (await backend.head()).seq;
    // Read after the head: hour ranges only ever widen, so they cover every record up to endSeq.
    hours = new Map((await backend.hourRanges()).map((r) => [r.hour, [r.min, r.max]]));
    // A row at or before the start (where records were pruned) would be served by queries but never walked.
    const [stray] = options.partial === true ? [] : await backend.readRange(Number.MIN_SAFE_INTEGER, from.seq, 1);
    if (stray !== undefined) {
      verifier.fail({ seq: Number(stray.row.seq), id: typeof stray.row.id === 'string' ? stray.row.id : null }, 'unexpected_record');
      return verifier.result();
    }
  } catch (err) {
    throw readFailed(err);
  }
  let afterSeq = from.seq;
  while (afterSeq < endSeq) {
    let rows;
    try {
      rows = await backend.readRange(afterSeq, endSeq, VERIFY_BATCH);
    } catch (err) {
      throw readFailed(err);
    }
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
      const indexed = range !== undefined && range[0] <= record.seq && record.seq <= range[1] && sameClaimIndex(record, claims);
      if (!verifier.next(record, indexed ? null : 'claim_index_mismatch')) return verifier.result();
    }
    afterSeq = Number(last.row.seq);
    // Let appends and requests run between batches of a long walk.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return verifier.result();
}

/** True if the claim rows stored for `record` are exactly its claim index (and carry its time, where kept). */
function sameClaimIndex(record: AuditRecord, stored: readonly StoredClaim[] | null): boolean {
  if (stored === null) return false;
  const expected = toClaimIndex(record.claims);
  if (expected.length !== stored.length) return false;
  // Compare as sets: the database's string order and JavaScript's differ.
  const key = (name: string, value: string) => JSON.stringify([name, value]);
  const want = new Set(expected.map(([name, value]) => key(name, value)));
  return stored.every((c) => (c.time === null || c.time === record.time) && want.has(key(c.name, c.value)));
}
