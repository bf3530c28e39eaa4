// oidc-broker serve, dev issuer and keys generate in-process through runCli: output on the given streams, signals from the given emitter.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cli, githubServeConfig, logLine, startCli, waitForOutput } from './helpers/cli.js';

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
