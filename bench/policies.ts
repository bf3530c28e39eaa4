/**
 * Policy set scale figures (issue "Scale"): how long a directory of N policy
 * files takes to read and compile, and how long one decision takes as N grows,
 * with N = 1 as the baseline in the same run. Figures only; no thresholds.
 *
 *   node --import tsx bench/policies.ts
 *
 * The generated set is GitHub Actions-like: ~90% allow policies with 4-6
 * conditions (ids, repository, a ref list, a glob on job_workflow_ref, a regex
 * on sub, a `${claim}` jwt grant), ~10% deny policies, most pinning a
 * repository, an owner id, an event or actors (some with a second, non-equality
 * condition), plus four org-wide deny rules with no equality condition at all
 * (globs, regexes, a JSON Pointer), which every decision has to evaluate
 * whatever N is (from N = 100 on, when the set has them all). Patterns repeat
 * as they would: the job_workflow_ref glob is one per owner (50 in all), half
 * the allow policies share one ref regex, and the other half each have their
 * own sub regex (4,500 distinct regexes at N = 10,000: most of the compile time).
 *
 * Each compile size runs in a fresh process: "start-up" is its first compile
 * (cold JIT, nothing cached), "later" the median of the next runs, each after a
 * full GC so no RE2 program of the previous set is reused, and "reload" one
 * more compile while the previous set is still alive (as during a hot reload,
 * which then shares the RE2 programs of unchanged patterns).
 *
 * Env: BENCH_POLICY_SIZES (compile sizes, default 1,100,1000,10000),
 * BENCH_DECISION_SIZES (default 1,10,100,1000,10000), BENCH_DECISION_MS
 * (time spent per decision figure, default 500).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { performance } from 'node:perf_hooks';
import { defaultTenantClaims } from '../src/oidc/issuer-defaults.js';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy, type EvaluateOptions, type EvaluationToken } from '../src/policy/evaluate.js';
import { loadPolicyDir } from '../src/policy/load.js';
import type { CompileContext, PolicySet } from '../src/policy/types.js';
import { generate } from '../test/helpers/policy-corpus.js';

const sizes = (env: string | undefined, fallback: number[]): number[] => (env ? env.split(',').map(Number) : fallback);
const COMPILE_SIZES = sizes(process.env.BENCH_POLICY_SIZES, [1, 100, 1000, 10_000]);
const DECISION_SIZES = sizes(process.env.BENCH_DECISION_SIZES, [1, 10, 100, 1000, 10_000]);
const DECISION_MS = Number(process.env.BENCH_DECISION_MS ?? 500);

const AUDIENCE = 'http://127.0.0.1:8080';
/** Like the development defaults: issuers `local` and `github`, the broker's URL as audience, jwt only. */
const CTX: CompileContext = {
  issuers: new Map([
    ['local', { audiences: [AUDIENCE], tenantClaims: [] }],
    ['github', { audiences: [AUDIENCE], tenantClaims: defaultTenantClaims('https://token.actions.githubusercontent.com') }],
  ]),
  providers: new Set(['jwt']),
};

/** A GitHub Actions ID token's claims for a production deploy of org0/svc-0 (allowed by deploy-00000). */
const CLAIMS: Readonly<Record<string, unknown>> = Object.freeze({
  jti: 'b1c0e7c4-2a0f-4a38-9d6c-1f3b1f0d7c11',
  sub: 'repo:org0/svc-0:environment:production',
  aud: AUDIENCE,
  ref: 'refs/heads/main',
  sha: 'a3f1c2d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1b',
  repository: 'org0/svc-0',
  repository_owner: 'org0',
  repository_owner_id: '100000',
  repository_visibility: 'private',
  repository_id: '5000000',
  actor_id: '583231',
  actor: 'octocat',
  workflow: 'deploy',
  head_ref: '',
  base_ref: '',
  event_name: 'push',
  ref_protected: 'true',
  ref_type: 'branch',
  workflow_ref: 'org0/svc-0/.github/workflows/release.yml@refs/heads/main',
  workflow_sha: 'a3f1c2d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1b',
  job_workflow_ref: 'org0/workflows/.github/workflows/deploy.yml@refs/tags/v1.4.0',
  job_workflow_sha: '0c1d2e3f4a5b6c7d8e9f0a1ba3f1c2d4e5b6a798',
  runner_environment: 'github-hosted',
  environment: 'production',
  run_id: '9876543210',
  run_number: '42',
  run_attempt: '1',
  iss: 'https://token.actions.githubusercontent.com',
  nbf: 1_760_000_000,
  exp: 1_760_000_600,
  iat: 1_760_000_000,
});

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const round = (value: number, digits = 1): number => Math.round(value * 10 ** digits) / 10 ** digits;

async function writeSet(root: string, n: number): Promise<string> {
  const dir = path.join(root, `n${n}`);
  await mkdir(dir);
  for (const file of generate(n)) await writeFile(path.join(dir, file.name), file.text);
  return dir;
}

interface CompileRun {
  readMs: number;
  compileMs: number;
  compileCpuMs: number;
  /** Heap the compiled set holds, after a full GC (first run only). */
  setMb: number | undefined;
  /** Compiled while the previous set of the same files was alive (the last line). */
  reload?: boolean;
}

/**
 * Child process mode (`--compile-child DIR RUNS`): reads and compiles DIR
 * RUNS times in a fresh process, so run 1 is what start-up pays (cold JIT,
 * no RE2 program shared from an earlier set), with a full GC between runs so
 * later runs do not reuse the previous set's programs either. Prints one JSON
 * line per run.
 */
async function compileChild(dir: string, runs: number): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const fullGc = async (): Promise<void> => {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20)); // let weak references and finalizers settle
    gc();
  };
  // One function call per run, so nothing of a finished run (its set, its RE2 programs) stays reachable.
  const runOnce = async (first: boolean): Promise<CompileRun> => {
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    const files = await loadPolicyDir(dir);
    const read = performance.now();
    const cpuStart = process.cpuUsage();
    const result = compilePolicies(files, CTX);
    const compiled = performance.now();
    const cpu = process.cpuUsage(cpuStart);
    if (!result.ok) throw new Error(`generated policies do not compile: ${JSON.stringify(result.issues.slice(0, 3))}`);
    if (result.set.size !== files.length) throw new Error(`expected ${files.length} policies, got ${result.set.size}`);
    let setMb: number | undefined;
    if (first) {
      await fullGc();
      setMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6;
      if (result.set.size === 0) throw new Error('unreachable: keeps the set alive through the GC');
    }
    return { readMs: read - started, compileMs: compiled - read, compileCpuMs: (cpu.user + cpu.system) / 1000, setMb };
  };
  for (let run = 0; run < runs; run++) {
    await fullGc();
    process.stdout.write(`${JSON.stringify(await runOnce(run === 0))}\n`);
  }
  // A reload: the serving set is alive while the new one compiles, so its RE2 programs are shared.
  await fullGc();
  const serving = compilePolicies(await loadPolicyDir(dir), CTX);
  const reload = await runOnce(false);
  if (!serving.ok) throw new Error('unreachable: the same files compiled before');
  process.stdout.write(`${JSON.stringify({ ...reload, reload: true })}\n`);
}

async function compileRuns(dir: string, runs: number): Promise<CompileRun[]> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--compile-child', dir, String(runs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`compile child for ${dir} exited with ${code}`);
  return out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as CompileRun);
}

async function compileFigures(root: string): Promise<object[]> {
  const rows: object[] = [];
  for (const n of COMPILE_SIZES) {
    const dir = await writeSet(root, n);
    const runs = n >= 10_000 ? 4 : n >= 1000 ? 5 : 7;
    const all = await compileRuns(dir, runs);
    const reload = all.find((r) => r.reload === true);
    const results = all.filter((r) => r.reload !== true);
    const [cold, ...warm] = results;
    rows.push({
      policies: n,
      'read ms': round(median(results.map((r) => r.readMs))),
      'compile ms (start-up)': round(cold!.compileMs),
      'compile ms (later)': round(median(warm.map((r) => r.compileMs))),
      'compile CPU ms (later)': round(median(warm.map((r) => r.compileCpuMs))),
      'read+compile ms (start-up)': round(cold!.readMs + cold!.compileMs),
      'µs/policy (later)': round((median(warm.map((r) => r.compileMs)) * 1000) / n),
      'reload compile ms': round(reload?.compileMs ?? Number.NaN),
      'set heap MB': round(cold!.setMb ?? Number.NaN),
    });
  }
  return rows;
}

/** µs per `lookupPolicy` + `evaluate` over about `ms` of repeated decisions: wall clock, and this process's CPU time. */
function timeDecision(set: PolicySet, policyName: string, token: EvaluationToken, ms: number, options: EvaluateOptions = {}): { wall: number; cpu: number } {
  const once = () => evaluate(set, lookupPolicy(set, policyName), token, options);
  for (let i = 0; i < 200; i++) once();
  let iterations = 0;
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  let elapsed = 0;
  while (elapsed < ms) {
    for (let i = 0; i < 200; i++) once();
    iterations += 200;
    elapsed = performance.now() - started;
  }
  const cpu = process.cpuUsage(cpuStart);
  return { wall: (elapsed * 1000) / iterations, cpu: (cpu.user + cpu.system) / iterations };
}

/**
 * Rounds interleave the sizes and each figure is the median of its rounds, so
 * a burst of load on a shared machine skews one round, not one size.
 */
const ROUNDS = 5;

function decisionFigures(): object[] {
  const allowedToken: EvaluationToken = { issuerName: 'github', claims: CLAIMS, audiences: [AUDIENCE] };
  const deniedToken: EvaluationToken = { ...allowedToken, claims: { ...CLAIMS, event_name: 'pull_request_target' } };
  const cases = DECISION_SIZES.map((n) => {
    const result = compilePolicies(
      generate(n).map((f) => ({ path: f.name, text: f.text })),
      CTX,
    );
    if (!result.ok) throw new Error(`generated policies do not compile: ${JSON.stringify(result.issues.slice(0, 3))}`);
    const set = result.set;
    const allowed = evaluate(set, lookupPolicy(set, 'deploy-00000'), allowedToken);
    if (!allowed.allowed) throw new Error(`N=${n}: the bench token should be allowed: ${allowed.message}`);
    const hasDenyForToken = set.byName.has('deny-00001');
    if (hasDenyForToken && evaluate(set, lookupPolicy(set, 'deploy-00000'), deniedToken).reason !== 'denied_by_policy') {
      throw new Error(`N=${n}: the pull_request_target token should be denied`);
    }
    return {
      n,
      set,
      evaluated: allowed.evaluations.length - 1,
      hasDenyForToken,
      allowed: [] as { wall: number; cpu: number }[],
      denied: [] as { wall: number; cpu: number }[],
      explain: [] as { wall: number; cpu: number }[],
    };
  });
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of cases) {
      c.allowed.push(timeDecision(c.set, 'deploy-00000', allowedToken, DECISION_MS / ROUNDS));
      if (c.hasDenyForToken) c.denied.push(timeDecision(c.set, 'deploy-00000', deniedToken, DECISION_MS / ROUNDS));
      c.explain.push(timeDecision(c.set, 'deploy-00000', allowedToken, DECISION_MS / ROUNDS / 2, { allDenyPolicies: true }));
    }
  }
  const baseline = median(cases[0]!.allowed.map((t) => t.cpu));
  return cases.map((c) => {
    const cpu = median(c.allowed.map((t) => t.cpu));
    return {
      policies: c.n,
      'deny policies': c.set.denyByIssuer.get('github')?.length ?? 0,
      'deny evaluated': c.evaluated,
      'allowed µs (CPU)': round(cpu, 2),
      'allowed µs (wall)': round(median(c.allowed.map((t) => t.wall)), 2),
      'CPU vs N=1': `${round(cpu / baseline, 2)}x`,
      'denied µs (CPU)': c.hasDenyForToken ? round(median(c.denied.map((t) => t.cpu)), 2) : '-',
      'every deny policy (offline policy explain) µs (CPU)': round(median(c.explain.map((t) => t.cpu)), 2),
    };
  });
}

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-policies-'));
  try {
    console.log(
      '\nPolicy directory load, each size in a fresh process: read (readdir + stat + readFile + UTF-8 decode, median) and compile; start-up = the first compile (cold JIT), later = median of the next runs (full GC between runs), reload = compiled while the previous set is alive',
    );
    console.table(await compileFigures(root));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  console.log(`\nDecision: lookupPolicy + evaluate, GitHub Actions claim set (${Object.keys(CLAIMS).length} claims), µs per decision, median of ${ROUNDS} interleaved rounds (${DECISION_MS} ms per size in all); N=1 is the baseline`);
  console.table(decisionFigures());
}

if (process.argv[2] === '--compile-child') await compileChild(process.argv[3] ?? '', Number(process.argv[4] ?? 1));
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
