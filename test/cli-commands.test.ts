// oidc-broker serve, dev issuer and keys generate in-process through runCli: output on the given streams, signals from the given emitter.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cli, cliProcess, githubServeConfig, logLine, REPO, startCli, waitForOutput } from './helpers/cli.js';

const POLICY = (name: string) => `name: ${name}\nissuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n`;

let root: string;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-commands-'));
});
after(async () => rm(root, { recursive: true, force: true }));

describe('serve', () => {
  test('logs JSON lines to its stdout; SIGHUP reloads the policies; SIGTERM stops it with exit 0', async () => {
    const dir = path.join(root, 'serve');
    await mkdir(path.join(dir, 'policies'), { recursive: true });
    await writeFile(path.join(dir, 'policies', 'deploy.yaml'), POLICY('deploy'));
    await writeFile(path.join(dir, 'broker.yaml'), githubServeConfig('./data/signing-key.jwk'));
    const serve = startCli(['serve', '-c', path.join(dir, 'broker.yaml')]);
    const { url } = (await waitForOutput(serve, logLine('listening'))) as { url: string };
    assert.equal((await fetch(`${url}/healthz`)).status, 200);

    await writeFile(path.join(dir, 'policies', 'release.yaml'), POLICY('release'));
    serve.signal('SIGHUP');
    assert.equal((await waitForOutput(serve, logLine('signal received'))).action, 'reload policies and signing keys');
    const reloaded = await waitForOutput(serve, logLine('policies reloaded'));
    assert.equal(reloaded.trigger, 'sighup');
    assert.equal(reloaded.count, 2);

    serve.signal('SIGTERM');
    const run = await serve.done;
    assert.equal(run.code, 0, run.stderr);
    assert.ok(logLine('stopped')(run.stdout));
    assert.equal(run.stderr, '');
    await assert.rejects(fetch(`${url}/healthz`), 'no longer listening');
  });

  test('SIGTERM while starting stops the broker as soon as it has started, gracefully: exit 0', async () => {
    const dir = path.join(root, 'serve-early-stop');
    await mkdir(path.join(dir, 'policies'), { recursive: true });
    await writeFile(path.join(dir, 'policies', 'deploy.yaml'), POLICY('deploy'));
    await writeFile(path.join(dir, 'broker.yaml'), githubServeConfig('./data/signing-key.jwk'));
    const serve = startCli(['serve', '-c', path.join(dir, 'broker.yaml')]);
    // Logged once the config is read, before the broker is built and listens.
    await waitForOutput(serve, logLine('config loaded'));
    serve.signal('SIGTERM');
    serve.signal('SIGINT');
    const run = await serve.done;
    assert.equal(run.code, 0, run.stderr);
    const messages = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as { msg: string; signal?: string; action?: string });
    const said = messages.filter((m) => m.msg === 'signal received').map((m) => `${m.signal}: ${m.action}`);
    assert.deepEqual(said, ['SIGTERM: stop once started', 'SIGINT: ignored: already stopping once started']);
    const order = ['signal received', 'listening', 'stopped'].map((msg) => messages.findIndex((m) => m.msg === msg));
    assert.ok(order.every((index, i) => index >= 0 && (i === 0 || index > order[i - 1]!)), JSON.stringify(order));
  });
});

describe('dev issuer', () => {
  test('serves discovery and mints tokens until SIGINT, then exits 0; its key survives a restart', async () => {
    const keyFile = path.join(root, 'dev-issuer-key.jwk');
    const kids: string[] = [];
    for (let start = 0; start < 2; start++) {
      const issuer = startCli(['dev', 'issuer', '--port', '0', '--key-file', keyFile]);
      const { url } = (await waitForOutput(issuer, logLine('dev issuer listening'))) as { url: string };
      const discovery = (await (await fetch(`${url}/.well-known/openid-configuration`)).json()) as { issuer: string };
      assert.equal(discovery.issuer, url);
      const minted = await fetch(`${url}/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"sub":"repo:acme/api"}' });
      assert.equal(minted.status, 200);
      const { token } = (await minted.json()) as { token: string };
      kids.push((JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')) as { kid: string }).kid);
      issuer.signal('SIGINT');
      const run = await issuer.done;
      assert.equal(run.code, 0, run.stderr);
      await assert.rejects(fetch(`${url}/.well-known/openid-configuration`), 'no longer listening');
    }
    assert.equal(kids[0], kids[1], 'the same key after a restart');
  });
});

describe('keys generate', () => {
  test('prints a private ES256 JWK without --out', async () => {
    const run = await cli(['keys', 'generate']);
    assert.equal(run.code, 0, run.stderr);
    const jwk = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.equal(jwk.kty, 'EC');
    assert.equal(jwk.crv, 'P-256');
    assert.equal(typeof jwk.d, 'string');
    assert.equal(typeof jwk.kid, 'string');
  });

  test("'--out -' writes the key alone to stdout; what is said about it goes to stderr", async () => {
    const run = await cli(['keys', 'generate', '--out', '-']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.split('\n').length, 2, 'one line of JSON');
    const jwk = JSON.parse(run.stdout) as { kid: string; d: string };
    assert.equal(typeof jwk.d, 'string');
    assert.equal(run.stderr, `generated signing key ${jwk.kid} on stdout: a private key, keep it out of logs and store it with mode 0600\n`);
    assert.equal(existsSync(path.join(REPO, '-')), false, "no file named '-'");
  });

  test('--out writes a 0600 file and never overwrites one: exit 1, the file unchanged', async () => {
    const out = path.join(root, 'new-key.jwk');
    const first = await cli(['keys', 'generate', '--out', out]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, '', 'the key is not printed');
    const written = await readFile(out, 'utf8');
    assert.match(first.stderr, new RegExp(`^wrote signing key ${(JSON.parse(written) as { kid: string }).kid} to `));
    assert.equal((await stat(out)).mode & 0o777, 0o600);

    const second = await cli(['keys', 'generate', '--out', out]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /^oidc-broker: .*new-key\.jwk already exists; move it away first/);
    assert.equal(await readFile(out, 'utf8'), written);
  });
});

describe('--version', () => {
  const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };

  test("every command and subcommand prints the package's version and exits 0, doing nothing else", async () => {
    const commands = [[], ['serve'], ['policy'], ['policy', 'validate'], ['policy', 'test'], ['policy', 'impact'], ['keys', 'generate'], ['keys', 'retire'], ['audit', 'query'], ['audit', 'verify'], ['dev', 'issuer']];
    for (const command of commands) {
      const run = await cli([...command, '--version']);
      assert.deepEqual(run, { code: 0, stdout: `${version}\n`, stderr: '' }, command.join(' '));
    }
    assert.deepEqual(await cli(['-V']), { code: 0, stdout: `${version}\n`, stderr: '' });
  });

  test('as a real process too', async () => {
    assert.deepEqual(await cliProcess(['audit', 'query', '--version']), { code: 0, stdout: `${version}\n`, stderr: '' });
  });
});
