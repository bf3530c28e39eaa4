// The GitHub Action with a github grant, end to end: the committed main bundle
// asks a loopback ID token service for the job's token, exchanges it at a real
// broker whose github provider mints an installation token at a loopback
// GitHub API (test/emulators/github/), and the committed post bundle revokes
// that token there with the state the main step saved. Needs the github provider (src/providers/github/).
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { assertMaskedFirst, inputsEnv, parseFileCommands, runStep, stateEnv, warningLine } from './helpers/action.js';
import { AUDIENCE, createCapturingLogger, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { startGithubEmulator, type GithubEmulator } from './emulators/index.js';
import { listen, type RunningServer } from '../src/http/server.js';

const APP_ID = '123456';
const REQUEST_TOKEN = 'runner-request-token-for-tests';
const CLAIMS = { sub: 'repo:acme/app:ref:refs/heads/main', repository: 'acme/app', ref: 'refs/heads/main', event_name: 'push' };

let dir: string;
let github: GithubEmulator;
let fx: BrokerFixture;
let broker: RunningServer;

let idServiceUrl: string;
let idTokens: string[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-action-github-exchange-'));
  stops.push(() => rm(dir, { recursive: true, force: true }));
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = path.join(dir, 'github-app.pem');
  // GitHub hands out App keys as PKCS#1 PEM.
  await writeFile(keyFile, privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
  github = await startGithubEmulator({
    appId: APP_ID,
    publicKey,
    installations: [{ id: 4242, account: 'acme', repositories: ['infra'], permissions: { contents: 'write', pull_requests: 'write', metadata: 'read' } }],
  });
  stops.push(() => github.close());
  fx = await startBrokerFixture({
    policies: {
      'infra-prs.yaml': `
name: infra-prs
issuer: local
claims:
  repository: acme/app
  ref: refs/heads/main
grant:
  provider: github
  repositories: [acme/infra]
  permissions:
    contents: write
    pull_requests: write
`,
    },
    providerConfig: `  github:\n    app_id: ${APP_ID}\n    private_key_file: ${keyFile}\n    api_url: ${github.url}\n`,
  });
  stops.push(() => fx.close());
  broker = await listen(fx.broker, { host: '127.0.0.1', port: 0, logger: createCapturingLogger().logger });
  stops.push(() => broker.shutdown());
  const service = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.headers.authorization !== `Bearer ${REQUEST_TOKEN}`) return res.writeHead(401).end();
      const token = await fx.issuer.mint({ ...CLAIMS, aud: url.searchParams.get('audience') ?? '' });
      idTokens.push(token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value: token }));
    })();
  });
  await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
  stops.push(() => new Promise((resolve) => service.close(resolve)));
  idServiceUrl = `http://127.0.0.1:${(service.address() as AddressInfo).port}`;
});

// Stopped in reverse order of start, each only if it started, so a failed start does not keep the others (and the test process) alive.
const stops: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

beforeEach(() => {
  idTokens = [];
  github.requests.length = 0;
});

/** The main step as a job on a runner whose GITHUB_API_URL is the loopback GitHub. */
function runMain(inputs: Record<string, string> = {}) {
  return runStep('index.js', dir, {
    ACTIONS_ID_TOKEN_REQUEST_URL: `${idServiceUrl}/token?api-version=2.0`,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
    GITHUB_API_URL: github.url,
    ...inputsEnv({ 'broker-url': broker.url, policy: 'infra-prs', audience: AUDIENCE, ...inputs }),
  });
}

const deletes = () => github.requests.filter((r) => r.method === 'DELETE').map(({ method, path, auth, status }) => ({ method, path, auth, status }));
const issued = (token: string) => github.tokens.filter((t) => t.token === token);

describe('GitHub Action with a github grant: exchange, then revocation at job end', () => {
  test('main outputs github-token, masked first and never exported, and saves it; post revokes exactly that token', async () => {
    const main = await runMain();
    assert.equal(main.code, 0, main.stdout + main.stderr);
    const outputs = parseFileCommands(main.outputs);
    assert.deepEqual([...outputs.keys()], ['issuance-id', 'expires-at', 'github-token']);
    const token = outputs.get('github-token')!;
    assert.deepEqual(issued(token).map((t) => t.revoked), [false], 'the output is the token GitHub issued, live');
    const creations = github.requests.filter((r) => r.method === 'POST');
    assert.deepEqual(creations.map((r) => [r.path, r.auth, r.status]), [['/app/installations/4242/access_tokens', 'app', 201]]);
    assert.deepEqual(creations[0]!.body, { repositories: ['infra'], permissions: { contents: 'write', pull_requests: 'write' } });
    assertMaskedFirst(main.stdout, [token, idTokens[0]!, REQUEST_TOKEN]);
    assert.equal(main.stdout.split('\n').filter((line) => line.includes(token)).length, 1, 'the token is printed only on its mask line');
    assert.ok(!main.stdout.includes('::add-mask::token\n'), 'token_type is not masked');
    assert.equal(main.env, '', 'not exported, even with export-env: true');
    const state = parseFileCommands(main.state);
    assert.deepEqual(Object.fromEntries(state), { 'github-token': token, 'github-api-url': github.url, 'github-token-expires-at': outputs.get('expires-at') });
    assert.match(main.stdout, /this action's post step revokes it when the job ends\.$/m);

    const post = await runStep('post.js', dir, stateEnv(main.state));
    assert.equal(post.code, 0, post.stdout + post.stderr);
    assert.deepEqual(deletes(), [{ method: 'DELETE', path: '/installation/token', auth: 'installation', status: 204 }]);
    assert.deepEqual(github.tokens.filter((t) => t.revoked).map((t) => t.token), [token], 'exactly the issued token revoked');
    assert.match(post.stdout, /^Revoked the GitHub token at /m);
    assertMaskedFirst(post.stdout, [token]);
    assert.equal(post.stdout.split('\n').filter((line) => line.includes(token)).length, 1);

    // The job's post step running twice, or after the token expired: GitHub answers 401, a warning.
    const again = await runStep('post.js', dir, stateEnv(main.state));
    assert.equal(again.code, 0);
    assert.match(warningLine(again.stdout), /answered HTTP 401, so it had already expired or been revoked/);
    assert.deepEqual(deletes().at(-1), { method: 'DELETE', path: '/installation/token', auth: 'invalid', status: 401 });
  });

  test('revoke: false saves nothing, so the post step sends nothing and the token stays valid', async () => {
    const main = await runMain({ revoke: 'false' });
    assert.equal(main.code, 0, main.stdout);
    const token = parseFileCommands(main.outputs).get('github-token')!;
    assert.equal(main.state, '');
    assert.match(main.stdout, /revoke is false, so it stays valid until it expires\.$/m);
    const post = await runStep('post.js', dir, stateEnv(main.state));
    assert.equal(post.code, 0);
    assert.equal(post.stdout, '');
    assert.deepEqual(deletes(), []);
    assert.deepEqual(issued(token).map((t) => t.revoked), [false]);
  });
});
