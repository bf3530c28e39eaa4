// Audit-mode deny policies (docs/policies/reference.md, `mode`): a deny policy
// with `mode: audit` never denies; the decisions it would deny name it in
// `auditMatches`, whatever else decides them.
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy } from '../src/policy/evaluate.js';
import { evaluateOffline, offlineToken, renderExplainText, summarizeDecision, toExplainOutput } from '../src/policy/explain.js';
import { createImpactTally } from '../src/policy/impact.js';
import { parseTestFile, runPolicyTests } from '../src/policy/test-cases.js';
import type { CompileContext, Decision, PolicyIssue, PolicySet } from '../src/policy/types.js';
import { cli } from './helpers/cli.js';

const BROKER = 'https://broker.example.com';
const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: [BROKER], tenantClaims: [] }],
    ['gitlab', { audiences: [BROKER], tenantClaims: [] }],
  ]),
  providers: new Set(['jwt']),
};
const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';
const DEPLOY = `issuer: github\nclaims:\n  repository: acme/api\n  ref: refs/heads/main\n${GRANT}`;
/** The guardrail being rolled out: one line away from enforced. */
const SELF_HOSTED = (mode: string) => `issuer: github\neffect: deny\nmode: ${mode}\nclaims:\n  runner_environment: self-hosted\n`;
const POLICIES: Record<string, string> = {
  'deploy.yaml': DEPLOY,
  'gitlab-deploy.yaml': `issuer: gitlab\nclaims:\n  project_path: acme/api\n${GRANT}`,
  'deny-self-hosted.yaml': SELF_HOSTED('audit'),
  'deny-bots.yaml': 'issuer: github\neffect: deny\nmode: audit\nclaims:\n  actor: { glob: "bot-*" }\n',
  'deny-prt.yaml': 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
};
const GOOD = { repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push', actor: 'octocat', runner_environment: 'github-hosted' };

function compileSet(policies: Record<string, string> = POLICIES): PolicySet {
  const result = compilePolicies(
    Object.entries(policies).map(([path, text]) => ({ path, text })),
    CTX,
  );
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set;
}
const SET = compileSet();

function decide(claims: Record<string, unknown>, policy = 'deploy', set = SET, issuerName = 'github'): Decision {
  return evaluate(set, lookupPolicy(set, policy), { issuerName, audiences: [BROKER], claims });
}

function issuesOf(text: string, path = 'p.yaml'): PolicyIssue[] {
  const result = compilePolicies([{ path, text }], CTX);
  assert.equal(result.ok, false, 'the policy is refused');
  return result.ok ? [] : result.issues;
}

describe('mode: compiling', () => {
  test('a deny policy takes mode audit or enforce; enforce is the default, and every allow policy enforces', () => {
    assert.equal(SET.byName.get('deny-self-hosted')!.mode, 'audit');
    assert.equal(SET.byName.get('deny-prt')!.mode, 'enforce');
    assert.equal(SET.byName.get('deploy')!.mode, 'enforce');
    assert.equal(compileSet({ 'd.yaml': SELF_HOSTED('enforce') }).byName.get('d')!.mode, 'enforce');
    assert.equal(compileSet({ 'd.yaml': `mode: enforce\n${DEPLOY}` }).byName.get('d')!.mode, 'enforce');
  });

  test('mode: audit on an allow policy is refused at its line, with what to do instead', () => {
    for (const text of [`${DEPLOY}mode: audit\n`, `effect: allow\n${DEPLOY}mode: audit\n`]) {
      const line = text.split('\n').indexOf('mode: audit') + 1;
      assert.deepEqual(issuesOf(text), [
        {
          file: 'p.yaml',
          line,
          keyPath: 'mode',
          message: 'mode: audit applies only to deny policies',
          hint: 'remove it: an allow policy always enforces; to try a guardrail first, write it as an effect: deny policy with mode: audit',
        },
      ]);
    }
  });

  test('a mode other than enforce or audit is refused, with the near miss', () => {
    const rows: [string, string, string | undefined][] = [
      ['audti', "mode must be enforce or audit, not 'audti'", "did you mean 'audit'?"],
      ['Enforce', "mode must be enforce or audit, not 'Enforce'", "did you mean 'enforce'?"],
      ['true', 'mode must be enforce or audit, not true', undefined],
      ['[audit]', 'mode must be enforce or audit, not a list', undefined],
    ];
    for (const [value, message, hint] of rows) {
      const issues = issuesOf(`issuer: github\neffect: deny\nmode: ${value}\nclaims:\n  actor: x\n`);
      assert.deepEqual(issues, [{ file: 'p.yaml', line: 3, keyPath: 'mode', message, ...(hint === undefined ? {} : { hint }) }], value);
    }
  });
});

describe('mode: evaluating', () => {
  const rows: { name: string; claims: Record<string, unknown>; policy?: string; allowed: boolean; reason: string; auditMatches: string[] }[] = [
    { name: 'nothing matches', claims: GOOD, allowed: true, reason: 'allowed', auditMatches: [] },
    { name: 'an audit-mode deny matches: still allowed, and named', claims: { ...GOOD, runner_environment: 'self-hosted' }, allowed: true, reason: 'allowed', auditMatches: ['deny-self-hosted'] },
    { name: 'two audit-mode denies match, in file order', claims: { ...GOOD, runner_environment: 'self-hosted', actor: 'bot-1' }, allowed: true, reason: 'allowed', auditMatches: ['deny-self-hosted', 'deny-bots'] },
    { name: 'denied by an enforced deny: the audit-mode match is still named', claims: { ...GOOD, runner_environment: 'self-hosted', event_name: 'pull_request_target' }, allowed: false, reason: 'denied_by_policy', auditMatches: ['deny-self-hosted'] },
    { name: "the allow policy's conditions fail: the audit-mode match is still named", claims: { ...GOOD, ref: 'refs/heads/dev', actor: 'bot-7' }, allowed: false, reason: 'conditions_not_met', auditMatches: ['deny-bots'] },
    { name: 'an audit-mode deny that cannot be evaluated (it would deny, enforced) does not deny, and is named', claims: { ...GOOD, actor: ['bot-1'] }, allowed: true, reason: 'allowed', auditMatches: ['deny-bots'] },
    { name: 'a token of another issuer: no deny policy of this one is evaluated', claims: { project_path: 'acme/api', runner_environment: 'self-hosted' }, policy: 'gitlab-deploy', allowed: true, reason: 'allowed', auditMatches: [] },
    { name: 'a deny policy named: nothing evaluated', claims: { ...GOOD, runner_environment: 'self-hosted' }, policy: 'deny-self-hosted', allowed: false, reason: 'not_an_allow_policy', auditMatches: [] },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const decision = decide(row.claims, row.policy, SET, row.policy === 'gitlab-deploy' ? 'gitlab' : 'github');
      assert.deepEqual({ allowed: decision.allowed, reason: decision.reason, auditMatches: decision.auditMatches }, { allowed: row.allowed, reason: row.reason, auditMatches: row.auditMatches });
    });
  }

  test("the message of a decision never names an audit-mode policy: it is the enforced policies' decision", () => {
    const denied = decide({ ...GOOD, runner_environment: 'self-hosted', event_name: 'pull_request_target' });
    assert.equal(denied.message, "Denied by deny policy 'deny-prt'.");
    assert.equal(decide({ ...GOOD, runner_environment: 'self-hosted' }).message, "Policy 'deploy' allows this token.");
    assert.equal(summarizeDecision(denied), "deny policy 'deny-prt' matches: event_name = (hidden) (token: \"pull_request_target\")");
  });

  test('switching the one line to mode: enforce denies the same token', () => {
    const enforced = compileSet({ ...POLICIES, 'deny-self-hosted.yaml': SELF_HOSTED('enforce') });
    const decision = decide({ ...GOOD, runner_environment: 'self-hosted' }, 'deploy', enforced);
    assert.deepEqual(
      { allowed: decision.allowed, reason: decision.reason, message: decision.message, auditMatches: decision.auditMatches },
      { allowed: false, reason: 'denied_by_policy', message: "Denied by deny policy 'deny-self-hosted'.", auditMatches: [] },
    );
  });

  test('policy impact replays the switch: audit to enforce newly denies what was recorded, enforce to audit newly allows it', () => {
    const enforced = compileSet({ ...POLICIES, 'deny-self-hosted.yaml': SELF_HOSTED('enforce') });
    const recorded = [
      { issuer: 'github', subject: 'repo:acme/api:ref:refs/heads/main', policy: 'deploy', audience: [BROKER], claims: { ...GOOD, runner_environment: 'self-hosted' } },
      { issuer: 'github', subject: 'repo:acme/api:ref:refs/heads/main', policy: 'deploy', audience: [BROKER], claims: GOOD },
    ];
    const rows = (before: PolicySet, after: PolicySet) => {
      const tally = createImpactTally(before, after);
      for (const record of recorded) tally.add(record);
      return tally.rows().map((r) => [r.policy, r.before, r.after, r.requests]);
    };
    assert.deepEqual(rows(SET, enforced), [['deploy', 'allow', 'deny', 1]]);
    assert.deepEqual(rows(enforced, SET), [['deploy', 'deny', 'allow', 1]]);
  });

  test('the deny index: an audit-mode deny filed under its equality condition is evaluated only for tokens in its bucket, as an enforced one', () => {
    const index = SET.denyIndex.get('github')!;
    assert.deepEqual(index.candidates({ ...GOOD, runner_environment: 'self-hosted' }).map((p) => p.name), ['deny-self-hosted', 'deny-bots']);
    assert.deepEqual(index.candidates(GOOD).map((p) => p.name), ['deny-bots']);
    // Every deny policy of the issuer, offline, gives the same audit matches as the index's candidates.
    for (const claims of [GOOD, { ...GOOD, runner_environment: 'self-hosted' }, { ...GOOD, actor: 'bot-2', event_name: 'pull_request_target' }]) {
      const all = evaluate(SET, lookupPolicy(SET, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims }, { allDenyPolicies: true });
      assert.deepEqual(all.auditMatches, decide(claims).auditMatches, JSON.stringify(claims));
    }
  });
});

describe('mode: explain', () => {
  const claims = { ...GOOD, runner_environment: 'self-hosted' };

  test('over HTTP the caller sees the audit-mode deny that would deny, marked audit, and audit_matches', () => {
    const output = toExplainOutput('deploy', decide(claims), 'x', 'caller');
    assert.equal(output.decision, 'allow');
    assert.deepEqual(output.audit_matches, ['deny-self-hosted']);
    assert.deepEqual(output.evaluations.map((e) => [e.policy, e.mode, e.matched]), [['deploy', 'enforce', true], ['deny-self-hosted', 'audit', true]]);
    assert.deepEqual(output.evaluations[1]!.conditions, [{ key: 'runner_environment', operator: 'equals', expected: '(hidden)', actual: 'self-hosted', matched: true }]);
  });

  test('the text says the decision, then that the audit-mode policy would deny', () => {
    const policy = SET.byName.get('deploy')!;
    const text = renderExplainText(toExplainOutput('deploy', evaluateOffline(SET, CTX, policy, offlineToken(CTX, 'github', claims)), null, 'owner'));
    const lines = text.split('\n');
    assert.deepEqual(lines.slice(0, 3), ['Decision: ALLOW (allowed)', "Policy 'deploy' allows this token.", "Would deny (audit mode): 'deny-self-hosted'; not enforced."]);
    assert.ok(lines.includes('deny policy (audit mode) deny-self-hosted: matches: would deny this token (audit mode)'), text);
    assert.ok(lines.includes('deny policy (audit mode) deny-bots: does not match (1 of 1 condition fails)'), text);
    assert.ok(lines.includes('deny policy deny-prt: does not match (1 of 1 condition fails)'), text);
    const unevaluable = renderExplainText(toExplainOutput('deploy', decide({ ...GOOD, actor: ['bot-1'] }), 'x', 'caller'));
    assert.ok(unevaluable.includes("deny policy (audit mode) deny-bots: could not be evaluated (claim 'actor': it is an array, which glob cannot compare): would deny this token (audit mode)"), unevaluable);
  });

  test('no audit-mode match: no line about it, and audit_matches is empty', () => {
    const output = toExplainOutput('deploy', decide(GOOD), 'x', 'caller');
    assert.deepEqual(output.audit_matches, []);
    assert.ok(!renderExplainText(output).includes('audit mode'));
  });
});

describe('mode: policy test cases', () => {
  const files = (cases: string) => [{ path: 'policies/guardrails.test.yaml', text: `tests:\n${cases}` }];
  const selfHosted = '{repository: acme/api, ref: refs/heads/main, runner_environment: self-hosted}';

  test('audit_matches, when given, must be exactly the audit-mode policies that would deny, in any order', () => {
    const run = runPolicyTests(
      files(`  - name: still allowed, recorded
    policy: deploy
    claims: ${selfHosted}
    expect: allow
    audit_matches: [deny-self-hosted]
  - name: both, any order
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, runner_environment: self-hosted, actor: bot-1}
    expect: allow
    audit_matches: [deny-bots, deny-self-hosted]
  - name: none expected, one matches
    policy: deploy
    claims: ${selfHosted}
    expect: allow
    audit_matches: []
  - name: not checked when absent
    policy: deploy
    claims: ${selfHosted}
    expect: allow
`),
      SET,
      CTX,
    );
    assert.deepEqual(run.issues, []);
    assert.deepEqual(run.results.map((r) => [r.case.name, r.passed]), [
      ['still allowed, recorded', true],
      ['both, any order', true],
      ['none expected, one matches', false],
      ['not checked when absent', true],
    ]);
    assert.deepEqual(run.results[2]!.decision.auditMatches, ['deny-self-hosted']);
  });

  test('audit_matches that is not a list of names is an issue at its line', () => {
    for (const value of ['deny-self-hosted', '[1]', '[""]', '{a: b}']) {
      const parsed = parseTestFile({ path: 'p.test.yaml', text: `tests:\n  - name: x\n    policy: deploy\n    claims: {}\n    expect: deny\n    audit_matches: ${value}\n` });
      assert.equal(parsed.ok, false, value);
      const issues = parsed.ok ? [] : parsed.issues;
      assert.equal(issues.length, 1, value);
      assert.equal(issues[0]!.line, 6, value);
      assert.equal(issues[0]!.keyPath, 'tests[0].audit_matches', value);
      assert.match(issues[0]!.message, /^audit_matches must be a list of audit-mode deny policy names \(\[\] for none\), not /, value);
    }
  });
});

describe('mode: the policy commands', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** A config naming the two issuers, and a policy directory holding POLICIES and `extra`. */
  async function workspace(extra: Record<string, string>): Promise<{ config: string; dir: string }> {
    const base = await mkdtemp(path.join(tmpdir(), 'oidc-broker-audit-mode-'));
    dirs.push(base);
    const dir = path.join(base, 'policies');
    await mkdir(dir);
    const config = path.join(base, 'broker.yaml');
    const issuers = ['github', 'gitlab'].map((name) => `  - name: ${name}\n    issuer: https://${name}.example.com\n    audiences: [${BROKER}]\n`).join('');
    await writeFile(config, `issuers:\n${issuers}policies:\n  dir: ./policies\n`);
    for (const [file, text] of Object.entries({ ...POLICIES, ...extra })) await writeFile(path.join(dir, file), text);
    return { config, dir };
  }

  test('policy test: PASS lines name the audit-mode matches; a case whose audit_matches differ FAILs saying so', async () => {
    const ws = await workspace({
      'guardrails.test.yaml': `tests:
  - name: recorded, not refused
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, runner_environment: self-hosted}
    expect: allow
  - name: nothing recorded
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main}
    expect: allow
    audit_matches: []
  - name: the wrong guardrail expected
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, actor: bot-1}
    expect: allow
    audit_matches: [deny-self-hosted]
`,
    });
    const run = await cli(['policy', 'test', ws.dir, '-c', ws.config]);
    assert.equal(run.code, 1, run.stderr);
    const lines = run.stdout.trimEnd().split('\n').map((line) => line.replace(/ \S*policies\//, ' policies/'));
    assert.deepEqual(lines, [
      'PASS policies/guardrails.test.yaml: recorded, not refused (would deny (audit mode): deny-self-hosted)',
      'PASS policies/guardrails.test.yaml: nothing recorded',
      'FAIL policies/guardrails.test.yaml:11: the wrong guardrail expected - expected audit_matches [deny-self-hosted], got [deny-bots]',
      '2 passed, 1 failed (1 test file)',
    ]);
  });

  test('policy explain: allow (exit 0), with the audit-mode deny policy that would deny; --json has audit_matches', async () => {
    const ws = await workspace({ 'claims.json': JSON.stringify({ repository: 'acme/api', ref: 'refs/heads/main', runner_environment: 'self-hosted' }) });
    const claims = path.join(ws.dir, 'claims.json');
    const text = await cli(['policy', 'explain', ws.dir, '-c', ws.config, '--policy', 'deploy', '--claims', claims]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^Decision: ALLOW \(allowed\)\nPolicy 'deploy' allows this token\.\nWould deny \(audit mode\): 'deny-self-hosted'; not enforced\.\n/m);
    assert.match(text.stdout, /^deny policy \(audit mode\) deny-self-hosted: matches: would deny this token \(audit mode\)$/m);
    const json = await cli(['policy', 'explain', ws.dir, '-c', ws.config, '--policy', 'deploy', '--claims', claims, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const output = JSON.parse(json.stdout) as { decision: string; audit_matches: string[] };
    assert.deepEqual([output.decision, output.audit_matches], ['allow', ['deny-self-hosted']]);
  });
});
