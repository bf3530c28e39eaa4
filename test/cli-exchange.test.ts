// `oidc-broker exchange` (src/cli/exchange.ts over src/client/) as a real
// process from bin/, and as the single-file bundle, against a real broker
// behind a loopback proxy that can fail, with tokens from a file, an
// environment variable, a command and a stand-in for GitHub's ID-token service.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { AUDIENCE } from './helpers/broker-fixture.js';
import { cliProcess, REPO, type CliRun } from './helpers/cli.js';
import { REQUEST_TOKEN, startExchangeSetup, type ExchangeSetup } from './helpers/exchange-setup.js';

const BUNDLE = path.join(REPO, 'client', 'dist', 'oidc-broker-exchange.cjs');

let setup: ExchangeSetup;
let dir: string;

before(async () => {
  setup = await startExchangeSetup();
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-exchange-'));
});

after(async () => {
  await setup.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => setup.reset());

/** `oidc-broker exchange <args>` with `env` added and nothing of the test's own OIDC_BROKER_* or ACTIONS_* variables. */
function exchange(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return cliProcess(['exchange', '--retry-base-delay', '0.01', ...args], {
    env: { OIDC_BROKER_URL: '', OIDC_BROKER_POLICY: '', ACTIONS_ID_TOKEN_REQUEST_URL: '', ACTIONS_ID_TOKEN_REQUEST_TOKEN: '', ...env },
  });
}

/** No token the test minted and no credential it received is on stderr. */
function assertNoSecretOnStderr(run: CliRun, secrets: string[]): void {
  for (const secret of [...setup.seen.idTokens, ...secrets]) assert.ok(!run.stderr.includes(secret), 'stderr never holds a token or credential');
}

const githubEnv = () => ({ ACTIONS_ID_TOKEN_REQUEST_URL: setup.idTokenRequestUrl, ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN });

describe('oidc-broker exchange: every format, every token source', () => {
  test('--format json with --token-env: the exchange response on stdout, nothing on stderr', async () => {
    const token = await setup.mint();
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--token-env', 'CI_TOKEN', '--duration', '300'], { CI_TOKEN: token });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
    const body = JSON.parse(run.stdout);
    assert.deepEqual(Object.keys(body), ['issuance_id', 'policy', 'provider', 'expires_at', 'credentials']);
    assert.equal(body.policy, 'deploy');
    assert.equal(body.credentials.token_type, 'Bearer');
    const payload = JSON.parse(Buffer.from(body.credentials.access_token.split('.')[1], 'base64url').toString('utf8'));
    assert.ok(payload.exp - payload.iat <= 300);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange']);
  });

  test('--format env with --token-file: export lines a shell can eval, AWS_REGION included', async () => {
    const file = path.join(dir, 'token');
    await writeFile(file, `${await setup.mint()}\n`);
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'aws-deploy', '--token-file', file, '--format', 'env']);
    assert.equal(run.code, 0, run.stderr);
    const issued = setup.aws.sts.requests.at(-1)!.credentials!;
    assert.equal(
      run.stdout,
      `export AWS_ACCESS_KEY_ID='${issued.AccessKeyId}'\nexport AWS_SECRET_ACCESS_KEY='${issued.SecretAccessKey}'\nexport AWS_SESSION_TOKEN='${issued.SessionToken}'\nexport AWS_REGION='eu-west-1'\n`,
    );
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange?format=env']);
    assert.equal(run.stderr, '');
  });

  test('--format credential-process with --github-actions: AWS CLI Version 1 JSON; the audience asked for is --audience', async () => {
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'aws-deploy', '--github-actions', '--audience', AUDIENCE, '--format', 'credential-process'], githubEnv());
    assert.equal(run.code, 0, run.stderr);
    const issued = setup.aws.sts.requests.at(-1)!.credentials!;
    const body = JSON.parse(run.stdout);
    assert.deepEqual(body, { Version: 1, AccessKeyId: issued.AccessKeyId, SecretAccessKey: issued.SecretAccessKey, SessionToken: issued.SessionToken, Expiration: body.Expiration });
    assert.equal(Date.parse(body.Expiration), issued.Expiration.getTime());
    assert.deepEqual(setup.seen.idAudiences, [AUDIENCE]);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange?format=credential_process']);
  });

  test('--github-actions without --audience asks for --url without its trailing slash', async () => {
    const run = await exchange(['--url', `${setup.proxyUrl}/`, '--policy', 'deploy', '--github-actions'], githubEnv());
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(setup.seen.idAudiences, [setup.proxyUrl]);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange'], 'no double slash');
  });

  test('an audience the broker does not accept is its answer: exit 1, not retried', async () => {
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--github-actions', '--audience', 'https://elsewhere.example.com'], githubEnv());
    assert.equal(run.code, 1);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange']);
    assert.match(run.stderr, /^oidc-broker: The broker answered HTTP 401 invalid_token: .*audience.* \(broker request id \S+\)\n$/);
    assertNoSecretOnStderr(run, []);
  });

  test('--token-command runs for every attempt, so a retry sends a fresh token', async () => {
    setup.steer.failFirst = 1;
    const mint = `curl -sf -X POST '${setup.aws.fx.issuer.url}/token?format=raw' -H 'content-type: application/json' -d '${JSON.stringify({ ...setup.steer.claims, aud: AUDIENCE })}'`;
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--token-command', mint]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(setup.seen.exchanges.length, 2);
    assert.ok(JSON.parse(run.stdout).credentials.access_token);
  });

  test('OIDC_BROKER_URL and OIDC_BROKER_POLICY stand in for --url and --policy', async () => {
    const run = await exchange(['--token-env', 'CI_TOKEN'], { CI_TOKEN: await setup.mint(), OIDC_BROKER_URL: setup.proxyUrl, OIDC_BROKER_POLICY: 'deploy' });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).policy, 'deploy');
  });
});

describe('oidc-broker exchange: retries only what can succeed', () => {
  test('a 503 with Retry-After: 1 is retried once after 1 s, with a fresh ID token', async () => {
    setup.steer.failFirst = 1;
    setup.steer.retryAfter = '1';
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--github-actions', '--audience', AUDIENCE], githubEnv());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(setup.seen.exchanges.length, 2);
    assert.equal(setup.seen.idTokens.length, 2);
    assert.notEqual(setup.seen.idTokens[0], setup.seen.idTokens[1]);
    assert.equal(run.stderr, 'oidc-broker: attempt 1 of 3 failed: The broker answered HTTP 503 not_ready: Try again. (broker request id r-503) Retrying in 1000 ms.\n');
    assertNoSecretOnStderr(run, [JSON.parse(run.stdout).credentials.access_token]);
  });

  test('Retry-After is capped by --max-retry-delay', async () => {
    setup.steer.failFirst = 1;
    setup.steer.retryAfter = '3600';
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--token-env', 'CI_TOKEN', '--max-retry-delay', '0.05'], { CI_TOKEN: await setup.mint() });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /Retrying in 50 ms\.\n$/);
  });

  test('gives up after --max-attempts, exit 1 with the last answer', async () => {
    setup.steer.failFirst = 10;
    const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--token-env', 'CI_TOKEN', '--max-attempts', '2'], { CI_TOKEN: await setup.mint() });
    assert.equal(run.code, 1);
    assert.equal(setup.seen.exchanges.length, 2);
    const lines = run.stderr.split('\n');
    assert.match(lines[0]!, /^oidc-broker: attempt 1 of 2 failed: The broker answered HTTP 503 not_ready: Try again\. \(broker request id r-503\) Retrying in \d+ ms\.$/);
    assert.equal(lines[1], 'oidc-broker: The broker answered HTTP 503 not_ready: Try again. (broker request id r-503)');
    assert.equal(run.stdout, '');
  });

  for (const format of ['json', 'env'] as const) {
    test(`a 403 is never retried: exit 1, the broker's code and reason on stderr (--format ${format})`, async () => {
      setup.steer.claims = { ...setup.steer.claims, ref: 'refs/heads/feature' };
      const run = await exchange(['--url', setup.proxyUrl, '--policy', 'deploy', '--github-actions', '--audience', AUDIENCE, '--format', format, '--max-attempts', '5'], githubEnv());
      assert.equal(run.code, 1);
      assert.equal(setup.seen.exchanges.length, 1);
      assert.equal(setup.seen.idTokens.length, 1);
      assert.match(
        run.stderr,
        /^oidc-broker: The broker answered HTTP 403 access_denied: Policy 'deploy' does not match this token: claim 'ref' is "refs\/heads\/feature"\. \(broker request id [0-9A-Z]{26}\)\n$/,
      );
      assert.equal(run.stdout, '');
      assertNoSecretOnStderr(run, []);
    });
  }

  test('a network error is retried, then reported', async () => {
    const run = await exchange(['--url', 'http://127.0.0.1:9', '--policy', 'deploy', '--token-env', 'CI_TOKEN', '--max-attempts', '2'], { CI_TOKEN: await setup.mint() });
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^oidc-broker: attempt 1 of 2 failed: Could not reach the broker at http:\/\/127\.0\.0\.1:9: .+ Retrying in \d+ ms\.\noidc-broker: Could not reach the broker at http:\/\/127\.0\.0\.1:9: .+\n$/);
  });
});

describe('oidc-broker exchange: bad input', () => {
  const URL_ARGS = () => ['--url', setup.proxyUrl, '--policy', 'deploy'];
  const usage: [string, () => string[], string][] = [
    ['no --url', () => ['--policy', 'deploy', '--token-env', 'T'], 'exchange: --url (or OIDC_BROKER_URL) is required.'],
    ['no --policy', () => ['--url', setup.proxyUrl, '--token-env', 'T'], 'exchange: --policy (or OIDC_BROKER_POLICY) is required.'],
    ['no token source', URL_ARGS, 'exchange: give exactly one of --token-file, --token-env, --token-command, --github-actions (got 0).'],
    ['two token sources', () => [...URL_ARGS(), '--token-env', 'T', '--github-actions'], 'exchange: give exactly one of --token-file, --token-env, --token-command, --github-actions (got 2).'],
    ['--audience without --github-actions', () => [...URL_ARGS(), '--token-env', 'T', '--audience', 'x'], 'exchange: --audience is for --github-actions; other sources carry the audience their CI minted.'],
    ['a bad --format', () => [...URL_ARGS(), '--token-env', 'T', '--format', 'yaml'], 'exchange: --format must be json, env or credential-process, not "yaml".'],
    ['--max-attempts 0', () => [...URL_ARGS(), '--token-env', 'T', '--max-attempts', '0'], 'exchange: --max-attempts must be a whole number from 1 to 10, not "0".'],
    ['--duration 5m', () => [...URL_ARGS(), '--token-env', 'T', '--duration', '5m'], 'exchange: --duration must be a whole number from 1 to 999999999, not "5m".'],
    ['--max-retry-delay -1', () => [...URL_ARGS(), '--token-env', 'T', '--max-retry-delay=-1'], 'exchange: --max-retry-delay must be a number of seconds from 0 to 3600, not "-1".'],
    [
      'plain http off loopback',
      () => ['--url', 'http://broker.example.com', '--policy', 'deploy', '--token-env', 'T'],
      'exchange: --url "http://broker.example.com" must be an https:// URL (http:// only for 127.0.0.1, [::1] or localhost): the CI token is sent to it.',
    ],
    ['not a URL', () => ['--url', 'broker', '--policy', 'deploy', '--token-env', 'T'], 'exchange: --url "broker" is not a URL; expected an https:// URL (http:// only for 127.0.0.1, [::1] or localhost), e.g. https://broker.example.com.'],
  ];
  for (const [name, args, message] of usage) {
    test(`${name}: exit 2, nothing sent`, async () => {
      const run = await exchange(args(), { T: 'x' });
      assert.equal(run.code, 2, run.stderr);
      assert.equal(run.stderr, `oidc-broker: ${message}\n`);
      assert.equal(run.stdout, '');
      assert.deepEqual(setup.seen.exchanges, []);
    });
  }

  test('an unknown option is a usage error too (exit 2)', async () => {
    const run = await exchange([...URL_ARGS(), '--token-env', 'T', '--token'], { T: 'x' });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^error: unknown option '--token'/);
  });

  const failures: [string, () => [string[], Record<string, string>], string][] = [
    ['an unset --token-env variable', () => [['--token-env', 'NOPE'], {}], 'The environment variable NOPE is empty: no CI token to exchange.'],
    ['a missing --token-file', () => [['--token-file', '/nonexistent/ci-token'], {}], 'Cannot read the token file /nonexistent/ci-token: ENOENT.'],
    ['a variable holding more than one word', () => [['--token-env', 'T'], { T: 'a b' }], 'The environment variable T does not hold a CI token (one JWT, at most 16 KiB).'],
    ['a failing --token-command', () => [['--token-command', 'exit 3'], {}], 'The token command failed (exit 3); see its output above.'],
    [
      '--github-actions without id-token: write',
      () => [['--github-actions'], {}],
      'The job has no ID token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): this job needs `permissions: id-token: write`. Add it to the job or the workflow. Pull requests from forks never get one.',
    ],
  ];
  for (const [name, make, message] of failures) {
    test(`${name}: exit 1 with the reason, nothing sent`, async () => {
      const [args, env] = make();
      const run = await exchange([...URL_ARGS(), ...args], env);
      assert.equal(run.code, 1);
      assert.equal(run.stderr, `oidc-broker: ${message}\n`);
      assert.deepEqual(setup.seen.exchanges, []);
    });
  }
});

describe('the single-file bundle (client/dist/oidc-broker-exchange.cjs)', () => {
  test('runs alone, copied into an empty directory with nothing but node', async () => {
    const copy = path.join(dir, 'bundle', 'oidc-broker-exchange.cjs');
    await mkdir(path.dirname(copy));
    await copyFile(BUNDLE, copy);
    const child = spawn(process.execPath, [copy, '--url', setup.proxyUrl, '--policy', 'aws-deploy', '--token-env', 'CI_TOKEN', '--format', 'env'], {
      cwd: path.dirname(copy),
      env: { CI_TOKEN: await setup.mint() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    assert.equal(await new Promise((resolve) => child.on('close', resolve)), 0, stderr);
    assert.match(stdout, /^export AWS_ACCESS_KEY_ID='ASIA[0-9A-Z]+'\n/);
    assert.equal(stderr, '');
  });

  test('--version prints the package version, which the bundle carries in itself', async () => {
    const { version } = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    const copy = path.join(dir, 'bundle', 'oidc-broker-exchange.cjs');
    const child = spawn(process.execPath, [copy, '--version'], { cwd: path.dirname(copy), env: {}, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    assert.equal(await new Promise((resolve) => child.on('close', resolve)), 0);
    assert.equal(stdout, `${version}\n`);
  });

  test('is what npm run build:client produces from client/src and src/', async () => {
    const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const script = pkg.scripts['build:client']!;
    const outfile = path.join(dir, 'rebuilt.cjs');
    const args = script.split(' ').slice(1).map((arg) => (arg.startsWith('--outfile=') ? `--outfile=${outfile}` : arg));
    assert.ok(args.includes(`--outfile=${outfile}`));
    const child = spawn(path.join(REPO, 'node_modules', '.bin', 'esbuild'), [...args, '--log-level=warning'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    assert.equal(await new Promise((resolve) => child.on('close', resolve)), 0, stderr);
    assert.equal(await readFile(outfile, 'utf8'), await readFile(BUNDLE, 'utf8'), 'client/dist is stale: run npm run build:client and commit it');
  });
});
