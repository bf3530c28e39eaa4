/**
 * The github provider end to end: the real broker app (supertest), a local
 * OIDC issuer, the real octokit (`@octokit/core` + `@octokit/auth-app`) and the
 * loopback GitHub API emulator, which verifies the App JWT and checks every
 * token request against the installation. Tokens are used and revoked with
 * plain fetch, as a job would. Asserts the answer, what GitHub received, the
 * audit record, and that neither the App's key nor a token reaches the logs
 * or the audit database.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import type { AuditRecord } from '../src/audit/types.js';
import { parseConfig } from '../src/config.js';
import { compilePolicies } from '../src/policy/compile.js';
import { startGithubEmulator, type GithubEmulator, type GithubFault } from './emulators/index.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { cli } from './helpers/cli.js';

const APP_ID = '4242';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const githubPolicy = (name: string, grant: string): string => `name: ${name}\nissuer: local\nclaims:\n  repository_owner: acme\ngrant:\n  provider: github\n${grant}`;

const POLICIES = {
  'gh-pr.yaml': githubPolicy('gh-pr', '  repositories: [acme/app, acme/lib]\n  permissions:\n    pull_requests: write\n    contents: write\n'),
  'gh-self.yaml': githubPolicy('gh-self', '  repositories: ["${repository}"]\n  permissions: {contents: read}\n'),
  'gh-mixed.yaml': githubPolicy('gh-mixed', '  repositories: [acme/app, "${repository_owner}/lib"]\n  permissions: {contents: read}\n'),
  'gh-not-installed.yaml': githubPolicy('gh-not-installed', '  repositories: [nobody/app]\n  permissions: {contents: read}\n'),
  'gh-outside.yaml': githubPolicy('gh-outside', '  repositories: [acme/app, acme/secret]\n  permissions: {contents: read}\n'),
  'gh-too-much.yaml': githubPolicy('gh-too-much', '  repositories: [acme/app]\n  permissions: {contents: read, issues: write}\n'),
  'gh-admin.yaml': githubPolicy('gh-admin', '  repositories: [acme/app]\n  permissions: {administration: read}\n'),
};

const CLAIMS = { sub: 'repo:acme/app:ref:refs/heads/main', repository: 'acme/app', repository_owner: 'acme', ref: 'refs/heads/main' };

let appKey: KeyObject;
let keyDir: string;
let keyFile: string;
let pemBody: string[];
let gh: GithubEmulator;
let fx: BrokerFixture;
/** CI tokens minted here and GitHub tokens handed out: none may be stored or logged. */
const secrets: string[] = [];

function githubConfig(apiUrl: string, file = keyFile): string {
  return `  github:\n    app_id: ${APP_ID}\n    private_key_file: ${file}\n    api_url: ${apiUrl}\n    timeout_seconds: 2\n`;
}

before(async () => {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  appKey = pair.privateKey;
  keyDir = await mkdtemp(path.join(tmpdir(), 'provider-github-key-'));
  keyFile = path.join(keyDir, 'app.pem');
  // GitHub hands out PKCS#1 keys.
  const pem = appKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  await writeFile(keyFile, pem, { mode: 0o600 });
  pemBody = pem.split('\n').filter((line) => line.length > 40);
  gh = await startGithubEmulator({
    appId: APP_ID,
    publicKey: pair.publicKey,
    installations: [{ id: 77, account: 'acme', repositories: ['app', 'lib', 'docs'], permissions: { contents: 'write', pull_requests: 'write', issues: 'read', metadata: 'read' } }],
  });
  fx = await startBrokerFixture({ policies: POLICIES, providerConfig: githubConfig(gh.url) });
});

after(async () => {
  await fx?.close();
  await gh?.close();
  await rm(keyDir, { recursive: true, force: true });
});

beforeEach(() => gh.setFault({ kind: 'none' }));

async function mint(claims: Record<string, unknown> = CLAIMS): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims });
  secrets.push(token);
  return token;
}

function exchange(token: string, policy: string, query = ''): request.Test {
  return request(fx.broker.app).post(`/v1/exchange${query}`).set('Authorization', `Bearer ${token}`).send({ policy });
}

async function recordOf(res: request.Response): Promise<AuditRecord> {
  const events = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  const found = (events.body.events as AuditRecord[]).filter((e) => e.request_id === res.headers['x-request-id']);
  assert.equal(found.length, 1);
  return found[0]!;
}

/** The token the emulator handed out last, remembered as a secret. */
function lastToken(): string {
  const token = gh.tokens.at(-1)!.token;
  secrets.push(token);
  return token;
}

function useToken(token: string, repository: string, scheme = 'token'): Promise<Response> {
  return fetch(`${gh.url}/repos/${repository}`, { headers: { authorization: `${scheme} ${token}` } });
}

async function withFault(fault: GithubFault, call: () => Promise<request.Response>): Promise<request.Response> {
  gh.setFault(fault);
  try {
    return await call();
  } finally {
    gh.setFault({ kind: 'none' });
  }
}

describe('issuing', () => {
  test('answers the token GitHub created for the grant\'s repositories and permissions; the record fingerprints it', async () => {
    const before = gh.requests.length;
    const res = await exchange(await mint(), 'gh-pr');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const token = lastToken();
    assert.deepEqual(Object.keys(res.body.credentials as object).sort(), ['expires_at', 'token', 'token_type']);
    assert.equal(res.body.credentials.token, token);
    assert.equal(res.body.credentials.token_type, 'token');
    assert.equal(res.body.credentials.expires_at, gh.tokens.at(-1)!.expiresAt.toISOString());
    assert.equal(res.body.expires_at, res.body.credentials.expires_at);

    const sent = gh.requests.slice(before);
    assert.deepEqual(sent.map((r) => `${r.method} ${r.path} ${r.auth}`), ['GET /repos/acme/app/installation app', 'POST /app/installations/77/access_tokens app']);
    assert.deepEqual(sent[1]!.body, { repositories: ['app', 'lib'], permissions: { contents: 'write', pull_requests: 'write' } });
    for (const { jwtClaims } of sent) {
      assert.equal(String(jwtClaims!.iss), APP_ID);
      assert.ok(jwtClaims!.exp - jwtClaims!.iat <= 600);
      assert.ok(jwtClaims!.iat < Date.now() / 1000, 'iat back-dated for clock drift');
    }

    const record = await recordOf(res);
    assert.equal(record.decision, 'issued');
    assert.equal(record.provider, 'github');
    assert.equal(record.credential_id, `sha256:${createHash('sha256').update(token).digest('hex')}`);
    assert.equal(record.target, 'acme/app,acme/lib contents:write,pull_requests:write');
  });

  test('the token works on the repositories it covers, and on no other', async () => {
    await exchange(await mint(), 'gh-pr').expect(200);
    const token = lastToken();
    assert.equal((await useToken(token, 'acme/app')).status, 200);
    assert.equal((await useToken(token, 'acme/lib', 'Bearer')).status, 200);
    assert.equal((await useToken(token, 'acme/docs')).status, 404);
  });

  test('each exchange gets its own token: revoking one at job end leaves the other working; the installation lookup is cached', async () => {
    const before = gh.requests.length;
    await exchange(await mint(), 'gh-pr').expect(200);
    const first = lastToken();
    await exchange(await mint(), 'gh-pr').expect(200);
    const second = lastToken();
    assert.notEqual(first, second);
    assert.equal(gh.requests.slice(before).filter((r) => r.path.endsWith('/installation')).length, 0, 'lookups came from the cache');
    const revoked = await fetch(`${gh.url}/installation/token`, { method: 'DELETE', headers: { authorization: `token ${first}` } });
    assert.equal(revoked.status, 204);
    assert.equal((await useToken(first, 'acme/app')).status, 401);
    assert.equal((await useToken(second, 'acme/app')).status, 200);
  });

  test('?format=env gives GITHUB_TOKEN and GH_TOKEN', async () => {
    const res = await exchange(await mint(), 'gh-pr', '?format=env');
    assert.equal(res.status, 200);
    const token = lastToken();
    assert.equal(res.text, `export GITHUB_TOKEN='${token}'\nexport GH_TOKEN='${token}'\n`);
  });

  test('POST /oauth2/token issues it as an RFC 8693 access token; a JWT cannot be asked for', async () => {
    const form = (extra: Record<string, string> = {}) =>
      mint().then((subject) =>
        request(fx.broker.app)
          .post('/oauth2/token')
          .type('form')
          .send(new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: JWT_TYPE, scope: 'gh-pr', ...extra }).toString()),
      );
    const res = await form();
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.access_token, lastToken());
    assert.equal(res.body.issued_token_type, ACCESS_TOKEN_TYPE);
    assert.equal(res.body.token_type, 'Bearer');
    const issuedBefore = gh.tokens.length;
    const jwt = await form({ requested_token_type: JWT_TYPE });
    assert.equal(jwt.status, 400);
    assert.equal(gh.tokens.length, issuedBefore, 'nothing issued');
  });
});

describe('templates', () => {
  test('${repository} asks for the calling repository only', async () => {
    await exchange(await mint({ ...CLAIMS, repository: 'acme/lib' }), 'gh-self').expect(200);
    const token = lastToken();
    assert.deepEqual(gh.tokens.at(-1)!.repositories, ['acme/lib']);
    assert.equal((await useToken(token, 'acme/lib')).status, 200);
    assert.equal((await useToken(token, 'acme/app')).status, 404);
  });

  const refusals: [name: string, policy: string, claims: Record<string, unknown>, reason: string][] = [
    ['a value with a second /', 'gh-self', { ...CLAIMS, repository: 'acme/app/../lib' }, 'github_repository_invalid'],
    ['a name of ..', 'gh-self', { ...CLAIMS, repository: 'acme/..' }, 'github_repository_invalid'],
    ['an owner with _', 'gh-self', { ...CLAIMS, repository: 'ac_me/app' }, 'github_repository_invalid'],
    ['an owner longer than 39', 'gh-self', { ...CLAIMS, repository: `${'a'.repeat(40)}/app` }, 'github_repository_invalid'],
    ['an absent claim', 'gh-self', { sub: 'x', repository_owner: 'acme' }, 'template_claim_unusable'],
  ];
  for (const [name, policy, claims, reason] of refusals) {
    test(`${name}: 403 ${reason}, audited, GitHub never called`, async () => {
      const before = gh.requests.length;
      const res = await exchange(await mint(claims), policy);
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.equal(res.body.error, 'access_denied');
      const record = await recordOf(res);
      assert.equal(record.decision, 'denied');
      assert.ok(record.reason?.startsWith(`${reason}: `), record.reason ?? '');
      assert.equal(record.credential_id, null);
      assert.equal(gh.requests.length, before, 'GitHub was not called');
    });
  }

  test('repositories rendering to two owners: 403 github_repositories_span_owners', async () => {
    // The policy's claim condition pins repository_owner, so a token from another owner never reaches the grant: the evil owner comes from a claim the grant reads.
    const compiled = compilePolicies(
      [{ path: 'p.yaml', text: 'issuer: local\nclaims: {repository_owner: acme}\ngrant:\n  provider: github\n  repositories: [acme/app, "${actor}/lib"]\n  permissions: {contents: read}\n' }],
      { issuers: new Map([['local', { audiences: [AUDIENCE] , tenantClaims: [] }]]), providers: new Set(['jwt', 'github']) },
    );
    assert.ok(compiled.ok, JSON.stringify(compiled));
    const { githubProvider } = await import('../src/providers/github/index.js');
    const grant = [...compiled.set.byName.values()][0]!.grant;
    assert.equal(grant?.provider, 'github');
    const refusal = githubProvider.checkGrant(grant, { actor: 'evil' });
    assert.equal(refusal?.reason, 'github_repositories_span_owners');
    assert.match(refusal.message, /'acme' and 'evil'/);
    assert.equal(githubProvider.checkGrant(grant, { actor: 'ACME' }), null, 'owners compare case-insensitively, as GitHub does');
  });
});

describe('refusals GitHub decides: 403 with a reason a user can act on, audited, nothing issued', () => {
  const rows: [policy: string, reason: string, message: RegExp, calls: string[]][] = [
    ['gh-not-installed', 'github_app_not_installed', /not installed on nobody\/app/, ['GET /repos/nobody/app/installation']],
    ['gh-outside', 'github_repository_not_in_installation', /acme\/app, acme\/secret: at least one of them is not in the App's installation on acme/, ['POST /app/installations/77/access_tokens', 'GET /repos/acme/app/installation', 'POST /app/installations/77/access_tokens']],
    ['gh-too-much', 'github_permission_not_granted', /issues: write, but .* holds issues: read/, []],
    ['gh-admin', 'github_permission_not_granted', /administration: read, but .* holds no administration permission/, []],
  ];
  for (const [policy, reason, message, calls] of rows) {
    test(`${policy}: ${reason}`, async () => {
      // Warm the cache, so a stale-cache 422 is what the broker meets first.
      await exchange(await mint(), 'gh-pr').expect(200);
      lastToken();
      const issued = gh.tokens.length;
      const before = gh.requests.length;
      const res = await exchange(await mint(), policy);
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.equal(res.body.error, 'access_denied');
      assert.match(res.body.error_description as string, message);
      const record = await recordOf(res);
      assert.equal(record.decision, 'denied');
      assert.ok(record.reason?.startsWith(`${reason}: `), record.reason ?? '');
      assert.equal(record.credential_id, null);
      assert.equal(gh.tokens.length, issued, 'nothing issued');
      assert.deepEqual(gh.requests.slice(before).map((r) => `${r.method} ${r.path}`), calls);
    });
  }
});

describe('GitHub failures', () => {
  const throttles: [name: string, fault: GithubFault, retryAfter: number][] = [
    ['primary rate limit (403, x-ratelimit-remaining: 0)', { kind: 'primary_rate_limit', resetInSeconds: 42 }, 42],
    ['secondary rate limit (403 + retry-after)', { kind: 'secondary_rate_limit', status: 403, retryAfterSeconds: 9 }, 9],
    ['secondary rate limit (429 + retry-after)', { kind: 'secondary_rate_limit', status: 429, retryAfterSeconds: 7 }, 7],
    ['a reset an hour away is capped', { kind: 'primary_rate_limit', resetInSeconds: 3600 }, 300],
  ];
  for (const [name, fault, retryAfter] of throttles) {
    test(`${name}: 503 provider_throttled with Retry-After, not retried, nothing issued`, async () => {
      const issued = gh.tokens.length;
      const before = gh.requests.length;
      const res = await withFault({ ...fault, on: 'access_tokens' } as GithubFault, async () => exchange(await mint(), 'gh-pr'));
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error, 'provider_throttled');
      assert.ok(Math.abs(Number(res.headers['retry-after']) - retryAfter) <= 1, `Retry-After ${res.headers['retry-after']}`);
      assert.equal(gh.tokens.length, issued);
      assert.equal(gh.requests.slice(before).filter((r) => r.method === 'POST').length, 1);
      const record = await recordOf(res);
      assert.equal(record.decision, 'error');
      assert.ok(record.reason?.startsWith('github:rate_limited: '));
      assert.equal(record.target, 'acme/app,acme/lib contents:write,pull_requests:write');
    });
  }

  test('RFC 8693 answers a rate limit temporarily_unavailable, 503 with Retry-After', async () => {
    const subject = await mint();
    const res = await withFault({ kind: 'secondary_rate_limit', status: 429, retryAfterSeconds: 11 }, () =>
      request(fx.broker.app)
        .post('/oauth2/token')
        .type('form')
        .send(new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: JWT_TYPE, scope: 'gh-pr' }).toString()),
    );
    assert.equal(res.status, 503);
    assert.equal(res.body.error, 'temporarily_unavailable');
    assert.equal(res.headers['retry-after'], '11');
  });

  test('5xx twice, then success: retried within the deadline', async () => {
    const before = gh.requests.length;
    const res = await withFault({ kind: 'server_error', status: 502, times: 2, on: 'access_tokens' }, async () => exchange(await mint(), 'gh-pr'));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.credentials.token, lastToken());
    assert.deepEqual(gh.requests.slice(before).filter((r) => r.method === 'POST').map((r) => r.status), [502, 502, 201]);
  });

  test('5xx every time: 502 provider_error once the attempts are spent', async () => {
    const res = await withFault({ kind: 'server_error', status: 503 }, async () => exchange(await mint(), 'gh-pr'));
    assert.equal(res.status, 502);
    assert.equal(res.body.error, 'provider_error');
    assert.ok((await recordOf(res)).reason?.startsWith('github:http_503: '));
  });

  test('a hung GitHub is abandoned: 502 github:timeout, the attempts cut off', async () => {
    const before = gh.requests.length;
    const res = await withFault({ kind: 'hang', on: 'access_tokens' }, async () => exchange(await mint(), 'gh-pr'));
    assert.equal(res.status, 502, JSON.stringify(res.body));
    assert.ok((await recordOf(res)).reason?.startsWith('github:timeout: '));
    const hung = gh.requests.slice(before).filter((r) => r.fault === 'hang');
    assert.ok(hung.length >= 1);
    assert.ok(hung.every((r) => r.abandoned), 'the broker closed every hung attempt');
  });
});

describe("the broker's App credentials", () => {
  test('a key GitHub does not know: 502 saying the operators must fix the App credentials', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const otherFile = path.join(keyDir, 'other.pem');
    await writeFile(otherFile, other.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    const wrong = await startBrokerFixture({ policies: POLICIES, providerConfig: githubConfig(gh.url, otherFile) });
    try {
      const before = gh.requests.length;
      const token = await wrong.issuer.mint({ aud: AUDIENCE, ...CLAIMS });
      const res = await request(wrong.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'gh-pr' });
      assert.equal(res.status, 502);
      assert.match(res.body.error_description as string, /refused the broker's App credentials/);
      assert.deepEqual(gh.requests.slice(before).map((r) => `${r.status} ${r.auth}`), ['401 invalid']);
      const logs = wrong.logLines().join('\n');
      const otherPem = other.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString().split('\n').filter((l) => l.length > 40);
      for (const line of otherPem) assert.ok(!logs.includes(line));
    } finally {
      await wrong.close();
    }
  });

  test('an unreadable or non-RSA key file refuses to start, naming the file and never the key', async () => {
    const ecFile = path.join(keyDir, 'ec.pem');
    const ecPem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await writeFile(ecFile, ecPem);
    const garbageFile = path.join(keyDir, 'garbage.pem');
    await writeFile(garbageFile, '-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n');
    for (const [file, message] of [
      [path.join(keyDir, 'missing.pem'), /private_key_file: cannot read .*missing\.pem \(ENOENT\)/],
      [ecFile, /ec\.pem holds a ec key; GitHub Apps sign with RSA/],
      [garbageFile, /garbage\.pem is not a PEM private key/],
    ] as const) {
      await assert.rejects(startBrokerFixture({ policies: POLICIES, providerConfig: githubConfig(gh.url, file) }), (err: Error) => {
        assert.match(err.message, message);
        assert.ok(!err.message.includes('bm90IGEga2V5') && !ecPem.split('\n').slice(1, -2).some((l) => err.message.includes(l)));
        return true;
      });
    }
  });

  test('api_url: https, or http on loopback only', async () => {
    const config = (url: string) => `server: {public_url: http://127.0.0.1:8080}\nissuers: []\npolicies: {dir: ./p}\naudit: {url: 'sqlite::memory:'}\nproviders:\n  github: {app_id: 1, private_key_file: k.pem, api_url: '${url}'}\n`;
    await assert.rejects(parseConfig(config('http://github.example.com/api/v3'), '/tmp/b.yaml', {}), /providers\.github\.api_url.*loopback/s);
    const ghes = await parseConfig(config('https://github.example.com/api/v3'), '/tmp/b.yaml', {});
    assert.equal(ghes.providers.github?.apiUrl, 'https://github.example.com/api/v3');
  });
});

describe('a github grant is checked at load, at its line', () => {
  const compile = (grantLines: string[]) =>
    compilePolicies([{ path: 'p.yaml', text: ['issuer: local', 'claims: {repository_owner: acme}', 'grant:', '  provider: github', ...grantLines.map((l) => `  ${l}`), ''].join('\n') }], {
      issuers: new Map([['local', { audiences: [AUDIENCE] , tenantClaims: [] }]]),
      providers: new Set(['jwt', 'github']),
    });
  const OK_REPOS = 'repositories: [acme/app]';
  const OK_PERMS = 'permissions: {contents: read}';
  const rows: [name: string, lines: string[], keyPath: string, line: number, message: RegExp, hint?: RegExp][] = [
    ['an unknown permission, with a near miss', [OK_REPOS, 'permissions: {pull_request: write}'], 'grant.permissions.pull_request', 6, /'pull_request' is not a GitHub App permission/, /did you mean 'pull_requests'\?/],
    ['a level GitHub does not offer', [OK_REPOS, 'permissions: {metadata: write}'], 'grant.permissions.metadata', 6, /metadata must be read, not 'write'/],
    ['a level that is no level', [OK_REPOS, 'permissions: {contents: all}'], 'grant.permissions.contents', 6, /contents must be read or write, not 'all'/],
    ['no permissions', [OK_REPOS, 'permissions: {}'], 'grant.permissions', 6, /non-empty map/],
    ['max_duration_seconds', [OK_REPOS, OK_PERMS, 'max_duration_seconds: 900'], 'grant.max_duration_seconds', 7, /GitHub fixes an installation token's lifetime at one hour/],
    ['literal owners that differ', ['repositories: [acme/app, other/lib]', OK_PERMS], 'grant.repositories[1]', 5, /owner 'other' differs from 'acme'/],
    ['a repository without owner', ['repositories: [app]', OK_PERMS], 'grant.repositories[0]', 5, /'app' is not a repository/],
    ['a repository named ..', ['repositories: [acme/..]', OK_PERMS], 'grant.repositories[0]', 5, /is not a repository/],
    ['a template with a character GitHub never allows', ['repositories: ["acme/${repo}:x"]', OK_PERMS], 'grant.repositories[0]', 5, /':' is not allowed in a repository/],
    ['no repositories', ['repositories: []', OK_PERMS], 'grant.repositories', 5, /non-empty list/],
  ];
  for (const [name, lines, keyPath, line, message, hint] of rows) {
    test(name, () => {
      const result = compile(lines);
      assert.equal(result.ok, false);
      const issue = result.ok ? undefined : result.issues.find((i) => i.keyPath === keyPath);
      assert.ok(issue, JSON.stringify(result));
      assert.equal(issue.line, line);
      assert.match(issue.message, message);
      if (hint) assert.match(issue.hint ?? '', hint);
    });
  }

  test('templates and literal owners that agree load', () => {
    const result = compile(['repositories: [acme/app, "acme/${repo}", "${repository}"]', 'permissions: {contents: write, metadata: read, repository_projects: admin}']);
    assert.ok(result.ok, JSON.stringify(result));
  });
});

describe('policy test and policy explain run the same rendering', () => {
  test('an invalid rendered repository: explain says deny with the exchange\'s reason; policy test fails an allow case', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'provider-github-cli-'));
    try {
      await writeFile(
        path.join(dir, 'broker.yaml'),
        `server: {public_url: ${AUDIENCE}}\nissuers:\n  - name: local\n    issuer: https://ci.example.com\n    audiences: [${AUDIENCE}]\npolicies: {dir: ./policies}\nproviders:\n  github: {app_id: 1, private_key_file: ./none.pem}\n`,
      );
      await import('node:fs/promises').then((fs) => fs.mkdir(path.join(dir, 'policies')));
      await writeFile(path.join(dir, 'policies', 'gh-self.yaml'), POLICIES['gh-self.yaml']);
      await writeFile(
        path.join(dir, 'policies', 'gh-self.test.yaml'),
        `tests:\n  - name: a dotted repository may have a token\n    policy: gh-self\n    claims: {repository_owner: acme, repository: "acme/.."}\n    expect: allow\n`,
      );
      const config = path.join(dir, 'broker.yaml');
      const explained = await cli(['policy', 'explain', '--policy', 'gh-self', '--claims', '-', '--json', '-c', config], { stdin: JSON.stringify({ aud: AUDIENCE, repository_owner: 'acme', repository: 'acme/..' }) });
      assert.equal(explained.code, 3, explained.stderr);
      assert.equal((JSON.parse(explained.stdout) as { reason: string }).reason, 'github_repository_invalid');
      const tested = await cli(['policy', 'test', '-c', config]);
      assert.equal(tested.code, 1, tested.stderr);
      assert.match(tested.stdout, /expected allow, got deny: github_repository_invalid/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test('neither the App key nor any token is stored or logged, whatever failed', async () => {
  const db = Buffer.concat([
    await readFile(path.join(fx.dir, 'data', 'audit.db')),
    await readFile(path.join(fx.dir, 'data', 'audit.db-wal')).catch(() => Buffer.alloc(0)),
  ]);
  const logs = fx.logLines().join('\n');
  for (const issued of gh.tokens) secrets.push(issued.token);
  assert.ok(gh.tokens.length > 10);
  for (const secret of secrets) {
    const probe = secret.includes('.') ? secret.split('.')[2]! : secret;
    assert.ok(!db.includes(probe), 'not in the audit database');
    assert.ok(!logs.includes(probe), 'not in the logs');
  }
  assert.ok(pemBody.length > 10);
  for (const line of pemBody) {
    assert.ok(!db.includes(line), 'the App key is not in the audit database');
    assert.ok(!logs.includes(line), 'the App key is not in the logs');
  }
});

describe('the App JWT', () => {
  test('is reused while it has five minutes left, then signed afresh; a clock-skew retry gets one on GitHub\'s clock', async () => {
    const { createAppJwtSigner } = await import('../src/providers/github/app-jwt.js');
    const { decodeJwt, jwtVerify } = await import('jose');
    const { createPublicKey } = await import('node:crypto');
    let nowMs = Date.UTC(2026, 0, 1, 12, 0, 0);
    const sign = createAppJwtSigner(APP_ID, appKey, () => nowMs);
    const first = await sign(APP_ID);
    const { payload, protectedHeader } = await jwtVerify(first.jwt, createPublicKey(appKey), { algorithms: ['RS256'], currentDate: new Date(nowMs) });
    assert.equal(protectedHeader.alg, 'RS256');
    assert.equal(payload.iss, APP_ID);
    assert.equal(payload.iat, nowMs / 1000 - 60);
    assert.equal(payload.exp! - payload.iat, 600);
    assert.equal(first.expiresAt, new Date(payload.exp! * 1000).toISOString());
    nowMs += 239_000;
    assert.equal((await sign(APP_ID)).jwt, first.jwt, 'reused with 301 s left');
    nowMs += 2_000;
    const second = await sign(APP_ID);
    assert.notEqual(second.jwt, first.jwt, 'signed afresh with less than 300 s left');
    const skewed = await sign(APP_ID, -120);
    assert.equal(decodeJwt(skewed.jwt).iat, nowMs / 1000 - 120 - 60);
    assert.equal((await sign(APP_ID)).jwt, second.jwt, 'the skewed JWT is not kept');
  });
});

describe('the emulator checks App JWTs as GitHub does (driven through octokit)', () => {
  const rows: [name: string, claims: (nowSeconds: number) => Record<string, unknown>, message: RegExp][] = [
    ['a lifetime over ten minutes', (now) => ({ iss: APP_ID, iat: now - 30, exp: now + 600 }), /'Expiration time' claim \('exp'\) is too far in the future/],
    ['an expired JWT', (now) => ({ iss: APP_ID, iat: now - 700, exp: now - 100 }), /'Expiration time' claim \('exp'\) must be a numeric value/],
    ['an iat in the future', (now) => ({ iss: APP_ID, iat: now + 300, exp: now + 600 }), /'Issued at' claim \('iat'\) must be an Integer/],
    ['another App id', (now) => ({ iss: '999', iat: now - 30, exp: now + 500 }), /'Issuer' claim/],
  ];
  for (const [name, claims, message] of rows) {
    test(`${name}: 401`, async () => {
      const { Octokit } = await import('@octokit/core');
      const { createAppAuth } = await import('@octokit/auth-app');
      const { SignJWT } = await import('jose');
      const createJwt = async () => {
        const now = Math.floor(Date.now() / 1000);
        const jwt = await new SignJWT(claims(now)).setProtectedHeader({ alg: 'RS256' }).sign(appKey);
        return { jwt, expiresAt: new Date().toISOString() };
      };
      const octokit = new Octokit({ baseUrl: gh.url, authStrategy: createAppAuth, auth: { appId: APP_ID, createJwt, log: { warn: () => undefined } } });
      await assert.rejects(octokit.request('GET /repos/{owner}/{repo}/installation', { owner: 'acme', repo: 'app' }), (err: { status: number; message: string }) => {
        assert.equal(err.status, 401);
        assert.match(err.message, message);
        return true;
      });
      assert.equal(gh.requests.at(-1)!.auth, 'invalid');
    });
  }
});
