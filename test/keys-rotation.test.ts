// Signing-key rotation end to end: `keys rotate|retire|list` through runCli against the key file of a real broker (supertest on its app), reloaded by its poll timer (ticked by hand) or by SIGHUP on `serve`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import request from 'supertest';
import { signCheckpoint } from '../src/audit/checkpoints.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import { loadSigningKey, type SigningKey } from '../src/keys/signing-key.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { cli, githubServeConfig, logLine, startCli, waitForOutput } from './helpers/cli.js';

const POLICY = `
name: deploy
issuer: local
allow_token_reuse: true
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://deploy.example.com
`;

/** The reload poll, driven by the test: `tick()` is one timer firing. */
function manualSchedule(): { schedule: (tick: () => Promise<unknown>) => () => void; tick: () => Promise<unknown> } {
  let registered: (() => Promise<unknown>) | undefined;
  return {
    schedule: (tick) => {
      registered = tick;
      return () => (registered = undefined);
    },
    tick: () => {
      assert.ok(registered, 'the broker polls the key file');
      return registered();
    },
  };
}

let fx: BrokerFixture;
const poll = manualSchedule();
let configPath: string;
let keyFile: string;
/** The first key, read before a rotation drops its private half from the file. */
let firstKey: SigningKey;

before(async () => {
  fx = await startBrokerFixture({ policies: { 'deploy.yaml': POLICY }, keyReloadSchedule: poll.schedule });
  configPath = path.join(fx.dir, 'broker.yaml');
  keyFile = path.join(fx.dir, 'data', 'signing-key.jwk');
  firstKey = await loadSigningKey(keyFile);
});
after(async () => fx.close());

async function exchange(): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' });
  const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return (res.body as { credentials: { access_token: string } }).credentials.access_token;
}

async function servedJwks(): Promise<{ keys: JWK[] }> {
  const res = await request(fx.broker.app).get('/.well-known/jwks.json');
  assert.equal(res.status, 200);
  return res.body as { keys: JWK[] };
}

async function verifiesWithServedJwks(jwt: string): Promise<boolean> {
  return jwtVerify(jwt, createLocalJWKSet(await servedJwks()), { issuer: 'http://127.0.0.1:8080', audience: 'https://deploy.example.com' }).then(
    () => true,
    () => false,
  );
}

async function reloadCount(outcome: string): Promise<number> {
  const text = (await request(fx.broker.app).get('/metrics')).text;
  const match = new RegExp(`^broker_signing_key_reloads_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text);
  assert.ok(match, `broker_signing_key_reloads_total{outcome="${outcome}"} is exported`);
  return Number(match[1]);
}

const kidOf = (jwt: string) => decodeProtectedHeader(jwt).kid;

const NOBODY = 65534;
/**
 * Runs `run` without write access to `dir`. Root ignores file modes, so as
 * root `run` has the effective uid of `nobody`, who is given `owned` (what it
 * must read or write) while `dir` is root's, mode 0555; otherwise `dir` is
 * mode 0500 meanwhile.
 */
async function withReadOnlyDir<T>(dir: string, owned: string[], run: () => Promise<T>): Promise<T> {
  const asRoot = process.geteuid?.() === 0;
  if (asRoot) {
    for (const file of owned) await chown(file, NOBODY, NOBODY);
    await chmod(dir, 0o555);
    process.seteuid!(NOBODY);
  } else {
    await chmod(dir, 0o500);
  }
  try {
    return await run();
  } finally {
    if (asRoot) process.seteuid!(0);
    await chmod(dir, 0o700);
  }
}

describe('rotate, reload by the poll timer, retire', () => {
  let firstKid: string;
  let newKid: string;
  let oldToken: string;

  test('before a rotation: one key, and the poll finds nothing new', async () => {
    oldToken = await exchange();
    firstKid = kidOf(oldToken)!;
    assert.deepEqual((await servedJwks()).keys.map((k) => k.kid), [firstKid]);
    assert.equal(await poll.tick(), 'unchanged');
  });

  test('keys rotate makes a new active key; the broker signs with it after the next poll, and the JWKS serves both', async () => {
    const run = await cli(['keys', 'rotate', '-c', configPath]);
    assert.equal(run.code, 0, run.stderr);
    newKid = /^new active key (\S+);/.exec(run.stdout)![1]!;
    assert.match(run.stdout, new RegExp(`${firstKid} is now published`));
    assert.notEqual(newKid, firstKid);
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    assert.ok(!(await readdir(path.dirname(keyFile))).some((f) => f.endsWith('.tmp')), 'no temporary file is left');

    assert.equal(kidOf(await exchange()), firstKid, 'until the reload, the broker signs with the key it holds');
    assert.equal(await poll.tick(), 'success');
    assert.equal(await reloadCount('success'), 1);
    const reloaded = fx.logLines().map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'signing keys reloaded');
    assert.equal(reloaded?.trigger, 'timer');
    assert.equal(reloaded?.active_kid, newKid);

    assert.deepEqual((await servedJwks()).keys.map((k) => k.kid), [newKid, firstKid]);
    const newToken = await exchange();
    assert.equal(kidOf(newToken), newKid);
    assert.ok(await verifiesWithServedJwks(newToken));
    assert.ok(await verifiesWithServedJwks(oldToken), 'a token signed before the rotation still verifies');
  });

  test('keys list shows each kid, state and creation time', async () => {
    const run = await cli(['keys', 'list', '-c', configPath]);
    assert.equal(run.code, 0, run.stderr);
    const rows = run.stdout.trim().split('\n').map((line) => line.split(/\s+/));
    assert.deepEqual(rows[0], ['KID', 'STATE', 'CREATED']);
    assert.deepEqual(rows.slice(1).map(([kid, state]) => [kid, state]), [
      [newKid, 'active'],
      [firstKid, 'published'],
    ]);
    for (const row of rows.slice(1)) assert.ok(!Number.isNaN(Date.parse(row[2]!)), `a creation time: ${row[2]}`);
  });

  test('the private half of the previous key is gone from the file: only the active key can sign', async () => {
    const { keys } = JSON.parse(await readFile(keyFile, 'utf8')) as { keys: (JWK & { state: string })[] };
    assert.deepEqual(keys.map((k) => [k.kid, k.state, typeof k.d]), [
      [newKid, 'active', 'string'],
      [firstKid, 'published', 'undefined'],
    ]);
  });

  test('the active key cannot be retired, nor an unknown kid: exit 1, the file unchanged', async () => {
    const before = await readFile(keyFile, 'utf8');
    const active = await cli(['keys', 'retire', '-c', configPath, '--', newKid]);
    assert.equal(active.code, 1);
    assert.match(active.stderr, new RegExp(`^oidc-broker: ${newKid} is the active key and cannot be retired; run 'oidc-broker keys rotate' first`));
    const unknown = await cli(['keys', 'retire', 'no-such-kid', '-c', configPath]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^oidc-broker: no key no-such-kid in .*signing-key\.jwk; 'oidc-broker keys list' shows the kids/);
    assert.equal(await readFile(keyFile, 'utf8'), before);
  });

  test('retire drops the key from the JWKS after the reload; a checkpoint it signed still verifies, on the server and with the CLI', async () => {
    // A checkpoint the first key signed while it was active.
    const store = openSqliteAuditStore(path.join(fx.dir, 'data', 'audit.db'));
    try {
      const head = await store.head();
      await store.saveCheckpoint(await signCheckpoint(firstKey, head, 'periodic', new Date()));
    } finally {
      await store.close();
    }

    const run = await cli(['keys', 'retire', '-c', configPath, '--', firstKid]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^retired ${firstKid}: no longer in the JWKS`));
    const again = await cli(['keys', 'retire', '-c', configPath, '--', firstKid]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /was retired already; nothing changed/);

    assert.equal(await poll.tick(), 'success');
    assert.deepEqual((await servedJwks()).keys.map((k) => k.kid), [newKid]);
    assert.equal(await verifiesWithServedJwks(oldToken), false, 'tokens of a retired key no longer verify');

    const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
    assert.equal(verify.status, 200);
    assert.equal((verify.body as { ok: boolean }).ok, true, JSON.stringify(verify.body));
    assert.ok((verify.body as { checkpoints: number }).checkpoints >= 1);

    const withKeyFile = await cli(['audit', 'verify', '-c', configPath]);
    assert.equal(withKeyFile.code, 0, withKeyFile.stdout + withKeyFile.stderr);

    const listed = await cli(['keys', 'list', '--jwks', '--include-retired', '-c', configPath]);
    assert.equal(listed.code, 0, listed.stderr);
    const allKeys = JSON.parse(listed.stdout) as { keys: JWK[] };
    assert.deepEqual(allKeys.keys.map((k) => k.kid), [newKid, firstKid]);
    assert.ok(allKeys.keys.every((k) => k.d === undefined), 'public keys only');
    const jwksFile = path.join(fx.dir, 'all-keys.json');
    await writeFile(jwksFile, listed.stdout);
    const withJwks = await cli(['audit', 'verify', '--jwks', jwksFile, '-c', configPath]);
    assert.equal(withJwks.code, 0, withJwks.stdout + withJwks.stderr);

    const servedFile = path.join(fx.dir, 'served.json');
    await writeFile(servedFile, JSON.stringify(await servedJwks()));
    const withServed = await cli(['audit', 'verify', '--jwks', servedFile, '-c', configPath]);
    assert.equal(withServed.code, 2, 'the served JWKS lacks the retired key');
    assert.match(withServed.stdout, /bad_checkpoint/);

    const served = await cli(['keys', 'list', '--jwks', '-c', configPath]);
    assert.deepEqual((JSON.parse(served.stdout) as { keys: JWK[] }).keys, (await servedJwks()).keys, 'keys list --jwks is what the broker serves');
  });

  test('a reload that finds an invalid or unreadable key file keeps the current keys, logs and counts it', async () => {
    const good = await readFile(keyFile, 'utf8');
    const secret = (JSON.parse(good) as { keys: JWK[] }).keys[0]!.d!;
    await writeFile(keyFile, good.replace('"active"', '"published"'), { mode: 0o600 });
    assert.equal(await poll.tick(), 'failure');
    await writeFile(keyFile, good.slice(0, 40), { mode: 0o600 });
    assert.equal(await poll.tick(), 'failure');
    await writeFile(keyFile, good, { mode: 0o600 });
    await chmod(keyFile, 0o640);
    assert.equal(await poll.tick(), 'failure');
    await chmod(keyFile, 0o600);

    assert.equal(await reloadCount('failure'), 3);
    assert.deepEqual((await servedJwks()).keys.map((k) => k.kid), [newKid]);
    assert.equal(kidOf(await exchange()), newKid, 'the broker still signs with the key it had');
    const failures = fx.logLines().filter((l) => l.includes('signing key reload failed'));
    assert.equal(failures.length, 3);
    assert.match(failures[0]!, /must have exactly one active key, has 0/);
    assert.match(failures[1]!, /is not a JSON private JWK or key set/);
    assert.match(failures[2]!, /readable or writable by other users/);
    assert.ok(!fx.logLines().some((l) => l.includes(secret)), 'no private key material in the log');
    assert.equal(await poll.tick(), 'unchanged', 'the good file again: the keys serving');
  });
});

describe('serve', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-keys-serve-'));
    await chmod(root, 0o755);
  });
  after(async () => rm(root, { recursive: true, force: true }));

  /** A serve config whose key file is keys/signing-key.jwk; returns the config path. */
  async function serveConfig(name: string): Promise<string> {
    const dir = path.join(root, name);
    await mkdir(path.join(dir, 'policies'), { recursive: true });
    await mkdir(path.join(dir, 'keys'), { mode: 0o700 });
    await writeFile(path.join(dir, 'policies', 'deploy.yaml'), POLICY.replace('issuer: local', 'issuer: github'));
    const config = path.join(dir, 'broker.yaml');
    await writeFile(config, githubServeConfig('./keys/signing-key.jwk'));
    return config;
  }

  const kids = async (url: string) => ((await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: JWK[] }).keys.map((k) => k.kid);

  test('SIGHUP reloads the key file: after keys rotate, the JWKS serves the new and the previous key', async () => {
    const config = await serveConfig('sighup');
    const serve = startCli(['serve', '-c', config]);
    try {
      const { url } = (await waitForOutput(serve, logLine('listening'))) as { url: string };
      const [first] = await kids(url);
      const rotated = await cli(['keys', 'rotate', '-c', config]);
      assert.equal(rotated.code, 0, rotated.stderr);
      const newKid = /^new active key (\S+);/.exec(rotated.stdout)![1]!;

      serve.signal('SIGHUP');
      const reloaded = await waitForOutput(serve, logLine('signing keys reloaded'));
      assert.equal(reloaded.trigger, 'sighup');
      assert.equal(reloaded.active_kid, newKid);
      assert.equal(reloaded.previous_active_kid, first);
      assert.deepEqual(await kids(url), [newKid, first]);
    } finally {
      serve.signal('SIGTERM');
      assert.equal((await serve.done).code, 0);
    }
  });

  test('a key directory the broker cannot write (a mounted Secret) with a key from keys generate (one bare JWK) serves; rotate there fails', async () => {
    const config = await serveConfig('read-only');
    const keysDir = path.join(path.dirname(config), 'keys');
    const keyFile = path.join(keysDir, 'signing-key.jwk');
    assert.equal((await cli(['keys', 'generate', '--out', keyFile])).code, 0);
    const kid = (JSON.parse(await readFile(keyFile, 'utf8')) as JWK).kid;
    await chmod(keyFile, 0o400);
    await withReadOnlyDir(keysDir, [keyFile, path.dirname(config)], async () => {
      const serve = startCli(['serve', '-c', config]);
      try {
        const { url } = (await waitForOutput(serve, logLine('listening'))) as { url: string };
        assert.deepEqual(await kids(url), [kid]);
        serve.signal('SIGHUP');
        await waitForOutput(serve, logLine('signal received'));
        const listed = await cli(['keys', 'list', '-c', config]);
        assert.equal(listed.code, 0, listed.stderr);
        assert.match(listed.stdout, new RegExp(`^${kid}\\s+active\\s+unknown$`, 'm'), 'a bare JWK is the one active key; its creation time is not known');
        const rotate = await cli(['keys', 'rotate', '-c', config]);
        assert.equal(rotate.code, 1);
        assert.match(rotate.stderr, /cannot write the signing key .* \(EACCES\)/);
        assert.deepEqual(await kids(url), [kid]);
      } finally {
        serve.signal('SIGTERM');
        assert.equal((await serve.done).code, 0);
      }
    });
    assert.deepEqual(await readdir(keysDir), ['signing-key.jwk'], 'nothing was written in the key directory');
    assert.equal((await stat(keyFile)).mode & 0o777, 0o400);
  });
});

describe('keys commands: bad inputs', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-keys-cli-'));
    await chmod(root, 0o755);
  });
  after(async () => rm(root, { recursive: true, force: true }));

  async function keyConfig(name: string): Promise<{ config: string; keyFile: string }> {
    const dir = path.join(root, name);
    await mkdir(dir, { recursive: true });
    const config = path.join(dir, 'broker.yaml');
    await writeFile(config, 'providers:\n  jwt:\n    signing_key_file: ./signing-key.jwk\n');
    return { config, keyFile: path.join(dir, 'signing-key.jwk') };
  }

  // A kid is a base64url thumbprint, so one in 64 begins with '-': it must not be read as an option.
  test("retire takes a kid that begins with '-', as it is or after --", async () => {
    const { config, keyFile } = await keyConfig('dash-kid');
    assert.equal((await cli(['keys', 'generate', '--out', keyFile])).code, 0);
    assert.equal((await cli(['keys', 'rotate', '-c', config])).code, 0);
    const set = JSON.parse(await readFile(keyFile, 'utf8')) as { keys: (JWK & { state: string })[] };
    const published = set.keys.find((k) => k.state === 'published')!;
    for (const [dashKid, args] of [
      ['-W2rbGdSMSaWCWXqGn0yu', (kid: string) => ['keys', 'retire', kid, '-c', config]],
      ['-Qx9', (kid: string) => ['keys', 'retire', '-c', config, '--', kid]],
    ] as const) {
      published.kid = dashKid;
      published.state = 'published';
      await writeFile(keyFile, JSON.stringify(set));
      const run = await cli(args(dashKid));
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, new RegExp(`^retired ${dashKid}: no longer in the JWKS`));
    }
  });

  test('a missing key file: rotate, retire and list exit 1 and create nothing', async () => {
    const { config, keyFile } = await keyConfig('missing');
    for (const args of [['rotate'], ['retire', 'some-kid'], ['list']]) {
      const run = await cli(['keys', ...args, '-c', config]);
      assert.equal(run.code, 1, args.join(' '));
      assert.match(run.stderr, /^oidc-broker: the signing key .*signing-key\.jwk does not exist \(providers\.jwt\.signing_key_file of /);
    }
    await assert.rejects(stat(keyFile), /ENOENT/);
  });

  test('rotate into a directory it cannot write: exit 1, the key file unchanged, no temporary file left', async () => {
    const { config, keyFile } = await keyConfig('unwritable');
    assert.equal((await cli(['keys', 'generate', '--out', keyFile])).code, 0);
    const before = await readFile(keyFile, 'utf8');
    const run = await withReadOnlyDir(path.dirname(keyFile), [keyFile], () => cli(['keys', 'rotate', '-c', config]));
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^oidc-broker: cannot write the signing key .*signing-key\.jwk \(EACCES\): the keys commands need write access to its directory /);
    assert.equal(await readFile(keyFile, 'utf8'), before);
    assert.deepEqual(await readdir(path.dirname(keyFile)), ['broker.yaml', 'signing-key.jwk']);
  });

  test('a key file another keys command is changing (its lock file exists): rotate exits 1 and changes nothing', async () => {
    const { config, keyFile } = await keyConfig('locked');
    assert.equal((await cli(['keys', 'generate', '--out', keyFile])).code, 0);
    const before = await readFile(keyFile, 'utf8');
    await writeFile(`${keyFile}.lock`, '1\n');
    const run = await cli(['keys', 'rotate', '-c', config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /signing-key\.jwk\.lock exists: another 'oidc-broker keys' command is changing .*signing-key\.jwk, or one was interrupted/);
    assert.equal(await readFile(keyFile, 'utf8'), before);
    await rm(`${keyFile}.lock`);
    assert.equal((await cli(['keys', 'rotate', '-c', config])).code, 0);
    assert.deepEqual(await readdir(path.dirname(keyFile)), ['broker.yaml', 'signing-key.jwk'], 'the lock is removed when the command ends');
  });

  test('--include-retired without --jwks is refused', async () => {
    const { config, keyFile } = await keyConfig('flags');
    assert.equal((await cli(['keys', 'generate', '--out', keyFile])).code, 0);
    const run = await cli(['keys', 'list', '--include-retired', '-c', config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /--include-retired applies only with --jwks/);
  });
});
