// Tenant binding (docs/policies/reference.md, "Tenant binding"; docs/configuration.md, `tenant_claims`):
// on an issuer many tenants share, an allow policy loads only if it pins a tenant claim to exact
// values, or says in allow_any_tenant why it trusts every tenant, which is then warned about on
// every load. Real config loader, real compiler, the CLI in-process and `serve` as a real process.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileContext, parseConfig } from '../src/config.js';
import { compilePolicies } from '../src/policy/compile.js';
import type { CompileContext, CompileResult, PolicyIssue } from '../src/policy/types.js';
import { cli, githubServeConfig, logLine, spawnCli, waitForOutput } from './helpers/cli.js';

const BROKER = 'https://broker.example.com';
const GITHUB_CLAIMS = 'repository_owner_id, repository_id, repository_owner, repository';
const GITHUB_HINT = `pin a tenant: add "repository_owner_id: 123456" (or repository_id, repository_owner, repository) under claims:, or, if every tenant of 'github' may use it, say why in allow_any_tenant: "..."`;

/** Every well-known shared issuer at its default, an issuer of one tenant, and the two ways to set tenant_claims. */
const CONFIG = `
server: { public_url: ${BROKER} }
issuers:
  - { name: github, issuer: https://token.actions.githubusercontent.com }
  - { name: github-enterprise, issuer: https://token.actions.githubusercontent.com/acme-corp }
  - { name: ghes, issuer: https://github.acme.example/_services/token }
  - { name: gitlab, issuer: https://gitlab.com }
  - { name: circleci, issuer: https://oidc.circleci.com/org/11111111-2222-3333-4444-555555555555 }
  - { name: buildkite, issuer: https://agent.buildkite.com }
  - { name: own-ci, issuer: https://ci.acme.example }
  - { name: gitlab-self-managed, issuer: https://gitlab.acme.example, tenant_claims: [namespace_id] }
  - { name: github-one-org, issuer: https://github.one.example/_services/token, tenant_claims: [] }
providers:
  jwt: { signing_key_file: ./never-read.jwk }
`;

let ctx: CompileContext;
before(async () => {
  ctx = compileContext(await parseConfig(CONFIG, path.join(tmpdir(), 'tenant-binding.yaml'), {}));
});

const GRANT = ['grant:', '  provider: jwt', '  audience: https://deploy.example.com'];

function compile(lines: string[]): CompileResult {
  return compilePolicies([{ path: 'p.yaml', text: `${[...lines, ...GRANT].join('\n')}\n` }], ctx);
}

function issuesOf(lines: string[]): PolicyIssue[] {
  const result = compile(lines);
  assert.equal(result.ok, false, `expected a refusal of:\n${lines.join('\n')}`);
  return result.ok ? [] : result.issues;
}

function warningsOf(lines: string[]): PolicyIssue[] {
  const result = compile(lines);
  if (!result.ok) assert.fail(`expected it to load, got ${JSON.stringify(result.issues, null, 2)}`);
  return result.warnings;
}

describe('tenant claims of each issuer', () => {
  test('defaults by issuer URL, [] for any other issuer, and the configured list wins', () => {
    const claims = Object.fromEntries([...ctx.issuers].map(([name, i]) => [name, i.tenantClaims.join(', ')]));
    assert.deepEqual(claims, {
      github: GITHUB_CLAIMS,
      'github-enterprise': GITHUB_CLAIMS,
      ghes: GITHUB_CLAIMS,
      gitlab: 'namespace_id, project_id, namespace_path, project_path',
      circleci: 'aud, oidc.circleci.com/project-id',
      buildkite: 'organization_id, organization_slug',
      'own-ci': '',
      'gitlab-self-managed': 'namespace_id',
      'github-one-org': '',
    });
  });
});

describe('an allow policy that pins no tenant is refused at load, with file:line and the fix', () => {
  const rows: { name: string; lines: string[]; line: number; keyPath: string }[] = [
    { name: 'a ** glob', lines: ['issuer: github', 'claims:', '  repository: { glob: "**" }'], line: 2, keyPath: 'claims' },
    { name: 'a tenant claim pinned by a glob', lines: ['issuer: github', 'claims:', '  repository: { glob: "acme/*" }', '  ref: refs/heads/main'], line: 2, keyPath: 'claims' },
    { name: 'a regex on a tenant claim', lines: ['issuer: github', 'claims:', '  repository_owner: { regex: "acme" }'], line: 2, keyPath: 'claims' },
    { name: 'exists on a tenant claim', lines: ['issuer: github', 'claims:', '  repository_owner_id: { exists: true }', '  ref: refs/heads/main'], line: 2, keyPath: 'claims' },
    { name: 'a CEL condition only', lines: ['issuer: github', "condition: 'has(claims.sub) || true'"], line: 1, keyPath: 'issuer' },
    { name: 'a CEL condition naming a tenant claim', lines: ['description: CEL is not read for pins', 'issuer: github', 'condition: claims.repository_owner_id == "1234567"'], line: 2, keyPath: 'issuer' },
    { name: 'no claims at all', lines: ['issuer: github'], line: 1, keyPath: 'issuer' },
    { name: 'exact values on claims that are not tenant claims', lines: ['issuer: github', 'claims:', '  ref: refs/heads/main', '  environment: production'], line: 2, keyPath: 'claims' },
  ];
  for (const row of rows) {
    test(row.name, () => {
      assert.deepEqual(issuesOf(row.lines), [
        {
          file: 'p.yaml',
          line: row.line,
          keyPath: row.keyPath,
          message: `an allow policy of issuer 'github' must pin a tenant: one of ${GITHUB_CLAIMS} to exact values (a glob, regex, exists or condition does not pin one)`,
          hint: GITHUB_HINT,
        },
      ]);
    });
  }

  test("each shared issuer's hint names its own tenant claims", () => {
    const hints = ['github-enterprise', 'ghes', 'gitlab', 'circleci', 'buildkite', 'gitlab-self-managed'].map((issuer) => issuesOf([`issuer: ${issuer}`, 'claims:', '  ref: main'])[0]?.hint);
    assert.deepEqual(
      hints.map((h) => h?.replace(/ under claims:.*/, '')),
      [
        `pin a tenant: add "repository_owner_id: 123456" (or repository_id, repository_owner, repository)`,
        `pin a tenant: add "repository_owner_id: 123456" (or repository_id, repository_owner, repository)`,
        'pin a tenant: add "namespace_id: 123456" (or project_id, namespace_path, project_path)',
        'pin a tenant: add "aud: <exact value>" (or oidc.circleci.com/project-id)',
        'pin a tenant: add "organization_id: 123456" (or organization_slug)',
        'pin a tenant: add "namespace_id: 123456"',
      ],
    );
  });

  test('a configured list replaces the defaults: a claim that only the default list names no longer pins', () => {
    const [issue] = issuesOf(['issuer: gitlab-self-managed', 'claims:', '  project_path: acme/api']);
    assert.match(issue?.message ?? '', /must pin a tenant: one of namespace_id to exact values/);
  });
});

describe('an exact pin of a tenant claim loads', () => {
  const rows: { issuer: string; claims: string[] }[] = [
    { issuer: 'github', claims: ['repository_owner_id: "1234567"'] },
    { issuer: 'github', claims: ['repository_owner_id: 1234567'] },
    { issuer: 'github', claims: ['repository_id: { in: ["7654321", "7654322"] }'] },
    { issuer: 'github', claims: ['repository: [acme/api, acme/web]', 'ref: { glob: "refs/tags/v*" }'] },
    { issuer: 'github', claims: ['/repository_owner: acme'] },
    { issuer: 'github-enterprise', claims: ['repository_owner_id: "1234567"'] },
    { issuer: 'ghes', claims: ['repository_owner: [acme]'] },
    { issuer: 'gitlab', claims: ['namespace_id: "1234567"'] },
    { issuer: 'gitlab', claims: ['project_path: { in: [acme/api] }'] },
    { issuer: 'circleci', claims: ['oidc.circleci.com/project-id: 11111111-1111-1111-1111-111111111111'] },
    { issuer: 'circleci', claims: ['aud: [11111111-2222-3333-4444-555555555555]'] },
    { issuer: 'buildkite', claims: ['organization_id: 33333333-3333-3333-3333-333333333333'] },
    { issuer: 'buildkite', claims: ['organization_slug: { in: [acme] }'] },
    { issuer: 'gitlab-self-managed', claims: ['namespace_id: "42"'] },
  ];
  for (const row of rows) {
    test(`${row.issuer}: ${row.claims.join(', ')}`, () => {
      assert.deepEqual(warningsOf([`issuer: ${row.issuer}`, 'claims:', ...row.claims.map((c) => `  ${c}`)]), []);
    });
  }

  test('an issuer without tenant claims (by default, or tenant_claims: []) needs none', () => {
    assert.deepEqual(warningsOf(['issuer: own-ci', 'claims:', '  ref: { glob: "refs/heads/*" }']), []);
    assert.deepEqual(warningsOf(['issuer: github-one-org', 'claims:', '  repository: { glob: "**" }']), []);
  });

  test('deny policies pin nothing and load as before', () => {
    for (const claims of [['event_name: pull_request_target'], ['repository: { glob: "**" }'], ['runner_environment: { exists: true }']]) {
      const result = compilePolicies([{ path: 'deny.yaml', text: ['issuer: github', 'effect: deny', 'claims:', ...claims.map((c) => `  ${c}`), ''].join('\n') }], ctx);
      assert.equal(result.ok, true, JSON.stringify(result));
      assert.deepEqual(result.ok && result.warnings, []);
    }
  });
});

describe('allow_any_tenant', () => {
  test('loads a policy that pins no tenant, with a warning at its line naming the issuer and the reason', () => {
    const warnings = warningsOf(['name: any-repo', 'issuer: github', 'allow_any_tenant: "public read-only artifacts for every repository"', 'claims:', '  ref: refs/heads/main']);
    assert.deepEqual(warnings, [
      {
        file: 'p.yaml',
        line: 3,
        keyPath: 'allow_any_tenant',
        message: `policy 'any-repo' trusts every tenant of issuer 'github' (allow_any_tenant: "public read-only artifacts for every repository")`,
        hint: `pin one of ${GITHUB_CLAIMS} under claims: and remove allow_any_tenant`,
      },
    ]);
  });

  const refused: { name: string; lines: string[]; message: RegExp }[] = [
    { name: 'true instead of a reason', lines: ['issuer: github', 'allow_any_tenant: true', 'claims:', '  ref: main'], message: /^allow_any_tenant takes the reason why every tenant of the issuer may use this policy, not true$/ },
    { name: 'an empty reason', lines: ['issuer: github', 'allow_any_tenant: "  "', 'claims:', '  ref: main'], message: /^allow_any_tenant takes the reason/ },
    { name: 'on a policy that pins a tenant', lines: ['issuer: github', 'allow_any_tenant: why', 'claims:', '  repository_id: "1"'], message: /^allow_any_tenant has no effect: the policy pins the tenant claim 'repository_id'$/ },
    { name: 'on an issuer without tenant claims', lines: ['issuer: own-ci', 'allow_any_tenant: why', 'claims:', '  ref: main'], message: /^allow_any_tenant has no effect: issuer 'own-ci' has no tenant claims$/ },
  ];
  for (const row of refused) {
    test(`refused: ${row.name}, at its line`, () => {
      const issues = issuesOf(row.lines);
      assert.deepEqual(issues.map((i) => [i.line, i.keyPath]), [[2, 'allow_any_tenant']], JSON.stringify(issues));
      assert.match(issues[0]?.message ?? '', row.message);
    });
  }

  test('refused on a deny policy', () => {
    const result = compilePolicies([{ path: 'deny.yaml', text: 'issuer: github\neffect: deny\nallow_any_tenant: why\nclaims:\n  event_name: push\n' }], ctx);
    assert.deepEqual(!result.ok && result.issues.map((i) => [i.line, i.keyPath, i.message]), [[3, 'allow_any_tenant', 'allow_any_tenant has no effect: it applies only to allow policies']]);
  });
});

describe('through the CLI and the server', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-tenant-'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  /** A serve-ready directory trusting GitHub's issuer at its defaults, with these policy files. */
  async function workspace(name: string, policies: Record<string, string>): Promise<string> {
    const cwd = path.join(dir, name);
    await mkdir(path.join(cwd, 'policies'), { recursive: true });
    await writeFile(path.join(cwd, 'broker.yaml'), githubServeConfig('./data/signing-key.jwk'));
    for (const [file, text] of Object.entries(policies)) await writeFile(path.join(cwd, 'policies', file), text);
    return cwd;
  }

  const UNPINNED = 'issuer: github\nclaims:\n  repository: { glob: "acme/*" }\ngrant:\n  provider: jwt\n  audience: x\n';
  const ESCAPED = 'name: any-repo\nissuer: github\nallow_any_tenant: every repository may read the public cache\nclaims:\n  ref: refs/heads/main\n  event_name: push\ngrant:\n  provider: jwt\n  audience: x\n';

  test('policy validate: refuses an unpinned policy with file:line and the hint (exit 1), and prints the escape hatch as a warning (exit 0)', async () => {
    const refused = await workspace('validate-refused', { 'wide.yaml': UNPINNED });
    const run = await cli(['policy', 'validate', '-c', path.join(refused, 'broker.yaml')]);
    assert.equal(run.code, 1, run.stderr);
    assert.ok(run.stderr.includes(`wide.yaml:2: claims: an allow policy of issuer 'github' must pin a tenant`), run.stderr);
    assert.ok(run.stderr.includes(`(hint: ${GITHUB_HINT})`), run.stderr);

    const escaped = await workspace('validate-escaped', { 'any.yaml': ESCAPED });
    const ok = await cli(['policy', 'validate', '-c', path.join(escaped, 'broker.yaml')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'ok: 1 policy in 1 file, 1 warning\n');
    assert.match(ok.stderr, /^warning: .*any\.yaml:3: allow_any_tenant: policy 'any-repo' trusts every tenant of issuer 'github' \(allow_any_tenant: "every repository may read the public cache"\)/);
  });

  test('serve refuses to start on an unpinned policy, and logs the escape hatch at warn level when it starts', async () => {
    const refused = await workspace('serve-refused', { 'wide.yaml': UNPINNED });
    const broker = spawnCli(['serve'], { cwd: refused, env: { PORT: '0' } });
    assert.equal(await broker.exited, 1);
    assert.match(broker.stderr(), /wide\.yaml:2: claims: an allow policy of issuer 'github' must pin a tenant/);

    const escaped = await workspace('serve-escaped', { 'any.yaml': ESCAPED });
    const started = spawnCli(['serve'], { cwd: escaped, env: { PORT: '0' } });
    try {
      // The policies load before the server listens: the warning is in the log by then.
      await waitForOutput(started, logLine('listening'));
      const warning = logLine(`policy 'any-repo' trusts every tenant of issuer 'github' (allow_any_tenant: "every repository may read the public cache")`)(started.stdout());
      assert.equal(warning?.level, 'warn', started.stdout());
      assert.match(String(warning.at), /any\.yaml:3: allow_any_tenant: /);
      // A reload is a load too: both policies' warnings again, not only the new one's.
      await writeFile(path.join(escaped, 'policies', 'other.yaml'), ESCAPED.replace('any-repo', 'other-repo'));
      started.child.kill('SIGHUP');
      await waitForOutput(started, logLine('policies reloaded'));
      const warned = started.stdout().split('\n').filter((l) => l.includes('"level":"warn"') && l.includes('trusts every tenant'));
      assert.deepEqual(
        warned.map((l) => (JSON.parse(l) as { msg: string }).msg.replace(/ \(allow_any_tenant.*/, '')),
        ["policy 'any-repo' trusts every tenant of issuer 'github'", "policy 'any-repo' trusts every tenant of issuer 'github'", "policy 'other-repo' trusts every tenant of issuer 'github'"],
      );
    } finally {
      started.child.kill('SIGTERM');
      await started.exited;
    }
  });
});
