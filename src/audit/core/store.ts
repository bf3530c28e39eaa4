/**
 * The audit store over a backend (docs/audit.md): one group-commit queue,
 * query paging with time windows mapped to seq ranges, the verification
 * walk, prune and checkpoint rules, and the errors callers see. Dialect code
 * lives in the backends (`../sqlite/`, `../postgres/`).
 */
import { toCanonicalEntry } from '../record.js';
import { compileAuditQuery, hourOf, toCursor, type CompiledAuditQuery } from '../query.js';
import { fromStoredRow, type StoredRow } from '../rows.js';
import { compileStatsQuery, shapeStats } from '../stats.js';
import type { AuditEntry, AuditPage, AuditRecord, AuditStore } from '../types.js';
import type { AuditBackend } from './backend.js';
import { readFailed, unwritable, writeFailed } from './errors.js';
import { createGroupCommit } from './group-commit.js';
import { verifyWalk } from './verify-walk.js';

export interface AuditStoreOptions {
  /** Called after each committed batch with its latency (from writing the batch to its COMMIT), in seconds. */
  onAppendSeconds?: (seconds: number) => void;
}

/** The AuditStore over `backend`; never logs. */
export function createAuditStore(backend: AuditBackend, options: AuditStoreOptions = {}): AuditStore {
  const forbidden = backend.forbiddenCharacter;
  const commits = createGroupCommit({
    write: (entries) => backend.appendBatch(entries),
    isValueRefusal: (err) => backend.isValueRefusal(err),
    deadlineMs: backend.batchDeadlineMs,
    onAppendSeconds: options.onAppendSeconds,
  });
  let closing: Promise<void> | null = null;
  // Readiness reflects real appends (docs/audit.md): a batch that failed since the
  // last ping, with none committed after it, fails that ping even if its probe
  // passes. Cleared by each ping, so a broker taken out of rotation (no appends)
  // is ready again once the probe passes.
  let appendFailedSincePing = false;

  async function read<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw readFailed(err);
    }
  }

  /**
   * The query with its time window as a seq range from the hour ranges (a
   * few hundred rows a month): the walk in seq order starts at the window's
   * first hour and stops after its last, instead of reading every record
   * before or after the window. Null if no record falls in those hours.
   */
  async function toWalk(compiled: CompiledAuditQuery): Promise<{ page: CompiledAuditQuery; upperSeq: number | null } | null> {
    if (compiled.since === null && compiled.until === null) return { page: compiled, upperSeq: null };
    const span = await backend.hourSpan(compiled.since === null ? '' : hourOf(compiled.since), compiled.until === null ? '\u{10FFFF}' : hourOf(compiled.until));
    if (span === null) return null;
    return { page: { ...compiled, afterSeq: Math.max(compiled.afterSeq, span.lo - 1) }, upperSeq: span.hi };
  }

  return {
    append(entry) {
      let canonical: AuditEntry;
      try {
        canonical = toCanonicalEntry(entry);
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new TypeError(String(err)));
      }
      return commits.append(canonical).then(
        (record) => {
          appendFailedSincePing = false;
          return record;
        },
        (err: unknown) => {
          appendFailedSincePing = true;
          throw err;
        },
      );
    },

    async query(query): Promise<AuditPage> {
      const compiled = compileAuditQuery(query);
      // No stored string holds the forbidden character (toCanonicalEntry replaces it), and the database may refuse it as a parameter.
      if (forbidden !== null && queryHolds(compiled, forbidden)) return { events: [], nextCursor: null };
      let rows: StoredRow[];
      try {
        const walk = await toWalk(compiled);
        if (walk === null) return { events: [], nextCursor: null };
        rows = await backend.readPage(walk.page, walk.upperSeq);
      } catch (err) {
        throw readFailed(err);
      }
      const more = rows.length > compiled.limit;
      let events: AuditRecord[];
      try {
        events = (more ? rows.slice(0, compiled.limit) : rows).map(fromStoredRow);
      } catch (err) {
        // Only an edited store holds a row that does not parse; verify() names it.
        throw readFailed(err);
      }
      const last = events.at(-1);
      return { events, nextCursor: more && last !== undefined ? toCursor(last.seq) : null };
    },

    async stats(query) {
      const stats = compileStatsQuery(query, new Date());
      const compiled = compileAuditQuery(stats.query);
      if (forbidden !== null && queryHolds(compiled, forbidden)) return shapeStats(stats, null);
      return read(async () => {
        const walk = await toWalk(compiled);
        return shapeStats(stats, walk === null ? null : await backend.readStats(walk.page, walk.upperSeq, stats.bucketChars, stats.top));
      });
    },

    verify: (options) => read(() => (backend.verifyChain === undefined ? verifyWalk(backend, options) : backend.verifyChain(options))),

    head: () => read(() => backend.head()),

    pruneBoundary: (before) => read(() => backend.pruneBoundary(before)),

    async saveCheckpoint(checkpoint) {
      try {
        await backend.saveCheckpoint(checkpoint);
      } catch (err) {
        throw writeFailed(err);
      }
    },

    checkpoints: () => read(() => backend.checkpoints()),

    async prune(anchor) {
      if (anchor.kind !== 'prune') throw new TypeError('prune() takes a prune checkpoint');
      let deleted: number | null;
      try {
        deleted = await backend.deleteThrough(anchor);
      } catch (err) {
        throw writeFailed(err);
      }
      if (deleted === null) throw new Error(`the record at seq ${anchor.seq} does not have the anchor's hash`);
      return deleted;
    },

    async ping() {
      const appendFailed = appendFailedSincePing;
      appendFailedSincePing = false;
      try {
        await backend.ping();
      } catch (err) {
        throw unwritable(err);
      }
      if (appendFailed) throw unwritable(new Error('an append failed since the last readiness check and none has committed since'));
    },

    close() {
      // Refuse new appends, write what is queued, then release the database.
      closing ??= commits.close().then(() => backend.close());
      return closing;
    },
  };
}

function queryHolds(q: CompiledAuditQuery, character: string): boolean {
  const strings = [q.decision, q.policy, q.issuer, q.subject, q.credentialId, q.auditMatch, ...q.claims.flat()];
  return strings.some((s) => s !== null && s.includes(character));
}
