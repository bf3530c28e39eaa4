/**
 * The PostgreSQL audit backend, for several broker replicas sharing one
 * database (docs/audit.md, "PostgreSQL": one serialised chain, fail closed).
 *
 * Every append batch is one transaction that first takes a transaction-scoped
 * advisory lock, then reads the head and extends the chain from it, so
 * writers in any number of processes take turns and none can fork the chain
 * (the primary key on seq would refuse a fork anyway). Connecting, every
 * statement, every lock wait and each whole batch are bounded, so an
 * unreachable or locked database fails an append instead of hanging it; a
 * client that failed is discarded, and the pool reconnects by itself.
 */
import pg from 'pg';
import { extendChain, type AuditBackend, type HourRange, type StoredClaim } from '../core/backend.js';
import { openFailed, sanitize, urlSecrets } from '../core/errors.js';
import { toKeysetSelect, toStatsSelects, type SelectDialect } from '../core/select.js';
import { createAuditStore, type AuditStoreOptions } from '../core/store.js';
import { GENESIS_HASH } from '../record.js';
import { RECORD_COLUMNS, toStoredColumns, type StoredRow } from '../rows.js';
import type { CompiledAuditQuery } from '../query.js';
import type { AuditCheckpoint, AuditStatsRows, AuditStore, ChainPoint } from '../types.js';
import { ADVISORY_LOCK, POSTGRES_SCHEMA_VERSION, migrate } from './schema.js';
import { inTransaction, queryWithin } from './session.js';

export interface PostgresAuditStoreOptions extends AuditStoreOptions {
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

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_STATEMENT_TIMEOUT_MS = 5000;
const DEFAULT_MAINTENANCE_TIMEOUT_MS = 600_000;
const DEFAULT_MAX_CONNECTIONS = 10;

const SELECT_COLUMNS = RECORD_COLUMNS.join(', ');
/**
 * SQLSTATE classes of PostgreSQL refusing a value, not failing: data
 * exception (22), integrity constraint violation (23), program limit
 * exceeded (54: an index entry too large) and an error a trigger raised (P0).
 */
const VALUE_REFUSAL_CLASSES = ['22', '23', '54', 'P0'];

const HEAD_SQL = `
  SELECT seq, hash FROM (
    (SELECT seq, hash, 1 AS source FROM audit_events ORDER BY seq DESC LIMIT 1)
    UNION ALL
    (SELECT seq, hash, 2 AS source FROM audit_checkpoints WHERE kind = 'prune' ORDER BY seq DESC LIMIT 1)
  ) h ORDER BY source LIMIT 1`;
/** One array parameter per column, typed for unnest(). */
const INSERT_EVENTS_SQL = `INSERT INTO audit_events (${SELECT_COLUMNS}) SELECT * FROM unnest(${RECORD_COLUMNS.map((c, i) => `$${i + 1}::${c === 'seq' || c === 'duration_seconds' ? 'bigint' : 'text'}[]`).join(', ')})`;
const INSERT_CLAIMS_SQL = 'INSERT INTO audit_claims (seq, name, value, time) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])';
const UPSERT_HOURS_SQL = `
  INSERT INTO audit_hours AS h (hour, min_seq, max_seq) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
  ON CONFLICT (hour) DO UPDATE SET min_seq = least(h.min_seq, excluded.min_seq), max_seq = greatest(h.max_seq, excluded.max_seq)`;
const INSERT_CHECKPOINT_SQL = 'INSERT INTO audit_checkpoints (seq, hash, time, kind, kid, jws) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING';

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
  return createAuditStore(await openPostgresBackend(url, options), options);
}

async function openPostgresBackend(url: string, options: PostgresAuditStoreOptions): Promise<AuditBackend> {
  const connectTimeoutMs = positiveInteger(options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
  const statementTimeoutMs = positiveInteger(options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS, 'statementTimeoutMs');
  const maintenanceTimeoutMs = positiveInteger(options.maintenanceTimeoutMs ?? DEFAULT_MAINTENANCE_TIMEOUT_MS, 'maintenanceTimeoutMs');
  const maxConnections = positiveInteger(options.maxConnections ?? DEFAULT_MAX_CONNECTIONS, 'maxConnections');
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
    throw openFailed(err, urlSecrets(url));
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
    throw openFailed(err, urlSecrets(url));
  }

  let closed = false;

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

  return {
    forbiddenCharacter: '\u0000', // PostgreSQL text cannot hold U+0000
    batchDeadlineMs,
    isValueRefusal: (err) => err instanceof pg.DatabaseError && VALUE_REFUSAL_CLASSES.some((sqlClass) => err.code?.startsWith(sqlClass) === true),

    appendBatch: (entries) =>
      withClient(batchDeadlineMs, (client) =>
        inTransaction(client, async () => {
          await client.query('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_LOCK.class, ADVISORY_LOCK.append]);
          const head = await readHead(client);
          // Claim rows above the head can only be left over from deleted records
          // (tampering); clear them so they cannot collide with the new ones.
          await client.query('DELETE FROM audit_claims WHERE seq > $1', [head.seq]);
          const ids = entries.map((e) => e.id);
          const taken = new Set((await client.query<{ id: string }>('SELECT id FROM audit_events WHERE id = ANY($1::text[])', [ids])).rows.map((r) => r.id));
          const batch = extendChain(head, entries, taken);
          if (batch.records.length > 0) {
            const stored = batch.records.map(toStoredColumns);
            await client.query(INSERT_EVENTS_SQL, RECORD_COLUMNS.map((column) => stored.map((r) => r[column])));
            if (batch.claims.length > 0) {
              const { claims } = batch;
              await client.query(INSERT_CLAIMS_SQL, [claims.map((c) => c.seq), claims.map((c) => c.name), claims.map((c) => c.value), claims.map((c) => c.time)]);
            }
            const { hours } = batch;
            await client.query(UPSERT_HOURS_SQL, [hours.map((h) => h.hour), hours.map((h) => h.min), hours.map((h) => h.max)]);
          }
          return batch.results.map((r) => r ?? Object.assign(new Error('an audit record with this id already exists'), { code: '23505' }));
        }),
      ),

    head: () => withClient(connectTimeoutMs + queryTimeoutMs, readHead),

    hourSpan: async (fromHour, toHour) => {
      const [span] = await oneStatement<{ lo: string | null; hi: string | null }>('SELECT min(min_seq) AS lo, max(max_seq) AS hi FROM audit_hours WHERE hour >= $1 AND hour <= $2', [
        fromHour,
        toHour,
      ]);
      return span?.lo == null || span.hi == null ? null : { lo: Number(span.lo), hi: Number(span.hi) };
    },

    hourRanges: async () =>
      (await oneStatement<{ hour: string; min_seq: string; max_seq: string }>('SELECT hour, min_seq, max_seq FROM audit_hours')).map(
        (r): HourRange => ({ hour: r.hour, min: Number(r.min_seq), max: Number(r.max_seq) }),
      ),

    readPage: (query, upperSeq) => {
      const select = toPostgresSelect(query, upperSeq);
      const settings = pagePlannerSettings(query);
      // The settings need a transaction to be local to; a page without them is one round trip.
      if (settings === null) return oneStatement<StoredRow>(select.text, select.values);
      return withClient(connectTimeoutMs + queryTimeoutMs, async (client) => {
        await client.query(`BEGIN READ ONLY; ${settings}`);
        const { rows } = await client.query<StoredRow>(select.text, select.values);
        await client.query('COMMIT');
        return rows;
      });
    },

    readStats: (query, upperSeq, bucketChars, top) => {
      const selects = toStatsSelects(query, upperSeq, bucketChars, top, POSTGRES_DIALECT);
      // One read-only snapshot, so the top lists count the same records as the series.
      return withClient(connectTimeoutMs + 3 * queryTimeoutMs, async (client) => {
        await client.query('BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ');
        const series = await client.query<AuditStatsRows['series'][number]>(selects.series.text, selects.series.values);
        const reasons = await client.query<AuditStatsRows['reasons'][number]>(selects.reasons.text, selects.reasons.values);
        const subjects = await client.query<AuditStatsRows['subjects'][number]>(selects.subjects.text, selects.subjects.values);
        await client.query('COMMIT');
        return { series: series.rows, reasons: reasons.rows, subjects: subjects.rows };
      });
    },

    readRange: async (afterSeq, throughSeq, limit) => {
      // One statement, so the records and their claim rows come from one snapshot.
      const rows = await oneStatement<StoredRow & { claim_rows: string | null }>(
        `SELECT ${RECORD_COLUMNS.map((c) => `e.${c}`).join(', ')},
           (SELECT json_agg(json_build_array(c.name, c.value, c.time))::text FROM audit_claims c WHERE c.seq = e.seq) AS claim_rows
         FROM audit_events e WHERE e.seq > $1 AND e.seq <= $2 ORDER BY e.seq LIMIT $3`,
        [afterSeq, throughSeq, limit],
      );
      return rows.map(({ claim_rows, ...row }) => ({ row, claims: parseClaimRows(claim_rows) }));
    },

    pruneBoundary: async (before) => {
      const [row] = await oneStatement<{ seq: string; hash: string }>(
        `SELECT seq, hash FROM audit_events
         WHERE seq < coalesce((SELECT min(seq) FROM audit_events WHERE time >= $1), 9223372036854775807)
         ORDER BY seq DESC LIMIT 1`,
        [before],
      );
      return row === undefined ? null : { seq: Number(row.seq), hash: row.hash };
    },

    // Not under the append lock: appends only add records above the head and
    // read the head from the records or, once none is left, from the prune
    // checkpoint committed with the deletion, so both orders are safe, and a
    // long prune does not hold appends up.
    deleteThrough: (anchor) =>
      withClient(connectTimeoutMs + maintenanceTimeoutMs + 1000, (client) =>
        inTransaction(client, async () => {
          await client.query(`SET LOCAL statement_timeout = ${maintenanceTimeoutMs}`);
          const bounded = (text: string, values: unknown[]) => queryWithin(client, maintenanceTimeoutMs + 1000, text, values);
          const at = await client.query<{ hash: string }>('SELECT hash FROM audit_events WHERE seq = $1', [anchor.seq]);
          if (at.rows[0]?.hash !== anchor.hash) return null;
          await client.query(INSERT_CHECKPOINT_SQL, checkpointValues(anchor));
          await bounded('DELETE FROM audit_claims WHERE seq <= $1', [anchor.seq]);
          const deleted = await bounded('DELETE FROM audit_events WHERE seq <= $1', [anchor.seq]);
          await bounded('DELETE FROM audit_hours WHERE max_seq <= $1', [anchor.seq]);
          return deleted.rowCount ?? 0;
        }),
      ),

    saveCheckpoint: async (checkpoint) => {
      await oneStatement(INSERT_CHECKPOINT_SQL, checkpointValues(checkpoint));
    },

    checkpoints: async () => {
      const rows = await oneStatement<{ seq: string; hash: string; time: string; kind: AuditCheckpoint['kind']; kid: string; jws: string }>(
        'SELECT seq, hash, time, kind, kid, jws FROM audit_checkpoints ORDER BY seq, time',
      );
      return rows.map((r) => ({ seq: Number(r.seq), hash: r.hash, time: r.time, kind: r.kind, kid: r.kid, jws: r.jws }));
    },

    ping: () =>
      withClient(connectTimeoutMs + queryTimeoutMs, (client) =>
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
      ),

    async close() {
      if (closed) return;
      closed = true;
      await pool.end().catch(() => undefined);
    },
  };
}

async function readHead(client: pg.PoolClient): Promise<ChainPoint> {
  const [row] = (await client.query<{ seq: string; hash: string }>(HEAD_SQL)).rows;
  return row === undefined ? { seq: 0, hash: GENESIS_HASH } : { seq: Number(row.seq), hash: row.hash };
}

/** The claim rows of a record, from json_agg of [name, value, time] (null for none); null if they are not that shape. */
function parseClaimRows(text: string | null): StoredClaim[] | null {
  let rows: unknown;
  try {
    rows = text === null ? [] : JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(rows)) return null;
  const out: StoredClaim[] = [];
  for (const row of rows) {
    if (!Array.isArray(row) || row.length !== 3 || !row.every((v) => typeof v === 'string')) return null;
    out.push({ name: row[0] as string, value: row[1] as string, time: row[2] as string });
  }
  return out;
}

function checkpointValues(c: AuditCheckpoint): (string | number)[] {
  return [c.seq, c.hash, c.time, c.kind, c.kid, c.jws];
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`${name} must be a positive integer`);
  return value;
}

/**
 * What a page query with a claim filter runs under (inside its transaction),
 * or null for a page without one, which runs as a single statement. A page
 * walks an index in seq order and stops at the limit (see toKeysetSelect),
 * but the planner takes a time window's seq range (from audit_hours) and its
 * time bounds, which select the same records, as independent, so it expects
 * a claim to match a handful of records in a window, and would rather fetch
 * every match through a bitmap and sort them: for a common claim, thousands
 * of rows for one page. Without bitmap scans it walks the claim index. A
 * page without a claim filter plans as an index walk either way (the
 * query-plan tests check both).
 * @internal exported for the query-plan tests
 */
export function pagePlannerSettings(q: CompiledAuditQuery): string | null {
  return q.claims.length > 0 ? 'SET LOCAL enable_bitmapscan = off' : null;
}

/**
 * The page query (see toKeysetSelect) in PostgreSQL's words; exported for
 * the query-plan tests only. With a claim filter the time window is checked
 * on the claim rows the claim index finds, before their records are read.
 * Without one the time is made unindexable on purpose: the seq
 * range from audit_hours already narrows the walk to the window, and a plan
 * driven by the time index would read and sort the whole window (the planner
 * cannot know how closely time follows seq, so it may well pick it). Text
 * columns a token fills are indexed by their SHA-256 (see the schema's
 * migration 2): the hash finds the index entries, the full text keeps the
 * match exact.
 * @internal
 */
export function toPostgresSelect(q: CompiledAuditQuery, upperSeq: number | null = null): { text: string; values: (string | number)[] } {
  return toKeysetSelect(q, upperSeq, POSTGRES_DIALECT);
}

const POSTGRES_DIALECT: SelectDialect = {
  placeholder: (n) => `$${n}`,
  time: (claimDriven) => (claimDriven ? 'c.time' : "(e.time || '')"),
  textEquals: (column, placeholder) => `audit_sha256(${column}) = audit_sha256(${placeholder}) AND ${column} = ${placeholder}`,
  // Kept as text (see the schema): cast to jsonb for the array's `?` (holds this string).
  arrayHolds: (column, placeholder) => `${column} IS NOT NULL AND (${column})::jsonb ? ${placeholder}`,
};
