import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AUDIENCE, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { ACTION_DIST, assertMaskedFirst, errorLine, inputsEnv, parseFileCommands, runStep, warningLine, type StepResult } from './helpers/action.js';
import { listen, type RunningServer } from '../src/http/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const REQUEST_TOKEN = 'runner-request-token-for-tests';

const POLICIES = {
  'deploy.yaml': `
name: deploy
issuer: local
claims:
  repository: acme/api
  ref: refs/heads/main
grant:
  provider: jwt
  audience: https://deploy.example.com
  max_duration_seconds: 600
  claims:
    repo: \${repository}
`,
};
const GOOD_CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' };

let fx: BrokerFixture;
let broker: RunningServer;
let idService: http.Server;
let idServiceUrl: string;
let proxy: http.Server;
let proxyUrl: string;
let dir: string;

/** Per test: the claims the ID token service mints, what it saw, and how many broker requests fail first. */
let claims: Record<string, unknown> = GOOD_CLAIMS;
let idTokens: string[] = [];
let idAudiences: string[] = [];
let exchangeRequests = 0;
let exchangePaths: string[] = [];
let failFirst = 0;
/** The Retry-After header of the proxy's 503s, if any. */
let retryAfter: string | undefined;

async function listenOn(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
  broker = await listen(fx.broker, { host: '127.0.0.1', port: 0, logger: createCapturingLogger().logger });
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-action-'));

  // The runner's ID token service: checks the request token, mints for the requested audience.
  idService = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.headers.authorization !== `Bearer ${REQUEST_TOKEN}` || url.searchParams.get('api-version') !== '2.0') {
        res.writeHead(401).end();
        return;
      }
      const aud = url.searchParams.get('audience');
      if (!aud) return res.writeHead(400).end();
      idAudiences.push(aud);
      const token = await fx.issuer.mint({ ...claims, aud });
      idTokens.push(token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1, value: token }));
    })();
  });
  idServiceUrl = await listenOn(idService);

  // In front of the broker: counts exchanges and can answer 503 to the first ones.
  proxy = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      void (async () => {
        exchangeRequests++;
        exchangePaths.push(req.url ?? '');
        if (exchangeRequests <= failFirst) {
          res.writeHead(503, { 'content-type': 'application/json', ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }) }).end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'Try again.', request_id: 'r-503' }));
          return;
        }
        const headers: Record<string, string> = {};
        for (const name of ['authorization', 'content-type', 'accept']) if (typeof req.headers[name] === 'string') headers[name] = req.headers[name];
        const upstream = await fetch(`${broker.url}${req.url}`, { method: req.method, headers, body: Buffer.concat(chunks) });
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' }).end(Buffer.from(await upstream.arrayBuffer()));
      })();
    });
  });
  proxyUrl = await listenOn(proxy);
});

after(async () => {
  await new Promise((resolve) => idService.close(resolve));
  await new Promise((resolve) => proxy.close(resolve));
  await broker.shutdown();
  await fx.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  claims = GOOD_CLAIMS;
  idTokens = [];
  idAudiences = [];
  exchangeRequests = 0;
  exchangePaths = [];
  failFirst = 0;
  retryAfter = undefined;
});

/** Runs the committed main bundle with INPUT_* and the command files, an ID token service and fast retries. */
async function runAction(inputs: Record<string, string>, extraEnv: Record<string, string | undefined> = {}): Promise<StepResult> {
  return runStep('index.js', dir, {
    ACTIONS_ID_TOKEN_REQUEST_URL: `${idServiceUrl}/token?api-version=2.0`,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
    OIDC_BROKER_ACTION_RETRY_BASE_MS: '10',
    ...inputsEnv(inputs),
    ...extraEnv,
  });
}

describe('GitHub Action (action/dist/index.js)', () => {
  test('exchanges the ID token, writes outputs and env in heredoc format, masks every secret first', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'duration-seconds': '300', 'output-credentials': 'true' });
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.deepEqual(idAudiences, [AUDIENCE]);
    const outputs = parseFileCommands(result.outputs);
    assert.deepEqual([...outputs.keys()], ['issuance-id', 'expires-at', 'access-token']);
    const token = outputs.get('access-token')!;
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    assert.equal(payload.aud, 'https://deploy.example.com');
    assert.equal(payload.repo, 'acme/api');
    assert.ok((payload.exp as number) - (payload.iat as number) <= 300);
    assert.match(outputs.get('issuance-id')!, /\S/);
    assert.ok(!Number.isNaN(Date.parse(outputs.get('expires-at')!)));
    const env = parseFileCommands(result.env);
    assert.deepEqual([...env.entries()], [['OIDC_BROKER_TOKEN', token]]);
    assertMaskedFirst(result.stdout, [token, idTokens[0]!, REQUEST_TOKEN]);
    assert.equal(result.state, '', 'only a GitHub token is kept for the post step');
    assert.ok(!result.stdout.includes('::add-mask::Bearer'), 'token_type is not a secret: masking it would blank every "Bearer" in the log');
    assert.ok(!result.stdout.includes('::error::'));
    assert.equal(result.stderr, '');
  });

  test('export-env: false with output-credentials: true writes outputs only', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'export-env': 'false', 'output-credentials': 'true' });
    assert.equal(result.code, 0, result.stdout);
    assert.ok(parseFileCommands(result.outputs).has('access-token'));
    assert.equal(result.env, '');
    assert.equal(warningLine(result.stdout), '');
  });

  test('by default (output-credentials: false) the credential is exported only, never an output', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 0, result.stdout);
    assert.deepEqual([...parseFileCommands(result.outputs).keys()], ['issuance-id', 'expires-at']);
    assert.deepEqual([...parseFileCommands(result.env).keys()], ['OIDC_BROKER_TOKEN']);
    assert.match(result.stdout, /exported OIDC_BROKER_TOKEN; no credential outputs \(output-credentials is false\)\.$/m);
  });

  test('export-env and output-credentials both false: issued, and a warning says no step can use it', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'export-env': 'false' });
    assert.equal(result.code, 0, result.stdout);
    assert.equal(result.env, '');
    assert.equal(
      warningLine(result.stdout),
      '::warning::export-env and output-credentials are both false: the credential was issued but no later step can use it. Set one of them to true.',
    );
  });

  test('a trailing slash on broker-url: the default audience and the exchange URL have none; aws-region is exported twice, unmasked', async () => {
    const result = await runAction({ 'broker-url': `${proxyUrl}/`, policy: 'deploy', 'aws-region': 'eu-west-1' });
    // The proxy's URL is not the fixture's accepted audience, so the broker refuses: what matters is what was asked and where.
    assert.deepEqual(idAudiences, [proxyUrl]);
    assert.deepEqual(exchangePaths, ['/v1/exchange']);
    assert.equal(result.code, 1);
    assert.deepEqual([...parseFileCommands(result.env).entries()], [['AWS_REGION', 'eu-west-1'], ['AWS_DEFAULT_REGION', 'eu-west-1']]);
    assert.ok(!result.stdout.includes('::add-mask::eu-west-1'));
  });

  test('aws-region and the trailing slash with an accepted audience: exchanged, region and credential exported, no "Bearer" mask', async () => {
    const result = await runAction({ 'broker-url': `${proxyUrl}/`, policy: 'deploy', audience: AUDIENCE, 'aws-region': 'us-east-2' });
    assert.equal(result.code, 0, result.stdout);
    assert.deepEqual([...parseFileCommands(result.env).keys()], ['AWS_REGION', 'AWS_DEFAULT_REGION', 'OIDC_BROKER_TOKEN']);
    assert.ok(!result.stdout.includes('::add-mask::Bearer'));
    assert.deepEqual(result.stdout.split('\n').filter((line) => line.startsWith('::add-mask::')).length, 3, 'the request token, the ID token and the credential; nothing else');
  });

  for (const [value, message] of [
    ['http://broker.example.com', 'The broker-url input "http://broker.example.com" must be an https:// URL (http:// only for 127.0.0.1, [::1] or localhost): the CI token is sent to it.'],
    ['broker.example.com', 'The broker-url input "broker.example.com" is not a URL; expected an https:// URL (http:// only for 127.0.0.1, [::1] or localhost), e.g. https://broker.example.com.'],
    ['https://broker.example.com/?x=1', 'The broker-url input "https://broker.example.com/?x=1" must be a plain base URL, e.g. https://broker.example.com.'],
  ] as const) {
    test(`broker-url ${value} is refused before any request, saying what is accepted`, async () => {
      const result = await runAction({ 'broker-url': value, policy: 'deploy' });
      assert.equal(result.code, 1);
      assert.equal(errorLine(result.stdout), `::error::${message}`);
      assert.equal(idTokens.length, 0);
    });
  }

  for (const [input, value, message] of [
    ['aws-region', 'Europe', 'The aws-region input must be an AWS region such as eu-west-1, not "Europe".'],
    ['retry-max-attempts', '0', 'The retry-max-attempts input must be a whole number from 1 to 10, not "0".'],
    ['retry-max-attempts', '11', 'The retry-max-attempts input must be a whole number from 1 to 10, not "11".'],
    ['output-credentials', 'yes', 'The output-credentials input must be true or false, not "yes".'],
  ] as const) {
    test(`${input}: ${value} is refused before any request`, async () => {
      const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', [input]: value });
      assert.equal(result.code, 1);
      assert.equal(errorLine(result.stdout), `::error::${message}`);
      assert.equal(idTokens.length, 0);
      assert.equal(result.env, '');
    });
  }

  test('without id-token: write, says so', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy' }, { ACTIONS_ID_TOKEN_REQUEST_URL: undefined, ACTIONS_ID_TOKEN_REQUEST_TOKEN: undefined });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /this job needs `permissions: id-token: write`/);
    assert.equal(exchangeRequests, 0);
    assert.equal(result.outputs, '');
  });

  test('a wrong audience (default broker-url) names the audience input', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy' });
    assert.equal(result.code, 1);
    assert.deepEqual(idAudiences, [proxyUrl]);
    assert.match(errorLine(result.stdout), /the audience input must be one of the broker's accepted audiences \(default: broker-url without a trailing slash\)/);
    assert.match(errorLine(result.stdout), /broker request id /);
    assert.equal(exchangeRequests, 1, '4xx is never retried');
  });

  test('a denial names the policy and the broker reason, and is not retried', async () => {
    claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature' };
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 1);
    const line = errorLine(result.stdout);
    assert.match(line, /^::error::Policy "deploy" denied this job: \S/);
    assert.equal(exchangeRequests, 1);
    assert.equal(idTokens.length, 1);
    assert.equal(result.outputs, '');
    assert.equal(result.env, '');
  });

  test('an unknown policy says to check the policy input', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'nope', audience: AUDIENCE });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /no policy "nope": check the policy input/);
    assert.equal(exchangeRequests, 1);
  });

  test('a 503 is retried with a fresh ID token', async () => {
    failFirst = 1;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 0, result.stdout);
    assert.equal(exchangeRequests, 2);
    assert.equal(idTokens.length, 2);
    assert.notEqual(idTokens[0], idTokens[1]);
    assert.match(result.stdout, /Attempt 1 of 3 failed: The broker answered HTTP 503/);
    assertMaskedFirst(result.stdout, [idTokens[0]!, idTokens[1]!, parseFileCommands(result.env).get('OIDC_BROKER_TOKEN')!]);
  });

  test("a 503 with Retry-After waits what the broker asked (capped), and a 403 is never retried", async () => {
    failFirst = 1;
    retryAfter = '1';
    const retried = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(retried.code, 0, retried.stdout);
    assert.equal(exchangeRequests, 2);
    assert.match(retried.stdout, /^Attempt 1 of 3 failed: The broker answered HTTP 503 temporarily_unavailable: Try again\. \(broker request id r-503\) Retrying in 1000 ms with a fresh ID token\.$/m);

    exchangeRequests = 0;
    failFirst = 0;
    claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature' };
    const denied = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'retry-max-attempts': '5' });
    assert.equal(denied.code, 1);
    assert.equal(exchangeRequests, 1);
    assert.ok(!denied.stdout.includes('Attempt 1'));
  });

  test('retry-max-attempts bounds the attempts', async () => {
    failFirst = 10;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'retry-max-attempts': '2' });
    assert.equal(result.code, 1);
    assert.equal(exchangeRequests, 2);
    assert.match(result.stdout, /^Attempt 1 of 2 failed/m);
  });

  test('gives up after three 503s', async () => {
    failFirst = 10;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 1);
    assert.equal(exchangeRequests, 3);
    assert.equal(idTokens.length, 3);
    assert.match(errorLine(result.stdout), /HTTP 503 temporarily_unavailable: Try again\. \(broker request id r-503\)/);
  });

  test('refuses a bad duration-seconds before any request', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', 'duration-seconds': '5m' });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /duration-seconds input must be a positive whole number/);
    assert.equal(idTokens.length, 0);
  });

  test('the committed bundles are what npm run build:action produces from action/src', async () => {
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const script = pkg.scripts['build:action']!;
    assert.ok(script.includes('--outdir=action/dist'));
    const outdir = path.join(dir, 'rebuilt');
    const args = script.split(' ').slice(1).map((arg) => (arg === '--outdir=action/dist' ? `--outdir=${outdir}` : arg));
    const child = spawn(path.join(ROOT, 'node_modules', '.bin', 'esbuild'), [...args, '--log-level=warning'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    assert.equal(await new Promise((resolve) => child.on('close', resolve)), 0, stderr);
    assert.deepEqual((await readdir(outdir)).sort(), (await readdir(ACTION_DIST)).sort(), 'action/dist holds exactly the bundles the build makes');
    for (const bundle of ['index.js', 'post.js']) {
      assert.equal(await readFile(path.join(outdir, bundle), 'utf8'), await readFile(path.join(ACTION_DIST, bundle), 'utf8'), `action/dist/${bundle} is stale: run npm run build:action and commit it`);
    }
  });
});
