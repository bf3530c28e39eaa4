/**
 * The PostgreSQL audit store: the same hash chain, queries and verification
 * as the SQLite store, for several broker replicas sharing one database.
 *
 * Concurrency: every append batch is one transaction that first takes a
 * transaction-scoped advisory lock (`pg_advisory_xact_lock`, one constant key
 * per database), then reads the head (the last record, or after everything
 * was pruned the latest prune checkpoint), computes seq, prev_hash and hash
 * for the batch and inserts it. The lock is held until COMMIT or ROLLBACK, so
 * writers from any number of processes take turns and each reads the head
 * its predecessor committed: the chain cannot fork, whatever any process
 * kept in memory, and the primary key on seq would refuse a fork anyway.
 * Within a process, appends are queued and written together (group commit):
 * one batch of at most 500 records in flight at a time, each caller's promise
 * resolving only after COMMIT. The lock is released by the server if the
 * session dies (and `idle_in_transaction_session_timeout` ends a session
 * whose client vanished mid-transaction), so a crashed replica cannot block
 * the others for long.
 *
 * Fail closed: connecting, every statement and every lock wait are bounded
 * (`connectionTimeoutMillis`, `statement_timeout`, `lock_timeout`, a client-side
 * `query_timeout`, plus a deadline on the whole batch), so an unreachable or
 * locked database makes append reject with AuditUnavailableError instead of
 * hanging; a client that failed is discarded, and the pool reconnects once
 * the database is back. The store never logs.
 */
import pg from 'pg';
import { AuditUnavailableError } from '../errors.js';
import { compileAuditQuery, hourOf, toCursor, type CompiledAuditQuery } from './query.js';
import { AUDIT_ENTRY_FIELDS, GENESIS_HASH, createChainVerifier, hashRecord, toCanonicalEntry, toClaimIndex } from './record.js';
import { RECORD_COLUMNS, fromStoredRow, toStoredColumns, type StoredRow } from './rows.js';
import type { AuditCheckpoint, AuditEntry, AuditPage, AuditQuery, AuditRecord, AuditStore, ChainPoint, ChainProblem, ChainVerification, ChainVerifyOptions } from './types.js';

export interface PostgresAuditStoreOptions {
  /** Called after each committed batch with its commit latency (BEGIN to COMMIT), in seconds. */
  onAppendSeconds?: (seconds: number) => void;
  /** How long getting a connection may take (connecting, or waiting for a free one); default 5000 ms. */
  connectTimeoutMs?: number;
  /**
   * Server-side `statement_timeout` and `lock_timeout` of every statement, and
   * (plus one second) the client-side wait for any reply; default 5000 ms. An
   * append rejects within about connectTimeoutMs + statementTimeoutMs.
   */
  statementTimeoutMs?: number;
  /** Bound on migrations at open and on prune(), which may touch many rows; default 600000 ms. */
  maintenanceTimeoutMs?: number;
  /** Connections in the pool; default 10. */
  maxConnections?: number;
}

/** The schema version this code writes; `audit_schema_migrations` lists the versions applied. */
export const POSTGRES_SCHEMA_VERSION = 1;

/**
 * Advisory lock keys (the two-int form, so they cannot collide with a
 * single-bigint lock of another application): class, then one key per use.
 * Locks are per database, so stores in different schemas of one database
 * also take turns; that is slower, never wrong.
 * @internal exported for tests
 */
export const ADVISORY_LOCK = { class: 0x6f696462 /* 'oidb' */, append: 1, migrate: 2 } as const;

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_STATEMENT_TIMEOUT_MS = 5000;
const DEFAULT_MAINTENANCE_TIMEOUT_MS = 600_000;
const DEFAULT_MAX_CONNECTIONS = 10;
/** At most this many queued entries per transaction. */
const MAX_BATCH = 500;
/** Records read per step of verify(). */
const VERIFY_BATCH = 500;

/**
 * Schema migrations, applied in order at open under an advisory lock; entry i
 * brings the schema from version i to i + 1. Tables are created in the
 * connection's current schema (the first of `search_path`).
 *
 * Every AuditRecord field is a column. `claims`, `audience` and `unverified`
 * are JSON kept as `text`, not `jsonb`: jsonb reorders keys and normalises
 * numbers, and a record must read back exactly as it was hashed. Times are
 * `toISOString()` text compared in the "C" collation, which is their
 * chronological order whatever the database's default collation.
 *
 * Derived data, all of which verify() checks against the records:
 * - `audit_claims` indexes the scalar top-level claims for
 *   `claim.<name>=<value>` queries, with the record's time so that a time
 *   window is checked from the index alone;
 * - `audit_hours` holds, for each hour (the first 13 characters of `time`),
 *   the lowest and highest seq of a record in that hour, so a time window
 *   maps to a seq range without reading the window's records; records are
 *   appended nearly in time order, so that range is about the window.
 *
 * Every filter index ends in seq, for keyset pagination in seq order.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE audit_events (
    seq bigint PRIMARY KEY,
    id text NOT NULL UNIQUE,
    time text COLLATE "C" NOT NULL,
    decision text COLLATE "C" NOT NULL,
    error text,
    reason text,
    request_id text,
    issuer text COLLATE "C",
    subject text COLLATE "C",
    audience text,
    jti text,
    token_sha256 text,
    claims text,
    unverified text,
    policy text COLLATE "C",
    policy_sha256 text,
    provider text,
    target text,
    credential_id text COLLATE "C",
    expires_at text,
    duration_seconds bigint,
    client_ip text,
    user_agent text,
    prev_hash text NOT NULL,
    hash text NOT NULL
  );
  CREATE INDEX audit_events_time ON audit_events (time, seq);
  CREATE INDEX audit_events_decision ON audit_events (decision, seq);
  CREATE INDEX audit_events_policy ON audit_events (policy, seq);
  CREATE INDEX audit_events_issuer ON audit_events (issuer, seq);
  CREATE INDEX audit_events_subject ON audit_events (subject, seq);
  CREATE INDEX audit_events_credential_id ON audit_events (credential_id, seq);
  CREATE TABLE audit_claims (
    seq bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    time text COLLATE "C" NOT NULL,
    PRIMARY KEY (seq, name)
  );
  CREATE INDEX audit_claims_value ON audit_claims (name, value, seq) INCLUDE (time);
  CREATE TABLE audit_hours (
    hour text COLLATE "C" PRIMARY KEY,
    min_seq bigint NOT NULL,
    max_seq bigint NOT NULL
  );
  CREATE TABLE audit_checkpoints (
    seq bigint NOT NULL,
    hash text NOT NULL,
    time text COLLATE "C" NOT NULL,
    kind text NOT NULL CHECK (kind IN ('periodic', 'prune')),
    kid text NOT NULL,
    jws text NOT NULL,
    PRIMARY KEY (seq, kind, time)
  );
  `,
];

const COLUMNS = RECORD_COLUMNS;
const SELECT_COLUMNS = COLUMNS.join(', ');
/** The column types for the unnest() of an append. */
const COLUMN_TYPES: Record<(typeof COLUMNS)[number], 'text' | 'bigint'> = Object.fromEntries(
  COLUMNS.map((c) => [c, c === 'seq' || c === 'duration_seconds' ? 'bigint' : 'text']),
) as Record<(typeof COLUMNS)[number], 'text' | 'bigint'>;

const HEAD_SQL = `
  SELECT seq, hash FROM (
    (SELECT seq, hash, 1 AS source FROM audit_events ORDER BY seq DESC LIMIT 1)
    UNION ALL
    (SELECT seq, hash, 2 AS source FROM audit_checkpoints WHERE kind = 'prune' ORDER BY seq DESC LIMIT 1)
  ) h ORDER BY source LIMIT 1`;
const INSERT_EVENTS_SQL = `INSERT INTO audit_events (${SELECT_COLUMNS}) SELECT * FROM unnest(${COLUMNS.map((c, i) => `$${i + 1}::${COLUMN_TYPES[c]}[]`).join(', ')})`;
const INSERT_CLAIMS_SQL = 'INSERT INTO audit_claims (seq, name, value, time) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])';
const UPSERT_HOURS_SQL = `
  INSERT INTO audit_hours AS h (hour, min_seq, max_seq) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
  ON CONFLICT (hour) DO UPDATE SET min_seq = least(h.min_seq, excluded.min_seq), max_seq = greatest(h.max_seq, excluded.max_seq)`;
const INSERT_CHECKPOINT_SQL = 'INSERT INTO audit_checkpoints (seq, hash, time, kind, kid, jws) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING';

/** A row of audit_events as pg returns it (bigint columns arrive as strings). */
type EventRow = StoredRow;

interface Pending {
  entry: AuditEntry;
  /** performance.now() when queued: an entry waits at most one batch deadline. */
  queuedAt: number;
  resolve: (record: AuditRecord) => void;
  reject: (err: unknown) => void;
}

/** The hour of a `toISOString()` time: `2026-11-25T19`. */
/**
 * Opens the audit log in the PostgreSQL database `url` names, creating or
 * migrating its tables (in the connection's current schema; put
 * `options=-c search_path=<schema>` in the URL for another schema).
 *
 * @throws AuditUnavailableError (reason `audit_open_failed`) if the database
 *   cannot be reached, holds audit tables this code did not create, or has a
 *   newer schema than this code.
 *
 * @example
 * const audit = await openPostgresAuditStore('postgres://broker@db:5432/broker', { onAppendSeconds: (s) => histogram.observe(s) });
 * const record = await audit.append(entry); // committed once resolved
 */
export async function openPostgresAuditStore(url: string, options: PostgresAuditStoreOptions = {}): Promise<AuditStore> {
  const connectTimeoutMs = positiveInteger(options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
  const statementTimeoutMs = positiveInteger(options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS, 'statementTimeoutMs');
  const maintenanceTimeoutMs = positiveInteger(options.maintenanceTimeoutMs ?? DEFAULT_MAINTENANCE_TIMEOUT_MS, 'maintenanceTimeoutMs');
  const maxConnections = positiveInteger(options.maxConnections ?? DEFAULT_MAX_CONNECTIONS, 'maxConnections');
  const onAppendSeconds = options.onAppendSeconds;
  /** The client-side bound on waiting for a reply: the server's own timeout fires first if the server is there at all. */
  const queryTimeoutMs = statementTimeoutMs + 1000;
  /** The bound on one append batch, from asking for a connection to COMMIT. */
  const batchDeadlineMs = connectTimeoutMs + statementTimeoutMs + 1000;

  let pool: pg.Pool;
  try {
    pool = new pg.Pool({
      connectionString: url,
      max: maxConnections,
      connectionTimeoutMillis: connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: statementTimeoutMs,
      lock_timeout: statementTimeoutMs,
      // A session left in a transaction by a client that vanished would hold
      // the append lock: the server ends it.
      idle_in_transaction_session_timeout: statementTimeoutMs * 2,
      query_timeout: queryTimeoutMs,
      keepAlive: true,
      application_name: 'oidc-broker-audit',
    });
  } catch (err) {
    // A URL pg cannot parse.
    throw new AuditUnavailableError('The audit log cannot be opened.', { reason: 'audit_open_failed', cause: sanitize(err) });
  }
  // An idle client whose connection breaks emits 'error' on the pool, and a
  // checked-out one on itself; unhandled, either would crash the process. The
  // pool already drops an idle client that failed, and a checked-out one is
  // released with its error (so dropped) by whoever holds it.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));

  try {
    await migrate(pool, maintenanceTimeoutMs);
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new AuditUnavailableError('The audit log cannot be opened.', { reason: 'audit_open_failed', cause: sanitize(err) });
  }

  /** Set when close() begins: appends are refused from then on. */
  let closing = false;
  /** Set once close() has written the queue: everything is refused. */
  let closed = false;
  let queue: Pending[] = [];
  let scheduled = false;
  let inFlight: Promise<void> | null = null;

  function schedule(): void {
    if (scheduled || inFlight !== null || queue.length === 0) return;
    scheduled = true;
    // On the next turn of the event loop, so that appends made together go in one batch.
    setImmediate(() => {
      scheduled = false;
      startBatch();
    });
  }

  function startBatch(): void {
    if (inFlight !== null || queue.length === 0) return;
    // Behind a slow database the queue grows; nobody waits longer than a batch may take.
    const expired = performance.now() - batchDeadlineMs;
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

  /** Writes one batch in one transaction and settles its promises; never rejects. */
  async function writeBatch(batch: readonly Pending[]): Promise<void> {
    let results: (AuditRecord | { failed: unknown })[];
    let seconds: number;
    try {
      ({ results, seconds } = await withClient(batchDeadlineMs, async (client) => {
        const started = process.hrtime.bigint();
        const written = await inTransaction(client, () => insertBatch(client, batch));
        return { results: written, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
      }));
    } catch (err) {
      // The database failed the whole batch: what waits behind it would fail the same way, so it fails now.
      const failure = writeFailed(err);
      const waiting = queue;
      queue = [];
      for (const p of [...batch, ...waiting]) p.reject(failure);
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
        // A metrics callback must not turn a committed batch into a failure.
      }
    }
  }

  /**
   * Runs `fn` on a pooled client, and discards the client if anything failed
   * (it may be mid-transaction, or its connection broken) or `deadlineMs`
   * passed, at which point its connection is cut so that `fn` fails at once.
   */
  async function withClient<T>(deadlineMs: number, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (closed) throw new Error('the audit store is closed');
    let timedOut = false;
    let client: pg.PoolClient | null = null;
    const timer = setTimeout(() => {
      timedOut = true;
      // end() on a client with a query in flight destroys the socket, which fails that query.
      void client?.end().catch(() => undefined);
    }, deadlineMs);
    try {
      client = await pool.connect();
    } catch (err) {
      clearTimeout(timer);
      throw err;
    }
    try {
      if (timedOut) throw new Error('timed out waiting for a database connection');
      const result = await fn(client);
      clearTimeout(timer);
      // A client the deadline cut is not reused, even if fn got its answers just in time.
      if (timedOut) client.release(new Error('deadline passed'));
      else client.release();
      return result;
    } catch (err) {
      clearTimeout(timer);
      // Whatever failed, the client may be mid-transaction or its connection
      // broken: discard it. Closing the connection makes the server roll back.
      client.release(err instanceof Error ? err : new Error('audit store operation failed'));
      if (timedOut) throw new Error('the database did not answer in time', { cause: sanitize(err) });
      throw err;
    }
  }

  /** One statement on any pooled client (so one snapshot), within the read deadline. */
  async function oneStatement<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
    return withClient(connectTimeoutMs + queryTimeoutMs, async (client) => (await client.query<R>(text, values)).rows);
  }

  async function insertBatch(client: pg.PoolClient, batch: readonly Pending[]): Promise<(AuditRecord | { failed: unknown })[]> {
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_LOCK.class, ADVISORY_LOCK.append]);
    let head = await readHead(client);
    // Claim rows above the head can only be left over from deleted records
    // (tampering); clear them so they cannot collide with the new ones.
    await client.query('DELETE FROM audit_claims WHERE seq > $1', [head.seq]);
    const ids = batch.map((p) => p.entry.id);
    const taken = new Set(
      (await client.query<{ id: string }>('SELECT id FROM audit_events WHERE id = ANY($1::text[])', [ids])).rows.map((r) => r.id),
    );
    const results: (AuditRecord | { failed: unknown })[] = [];
    const records: AuditRecord[] = [];
    for (const { entry } of batch) {
      // A reused id is a caller bug, and that entry's alone: the rest of the batch commits.
      if (taken.has(entry.id)) {
        results.push({ failed: Object.assign(new Error('an audit record with this id already exists'), { code: '23505' }) });
        continue;
      }
      taken.add(entry.id);
      const seq = head.seq + 1;
      const record: AuditRecord = { ...entry, seq, prev_hash: head.hash, hash: hashRecord(head.hash, seq, entry) };
      records.push(record);
      results.push(record);
      head = { seq, hash: record.hash };
    }
    if (records.length === 0) return results;

    const stored = records.map(toStoredColumns);
    const columns = COLUMNS.map((column) => stored.map((r) => r[column]));
    await client.query(INSERT_EVENTS_SQL, columns);
    const claimSeqs: number[] = [];
    const claimNames: string[] = [];
    const claimValues: string[] = [];
    const claimTimes: string[] = [];
    const hours = new Map<string, [min: number, max: number]>();
    for (const r of records) {
      for (const [name, value] of toClaimIndex(r.claims)) {
        claimSeqs.push(r.seq);
        claimNames.push(name);
        claimValues.push(value);
        claimTimes.push(r.time);
      }
      const range = hours.get(hourOf(r.time));
      if (range === undefined) hours.set(hourOf(r.time), [r.seq, r.seq]);
      else range[1] = r.seq; // seqs ascend within the batch
    }
    if (claimSeqs.length > 0) {
      await client.query(INSERT_CLAIMS_SQL, [claimSeqs, claimNames, claimValues, claimTimes]);
    }
    const hourKeys = [...hours.keys()].sort();
    await client.query(UPSERT_HOURS_SQL, [hourKeys, hourKeys.map((h) => hours.get(h)![0]), hourKeys.map((h) => hours.get(h)![1])]);
    return results;
  }

  return {
    append(entry) {
      if (closing) return Promise.reject(writeFailed(new Error('the audit store is closed')));
      let canonical: AuditEntry;
      try {
        canonical = toCanonicalEntry(entry);
      } catch (err) {
        return Promise.reject(err);
      }
      // PostgreSQL text cannot hold U+0000. Refuse such an entry alone, before
      // it could fail the batch it would share with others.
      if (holdsNul(canonical)) return Promise.reject(writeFailed(new Error('the record holds a U+0000 character, which PostgreSQL text cannot store')));
      return new Promise<AuditRecord>((resolve, reject) => {
        queue.push({ entry: canonical, queuedAt: performance.now(), resolve, reject });
        schedule();
      });
    },

    async query(query: AuditQuery): Promise<AuditPage> {
      const compiled = compileAuditQuery(query);
      // No stored string holds U+0000 (see append), and PostgreSQL would refuse it as a parameter.
      if (queryHoldsNul(compiled)) return { events: [], nextCursor: null };
      let rows: EventRow[];
      try {
        let page = compiled;
        let upperSeq: number | null = null;
        if (compiled.since !== null || compiled.until !== null) {
          // A time window becomes a seq range from audit_hours (a few hundred
          // rows for a month): the walk in seq order starts at the window's
          // first hour and stops after its last, instead of reading every
          // record before or after the window.
          const [range] = await oneStatement<{ lo: string | null; hi: string | null }>(
            'SELECT min(min_seq) AS lo, max(max_seq) AS hi FROM audit_hours WHERE hour >= $1 AND hour <= $2',
            [compiled.since === null ? '' : hourOf(compiled.since), compiled.until === null ? '\u{10FFFF}' : hourOf(compiled.until)],
          );
          if (range?.lo == null || range.hi == null) return { events: [], nextCursor: null };
          page = { ...compiled, afterSeq: Math.max(compiled.afterSeq, Number(range.lo) - 1) };
          upperSeq = Number(range.hi);
        }
        const select = toPostgresSelect(page, upperSeq);
        rows = await oneStatement<EventRow>(select.text, select.values);
      } catch (err) {
        throw readFailed(err);
      }
      const more = rows.length > compiled.limit;
      let events: AuditRecord[];
      try {
        events = (more ? rows.slice(0, compiled.limit) : rows).map(fromStoredRow);
      } catch (err) {
        // Only an edited table holds a row that does not parse; verify() names it.
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
        const [end] = await oneStatement<{ seq: string | null }>('SELECT max(seq) AS seq FROM audit_events');
        endSeq = Number(end?.seq ?? 0);
        // Read after the head: hour ranges only ever widen, so they cover every record up to endSeq.
        hours = new Map(
          (await oneStatement<{ hour: string; min_seq: string; max_seq: string }>('SELECT hour, min_seq, max_seq FROM audit_hours')).map((r) => [
            r.hour,
            [Number(r.min_seq), Number(r.max_seq)],
          ]),
        );
        // A row at or before the start (where records were pruned) would be served by queries but never walked.
        const [stray] =
          options.partial === true
            ? []
            : await oneStatement<{ seq: string; id: string }>('SELECT seq, id FROM audit_events WHERE seq <= $1 ORDER BY seq LIMIT 1', [options.from?.seq ?? 0]);
        if (stray !== undefined) {
          verifier.fail({ seq: Number(stray.seq), id: stray.id }, 'unexpected_record');
          return verifier.result();
        }
      } catch (err) {
        throw readFailed(err);
      }
      let afterSeq = options.from?.seq ?? 0;
      while (afterSeq < endSeq) {
        let rows: (EventRow & { claim_rows: string | null })[];
        try {
          // One statement, so the records and their claim rows come from one snapshot.
          rows = await oneStatement(
            `SELECT ${COLUMNS.map((c) => `e.${c}`).join(', ')},
               (SELECT json_agg(json_build_array(c.name, c.value, c.time))::text FROM audit_claims c WHERE c.seq = e.seq) AS claim_rows
             FROM audit_events e WHERE e.seq > $1 AND e.seq <= $2 ORDER BY e.seq LIMIT $3`,
            [afterSeq, endSeq, VERIFY_BATCH],
          );
        } catch (err) {
          throw readFailed(err);
        }
        const lastRow = rows.at(-1);
        if (lastRow === undefined) break;
        for (const row of rows) {
          let record: AuditRecord;
          try {
            record = fromStoredRow(row);
          } catch {
            verifier.fail({ seq: Number(row.seq), id: typeof row.id === 'string' ? row.id : null }, 'unreadable');
            return verifier.result();
          }
          const range = hours.get(hourOf(record.time));
          const indexed = range !== undefined && range[0] <= record.seq && record.seq <= range[1] && sameClaimIndex(record, row.claim_rows);
          const indexProblem: ChainProblem | null = indexed ? null : 'claim_index_mismatch';
          if (!verifier.next(record, indexProblem)) return verifier.result();
        }
        afterSeq = Number(lastRow.seq);
      }
      return verifier.result();
    },

    async head(): Promise<ChainPoint> {
      try {
        const [row] = await oneStatement<{ seq: string; hash: string }>(HEAD_SQL);
        return row === undefined ? { seq: 0, hash: GENESIS_HASH } : { seq: Number(row.seq), hash: row.hash };
      } catch (err) {
        throw readFailed(err);
      }
    },

    async pruneBoundary(before: string): Promise<ChainPoint | null> {
      try {
        const [row] = await oneStatement<{ seq: string; hash: string }>(
          `SELECT seq, hash FROM audit_events
           WHERE seq < coalesce((SELECT min(seq) FROM audit_events WHERE time >= $1), 9223372036854775807)
           ORDER BY seq DESC LIMIT 1`,
          [before],
        );
        return row === undefined ? null : { seq: Number(row.seq), hash: row.hash };
      } catch (err) {
        throw readFailed(err);
      }
    },

    async saveCheckpoint(checkpoint: AuditCheckpoint): Promise<void> {
      try {
        await oneStatement(INSERT_CHECKPOINT_SQL, checkpointValues(checkpoint));
      } catch (err) {
        throw writeFailed(err);
      }
    },

    async checkpoints(): Promise<AuditCheckpoint[]> {
      try {
        const rows = await oneStatement<{ seq: string; hash: string; time: string; kind: AuditCheckpoint['kind']; kid: string; jws: string }>(
          'SELECT seq, hash, time, kind, kid, jws FROM audit_checkpoints ORDER BY seq, time',
        );
        return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash, time: r.time, kind: r.kind, kid: r.kid, jws: r.jws }));
      } catch (err) {
        throw readFailed(err);
      }
    },

    async prune(anchor: AuditCheckpoint): Promise<number> {
      if (anchor.kind !== 'prune') throw new TypeError('prune() takes a prune checkpoint');
      const mismatch = new Error(`the record at seq ${anchor.seq} does not have the anchor's hash`);
      try {
        // Not under the append lock: appends only add records above the head
        // and read the head from the records or, once none is left, from the
        // prune checkpoint committed with the deletion, so both orders are
        // safe, and a long prune does not hold appends up.
        return await withClient(connectTimeoutMs + maintenanceTimeoutMs + 1000, (client) =>
          inTransaction(client, async () => {
            await client.query(`SET LOCAL statement_timeout = ${maintenanceTimeoutMs}`);
            const bounded = (text: string, values: unknown[]) => queryWithin(client, maintenanceTimeoutMs + 1000, text, values);
            const at = await client.query<{ hash: string }>('SELECT hash FROM audit_events WHERE seq = $1', [anchor.seq]);
            if (at.rows[0]?.hash !== anchor.hash) throw mismatch;
            await client.query(INSERT_CHECKPOINT_SQL, checkpointValues(anchor));
            await bounded('DELETE FROM audit_claims WHERE seq <= $1', [anchor.seq]);
            const deleted = await bounded('DELETE FROM audit_events WHERE seq <= $1', [anchor.seq]);
            await bounded('DELETE FROM audit_hours WHERE max_seq <= $1', [anchor.seq]);
            return deleted.rowCount ?? 0;
          }),
        );
      } catch (err) {
        if (err === mismatch) throw err;
        throw writeFailed(err);
      }
    },

    async ping(): Promise<void> {
      try {
        await withClient(connectTimeoutMs + queryTimeoutMs, (client) =>
          inTransaction(
            client,
            async () => {
              // A write, rolled back: fails on a standby, a read-only
              // transaction default, or a role that lost its rights.
              const touched = await client.query('UPDATE audit_schema_migrations SET applied_at = applied_at WHERE version = $1', [POSTGRES_SCHEMA_VERSION]);
              if (touched.rowCount !== 1) throw new Error('the audit schema version row is missing');
            },
            'rollback',
          ),
        );
      } catch (err) {
        throw new AuditUnavailableError('The audit log cannot take writes.', { reason: 'audit_unwritable', cause: sanitize(err) });
      }
    },

    async close(): Promise<void> {
      if (closing) return;
      // Refuse new appends, write what is queued, then close the pool.
      closing = true;
      for (;;) {
        if (inFlight === null) startBatch();
        if (inFlight === null) break;
        await inFlight;
      }
      closed = true;
      await pool.end().catch(() => undefined);
    },
  };
}

/**
 * Runs `fn` inside BEGIN/COMMIT (or BEGIN/ROLLBACK for `end: 'rollback'`).
 * If anything fails there is no ROLLBACK (on a stalled connection it would
 * only wait again): the caller discards the client, and the server rolls back
 * a transaction whose connection closed.
 */
async function inTransaction<T>(client: pg.PoolClient, fn: () => Promise<T>, end: 'commit' | 'rollback' = 'commit'): Promise<T> {
  // Fixed here, not left to database or role defaults: under REPEATABLE READ the snapshot would
  // predate the append lock (a stale head), and synchronous_commit = off would make COMMIT
  // return before the record is durable.
  await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
  await client.query('SET LOCAL synchronous_commit = on');
  const result = await fn();
  await client.query(end === 'commit' ? 'COMMIT' : 'ROLLBACK');
  return result;
}

/**
 * Brings the schema to POSTGRES_SCHEMA_VERSION. The common case (already
 * current) only reads. Otherwise everything happens in one transaction under
 * a transaction-scoped advisory lock, re-reading the version under it, so
 * replicas starting together migrate once and the others find it done (and a
 * connection pooler in transaction mode cannot strand the lock).
 */
async function migrate(pool: pg.Pool, timeoutMs: number): Promise<void> {
  const client = await pool.connect();
  try {
    // Records must read back exactly as they were hashed; a database in
    // another encoding would refuse (or alter) some characters.
    const [encoding] = (await client.query<{ name: string }>("SELECT current_setting('server_encoding') AS name")).rows;
    if (encoding?.name !== 'UTF8') throw new Error(`the database encoding is ${encoding?.name ?? 'unknown'}; the audit log needs UTF8`);
    const current = await schemaVersion(client);
    if (current > POSTGRES_SCHEMA_VERSION) throw newerSchema(current);
    if (current < POSTGRES_SCHEMA_VERSION) {
      const bounded = (text: string, values: unknown[] = []) => queryWithin(client, timeoutMs + 1000, text, values);
      await inTransaction(client, async () => {
        await bounded(`SET LOCAL lock_timeout = ${timeoutMs}`);
        await bounded(`SET LOCAL statement_timeout = ${timeoutMs}`);
        await bounded('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_LOCK.class, ADVISORY_LOCK.migrate]);
        let version = await schemaVersion(client);
        if (version > POSTGRES_SCHEMA_VERSION) throw newerSchema(version);
        if (version === 0) {
          if (await tableExists(client, 'audit_events')) throw new Error('audit_events exists but audit_schema_migrations does not: not a schema this broker created');
          await bounded('CREATE TABLE audit_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
        }
        for (; version < POSTGRES_SCHEMA_VERSION; version += 1) {
          const step = MIGRATIONS[version];
          if (step === undefined) throw new Error(`no migration from schema version ${version}`);
          await bounded(step);
          await bounded('INSERT INTO audit_schema_migrations (version) VALUES ($1)', [version + 1]);
        }
      });
    }
    client.release();
  } catch (err) {
    client.release(err instanceof Error ? err : new Error('migration failed'));
    throw err;
  }
}

/** The highest applied migration, 0 if there is no migrations table. */
async function schemaVersion(client: pg.PoolClient): Promise<number> {
  if (!(await tableExists(client, 'audit_schema_migrations'))) return 0;
  const [row] = (await client.query<{ version: number | null }>('SELECT max(version) AS version FROM audit_schema_migrations')).rows;
  return row?.version ?? 0;
}

/**
 * Whether the current schema has table `name`, read from pg_class with the
 * statement's snapshot. (A name lookup such as to_regclass() goes through the
 * session's catalog cache, which can still say "no such table" for one
 * another session created while this one waited for the migration lock.)
 */
async function tableExists(client: pg.PoolClient, name: string): Promise<boolean> {
  const { rows } = await client.query<{ found: boolean }>(
    `SELECT EXISTS (
       SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = current_schema() AND c.relname = $1
     ) AS found`,
    [name],
  );
  return rows[0]?.found === true;
}

function newerSchema(version: number): Error {
  return new Error(`the audit schema has version ${version}; this version of the broker supports up to ${POSTGRES_SCHEMA_VERSION}`);
}

/** A query with its own client-side reply timeout (pg reads `query_timeout` from the query config; its types omit it). */
function queryWithin<R extends pg.QueryResultRow = pg.QueryResultRow>(client: pg.PoolClient, timeoutMs: number, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  return client.query<R>({ text, values, query_timeout: timeoutMs } as pg.QueryConfig);
}

async function readHead(client: pg.PoolClient): Promise<ChainPoint> {
  const [row] = (await client.query<{ seq: string; hash: string }>(HEAD_SQL)).rows;
  return row === undefined ? { seq: 0, hash: GENESIS_HASH } : { seq: Number(row.seq), hash: row.hash };
}



/**
 * The keyset query for one page, in seq order; fetches limit + 1 rows to know
 * whether another page follows. `upperSeq` (from audit_hours) bounds a time
 * window's walk. Exported for the query-plan tests only.
 *
 * Every plan walks an index in seq order and stops at the limit: with a
 * claim filter the claim index `(name, value, seq) INCLUDE (time)` drives,
 * the time window is checked from the index itself and only the page's
 * records are read; further claims are primary-key lookups. Without one, the
 * primary key or a `(column, seq)` index drives and the time window is a
 * residual filter.
 *
 * @internal
 */
export function toPostgresSelect(q: CompiledAuditQuery, upperSeq: number | null = null): { text: string; values: (string | number)[] } {
  const where: string[] = [];
  const values: (string | number)[] = [];
  const param = (value: string | number) => {
    values.push(value);
    return `$${values.length}`;
  };
  const [first, ...more] = q.claims;
  let from: string;
  let seqColumn: string;
  let timeColumn: string;
  if (first === undefined) {
    from = 'audit_events e';
    seqColumn = 'e.seq';
    // Not indexable on purpose: the seq range from audit_hours already
    // narrows the walk to the window, and a plan driven by the time index
    // would read and sort the whole window (the planner cannot know how
    // closely time follows seq, so it may well pick it).
    timeColumn = "(e.time || '')";
  } else {
    from = 'audit_claims c JOIN audit_events e ON e.seq = c.seq';
    seqColumn = 'c.seq';
    timeColumn = 'c.time';
    where.push(`c.name = ${param(first[0])}`, `c.value = ${param(first[1])}`);
  }
  where.push(`${seqColumn} > ${param(q.afterSeq)}`);
  if (upperSeq !== null) where.push(`${seqColumn} <= ${param(upperSeq)}`);
  for (const [name, value] of more) {
    where.push(`EXISTS (SELECT 1 FROM audit_claims x WHERE x.seq = ${seqColumn} AND x.name = ${param(name)} AND x.value = ${param(value)})`);
  }
  if (q.since !== null) where.push(`${timeColumn} >= ${param(q.since)}`);
  if (q.until !== null) where.push(`${timeColumn} < ${param(q.until)}`);
  const eq = (column: string, value: string | null) => {
    if (value !== null) where.push(`e.${column} = ${param(value)}`);
  };
  eq('decision', q.decision);
  eq('policy', q.policy);
  eq('issuer', q.issuer);
  eq('subject', q.subject);
  eq('credential_id', q.credentialId);
  const columns = COLUMNS.map((c) => `e.${c}`).join(', ');
  return { text: `SELECT ${columns} FROM ${from} WHERE ${where.join(' AND ')} ORDER BY ${seqColumn} LIMIT ${param(q.limit + 1)}`, values };
}

/** True if the claim rows stored for `record` (json_agg of [name, value, time], or null) are exactly its claim index. */
function sameClaimIndex(record: AuditRecord, stored: string | null): boolean {
  let rows: unknown;
  try {
    rows = stored === null ? [] : JSON.parse(stored);
  } catch {
    return false;
  }
  if (!Array.isArray(rows)) return false;
  const expected = toClaimIndex(record.claims);
  if (expected.length !== rows.length) return false;
  const key = (name: unknown, value: unknown) => JSON.stringify([name, value]);
  const want = new Set(expected.map(([name, value]) => key(name, value)));
  return rows.every((row) => Array.isArray(row) && row.length === 3 && row[2] === record.time && want.has(key(row[0], row[1])));
}

function checkpointValues(c: AuditCheckpoint): (string | number)[] {
  return [c.seq, c.hash, c.time, c.kind, c.kid, c.jws];
}

const STRING_COLUMNS = AUDIT_ENTRY_FIELDS.filter((f) => f !== 'audience' && f !== 'claims' && f !== 'unverified' && f !== 'duration_seconds');

function holdsNul(entry: AuditEntry): boolean {
  for (const field of STRING_COLUMNS) {
    const value = entry[field];
    if (typeof value === 'string' && value.includes('\u0000')) return true;
  }
  // JSON columns escape U+0000, but the claim index stores names and values as they are.
  return toClaimIndex(entry.claims).some(([name, value]) => name.includes('\u0000') || value.includes('\u0000'));
}

function queryHoldsNul(q: CompiledAuditQuery): boolean {
  const strings = [q.decision, q.policy, q.issuer, q.subject, q.credentialId, ...q.claims.flat()];
  return strings.some((s) => s !== null && s.includes('\u0000'));
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`${name} must be a positive integer`);
  return value;
}

/**
 * What of a driver error may travel as a `cause`: its message and SQLSTATE
 * only. PostgreSQL's `detail` can quote a failing row, that is, a record.
 */
function sanitize(err: unknown): Error {
  if (!(err instanceof Error)) return new Error('unknown error');
  const code = (err as { code?: unknown }).code;
  const clean = new Error(err.message, err.cause === undefined ? undefined : { cause: err.cause instanceof Error ? sanitize(err.cause) : undefined });
  if (typeof code === 'string') Object.assign(clean, { code });
  return clean;
}

function writeFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log could not record this decision.', { reason: 'audit_write_failed', cause: sanitize(cause) });
}

function readFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot be read.', { reason: 'audit_read_failed', cause: sanitize(cause) });
}
