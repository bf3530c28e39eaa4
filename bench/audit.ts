/**
 * Audit store figures (`npm run bench` runs this after the exchange bench):
 *
 * - writes: records/s through each store's real append path, one append at a
 *   time (one commit per record: the baseline) and with many appends in
 *   flight (group commit), plus two PostgreSQL stores writing at once as two
 *   replicas would;
 * - reads: p50/p95 of the first page of `claim.repository=<repo>` within a
 *   one-day `since`/`until` window, with 1,000,000 records in the store.
 *
 * PostgreSQL runs in a throwaway database on BENCH_PG_URL (default
 * postgres://postgres@127.0.0.1:5432/postgres); it is skipped if unreachable.
 * Figures only, no thresholds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import pg from 'pg';
import { openAuditStore } from '../src/audit/open.js';
import { newAuditId } from '../src/audit/record.js';
import type { AuditEntry, AuditQuery, AuditStore } from '../src/audit/types.js';
import { bulkLoadPostgres, bulkLoadSqlite, type BulkRecord } from './audit-bulk.js';

const WRITE_SECONDS = Number(process.env.BENCH_AUDIT_WRITE_SECONDS ?? 4);
const IN_FLIGHT = Number(process.env.BENCH_AUDIT_IN_FLIGHT ?? 64);
const RECORDS = Number(process.env.BENCH_AUDIT_RECORDS ?? 1_000_000);
const QUERIES = Number(process.env.BENCH_AUDIT_QUERIES ?? 200);
const REPOSITORIES = 2000;
const DAYS = 30;
const T0 = Date.parse('2026-10-01T00:00:00Z');
const ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Repository of the i-th record: one hot repository gets a tenth of the traffic, the rest share it evenly. */
function repositoryOf(index: number): string {
  return `org${index % 97}/repo${index}`;
}

/** A GitHub Actions-like claim set (twelve scalar claims, all indexed). */
function claimsFor(i: number): Record<string, unknown> {
  const repo = repositoryOf(i % 10 === 0 ? 0 : i % REPOSITORIES);
  return {
    repository: repo,
    repository_owner: repo.split('/')[0],
    repository_id: String(100000 + (i % REPOSITORIES)),
    ref: i % 5 === 0 ? 'refs/heads/release' : 'refs/heads/main',
    sha: (i * 2654435761).toString(16).padStart(40, '0').slice(-40),
    workflow: 'deploy',
    event_name: 'push',
    actor: `user${i % 500}`,
    run_id: String(9_000_000 + i),
    run_attempt: '1',
    environment: i % 3 === 0 ? 'production' : 'staging',
    runner_environment: 'github-hosted',
  };
}

function entryFor(i: number, timeMs: number): AuditEntry {
  const claims = claimsFor(i);
  return {
    id: newAuditId(),
    time: new Date(timeMs).toISOString(),
    decision: i % 10 === 0 ? 'denied' : 'issued',
    error: i % 10 === 0 ? 'access_denied' : null,
    reason: null,
    request_id: newAuditId(),
    issuer: 'github',
    subject: `repo:${String(claims.repository)}:ref:${String(claims.ref)}`,
    audience: ['https://broker.example.com'],
    jti: null,
    token_sha256: 'a'.repeat(64),
    claims,
    unverified: null,
    policy: `deploy-${i % 50}`,
    policy_sha256: 'b'.repeat(64),
    provider: 'aws',
    target: 'arn:aws:iam::123456789012:role/deploy',
    credential_id: `ASIA${String(i).padStart(16, '0')}`,
    expires_at: new Date(timeMs + 900_000).toISOString(),
    duration_seconds: 900,
    client_ip: '10.0.0.1',
    user_agent: 'curl/8.5.0',
    audit_matches: [],
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface WriteRow {
  store: string;
  mode: string;
  'records/s': number;
  'append p50 ms': number;
  'append p99 ms': number;
}

/** Appends for WRITE_SECONDS with `inFlight` appenders per store; all stores write at once. */
async function measureWrites(label: string, mode: string, stores: AuditStore[], inFlight: number): Promise<WriteRow> {
  const latencies: number[] = [];
  let written = 0;
  const deadline = performance.now() + WRITE_SECONDS * 1000;
  const appender = async (store: AuditStore) => {
    while (performance.now() < deadline) {
      const started = performance.now();
      await store.append(entryFor(written, Date.now()));
      latencies.push(performance.now() - started);
      written++;
    }
  };
  const started = performance.now();
  await Promise.all(stores.flatMap((store) => Array.from({ length: inFlight }, () => appender(store))));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    store: label,
    mode,
    'records/s': Math.round(written / seconds),
    'append p50 ms': Number(percentile(latencies, 50).toFixed(2)),
    'append p99 ms': Number(percentile(latencies, 99).toFixed(2)),
  };
}

async function writeBench(sqliteUrl: string, pgUrl: string | null): Promise<WriteRow[]> {
  const rows: WriteRow[] = [];
  const sqlite = await openAuditStore(sqliteUrl);
  rows.push(await measureWrites('sqlite', '1 in flight (a commit per record)', [sqlite], 1));
  rows.push(await measureWrites('sqlite', `${IN_FLIGHT} in flight (group commit)`, [sqlite], IN_FLIGHT));
  await sqlite.close();
  if (pgUrl !== null) {
    const first = await openAuditStore(pgUrl);
    const second = await openAuditStore(pgUrl);
    rows.push(await measureWrites('postgres', '1 in flight (a commit per record)', [first], 1));
    rows.push(await measureWrites('postgres', `${IN_FLIGHT} in flight (group commit)`, [first], IN_FLIGHT));
    rows.push(await measureWrites('postgres', `2 replicas x ${IN_FLIGHT} in flight`, [first, second], IN_FLIGHT));
    const verified = await first.verify();
    if (!verified.ok) throw new Error(`the chain written by two replicas does not verify: ${JSON.stringify(verified)}`);
    await first.close();
    await second.close();
  }
  return rows;
}

/** Records spread evenly over DAYS days, in time order (as a live log is). */
function* bulkRecords(count: number): Generator<BulkRecord> {
  const step = (DAYS * 86_400_000) / count;
  for (let i = 0; i < count; i++) yield { seq: i + 1, entry: entryFor(i, T0 + Math.floor(i * step)) };
}

interface ReadRow {
  store: string;
  records: number;
  query: string;
  'matches/page': number;
  'p50 ms': number;
  'p95 ms': number;
}

async function readBench(label: string, store: AuditStore): Promise<ReadRow[]> {
  const rows: ReadRow[] = [];
  const cases: [string, (k: number) => AuditQuery][] = [
    [
      'claim.repository + 1-day window',
      (k) => {
        const day = k % (DAYS - 1);
        return {
          claims: { repository: repositoryOf((k * 7) % REPOSITORIES) },
          since: new Date(T0 + day * 86_400_000).toISOString(),
          until: new Date(T0 + (day + 1) * 86_400_000).toISOString(),
        };
      },
    ],
    ['claim.repository, no window', (k) => ({ claims: { repository: repositoryOf((k * 7) % REPOSITORIES) } })],
    [
      'hot claim.repository (10% of records) + 1-day window',
      (k) => ({ claims: { repository: repositoryOf(0) }, since: new Date(T0 + (k % (DAYS - 1)) * 86_400_000).toISOString(), until: new Date(T0 + ((k % (DAYS - 1)) + 1) * 86_400_000).toISOString() }),
    ],
    ['decision=denied + 1-day window', (k) => ({ decision: 'denied', since: new Date(T0 + (k % (DAYS - 1)) * 86_400_000).toISOString(), until: new Date(T0 + ((k % (DAYS - 1)) + 1) * 86_400_000).toISOString() })],
  ];
  for (const [name, make] of cases) {
    const timings: number[] = [];
    let matches = 0;
    for (let k = 0; k < QUERIES; k++) {
      const started = performance.now();
      const page = await store.query({ ...make(k), limit: 100 });
      timings.push(performance.now() - started);
      matches += page.events.length;
    }
    timings.sort((a, b) => a - b);
    rows.push({
      store: label,
      records: RECORDS,
      query: name,
      'matches/page': Math.round(matches / QUERIES),
      'p50 ms': Number(percentile(timings, 50).toFixed(2)),
      'p95 ms': Number(percentile(timings, 95).toFixed(2)),
    });
  }
  return rows;
}

/** A throwaway database for this run, or null if PostgreSQL is not reachable. */
async function createPgDatabase(): Promise<{ url: string; drop: () => Promise<void> } | null> {
  const admin = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 2000 });
  try {
    await admin.connect();
  } catch (err) {
    process.stderr.write(`PostgreSQL not reachable at ${new URL(ADMIN_URL).host} (${(err as Error).message}); skipping it\n`);
    return null;
  }
  const name = `oidc_broker_bench_${process.pid}_${Date.now()}`;
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const again = new pg.Client({ connectionString: ADMIN_URL });
      await again.connect();
      await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await again.end();
    },
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-audit-bench-'));
  const writeDb = await createPgDatabase();
  const readDb = writeDb === null ? null : await createPgDatabase();
  try {
    process.stderr.write('audit writes...\n');
    const writes = await writeBench(`sqlite:${path.join(dir, 'writes.db')}`, writeDb?.url ?? null);
    console.log(`\nAudit appends through the real stores, ${WRITE_SECONDS} s each (durable before each promise resolves):`);
    console.table(writes);

    const reads: ReadRow[] = [];
    const sqlitePath = path.join(dir, 'reads.db');
    await (await openAuditStore(`sqlite:${sqlitePath}`)).close();
    process.stderr.write(`loading ${RECORDS} records into SQLite...\n`);
    const db = new Database(sqlitePath);
    bulkLoadSqlite(db, bulkRecords(RECORDS));
    db.close();
    const sqlite = await openAuditStore(`sqlite:${sqlitePath}`);
    reads.push(...(await readBench('sqlite', sqlite)));
    await sqlite.close();

    if (readDb !== null) {
      await (await openAuditStore(readDb.url)).close();
      process.stderr.write(`loading ${RECORDS} records into PostgreSQL...\n`);
      const client = new pg.Client({ connectionString: readDb.url });
      await client.connect();
      await bulkLoadPostgres(client, bulkRecords(RECORDS));
      await client.end();
      const postgres = await openAuditStore(readDb.url);
      reads.push(...(await readBench('postgres', postgres)));
      await postgres.close();
    }
    console.log(`\nFirst page (limit 100) of audit queries, ${QUERIES} queries each, records spread over ${DAYS} days and ${REPOSITORIES} repositories:`);
    console.table(reads);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await writeDb?.drop();
    await readDb?.drop();
  }
}

await main();
