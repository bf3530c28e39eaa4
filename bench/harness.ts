/**
 * What the load benchmarks (run.ts, soak.ts, replicas.ts) share: start a Node
 * child that logs the `"msg":"listening"` line, stop it, read its RSS and
 * event-loop delay, and drive `POST /v1/exchange` with autocannon, each
 * request carrying the next token.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';

const running = new Set<ChildProcess>();
const LISTENING_TIMEOUT_MS = 30_000;

function listeningUrl(line: string): string | undefined {
  if (!line.includes('"msg":"listening"')) return undefined;
  return (JSON.parse(line) as { url: string }).url;
}

/**
 * Starts `node ...args` and resolves with its URL once it logs that it listens.
 * With `stdoutFile`, its stdout (the broker's JSON log) goes to that file, as a
 * deployment's would go to a file or a collector, and the file is polled for
 * the line; otherwise it is piped to this process.
 */
export async function startChild(args: string[], env: NodeJS.ProcessEnv = {}, options: { stdoutFile?: string } = {}): Promise<{ child: ChildProcess; url: string }> {
  const fd = options.stdoutFile === undefined ? undefined : openSync(options.stdoutFile, 'a');
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', fd ?? 'pipe', 'inherit'] });
  if (fd !== undefined) closeSync(fd);
  running.add(child);
  child.once('exit', () => running.delete(child));
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code} before listening`))));
  exited.catch(() => undefined);
  const url = await Promise.race([exited, options.stdoutFile === undefined ? pipedUrl(child) : polledUrl(options.stdoutFile, child)]);
  return { child, url };
}

function pipedUrl(child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! });
  return new Promise((resolve) => {
    lines.on('line', (line) => {
      const url = listeningUrl(line);
      if (url !== undefined) resolve(url);
    });
  });
}

async function polledUrl(file: string, child: ChildProcess): Promise<string> {
  const deadline = Date.now() + LISTENING_TIMEOUT_MS;
  while (Date.now() < deadline && child.exitCode === null) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const url = listeningUrl(line);
      if (url !== undefined) return url;
    }
    await sleep(50);
  }
  throw new Error(`no "listening" line in ${file}`);
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

/** Resident set size of a process in MiB, from /proc (Linux); undefined elsewhere or once it has exited. */
export async function rssMiB(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const kib = status === undefined ? undefined : /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  return kib === undefined ? undefined : Math.round(Number(kib) / 102.4) / 10;
}

/** Samples a process's RSS every `everyMs` until stopped; gives the highest sample. */
export function sampleRss(pid: number | undefined, everyMs = 250): { stop: () => Promise<number | undefined> } {
  let highest: number | undefined;
  let running = true;
  const loop = (async () => {
    while (running) {
      const rss = await rssMiB(pid);
      if (rss !== undefined) highest = Math.max(highest ?? 0, rss);
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return highest;
    },
  };
}

/**
 * The broker's event-loop delay since the previous call, in ms, from its
 * `/metrics`: prom-client's default metrics sample `monitorEventLoopDelay`
 * (10 ms resolution) and reset the histogram on every scrape, so a scrape
 * before a load and one after it bracket that load.
 */
export async function eventLoopDelay(url: string): Promise<{ p99Ms: number; maxMs: number } | undefined> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) return undefined;
  const text = await res.text();
  const seconds = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const round = (s: number) => Math.round(s * 10_000) / 10;
  return { p99Ms: round(seconds('nodejs_eventloop_lag_p99_seconds')), maxMs: round(seconds('nodejs_eventloop_lag_max_seconds')) };
}

export interface ExchangeLoadOptions {
  connections: number;
  durationSeconds: number;
  policy: string;
  /** Each request carries the next token, and names the next policy if one is given (else `policy`); without it, no token (the hello-world baseline). */
  next?: (() => { token: string; policy?: string }) | undefined;
}

/** autocannon on `POST /v1/exchange`. */
export function exchangeLoad(url: string, options: ExchangeLoadOptions): Promise<autocannon.Result> {
  const { next } = options;
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
        ...(next
          ? {
              setupRequest: (req: autocannon.Request) => {
                const { token, policy } = next();
                return { ...req, ...(policy === undefined ? {} : { body: JSON.stringify({ policy }) }), headers: { ...req.headers, authorization: `Bearer ${token}` } };
              },
            }
          : {}),
      },
    ],
  });
}
