/**
 * What the load benchmarks (run.ts, replicas.ts) share: start a Node child
 * that logs the `"msg":"listening"` line, stop it, and drive
 * `POST /v1/exchange` with autocannon, each request carrying a fresh token.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';

const running = new Set<ChildProcess>();

/** Starts `node ...args` and resolves with its URL once it logs that it listens. */
export async function startChild(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code} before listening`)));
    lines.on('line', (line) => {
      if (!line.includes('"msg":"listening"')) return;
      resolve((JSON.parse(line) as { url: string }).url);
    });
  });
  return { child, url };
}

/** SIGTERM, then waits for the exit; a child that already exited is left alone. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** Stops every child still running (a benchmark that failed half-way). */
export async function stopAll(): Promise<void> {
  for (const child of [...running]) await stop(child);
}

/** autocannon on `POST /v1/exchange` for `policy`; with `nextToken`, every request carries the next token. */
export function exchangeLoad(url: string, options: { connections: number; durationSeconds: number; policy: string; nextToken?: (() => string) | undefined }): Promise<autocannon.Result> {
  const { nextToken } = options;
  return autocannon({
    url,
    connections: options.connections,
    duration: options.durationSeconds,
    requests: [
      {
        method: 'POST',
        path: '/v1/exchange',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ policy: options.policy }),
        ...(nextToken ? { setupRequest: (req: autocannon.Request) => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${nextToken()}` } }) } : {}),
      },
    ],
  });
}
