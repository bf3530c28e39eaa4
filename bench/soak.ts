/**
 * `npm run bench:soak`: one broker (production settings, bench/deployment.ts)
 * under full load for BENCH_SOAK_SECONDS (default 300), `jwt` grants of
 * single-use GitHub Actions-shaped tokens; prints its RSS at rest, after the
 * first minute, at the end and after the load, the end / first-minute ratio,
 * the event-loop delay, V8 heap (used and committed) and replay entries
 * (broker_replay_entries) of each sample. Figures only; no thresholds.
 *
 * Every request is a first exchange of its (token, policy) pair, so every one
 * adds a replay entry as a fresh token would: tokens are minted once (RSA
 * signing at the broker's rate would take a core from it) and each is
 * exchanged once under each of SOAK_POLICIES identical policies.
 */
import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDevIssuer } from '../src/dev/issuer.js';
import { AUDIENCE, brokerConfig, brokerEnv, DENY_PULL_REQUEST_TARGET, policyYaml, STS_ENV } from './deployment.js';
import { eventLoopDelay, exchangeLoad, rssMiB, startChild, stop, stopAll } from './harness.js';
import { mintGithubActionsTokens, REPOSITORIES } from './tokens.js';

const SECONDS = Number(process.env.BENCH_SOAK_SECONDS ?? 300);
const CONNECTIONS = Number(process.env.BENCH_SOAK_CONNECTIONS ?? 50);
const TOKENS = Number(process.env.BENCH_SOAK_TOKENS ?? 20_000);
const SOAK_POLICIES = 40;
/** RSS is compared with its value after this long under load (the issue's "first minute"), or a fifth of a shorter soak. */
const FIRST_MARK_SECONDS = Math.min(60, SECONDS / 5);
const SAMPLE_EVERY_SECONDS = Math.min(60, Math.max(5, SECONDS / 10));
/** RSS is read again this long after the load: V8 gives back unused heap only once allocation has been quiet for a while. */
const IDLE_MARKS_SECONDS = [10, 30];

const policyName = (i: number) => `soak-${String(i).padStart(2, '0')}`;

/** The broker's own memory figures from /metrics, in MiB, and its replay entries. */
async function memoryGauges(url: string): Promise<{ heapUsedMiB: number; heapTotalMiB: number; externalMiB: number; replayEntries: number } | undefined> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) return undefined;
  const text = await res.text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const mib = (name: string) => Math.round(value(name) / 104_857.6) / 10;
  return {
    heapUsedMiB: mib('nodejs_heap_size_used_bytes'),
    heapTotalMiB: mib('nodejs_heap_size_total_bytes'),
    externalMiB: mib('nodejs_external_memory_bytes'),
    replayEntries: value('broker_replay_entries'),
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-soak-'));
  const issuer = await startDevIssuer({ port: 0, alg: 'RS256', audience: AUDIENCE });
  try {
    await mkdir(path.join(dir, 'policies'));
    for (let i = 0; i < SOAK_POLICIES; i++) await writeFile(path.join(dir, 'policies', `${policyName(i)}.yaml`), policyYaml('jwt', 'on'));
    await writeFile(path.join(dir, 'policies', 'deny-pull-request-target.yaml'), DENY_PULL_REQUEST_TARGET);
    const sts = await startChild(['--import', 'tsx', 'bench/sts-emulator.ts'], STS_ENV);
    await writeFile(path.join(dir, 'broker.yaml'), brokerConfig(issuer.url, sts.url));
    process.stderr.write(`minting ${TOKENS} tokens...\n`);
    const pool: string[] = [];
    await mintGithubActionsTokens(issuer, AUDIENCE, pool, TOKENS);

    const broker = await startChild(['bin/oidc-broker.js', 'serve', '--config', path.join(dir, 'broker.yaml')], brokerEnv(dir), { stdoutFile: path.join(dir, 'broker.log') });
    const pid = broker.child.pid;
    const rssRest = await rssMiB(pid);
    // Request k: token k mod TOKENS under policy floor(k / TOKENS), so no pair repeats before TOKENS × SOAK_POLICIES requests.
    let sent = 0;
    const next = () => {
      const k = sent++;
      return { token: pool[k % TOKENS]!, policy: policyName(Math.floor(k / TOKENS) % SOAK_POLICIES) };
    };

    await eventLoopDelay(broker.url);
    const startedAt = Date.now();
    // autocannon's result is a thenable, not a Promise: wrap it to attach more than one reaction.
    const load = Promise.resolve(exchangeLoad(broker.url, { connections: CONNECTIONS, durationSeconds: SECONDS, policy: policyName(0), next }));
    const samples: {
      seconds: number;
      rssMiB: number | undefined;
      sent: number;
      loopP99Ms: number | undefined;
      loopMaxMs: number | undefined;
      memory: Awaited<ReturnType<typeof memoryGauges>>;
    }[] = [];
    let firstMark: { rssMiB: number | undefined; sent: number } | undefined;
    let finished = false;
    void load.finally(() => {
      finished = true;
    });
    let nextSample = SAMPLE_EVERY_SECONDS;
    while (!finished) {
      await sleep(1000);
      const seconds = (Date.now() - startedAt) / 1000;
      if (firstMark === undefined && seconds >= FIRST_MARK_SECONDS) firstMark = { rssMiB: await rssMiB(pid), sent };
      if (seconds >= nextSample && !finished) {
        const delay = await eventLoopDelay(broker.url);
        samples.push({ seconds: Math.round(seconds), rssMiB: await rssMiB(pid), sent, loopP99Ms: delay?.p99Ms, loopMaxMs: delay?.maxMs, memory: await memoryGauges(broker.url) });
        nextSample += SAMPLE_EVERY_SECONDS;
      }
    }
    const result = await load;
    const rssEnd = await rssMiB(pid);
    const memoryEnd = await memoryGauges(broker.url);
    const idle: { seconds: number; rssMiB: number | undefined; heapTotalMiB: number | undefined }[] = [];
    for (const seconds of IDLE_MARKS_SECONDS) {
      await sleep((seconds - (idle.at(-1)?.seconds ?? 0)) * 1000);
      idle.push({ seconds, rssMiB: await rssMiB(pid), heapTotalMiB: (await memoryGauges(broker.url))?.heapTotalMiB });
    }
    const auditBytes = (await stat(path.join(dir, 'data', 'audit.db'))).size;
    await stop(broker.child);
    await stop(sts.child);

    const statuses = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, count]) => [code, count.count ?? 0]));
    const issued = result['2xx'];
    console.log(
      `\nSoak: ${SECONDS} s at ${CONNECTIONS} connections, jwt grants of single-use GitHub Actions-shaped RS256 tokens, SQLite audit, JSON log at info to a file;` +
        ` ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.versions.node}, load generator on the same machine.`,
    );
    console.log(`exchanges/s ${Math.round(issued / result.duration)}, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, status codes ${JSON.stringify(statuses)}, errors ${result.errors + result.timeouts}`);
    console.table(
      samples.map((s) => ({
        's under load': s.seconds,
        'RSS MiB': s.rssMiB,
        'heap used MiB': s.memory?.heapUsedMiB,
        'heap committed MiB': s.memory?.heapTotalMiB,
        'RSS - heap committed MiB': s.rssMiB !== undefined && s.memory ? Math.round(s.rssMiB - s.memory.heapTotalMiB) : undefined,
        'replay entries': s.memory?.replayEntries,
        'requests sent': s.sent,
        'loop p99 ms (this interval)': s.loopP99Ms,
        'loop max ms': s.loopMaxMs,
      })),
    );
    const ratio = firstMark?.rssMiB && rssEnd ? rssEnd / firstMark.rssMiB : undefined;
    console.log(`RSS at rest ${rssRest} MiB; after ${FIRST_MARK_SECONDS} s ${firstMark?.rssMiB} MiB; at the end ${rssEnd} MiB; ${idle.map((i) => `${i.seconds} s after the load ${i.rssMiB} MiB (heap committed ${i.heapTotalMiB})`).join(', ')}; end / first mark = ${ratio?.toFixed(3) ?? 'n/a'}`);
    if (firstMark?.rssMiB && rssEnd && sent > firstMark.sent) {
      console.log(`RSS growth after the first mark: ${Math.round(((rssEnd - firstMark.rssMiB) * 1024 * 1024) / (sent - firstMark.sent))} bytes per request sent`);
    }
    console.log(
      `At the end: heap used ${memoryEnd?.heapUsedMiB} MiB, committed ${memoryEnd?.heapTotalMiB} MiB, external ${memoryEnd?.externalMiB} MiB;` +
        ` replay store (memory:) ${memoryEnd?.replayEntries} entries for ${issued} issued exchanges (each lives until its token's exp, 1 h here, plus 5 min);` +
        ` rate-limit keys (not exposed, each expires a minute after its first request): ${REPOSITORIES} subjects (exchanges_per_subject) and 1 address (refused_per_ip, none refused);` +
        ` audit database ${(auditBytes / 1024 / 1024).toFixed(1)} MiB on disk.`,
    );
  } finally {
    await stopAll();
    await issuer.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
