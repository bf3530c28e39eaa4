// The real CLI process: start-up on defaults and on a config, refusals at start, SIGTERM.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(REPO, 'bin', 'oidc-broker.js');

interface Running {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Running {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, BROKER_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => lines.push(line));
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines, stderr: () => stderr, exited };
}

async function waitForLine(running: Running, match: (line: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = running.lines.find(match);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no matching line; stdout:\n${running.lines.join('\n')}\nstderr:\n${running.stderr()}`);
    if (running.child.exitCode !== null) throw new Error(`exited ${running.child.exitCode}; stderr:\n${running.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function rawRequest(url: string, options: http.RequestOptions = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, options, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

describe('oidc-broker serve', () => {
  test('on the built-in defaults: example policies, SQLite audit, a generated 0600 signing key; SIGTERM exits 0', async () => {
    const cwd = path.join(dir, 'defaults');
    await mkdir(cwd);
    await cp(path.join(REPO, 'policies'), path.join(cwd, 'policies'), { recursive: true });
    const broker = run(['serve'], cwd, { PORT: '0' });
    const listening = JSON.parse(await waitForLine(broker, (l) => l.includes('"msg":"listening"'))) as { url: string };
    assert.match(listening.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(broker.lines.some((l) => l.includes('created a new broker signing key')), 'says it created the key');
    const keyMode = (await stat(path.join(cwd, 'data', 'signing-key.jwk'))).mode & 0o777;
    assert.equal(keyMode, 0o600);
    assert.equal((await stat(path.join(cwd, 'data', 'audit.db'))).isFile(), true);
    assert.equal((await rawRequest(`${listening.url}/healthz`)).status, 200);
    const ready = await rawRequest(`${listening.url}/readyz`);
    assert.equal(ready.status, 200, ready.body);

    // Headers past the cap are refused before any route runs, with the contract's code.
    const big = await rawRequest(`${listening.url}/healthz`, { headers: { 'x-padding': 'x'.repeat(20_000) } });
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.body).error, 'request_too_large');

    broker.child.kill('SIGTERM');
    assert.equal(await broker.exited, 0);
    assert.ok(broker.lines.some((l) => l.includes('"msg":"stopped"')));
    for (const line of broker.lines) assert.doesNotThrow(() => JSON.parse(line), `log lines are JSON: ${line}`);
  });

  test('SIGTERM lets an in-flight request finish before exiting', async () => {
    const cwd = path.join(dir, 'inflight');
    await mkdir(cwd);
    await cp(path.join(REPO, 'policies'), path.join(cwd, 'policies'), { recursive: true });
    const broker = run(['serve'], cwd, { PORT: '0' });
    const { url } = JSON.parse(await waitForLine(broker, (l) => l.includes('"msg":"listening"'))) as { url: string };
    // A request whose body is still arriving when SIGTERM lands must still be answered.
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${url}/v1/exchange`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength('{"policy":"local-dev"}')) } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.write('{"policy":');
      setTimeout(() => {
        broker.child.kill('SIGTERM');
        setTimeout(() => req.end('"local-dev"}'), 300);
      }, 200);
    });
    const res = await answered;
    assert.equal(res.status, 401, res.body);
    assert.equal(JSON.parse(res.body).error, 'invalid_token');
    assert.equal(await broker.exited, 0);
  });

  test('a bad config refuses to start and names the file, line and key', async () => {
    const cwd = path.join(dir, 'badconfig');
    await mkdir(cwd);
    await writeFile(path.join(cwd, 'broker.yaml'), 'server:\n  port: 8080\n  hots: 0.0.0.0\n');
    const broker = run(['serve'], cwd);
    assert.equal(await broker.exited, 1);
    assert.match(broker.stderr(), /broker\.yaml:3: server: unknown key 'hots'/);
  });

  test('a policy directory that does not compile refuses to start, with file:line errors', async () => {
    const cwd = path.join(dir, 'badpolicy');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    await writeFile(path.join(cwd, 'policies', 'broken.yaml'), 'issuer: local\nclaims:\n  ref: { regex: "(a)\\\\1" }\ngrant:\n  provider: jwt\n  audience: x\n');
    const broker = run(['serve', '--config', path.join(cwd, 'missing.yaml')], cwd);
    assert.equal(await broker.exited, 1);
    assert.match(broker.stderr(), /missing\.yaml: cannot read the config file/);

    const again = run(['serve'], cwd, { PORT: '0' });
    assert.equal(await again.exited, 1);
    assert.match(again.stderr(), /broken\.yaml:3: claims\.ref/);
  });
});

describe('oidc-broker policy validate and keys generate', () => {
  test('validate passes the shipped policies and fails a broken directory with exit 1', async () => {
    const ok = run(['policy', 'validate', path.join(REPO, 'policies')], REPO);
    assert.equal(await ok.exited, 0, ok.stderr());
    const cwd = path.join(dir, 'validate');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    await writeFile(path.join(cwd, 'policies', 'typo.yaml'), 'issuer: local\nallow-token-reuse: true\nclaims:\n  ref: main\ngrant:\n  provider: jwt\n  audience: x\n');
    const bad = run(['policy', 'validate', 'policies'], cwd);
    assert.equal(await bad.exited, 1);
    assert.match(bad.stderr(), /typo\.yaml:2/);
    assert.match(bad.stderr(), /allow_token_reuse/);
  });

  test('keys generate writes a 0600 private JWK and never overwrites', async () => {
    const out = path.join(dir, 'new-key.jwk');
    const first = run(['keys', 'generate', '--out', out], dir);
    assert.equal(await first.exited, 0, first.stderr());
    assert.equal((await stat(out)).mode & 0o777, 0o600);
    const second = run(['keys', 'generate', '--out', out], dir);
    assert.equal(await second.exited, 1);
    assert.match(second.stderr(), /already exists/);
  });
});
