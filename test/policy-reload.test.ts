// Hot reload of the policy directory (docs/policies/reference.md, last bullet): SIGHUP
// and file changes swap in a new set only when every file compiles; otherwise
// the last good set keeps serving and /readyz, the log and the metrics say why.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import { createLogger } from '../src/logger.js';
import { formatPolicyIssue } from '../src/policy/issues.js';
import { createMetrics } from '../src/metrics.js';
import { compilePolicies } from '../src/policy/compile.js';
import { createPolicyReloader, readPolicyDirConsistent, type PolicySetStatus } from '../src/policy/reload.js';
import type { CompileContext } from '../src/policy/types.js';
import { AUDIENCE, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';

/** An allow policy that issues a broker-signed token for one repository. */
function allowPolicy(repository: string, extra = ''): string {
  return `issuer: local\nallow_token_reuse: true\nclaims:\n  repository: ${repository}\n${extra}grant:\n  provider: jwt\n  audience: https://deploy.example.com\n`;
}

// `(a)\1` is a backreference: not RE2, refused at load on line 4 under `claims.ref`.
const BROKEN = `# marker-from-a-broken-policy-file\nissuer: local\nclaims:\n  ref: { regex: "(a)\\\\1" }\ngrant:\n  provider: jwt\n  audience: x\n`;

/** Polls until `check` holds; generous bound, never a fixed sleep. */
async function eventually<T>(what: string | (() => string), probe: () => T | Promise<T>, check: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (check(value)) return value;
    if (Date.now() > deadline) assert.fail(`${typeof what === 'function' ? what() : what} did not happen within ${timeoutMs} ms; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function exchangeStatus(fx: BrokerFixture, policy: string, claims: Record<string, unknown>): Promise<number> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:test', ...claims });
  const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
  return res.status;
}

/** The admin listener's detailed readiness: the public one leaves out where reload problems are. */
async function readyz(fx: BrokerFixture): Promise<{ status: number; policies: PolicySetStatus; body: Record<string, unknown> }> {
  const res = await request(fx.broker.adminApp).get('/readyz');
  return { status: res.status, policies: (res.body as { policies: PolicySetStatus }).policies, body: res.body as Record<string, unknown> };
}

async function reloadCount(fx: BrokerFixture, outcome: string): Promise<number> {
  const text = (await request(fx.broker.app).get('/metrics')).text;
  const match = new RegExp(`^broker_policy_reloads_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text);
  assert.ok(match, `broker_policy_reloads_total{outcome="${outcome}"} is exported`);
  return Number(match[1]);
}

function metricValue(text: string, name: string): number {
  const match = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  assert.ok(match, `${name} is exported`);
  return Number(match[1]);
}

const logs = (fx: BrokerFixture, msg: string) => fx.logLines().map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === msg);

describe('policy hot reload in a running broker', () => {
  let fx: BrokerFixture;
  let policiesDir: string;
  before(async () => {
    fx = await startBrokerFixture({ policies: { 'deploy.yaml': allowPolicy('acme/api') } });
    policiesDir = path.join(fx.dir, 'policies');
  });
  after(async () => fx.close());

  test('at start: readyz describes the set, no reload yet, gauges set', async () => {
    const ready = await readyz(fx);
    assert.equal(ready.status, 200);
    assert.equal(ready.policies.count, 1);
    assert.match(ready.policies.sha256, /^[0-9a-f]{64}$/);
    assert.ok(!Number.isNaN(Date.parse(ready.policies.loaded_at)));
    assert.equal(ready.policies.last_reload, null);
    assert.equal((ready.body.checks as { policies: number }).policies, 1, 'the existing field stays');
    const metrics = (await request(fx.broker.app).get('/metrics')).text;
    assert.equal(metricValue(metrics, 'broker_policies_loaded'), 1);
    assert.ok(Math.abs(metricValue(metrics, 'broker_policy_set_last_success_timestamp_seconds') - Date.now() / 1000) < 60);
    for (const outcome of ['success', 'failure', 'unchanged']) assert.equal(await reloadCount(fx, outcome), 0);
  });

  test('a changed policy file is picked up by the watcher', async () => {
    const before = (await readyz(fx)).policies;
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/web' }), 403);
    await writeFile(path.join(policiesDir, 'deploy.yaml'), allowPolicy('acme/web'));
    await eventually('the new policy to serve', () => exchangeStatus(fx, 'deploy', { repository: 'acme/web' }), (s) => s === 200);
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/api' }), 403, 'the old version no longer serves');

    const after = (await readyz(fx)).policies;
    assert.notEqual(after.sha256, before.sha256);
    assert.equal(after.last_reload?.trigger, 'watch');
    assert.equal(after.last_reload?.ok, true);
    assert.deepEqual(after.last_reload?.errors, []);
    assert.ok(Date.parse(after.loaded_at) >= Date.parse(before.loaded_at));
    const line = logs(fx, 'policies reloaded').find((l) => l.sha256 === after.sha256);
    assert.ok(line, 'logs "policies reloaded" with the new set');
    assert.equal(line.trigger, 'watch');
    assert.equal(line.count, 1);
    assert.equal(line.sha256, after.sha256);
    assert.equal(typeof line.duration_ms, 'number');
    assert.equal(line.level, 'info');
    assert.ok((await reloadCount(fx, 'success')) >= 1);
  });

  test('an invalid edit keeps the last good set serving; readyz, log and metric say why; fixing it recovers', async () => {
    const good = (await readyz(fx)).policies;
    const failuresBefore = await reloadCount(fx, 'failure');
    await writeFile(path.join(policiesDir, 'deploy.yaml'), BROKEN);

    const ready = await eventually('readyz to show the failed reload', () => readyz(fx), (r) => r.policies.last_reload?.ok === false);
    assert.equal(ready.status, 200, 'still ready: the last good set serves');
    assert.equal(ready.policies.sha256, good.sha256, 'the serving set is unchanged');
    assert.equal(ready.policies.loaded_at, good.loaded_at);
    assert.equal(ready.policies.count, 1);
    assert.equal(ready.policies.last_reload?.outcome, 'failure');
    assert.ok(ready.policies.last_reload.errors.length >= 1);
    assert.match(ready.policies.last_reload.errors[0]!, /deploy\.yaml:4: claims\.ref/);
    const publicReady = await request(fx.broker.app).get('/readyz');
    assert.equal(publicReady.body.policies.last_reload.ok, false);
    assert.equal(publicReady.body.policies.last_reload.errors, undefined, 'the public listener does not say where the problems are');
    assert.doesNotMatch(publicReady.text, /deploy\.yaml/);
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/web' }), 200, 'exchanges are still decided by the old policy');
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/api' }), 403);
    assert.ok((await reloadCount(fx, 'failure')) > failuresBefore);

    const failed = logs(fx, 'policy reload failed').at(-1);
    assert.ok(failed, 'logs "policy reload failed"');
    assert.equal(failed.level, 'error');
    assert.match(JSON.stringify(failed.errors), /deploy\.yaml:4: claims\.ref/);
    assert.ok(!fx.logLines().some((l) => l.includes('marker-from-a-broken-policy-file')), 'no policy text in the log');

    await writeFile(path.join(policiesDir, 'deploy.yaml'), allowPolicy('acme/api'));
    const fixed = await eventually('the fixed file to load', () => readyz(fx), (r) => r.policies.last_reload?.ok === true);
    assert.deepEqual(fixed.policies.last_reload?.errors, []);
    assert.notEqual(fixed.policies.sha256, good.sha256);
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/api' }), 200);
  });

  test('adding and deleting a policy file', async () => {
    assert.equal(await exchangeStatus(fx, 'extra', { repository: 'acme/api' }), 404);
    await writeFile(path.join(policiesDir, 'extra.yaml'), allowPolicy('acme/api'));
    await eventually('the added policy to serve', () => exchangeStatus(fx, 'extra', { repository: 'acme/api' }), (s) => s === 200);
    assert.equal((await readyz(fx)).policies.count, 2);
    assert.equal(metricValue((await request(fx.broker.app).get('/metrics')).text, 'broker_policies_loaded'), 2);

    await unlink(path.join(policiesDir, 'extra.yaml'));
    await eventually('the deleted policy to go', () => exchangeStatus(fx, 'extra', { repository: 'acme/api' }), (s) => s === 404);
    assert.equal((await readyz(fx)).policies.count, 1);
  });

  test('a rename-style save (temp file, then rename over) is picked up, the temp file never loads', async () => {
    const failures = await reloadCount(fx, 'failure');
    const temp = path.join(policiesDir, '.deploy.yaml.swp');
    // A half-written temp file would not compile: it must never be read as a policy.
    await writeFile(temp, 'issuer: local\nclaims: [');
    await writeFile(temp, allowPolicy('acme/renamed'));
    await rename(temp, path.join(policiesDir, 'deploy.yaml'));
    await eventually('the renamed-over file to serve', () => exchangeStatus(fx, 'deploy', { repository: 'acme/renamed' }), (s) => s === 200);
    assert.equal(await reloadCount(fx, 'failure'), failures);
  });

  test('reloadPolicies (the SIGHUP path) applies at once; an identical directory is a no-op logged at debug', async () => {
    await writeFile(path.join(policiesDir, 'deploy.yaml'), allowPolicy('acme/sighup'));
    const result = await fx.broker.reloadPolicies('sighup');
    // `success`, unless a watcher reload already in flight read the change first (then this one, which started after it, finds it unchanged).
    assert.notEqual(result.outcome, 'failure');
    assert.equal(result.trigger, 'sighup');
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/sighup' }), 200, 'no waiting: the swap is done when the call resolves');
    const sha = result.serving.sha256;
    assert.ok(logs(fx, 'policies reloaded').some((l) => l.sha256 === sha));

    const unchangedBefore = await reloadCount(fx, 'unchanged');
    const again = await fx.broker.reloadPolicies('sighup');
    assert.equal(again.outcome, 'unchanged');
    assert.equal(again.serving.sha256, sha);
    const status = (await readyz(fx)).policies;
    assert.equal(status.sha256, sha);
    assert.equal(status.last_reload?.ok, true);
    assert.ok((await reloadCount(fx, 'unchanged')) > unchangedBefore);
    const debug = logs(fx, 'policies unchanged').find((l) => l.trigger === 'sighup');
    assert.ok(debug, 'logs "policies unchanged" for the SIGHUP reload');
    assert.equal(debug.level, 'debug');
    assert.equal(logs(fx, 'policies reloaded').filter((l) => l.sha256 === sha).length, 1, 'the same set is swapped in once');
  });

  test('the directory removed: the reload fails and the last good set serves; it coming back is picked up', async () => {
    await writeFile(path.join(policiesDir, 'deploy.yaml'), allowPolicy('acme/last-good'));
    assert.notEqual((await fx.broker.reloadPolicies('sighup')).outcome, 'failure');
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/last-good' }), 200);
    const good = (await readyz(fx)).policies;
    await rm(policiesDir, { recursive: true, force: true });
    const ready = await eventually('the failed reload', () => readyz(fx), (r) => r.policies.last_reload?.ok === false);
    assert.equal(ready.status, 200);
    assert.equal(ready.policies.sha256, good.sha256);
    assert.deepEqual(ready.policies.last_reload!.errors, [path.basename(policiesDir)], 'where, not the message: /readyz is unauthenticated');
    assert.ok(fx.logLines().some((l) => l.includes('policy reload failed') && l.includes('does not exist')));
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/last-good' }), 200, 'the last good set serves');
    // SIGHUP while it is gone fails the same way, and changes nothing.
    assert.equal((await fx.broker.reloadPolicies('sighup')).outcome, 'failure');
    assert.equal(await exchangeStatus(fx, 'deploy', { repository: 'acme/last-good' }), 200);

    // It comes back whole (built aside, renamed into place), as a deploy tool would do it.
    const staging = path.join(fx.dir, 'policies.staging');
    await mkdir(staging);
    await writeFile(path.join(staging, 'deploy.yaml'), allowPolicy('acme/back'));
    await rename(staging, policiesDir);
    await eventually('the recreated directory to load', () => exchangeStatus(fx, 'deploy', { repository: 'acme/back' }), (s) => s === 200);
    assert.equal((await readyz(fx)).policies.last_reload?.ok, true);
    // And it is watched again.
    await writeFile(path.join(policiesDir, 'deploy.yaml'), allowPolicy('acme/watched-again'));
    await eventually('a change in the recreated directory', () => exchangeStatus(fx, 'deploy', { repository: 'acme/watched-again' }), (s) => s === 200);
  });
});

describe('the reloader on its own (no watcher)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-reloader-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test('reloads never overlap: calls made during a reload share one follow-up reload, which sees the latest files', async () => {
    const ctx: CompileContext = { issuers: new Map([['local', { audiences: [AUDIENCE] , tenantClaims: [] }]]), providers: new Set(['jwt']) };
    await writeFile(path.join(dir, 'p.yaml'), allowPolicy('acme/v0'));
    const first = await readPolicyDirConsistent(dir);
    const initial = compilePolicies(first.files, ctx);
    assert.ok(initial.ok);
    let active = 0;
    let maxActive = 0;
    let compiles = 0;
    // The first compile holds until the test has made its other calls.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const metrics = createMetrics({ defaultMetrics: false });
    const reloader = createPolicyReloader({
      dir,
      initial: { set: initial.set, sha256: first.sha256, loadedAt: new Date() },
      compile: async (files) => {
        compiles++;
        maxActive = Math.max(maxActive, ++active);
        if (compiles === 1) await gate;
        await new Promise((resolve) => setTimeout(resolve, 20));
        active--;
        return compilePolicies(files, ctx);
      },
      formatIssue: formatPolicyIssue,
      logger: createLogger({ silent: true }),
      metrics,
    });
    try {
      await writeFile(path.join(dir, 'p.yaml'), allowPolicy('acme/v1'));
      const p1 = reloader.reload('watch');
      await eventually('the first reload to be compiling', () => compiles, (n) => n === 1);
      await writeFile(path.join(dir, 'p.yaml'), allowPolicy('acme/v2'));
      const later = [reloader.reload('watch'), reloader.reload('sighup'), reloader.reload('watch'), reloader.reload('watch')];
      release();
      const [r1, ...rest] = await Promise.all([p1, ...later]);
      assert.equal(maxActive, 1, 'never two reloads at once');
      assert.equal(compiles, 2, 'the four calls made during the first reload share one more');
      for (const r of rest) assert.equal(r, rest[0]);
      assert.equal(r1.outcome, 'success');
      assert.equal(rest[0]!.outcome, 'success');
      assert.equal(rest[0]!.trigger, 'sighup', 'an operator request among them names the shared reload');
      assert.equal(reloader.current().sha256, (await readPolicyDirConsistent(dir)).sha256, 'the follow-up read the latest files');
      assert.notEqual(r1.serving.sha256, rest[0]!.serving.sha256);
      assert.equal(reloader.status().last_reload?.trigger, 'sighup');
      const text = await metrics.registry.metrics();
      assert.match(text, /^broker_policy_reloads_total\{outcome="success"\} 2$/m);
      assert.match(text, /^broker_policies_loaded 1$/m);
      assert.equal((await reloader.reload('sighup')).outcome, 'unchanged');
      assert.equal(compiles, 2, 'an unchanged directory is not compiled');
    } finally {
      await reloader.close();
    }
  });
});

/**
 * Two policies that must change together. Version A: `pair` grants a token
 * for audience A, and `pair-guard` denies side=y. Version B: `pair` grants for
 * audience B, and `pair-guard` denies side=x. So a complete set issues only
 * A-tokens to side=x callers (B denies them) and only B-tokens to side=y
 * callers (A denies them). A torn set is visible: pair B with guard A issues a
 * B-token to side=x; pair A with guard B issues an A-token to side=y.
 * The directory is a Kubernetes ConfigMap mount: files are symlinks through
 * `..data`, which is swapped atomically, so the files on disk are never mixed
 * either (the control test mixes them on purpose).
 */
describe('atomic swap under load (ConfigMap-style ..data symlink swaps)', () => {
  const VERSIONS = {
    A: { audience: 'https://a.example.com', denies: 'y' },
    B: { audience: 'https://b.example.com', denies: 'x' },
  } as const;
  type Version = keyof typeof VERSIONS;
  const pairYaml = (v: Version) => `name: pair\nissuer: local\nallow_token_reuse: true\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: ${VERSIONS[v].audience}\n`;
  const guardYaml = (v: Version) => `name: pair-guard\nissuer: local\neffect: deny\nclaims:\n  side: ${VERSIONS[v].denies}\n`;

  let fx: BrokerFixture;
  let policiesDir: string;
  let server: http.Server;
  let url: string;
  let tokens: { x: string; y: string };

  async function writeVersion(name: string, pair: Version, guard: Version): Promise<void> {
    await mkdir(path.join(policiesDir, `..${name}`));
    await writeFile(path.join(policiesDir, `..${name}`, 'pair.yaml'), pairYaml(pair));
    await writeFile(path.join(policiesDir, `..${name}`, 'pair-guard.yaml'), guardYaml(guard));
  }

  /** What the kubelet does: a new ..data symlink renamed over the old one. */
  async function pointDataAt(name: string): Promise<void> {
    const tmp = path.join(policiesDir, '..data_tmp');
    await rm(tmp, { force: true });
    await symlink(`..${name}`, tmp);
    await rename(tmp, path.join(policiesDir, '..data'));
  }

  before(async () => {
    fx = await startBrokerFixture({ policies: { 'pair.yaml': pairYaml('A'), 'pair-guard.yaml': guardYaml('A') } });
    policiesDir = path.join(fx.dir, 'policies');
    await writeVersion('A', 'A', 'A');
    await writeVersion('B', 'B', 'B');
    await symlink('..A', path.join(policiesDir, '..data'));
    // The visible names become symlinks through ..data (same content: an unchanged reload).
    for (const file of ['pair.yaml', 'pair-guard.yaml']) {
      await symlink(path.join('..data', file), path.join(policiesDir, `.${file}.link`));
      await rename(path.join(policiesDir, `.${file}.link`), path.join(policiesDir, file));
    }
    server = http.createServer(fx.broker.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    tokens = {
      x: await fx.issuer.mint({ aud: AUDIENCE, sub: 'x', repository: 'acme/api', side: 'x' }),
      y: await fx.issuer.mint({ aud: AUDIENCE, sub: 'y', repository: 'acme/api', side: 'y' }),
    };
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fx.close();
  });

  type Outcome = 'issued-A' | 'issued-B' | 'denied' | 'other';
  async function decide(side: 'x' | 'y'): Promise<Outcome> {
    const res = await request(url).post('/v1/exchange').set('Authorization', `Bearer ${tokens[side]}`).send({ policy: 'pair' });
    if (res.status === 403 && (res.body as { error?: string }).error === 'access_denied') return 'denied';
    if (res.status !== 200) return 'other';
    const jwt = (res.body as { credentials: { access_token: string } }).credentials.access_token;
    const { aud } = JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as { aud: string };
    return aud === VERSIONS.A.audience ? 'issued-A' : aud === VERSIONS.B.audience ? 'issued-B' : 'other';
  }
  /** Resolves once a reload that started after the call is done (the watcher may have made the swap already). */
  async function reloadNow(): Promise<void> {
    const { outcome } = await fx.broker.reloadPolicies('sighup');
    assert.notEqual(outcome, 'failure');
  }
  /** Decisions only a torn set can make. */
  const isTorn = (side: 'x' | 'y', outcome: Outcome) => (side === 'x' && outcome === 'issued-B') || (side === 'y' && outcome === 'issued-A');

  test('the check detects a torn set (control: the files themselves mixed on disk)', async () => {
    assert.equal(await decide('x'), 'issued-A');
    assert.equal(await decide('y'), 'denied');
    await writeVersion('mixed', 'B', 'A');
    await pointDataAt('mixed');
    await reloadNow();
    const torn = await decide('x');
    assert.equal(torn, 'issued-B');
    assert.ok(isTorn('x', torn), 'pair B with guard A is what a torn swap would look like');
    await pointDataAt('B');
    await reloadNow();
    assert.equal(await decide('x'), 'denied');
    assert.equal(await decide('y'), 'issued-B');
    await pointDataAt('A');
    await reloadNow();
    await rm(path.join(policiesDir, '..mixed'), { recursive: true });
  });

  test('200 parallel requests while reloads flip A and B: every decision comes from one whole set', async () => {
    const seen = { x: { 'issued-A': 0, 'issued-B': 0, denied: 0, other: 0 }, y: { 'issued-A': 0, 'issued-B': 0, denied: 0, other: 0 } };
    let torn = 0;
    let swaps = 0;
    // Rounds until both versions were seen serving during the load (normally the first round).
    for (let round = 0; round < 10 && (round < 2 || seen.x['issued-A'] === 0 || seen.y['issued-B'] === 0); round++) {
      let flipping = true;
      const flipper = (async () => {
        let version: Version = 'A';
        while (flipping) {
          version = version === 'A' ? 'B' : 'A';
          await pointDataAt(version);
          // SIGHUP-style reloads back to back; the watcher adds its own on top.
          if ((await fx.broker.reloadPolicies('sighup')).outcome === 'success') swaps++;
        }
      })();
      const outcomes = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const side = i % 2 === 0 ? 'x' : 'y';
          return decide(side).then((outcome) => [side, outcome] as const);
        }),
      );
      flipping = false;
      await flipper;
      for (const [side, outcome] of outcomes) {
        seen[side][outcome]++;
        if (isTorn(side, outcome)) torn++;
      }
    }
    assert.equal(torn, 0, `no request saw a torn set: ${JSON.stringify(seen)}`);
    assert.equal(seen.x.other + seen.y.other, 0, `only the expected decisions: ${JSON.stringify(seen)}`);
    assert.ok(seen.x['issued-A'] > 0 && seen.y['issued-B'] > 0, `both versions served during the load: ${JSON.stringify(seen)}`);
    assert.ok(seen.x.denied > 0 && seen.y.denied > 0, `and refused per version: ${JSON.stringify(seen)}`);
    assert.ok(swaps >= 4, `the set was swapped while requests ran (${swaps} swaps)`);
    // A reload that overlaps a flip may find the directory changed while it read it: it then keeps the
    // serving set and leaves the change to the next reload. Any other failure means a swap was seen half done.
    const failures = logs(fx, 'policy reload failed').filter((l) => !(l.errors as string[]).every((e) => e.endsWith('the directory changed while it was read; the next reload will pick it up')));
    assert.deepEqual(failures, [], 'no reload failed otherwise: a symlink swap is never seen half done');
  });
});

describe('oidc-broker serve (the built CLI)', () => {
  const REPO = fileURLToPath(new URL('..', import.meta.url));
  const BIN = path.join(REPO, 'bin', 'oidc-broker.js');
  let dir: string;
  let child: ChildProcess | undefined;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-reload-cli-'));
  });
  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  test('SIGHUP reloads the policy directory and logs "policies reloaded"; the process keeps serving', async () => {
    await mkdir(path.join(dir, 'policies'));
    // The built-in development defaults configure issuer `local`.
    const policyFile = path.join(dir, 'policies', 'dev.yaml');
    await writeFile(policyFile, allowPolicy('acme/api'));
    const proc = spawn(process.execPath, [BIN, 'serve'], { cwd: dir, env: { ...process.env, BROKER_CONFIG: '', PORT: '0', LOG_LEVEL: 'debug' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    const lines: string[] = [];
    createInterface({ input: proc.stdout }).on('line', (line) => lines.push(line));
    let stderr = '';
    proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const waitFor = async (match: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
      const found = await eventually(
        () => `a log line (so far:\n${lines.join('\n')}\nstderr: ${stderr})`,
        () => {
          if (proc.exitCode !== null) assert.fail(`exited ${proc.exitCode}: ${stderr}`);
          return lines.map((l) => JSON.parse(l) as Record<string, unknown>).find(match);
        },
        (l) => l !== undefined,
        15_000,
      );
      return found!;
    };

    const { url } = (await waitFor((l) => l.msg === 'listening')) as { url: string };
    // Nothing changed: a SIGHUP is a no-op, logged at debug.
    proc.kill('SIGHUP');
    await waitFor((l) => l.msg === 'policies unchanged' && l.trigger === 'sighup');
    // A change followed at once by SIGHUP: the signal's reload runs before the watcher's debounce ends.
    await writeFile(policyFile, allowPolicy('acme/web'));
    proc.kill('SIGHUP');
    const reloaded = await waitFor((l) => l.msg === 'policies reloaded');
    assert.equal(reloaded.trigger, 'sighup');
    assert.equal(reloaded.count, 1);
    assert.match(String(reloaded.sha256), /^[0-9a-f]{64}$/);

    const ready = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http.get(`${url}/readyz`, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      }).on('error', reject);
    });
    assert.equal(ready.status, 200);
    assert.equal((JSON.parse(ready.body) as { policies: PolicySetStatus }).policies.sha256, reloaded.sha256);

    proc.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
  });
});
