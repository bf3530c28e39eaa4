/**
 * `npm run bench` (last step): exchanges per second and latency of one broker
 * against three replicas sharing one PostgreSQL audit log, one Redis replay
 * store and one signing key file, with the same total connections, next to a
 * hello-world express baseline and a single broker on SQLite with an in-memory
 * replay store, all in the same run on the same machine. Each exchange is a
 * broker-signed `jwt` grant of a single-use token, so the replay claim (Redis
 * `SET NX`, or memory) is on the path. Figures only; no thresholds.
 *
 * Needs PostgreSQL at BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres;
 * a fresh database is created and dropped) and Redis at BENCH_REDIS_URL
 * (default redis://127.0.0.1:6379/12; that db is flushed before and after).
 */
import { chmod, mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { exchangeLoad, startChild, stop, stopAll } from './harness.js';

const DURATION_SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 48);
const REPLICAS = 3;
const TOKENS = Number(process.env.BENCH_TOKENS ?? 40_000);
const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12';
const AUDIENCE = 'http://127.0.0.1:8080';
const CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' };
const CORES = availableParallelism();

interface Row {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  statuses: Record<string, number>;
}

/** A token source shared by every autocannon instance of one configuration: each token is sent once. */
function tokenSource(tokens: string[]): { next: () => { token: string }; used: () => number } {
  let index = 0;
  return {
    next: () => ({ token: tokens[index++ % tokens.length]! }),
    used: () => index,
  };
}

/** Drive `urls` at once, CONNECTIONS split evenly between them; latency percentiles from the merged histogram are not available, so p50/p99 are the worst instance's. */
async function load(name: string, urls: string[], next?: () => { token: string }): Promise<Row> {
  const per = Math.floor(CONNECTIONS / urls.length);
  const results = await Promise.all(urls.map((url) => exchangeLoad(url, { connections: per, durationSeconds: DURATION_SECONDS, policy: 'bench', next })));
  const statuses: Record<string, number> = {};
  for (const r of results) {
    for (const [code, count] of Object.entries(r.statusCodeStats ?? {})) statuses[code] = (statuses[code] ?? 0) + (count.count ?? 0);
  }
  return {
    name,
    requestsPerSecond: results.reduce((sum, r) => sum + r.requests.average, 0),
    p50Ms: Math.max(...results.map((r) => r.latency.p50)),
    p99Ms: Math.max(...results.map((r) => r.latency.p99)),
    non2xx: results.reduce((sum, r) => sum + r.non2xx, 0),
    errors: results.reduce((sum, r) => sum + r.errors + r.timeouts, 0),
    statuses,
  };
}

async function mintTokens(issuer: DevIssuer, count: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < count; i++) tokens.push(await issuer.mint({ ...CLAIMS, aud: AUDIENCE, run_id: String(i) }, { expiresInSeconds: 900 }));
  return tokens;
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function brokerConfig(issuerUrl: string, audit: string, replay: string): string {
  return [
    `server: { host: 127.0.0.1, port: 0, public_url: ${AUDIENCE} }`,
    'issuers:',
    `  - { name: local, issuer: ${issuerUrl}, audiences: [${AUDIENCE}], algorithms: [ES256] }`,
    'policies: { dir: ./policies }',
    `audit: { url: "${audit}" }`,
    `replay: { url: "${replay}" }`,
    'providers: { jwt: { signing_key_file: ./signing-key.jwk } }',
    'limits: { refused_per_ip: 1000000, exchanges_per_subject: 1000000, explains_per_subject: 1000000, auditor_failures_per_ip: 1000000 }',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const checks: string[] = [];
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-replicas-'));
  const database = `oidc_broker_bench_${process.pid}_${Date.now()}`;
  const auditUrl = new URL(PG_ADMIN_URL);
  auditUrl.pathname = `/${database}`;
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let databaseCreated = false;
  const issuer = await startDevIssuer({ port: 0, alg: 'ES256' });
  const brokerArgs = (config: string) => ['bin/oidc-broker.js', 'serve', '--config', path.join(dir, config)];
  const brokerEnv = { LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' };
  try {
    await redis.connect();
    const existing = await redis.dbsize();
    if (existing > 0) throw new Error(`${REDIS_URL} holds ${existing} keys; point BENCH_REDIS_URL at an empty db`);
    await adminQuery(`CREATE DATABASE ${database}`);
    databaseCreated = true;

    await mkdir(path.join(dir, 'policies'));
    await writeFile(
      path.join(dir, 'policies', 'bench.yaml'),
      `issuer: local\nclaims:\n  repository: acme/api\n  ref: [refs/heads/main, refs/heads/release]\n  event_name: { in: [push, workflow_dispatch] }\n  sub: { glob: "repo:acme/*:ref:refs/heads/**" }\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n  claims:\n    repo: \${repository}\n`,
    );
    await writeFile(path.join(dir, 'policies', 'deny-prt.yaml'), `issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n`);
    await writeFile(path.join(dir, 'sqlite.yaml'), brokerConfig(issuer.url, 'sqlite:./audit.db', 'memory:'));
    await writeFile(path.join(dir, 'shared.yaml'), brokerConfig(issuer.url, auditUrl.toString(), REDIS_URL));

    process.stderr.write(`minting ${TOKENS} tokens...\n`);
    const tokens = await mintTokens(issuer, TOKENS);
    const overruns: string[] = [];
    /** Issued exchanges vs the records in the shared audit log and the replay keys in Redis (cumulative over the PostgreSQL runs; Redis is flushed between them). */
    const sharedStateCheck = async (row: Row): Promise<string> => {
      const client = new pg.Client({ connectionString: auditUrl.toString(), connectionTimeoutMillis: 5000 });
      await client.connect();
      try {
        const issued = await client.query<{ n: string }>("SELECT count(*) AS n FROM audit_events WHERE decision = 'issued'");
        const replayKeys = (await redis.keys('oidc-broker:replay:*')).length;
        return `${row.name}: ${row.statuses['200'] ?? 0} answered 200; audit_events issued so far ${issued.rows[0]!.n}; Redis replay keys ${replayKeys}`;
      } finally {
        await client.end();
      }
    };
    const run = async (name: string, urls: string[]): Promise<void> => {
      const source = tokenSource(tokens);
      rows.push(await load(name, urls, source.next));
      if (source.used() > tokens.length) overruns.push(`${name}: ${source.used() - tokens.length} requests reused a token (409s); raise BENCH_TOKENS`);
    };

    const hello = await startChild(['--import', 'tsx', 'bench/hello-server.ts']);
    rows.push(await load('hello-world express (baseline)', [hello.url]));
    await stop(hello.child);

    const single = await startChild(brokerArgs('sqlite.yaml'), brokerEnv);
    await run('1 broker, SQLite audit, memory replay', [single.url]);
    await stop(single.child);

    // The first start creates the shared signing key and the audit tables; the others find them.
    const one = await startChild(brokerArgs('shared.yaml'), brokerEnv);
    await run('1 broker, PostgreSQL audit, Redis replay', [one.url]);
    await stop(one.child);
    checks.push(await sharedStateCheck(rows.at(-1)!));
    await redis.flushdb();

    const replicas = [];
    for (let i = 0; i < REPLICAS; i++) replicas.push(await startChild(brokerArgs('shared.yaml'), brokerEnv));
    await run(`${REPLICAS} replicas, shared PostgreSQL + Redis`, replicas.map((r) => r.url));
    for (const r of replicas) await stop(r.child);
    checks.push(await sharedStateCheck(rows.at(-1)!));

    for (const line of overruns) process.stderr.write(`note: ${line}\n`);
  } finally {
    await stopAll();
    await issuer.close();
    await redis.flushdb().catch(() => undefined);
    redis.disconnect();
    if (databaseCreated) await adminQuery(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch((error: unknown) => process.stderr.write(`could not drop ${database}: ${String(error)}\n`));
    await chmod(dir, 0o700).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }

  const baseline = rows[0]!.requestsPerSecond;
  console.log(
    `\nLoad: autocannon in this process, ${CONNECTIONS} connections in total (split evenly over the replicas), ${DURATION_SECONDS} s each, loopback;` +
      ` ${CORES} cores (${cpus()[0]?.model ?? 'unknown CPU'}), load generator, PostgreSQL and Redis on the same machine. Single-use tokens, jwt grant.` +
      ` With several replicas, p50/p99 are the highest of the per-replica figures.`,
  );
  console.table(
    rows.map((r) => ({
      configuration: r.name,
      'exchanges/s': Math.round(r.requestsPerSecond),
      'per core': Math.round(r.requestsPerSecond / CORES),
      'p50 ms': r.p50Ms,
      'p99 ms': r.p99Ms,
      non2xx: r.non2xx,
      errors: r.errors,
      'vs hello-world': `${((r.requestsPerSecond / baseline) * 100).toFixed(1)}%`,
    })),
  );
  const odd = rows.filter((r) => Object.keys(r.statuses).some((code) => !code.startsWith('2')));
  for (const r of odd) console.log(`status codes, ${r.name}: ${JSON.stringify(r.statuses)}`);
  for (const line of checks) console.log(`shared state: ${line}`);
}

await main();
