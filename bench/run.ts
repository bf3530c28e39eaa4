/**
 * `npm run bench` (first step): exchanges per second, p50/p99, event-loop
 * delay and RSS of the real broker (the built CLI with production settings:
 * SQLite audit, which fails closed; JSON log at info to a file) for the `jwt`
 * and `aws` providers, single-use tokens and reused ones, at 1, 10 and 50
 * connections, each run between two runs of a hello-world express server at
 * the same connections (so drift shows), plus the bare cryptography an
 * exchange cannot avoid, all in the same run on the same machine; then the
 * in-process cost of each exchange step. Tokens are shaped like GitHub
 * Actions tokens (bench/tokens.ts). Figures only; no thresholds.
 * docs/benchmarks.md lists the environment variables.
 */
import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type autocannon from 'autocannon';
import { startDevIssuer } from '../src/dev/issuer.js';
import { startCpuSpan, type CpuSpan } from './cpu.js';
import { eventLoopDelay, exchangeLoad, rssMiB, sampleRss, startChild, stop, stopAll } from './harness.js';
import { stepCosts } from './steps.js';
import { AUDIENCE, brokerConfig, brokerEnv, DENY_PULL_REQUEST_TARGET, policyYaml, STS_ENV, type Provider, type Replay } from './deployment.js';
import { mintGithubActionsTokens } from './tokens.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
const CONNECTION_COUNTS = (process.env.BENCH_CONNECTION_COUNTS ?? '1,10,50').split(',').map(Number);
const PROVIDERS = (process.env.BENCH_PROVIDERS ?? 'jwt,aws').split(',') as Provider[];
const REPLAY = (process.env.BENCH_REPLAY ?? 'on,off').split(',') as Replay[];
/** Fixed pool size for single-use tokens; by default the pool grows before each run to what that run can use. */
const FIXED_TOKENS = process.env.BENCH_TOKENS === undefined ? undefined : Number(process.env.BENCH_TOKENS);
const CRYPTO_SECONDS = Number(process.env.BENCH_CRYPTO_SECONDS ?? 2);
/** With a directory, every broker runs with `--cpu-prof` into a subdirectory of it per run, one `.cpuprofile` per thread (the main thread and the SQLite audit worker; see bench/profile.ts). */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
const STEPS = process.env.BENCH_STEPS !== '0';
/** Tokens a replay-off run cycles through: each is exchanged many times. */
const REUSED_TOKENS = 256;
/** A single-use pool is sized for this fraction of the hello-world rate (above the broker's target of half), plus a margin. */
const POOL_SIZING_RATIO = 0.75;
const CORES = availableParallelism();

interface Row {
  connections: number;
  server: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  statuses: Record<string, number>;
  /** Broker rows only. */
  ratio?: number;
  eventLoopP99Ms?: number;
  eventLoopMaxMs?: number;
  rssRestMiB?: number;
  rssLoadMiB?: number;
  /** CPU µs per answered request of the server process (all its threads), of the load generator, and the share of the machine busy. */
  serverCpuUs?: number;
  loadGenCpuUs?: number;
  machineBusy?: number;
}

function withCpu(r: Row, span: CpuSpan, result: autocannon.Result): Row {
  const answered = result.requests.total;
  const server = span.processSeconds[0];
  return {
    ...r,
    ...(server === undefined || answered === 0 ? {} : { serverCpuUs: (server / answered) * 1e6 }),
    ...(answered === 0 ? {} : { loadGenCpuUs: (span.selfSeconds / answered) * 1e6 }),
    ...(span.machineBusy === undefined ? {} : { machineBusy: span.machineBusy }),
  };
}

function row(connections: number, server: string, result: autocannon.Result): Row {
  const statuses: Record<string, number> = {};
  for (const [code, count] of Object.entries(result.statusCodeStats ?? {})) statuses[code] = count.count ?? 0;
  return {
    connections,
    server,
    requestsPerSecond: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    statuses,
  };
}

/**
 * One RS256 verification (a GitHub-shaped token, 2048-bit key) and one ES256
 * signature (a broker token, P-256) per iteration, synchronously on this
 * thread: the cryptography no exchange can skip. Exchanges/s one core could
 * do if an exchange were nothing else.
 */
function cryptoFloor(token: string): { opsPerSecond: number; microseconds: number } {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signingInput = Buffer.from(token.slice(0, token.lastIndexOf('.')));
  const signature = sign('sha256', signingInput, rsa.privateKey);
  const brokerInput = Buffer.from(signingInput.subarray(0, 600));
  const once = (publicKey: KeyObject, privateKey: KeyObject) => {
    if (!verify('sha256', signingInput, publicKey, signature)) throw new Error('RS256 verification failed');
    sign('sha256', brokerInput, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  };
  for (let i = 0; i < 200; i++) once(rsa.publicKey, ec.privateKey);
  let iterations = 0;
  const started = performance.now();
  while (performance.now() - started < CRYPTO_SECONDS * 1000) {
    for (let i = 0; i < 50; i++) once(rsa.publicKey, ec.privateKey);
    iterations += 50;
  }
  const seconds = (performance.now() - started) / 1000;
  return { opsPerSecond: iterations / seconds, microseconds: (seconds / iterations) * 1e6 };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-bench-'));
  const issuer = await startDevIssuer({ port: 0, alg: 'RS256', audience: AUDIENCE });
  const rows: Row[] = [];
  const notes: string[] = [];
  const startedAt = performance.now();
  const crypto: { opsPerSecond: number; microseconds: number }[] = [];
  try {
    await mkdir(path.join(dir, 'policies'));
    for (const provider of PROVIDERS) {
      for (const replay of REPLAY) await writeFile(path.join(dir, 'policies', `${provider}-replay-${replay}.yaml`), policyYaml(provider, replay));
    }
    await writeFile(path.join(dir, 'policies', 'deny-pull-request-target.yaml'), DENY_PULL_REQUEST_TARGET);
    const sts = await startChild(['--import', 'tsx', 'bench/sts-emulator.ts'], STS_ENV);
    await writeFile(path.join(dir, 'broker.yaml'), brokerConfig(issuer.url, sts.url));
    const hello = await startChild(['--import', 'tsx', 'bench/hello-server.ts']);

    const pool: string[] = [];
    await mintGithubActionsTokens(issuer, AUDIENCE, pool, REUSED_TOKENS);
    crypto.push(cryptoFloor(pool[0]!));

    let brokerRuns = 0;
    const helloRun = async (connections: number, warmup: boolean): Promise<Row> => {
      if (warmup) await exchangeLoad(hello.url, { connections, durationSeconds: WARMUP_SECONDS, policy: 'hello' });
      const cpu = await startCpuSpan([hello.child.pid]);
      const load = await exchangeLoad(hello.url, { connections, durationSeconds: SECONDS, policy: 'hello' });
      const result = withCpu(row(connections, 'hello-world express', load), await cpu.end(), load);
      rows.push(result);
      return result;
    };
    const brokerRun = async (connections: number, provider: Provider, replay: Replay, helloRate: number): Promise<Row> => {
      const policy = `${provider}-replay-${replay}`;
      if (replay === 'on') {
        const wanted = FIXED_TOKENS ?? Math.ceil(helloRate * POOL_SIZING_RATIO * (SECONDS + WARMUP_SECONDS) * 1.2) + 1000;
        if (wanted > pool.length) {
          const t = performance.now();
          await mintGithubActionsTokens(issuer, AUDIENCE, pool, wanted);
          process.stderr.write(`minted up to ${pool.length} tokens in ${Math.round(performance.now() - t)} ms\n`);
        }
      }
      const usable = replay === 'on' ? pool.length : REUSED_TOKENS;
      let next = 0;
      const nextRequest = () => ({ token: pool[next++ % usable]! });
      // A fresh deployment per run: empty audit log and replay memory, a new signing key.
      await rm(path.join(dir, 'data'), { recursive: true, force: true });
      brokerRuns++;
      const nodeArgs = CPU_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', path.join(CPU_PROF_DIR, `broker-${brokerRuns}-${policy}-c${connections}`)] : [];
      const broker = await startChild([...nodeArgs, 'bin/oidc-broker.js', 'serve', '--config', path.join(dir, 'broker.yaml')], brokerEnv(dir), {
        stdoutFile: path.join(dir, `broker-${brokerRuns}.log`),
      });
      try {
        const rssRestMiB = await rssMiB(broker.child.pid);
        await exchangeLoad(broker.url, { connections, durationSeconds: WARMUP_SECONDS, policy, next: nextRequest });
        await eventLoopDelay(broker.url);
        const rss = sampleRss(broker.child.pid);
        const cpu = await startCpuSpan([broker.child.pid]);
        const load = await exchangeLoad(broker.url, { connections, durationSeconds: SECONDS, policy, next: nextRequest });
        const result = withCpu(row(connections, `broker ${provider}, replay ${replay}`, load), await cpu.end(), load);
        const rssLoadMiB = await rss.stop();
        const delay = await eventLoopDelay(broker.url);
        if (replay === 'on' && next > usable) notes.push(`${result.server} at ${connections}: ${next - usable} requests reused a token (409s); raise BENCH_TOKENS`);
        const measured: Row = { ...result, rssRestMiB, rssLoadMiB, eventLoopP99Ms: delay?.p99Ms, eventLoopMaxMs: delay?.maxMs };
        rows.push(measured);
        return measured;
      } finally {
        await stop(broker.child);
      }
    };

    // Per connection count: hello, broker, hello, broker, ..., hello. Each
    // broker run's ratio is to the mean of the hello runs either side of it.
    for (const connections of CONNECTION_COUNTS) {
      let before = await helloRun(connections, true);
      for (const provider of PROVIDERS) {
        for (const replay of REPLAY) {
          const broker = await brokerRun(connections, provider, replay, before.requestsPerSecond);
          const after = await helloRun(connections, false);
          broker.ratio = broker.requestsPerSecond / ((before.requestsPerSecond + after.requestsPerSecond) / 2);
          before = after;
        }
      }
    }
    crypto.push(cryptoFloor(pool[0]!));
    await stop(hello.child);
    await stop(sts.child);
  } finally {
    await stopAll();
    await issuer.close();
    await rm(dir, { recursive: true, force: true });
  }

  const minutes = ((performance.now() - startedAt) / 60_000).toFixed(1);
  console.log(
    `\nLoad: autocannon in this process, ${SECONDS} s per run after ${WARMUP_SECONDS} s of warm-up, loopback; ${CORES} cores (${cpus()[0]?.model ?? 'unknown CPU'}),` +
      ` Node ${process.versions.node}, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' ')}; load generator, broker, STS emulator and hello-world on the same machine (${minutes} min).` +
      ` Tokens: GitHub Actions-shaped, 25 claims, RS256. "replay on": a fresh token per request; "off": ${REUSED_TOKENS} tokens reused (allow_token_reuse).` +
      ` ratio = exchanges/s ÷ the mean of the hello-world runs before and after it at the same connections.` +
      ` CPU µs/req: CPU time (all threads) per answered request of the server process and of this process (autocannon); machine busy: share of all cores busy during the run.`,
  );
  const fmt = (value: number | undefined, digits = 0) => (value === undefined || Number.isNaN(value) ? '' : value.toFixed(digits));
  console.table(
    rows.map((r) => ({
      conns: r.connections,
      server: r.server,
      'req/s': Math.round(r.requestsPerSecond),
      'p50 ms': r.p50Ms,
      'p99 ms': r.p99Ms,
      'non-2xx': r.non2xx,
      errors: r.errors,
      ratio: fmt(r.ratio, 3),
      'loop p99 ms': fmt(r.eventLoopP99Ms, 1),
      'loop max ms': fmt(r.eventLoopMaxMs, 1),
      'RSS rest MiB': fmt(r.rssRestMiB),
      'RSS load MiB': fmt(r.rssLoadMiB),
      'server CPU µs/req': fmt(r.serverCpuUs),
      'load gen CPU µs/req': fmt(r.loadGenCpuUs),
      'machine busy %': fmt(r.machineBusy === undefined ? undefined : r.machineBusy * 100),
    })),
  );
  for (const r of rows.filter((x) => Object.keys(x.statuses).some((code) => !code.startsWith('2')))) console.log(`status codes, ${r.server} at ${r.connections}: ${JSON.stringify(r.statuses)}`);
  for (const line of notes) console.log(`note: ${line}`);
  const [first, last] = crypto;
  if (first && last) {
    const best = Math.max(...rows.filter((r) => r.server.startsWith('broker jwt')).map((r) => r.requestsPerSecond), 0);
    console.log(
      `\nCryptography floor (one RS256 verification + one ES256 signature, node:crypto, synchronous, one thread): ${Math.round(first.opsPerSecond)} and ${Math.round(last.opsPerSecond)} ops/s` +
        ` (before and after the load runs; ${first.microseconds.toFixed(0)} and ${last.microseconds.toFixed(0)} µs each).` +
        ` An exchange that did nothing else would reach that many exchanges/s per core, ${Math.round(first.opsPerSecond * CORES)} on ${CORES} cores;` +
        ` the best broker jwt run, ${Math.round(best)} exchanges/s, is ${((best / first.opsPerSecond) * 100).toFixed(1)}% of one core's figure.`,
    );
  }

  if (STEPS) {
    console.log('\nIn-process cost of each exchange step (mean of many runs):');
    console.table(await stepCosts());
  }
}

await main();
