/**
 * The SQLite audit store: one file, WAL, `synchronous = FULL`, group commit.
 *
 * Appends are queued and written together in one transaction on the next
 * tick; each caller's promise resolves only after that COMMIT is durable. The
 * chain (seq, prev_hash, hash) is computed inside the transaction from the
 * head read under the write lock, so nothing kept in memory can fork the
 * chain, whether a batch failed or another process wrote meanwhile.
 *
 * better-sqlite3 is synchronous: a write waiting for another connection's
 * lock blocks the event loop for up to `busyTimeoutMs`, which is why the
 * default is short. Failing closed fast beats hanging every request.
 */
import { closeSync, constants as fsConstants, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { AuditUnavailableError } from '../errors.js';
import { compileAuditQuery, hourOf, toCursor, type CompiledAuditQuery } from './query.js';
import { GENESIS_HASH, createChainVerifier, hashRecord, toCanonicalEntry, toClaimIndex } from './record.js';
import { RECORD_COLUMNS, fromStoredRow, toStoredColumns, type RecordColumn, type StoredRow } from './rows.js';
import type { AuditCheckpoint, AuditEntry, AuditPage, AuditQuery, AuditRecord, AuditStore, ChainPoint, ChainProblem, ChainVerification, ChainVerifyOptions } from './types.js';

export interface SqliteAuditStoreOptions {
  /** Called after each committed batch with its commit latency (BEGIN to COMMIT), in seconds. */
  onAppendSeconds?: (seconds: number) => void;
  /** How long a write waits for another connection's lock before failing; default 2000 ms. */
  busyTimeoutMs?: number;
}

/** The schema version this code writes; `schema_version` holds the file's. */
export const SQLITE_SCHEMA_VERSION = 3;

const DEFAULT_BUSY_TIMEOUT_MS = 2000;
/** At most this many queued entries per transaction: one commit blocks the event loop for tens of ms at most. */
const MAX_BATCH = 500;
/** Records read per step of verify(), between which the event loop runs. */
const VERIFY_BATCH = 500;

/**
 * Schema migrations, applied in order inside one transaction at open; entry i
 * brings the file from version i to i + 1.
 *
 * Every AuditRecord field is a column (claims, audience and unverified as JSON
 * text). `audit_claims` indexes the scalar top-level claims for
 * `claim.<name>=<value>` queries; it is derived data, which verify() checks
 * against the records. Every filter index ends in seq, for keyset pagination.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL,
    decision TEXT NOT NULL,
    error TEXT,
    reason TEXT,
    request_id TEXT,
    issuer TEXT,
    subject TEXT,
    audience TEXT,
    jti TEXT,
    token_sha256 TEXT,
    claims TEXT,
    unverified TEXT,
    policy TEXT,
    policy_sha256 TEXT,
    provider TEXT,
    target TEXT,
    credential_id TEXT,
    expires_at TEXT,
    duration_seconds INTEGER,
    client_ip TEXT,
    user_agent TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
  ) STRICT;
  CREATE INDEX audit_events_time ON audit_events (time, seq);
  CREATE INDEX audit_events_decision ON audit_events (decision, seq);
  CREATE INDEX audit_events_policy ON audit_events (policy, seq);
  CREATE INDEX audit_events_issuer ON audit_events (issuer, seq);
  CREATE INDEX audit_events_subject ON audit_events (subject, seq);
  CREATE INDEX audit_events_credential_id ON audit_events (credential_id, seq);
  CREATE TABLE audit_claims (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, name)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX audit_claims_value ON audit_claims (name, value, seq);
  `,
  `
  CREATE TABLE audit_checkpoints (
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('periodic', 'prune')),
    kid TEXT NOT NULL,
    jws TEXT NOT NULL,
    PRIMARY KEY (seq, kind, time)
  ) STRICT;
  `,
  `
  CREATE TABLE audit_hours (
    hour TEXT PRIMARY KEY,
    min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  INSERT INTO audit_hours (hour, min_seq, max_seq) SELECT substr(time, 1, 13), min(seq), max(seq) FROM audit_events GROUP BY 1;
  `,
];

const COLUMNS = RECORD_COLUMNS;
const SELECT_COLUMNS = COLUMNS.join(', ');

/** A row of audit_events as better-sqlite3 returns it. */
/** SQLite gives integers as numbers. */
type EventRow = StoredRow & { seq: number; duration_seconds: number | null };
type EventParams = Record<RecordColumn, string | number | null>;

interface Connection {
  db: Database.Database;
  begin: Database.Statement<[]>;
  commit: Database.Statement<[]>;
  rollback: Database.Statement<[]>;
  head: Database.Statement<[], { seq: number; hash: string }>;
  prunedHead: Database.Statement<[], { seq: number; hash: string }>;
  dropClaimsAfter: Database.Statement<[number]>;
  insertEvent: Database.Statement<[EventParams]>;
  insertClaim: Database.Statement<[number, string, string]>;
  upsertHour: Database.Statement<[{ hour: string; min: number; max: number }]>;
  hourRange: Database.Statement<[string, string], { lo: number | null; hi: number | null }>;
  touch: Database.Statement<[]>;
  verifyEvents: Database.Statement<[number, number, number], EventRow>;
  verifyClaims: Database.Statement<[number, number], { seq: number; name: string; value: string }>;
}

interface Pending {
  entry: AuditEntry;
  resolve: (record: AuditRecord) => void;
  reject: (err: unknown) => void;
}

/**
 * Opens (creating if needed) the audit log at `path`: the parent directory is
 * created with mode 0700, the file with mode 0600, and the schema is created
 * or migrated.
 *
 * @param path file path, or `:memory:` (tests only: nothing is durable).
 * @throws AuditUnavailableError (reason `audit_open_failed`) if the file cannot
 *   be opened, is not an audit log, or has a newer schema than this code.
 *
 * @example
 * const audit = openSqliteAuditStore('./data/audit.db', { onAppendSeconds: (s) => histogram.observe(s) });
 * const record = await audit.append(entry); // durable once resolved
 */
export function openSqliteAuditStore(path: string, options: SqliteAuditStoreOptions = {}): AuditStore {
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new TypeError('busyTimeoutMs must be a non-negative integer');
  const onAppendSeconds = options.onAppendSeconds;

  let conn: Connection | null;
  let identity: { dev: number; ino: number } | null;
  try {
    conn = openConnection(path, busyTimeoutMs, true);
    identity = path === ':memory:' ? null : statSync(path);
  } catch (err) {
    throw new AuditUnavailableError('The audit log cannot be opened.', { reason: 'audit_open_failed', cause: err });
  }
  /** Set after an error that may have left the connection unusable (read-only fallback, I/O): reopen before the next use. */
  let stale = false;
  let closed = false;
  let queue: Pending[] = [];
  let scheduled: NodeJS.Immediate | null = null;

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

  /** Marks the connection for reopening unless the error was mere lock contention. */
  function noteFailure(err: unknown): void {
    // Reopening `:memory:` would silently start an empty log.
    if (path === ':memory:') return;
    const code = sqliteCode(err);
    if (code !== null && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))) return;
    stale = true;
  }

  /**
   * Runs `fn` on the connection. If it fails on a connection opened earlier
   * for a reason other than lock contention, `fn` runs once more on a fresh
   * one: SQLite keeps a connection read-only for good if the file was
   * read-only when it opened, so only a new connection sees it writable
   * again, and the first write after recovery should not be the one to fail.
   * `fn` must leave nothing behind when it throws (writeBatch rolls back).
   */
  function withConnection<T>(fn: (c: Connection) => T): T {
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

  function schedule(): void {
    if (scheduled === null && queue.length > 0) scheduled = setImmediate(flush);
  }

  /** Writes up to MAX_BATCH queued entries in one transaction and settles their promises. */
  function flush(): void {
    scheduled = null;
    const batch = queue.length <= MAX_BATCH ? queue : queue.slice(0, MAX_BATCH);
    queue = queue.length <= MAX_BATCH ? [] : queue.slice(MAX_BATCH);
    schedule();
    if (batch.length === 0) return;

    let results: (AuditRecord | { failed: unknown })[];
    let seconds: number;
    try {
      const started = process.hrtime.bigint();
      results = withConnection((c) => writeBatch(c, batch));
      seconds = Number(process.hrtime.bigint() - started) / 1e9;
    } catch (err) {
      const failure = writeFailed(err);
      for (const p of batch) p.reject(failure);
      return;
    }
    batch.forEach((p, i) => {
      const result = results[i];
      if (result !== undefined && 'hash' in result) p.resolve(result);
      else p.reject(writeFailed(result?.failed));
    });
    if (onAppendSeconds !== undefined) {
      try {
        onAppendSeconds(seconds);
      } catch {
        // A metrics callback must not turn a committed batch into a failure,
        // and this store never logs; the records above are already durable.
      }
    }
  }

  return {
    append(entry) {
      if (closed) return Promise.reject(writeFailed(new Error('the audit store is closed')));
      let canonical: AuditEntry;
      try {
        canonical = toCanonicalEntry(entry);
      } catch (err) {
        return Promise.reject(err);
      }
      return new Promise<AuditRecord>((resolve, reject) => {
        queue.push({ entry: canonical, resolve, reject });
        schedule();
      });
    },

    async query(query: AuditQuery): Promise<AuditPage> {
      const compiled = compileAuditQuery(query);
      let rows: EventRow[];
      try {
        rows = withConnection((c) => {
          let page = compiled;
          let upperSeq: number | null = null;
          if (compiled.since !== null || compiled.until !== null) {
            // A time window becomes a seq range from audit_hours (a few
            // hundred rows a month), on every page: the walk in seq order
            // starts at the window's first hour and stops after its last,
            // instead of reading every record after the window when matches run out.
            const range = c.hourRange.get(compiled.since === null ? '' : hourOf(compiled.since), compiled.until === null ? '\u{10FFFF}' : hourOf(compiled.until));
            if (range?.lo == null || range.hi == null) return [];
            page = { ...compiled, afterSeq: Math.max(compiled.afterSeq, range.lo - 1) };
            upperSeq = range.hi;
          }
          const select = toSqliteSelect(page, upperSeq);
          return c.db.prepare<unknown[], EventRow>(select.sql).all(...select.params);
        });
      } catch (err) {
        throw readFailed(err);
      }
      const more = rows.length > compiled.limit;
      const page = more ? rows.slice(0, compiled.limit) : rows;
      let events: AuditRecord[];
      try {
        events = page.map(fromStoredRow);
      } catch (err) {
        // Only an edited file holds a row that does not parse; verify() names it.
        throw readFailed(err);
      }
      const last = events.at(-1);
      return { events, nextCursor: more && last !== undefined ? toCursor(last.seq) : null };
    },

    async verify(options: ChainVerifyOptions = {}): Promise<ChainVerification> {
      const verifier = createChainVerifier(options);
      let endSeq: number;
      let hours: Map<string, [number, number]>;
      try {
        [endSeq, hours] = withConnection((c) => {
          const end = c.head.get()?.seq ?? 0;
          // Read after the head: hour ranges only ever widen, so they cover every record up to endSeq.
          const rows = c.db.prepare<[], { hour: string; min_seq: number; max_seq: number }>('SELECT hour, min_seq, max_seq FROM audit_hours').all();
          return [end, new Map(rows.map((r) => [r.hour, [r.min_seq, r.max_seq] as [number, number]]))] as const;
        });
        // A row at or before the start (where records were pruned) would be served by queries but never walked.
        const stray =
          options.partial === true
            ? undefined
            : withConnection((c) =>
                c.db.prepare<[number], { seq: number; id: string }>('SELECT seq, id FROM audit_events WHERE seq <= ? ORDER BY seq LIMIT 1').get(options.from?.seq ?? 0),
              );
        if (stray !== undefined) {
          verifier.fail({ seq: stray.seq, id: stray.id }, 'unexpected_record');
          return verifier.result();
        }
      } catch (err) {
        throw readFailed(err);
      }
      let afterSeq = options.from?.seq ?? 0;
      while (afterSeq < endSeq) {
        let rows: EventRow[];
        let claimRows: { seq: number; name: string; value: string }[];
        try {
          [rows, claimRows] = withConnection((c) => {
            const events = c.verifyEvents.all(afterSeq, endSeq, VERIFY_BATCH);
            const lastEvent = events.at(-1);
            return [events, lastEvent === undefined ? [] : c.verifyClaims.all(afterSeq, lastEvent.seq)] as const;
          });
        } catch (err) {
          throw readFailed(err);
        }
        const lastRow = rows.at(-1);
        if (lastRow === undefined) break;
        const indexed = groupClaimRows(claimRows);
        for (const row of rows) {
          let record: AuditRecord;
          try {
            record = fromStoredRow(row);
          } catch {
            verifier.fail({ seq: row.seq, id: typeof row.id === 'string' ? row.id : null }, 'unreadable');
            return verifier.result();
          }
          const indexProblem: ChainProblem | null =
            sameClaimIndex(record, indexed.get(record.seq) ?? []) && hourCovers(hours, record) ? null : 'claim_index_mismatch';
          if (!verifier.next(record, indexProblem)) return verifier.result();
        }
        afterSeq = lastRow.seq;
        // Let appends and requests run between batches of a long walk.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      return verifier.result();
    },

    async head(): Promise<ChainPoint> {
      try {
        return withConnection((c) => currentHead(c));
      } catch (err) {
        throw readFailed(err);
      }
    },

    async pruneBoundary(before: string): Promise<ChainPoint | null> {
      try {
        return withConnection((c) => {
          const firstKept = c.db.prepare<[string], { seq: number }>('SELECT min(seq) AS seq FROM audit_events WHERE time >= ?').get(before)?.seq ?? null;
          const boundary =
            firstKept === null
              ? c.head.get()
              : c.db.prepare<[number], { seq: number; hash: string }>('SELECT seq, hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT 1').get(firstKept);
          return boundary ?? null;
        });
      } catch (err) {
        throw readFailed(err);
      }
    },

    async saveCheckpoint(checkpoint: AuditCheckpoint): Promise<void> {
      try {
        withConnection((c) => insertCheckpoint(c, checkpoint));
      } catch (err) {
        throw writeFailed(err);
      }
    },

    async checkpoints(): Promise<AuditCheckpoint[]> {
      try {
        return withConnection((c) =>
          c.db.prepare<[], AuditCheckpoint>('SELECT seq, hash, time, kind, kid, jws FROM audit_checkpoints ORDER BY seq, time').all(),
        );
      } catch (err) {
        throw readFailed(err);
      }
    },

    async prune(anchor: AuditCheckpoint): Promise<number> {
      if (anchor.kind !== 'prune') throw new TypeError('prune() takes a prune checkpoint');
      try {
        return withConnection((c) =>
          c.db
            .transaction(() => {
              const at = c.db.prepare<[number], { hash: string }>('SELECT hash FROM audit_events WHERE seq = ?').get(anchor.seq);
              if (at?.hash !== anchor.hash) throw new Error(`the record at seq ${anchor.seq} does not have the anchor's hash`);
              insertCheckpoint(c, anchor);
              c.db.prepare('DELETE FROM audit_claims WHERE seq <= ?').run(anchor.seq);
              c.db.prepare('DELETE FROM audit_hours WHERE max_seq <= ?').run(anchor.seq);
              return c.db.prepare('DELETE FROM audit_events WHERE seq <= ?').run(anchor.seq).changes;
            })
            .immediate(),
        );
      } catch (err) {
        if (err instanceof Error && err.message.includes("anchor's hash")) throw err;
        throw writeFailed(err);
      }
    },

    async ping(): Promise<void> {
      try {
        withConnection((c) => {
          // BEGIN IMMEDIATE alone succeeds on a connection SQLite opened
          // read-only; a write inside the transaction proves the file is writable.
          c.begin.run();
          try {
            c.touch.run();
          } finally {
            c.rollback.run();
          }
        });
      } catch (err) {
        throw new AuditUnavailableError('The audit log cannot take writes.', { reason: 'audit_unwritable', cause: err });
      }
    },

    async close(): Promise<void> {
      if (closed) return;
      // Write what is queued now (flush is synchronous), then refuse more.
      while (queue.length > 0) {
        if (scheduled !== null) clearImmediate(scheduled);
        flush();
      }
      if (scheduled !== null) clearImmediate(scheduled);
      scheduled = null;
      closed = true;
      if (conn !== null) {
        const db = conn.db;
        conn = null;
        db.close();
      }
    },
  };
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
    return prepareStatements(db);
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

function migrate(db: Database.Database): void {
  const current = schemaVersion(db);
  if (current === SQLITE_SCHEMA_VERSION) return; // no write at all: a read-only file still opens
  if (current > SQLITE_SCHEMA_VERSION) throw new Error(`the audit log has schema version ${current}; this version of the broker supports up to ${SQLITE_SCHEMA_VERSION}`);
  db.transaction(() => {
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version = schemaVersion(db);
    if (version === 0) {
      const tables = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").get();
      if ((tables?.n ?? 0) > 0) throw new Error('the file holds tables but no audit schema_version: not an audit log');
      db.exec('CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT');
      db.exec('INSERT INTO schema_version (id, version) VALUES (1, 0)');
    }
    for (; version < SQLITE_SCHEMA_VERSION; version += 1) {
      const step = MIGRATIONS[version];
      if (step === undefined) throw new Error(`no migration from schema version ${version}`);
      db.exec(step);
    }
    db.prepare('UPDATE schema_version SET version = ? WHERE id = 1').run(SQLITE_SCHEMA_VERSION);
  }).immediate();
}

function schemaVersion(db: Database.Database): number {
  const table = db.prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'").get();
  if (table === undefined) return 0;
  return db.prepare<[], { version: number }>('SELECT version FROM schema_version WHERE id = 1').get()?.version ?? 0;
}

function prepareStatements(db: Database.Database): Connection {
  return {
    db,
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    head: db.prepare('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1'),
    prunedHead: db.prepare("SELECT seq, hash FROM audit_checkpoints WHERE kind = 'prune' ORDER BY seq DESC LIMIT 1"),
    dropClaimsAfter: db.prepare('DELETE FROM audit_claims WHERE seq > ?'),
    insertEvent: db.prepare(`INSERT INTO audit_events (${SELECT_COLUMNS}) VALUES (${COLUMNS.map((c) => `@${c}`).join(', ')})`),
    insertClaim: db.prepare('INSERT INTO audit_claims (seq, name, value) VALUES (?, ?, ?)'),
    upsertHour: db.prepare(
      'INSERT INTO audit_hours (hour, min_seq, max_seq) VALUES (@hour, @min, @max) ON CONFLICT (hour) DO UPDATE SET min_seq = min(min_seq, @min), max_seq = max(max_seq, @max)',
    ),
    hourRange: db.prepare('SELECT min(min_seq) AS lo, max(max_seq) AS hi FROM audit_hours WHERE hour >= ? AND hour <= ?'),
    touch: db.prepare('UPDATE schema_version SET version = version WHERE id = 1'),
    verifyEvents: db.prepare(`SELECT ${SELECT_COLUMNS} FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`),
    verifyClaims: db.prepare('SELECT seq, name, value FROM audit_claims WHERE seq > ? AND seq <= ?'),
  };
}

/**
 * One transaction for the whole batch. Returns, per entry, its record or why
 * that entry alone failed (a duplicate id); throws if the batch failed, after
 * rolling back, so nothing is half-written.
 */
function writeBatch(c: Connection, batch: readonly Pending[]): (AuditRecord | { failed: unknown })[] {
  c.begin.run();
  try {
    let head = currentHead(c);
    // Claim rows above the head can only be left over from deleted records
    // (tampering); clear them so they cannot collide with the new ones.
    c.dropClaimsAfter.run(head.seq);
    const results: (AuditRecord | { failed: unknown })[] = [];
    const hours = new Map<string, [min: number, max: number]>();
    for (const { entry } of batch) {
      const seq = head.seq + 1;
      const record: AuditRecord = { ...entry, seq, prev_hash: head.hash, hash: hashRecord(head.hash, seq, entry) };
      try {
        c.insertEvent.run(toStoredColumns(record));
      } catch (err) {
        // A failed statement is undone by SQLite on its own; only a constraint
        // (a reused id: a caller bug) is this entry's alone.
        if (!sqliteCode(err)?.startsWith('SQLITE_CONSTRAINT')) throw err;
        results.push({ failed: err });
        continue;
      }
      for (const [name, value] of toClaimIndex(record.claims)) c.insertClaim.run(seq, name, value);
      const hour = hours.get(hourOf(record.time));
      if (hour === undefined) hours.set(hourOf(record.time), [seq, seq]);
      else hour[1] = seq;
      results.push(record);
      head = { seq, hash: record.hash };
    }
    for (const [hour, [min, max]] of hours) c.upsertHour.run({ hour, min, max });
    c.commit.run();
    return results;
  } catch (err) {
    if (c.db.inTransaction) {
      try {
        c.rollback.run();
      } catch {
        // SQLite rolls back by itself when a transaction cannot continue
        // (I/O error, full disk); the original error is the one to report.
      }
    }
    throw err;
  }
}

/** The last record, or after everything was pruned the prune anchor, or the genesis. */
function currentHead(c: Connection): ChainPoint {
  return c.head.get() ?? c.prunedHead.get() ?? { seq: 0, hash: GENESIS_HASH };
}



/**
 * The keyset query for one page, in seq order; fetches limit + 1 rows to know
 * whether another page follows. Exported for the query-plan tests only.
 *
 * Every plan walks an index in seq order and stops at the limit, so a page
 * costs about the same wherever it is in a long walk: with a claim filter the
 * claim index `(name, value, seq)` drives (further claims are point lookups);
 * otherwise the rowid or a `(column, seq)` index does. Time bounds are
 * residual filters (`+time` keeps the planner off the time index, which is
 * not in seq order); `upperSeq` and `q.afterSeq`, from audit_hours, bound
 * the walk to the window's seq range.
 *
 * @internal
 */
export function toSqliteSelect(q: CompiledAuditQuery, upperSeq: number | null = null): { sql: string; params: (string | number)[] } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const [first, ...more] = q.claims;
  let from: string;
  let orderBy: string;
  if (first === undefined) {
    from = 'audit_events e';
    orderBy = 'e.seq';
    where.push('e.seq > ?');
    params.push(q.afterSeq);
    if (upperSeq !== null) {
      where.push('e.seq <= ?');
      params.push(upperSeq);
    }
  } else {
    from = 'audit_claims c JOIN audit_events e ON e.seq = c.seq';
    // Ordering by c.seq, not e.seq, is what lets SQLite see the claim index is already in order.
    orderBy = 'c.seq';
    where.push('c.name = ?', 'c.value = ?', 'c.seq > ?');
    params.push(first[0], first[1], q.afterSeq);
    if (upperSeq !== null) {
      where.push('c.seq <= ?');
      params.push(upperSeq);
    }
  }
  for (const [name, value] of more) {
    where.push('EXISTS (SELECT 1 FROM audit_claims x WHERE x.seq = e.seq AND x.name = ? AND x.value = ?)');
    params.push(name, value);
  }
  if (q.since !== null) {
    where.push('+e.time >= ?');
    params.push(q.since);
  }
  if (q.until !== null) {
    where.push('+e.time < ?');
    params.push(q.until);
  }
  const eq = (column: string, value: string | null) => {
    if (value === null) return;
    where.push(`e.${column} = ?`);
    params.push(value);
  };
  eq('decision', q.decision);
  eq('policy', q.policy);
  eq('issuer', q.issuer);
  eq('subject', q.subject);
  eq('credential_id', q.credentialId);
  params.push(q.limit + 1);
  const columns = COLUMNS.map((c) => `e.${c}`).join(', ');
  return { sql: `SELECT ${columns} FROM ${from} WHERE ${where.join(' AND ')} ORDER BY ${orderBy} LIMIT ?`, params };
}

/** Time-window queries only find a record if its hour's seq range covers it. */
function hourCovers(hours: ReadonlyMap<string, [number, number]>, record: AuditRecord): boolean {
  const range = hours.get(hourOf(record.time));
  return range !== undefined && range[0] <= record.seq && record.seq <= range[1];
}

function groupClaimRows(rows: readonly { seq: number; name: string; value: string }[]): Map<number, [string, string][]> {
  const bySeq = new Map<number, [string, string][]>();
  for (const { seq, name, value } of rows) {
    let list = bySeq.get(seq);
    if (list === undefined) bySeq.set(seq, (list = []));
    list.push([name, value]);
  }
  return bySeq;
}

function sameClaimIndex(record: AuditRecord, stored: readonly [string, string][]): boolean {
  const expected = toClaimIndex(record.claims);
  if (expected.length !== stored.length) return false;
  // Compare as sets; SQLite's and JavaScript's string orders differ.
  const key = ([name, value]: readonly [string, string]) => JSON.stringify([name, value]);
  const want = new Set(expected.map(key));
  return stored.every((pair) => want.has(key(pair)));
}

function insertCheckpoint(c: Connection, checkpoint: AuditCheckpoint): void {
  c.db
    .prepare('INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, kind, kid, jws) VALUES (@seq, @hash, @time, @kind, @kid, @jws)')
    .run({ seq: checkpoint.seq, hash: checkpoint.hash, time: checkpoint.time, kind: checkpoint.kind, kid: checkpoint.kid, jws: checkpoint.jws });
}

function sqliteCode(err: unknown): string | null {
  return err instanceof Database.SqliteError ? err.code : null;
}

function writeFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log could not record this decision.', { reason: 'audit_write_failed', cause });
}

function readFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot be read.', { reason: 'audit_read_failed', cause });
}
