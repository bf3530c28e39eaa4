// The CLI under test: in-process through runCli with streams and signals the test holds, or as a real process from bin/.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { runCli } from '../../src/cli/index.js';
import type { CliIo } from '../../src/cli/io.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** What the command reads as stdin (`-` arguments); empty by default. */
  stdin?: string;
  /** Which output streams claim to be terminals, and stdout's width. */
  tty?: { stdout?: boolean; stderr?: boolean; columns?: number };
  /** Variables added to (or, when undefined, removed from) this process's environment for the run. */
  env?: NodeJS.ProcessEnv;
}

/** Output of a run so far; `changes` emits 'output' whenever more arrives. */
export interface RunOutput {
  stdout(): string;
  stderr(): string;
  changes: EventEmitter;
  /** Settles when the run ends. */
  ended: Promise<unknown>;
}

/** A CLI run in progress in this process. */
export interface CliSession extends RunOutput {
  /** Raises a signal on the run (serve and dev issuer stop on SIGTERM/SIGINT; serve reloads on SIGHUP). */
  signal(name: NodeJS.Signals): void;
  done: Promise<CliRun>;
}

/** Collects two streams' text and announces each chunk. */
function collect(out: NodeJS.ReadableStream, err: NodeJS.ReadableStream, onStdout?: (text: string) => void): Omit<RunOutput, 'ended'> {
  const changes = new EventEmitter();
  let stdout = '';
  let stderr = '';
  out.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
    onStdout?.(stdout);
    changes.emit('output');
  });
  err.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
    changes.emit('output');
  });
  return { stdout: () => stdout, stderr: () => stderr, changes };
}

/** Starts `oidc-broker <args>` in-process; output is collected in memory. */
export function startCli(args: string[], options: CliOptions = {}): CliSession {
  const out = Object.assign(new PassThrough(), { isTTY: options.tty?.stdout === true, columns: options.tty?.columns ?? 80 });
  const err = Object.assign(new PassThrough(), { isTTY: options.tty?.stderr === true, columns: 80 });
  const output = collect(out, err);
  const signals = new EventEmitter();
  const stdin = new PassThrough();
  stdin.end(options.stdin ?? '');
  const env = Object.fromEntries(Object.entries({ ...process.env, ...options.env }).filter(([, value]) => value !== undefined));
  const io: CliIo = { stdout: out, stderr: err, stdin, signals, env };
  const done = runCli(['node', 'oidc-broker', ...args], io).then(async (code) => {
    // A PassThrough may hand the last chunks on in a later tick.
    await new Promise((resolve) => setImmediate(resolve));
    return { code, stdout: output.stdout(), stderr: output.stderr() };
  });
  return { ...output, ended: done, signal: (name) => signals.emit(name, name), done };
}

/** Runs `oidc-broker <args>` in-process to its end. */
export function cli(args: string[], options: CliOptions = {}): Promise<CliRun> {
  return startCli(args, options).done;
}

/** A real `bin/oidc-broker.js` process (the built CLI: `npm test` builds first). */
export interface CliProcess extends RunOutput {
  child: ChildProcess;
  exited: Promise<number | null>;
}

/**
 * Spawns `bin/oidc-broker.js <args>`, for what only a real process shows:
 * exit codes set by the bin, OS signals, closed pipes. BROKER_CONFIG is
 * cleared so the caller's environment cannot pick the config.
 */
export function spawnCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; closeStdoutAfterBytes?: number } = {}): CliProcess {
  const child = spawn(process.execPath, [path.join(REPO, 'bin', 'oidc-broker.js'), ...args], {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, BROKER_CONFIG: '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = collect(child.stdout, child.stderr, (stdout) => {
    if (options.closeStdoutAfterBytes !== undefined && stdout.length >= options.closeStdoutAfterBytes) child.stdout.destroy();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  return { ...output, child, exited, ended: exited };
}

/** Runs `bin/oidc-broker.js <args>` to its end. */
export async function cliProcess(args: string[], options: Parameters<typeof spawnCli>[1] = {}): Promise<CliRun> {
  const run = spawnCli(args, options);
  const code = await run.exited;
  return { code: code ?? -1, stdout: run.stdout(), stderr: run.stderr() };
}

/** Resolves with the first non-undefined `match(stdout)`, checked as output arrives; rejects with the output if the run ends first. */
export function waitForOutput<T>(run: RunOutput, match: (stdout: string) => T | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const check = () => {
      const found = match(run.stdout());
      if (found === undefined) return false;
      run.changes.off('output', check);
      resolve(found);
      return true;
    };
    if (check()) return;
    run.changes.on('output', check);
    const onEnd = () => {
      if (check()) return;
      run.changes.off('output', check);
      reject(new Error(`ended before the expected output; stdout:\n${run.stdout()}\nstderr:\n${run.stderr()}`));
    };
    run.ended.then(onEnd, onEnd);
  });
}

/** The first complete stdout JSON log line whose msg is `msg`, parsed. */
export function logLine(msg: string): (stdout: string) => Record<string, unknown> | undefined {
  return (stdout) => {
    const line = stdout.split('\n').slice(0, -1).find((l) => l.includes(`"msg":${JSON.stringify(msg)}`));
    return line === undefined ? undefined : (JSON.parse(line) as Record<string, unknown>);
  };
}

/**
 * A `serve` config on port 0 trusting GitHub's issuer (no token is ever
 * exchanged against it), with SQLite audit under ./data and the signing key
 * at `signingKeyFile` (relative to the config file).
 */
export function githubServeConfig(signingKeyFile: string): string {
  return `server:
  host: 127.0.0.1
  port: 0
issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audiences: [https://broker.example.com]
policies:
  dir: ./policies
audit:
  url: sqlite:./data/audit.db
providers:
  jwt:
    signing_key_file: ${signingKeyFile}
`;
}
