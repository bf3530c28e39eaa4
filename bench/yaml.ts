/**
 * YAML front end figures (docs/performance.md, "YAML parsing"): what one
 * policy file costs to parse with the `yaml` library alone, through the front
 * end (fast path, library fallback), and as a hit in a parse cache keyed by
 * the SHA-256 of the file's bytes; then what parsing a 10,000-file set costs
 * at start-up (a fresh process: cold JIT, nothing cached) with the library
 * alone and through the front end. Figures only; no thresholds.
 *
 *   node --import tsx bench/yaml.ts
 *
 * Start-up as a whole (read + parse + compile) is `bench/policies.ts`'s
 * "read+compile ms (start-up)" column. Env: BENCH_YAML_FILES (the set size,
 * default 10000), BENCH_YAML_RUNS (fresh processes per reader, default 3).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { YamlParseResult } from '../src/yaml/document.js';
import { parseYaml, parseYamlWithLibrary } from '../src/yaml/parse.js';
import { generate } from '../test/helpers/policy-corpus.js';

const FILES = Number(process.env.BENCH_YAML_FILES ?? 10_000);
const RUNS = Number(process.env.BENCH_YAML_RUNS ?? 3);
const READERS: Readonly<Record<string, (text: string) => YamlParseResult>> = { library: parseYamlWithLibrary, 'front end': parseYaml };

const round = (value: number, digits = 1): number => Math.round(value * 10 ** digits) / 10 ** digits;
const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;

/** µs per parse, round-robin over `texts`, after a warm-up. */
function perFile(texts: readonly Buffer[], parse: (bytes: Buffer) => unknown): number {
  const iterations = 5000;
  for (let i = 0; i < 1000; i++) parse(texts[i % texts.length]!);
  const started = performance.now();
  for (let i = 0; i < iterations; i++) parse(texts[i % texts.length]!);
  return ((performance.now() - started) * 1000) / iterations;
}

function perFileFigures(): object[] {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'policies');
  const sets = {
    'policies/ (shipped, commented)': readdirSync(dir)
      .filter((name) => name.endsWith('.yaml') && !name.endsWith('.test.yaml'))
      .map((name) => readFileSync(path.join(dir, name))),
    'generated (bench/policies.ts)': generate(100).map((f) => Buffer.from(f.text)),
  };
  return Object.entries(sets).map(([set, texts]) => {
    const cache = new Map<string, YamlParseResult>();
    const cached = (bytes: Buffer): YamlParseResult => {
      const key = createHash('sha256').update(bytes).digest('hex');
      let hit = cache.get(key);
      if (hit === undefined) cache.set(key, (hit = parseYamlWithLibrary(bytes.toString('utf8'))));
      return hit;
    };
    return {
      files: set,
      'mean bytes': Math.round(texts.reduce((sum, t) => sum + t.length, 0) / texts.length),
      'library µs': round(perFile(texts, (b) => parseYamlWithLibrary(b.toString('utf8')))),
      'front end µs': round(perFile(texts, (b) => parseYaml(b.toString('utf8')))),
      'library + sha256 cache hit µs': round(perFile(texts, cached)),
    };
  });
}

/** Child process mode (`--cold READER`): parses a fresh generated set once and prints the wall and CPU ms. */
function coldChild(reader: string): void {
  const parse = READERS[reader];
  if (parse === undefined) throw new Error(`unknown reader ${reader}`);
  const texts = generate(FILES).map((f) => f.text);
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  for (const text of texts) if (!parse(text).ok) throw new Error('a generated policy does not parse');
  const wall = performance.now() - started;
  const cpu = process.cpuUsage(cpuStart);
  process.stdout.write(`${JSON.stringify({ wall, cpu: (cpu.user + cpu.system) / 1000 })}\n`);
}

interface ColdRun {
  wall: number;
  cpu: number;
}

async function coldRun(reader: string): Promise<ColdRun> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--cold', reader], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`cold child for ${reader} exited with ${code}`);
  return JSON.parse(out) as ColdRun;
}

async function main(): Promise<void> {
  console.log('\nOne policy file, warm: µs per parse (mean over 5,000 parses)');
  console.table(perFileFigures());
  const rows: object[] = [];
  // Interleaved, so a burst of load on a shared machine skews one run, not one reader.
  const runs: Record<string, ColdRun[]> = Object.fromEntries(Object.keys(READERS).map((r) => [r, []]));
  for (let run = 0; run < RUNS; run++) for (const reader of Object.keys(READERS)) runs[reader]!.push(await coldRun(reader));
  for (const [reader, all] of Object.entries(runs)) {
    rows.push({
      reader,
      files: FILES,
      'parse ms (start-up, median)': round(median(all.map((r) => r.wall)), 0),
      'parse CPU ms (median)': round(median(all.map((r) => r.cpu)), 0),
      'wall ms of each run': all.map((r) => round(r.wall, 0)).join(', '),
    });
  }
  console.log(`\n${FILES} generated policy files parsed once in a fresh process (cold JIT), ${RUNS} runs each`);
  console.table(rows);
}

if (process.argv[2] === '--cold') coldChild(process.argv[3] ?? '');
else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
