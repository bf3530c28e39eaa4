// oidc-broker serve as a real process (bin/oidc-broker.js): start-up on the defaults, OS signals, refusals at start and their exit code.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openAuditStore } from '../src/audit/open.js';
import { startDevIssuer } from '../src/dev/issuer.js';
import { startStsEmulator, type StsEmulator } from './emulators/index.js';
import { githubServeConfig, logLine, REPO, spawnCli, waitForOutput } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

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

/** Resolves once STS has received an AssumeRole call (it is then holding it). */
async function waitForStsCall(sts: StsEmulator): Promise<void> {
  while (sts.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

// Each test has its own directory and process: they run side by side.
describe('oidc-broker serve', { concurrency: true }, () => {
  test('on the built-in defaults: example policies, SQLite audit, a generated 0600 signing key; SIGTERM exits 0', async () => {
    const cwd = path.join(dir, 'defaults');
    await mkdir(cwd);
    await cp(path.join(REPO, 'policies'), path.join(cwd, 'policies'), { recursive: true });
    const broker = spawnCli(['serve'], { cwd, env: { PORT: '0' } });
    const listening = (await waitForOutput(broker, logLine('listening'))) as { url: string };
    assert.match(listening.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(logLine('created a new broker signing key')(broker.stdout()), 'says it created the key');
    const keyMode = (await stat(path.join(cwd, 'data', 'signing-key.jwk'))).mode & 0o777;
    assert.equal(keyMode, 0o600);
    assert.equal((await stat(path.join(cwd, 'data', 'audit.db'))).isFile(), true);
    assert.equal((await rawRequest(`${listening.url}/healthz`)).status, 200);
    const ready = await rawRequest(`${listening.url}/readyz`);
    assert.equal(ready.status, 200, ready.body);

    // Headers past the cap are refused before any route runs, with the documented code.
    const big = await rawRequest(`${listening.url}/healthz`, { headers: { 'x-padding': 'x'.repeat(20_000) } });
    assert.equal(big.status, 413);
    assert.equal((JSON.parse(big.body) as { error: string }).error, 'request_too_large');

    broker.child.kill('SIGTERM');
    assert.equal(await broker.exited, 0);
    assert.ok(logLine('stopped')(broker.stdout()));
    for (const line of broker.stdout().trimEnd().split('\n')) assert.doesNotThrow(() => JSON.parse(line), `log lines are JSON: ${line}`);
  });

  test('SIGTERM lets an in-flight request finish before exiting', async () => {
    const cwd = path.join(dir, 'inflight');
    await mkdir(cwd);
    await cp(path.join(REPO, 'policies'), path.join(cwd, 'policies'), { recursive: true });
    const broker = spawnCli(['serve'], { cwd, env: { PORT: '0' } });
    const { url } = (await waitForOutput(broker, logLine('listening'))) as { url: string };
    // A request whose body is still arriving when SIGTERM lands must still be answered.
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      // agent: false closes the connection after the answer, so the exit does not wait for an idle keep-alive connection.
      const req = http.request(`${url}/v1/exchange`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength('{"policy":"local-dev"}')) } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.write('{"policy":');
      // The pause lets the server take the request in before the signal; the rest of the body follows once the signal is logged.
      setTimeout(() => {
        broker.child.kill('SIGTERM');
        waitForOutput(broker, logLine('signal received')).then(() => req.end('"local-dev"}'), reject);
      }, 200);
    });
    const res = await answered;
    assert.equal(res.status, 401, res.body);
    assert.equal((JSON.parse(res.body) as { error: string }).error, 'invalid_token');
    assert.equal(await broker.exited, 0);
  });

  test('SIGTERM (then SIGTERM and SIGINT again) while STS is minting: the exchange finishes, its answer reaches the caller on a closing connection, and its one record is written', async () => {
    const cwd = path.join(dir, 'issuing');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    const brokerKey = { accessKeyId: 'AKIAOIDCBROKERSERVE1', secretAccessKey: 'broker/secret/key/for/serve/tests/only/000' };
    const [issuer, sts] = await Promise.all([startDevIssuer({ port: 0 }), startStsEmulator({ ...brokerKey, region: 'eu-west-1' })]);
    const agent = new http.Agent({ keepAlive: true });
    try {
      await writeFile(path.join(cwd, 'policies', 'deploy.yaml'), 'issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/deploy-api\n');
      await writeFile(
        path.join(cwd, 'broker.yaml'),
        `server: { host: 127.0.0.1, port: 0 }\nissuers:\n  - { name: local, issuer: "${issuer.url}", audiences: [https://broker.example.com] }\nproviders:\n  aws: { region: eu-west-1, endpoint: "${sts.url}" }\n`,
      );
      const broker = spawnCli(['serve'], { cwd, env: { AWS_ACCESS_KEY_ID: brokerKey.accessKeyId, AWS_SECRET_ACCESS_KEY: brokerKey.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_PROFILE: '' } });
      const { url } = (await waitForOutput(broker, logLine('listening'))) as { url: string };
      let answerStsCall!: () => void;
      // Every attempt waits (the SDK retries a slow call), as with an STS that is slow for a while.
      sts.setFault({ kind: 'delay', until: new Promise<void>((resolve) => (answerStsCall = resolve)) });
      const token = await issuer.mint({ aud: 'https://broker.example.com', sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' });
      const answered = new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        // A keep-alive client: the answer written during shutdown must close its connection.
        const req = http.request(`${url}/v1/exchange`, { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ policy: 'deploy' }));
      });
      await waitForStsCall(sts);
      broker.child.kill('SIGTERM');
      // STS answers once the broker says it is waiting for the exchange, or, if it would not wait, once it has stopped.
      await waitForOutput(broker, (out) => (logLine('shutting down')(out)?.in_flight_decisions === 1 || logLine('stopped')(out) ? true : undefined)).catch(() => undefined);
      // An impatient second signal (a supervisor, a second Ctrl-C) must not kill it before the exchange is recorded.
      broker.child.kill('SIGTERM');
      broker.child.kill('SIGINT');
      await waitForOutput(broker, (out) => (out.split('\n').filter((line) => line.includes('ignored: already shutting down')).length >= 2 ? true : undefined));
      answerStsCall();
      const res = await answered;
      assert.equal(res.status, 200, res.body);
      assert.equal(res.headers.connection, 'close');
      const accessKeyId = (JSON.parse(res.body) as { credentials: { AccessKeyId: string } }).credentials.AccessKeyId;
      assert.equal(accessKeyId, sts.requests.find((r) => r.credentials)?.credentials?.AccessKeyId);
      assert.equal(await broker.exited, 0);
      const store = await openAuditStore(`sqlite:${path.join(cwd, 'data', 'audit.db')}`);
      try {
        const records = (await store.query({ limit: 1000 })).events.filter((e) => e.request_id === res.headers['x-request-id']);
        assert.equal(records.length, 1, 'exactly one record for the request');
        assert.equal(records[0]!.decision, 'issued');
        assert.equal(records[0]!.credential_id, accessKeyId);
      } finally {
        await store.close();
      }
    } finally {
      agent.destroy();
      await Promise.all([issuer.close(), sts.close()]);
    }
  });

  test('server.admin_port: /metrics and the detailed readiness move to the admin listener; with Redis replay, SIGTERM still exits 0', async () => {
    const cwd = path.join(dir, 'admin');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    await writeFile(path.join(cwd, 'policies', 'deploy.yaml'), localJwtPolicy('https://deploy.example.com'));
    await writeFile(
      path.join(cwd, 'broker.yaml'),
      'server: { host: 127.0.0.1, port: 0, admin_port: 0 }\nissuers:\n  - { name: local, issuer: "http://127.0.0.1:8081" }\nreplay: { url: "redis://127.0.0.1:6379/0" }\n',
    );
    const broker = spawnCli(['serve'], { cwd });
    const { url, admin_url: adminUrl } = (await waitForOutput(broker, logLine('listening'))) as { url: string; admin_url: string };
    assert.match(adminUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(adminUrl, url);
    assert.equal((await rawRequest(`${url}/metrics`)).status, 404);
    const metrics = await rawRequest(`${adminUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^# TYPE broker_policies_loaded gauge$/m);
    for (const base of [url, adminUrl]) {
      const ready = await rawRequest(`${base}/readyz`);
      assert.equal(ready.status, 200, ready.body);
      assert.deepEqual((JSON.parse(ready.body) as { checks: unknown }).checks, { accepting: true, policies: 1, audit: 'writable', replay: 'reachable', signing_key: 'readable' });
    }
    // Nothing a CI job calls answers on the admin listener.
    assert.equal((await rawRequest(`${adminUrl}/v1/exchange`, { method: 'POST' })).status, 404);
    broker.child.kill('SIGTERM');
    assert.equal(await broker.exited, 0);
  });

  test('a bad config refuses to start and names the file, line and key', async () => {
    const cwd = path.join(dir, 'badconfig');
    await mkdir(cwd);
    await writeFile(path.join(cwd, 'broker.yaml'), 'server:\n  port: 8080\n  hots: 0.0.0.0\n');
    const broker = spawnCli(['serve'], { cwd });
    assert.equal(await broker.exited, 1);
    assert.match(broker.stderr(), /broker\.yaml:3: server: unknown key 'hots'/);
  });

  test('an audit log that cannot be opened refuses to start; its log line holds the error with its name, code, reason and cause chain', async () => {
    const cwd = path.join(dir, 'badaudit');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    // A directory where the database file should be: SQLite cannot open it.
    await mkdir(path.join(cwd, 'data', 'audit.db'), { recursive: true });
    await writeFile(path.join(cwd, 'broker.yaml'), githubServeConfig('./data/signing-key.jwk'));
    const broker = spawnCli(['serve'], { cwd });
    assert.equal(await broker.exited, 1);
    const line = logLine('cannot start')(broker.stdout());
    assert.deepEqual(
      [line?.error, line?.name, line?.code, line?.reason],
      ['The audit log cannot be opened.', 'AuditUnavailableError', 'audit_unavailable', 'audit_open_failed'],
      broker.stdout(),
    );
    const cause = line?.cause as { code?: string; message?: string } | undefined;
    assert.deepEqual([cause?.code, cause?.message], ['SQLITE_CANTOPEN', 'unable to open database file'], broker.stdout());
  });

  test('a policy directory that does not compile refuses to start, with file:line errors', async () => {
    const cwd = path.join(dir, 'badpolicy');
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    await writeFile(path.join(cwd, 'policies', 'broken.yaml'), 'issuer: local\nclaims:\n  ref: { regex: "(a)\\\\1" }\ngrant:\n  provider: jwt\n  audience: x\n');
    const broker = spawnCli(['serve', '--config', path.join(cwd, 'missing.yaml')], { cwd });
    const again = spawnCli(['serve'], { cwd, env: { PORT: '0' } });
    assert.equal(await broker.exited, 1);
    assert.match(broker.stderr(), /missing\.yaml: cannot read the config file/);
    assert.equal(await again.exited, 1);
    assert.match(again.stderr(), /broken\.yaml:3: claims\.ref/);
  });
});
