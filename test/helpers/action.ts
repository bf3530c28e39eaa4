// Running the committed GitHub Action bundles the way the runner does, and
// reading what they wrote (action/src/runner.ts describes the protocol).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const ACTION_DIST = path.resolve(import.meta.dirname, '..', '..', 'action', 'dist');

export interface StepResult {
  code: number | null;
  stdout: string;
  stderr: string;
  outputs: string;
  env: string;
  state: string;
}

let steps = 0;
/**
 * Runs `node action/dist/<bundle>` in `dir` with only `env` (plus PATH) and
 * fresh GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STATE files; `undefined` values
 * in `env` are left out.
 */
export async function runStep(bundle: 'index.js' | 'post.js', dir: string, env: Record<string, string | undefined>): Promise<StepResult> {
  steps++;
  const files = { GITHUB_OUTPUT: path.join(dir, `output-${steps}`), GITHUB_ENV: path.join(dir, `env-${steps}`), GITHUB_STATE: path.join(dir, `state-${steps}`) };
  for (const file of Object.values(files)) await writeFile(file, '');
  const childEnv: Record<string, string> = { PATH: process.env.PATH ?? '', ...files };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  const child = spawn(process.execPath, [path.join(ACTION_DIST, bundle)], { env: childEnv, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    code,
    stdout,
    stderr,
    outputs: await readFile(files.GITHUB_OUTPUT, 'utf8'),
    env: await readFile(files.GITHUB_ENV, 'utf8'),
    state: await readFile(files.GITHUB_STATE, 'utf8'),
  };
}

/** `INPUT_<NAME>` variables for the given inputs, as the runner sets them. */
export function inputsEnv(inputs: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(inputs).map(([name, value]) => [`INPUT_${name.toUpperCase()}`, value]));
}

/** `STATE_<name>` variables for the post step, from the main step's GITHUB_STATE file, as the runner hands them on. */
export function stateEnv(stateFile: string): Record<string, string> {
  return Object.fromEntries([...parseFileCommands(stateFile)].map(([name, value]) => [`STATE_${name}`, value]));
}

/** Parses `name<<DELIM\nvalue\nDELIM\n` blocks, checking each delimiter is random and closes its block. */
export function parseFileCommands(text: string): Map<string, string> {
  const result = new Map<string, string>();
  const lines = text.split('\n');
  const delimiters = new Set<string>();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line === '' && i === lines.length - 1) break;
    const match = /^([^<]+)<<(ghadelimiter_[0-9a-f-]{36})$/.exec(line);
    assert.ok(match, `not a heredoc header: ${line}`);
    const [, name, delimiter] = match;
    assert.ok(!delimiters.has(delimiter!), 'delimiters are random');
    delimiters.add(delimiter!);
    const end = lines.indexOf(delimiter!, i + 1);
    assert.ok(end > i, `unterminated block for ${name}`);
    result.set(name!, lines.slice(i + 1, end).join('\n'));
    i = end + 1;
  }
  return result;
}

/** Every secret is masked, and its mask comes before any other line that holds it. */
export function assertMaskedFirst(stdout: string, secrets: string[]): void {
  const lines = stdout.split('\n');
  for (const secret of secrets) {
    const mask = lines.indexOf(`::add-mask::${secret}`);
    assert.ok(mask >= 0, 'secret is masked');
    const firstUse = lines.findIndex((line) => line.includes(secret));
    assert.equal(firstUse, mask, 'the mask line is the first line holding the secret');
  }
}

export const errorLine = (stdout: string) => stdout.split('\n').find((line) => line.startsWith('::error::')) ?? '';
export const warningLine = (stdout: string) => stdout.split('\n').find((line) => line.startsWith('::warning::')) ?? '';
