/**
 * What only the PostgreSQL audit store has: a schema migrated at open by
 * whichever replica gets there first, several replicas writing one chain, a
 * network between the broker and its log, and derived tables of its own.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import request from 'supertest';
import { openAuditStore } from '../src/audit/open.js';
import { POSTGRES_SCHEMA_VERSION, migrate } from '../src/audit/postgres/schema.js';
import { openPostgresAuditStore, pagePlannerSettings, toPostgresSelect, type PostgresAuditStoreOptions } from '../src/audit/postgres/store.js';
import { compileAuditQuery } from '../src/audit/query.js';
import { GENESIS_HASH } from '../src/audit/record.js';
import { RECORD_COLUMNS } from '../src/audit/rows.js';
import type { AuditEntry, AuditQuery, AuditRecord, AuditStore } from '../src/audit/types.js';
import { AuditUnavailableError } from '../src/errors.js';
import { PG_ADMIN_URL, PostgresTestDatabase } from './helpers/audit-stores.js';
import { T0, makeEntry as baseEntry, randomText } from './helpers/audit-entries.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture } from './helpers/broker-fixture.js';
import { cli, githubServeConfig, logLine } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

const db = new PostgresTestDatabase();
after(() => db.drop());


/** This suite's entries: no jti, two claims. */
function makeEntry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return baseEntry({ jti: null, claims: { repository: 'acme/api', run_number: 6 }, ...overrides });
}

function isUnavailable(reason: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AuditUnavailableError, `expected AuditUnavailableError, got ${String(err)}`);
    assert.equal(err.reason, reason);
    return true;
  };
}

/** Runs `sql` on a short session in `schema`; returns the rows. */
async function sql<R extends pg.QueryResultRow = Record<string, unknown>>(schema: string, text: string, values: unknown[] = []): Promise<R[]> {
  const session = await db.session(schema);
  try {
    return (await session.query<R>(text, values)).rows;
  } finally {
    await session.end();
  }
}

/** How long `promise` took to settle, and how. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const started = Date.now();
  const [result] = await Promise.allSettled([promise]);
  return { ms: Date.now() - started, result: result };
}

async function open(schema: string, options: PostgresAuditStoreOptions = {}): Promise<AuditStore> {
  return openPostgresAuditStore(db.url(schema), { connectTimeoutMs: 2000, ...options });
}

describe('postgres audit store: schema and migrations', () => {
  it('creates a versioned schema with text JSON columns, "C" times and an index per filter ending in seq', async () => {
    const schema = await db.newSchema();
    await (await open(schema)).close();
    assert.deepEqual(
      await sql(schema, 'SELECT version FROM audit_schema_migrations ORDER BY version'),
      Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })),
    );
    const columns = await sql<{ column_name: string; data_type: string; collation_name: string | null }>(
      schema,
      "SELECT column_name, data_type, collation_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'audit_events'",
      [schema],
    );
    const type = (name: string) => columns.find((c) => c.column_name === name);
    for (const json of ['claims', 'audience', 'unverified', 'audit_matches']) assert.equal(type(json)?.data_type, 'text', json);
    assert.equal(type('time')?.collation_name, 'C');
    assert.equal(type('seq')?.data_type, 'bigint');
    const indexes = await sql<{ indexname: string; indexdef: string }>(schema, 'SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname', [schema]);
    const defs = Object.fromEntries(indexes.map((i) => [i.indexname, i.indexdef.replace(/^CREATE (UNIQUE )?INDEX \S+ ON \S+ USING btree /, '$1').replace(`${schema}.`, '')]));
    // Text a token can fill is indexed by its SHA-256: a B-tree entry holds at most about 2.7 kB.
    assert.deepEqual(defs, {
      audit_checkpoints_pkey: 'UNIQUE (seq, kind, "time")',
      audit_claims_name: 'UNIQUE (seq, audit_sha256(name))',
      audit_claims_value: '(audit_sha256(name), audit_sha256(value), seq)',
      audit_events_audit_matches: '(seq) WHERE (audit_matches IS NOT NULL)',
      audit_events_credential_id: '(audit_sha256(credential_id), seq)',
      audit_events_decision: '(decision, seq)',
      audit_events_id_key: 'UNIQUE (id)',
      audit_events_issuer: '(audit_sha256(issuer), seq)',
      audit_events_pkey: 'UNIQUE (seq)',
      audit_events_policy: '(audit_sha256(policy), seq)',
      audit_events_subject: '(audit_sha256(subject), seq)',
      audit_events_time: '("time", seq)',
      audit_hours_pkey: 'UNIQUE (hour)',
      audit_schema_migrations_pkey: 'UNIQUE (version)',
    });
  });

  it('migrates once when several replicas open a fresh schema at the same moment, and reopening changes nothing', async () => {
    const schema = await db.newSchema();
    const stores = await Promise.all(Array.from({ length: 6 }, () => open(schema)));
    // They all work on the one schema.
    const records = await Promise.all(stores.map((s) => s.append(makeEntry())));
    assert.deepEqual(records.map((r) => r.seq).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6]);
    await Promise.all(stores.map((s) => s.close()));
    const applied = await sql(schema, 'SELECT version, applied_at FROM audit_schema_migrations ORDER BY version');
    assert.equal(applied.length, POSTGRES_SCHEMA_VERSION);
    const reopened = await open(schema);
    assert.equal((await reopened.query({})).events.length, 6);
    await reopened.close();
    assert.deepEqual(await sql(schema, 'SELECT version, applied_at FROM audit_schema_migrations ORDER BY version'), applied);
  });

  it('migrates a version 1 log holding records: they verify and are found as before, and text longer than an index entry becomes recordable', async () => {
    // What a version 1 broker left: the records and derived rows of another log, copied into a version 1 schema.
    const written = await db.newSchema();
    const source = await open(written);
    const before = [
      await source.append(makeEntry({ subject: 'repo:acme/api:ref:refs/heads/main' })),
      await source.append(makeEntry({ subject: 'repo:acme/web:ref:refs/heads/main', claims: { repository: 'acme/web', run_number: 7 } })),
    ];
    await source.close();
    const schema = await db.newSchema();
    const pool = new pg.Pool({ connectionString: db.url(schema), max: 1 });
    try {
      await migrate(pool, 5000, 1);
    } finally {
      await pool.end();
    }
    // Version 1 has no audit_matches column: copy the columns it has.
    const v1Columns = RECORD_COLUMNS.filter((c) => c !== 'audit_matches').join(', ');
    await sql(schema, `INSERT INTO audit_events (${v1Columns}) SELECT ${v1Columns} FROM ${written}.audit_events`);
    for (const table of ['audit_claims', 'audit_hours']) await sql(schema, `INSERT INTO ${table} SELECT * FROM ${written}.${table}`);
    // What version 1 could not index, so could not record.
    const long = randomText(12_288);
    await assert.rejects(sql(schema, "INSERT INTO audit_claims (seq, name, value, time) VALUES (3, 'long_value', $1, $2)", [long, before[1]!.time]), { code: '54000' });

    const store = await open(schema);
    assert.deepEqual(await sql(schema, 'SELECT max(version) AS version FROM audit_schema_migrations'), [{ version: POSTGRES_SCHEMA_VERSION }]);
    assert.deepEqual(await store.verify(), { ok: true, events: 2, head: before[1]!.hash, last_seq: 2 });
    assert.deepEqual((await store.query({ claims: { repository: 'acme/web' } })).events, [before[1]]);
    assert.deepEqual((await store.query({ claims: { repository: 'acme/api', run_number: '6' } })).events, [before[0]]);
    assert.deepEqual((await store.query({ subject: before[0]!.subject! })).events, [before[0]]);
    const added = await store.append(makeEntry({ subject: long, claims: { long_value: long } }));
    assert.deepEqual((await store.query({ claims: { long_value: long } })).events, [added]);
    assert.deepEqual((await store.query({ subject: long })).events, [added]);
    assert.deepEqual(await store.verify(), { ok: true, events: 3, head: added.hash, last_seq: 3 });
    await store.close();
  });

  it('refuses a newer schema, and audit tables it did not create', async () => {
    const newer = await db.newSchema();
    await (await open(newer)).close();
    await sql(newer, 'INSERT INTO audit_schema_migrations (version) VALUES (99)');
    await assert.rejects(open(newer), isUnavailable('audit_open_failed'));

    const foreign = await db.newSchema();
    await sql(foreign, 'CREATE TABLE audit_events (id text)');
    await assert.rejects(open(foreign), isUnavailable('audit_open_failed'));
    assert.deepEqual(await sql(foreign, "SELECT to_regclass('audit_schema_migrations') IS NULL AS absent"), [{ absent: true }], 'the failed migration left nothing behind');
  });

  it('fails to open, without hanging, when the database is unreachable or does not exist', async () => {
    const refused = await timed(openPostgresAuditStore('postgres://postgres@127.0.0.1:1/nothing', { connectTimeoutMs: 1000 }));
    assert.ok(refused.result.status === 'rejected' && isUnavailable('audit_open_failed')(refused.result.reason));
    const missing = new URL(PG_ADMIN_URL);
    missing.pathname = '/oidc_broker_no_such_database';
    const absent = await timed(openPostgresAuditStore(missing.toString(), { connectTimeoutMs: 1000 }));
    assert.ok(absent.result.status === 'rejected' && isUnavailable('audit_open_failed')(absent.result.reason));
    assert.ok(refused.ms < 10_000 && absent.ms < 10_000);
  });

  it('is what openAuditStore opens for postgres:// and postgresql:// URLs', async () => {
    const schema = await db.newSchema();
    for (const url of [db.url(schema), db.url(schema).replace(/^postgres:/, 'postgresql:')]) {
      const store = await openAuditStore(url);
      await store.append(makeEntry());
      await store.close();
    }
    assert.deepEqual(await sql(schema, 'SELECT seq FROM audit_events ORDER BY seq'), [{ seq: '1' }, { seq: '2' }]);
  });
});

describe('postgres audit store: replicas', () => {
  it('keeps one unbroken chain while two replicas (separate pools) append at once', async () => {
    const schema = await db.newSchema();
    const [a, b] = await Promise.all([open(schema), open(schema)]);
    try {
      const perReplica = 300;
      // Appends arrive over time on both, so batches from the two compete for the chain's head.
      const spread = (store: AuditStore, name: string) =>
        Promise.all(
          Array.from(
            { length: perReplica },
            (_, i) => new Promise<AuditRecord>((resolve, reject) => setTimeout(() => void store.append(makeEntry({ request_id: `${name}-${i}` })).then(resolve, reject), i % 25)),
          ),
        );
      const [fromA, fromB] = await Promise.all([spread(a, 'a'), spread(b, 'b')]);
      // Then rounds in lockstep, one append on each replica at once per round: however the
      // machine schedules them, both replicas' records must alternate in the chain.
      const rounds = 20;
      const lockstep: AuditRecord[] = [];
      for (let i = 0; i < rounds; i++) lockstep.push(...(await Promise.all([a.append(makeEntry({ request_id: `a-r${i}` })), b.append(makeEntry({ request_id: `b-r${i}` }))])));
      const total = 2 * perReplica + 2 * rounds;
      const all = [...fromA, ...fromB, ...lockstep].sort((x, y) => x.seq - y.seq);
      assert.deepEqual(
        all.map((r) => r.seq),
        Array.from({ length: total }, (_, i) => i + 1),
      );
      all.forEach((r, i) => assert.equal(r.prev_hash, i === 0 ? GENESIS_HASH : all[i - 1]!.hash, `link at seq ${r.seq}`));
      const tail = all.slice(-2 * rounds);
      const switches = tail.filter((r, i) => i > 0 && r.request_id!.charAt(0) !== tail[i - 1]!.request_id!.charAt(0)).length;
      assert.ok(switches >= rounds, `${switches} switches between replicas in ${rounds} lockstep rounds`);
      for (const store of [a, b]) assert.deepEqual(await store.verify(), { ok: true, events: total, head: all.at(-1)!.hash, last_seq: total });
      // What each replica returned is what is stored.
      const stored = (await a.query({ limit: 1000 })).events;
      assert.deepEqual(stored, all);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

/**
 * A loopback TCP proxy in front of PostgreSQL, to take the network away:
 * `cut()` drops every connection and refuses new ones, `stall()` keeps
 * connections open but forwards nothing (a black hole), `restore()` heals.
 */
class FlakyProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private mode: 'up' | 'cut' | 'stalled' = 'up';
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => this.accept(client));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  private accept(client: Socket): void {
    if (this.mode === 'cut') {
      client.destroy();
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(from);
      from.on('data', (chunk) => {
        if (this.mode === 'up') to.write(chunk);
      });
      from.on('error', () => undefined);
      from.on('close', () => {
        this.sockets.delete(from);
        to.destroy();
      });
    }
  }

  cut(): void {
    this.mode = 'cut';
    for (const socket of this.sockets) socket.destroy();
  }

  stall(): void {
    this.mode = 'stalled';
  }

  restore(): void {
    this.mode = 'up';
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('postgres audit store: fails closed', () => {
  let proxy: FlakyProxy;
  before(async () => {
    const target = new URL(PG_ADMIN_URL);
    proxy = new FlakyProxy({ host: target.hostname, port: Number(target.port || 5432) });
    await proxy.start();
  });
  after(() => proxy.close());

  /** A store that reaches its schema through the proxy. */
  async function openThroughProxy(schema: string): Promise<AuditStore> {
    const url = new URL(db.url(schema));
    url.host = `127.0.0.1:${proxy.port}`;
    return openPostgresAuditStore(url.toString(), { connectTimeoutMs: 1000, statementTimeoutMs: 500 });
  }

  it('rejects appends while the network is cut, without hanging, and recovers by itself when it is back', async () => {
    const schema = await db.newSchema();
    const store = await openThroughProxy(schema);
    const first = await store.append(makeEntry());
    // Several idle connections in the pool, so the cut breaks some that nobody is using.
    await Promise.all(Array.from({ length: 4 }, () => store.query({})));

    proxy.cut();
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const append = await timed(store.append(makeEntry()));
      assert.ok(append.result.status === 'rejected' && isUnavailable('audit_write_failed')(append.result.reason));
      assert.ok(append.ms < 10_000, `append rejected after ${append.ms} ms`);
      const ping = await timed(store.ping());
      assert.ok(ping.result.status === 'rejected' && isUnavailable('audit_unwritable')(ping.result.reason));
      const query = await timed(store.query({}));
      assert.ok(query.result.status === 'rejected' && isUnavailable('audit_read_failed')(query.result.reason));
    }

    proxy.restore();
    await store.ping();
    const next = await store.append(makeEntry());
    assert.equal(next.seq, 2);
    assert.equal(next.prev_hash, first.hash);
    assert.deepEqual(await store.verify(), { ok: true, events: 2, head: next.hash, last_seq: 2 });
    await store.close();
  });

  it('rejects appends when the database stops answering (a black hole), then recovers', async () => {
    const schema = await db.newSchema();
    const store = await openThroughProxy(schema);
    const first = await store.append(makeEntry());

    proxy.stall();
    const stalled = await timed(Promise.all([store.append(makeEntry()), store.append(makeEntry())]));
    assert.ok(stalled.result.status === 'rejected' && isUnavailable('audit_write_failed')(stalled.result.reason));
    assert.ok(stalled.ms < 10_000, `append rejected after ${stalled.ms} ms`);
    // New connections go nowhere either: bounded by the connect timeout.
    const ping = await timed(store.ping());
    assert.ok(ping.result.status === 'rejected' && isUnavailable('audit_unwritable')(ping.result.reason));
    assert.ok(ping.ms < 10_000, `ping rejected after ${ping.ms} ms`);

    proxy.restore();
    const next = await store.append(makeEntry());
    assert.equal(next.seq, 2, 'the stalled batch did not commit');
    assert.equal(next.prev_hash, first.hash);
    assert.deepEqual(await store.verify(), { ok: true, events: 2, head: next.hash, last_seq: 2 });
    await store.close();
  });

  it('rejects, not hangs, while another session holds a table lock longer than the statement timeout', async () => {
    const schema = await db.newSchema();
    const store = await open(schema, { statementTimeoutMs: 300 });
    const first = await store.append(makeEntry());
    const locker = await db.session(schema);
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    try {
      const append = await timed(store.append(makeEntry()));
      assert.ok(append.result.status === 'rejected' && isUnavailable('audit_write_failed')(append.result.reason));
      // 55P03: lock_timeout; 57014: statement_timeout.
      assert.match(String(((append.result.reason as Error).cause as { code?: unknown } | undefined)?.code), /^(55P03|57014)$/);
      assert.ok(append.ms >= 250 && append.ms < 10_000, `append rejected after ${append.ms} ms`);
      const query = await timed(store.query({}));
      assert.ok(query.result.status === 'rejected' && isUnavailable('audit_read_failed')(query.result.reason));
      assert.ok(query.ms < 10_000);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    const next = await store.append(makeEntry());
    assert.equal(next.seq, 2);
    assert.equal(next.prev_hash, first.hash);
    await store.close();
  });

  it('ping proves a write: a read-only database is not ready, though it can still be read', async () => {
    const schema = await db.newSchema();
    const writer = await open(schema);
    await writer.append(makeEntry());
    await writer.close();
    const url = new URL(db.url(schema));
    url.searchParams.set('options', `-c search_path=${schema} -c default_transaction_read_only=on`);
    const store = await openPostgresAuditStore(url.toString(), { connectTimeoutMs: 2000 });
    await assert.rejects(store.ping(), isUnavailable('audit_unwritable'));
    await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
    assert.equal((await store.query({})).events.length, 1);
    assert.equal((await store.verify()).ok, true);
    await store.close();
  });

  it('keeps record contents out of error causes', async () => {
    const schema = await db.newSchema();
    const store = await open(schema);
    await store.append(makeEntry());
    // A constraint whose violation detail would quote the whole row.
    await sql(schema, "ALTER TABLE audit_events ADD CONSTRAINT no_secrets CHECK (user_agent IS DISTINCT FROM 'SECRET-AGENT')");
    const failure = await store.append(makeEntry({ user_agent: 'SECRET-AGENT' })).then(
      () => assert.fail('appended'),
      (err: unknown) => err,
    );
    isUnavailable('audit_write_failed')(failure);
    const seen = new Set<unknown>();
    const texts: string[] = [];
    for (let e: unknown = failure; e instanceof Error && !seen.has(e); e = e.cause) {
      seen.add(e);
      texts.push(e.message, JSON.stringify(e), String((e as { detail?: string }).detail ?? ''));
    }
    assert.equal((failure as Error & { cause: { code?: string } }).cause.code, '23514');
    assert.equal(texts.join('\n').includes('SECRET'), false, texts.join('\n'));
    await store.close();
  });

  it('closes its connections on close()', async () => {
    const schema = await db.newSchema();
    const store = await open(schema);
    await Promise.all([store.append(makeEntry()), store.query({}), store.verify(), store.ping()]);
    const ours = "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'oidc-broker-audit'";
    assert.ok(((await sql<{ n: number }>(schema, ours))[0]?.n ?? 0) > 0);
    await store.close();
    // The server notices a closed connection a moment after the client ends it.
    let remaining = -1;
    for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
      remaining = (await sql<{ n: number }>(schema, ours))[0]?.n ?? -1;
      if (remaining === 0) break;
    }
    assert.equal(remaining, 0);
  });
});

describe('postgres audit store: derived tables', () => {
  it('verify detects an hour range or a claim row time that no longer covers its record', async () => {
    const schema = await db.newSchema();
    const store = await open(schema);
    const records: AuditRecord[] = [];
    for (const minute of [0, 30, 61, 62, 125]) records.push(await store.append(makeEntry({ time: new Date(T0 + minute * 60_000).toISOString() })));
    assert.deepEqual(await sql(schema, 'SELECT hour, min_seq::int, max_seq::int FROM audit_hours ORDER BY hour'), [
      { hour: '2026-11-25T19', min_seq: 1, max_seq: 2 },
      { hour: '2026-11-25T20', min_seq: 3, max_seq: 4 },
      { hour: '2026-11-25T21', min_seq: 5, max_seq: 5 },
    ]);
    assert.equal((await store.verify()).ok, true);

    // Narrowed so that a window query would miss seq 4.
    await sql(schema, "UPDATE audit_hours SET max_seq = 3 WHERE hour = '2026-11-25T20'");
    let result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 4, id: records[3]!.id, problem: 'claim_index_mismatch' });
    await sql(schema, "UPDATE audit_hours SET max_seq = 4 WHERE hour = '2026-11-25T20'");
    await sql(schema, "DELETE FROM audit_hours WHERE hour = '2026-11-25T21'");
    result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 5, id: records[4]!.id, problem: 'claim_index_mismatch' });
    await sql(schema, "INSERT INTO audit_hours VALUES ('2026-11-25T21', 5, 5)");
    // A claim row moved out of its record's time.
    await sql(schema, "UPDATE audit_claims SET time = '2020-01-01T00:00:00.000Z' WHERE seq = 2 AND name = 'repository'");
    result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'claim_index_mismatch' });
    await store.close();
  });

  it('plans every page as an index walk in seq order: no sequential scan, no sort', async () => {
    const schema = await db.newSchema();
    await (await open(schema)).close();
    // 50,000 records over 50 hours (hashes are not what a plan depends on).
    await sql(
      schema,
      `INSERT INTO audit_events (seq, id, time, decision, policy, issuer, subject, credential_id, claims, audit_matches, prev_hash, hash)
       SELECT g, 'id-' || g, to_char(timestamp '2026-11-01' + g * interval '3.6 s', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
         (ARRAY['issued','denied','error','explain'])[1 + g % 4], 'p-' || g % 2000, 'i-' || g % 3, 's-' || g % 1000, 'c-' || g,
         json_build_object('repository', 'r' || g % 20, 'ref', 'main', 'run', g)::text,
         CASE WHEN g % 500 = 0 THEN json_build_array('deny-' || g % 1000)::text END, repeat('f', 64), repeat('f', 64)
       FROM generate_series(1, 50000) g`,
    );
    await sql(schema, "INSERT INTO audit_claims SELECT e.seq, kv.key, kv.value, e.time FROM audit_events e, json_each_text(e.claims::json) kv");
    await sql(schema, 'INSERT INTO audit_hours SELECT left(time, 13), min(seq), max(seq) FROM audit_events GROUP BY 1');
    // As autovacuum would have (index-only scans need the visibility map).
    for (const table of ['audit_events', 'audit_claims', 'audit_hours']) await sql(schema, `VACUUM ANALYZE ${table}`);

    const session = await db.session(schema);
    try {
      const plan = async (query: AuditQuery, upperSeq: number | null = null) => {
        const compiled = compileAuditQuery({ ...query, limit: 100 });
        const { text, values } = toPostgresSelect(compiled, upperSeq);
        // As readPage runs it: planner settings only for a claim filter, else the bare statement.
        await session.query(`BEGIN READ ONLY; ${pagePlannerSettings(compiled) ?? ''}`);
        try {
          const rows = (await session.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${text}`, values)).rows;
          return rows.map((r) => r['QUERY PLAN']).join('\n');
        } finally {
          await session.query('ROLLBACK');
        }
      };
      const window = { since: '2026-11-02T03:00:00Z', until: '2026-11-02T05:00:00Z' };
      // [query, index the plan must use, seq bound from audit_hours, whether a sort is acceptable].
      // A rare value may be fetched through its index and sorted (a handful of rows);
      // a common one, and any time window, must be walked in seq order up to the limit.
      const cases: [AuditQuery, RegExp, number | null, boolean][] = [
        [{}, /Index Scan using audit_events_pkey/, null, false],
        [{ decision: 'denied' }, /audit_events_decision|audit_events_pkey/, null, false],
        [{ policy: 'p-7' }, /Index Scan on audit_events_policy|Index Scan using audit_events_policy/, null, true],
        [{ issuer: 'i-1' }, /audit_events_issuer|audit_events_pkey/, null, false],
        [{ subject: 's-5' }, /Index Scan on audit_events_subject|Index Scan using audit_events_subject/, null, true],
        [{ credentialId: 'c-77' }, /Index Scan on audit_events_credential_id|Index Scan using audit_events_credential_id/, null, true],
        [{ claims: { repository: 'r7' } }, /Index Scan using audit_claims_value/, null, false],
        [{ claims: { repository: 'r7', ref: 'main' } }, /Index Scan using audit_claims_value/, null, false],
        [{ ...window }, /Index Scan using audit_events_pkey/, 28_000, false],
        [{ ...window, decision: 'denied' }, /audit_events_decision|audit_events_pkey/, 28_000, false],
        [{ ...window, claims: { repository: 'r7' } }, /Index Scan using audit_claims_value/, 28_000, false],
        // The records with audit matches are few: the partial index over them drives.
        [{ auditMatch: 'deny-500' }, /Index Scan using audit_events_audit_matches/, null, false],
      ];
      assert.equal(pagePlannerSettings(compileAuditQuery({ ...window, decision: 'denied' })), null, 'a page without a claim filter is one statement, no transaction');
      for (const [query, index, upper, sortAllowed] of cases) {
        const detail = await plan({ ...query, cursor: Buffer.from('26000').toString('base64url') }, upper);
        assert.match(detail, index, `${JSON.stringify(query)}\n${detail}`);
        assert.doesNotMatch(detail, sortAllowed ? /Seq Scan/ : /Seq Scan|Sort/, `${JSON.stringify(query)}\n${detail}`);
      }
    } finally {
      await session.end();
    }
  });
});

describe('postgres audit store: through the broker', () => {
  it('issues and records an exchange whose token carries a 4 KB sub and claim value; the audit API finds it by each', async () => {
    const store = await open(await db.newSchema());
    const fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') }, brokerOptions: { audit: store } });
    try {
      // Over what a version 1 index entry could hold, and the token still under the broker's 16 KB cap.
      const [sub, note] = [randomText(4096), randomText(4096)];
      const token = await fx.issuer.mint({ aud: AUDIENCE, sub, repository: 'acme/api', note });
      const issued = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(issued.status, 200, issued.text);
      for (const query of [{ subject: sub }, { 'claim.note': note }]) {
        const found = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query(query);
        assert.equal(found.status, 200, found.text);
        const events = found.body.events as AuditRecord[];
        assert.deepEqual(events.map((e) => [e.decision, e.subject, e.claims?.note]), [['issued', sub, note]]);
      }
      assert.equal((await store.verify()).ok, true);
    } finally {
      await fx.close();
    }
  });
});

describe('postgres audit store: why it cannot be opened', () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** `oidc-broker serve` on a config whose audit.url is `url`, run to its end. */
  async function serveWith(url: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'broker.yaml'), githubServeConfig('./signing-key.jwk').replace('url: sqlite:./data/audit.db', `url: ${url}`));
    return cli(['serve', '-c', join(dir, 'broker.yaml')]);
  }

  function withDatabase(password: string, database: string): string {
    const url = new URL(PG_ADMIN_URL);
    url.password = password;
    url.pathname = `/${database}`;
    return url.toString();
  }

  it('serve logs the driver code and message of a database that does not exist, and never the URL password', async () => {
    const missing = `no_such_db_${process.pid}`;
    const run = await serveWith(withDatabase('pw-never-logged', missing));
    assert.equal(run.code, 1);
    const line = logLine('cannot start')(run.stdout);
    assert.equal(line?.error, 'The audit log cannot be opened.', run.stdout);
    const cause = line?.cause as { code?: string; message?: string } | undefined;
    assert.deepEqual([cause?.code, cause?.message], ['3D000', `database "${missing}" does not exist`], run.stdout);
    assert.equal(`${run.stdout}${run.stderr}`.includes('pw-never-logged'), false);
  });

  it('redacts the password wherever the driver quotes it, even in a name it echoes', async () => {
    // The database is named like the password, so the driver's own message quotes it.
    const run = await serveWith(withDatabase('hunter2db', 'hunter2db'));
    assert.equal(run.code, 1);
    const cause = logLine('cannot start')(run.stdout)?.cause as { code?: string; message?: string } | undefined;
    assert.deepEqual([cause?.code, cause?.message], ['3D000', 'database "[redacted]" does not exist'], run.stdout);
    assert.equal(`${run.stdout}${run.stderr}`.includes('hunter2db'), false, run.stdout);
  });
});
