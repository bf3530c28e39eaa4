/**
 * The SQLite audit backend: one file, WAL, `synchronous = FULL`. The core
 * (`../core/store.ts`) queues appends and writes each batch through
 * appendBatch, one transaction under SQLite's write lock (BEGIN IMMEDIATE).
 *
 * better-sqlite3 is synchronous, so this backend runs in the store's worker
 * thread (`worker.ts`), never on the broker's event loop: a commit's fsync or
 * a write waiting for another connection's lock (up to `busyTimeoutMs`)
 * blocks only the worker.
 */
import { closeSync, constants as fsConstants, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { extendChain, type AuditBackend, type HourRange, type StoredClaim } from '../core/backend.js';
import { toKeysetSelect, toStatsSelects, type SelectDialect } from '../core/select.js';
import { verifyWalk, WORKER_VERIFY_BATCH } from '../core/verify-walk.js';
import { GENESIS_HASH } from '../record.js';
import { RECORD_COLUMNS, toStoredColumns, type StoredRow } from '../rows.js';
import type { CompiledAuditQuery } from '../query.js';
import type { AuditCheckpoint, AuditStatsRows, ChainPoint } from '../types.js';
import { migrate } from './schema.js';

const SELECT_COLUMNS = RECORD_COLUMNS.join(', ');
const LAST_RECORD_SQL = 'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1';
const INSERT_CHECKPOINT_SQL = 'INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, kind, kid, jws) VALUES (@seq, @hash, @time, @kind, @kid, @jws)';

/** Result codes (and their extended forms) of SQLite refusing a value, not failing: constraints and triggers, a value too big, a wrong type. */
const VALUE_REFUSALS = ['SQLITE_CONSTRAINT', 'SQLITE_TOOBIG', 'SQLITE_MISMATCH'];

/**
 * SQLite refusing a value it was given, not failing: see
 * AuditBackend.isValueRefusal. By code, not class: on the broker's thread the
 * error is a copy that came back from the worker (`worker-protocol.ts`).
 */
export function isValueRefusal(err: unknown): boolean {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && VALUE_REFUSALS.some((refusal) => code.startsWith(refusal));
}

/** SQLite gives integers as numbers. */
type EventRow = StoredRow & { seq: number; duration_seconds: number | null };

/** A connection and its prepared statements, each prepared once on first use. */
interface Connection {
  db: Database.Database;
  sql<R = unknown>(text: string): Database.Statement<unknown[], R>;
}

/**
 * The backend's database methods, as the worker serves them, the
 * verification walk included; the store's side (`worker-client.ts`) adds the
 * rest of AuditBackend.
 */
export type SqliteBackend = Omit<AuditBackend, 'forbiddenCharacter' | 'batchDeadlineMs' | 'isValueRefusal' | 'verifyChain'> & Required<Pick<AuditBackend, 'verifyChain'>>;

/** Where the backend finds its file, and which file it must be. */
export interface SqliteBackendOptions {
  path: string;
  busyTimeoutMs: number;
  /** The file's device and inode when the store opened it (see assertSameFile); null for `:memory:`. */
  identity: FileIdentity | null;
}

export interface FileIdentity {
  dev: number;
  ino: number;
}

/**
 * The backend over the file the store created and migrated at open
 * (openSqliteFile). Connects on first use and never creates the file: a log
 * deleted under a running broker must not restart empty.
 */
export function openSqliteBackend(options: SqliteBackendOptions): SqliteBackend {
  const { path, busyTimeoutMs, identity } = options;
  let conn: Connection | null = null;
  /** Set after an error that may have left the connection unusable (read-only fallback, I/O): reopen before the next use. */
  let stale = false;
  let closed = false;

  /** The live connection, reopened if the last one failed; throws if closed or the file cannot be opened. */
  function connection(): Connection {
    if (closed) throw new Error('the audit store is closed');
    if (conn !== null && !stale) {
      assertSameFile();
      return conn;
    }
    if (conn !== null) {
      try {
        conn.db.close();
      } catch {
        // Already broken; the new connection below is what matters.
      }
      conn = null;
    }
    // Only the first open may create the file: a log deleted under a running broker must not restart empty.
    conn = openConnection(path, busyTimeoutMs, false);
    stale = false;
    assertSameFile();
    return conn;
  }

  /**
   * SQLite keeps writing to a file that was deleted or replaced under it
   * (the open descriptor outlives the name), so commits would "succeed" into
   * a log nobody will ever read: check the path still names the file opened.
   */
  function assertSameFile(): void {
    if (identity === null) return;
    const now = statSync(path);
    if (now.dev !== identity.dev || now.ino !== identity.ino) throw new Error('the audit log file was replaced since the broker opened it');
  }

  /** Marks the connection for reopening unless the error was mere lock contention or a value refused. */
  function noteFailure(err: unknown): void {
    // Reopening `:memory:` would silently start an empty log.
    if (path === ':memory:') return;
    const code = err instanceof Database.SqliteError ? err.code : '';
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED') || isValueRefusal(err)) return;
    stale = true;
  }

  /**
   * Runs `fn` on the connection. If it fails on a connection opened earlier
   * for a reason other than lock contention, `fn` runs once more on a fresh
   * one: SQLite keeps a connection read-only for good if the file was
   * read-only when it opened, so only a new connection sees it writable
   * again, and the first write after recovery should not be the one to fail.
   * `fn` must leave nothing behind when it throws (transactions roll back).
   */
  async function withConnection<T>(fn: (c: Connection) => T): Promise<T> {
    for (let attempt = 0; ; attempt += 1) {
      const fresh = conn === null || stale;
      const c = connection();
      try {
        return fn(c);
      } catch (err) {
        noteFailure(err);
        if (fresh || !stale || attempt > 0) throw err;
      }
    }
  }

  const backend: SqliteBackend = {
    appendBatch: (entries) =>
      withConnection((c) => {
        c.sql('BEGIN IMMEDIATE').run();
        try {
          const head = currentHead(c);
          // Claim rows above the head can only be left over from deleted records
          // (tampering); clear them so they cannot collide with the new ones.
          c.sql('DELETE FROM audit_claims WHERE seq > ?').run(head.seq);
          const taken = new Set(entries.filter((e) => c.sql('SELECT id FROM audit_events WHERE id = ?').get(e.id) !== undefined).map((e) => e.id));
          const batch = extendChain(head, entries, taken);
          const insert = c.sql(`INSERT INTO audit_events (${SELECT_COLUMNS}) VALUES (${RECORD_COLUMNS.map((column) => `@${column}`).join(', ')})`);
          for (const record of batch.records) insert.run(toStoredColumns(record));
          for (const { seq, name, value } of batch.claims) c.sql('INSERT INTO audit_claims (seq, name, value) VALUES (?, ?, ?)').run(seq, name, value);
          for (const hour of batch.hours) {
            c.sql('INSERT INTO audit_hours (hour, min_seq, max_seq) VALUES (@hour, @min, @max) ON CONFLICT (hour) DO UPDATE SET min_seq = min(min_seq, @min), max_seq = max(max_seq, @max)').run(hour);
          }
          c.sql('COMMIT').run();
          return batch.results.map((r) => r ?? new Database.SqliteError('UNIQUE constraint failed: audit_events.id', 'SQLITE_CONSTRAINT_UNIQUE'));
        } catch (err) {
          if (c.db.inTransaction) {
            try {
              c.sql('ROLLBACK').run();
            } catch {
              // SQLite rolls back by itself when a transaction cannot continue
              // (I/O error, full disk); the original error is the one to report.
            }
          }
          throw err;
        }
      }),

    head: () => withConnection(currentHead),

    hourSpan: (fromHour, toHour) =>
      withConnection((c) => {
        const span = c.sql<{ lo: number | null; hi: number | null }>('SELECT min(min_seq) AS lo, max(max_seq) AS hi FROM audit_hours WHERE hour >= ? AND hour <= ?').get(fromHour, toHour);
        return span?.lo == null || span.hi == null ? null : { lo: span.lo, hi: span.hi };
      }),

    hourRanges: () =>
      withConnection((c) => c.sql<HourRange>('SELECT hour, min_seq AS min, max_seq AS max FROM audit_hours').all()),

    readPage: (query, upperSeq) =>
      withConnection((c) => {
        const select = toSqliteSelect(query, upperSeq);
        return c.sql<EventRow>(select.text).all(...select.values);
      }),

    readStats: (query, upperSeq, bucketChars, top) =>
      withConnection((c) => {
        const selects = toStatsSelects(query, upperSeq, bucketChars, top, SQLITE_DIALECT);
        return {
          series: c.sql<AuditStatsRows['series'][number]>(selects.series.text).all(...selects.series.values),
          reasons: c.sql<AuditStatsRows['reasons'][number]>(selects.reasons.text).all(...selects.reasons.values),
          subjects: c.sql<AuditStatsRows['subjects'][number]>(selects.subjects.text).all(...selects.subjects.values),
        };
      }),

    readRange: (afterSeq, throughSeq, limit) =>
      withConnection((c) => {
        const events = c.sql<EventRow>(`SELECT ${SELECT_COLUMNS} FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`).all(afterSeq, throughSeq, limit);
        const last = events.at(-1);
        const bySeq = new Map<number, StoredClaim[]>();
        // This schema keeps no time with claim rows.
        for (const claim of last === undefined ? [] : c.sql<StoredClaim & { seq: number }>('SELECT seq, name, value, NULL AS time FROM audit_claims WHERE seq > ? AND seq <= ?').all(afterSeq, last.seq)) {
          let list = bySeq.get(claim.seq);
          if (list === undefined) bySeq.set(claim.seq, (list = []));
          list.push(claim);
        }
        return events.map((row) => ({ row, claims: bySeq.get(row.seq) ?? [] }));
      }),

    // In the worker, beside the connection: each batch of rows is read and
    // checked here, and between batches the worker serves the calls that
    // arrived meanwhile, so an append waits for one batch, not the whole walk.
    verifyChain: (options) => verifyWalk(backend, options, WORKER_VERIFY_BATCH),

    pruneBoundary: (before) =>
      withConnection((c) => {
        const firstKept = c.sql<{ seq: number | null }>('SELECT min(seq) AS seq FROM audit_events WHERE time >= ?').get(before)?.seq ?? null;
        const boundary =
          firstKept === null
            ? c.sql<ChainPoint>(LAST_RECORD_SQL).get()
            : c.sql<ChainPoint>('SELECT seq, hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT 1').get(firstKept);
        return boundary ?? null;
      }),

    deleteThrough: (anchor) =>
      withConnection((c) =>
        c.db
          .transaction((): number | null => {
            const at = c.sql<{ hash: string }>('SELECT hash FROM audit_events WHERE seq = ?').get(anchor.seq);
            if (at?.hash !== anchor.hash) return null;
            c.sql(INSERT_CHECKPOINT_SQL).run(anchor);
            c.sql('DELETE FROM audit_claims WHERE seq <= ?').run(anchor.seq);
            c.sql('DELETE FROM audit_hours WHERE max_seq <= ?').run(anchor.seq);
            return c.sql('DELETE FROM audit_events WHERE seq <= ?').run(anchor.seq).changes;
          })
          .immediate(),
      ),

    saveCheckpoint: (checkpoint) =>
      withConnection((c) => {
        c.sql(INSERT_CHECKPOINT_SQL).run(checkpoint);
      }),

    checkpoints: () => withConnection((c) => c.sql<AuditCheckpoint>('SELECT seq, hash, time, kind, kid, jws FROM audit_checkpoints ORDER BY seq, time').all()),

    ping: () =>
      withConnection((c) => {
        // BEGIN IMMEDIATE alone succeeds on a connection SQLite opened
        // read-only; a write inside the transaction proves the file is writable.
        c.sql('BEGIN IMMEDIATE').run();
        try {
          c.sql('UPDATE schema_version SET version = version WHERE id = 1').run();
        } finally {
          c.sql('ROLLBACK').run();
        }
      }),

    async close() {
      closed = true;
      if (conn !== null) {
        const db = conn.db;
        conn = null;
        db.close();
      }
    },
  };
  return backend;
}

/**
 * Creates the file if needed (see createFile), migrates its schema and closes
 * it again, on the calling thread, so that a file that cannot be an audit log
 * fails the store's open rather than its first append. Returns the file's
 * identity, which every later connection must find at `path`.
 */
export function openSqliteFile(path: string, busyTimeoutMs: number): FileIdentity | null {
  if (path === ':memory:') return null;
  openConnection(path, busyTimeoutMs, true).db.close();
  const { dev, ino } = statSync(path);
  return { dev, ino };
}

/** Opens one connection, sets it up and migrates the schema. */
function openConnection(path: string, busyTimeoutMs: number, create: boolean): Connection {
  if (path !== ':memory:' && create) createFile(path);
  const db = new Database(path, { timeout: busyTimeoutMs, fileMustExist: !create && path !== ':memory:' });
  try {
    const mode: unknown = db.pragma('journal_mode = WAL', { simple: true });
    if (path !== ':memory:' && mode !== 'wal') throw new Error(`could not switch the audit log to WAL (journal_mode is ${String(mode)})`);
    db.pragma('synchronous = FULL');
    // The schema is ours: never run functions a tampered file's schema names.
    db.pragma('trusted_schema = OFF');
    migrate(db);
    return withStatements(db);
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Creates the parent directory (0700) and the file (0600) if missing, so SQLite does not create them with the umask's default. */
function createFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(path, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, 0o600));
  } catch (err) {
    // An existing file is the normal case; SQLite reports any other problem when it opens it.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

function withStatements(db: Database.Database): Connection {
  const prepared = new Map<string, Database.Statement<unknown[], unknown>>();
  return {
    db,
    sql<R>(text: string) {
      let statement = prepared.get(text);
      if (statement === undefined) prepared.set(text, (statement = db.prepare(text)));
      return statement as Database.Statement<unknown[], R>;
    },
  };
}

/** The last record, or after everything was pruned the prune anchor, or the genesis. */
function currentHead(c: Connection): ChainPoint {
  return c.sql<ChainPoint>(LAST_RECORD_SQL).get() ?? c.sql<ChainPoint>("SELECT seq, hash FROM audit_checkpoints WHERE kind = 'prune' ORDER BY seq DESC LIMIT 1").get() ?? { seq: 0, hash: GENESIS_HASH };
}

/** `+e.time` keeps the planner off the time index, which is not in seq order. SQLite indexes text of any length, so text is compared as it is. */
const SQLITE_DIALECT: SelectDialect = {
  placeholder: () => '?',
  time: () => '+e.time',
  textEquals: (column, placeholder) => `${column} = ${placeholder}`,
  arrayHolds: (column, placeholder) => `${column} IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(${column}) m WHERE m.value = ${placeholder})`,
};

/**
 * The page query (see toKeysetSelect) in SQLite's words; exported for the
 * query-plan tests only.
 * @internal
 */
export function toSqliteSelect(q: CompiledAuditQuery, upperSeq: number | null = null): { text: string; values: (string | number)[] } {
  return toKeysetSelect(q, upperSeq, SQLITE_DIALECT);
}
