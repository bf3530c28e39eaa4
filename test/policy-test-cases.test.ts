// Policy test files (docs/policies/reference.md) and the offline explain output, as pure modules.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate } from '../src/policy/evaluate.js';
import { evaluateOffline, offlineToken, renderExplainText, summarizeDecision, toExplainOutput } from '../src/policy/explain.js';
import { isPolicyTestFileName, parseTestFile, runPolicyTests } from '../src/policy/test-cases.js';
import type { CompileContext, PolicyIssue, PolicySet } from '../src/policy/types.js';

const BROKER = 'https://broker.example.com';
const OTHER = 'https://other.example.com';
const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: [BROKER, OTHER] , tenantClaims: [] }],
    ['gitlab', { audiences: [BROKER] , tenantClaims: [] }],
  ]),
  providers: new Set(['jwt']),
};
const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';
const POLICIES: Record<string, string> = {
  'deploy.yaml': `issuer: github\nclaims:\n  repository: acme/api\n  ref: [refs/heads/main, refs/heads/release]\n${GRANT}`,
  'narrow.yaml': `issuer: github\naudience: ${OTHER}\nclaims:\n  repository: acme/api\n${GRANT}`,
  'gitlab-deploy.yaml': `issuer: gitlab\nclaims:\n  project_path: acme/api\n${GRANT}`,
  'deny-prt.yaml': 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
  'deny-bots.yaml': 'issuer: github\neffect: deny\nclaims:\n  actor: { glob: "bot-*" }\n',
};

function compileSet(): PolicySet {
  const result = compilePolicies(
    Object.entries(POLICIES).map(([path, text]) => ({ path, text })),
    CTX,
  );
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set;
}
const SET = compileSet();

const file = (text: string, path = 'policies/deploy.test.yaml') => ({ path, text });

function issuesOf(text: string): PolicyIssue[] {
  const parsed = parseTestFile(file(text));
  assert.equal(parsed.ok, false, 'the file is refused');
  return parsed.ok ? [] : parsed.issues;
}

/** Asserts one issue on `line` whose key path and message match. */
function assertIssue(issues: PolicyIssue[], line: number, keyPath: string, message: RegExp): void {
  const found = issues.find((i) => i.line === line && i.keyPath === keyPath && message.test(`${i.message} ${i.hint ?? ''}`));
  assert.ok(found, `an issue at line ${line}, ${keyPath}, ${message}; got ${JSON.stringify(issues, null, 2)}`);
  assert.equal(found.file, 'policies/deploy.test.yaml');
}

const VALID = `tests:
  - name: main may deploy
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, event_name: push}
    expect: allow
  - name: a feature branch may not
    policy: deploy
    claims:
      repository: acme/api
      ref: refs/heads/feature
    expect: allow
  - name: pull_request_target is denied
    policy: deploy
    issuer: github
    claims: {repository: acme/api, ref: refs/heads/main, event_name: pull_request_target}
    expect: deny
`;

describe('parseTestFile', () => {
  test('a valid file: every case with its line, defaults left to the run', () => {
    const parsed = parseTestFile(file(VALID));
    assert.ok(parsed.ok);
    assert.deepEqual(
      parsed.cases.map((c) => [c.name, c.line, c.policy, c.issuer, c.audience, c.expect]),
      [
        ['main may deploy', 2, 'deploy', undefined, undefined, 'allow'],
        ['a feature branch may not', 6, 'deploy', undefined, undefined, 'allow'],
        ['pull_request_target is denied', 12, 'deploy', 'github', undefined, 'deny'],
      ],
    );
    assert.deepEqual(parsed.cases[1]!.claims, { repository: 'acme/api', ref: 'refs/heads/feature' });
  });

  test('unknown keys, with a suggestion for a near miss, at their line', () => {
    const issues = issuesOf(`tests:\n  - name: a\n    policy: deploy\n    claims: {}\n    expected: allow\nsettings: {}\n`);
    assertIssue(issues, 5, 'tests[0].expected', /unknown key 'expected'.*did you mean 'expect'/);
    assertIssue(issues, 2, 'tests[0]', /expect is required/);
    assertIssue(issues, 6, 'settings', /unknown key 'settings'/);
  });

  test('missing fields are named, at the line of their case', () => {
    const issues = issuesOf(`tests:\n  - name: ok\n    policy: deploy\n    claims: {}\n    expect: deny\n  - claims: {}\n`);
    assert.deepEqual(issues.map((i) => i.line), [6, 6, 6], 'sorted by line');
    for (const field of ['name', 'policy', 'expect']) assertIssue(issues, 6, 'tests[1]', new RegExp(`${field} is required`));
    assert.equal(issuesOf(`tests:\n  - name: a\n    policy: deploy\n    expect: deny\n`).some((i) => /claims is required/.test(i.message) && i.line === 2), true);
  });

  test('wrong types and values', () => {
    const issues = issuesOf(
      `tests:\n  - name: 1\n    policy: [deploy]\n    claims: [a]\n    expect: Allow\n    audience: []\n    issuer: ""\n`,
    );
    assertIssue(issues, 2, 'tests[0].name', /name must be a non-empty string/);
    assertIssue(issues, 3, 'tests[0].policy', /policy must be a non-empty string, not a list/);
    assertIssue(issues, 4, 'tests[0].claims', /claims must be a map/);
    assertIssue(issues, 5, 'tests[0].expect', /expect must be allow or deny, not 'Allow'.*did you mean 'allow'/);
    assertIssue(issues, 6, 'tests[0].audience', /audience must be a string or a non-empty list/);
    assertIssue(issues, 7, 'tests[0].issuer', /issuer must be a non-empty string/);
  });

  test('a case that is not a map, an empty list, a file that is not a map', () => {
    assertIssue(issuesOf('tests:\n  - just a string\n'), 2, 'tests[0]', /a test case must be a map/);
    assertIssue(issuesOf('tests: []\n'), 1, 'tests', /tests is empty/);
    assert.match(issuesOf('')[0]!.message, /the file is empty/);
    assert.match(issuesOf('- a\n- b\n')[0]!.message, /must be a YAML map with a `tests:` list/);
    assertIssue(issuesOf('tests: {name: a}\n'), 1, 'tests', /tests must be a list/);
    assert.match(issuesOf('other: 1\n').map((i) => i.message).join('\n'), /tests is required/);
  });

  test('duplicate case names, duplicate keys and YAML syntax errors', () => {
    const dup = issuesOf(`tests:\n  - name: same\n    policy: deploy\n    claims: {}\n    expect: deny\n  - name: same\n    policy: deploy\n    claims: {}\n    expect: deny\n`);
    assertIssue(dup, 6, 'tests[1].name', /test name 'same' is already used on line 2/);
    const dupKey = issuesOf(`tests:\n  - name: a\n    policy: deploy\n    policy: other\n    claims: {}\n    expect: deny\n`);
    assert.equal(dupKey[0]!.line, 4);
    assert.match(dupKey[0]!.message, /policy/);
    const syntax = issuesOf('tests:\n  - name: [unclosed\n');
    assert.ok(syntax[0]!.line !== undefined && syntax[0]!.line >= 2);
  });

  test('a claim number YAML cannot hold exactly must be quoted', () => {
    const issues = issuesOf(`tests:\n  - name: a\n    policy: deploy\n    claims:\n      repository_id: 12345678901234567890\n    expect: deny\n`);
    assertIssue(issues, 5, 'tests[0].claims.repository_id', /cannot be represented exactly.*quote it/);
  });

  test('file names: *.test.yaml and *.test.yml, not hidden', () => {
    assert.equal(isPolicyTestFileName('deploy.test.yaml'), true);
    assert.equal(isPolicyTestFileName('deploy.test.yml'), true);
    assert.equal(isPolicyTestFileName('deploy.yaml'), false);
    assert.equal(isPolicyTestFileName('.deploy.test.yaml'), false);
    assert.equal(isPolicyTestFileName('deploy.test.yaml.bak'), false);
  });
});

describe('runPolicyTests', () => {
  test('passing and failing cases; a failure says which conditions failed and the token value', () => {
    const run = runPolicyTests([file(VALID)], SET, CTX);
    assert.deepEqual(run.issues, []);
    assert.deepEqual(
      run.results.map((r) => [r.case.name, r.passed, r.decision.reason]),
      [
        ['main may deploy', true, 'allowed'],
        ['a feature branch may not', false, 'conditions_not_met'],
        ['pull_request_target is denied', true, 'denied_by_policy'],
      ],
    );
    const failure = summarizeDecision(run.results[1]!.decision);
    assert.equal(failure, `policy 'deploy' does not match: ref in [refs/heads/main, refs/heads/release] (token: "refs/heads/feature")`);
  });

  test('a deny policy that matches is named, with its (offline, revealed) values', () => {
    const run = runPolicyTests([file(`tests:\n  - name: a bot\n    policy: deploy\n    claims: {repository: acme/api, ref: refs/heads/main, actor: bot-7}\n    expect: allow\n`)], SET, CTX);
    const [result] = run.results;
    assert.equal(result!.passed, false);
    assert.equal(summarizeDecision(result!.decision), `deny policy 'deny-bots' matches: actor matches glob bot-* (token: "bot-7")`);
  });

  test('an unknown policy or issuer is an issue at its line, with a suggestion; the other cases still run', () => {
    const run = runPolicyTests(
      [
        file(
          `tests:\n  - name: typo\n    policy: deplyo\n    claims: {}\n    expect: deny\n  - name: unknown issuer\n    policy: deploy\n    issuer: gitlabb\n    claims: {}\n    expect: deny\n  - name: fine\n    policy: deploy\n    claims: {}\n    expect: deny\n`,
        ),
      ],
      SET,
      CTX,
    );
    assertIssue(run.issues, 3, 'tests[0].policy', /test 'typo': no policy named 'deplyo'.*did you mean 'deploy'/);
    assertIssue(run.issues, 8, 'tests[1].issuer', /test 'unknown issuer': issuer 'gitlabb' is not configured.*did you mean 'gitlab'/);
    assert.deepEqual(run.results.map((r) => [r.case.name, r.passed]), [['fine', true]]);
  });

  test('an invalid file is reported and the valid files still run', () => {
    const run = runPolicyTests([file('tests: []\n', 'policies/bad.test.yaml'), file(VALID)], SET, CTX);
    assert.equal(run.issues.length, 1);
    assert.equal(run.issues[0]!.file, 'policies/bad.test.yaml');
    assert.equal(run.results.length, 3);
  });

  test("issuer defaults to the policy's; another issuer is an issuer mismatch (deny)", () => {
    const run = runPolicyTests(
      [
        file(
          `tests:\n  - name: gitlab default\n    policy: gitlab-deploy\n    claims: {project_path: acme/api}\n    expect: allow\n  - name: github token, gitlab policy\n    policy: gitlab-deploy\n    issuer: github\n    claims: {project_path: acme/api}\n    expect: deny\n`,
        ),
      ],
      SET,
      CTX,
    );
    assert.deepEqual(run.results.map((r) => [r.passed, r.decision.reason]), [
      [true, 'allowed'],
      [true, 'issuer_mismatch'],
    ]);
  });

  test("audience: the case's, else the claims' aud, else the issuer's first configured one; one the issuer does not accept is refused", () => {
    const cases = `tests:
  - name: default audience is the first (not the narrowed one)
    policy: narrow
    claims: {repository: acme/api}
    expect: deny
  - name: explicit audience
    policy: narrow
    audience: ${OTHER}
    claims: {repository: acme/api}
    expect: allow
  - name: aud claim
    policy: narrow
    claims: {repository: acme/api, aud: [${OTHER}]}
    expect: allow
  - name: an audience the issuer does not accept
    policy: deploy
    audience: https://elsewhere.example.com
    claims: {repository: acme/api, ref: refs/heads/main}
    expect: deny
`;
    const run = runPolicyTests([file(cases)], SET, CTX);
    assert.deepEqual(run.issues, []);
    assert.deepEqual(run.results.map((r) => [r.passed, r.decision.reason]), [
      [true, 'conditions_not_met'],
      [true, 'allowed'],
      [true, 'allowed'],
      [true, 'audience_not_accepted'],
    ]);
    assert.match(run.results[3]!.decision.message, /would be refused before any policy is evaluated/);
  });
});

describe('a grant the claims cannot fill: the refusal the exchange makes at grant rendering', () => {
  const RENDER_CTX: CompileContext = { issuers: CTX.issuers, providers: new Set(['jwt', 'aws', 'gcp']) };
  const compiled = compilePolicies(
    [
      { path: 'aws-tag.yaml', text: 'issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/deploy-api\n  session_tags:\n    ref: ${ref}\n' },
      { path: 'jwt-env.yaml', text: 'issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com/${environment}\n' },
      {
        path: 'gcp-id.yaml',
        text: 'issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: gcp\n  service_account: deploy@acme-prod.iam.gserviceaccount.com\n  token_type: id_token\n  id_token_audience: https://run.example.com/${environment}\n',
      },
      { path: 'deny-prt.yaml', text: 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n' },
    ],
    RENDER_CTX,
  );
  if (!compiled.ok) assert.fail(JSON.stringify(compiled.issues, null, 2));
  const set = compiled.set;

  test("a `ref` holding '#' under a policy tagging `ref`: expect allow fails with session_tag_invalid, expect deny passes", () => {
    const claims = '{repository: acme/api, ref: "refs/heads/fix#1"}';
    const run = runPolicyTests(
      [file(`tests:\n  - name: allow\n    policy: aws-tag\n    claims: ${claims}\n    expect: allow\n  - name: deny\n    policy: aws-tag\n    claims: ${claims}\n    expect: deny\n`)],
      set,
      RENDER_CTX,
    );
    assert.deepEqual(run.issues, []);
    assert.deepEqual(
      run.results.map((r) => [r.case.name, r.passed, r.decision.allowed, r.decision.reason]),
      [
        ['allow', false, false, 'session_tag_invalid'],
        ['deny', true, false, 'session_tag_invalid'],
      ],
    );
    assert.match(summarizeDecision(run.results[0]!.decision), /^session_tag_invalid: The policy's session tag 'ref' cannot be filled from this token: claim 'ref' holds '#' \(U\+0023\)/);
    // The conditions held: only the grant refused.
    assert.equal(run.results[0]!.decision.evaluations[0]!.matched, true);
  });

  test('an absent claim in a jwt or gcp audience template: template_claim_unusable; with the claim, allow', () => {
    for (const name of ['jwt-env', 'gcp-id']) {
      const policy = set.byName.get(name)!;
      const without = evaluateOffline(set, RENDER_CTX, policy, offlineToken(RENDER_CTX, 'github', { repository: 'acme/api' }));
      assert.deepEqual([without.allowed, without.reason], [false, 'template_claim_unusable'], name);
      const withClaim = evaluateOffline(set, RENDER_CTX, policy, offlineToken(RENDER_CTX, 'github', { repository: 'acme/api', environment: 'prod' }));
      assert.deepEqual([withClaim.allowed, withClaim.reason], [true, 'allowed'], name);
    }
  });

  test('a denial by the conditions or a deny policy stays that denial: the grant is rendered only for an allow', () => {
    const decision = evaluateOffline(set, RENDER_CTX, set.byName.get('aws-tag')!, offlineToken(RENDER_CTX, 'github', { repository: 'acme/api', ref: 'refs/heads/fix#1', event_name: 'pull_request_target' }));
    assert.equal(decision.reason, 'denied_by_policy');
  });
});

describe('explain output', () => {
  const claims = { repository: 'acme/api', ref: 'refs/heads/feature', actor: 'octocat' };

  test('toExplainOutput: the HTTP shape; policy values stay hidden unless revealed offline', () => {
    const policy = SET.byName.get('deploy')!;
    const token = { issuerName: 'github', claims, audiences: [BROKER] };
    const hidden = toExplainOutput('deploy', evaluate(SET, policy, token, { allDenyPolicies: true }), '01JDQ8R3W6T8Z2B4V9K1M5N7PX', 'caller');
    assert.deepEqual(Object.keys(hidden), ['explain_id', 'policy', 'decision', 'reason', 'message', 'evaluations', 'audit_matches', 'truncated']);
    assert.equal(hidden.decision, 'deny');
    assert.equal(hidden.truncated, false);
    assert.deepEqual(hidden.evaluations[0]!.conditions[1], { key: 'ref', operator: 'in', expected: '(hidden)', actual: 'refs/heads/feature', matched: false }, 'a caller never sees what a policy pins');
    assert.deepEqual(hidden.evaluations.map((e) => e.policy), ['deploy'], 'a caller sees no deny policy that does not deny');
    const { ref: _, ...noRef } = claims;
    const absent = toExplainOutput('deploy', evaluate(SET, policy, { ...token, claims: noRef }), 'x', 'caller');
    assert.deepEqual(absent.evaluations[0]!.conditions[1], { key: 'ref', operator: 'in', expected: '(hidden)', matched: false }, 'an absent claim has no actual');

    const offline = toExplainOutput('deploy', evaluateOffline(SET, CTX, policy, token), null, 'owner');
    assert.equal(offline.explain_id, null);
    assert.equal(offline.evaluations[0]!.conditions[1]!.expected, '[refs/heads/main, refs/heads/release]');
    assert.equal(offline.evaluations.find((e) => e.policy === 'deny-prt')!.conditions[0]!.expected, 'pull_request_target');
    assert.equal(offline.evaluations.find((e) => e.policy === 'deny-bots')!.conditions[0]!.expected, 'glob bot-*');
  });

  test("a deny policy's CEL condition: an error text (which quotes the expression) is hidden with the expected value", () => {
    const result = compilePolicies(
      [
        { path: 'deploy.yaml', text: POLICIES['deploy.yaml']! },
        { path: 'deny-cel.yaml', text: 'issuer: github\neffect: deny\ncondition: \'claims.secret_marker_claim == "x"\'\n' },
      ],
      CTX,
    );
    if (!result.ok) assert.fail(JSON.stringify(result.issues));
    const set = result.set;
    const token = { issuerName: 'github', claims: { repository: 'acme/api', ref: 'refs/heads/main' }, audiences: [BROKER] };
    const http = toExplainOutput('deploy', evaluate(set, set.byName.get('deploy')!, token), 'x', 'caller');
    assert.equal(http.reason, 'deny_policy_not_evaluable');
    const deny = http.evaluations.find((e) => e.policy === 'deny-cel')!;
    assert.equal(deny.error, 'condition: a claim it reads is missing');
    assert.deepEqual(deny.conditions, [{ key: 'condition', operator: 'cel', expected: '(hidden)', actual: '(hidden)', matched: false, error: 'a claim it reads is missing' }]);
    assert.ok(!JSON.stringify(http).includes('secret_marker_claim'));
    const offline = toExplainOutput('deploy', evaluateOffline(set, CTX, set.byName.get('deploy')!, token), null, 'owner');
    const revealed = offline.evaluations.find((e) => e.policy === 'deny-cel')!.conditions[0]!;
    assert.equal(revealed.expected, 'claims.secret_marker_claim == "x"');
    assert.match(String(revealed.actual), /secret_marker_claim/);
  });

  test('renderExplainText: the decision, then one row per condition with ✓/✗, operator, expected and the token value', () => {
    const policy = SET.byName.get('deploy')!;
    const output = toExplainOutput('deploy', evaluateOffline(SET, CTX, policy, offlineToken(CTX, 'github', claims)), null, 'owner');
    const text = renderExplainText(output, ['token not verified: offline explain shows what the policy would decide']);
    const lines = text.split('\n');
    assert.equal(lines[0], 'note: token not verified: offline explain shows what the policy would decide');
    assert.ok(lines.includes('Decision: DENY (conditions_not_met)'), text);
    assert.ok(lines.includes('policy deploy: 1 of 2 conditions fails'), text);
    assert.match(text, /^ {2}✗ {2}ref +in +\[refs\/heads\/main, refs\/heads\/release\] +"refs\/heads\/feature"$/m);
    assert.match(text, /^ {2}✓ {2}repository +equals +acme\/api +"acme\/api"$/m);
    assert.ok(lines.includes('deny policy deny-prt: does not match (1 of 1 condition fails)'), text);
    assert.match(text, /^ {2}✗ {2}event_name +equals +pull_request_target +\(absent\)$/m);
    assert.match(text, /KEY +OPERATOR +EXPECTED +ACTUAL/);
  });

  test('renderExplainText keeps hostile claim values on one line, without control characters', () => {
    const policy = SET.byName.get('deploy')!;
    const hostile = { repository: 'acme/api', ref: 'x\u001b[2J\nforged line\u202e' };
    const text = renderExplainText(toExplainOutput('deploy', evaluateOffline(SET, CTX, policy, offlineToken(CTX, 'github', hostile)), null, 'owner'));
    assert.doesNotMatch(text, /[\u001b\u202e]/);
    assert.ok(!text.split('\n').some((l) => l.startsWith('forged line')));
  });

  test('offlineToken: the default audience is flagged', () => {
    assert.deepEqual(offlineToken(CTX, 'github', {}), { issuerName: 'github', claims: {}, audiences: [BROKER], defaultAudience: true });
    assert.equal(offlineToken(CTX, 'github', { aud: OTHER }).defaultAudience, false);
    assert.deepEqual(offlineToken(CTX, 'github', { aud: OTHER }).audiences, [OTHER]);
  });
});
