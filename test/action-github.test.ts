// The Action's GitHub token revocation (action/src/post.ts, action/src/revoke.ts):
// the post step run from the committed bundle with the state a main step
// saves, against the loopback GitHub emulator (test/emulators/github/), which
// holds that token as live; and the main step's checks of the
// revoke and github-api-url inputs. The whole main-then-post path through a
// broker with a github grant is in test/action-github-exchange.test.ts.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { assertMaskedFirst, errorLine, inputsEnv, runStep, warningLine } from './helpers/action.js';
import { startGithubEmulator, type GithubEmulator, type GithubEmulatorOptions } from './emulators/index.js';

const TOKEN = 'ghs_actiontestinstallationtoken0000000001';
const EXPIRES_AT = '2026-12-06T10:00:00Z';
const INSTALLATION_ID = 4242;
// The post step never signs an App JWT; the App is there because the emulator serves one.
const EMULATOR: GithubEmulatorOptions = {
  appId: '123456',
  publicKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
  installations: [{ id: INSTALLATION_ID, account: 'acme', repositories: ['infra'], permissions: { contents: 'write', metadata: 'read' } }],
};

let github: GithubEmulator;
let dir: string;

before(async () => {
  github = await startGithubEmulator(EMULATOR);
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-action-github-'));
});

after(async () => {
  await github.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  github.requests.length = 0;
  github.tokens.length = 0;
  // Valid well past EXPIRES_AT, the date the post step is told, so the emulator's answer never depends on today's date.
  github.addToken(TOKEN, { installationId: INSTALLATION_ID, repositories: ['acme/infra'], permissions: { contents: 'write' }, expiresAt: new Date(Date.now() + 3_600_000) });
  github.setFault({ kind: 'none' });
});

/** What the emulator saw of each request. */
const seen = () => github.requests.map(({ method, path, auth, status }) => ({ method, path, auth, status }));
const isRevoked = () => github.tokens.find((t) => t.token === TOKEN)?.revoked;

/** The post step with the state a main step saves for a github grant with `revoke: true`. */
function runPost(apiUrl = github.url) {
  return runStep('post.js', dir, { 'STATE_github-token': TOKEN, 'STATE_github-api-url': apiUrl, 'STATE_github-token-expires-at': EXPIRES_AT });
}

/** The token appears in the log only on its mask line. */
function assertNeverInClear(stdout: string): void {
  assertMaskedFirst(stdout, [TOKEN]);
  assert.equal(stdout.split('\n').filter((line) => line.includes(TOKEN)).length, 1);
}

describe('GitHub Action post step (action/dist/post.js)', () => {
  test('revokes the saved token with DELETE /installation/token, the token as bearer, and says so', async () => {
    const result = await runPost();
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.deepEqual(seen(), [{ method: 'DELETE', path: '/installation/token', auth: 'installation', status: 204 }], 'the saved token authenticated the DELETE');
    assert.equal(isRevoked(), true, 'the token no longer works');
    assert.match(result.stdout, /^Revoked the GitHub token at http:\/\/127\.0\.0\.1:\d+: it no longer works\.$/m);
    assertNeverInClear(result.stdout);
    assert.equal(warningLine(result.stdout), '');
    assert.equal(result.stderr, '');
  });

  test('a token GitHub no longer knows (401: expired or already revoked) is a warning, not a failure', async () => {
    github.tokens.length = 0;
    const result = await runPost();
    assert.equal(result.code, 0);
    assert.deepEqual(seen(), [{ method: 'DELETE', path: '/installation/token', auth: 'invalid', status: 401 }]);
    assert.match(warningLine(result.stdout), /^::warning::Did not revoke the GitHub token: .* answered HTTP 401, so it had already expired or been revoked\.$/);
    assertNeverInClear(result.stdout);
  });

  test('any other answer is a warning naming the status and when the token expires', async () => {
    github.setFault({ kind: 'server_error', status: 503, on: 'revoke' });
    const result = await runPost();
    assert.equal(result.code, 0);
    assert.deepEqual(seen(), [{ method: 'DELETE', path: '/installation/token', auth: 'installation', status: 503 }]);
    assert.equal(isRevoked(), false);
    assert.equal(warningLine(result.stdout), `::warning::Could not revoke the GitHub token: ${github.url}/installation/token answered HTTP 503. It stays valid until ${EXPIRES_AT}.`);
    assertNeverInClear(result.stdout);
  });

  test('a redirect is not followed: the token goes nowhere but the API URL', async () => {
    github.setFault({ kind: 'answer', status: 307, headers: { location: `${github.url}/elsewhere` }, on: 'revoke' });
    const result = await runPost();
    assert.equal(result.code, 0);
    assert.deepEqual(seen(), [{ method: 'DELETE', path: '/installation/token', auth: 'installation', status: 307 }]);
    assert.equal(isRevoked(), false);
    assert.match(warningLine(result.stdout), /answered HTTP 307\. It stays valid until/);
  });

  test('an unreachable API is a warning', async () => {
    const closed = await startGithubEmulator(EMULATOR);
    await closed.close();
    const result = await runPost(closed.url);
    assert.equal(result.code, 0);
    assert.match(warningLine(result.stdout), new RegExp(`^::warning::Could not reach ${closed.url} to revoke the GitHub token \\(.+\\)\\. It stays valid until ${EXPIRES_AT}\\.$`));
    assertNeverInClear(result.stdout);
  });

  test('without saved state (another grant, revoke: false, or no token issued) it does nothing', async () => {
    const result = await runStep('post.js', dir, {});
    assert.equal(result.code, 0);
    assert.equal(result.stdout, '');
    assert.equal(github.requests.length, 0);
  });
});

describe('GitHub Action main step: revoke and github-api-url inputs', () => {
  /** The main step pointed at the GitHub emulator for everything, so any request it makes is recorded. */
  function runMain(inputs: Record<string, string>, env: Record<string, string> = {}) {
    return runStep('index.js', dir, {
      ACTIONS_ID_TOKEN_REQUEST_URL: `${github.url}/id-token?api-version=2.0`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token-for-tests',
      ...inputsEnv({ 'broker-url': github.url, policy: 'open-infra-prs', ...inputs }),
      ...env,
    });
  }

  test('a revoke value other than true or false fails the step before any request', async () => {
    const result = await runMain({ revoke: 'yes' });
    assert.equal(result.code, 1);
    assert.equal(errorLine(result.stdout), '::error::The revoke input must be true or false, not "yes".');
    assert.equal(github.requests.length, 0);
  });

  test('a plain-http GitHub API off loopback is refused before any request, from the input or GITHUB_API_URL', async () => {
    const fromInput = await runMain({ 'github-api-url': 'http://github.example.com/api/v3' });
    assert.equal(fromInput.code, 1);
    assert.match(errorLine(fromInput.stdout), /^::error::The github-api-url input "http:\/\/github\.example\.com\/api\/v3" must be an https URL/);
    const fromRunner = await runMain({}, { GITHUB_API_URL: 'http://github.example.com/api/v3' });
    assert.equal(fromRunner.code, 1);
    assert.match(errorLine(fromRunner.stdout), /^::error::GITHUB_API_URL "http:\/\/github\.example\.com\/api\/v3" must be an https URL/);
    assert.equal(github.requests.length, 0);
  });

  test('with revoke: false the GitHub API URL is not used, so it is not checked', async () => {
    const result = await runMain({ revoke: 'false', 'github-api-url': 'http://github.example.com' });
    // It goes on to ask for the ID token (here the emulator, which has no such route).
    assert.equal(result.code, 1);
    assert.deepEqual(github.requests.map((r) => r.path), ['/id-token']);
  });
});
