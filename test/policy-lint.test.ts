// Policy lint (docs/policies/reference.md, "Lint"): each rule fires on a minimal policy with its
// file:line, key path, message and safer form, and stays quiet on that safer form; `policy validate`
// prints the warnings and exits 0, `--strict` exits 1; the shipped policies are lint-clean. Real
// config loader (issuer kinds from the URLs), real compiler, the CLI in-process.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compileContext, parseConfig } from '../src/config.js';
import { compilePolicies } from '../src/policy/compile.js';
import { lintPolicies } from '../src/policy/lint.js';
import type { CompileContext, LintRule, PolicyIssue } from '../src/policy/types.js';
import { cli, REPO } from './helpers/cli.js';

const BROKER = 'https://broker.example.com';
const CONFIG = `
server: { public_url: ${BROKER} }
issuers:
  - { name: github, issuer: https://token.actions.githubusercontent.com }
  - { name: ghes, issuer: https://github.acme.example/_services/token, tenant_claims: [] }
  - { name: gitlab, issuer: https://gitlab.com }
  - { name: buildkite, issuer: https://agent.buildkite.com }
  - { name: own-ci, issuer: https://ci.acme.example }
providers:
  jwt: { signing_key_file: ./never-read.jwk }
`;

let ctx: CompileContext;
before(async () => {
  ctx = compileContext(await parseConfig(CONFIG, path.join(tmpdir(), 'lint.yaml'), {}));
});

const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';
/** A GitHub allow policy that no rule warns about, to which each test adds one claim line. */
const CLEAN_GITHUB = ['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  repository_id: "7654321"', '  event_name: [push, workflow_dispatch]'];

/** A policy file from lines (the grant appended); line n of the file is lines[n - 1]. */
function policy(lines: string[]): string {
  return `${lines.join('\n')}\n${GRANT}`;
}

/** The lint warnings of a directory of policy files, which must compile. */
function lint(files: Record<string, string>): PolicyIssue[] {
  const list = Object.entries(files).map(([file, text]) => ({ path: file, text }));
  const result = compilePolicies(list, ctx);
  if (!result.ok) assert.fail(`expected the policies to compile, got ${JSON.stringify(result.issues, null, 2)}`);
  return lintPolicies(list, result.set, ctx);
}

/** Each file alone (so that they are not each other's siblings) gives no warning at all. */
function assertQuiet(files: Record<string, string>): void {
  for (const [file, text] of Object.entries(files)) assert.deepEqual(lint({ [file]: text }), [], file);
}

/** The warnings of one rule, without the rule (asserted), as plain objects. */
function warningsOf(rule: LintRule, files: Record<string, string>): Omit<PolicyIssue, 'rule'>[] {
  return lint(files)
    .filter((w) => w.rule === rule)
    .map(({ rule: _rule, ...rest }) => rest);
}

describe('name-without-id', () => {
  const message = (name: string, id: string) =>
    `${name} is pinned by name without ${id}: a name is freed when it is renamed or deleted, and whoever registers it next gets tokens this policy accepts`;
  const hint = (id: string) => `add ${id}: "<id>" under claims:; an id never changes, and the name kept beside it makes a rename fail closed`;

  test('a GitHub repository or owner by name alone, each at its own line with the id to add', () => {
    const file = policy(['issuer: github', 'claims:', '  repository_owner: acme', '  repository: acme/api', '  event_name: push']);
    assert.deepEqual(warningsOf('name-without-id', { 'p.yaml': file }), [
      { file: 'p.yaml', line: 3, keyPath: 'claims.repository_owner', message: message('repository_owner', 'repository_owner_id'), hint: hint('repository_owner_id') },
      { file: 'p.yaml', line: 4, keyPath: 'claims.repository', message: message('repository', 'repository_id'), hint: hint('repository_id') },
    ]);
  });

  test('a name by glob or list is a name too; its line is the operator key', () => {
    const file = policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  repository: { in: [acme/api, acme/web] }', '  event_name: push']);
    assert.deepEqual(warningsOf('name-without-id', { 'p.yaml': file }), [
      { file: 'p.yaml', line: 4, keyPath: 'claims.repository.in', message: message('repository', 'repository_id'), hint: hint('repository_id') },
    ]);
  });

  test('GitLab paths and Buildkite slugs without their ids', () => {
    const gitlab = policy(['issuer: gitlab', 'claims:', '  namespace_id: "1234567"', '  project_path: acme/api']);
    assert.deepEqual(warningsOf('name-without-id', { 'g.yaml': gitlab }), [
      { file: 'g.yaml', line: 4, keyPath: 'claims.project_path', message: message('project_path', 'project_id'), hint: hint('project_id') },
    ]);
    const buildkite = policy(['issuer: buildkite', 'claims:', '  organization_id: "33333333-3333-3333-3333-333333333333"', '  pipeline_slug: api-deploy']);
    assert.deepEqual(warningsOf('name-without-id', { 'b.yaml': buildkite }), [
      { file: 'b.yaml', line: 4, keyPath: 'claims.pipeline_slug', message: message('pipeline_slug', 'pipeline_id'), hint: hint('pipeline_id') },
    ]);
  });

  test('quiet on the safer forms: the id beside the name (also as a JSON Pointer), exists, a deny policy, an issuer that is not a shared CI service', () => {
    const cases: Record<string, string> = {
      'ids.yaml': policy([...CLEAN_GITHUB, '  repository: acme/api', '  repository_owner: acme']),
      'pointer.yaml': policy(['issuer: github', 'claims:', '  /repository_id: "7654321"', '  repository: acme/api', '  event_name: push']),
      'exists.yaml': policy([...CLEAN_GITHUB, '  repository: { exists: true }']),
      'deny.yaml': 'issuer: github\neffect: deny\nclaims:\n  repository: acme/legacy\n',
      'own.yaml': policy(['issuer: own-ci', 'claims:', '  repository: acme/api']),
    };
    assertQuiet(cases);
  });

  test('GitHub Enterprise Server is GitHub whatever its tenant_claims say', () => {
    const file = policy(['issuer: ghes', 'claims:', '  repository: acme/api', '  event_name: push']);
    assert.deepEqual(
      warningsOf('name-without-id', { 'p.yaml': file }).map((w) => `${w.line} ${w.keyPath}`),
      ['3 claims.repository'],
    );
  });
});

describe('legacy-sub-only', () => {
  const message = (effect: 'allow' | 'deny') =>
    `sub matches only GitHub's subject format repo:OWNER/REPO:..., not the immutable repo:OWNER@OWNER_ID/REPO@REPO_ID:... that new and opted-in repositories get: ${effect === 'deny' ? 'this deny policy stops refusing' : 'this policy stops accepting'} their tokens`;

  /** [the sub condition, its key path, the both-formats regex the hint gives, a subject it matches in the legacy format] */
  const rows: [string, string, string, string][] = [
    ['sub: "repo:acme/api:environment:production"', 'claims.sub', 'repo:acme(@1234567)?/api(@7654321)?:environment:production', 'repo:acme/api:environment:production'],
    ['sub: [repo:acme/api:ref:refs/heads/main]', 'claims.sub', 'repo:acme(@1234567)?/api(@7654321)?:ref:refs/heads/main', 'repo:acme/api:ref:refs/heads/main'],
    ['sub: { glob: "repo:acme/api:ref:refs/tags/v*" }', 'claims.sub.glob', 'repo:acme(@1234567)?/api(@7654321)?:ref:refs/tags/v[^/]*', 'repo:acme/api:ref:refs/tags/v1.2.3'],
    [
      'sub: { regex: "repo:acme/my\\\\.api:environment:(prod|production)" }',
      'claims.sub.regex',
      'repo:acme(@1234567)?/my\\.api(@7654321)?:environment:(prod|production)',
      'repo:acme/my.api:environment:prod',
    ],
  ];
  for (const [condition, keyPath, both, legacy] of rows) {
    test(`${condition}: fires with a both-formats regex as the hint, which is quiet and accepts both formats`, () => {
      const file = policy([...CLEAN_GITHUB, `  ${condition}`]);
      assert.deepEqual(warningsOf('legacy-sub-only', { 'p.yaml': file }), [
        { file: 'p.yaml', line: 6, keyPath, message: message('allow'), hint: `match both formats: { regex: ${JSON.stringify(both)} }` },
      ]);
      const saferText = policy([...CLEAN_GITHUB, `  sub: { regex: ${JSON.stringify(both)} }`]);
      assert.deepEqual(lint({ 'safer.yaml': saferText }), []);
      const compiled = compilePolicies([{ path: 'safer.yaml', text: saferText }], ctx);
      assert.ok(compiled.ok);
      const safer = compiled.set.byName.get('safer')!;
      const matches = (sub: string) => safer.evaluate({ repository_owner_id: '1234567', repository_id: '7654321', event_name: 'push', sub }, [BROKER]).every((r) => r.matched);
      const immutable = legacy.replace(/^repo:([^/]+)\/([^:]+):/, 'repo:$1@1234567/$2@7654321:');
      assert.equal(matches(legacy), true, legacy);
      assert.equal(matches(immutable), true, immutable);
      // Another repository's ids in the immutable format are not this one.
      assert.equal(matches(immutable.replace('@7654321', '@9999999')), false);
    });
  }

  test('without pinned ids the hint accepts any id, and a deny policy is told it stops refusing', () => {
    const file = 'issuer: github\neffect: deny\nclaims:\n  sub: "repo:acme/api:pull_request"\n';
    assert.deepEqual(warningsOf('legacy-sub-only', { 'deny.yaml': file }), [
      { file: 'deny.yaml', line: 4, keyPath: 'claims.sub', message: message('deny'), hint: 'match both formats: { regex: "repo:acme(@[0-9]+)?/api(@[0-9]+)?:pull_request" }' },
    ]);
  });

  test('quiet when the condition already covers the immutable format, cannot be read, or the issuer is not GitHub', () => {
    const cases: Record<string, string> = {
      'cookbook.yaml': policy([...CLEAN_GITHUB, '  sub: { regex: "repo:acme(@1234567)?/api(@7654321)?:environment:production" }']),
      'both.yaml': policy([...CLEAN_GITHUB, '  sub: [repo:acme/api:environment:production, "repo:acme@1234567/api@7654321:environment:production"]']),
      'ids.yaml': policy([...CLEAN_GITHUB, '  sub: "repo:acme@1234567/api@7654321:environment:production"']),
      'custom.yaml': policy([...CLEAN_GITHUB, '  sub: "project:acme/api:environment:production"']),
      'own.yaml': policy(['issuer: own-ci', 'claims:', '  sub: "repo:acme/api:environment:production"']),
    };
    assertQuiet(cases);
  });

  test('the shipped policy matching sub is tested with both formats', async () => {
    const cases = await readFile(path.join(REPO, 'policies', 'github-environment-production.test.yaml'), 'utf8');
    assert.match(cases, /sub: "repo:acme\/api:environment:production"/);
    assert.match(cases, /sub: "repo:acme@1234567\/api@7654321:environment:production"/);
  });
});

describe('trailing-wildcard', () => {
  test('a glob ending in * on a repository, owner, namespace or slug claim', () => {
    const github = policy([...CLEAN_GITHUB, '  repository: { glob: "acme/*" }']);
    assert.deepEqual(warningsOf('trailing-wildcard', { 'p.yaml': github }), [
      {
        file: 'p.yaml',
        line: 6,
        keyPath: 'claims.repository.glob',
        message: "glob 'acme/*' on repository matches every name that starts with 'acme/', including names registered later",
        hint: `pin the ones meant by id: repository_id: ["<id>", ...], or list their names: { in: ["acme/NAME", ...] }`,
      },
    ]);
    const gitlab = policy(['issuer: gitlab', 'claims:', '  namespace_id: "1234567"', '  namespace_path: { glob: "acme-**" }']);
    assert.deepEqual(
      warningsOf('trailing-wildcard', { 'g.yaml': gitlab }).map((w) => [w.line, w.message, w.hint]),
      [[4, "glob 'acme-**' on namespace_path matches every name that starts with 'acme-', including names registered later", `pin the ones meant by id: namespace_id: ["<id>", ...], or list their names: { in: ["acme-NAME", ...] }`]],
    );
    // A claim that names an account on an issuer whose claims the broker does not know: no id to name.
    const own = policy(['issuer: own-ci', 'claims:', '  project: { glob: "acme/*" }']);
    assert.deepEqual(warningsOf('trailing-wildcard', { 'o.yaml': own }).map((w) => w.hint), ['list the exact names: { in: ["acme/NAME", ...] }']);
  });

  test('quiet on the list of names, a wildcard inside a name, and a trailing * on a ref', () => {
    assertQuiet({
      'list.yaml': policy([...CLEAN_GITHUB, '  repository: { in: [acme/api, acme/web] }']),
      'inner.yaml': policy([...CLEAN_GITHUB, '  repository: { glob: "acme/api-?" }']),
      'ref.yaml': policy([...CLEAN_GITHUB, '  ref: { glob: "refs/tags/v*" }']),
    });
  });
});

describe('double-star-ref', () => {
  test('** in a glob on a ref, branch or sub claim, with the one-level glob as the safer form', () => {
    const file = policy([...CLEAN_GITHUB, '  ref: { glob: "refs/heads/release/**" }']);
    assert.deepEqual(warningsOf('double-star-ref', { 'p.yaml': file }), [
      {
        file: 'p.yaml',
        line: 6,
        keyPath: 'claims.ref.glob',
        message: "'**' in glob 'refs/heads/release/**' on ref matches any depth of '/'-separated names: any branch or tag that someone who can push names below it",
        hint: 'one level only: { glob: "refs/heads/release/*" }, or list the refs: { in: [...] }',
      },
    ]);
    const buildkite = policy(['issuer: buildkite', 'claims:', '  organization_id: "33333333-3333-3333-3333-333333333333"', '  build_branch: { glob: "release/**" }']);
    assert.deepEqual(warningsOf('double-star-ref', { 'b.yaml': buildkite }).map((w) => w.line), [4]);
  });

  test('quiet on one level, and on ** in a claim that is not a ref', () => {
    assertQuiet({
      'one.yaml': policy([...CLEAN_GITHUB, '  ref: { glob: "refs/heads/release/*" }']),
      'workflow.yaml': policy([...CLEAN_GITHUB, '  workflow: { glob: "deploy/**" }']),
    });
  });
});

describe('unanchored-regex', () => {
  test('.* and .+ outside a class, each narrowed to one path segment in the safer form', () => {
    const file = policy([...CLEAN_GITHUB, `  ref: { regex: 'refs/heads/(release/.*|hotfix-.+)' }`]);
    assert.deepEqual(warningsOf('unanchored-regex', { 'p.yaml': file }), [
      {
        file: 'p.yaml',
        line: 6,
        keyPath: 'claims.ref.regex',
        message: "regex 'refs/heads/(release/.*|hotfix-.+)' on ref has '.*' or '.+', which matches any run of characters, '/' and ':' included: the regex is anchored, but that part is not",
        hint: `match only what may be there: { regex: "refs/heads/(release/[^/]*|hotfix-[^/]+)" } stays within one '/'-separated part, or list the alternatives (a|b)`,
      },
    ]);
  });

  test('quiet on an escaped dot, a dot in a class, and a narrow class', () => {
    assertQuiet({
      'escaped.yaml': policy([...CLEAN_GITHUB, `  ref: { regex: 'refs/tags/v1\\.*' }`]),
      'class.yaml': policy([...CLEAN_GITHUB, `  ref: { regex: 'refs/tags/v[.*]+' }`]),
      'bracket.yaml': policy([...CLEAN_GITHUB, `  ref: { regex: 'refs/tags/v[].]x' }`]),
      'narrow.yaml': policy([...CLEAN_GITHUB, `  ref: { regex: 'refs/tags/v[0-9]+\\.[0-9]+' }`]),
    });
  });
});

describe('overlapping-sibling', () => {
  const deployApi = policy([...CLEAN_GITHUB, '  ref: refs/heads/main']);
  const anyBranch = policy([...CLEAN_GITHUB, '  ref: { glob: "refs/heads/*" }']);

  test('a pattern that matches a value another allow policy pins, naming that policy and its line', () => {
    assert.deepEqual(warningsOf('overlapping-sibling', { 'a-deploy.yaml': deployApi, 'b-any.yaml': anyBranch }), [
      {
        file: 'b-any.yaml',
        line: 6,
        keyPath: 'claims.ref.glob',
        message: "glob 'refs/heads/*' on ref also matches 'refs/heads/main', which policy 'a-deploy' (a-deploy.yaml:6) pins: a token meant for that policy is accepted by this one too",
        hint: "narrow the glob so that it leaves out 'refs/heads/main', or list this policy's own values: { in: [...] }",
      },
    ]);
  });

  test('among many policies pinning the value, finds the one a token could share, pinned or not on the claim that tells them apart', () => {
    const files: Record<string, string> = {};
    // Each pins main for its own repository: none can share a token with the wide policy.
    for (let i = 0; i < 50; i++) {
      files[`a-${String(i).padStart(2, '0')}.yaml`] = policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', `  repository_id: "${1_000_000 + i}"`, '  event_name: push', '  ref: refs/heads/main']);
    }
    // Pins main for the whole owner, no repository id: it can.
    files['b-owner.yaml'] = policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  event_name: push', '  ref: refs/heads/main']);
    files['c-any.yaml'] = anyBranch;
    assert.deepEqual(
      warningsOf('overlapping-sibling', files).map((w) => `${w.file}:${w.line} ${w.message.replace(/ on ref also matches .*which policy /, ' ... ')}`),
      [`c-any.yaml:6 glob 'refs/heads/*' ... 'b-owner' (b-owner.yaml:5) pins: a token meant for that policy is accepted by this one too`],
    );
    delete files['b-owner.yaml'];
    assert.deepEqual(warningsOf('overlapping-sibling', files), []);
  });

  test('quiet when another claim keeps the two apart, when the sibling denies or has another issuer, and when the pattern misses', () => {
    const otherRepo = policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  repository_id: "1111111"', '  event_name: push', '  ref: refs/heads/main']);
    assert.deepEqual(lint({ 'a.yaml': otherRepo, 'b.yaml': anyBranch }), []);
    assert.deepEqual(lint({ 'a.yaml': 'issuer: github\neffect: deny\nclaims:\n  ref: refs/heads/main\n', 'b.yaml': anyBranch }), []);
    const gitlab = policy(['issuer: gitlab', 'claims:', '  namespace_id: "1234567"', '  ref: refs/heads/main']);
    assert.deepEqual(lint({ 'a.yaml': gitlab, 'b.yaml': anyBranch }), []);
    const tags = policy([...CLEAN_GITHUB, '  ref: { glob: "refs/tags/*" }']);
    assert.deepEqual(lint({ 'a.yaml': deployApi, 'b.yaml': tags }), []);
  });
});

describe('privileged-triggers', () => {
  const unpinned = policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  repository_id: "7654321"', '  environment: production']);
  const message = (events: string) =>
    `policy 'p' accepts tokens of any event, ${events} included: those runs carry the base repository's identity but can act on code or artifacts from a fork's pull request`;
  const hint = (files: string) =>
    `add event_name: [push, workflow_dispatch] under claims:, pin job_workflow_ref to a reviewed workflow, or keep the ${files} in the directory (docs/policies/guardrails.md)`;

  test('a GitHub allow policy without event_name or job_workflow_ref, at its claims line', () => {
    assert.deepEqual(warningsOf('privileged-triggers', { 'p.yaml': unpinned }), [
      {
        file: 'p.yaml',
        line: 2,
        keyPath: 'claims',
        message: message('pull_request_target and workflow_run'),
        hint: hint('deny policies deny-github-pull-request-target.yaml and deny-github-workflow-run.yaml'),
      },
    ]);
  });

  test('a policy without claims: (a CEL condition only) is warned at its issuer line', () => {
    const file = policy(['issuer: github', 'allow_any_tenant: a read-only cache for every repository', 'condition: claims.ref == "refs/heads/main"', 'name: p']);
    assert.deepEqual(
      warningsOf('privileged-triggers', { 'p.yaml': file }).map((w) => `${w.line} ${w.keyPath}`),
      ['1 issuer'],
    );
  });

  test('a guardrail for one event leaves the other to name', () => {
    const guardrail = 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n';
    assert.deepEqual(warningsOf('privileged-triggers', { 'deny.yaml': guardrail, 'p.yaml': unpinned }), [
      { file: 'p.yaml', line: 2, keyPath: 'claims', message: message('workflow_run'), hint: hint('deny policy deny-github-workflow-run.yaml') },
    ]);
    // A deny policy narrowed by another claim guards only part of the issuer's tokens.
    const narrow = 'issuer: github\neffect: deny\nclaims:\n  event_name: [pull_request_target, workflow_run]\n  repository_id: "1"\n';
    assert.equal(warningsOf('privileged-triggers', { 'deny.yaml': narrow, 'p.yaml': unpinned }).length, 1);
    // A guardrail rolled out in audit mode records its matches and refuses nothing.
    const audited = 'issuer: github\neffect: deny\nmode: audit\nclaims:\n  event_name: [pull_request_target, workflow_run]\n';
    assert.deepEqual(
      warningsOf('privileged-triggers', { 'deny.yaml': audited, 'p.yaml': unpinned }).map((w) => w.message),
      [message('pull_request_target and workflow_run')],
    );
  });

  test('quiet with event_name, job_workflow_ref, a CEL condition on the event, both guardrails, or another issuer', () => {
    assertQuiet({
      'event.yaml': policy([...CLEAN_GITHUB]),
      'workflow.yaml': policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', '  job_workflow_ref: acme/workflows/.github/workflows/deploy.yml@refs/tags/v1']),
      'cel.yaml': policy(['issuer: github', 'claims:', '  repository_owner_id: "1234567"', `condition: claims.event_name == "push"`]),
      'gitlab.yaml': policy(['issuer: gitlab', 'claims:', '  project_id: "7654321"']),
    });
    const guardrails = {
      'deny-prt.yaml': 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
      // The documented exemption (policies/deny-github-workflow-run.yaml) keeps it a guardrail.
      'deny-wr.yaml': `issuer: github\neffect: deny\nclaims:\n  event_name: workflow_run\ncondition: '!(claims.workflow_ref == "acme/api/.github/workflows/publish.yml@refs/heads/main")'\n`,
    };
    assert.deepEqual(lint({ ...guardrails, 'p.yaml': unpinned }), []);
  });
});

describe('oidc-broker policy validate', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-lint-'));
  });
  after(async () => rm(root, { recursive: true, force: true }));

  async function workspace(name: string, files: Record<string, string>): Promise<{ config: string; dir: string }> {
    const dir = path.join(root, name, 'policies');
    await mkdir(dir, { recursive: true });
    const config = path.join(root, name, 'broker.yaml');
    await writeFile(config, CONFIG);
    for (const [file, text] of Object.entries(files)) await writeFile(path.join(dir, file), text);
    return { config, dir };
  }

  const NAME_ONLY = policy(['issuer: github', 'claims:', '  repository: acme/api', '  event_name: push']);
  const BROAD = policy([...CLEAN_GITHUB, '  repository: { glob: "acme/*" }']);

  test('prints each warning as file:line: [rule] key: message (hint: ...), counts them, exit 0', async () => {
    const ws = await workspace('warn', { 'broad.yaml': BROAD, 'name-only.yaml': NAME_ONLY });
    const run = await cli(['policy', 'validate', ws.dir, '-c', ws.config]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'ok: 2 policies in 2 files, 3 warnings\n');
    const lines = run.stderr.trimEnd().split('\n').map((line) => line.replace(/^warning: .*\/policies\//, 'warning: '));
    assert.deepEqual(lines, [
      `warning: broad.yaml:6: [trailing-wildcard] claims.repository.glob: glob 'acme/*' on repository matches every name that starts with 'acme/', including names registered later (hint: pin the ones meant by id: repository_id: ["<id>", ...], or list their names: { in: ["acme/NAME", ...] })`,
      `warning: broad.yaml:6: [overlapping-sibling] claims.repository.glob: glob 'acme/*' on repository also matches 'acme/api', which policy 'name-only' (name-only.yaml:3) pins: a token meant for that policy is accepted by this one too (hint: narrow the glob so that it leaves out 'acme/api', or list this policy's own values: { in: [...] })`,
      `warning: name-only.yaml:3: [name-without-id] claims.repository: repository is pinned by name without repository_id: a name is freed when it is renamed or deleted, and whoever registers it next gets tokens this policy accepts (hint: add repository_id: "<id>" under claims:; an id never changes, and the name kept beside it makes a rename fail closed)`,
    ]);
  });

  test('--strict: the same warnings, then a refusal on stderr, exit 1 and nothing on stdout', async () => {
    const ws = await workspace('strict', { 'name-only.yaml': NAME_ONLY });
    const run = await cli(['policy', 'validate', '--strict', ws.dir, '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    const lines = run.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, run.stderr);
    assert.match(lines[0]!, /^warning: .*name-only\.yaml:3: \[name-without-id\] claims\.repository: /);
    assert.equal(lines[1], 'oidc-broker: 1 warning in 1 file, which --strict refuses');
  });

  test('--strict refuses allow_any_tenant warnings too; a clean directory passes it', async () => {
    const escaped = await workspace('strict-tenant', {
      'any.yaml': policy(['issuer: github', 'allow_any_tenant: every repository may read the public cache', 'claims:', '  ref: refs/heads/main', '  event_name: push']),
    });
    const refused = await cli(['policy', 'validate', '--strict', escaped.dir, '-c', escaped.config]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /any\.yaml:2: allow_any_tenant: policy 'any' trusts every tenant/);

    const clean = await workspace('strict-clean', { 'ok.yaml': policy([...CLEAN_GITHUB, '  repository: acme/api']) });
    const run = await cli(['policy', 'validate', '--strict', clean.dir, '-c', clean.config]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'ok: 1 policy in 1 file\n');
    assert.equal(run.stderr, '');
  });

  test('the shipped policies are lint-clean: policy validate --strict policies exits 0', async () => {
    const run = await cli(['policy', 'validate', '--strict', path.join(REPO, 'policies')]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
  });

  test('so are policies/examples/, with the github provider they need', async () => {
    const dir = path.join(root, 'examples');
    await mkdir(dir, { recursive: true });
    const keyFile = path.join(dir, 'github-app.pem');
    await writeFile(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
    const config = path.join(dir, 'broker.yaml');
    await writeFile(
      config,
      `server: { public_url: ${BROKER} }\nissuers:\n  - { name: github, issuer: https://token.actions.githubusercontent.com }\nproviders:\n  jwt: { signing_key_file: ./never-read.jwk }\n  github: { app_id: 123456, private_key_file: ${keyFile} }\n`,
    );
    const run = await cli(['policy', 'validate', '--strict', path.join(REPO, 'policies', 'examples'), '-c', config]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
  });
});

describe('docs/policies/reference.md, "The lint rules"', () => {
  test('each rule has an example that warns with it and a safer form that does not', async () => {
    const markdown = await readFile(path.join(REPO, 'docs', 'policies', 'reference.md'), 'utf8');
    const section = markdown.slice(markdown.indexOf('### The lint rules'), markdown.indexOf("### GitHub's two subject formats"));
    const rules: LintRule[] = ['name-without-id', 'legacy-sub-only', 'trailing-wildcard', 'double-star-ref', 'unanchored-regex', 'overlapping-sibling', 'privileged-triggers'];
    // The policy the overlapping-sibling example names.
    const sibling = policy([...CLEAN_GITHUB, '  ref: refs/heads/main']);
    for (const rule of rules) {
      const start = section.indexOf(`**\`${rule}\`**`);
      assert.ok(start >= 0, `no example of ${rule}`);
      const [bad, safer] = [...section.slice(start).matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
      assert.ok(bad !== undefined && safer !== undefined, `${rule}: two yaml blocks`);
      const rulesOf = (claims: string) => lint({ 'deploy-main.yaml': sibling, 'p.yaml': `issuer: github\n${claims}${GRANT}` }).filter((w) => w.file === 'p.yaml').map((w) => w.rule);
      assert.ok(rulesOf(bad).includes(rule), `${rule}: the example warns with ${JSON.stringify(rulesOf(bad))}`);
      assert.ok(!rulesOf(safer).includes(rule), `${rule}: the safer form still warns`);
    }
  });
});
