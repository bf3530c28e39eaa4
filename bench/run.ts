/**
 * `npm run bench`: exchanges per second and latency of the real broker (the
 * built CLI, SQLite audit, JSON logs) against a hello-world express server,
 * both driven by autocannon over loopback in the same run, plus the in-process
 * cost of each exchange step. Figures only; no thresholds (machines are noisy).
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { exchangeLoad, startChild, stop } from './harness.js';
import { stepCosts } from './steps.js';

const DURATION_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const TOKENS = Number(process.env.BENCH_TOKENS ?? 60_000);
const AUDIENCE = 'http://127.0.0.1:8080';
const CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' };

interface Row {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

async function load(name: string, url: string, nextToken?: () => string): Promise<Row> {
  const result = await exchangeLoad(url, { connections: CONNECTIONS, durationSeconds: DURATION_SECONDS, policy: 'bench', nextToken });
  return {
    name,
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

async function mintTokens(issuer: DevIssuer, count: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < count; i++) tokens.push(await issuer.mint({ ...CLAIMS, aud: AUDIENCE, run_id: String(i) }, { expiresInSeconds: 900 }));
  return tokens;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const hello = await startChild(['--import', 'tsx', 'bench/hello-server.ts']);
  rows.push(await load('hello-world express (baseline)', hello.url));
  await stop(hello.child);

  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-bench-'));
  const issuer = await startDevIssuer({ port: 0, alg: 'ES256' });
  try {
    await mkdir(path.join(dir, 'policies'));
    await writeFile(
      path.join(dir, 'policies', 'bench.yaml'),
      `issuer: local\nclaims:\n  repository: acme/api\n  ref: [refs/heads/main, refs/heads/release]\n  event_name: { in: [push, workflow_dispatch] }\n  sub: { glob: "repo:acme/*:ref:refs/heads/**" }\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n  claims:\n    repo: \${repository}\n`,
    );
    await writeFile(
      path.join(dir, 'policies', 'deny-prt.yaml'),
      `issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n`,
    );
    await writeFile(
      path.join(dir, 'broker.yaml'),
      `server: { host: 127.0.0.1, port: 0, public_url: ${AUDIENCE} }\nissuers:\n  - { name: local, issuer: ${issuer.url}, audiences: [${AUDIENCE}], algorithms: [ES256] }\n`,
    );
    process.stderr.write(`minting ${TOKENS} tokens...\n`);
    const tokens = await mintTokens(issuer, TOKENS);
    let next = 0;
    const broker = await startChild(['bin/oidc-broker.js', 'serve', '--config', path.join(dir, 'broker.yaml')], { LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' });
    rows.push(
      await load('oidc-broker POST /v1/exchange (jwt, SQLite audit)', broker.url, () => {
        const token = tokens[next % tokens.length]!;
        next++;
        return token;
      }),
    );
    await stop(broker.child);
    if (next > tokens.length) process.stderr.write(`note: ${next - tokens.length} requests reused a token (409s); raise BENCH_TOKENS\n`);
  } finally {
    await issuer.close();
    await rm(dir, { recursive: true, force: true });
  }

  console.log(`\nLoad: autocannon, ${CONNECTIONS} connections, ${DURATION_SECONDS} s each, loopback, same machine and run`);
  console.table(rows.map((r) => ({ scenario: r.name, 'req/s': Math.round(r.requestsPerSecond), 'p50 ms': r.p50Ms, 'p99 ms': r.p99Ms, non2xx: r.non2xx, errors: r.errors })));
  const [baseline, broker] = rows;
  if (baseline && broker) console.log(`broker throughput = ${((broker.requestsPerSecond / baseline.requestsPerSecond) * 100).toFixed(1)}% of the hello-world baseline`);

  console.log('\nIn-process cost of each exchange step (mean of many runs):');
  console.table(await stepCosts());
}

await main();
