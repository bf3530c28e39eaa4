// The GitHub Action's main step (the committed action/dist/index.js), run as
// the runner runs it, against a real broker behind a loopback proxy that can
// fail, with a stand-in for the runner's ID-token service
// (test/helpers/exchange-setup.ts, shared with the CLI's tests).
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { AUDIENCE } from './helpers/broker-fixture.js';
import { ACTION_DIST, assertMaskedFirst, errorLine, inputsEnv, parseFileCommands, runStep, warningLine, type StepResult } from './helpers/action.js';
import { GOOD_CLAIMS, REQUEST_TOKEN, startExchangeSetup, type ExchangeSetup } from './helpers/exchange-setup.js';

const ROOT = path.resolve(import.meta.dirname, '..');

let setup: ExchangeSetup;
let proxyUrl: string;
let dir: string;

before(async () => {
  setup = await startExchangeSetup();
  proxyUrl = setup.proxyUrl;
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-action-'));
});

after(async () => {
  await setup.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => setup.reset());

/** Runs the committed main bundle with INPUT_* and the command files, an ID token service and fast retries. */
async function runAction(inputs: Record<string, string>, extraEnv: Record<string, string | undefined> = {}): Promise<StepResult> {
  return runStep('index.js', dir, {
    ACTIONS_ID_TOKEN_REQUEST_URL: setup.idTokenRequestUrl,
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
    assert.deepEqual(setup.seen.idAudiences, [AUDIENCE]);
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
    assertMaskedFirst(result.stdout, [token, setup.seen.idTokens[0]!, REQUEST_TOKEN]);
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

  test('a trailing slash on broker-url: the default audience and the exchange URL have none; aws-region is exported twice, unmasked; no "Bearer" mask', async () => {
    const result = await runAction({ 'broker-url': `${proxyUrl}/`, policy: 'deploy', 'aws-region': 'eu-west-1' });
    assert.equal(result.code, 0, result.stdout);
    assert.deepEqual(setup.seen.idAudiences, [proxyUrl]);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange']);
    assert.deepEqual([...parseFileCommands(result.env).keys()], ['AWS_REGION', 'AWS_DEFAULT_REGION', 'OIDC_BROKER_TOKEN']);
    assert.deepEqual(parseFileCommands(result.env).get('AWS_DEFAULT_REGION'), 'eu-west-1');
    assert.ok(!result.stdout.includes('::add-mask::eu-west-1'));
    assert.ok(!result.stdout.includes('::add-mask::Bearer'));
    assert.deepEqual(result.stdout.split('\n').filter((line) => line.startsWith('::add-mask::')).length, 3, 'the request token, the ID token and the credential; nothing else');
  });

  test('aws-region is exported even when the exchange then fails', async () => {
    setup.steer.claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature' };
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', 'aws-region': 'us-east-2' });
    assert.equal(result.code, 1);
    assert.deepEqual([...parseFileCommands(result.env).entries()], [['AWS_REGION', 'us-east-2'], ['AWS_DEFAULT_REGION', 'us-east-2']]);
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
      assert.equal(setup.seen.idTokens.length, 0);
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
      assert.equal(setup.seen.idTokens.length, 0);
      assert.equal(result.env, '');
    });
  }

  test('without id-token: write, says so', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy' }, { ACTIONS_ID_TOKEN_REQUEST_URL: undefined, ACTIONS_ID_TOKEN_REQUEST_TOKEN: undefined });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /this job needs `permissions: id-token: write`/);
    assert.equal(setup.seen.exchanges.length, 0);
    assert.equal(result.outputs, '');
  });

  test('an audience the broker does not accept names the audience input', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: 'https://elsewhere.example.com' });
    assert.equal(result.code, 1);
    assert.deepEqual(setup.seen.idAudiences, ['https://elsewhere.example.com']);
    assert.match(errorLine(result.stdout), /the audience input must be one of the broker's accepted audiences \(default: broker-url without a trailing slash\)/);
    assert.match(errorLine(result.stdout), /broker request id /);
    assert.equal(setup.seen.exchanges.length, 1, '4xx is never retried');
  });

  test('a denial names the policy and the broker reason, and is not retried', async () => {
    setup.steer.claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature' };
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 1);
    const line = errorLine(result.stdout);
    assert.match(line, /^::error::Policy "deploy" denied this job: \S/);
    assert.equal(setup.seen.exchanges.length, 1);
    assert.equal(setup.seen.idTokens.length, 1);
    assert.equal(result.outputs, '');
    assert.equal(result.env, '');
  });

  test('an unknown policy says to check the policy input', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'nope', audience: AUDIENCE });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /no policy "nope": check the policy input/);
    assert.equal(setup.seen.exchanges.length, 1);
  });

  test('a 503 is retried with a fresh ID token', async () => {
    setup.steer.failFirst = 1;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 0, result.stdout);
    assert.equal(setup.seen.exchanges.length, 2);
    assert.equal(setup.seen.idTokens.length, 2);
    assert.notEqual(setup.seen.idTokens[0], setup.seen.idTokens[1]);
    assert.match(result.stdout, /Attempt 1 of 3 failed: The broker answered HTTP 503/);
    assertMaskedFirst(result.stdout, [setup.seen.idTokens[0]!, setup.seen.idTokens[1]!, parseFileCommands(result.env).get('OIDC_BROKER_TOKEN')!]);
  });

  test("a 503 with Retry-After waits what the broker asked (capped), and a 403 is never retried", async () => {
    setup.steer.failFirst = 1;
    setup.steer.retryAfter = '1';
    const retried = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(retried.code, 0, retried.stdout);
    assert.equal(setup.seen.exchanges.length, 2);
    assert.match(retried.stdout, /^Attempt 1 of 3 failed: The broker answered HTTP 503 not_ready: Try again\. \(broker request id r-503\) Retrying in 1000 ms with a fresh ID token\.$/m);

    setup.seen.exchanges.length = 0;
    setup.steer.failFirst = 0;
    setup.steer.claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature' };
    const denied = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'retry-max-attempts': '5' });
    assert.equal(denied.code, 1);
    assert.equal(setup.seen.exchanges.length, 1);
    assert.ok(!denied.stdout.includes('Attempt 1'));
  });

  test('retry-max-attempts bounds the attempts', async () => {
    setup.steer.failFirst = 10;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE, 'retry-max-attempts': '2' });
    assert.equal(result.code, 1);
    assert.equal(setup.seen.exchanges.length, 2);
    assert.match(result.stdout, /^Attempt 1 of 2 failed/m);
  });

  test('gives up after three 503s', async () => {
    setup.steer.failFirst = 10;
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', audience: AUDIENCE });
    assert.equal(result.code, 1);
    assert.equal(setup.seen.exchanges.length, 3);
    assert.equal(setup.seen.idTokens.length, 3);
    assert.match(errorLine(result.stdout), /HTTP 503 not_ready: Try again\. \(broker request id r-503\)/);
  });

  test('refuses a bad duration-seconds before any request', async () => {
    const result = await runAction({ 'broker-url': proxyUrl, policy: 'deploy', 'duration-seconds': '5m' });
    assert.equal(result.code, 1);
    assert.match(errorLine(result.stdout), /duration-seconds input must be a positive whole number/);
    assert.equal(setup.seen.idTokens.length, 0);
  });

  test('action.yml runs on node24, and its inputs and outputs are exactly those docs/ci/github-actions.md documents', async () => {
    const action = parse(await readFile(path.join(ROOT, 'action.yml'), 'utf8')) as { inputs: Record<string, unknown>; outputs: Record<string, unknown>; runs: { using: string } };
    assert.equal(action.runs.using, 'node24');
    const doc = await readFile(path.join(ROOT, 'docs', 'ci', 'github-actions.md'), 'utf8');
    const section = (title: string) => doc.slice(doc.indexOf(`## ${title}`), doc.indexOf('\n## ', doc.indexOf(`## ${title}`) + 1));
    const firstColumn = (text: string) => [...text.matchAll(/^\| `([a-z-]+)` \|/gm)].map((m) => m[1]!);
    assert.deepEqual(firstColumn(section('Inputs')).sort(), Object.keys(action.inputs).sort());
    const documentedOutputs = [...section('Outputs and exported variables').matchAll(/`([a-z]+(?:-[a-z]+)+)`/g)].map((m) => m[1]!);
    for (const output of Object.keys(action.outputs)) assert.ok(documentedOutputs.includes(output), `output ${output} is documented`);
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
