// oidc-broker policy impact (src/policy/impact.ts, src/cli/policy.ts): a real
// SQLite audit log written through the store, two policy directories, the CLI
// run in-process; exit codes, the NDJSON lines and the text table.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditDecision, AuditEntry } from '../src/audit/types.js';
import { generateSigningJwk } from '../src/keys/signing-key.js';
import { cli } from './helpers/cli.js';

const AUDIENCE = 'https://broker.example.com';
const OWNER_ID = '1234567';

/** The policy in force: acme/app's main branch only. */
const DEPLOY_BEFORE = `name: deploy
issuer: github
claims:
  repository_owner_id: "${OWNER_ID}"
  repository: acme/app
  ref: refs/heads/main
grant:
  provider: jwt
  audience: https://deploy.example.com
`;

let root: string;
let config: string;

function recorded(i: number, repository: string, decision: AuditDecision, overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(Date.now() - (i + 1) * 60_000).toISOString(),
    decision,
    error: decision === 'denied' ? 'access_denied' : null,
    reason: null,
    request_id: null,
    issuer: 'github',
    subject: `repo:${repository}:ref:refs/heads/main`,
    audience: [AUDIENCE],
    jti: null,
    token_sha256: null,
    claims: { repository_owner_id: OWNER_ID, repository, ref: 'refs/heads/main', run_number: i, aud: AUDIENCE },
    unverified: null,
    policy: 'deploy',
    policy_sha256: null,
    provider: decision === 'issued' ? 'jwt' : null,
    target: null,
    credential_id: null,
    expires_at: null,
    duration_seconds: null,
    client_ip: null,
    user_agent: null,
    audit_matches: [],
    ...overrides,
  };
}

async function policyDir(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(root, name);
  await mkdir(dir);
  for (const [file, text] of Object.entries(files)) await writeFile(path.join(dir, file), text);
  return dir;
}

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-impact-'));
  await writeFile(path.join(root, 'signing-key.jwk'), JSON.stringify(await generateSigningJwk()), { mode: 0o600 });
  config = path.join(root, 'broker.yaml');
  await writeFile(
    config,
    `issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [${AUDIENCE}]\naudit:\n  url: sqlite:./audit.db\nproviders:\n  jwt:\n    signing_key_file: ./signing-key.jwk\n`,
  );
  const store = openSqliteAuditStore(path.join(root, 'audit.db'));
  const entries: AuditEntry[] = [
    ...Array.from({ length: 5 }, (_, i) => recorded(i, 'acme/app', 'issued')),
    ...Array.from({ length: 3 }, (_, i) => recorded(10 + i, 'acme/app-evil', 'denied')),
    recorded(20, 'acme/tools', 'denied'),
    // Refused before verification: no claims, nothing to replay.
    recorded(21, 'acme/app', 'denied', { claims: null, subject: null, issuer: null, unverified: { iss: 'x', sub: 'y' } }),
    // Older than --since 1d.
    recorded(3 * 24 * 60, 'acme/old', 'denied'),
  ];
  for (const entry of entries) await store.append(entry);
  await store.close();
});
after(async () => rm(root, { recursive: true, force: true }));

describe('policy impact', () => {
  test('a widening glob newly allows the repositories it catches: exit 3, one NDJSON line per (subject, policy) with its request count', async () => {
    const beforeDir = await policyDir('before-1', { 'deploy.yaml': DEPLOY_BEFORE });
    const afterDir = await policyDir('after-1', { 'deploy.yaml': DEPLOY_BEFORE.replace('repository: acme/app', 'repository: { glob: "acme/app*" }') });
    const run = await cli(['policy', 'impact', '--before', beforeDir, '--after', afterDir, '--since', '1d', '--json', '-c', config]);
    assert.equal(run.code, 3, run.stderr);
    const lines = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(lines, [{ subject: 'repo:acme/app-evil:ref:refs/heads/main', issuer: 'github', policy: 'deploy', before: 'deny', after: 'allow', requests: 3 }]);
  });

  test('the text table marks what becomes allowed, counts what was replayed, and the default window reaches older records', async () => {
    const beforeDir = await policyDir('before-2', { 'deploy.yaml': DEPLOY_BEFORE });
    const afterDir = await policyDir('after-2', { 'deploy.yaml': DEPLOY_BEFORE.replace('repository: acme/app', 'repository: { glob: "acme/*" }') });
    const run = await cli(['policy', 'impact', '--before', beforeDir, '--after', afterDir, '-c', config]);
    assert.equal(run.code, 3, run.stderr);
    const rows = run.stdout.trim().split('\n');
    assert.deepEqual(rows.slice(0, -1), [
      'NEWLY ALLOWED  repo:acme/app-evil:ref:refs/heads/main  github/deploy  deny -> allow  3 requests',
      'NEWLY ALLOWED  repo:acme/old:ref:refs/heads/main  github/deploy  deny -> allow  1 request',
      'NEWLY ALLOWED  repo:acme/tools:ref:refs/heads/main  github/deploy  deny -> allow  1 request',
    ]);
    assert.match(rows.at(-1)!, /^3 changes \(3 newly allowed\) over 10 recorded requests since \S+, \d+ ms$/);
  });

  test('narrowing, or a deny policy added, only takes away: exit 0, with the changes listed', async () => {
    const beforeDir = await policyDir('before-3', { 'deploy.yaml': DEPLOY_BEFORE });
    const afterDir = await policyDir('after-3', {
      'deploy.yaml': DEPLOY_BEFORE,
      'deny-run-3.yaml': 'name: deny-run-3\nissuer: github\neffect: deny\nclaims:\n  run_number: 3\n',
    });
    const run = await cli(['policy', 'impact', '--before', beforeDir, '--after', afterDir, '--since', '1d', '--json', '-c', config]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>),
      [{ subject: 'repo:acme/app:ref:refs/heads/main', issuer: 'github', policy: 'deploy', before: 'allow', after: 'deny', requests: 1 }],
    );
  });

  test('a policy removed or renamed shows as unknown_policy; identical sets change nothing', async () => {
    const beforeDir = await policyDir('before-4', { 'deploy.yaml': DEPLOY_BEFORE });
    const renamed = await policyDir('after-4', { 'deploy.yaml': DEPLOY_BEFORE.replace('name: deploy', 'name: deploy-app') });
    const run = await cli(['policy', 'impact', '--before', beforeDir, '--after', renamed, '--since', '1d', '--json', '-c', config]);
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as { before: string; after: string; requests: number });
    assert.deepEqual(lines.map((l) => [l.before, l.after, l.requests]), [['allow', 'unknown_policy', 5], ['deny', 'unknown_policy', 3], ['deny', 'unknown_policy', 1]]);

    const same = await cli(['policy', 'impact', '--before', beforeDir, '--after', beforeDir, '--since', '1d', '-c', config]);
    assert.equal(same.code, 0);
    assert.match(same.stdout, /^0 changes \(0 newly allowed\) over 9 recorded requests since /);
  });

  test('a proposed set that does not compile, or a bad --since, is an error (exit 1) naming the problem', async () => {
    const beforeDir = await policyDir('before-5', { 'deploy.yaml': DEPLOY_BEFORE });
    const broken = await policyDir('after-5', { 'deploy.yaml': DEPLOY_BEFORE.replace('issuer: github', 'issuer: gitlab') });
    const run = await cli(['policy', 'impact', '--before', beforeDir, '--after', broken, '-c', config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /deploy\.yaml:2/);
    const since = await cli(['policy', 'impact', '--before', beforeDir, '--after', beforeDir, '--since', 'last week', '-c', config]);
    assert.equal(since.code, 1);
    assert.match(since.stderr, /--since/);
  });
});
