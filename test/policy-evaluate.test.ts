// evaluate/lookupPolicy (docs/policies/reference.md): a request names one policy; it is
// allowed only if that policy holds for the token's issuer and no deny policy
// of the same issuer matches.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UnknownPolicyError } from '../src/errors.js';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy, type EvaluationToken } from '../src/policy/evaluate.js';
import type { CompileContext, Decision, PolicySet } from '../src/policy/types.js';

const BROKER = 'https://broker.example.com';
const OTHER_AUDIENCE = 'https://other.example.com';

const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: [BROKER, OTHER_AUDIENCE] , tenantClaims: [] }],
    ['gitlab', { audiences: [BROKER] , tenantClaims: [] }],
  ]),
  providers: new Set(['jwt']),
};

const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';

const POLICIES: Record<string, string> = {
  'deploy.yaml': `issuer: github\nclaims:\n  repository: acme/api\n  ref: refs/heads/main\n  event_name: [push, workflow_dispatch, pull_request_target]\n${GRANT}`,
  'narrow.yaml': `issuer: github\naudience: ${OTHER_AUDIENCE}\nclaims:\n  repository: acme/api\n${GRANT}`,
  'gitlab-deploy.yaml': `issuer: gitlab\nclaims:\n  project_path: acme/api\n${GRANT}`,
  // Deny values are "secret": a caller must never learn them from a message.
  'deny-prt.yaml': 'issuer: github\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
  'deny-bot.yaml': 'issuer: github\neffect: deny\nclaims:\n  actor: { glob: "sneaky-bot-*" }\n',
  'deny-other-audience.yaml': `issuer: github\neffect: deny\naudience: ${OTHER_AUDIENCE}\nclaims:\n  environment: staging\n`,
  'deny-gitlab-all-forks.yaml': 'issuer: gitlab\neffect: deny\nclaims:\n  repository: acme/api\n',
};

function compileSet(policies: Record<string, string> = POLICIES): PolicySet {
  const result = compilePolicies(
    Object.entries(policies).map(([path, text]) => ({ path, text })),
    CTX,
  );
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set;
}

const SET = compileSet();
const GOOD = { repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push', actor: 'octocat' };

function decide(policy: string, claims: Record<string, unknown>, token: Partial<EvaluationToken> = {}, set = SET): Decision {
  return evaluate(set, lookupPolicy(set, policy), { issuerName: 'github', audiences: [BROKER], claims, ...token });
}

describe('decisions, one row per rule', () => {
  const rows: { name: string; policy: string; claims: Record<string, unknown>; token?: Partial<EvaluationToken>; allowed: boolean; reason: string }[] = [
    { name: 'every condition holds, no deny matches', policy: 'deploy', claims: GOOD, allowed: true, reason: 'allowed' },
    { name: 'a claim condition fails', policy: 'deploy', claims: { ...GOOD, ref: 'refs/heads/dev' }, allowed: false, reason: 'conditions_not_met' },
    { name: 'a claim is missing', policy: 'deploy', claims: { repository: 'acme/api', event_name: 'push' }, allowed: false, reason: 'conditions_not_met' },
    { name: 'deny wins over a matching allow', policy: 'deploy', claims: { ...GOOD, event_name: 'pull_request_target' }, allowed: false, reason: 'denied_by_policy' },
    { name: 'deny wins even when the allow fails too', policy: 'deploy', claims: { ...GOOD, ref: 'x', actor: 'sneaky-bot-1' }, allowed: false, reason: 'denied_by_policy' },
    { name: 'a deny glob that does not match does not deny', policy: 'deploy', claims: { ...GOOD, actor: 'sneaky-bot/1' }, allowed: true, reason: 'allowed' },
    { name: 'a deny condition on a missing claim does not match', policy: 'deploy', claims: { repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' }, allowed: true, reason: 'allowed' },
    { name: "a deny policy's audience narrowing: token not for that audience", policy: 'deploy', claims: { ...GOOD, environment: 'staging' }, allowed: true, reason: 'allowed' },
    {
      name: "a deny policy's audience narrowing: token for that audience",
      policy: 'deploy',
      claims: { ...GOOD, environment: 'staging' },
      token: { audiences: [BROKER, OTHER_AUDIENCE] },
      allowed: false,
      reason: 'denied_by_policy',
    },
    // deny-gitlab-all-forks matches repository acme/api, but only for gitlab tokens.
    { name: 'a deny policy of another issuer does not apply', policy: 'deploy', claims: GOOD, allowed: true, reason: 'allowed' },
    { name: "a deny policy applies to its own issuer's tokens", policy: 'gitlab-deploy', claims: { project_path: 'acme/api', repository: 'acme/api' }, token: { issuerName: 'gitlab' }, allowed: false, reason: 'denied_by_policy' },
    { name: 'audience narrowing holds', policy: 'narrow', claims: GOOD, token: { audiences: [OTHER_AUDIENCE] }, allowed: true, reason: 'allowed' },
    { name: 'audience narrowing fails', policy: 'narrow', claims: GOOD, token: { audiences: [BROKER] }, allowed: false, reason: 'conditions_not_met' },
    { name: "the policy's issuer is not the token's", policy: 'gitlab-deploy', claims: { project_path: 'acme/api' }, allowed: false, reason: 'issuer_mismatch' },
    { name: 'a policy of another issuer, even with matching claims', policy: 'deploy', claims: GOOD, token: { issuerName: 'gitlab' }, allowed: false, reason: 'issuer_mismatch' },
    { name: 'naming a deny policy', policy: 'deny-prt', claims: GOOD, allowed: false, reason: 'not_an_allow_policy' },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const decision = decide(row.policy, row.claims, row.token);
      assert.equal(decision.allowed, row.allowed);
      assert.equal(decision.reason, row.reason);
      assert.ok(decision.message.length > 0);
    });
  }
});

describe('what a decision says', () => {
  test('evaluations list the named policy, then the deny policies the token could match (the index\'s candidates), in file order', () => {
    const decision = decide('deploy', GOOD);
    // deny-prt pins event_name and deny-other-audience pins environment, which GOOD does not have; deny-bot has only a glob.
    assert.deepEqual(
      decision.evaluations.map((e) => [e.policy, e.effect, e.matched]),
      [
        ['deploy', 'allow', true],
        ['deny-bot', 'deny', false],
      ],
    );
    assert.equal(decision.message, "Policy 'deploy' allows this token.");
  });

  test('with allDenyPolicies (explain), evaluations list every deny policy of the issuer, in file order; the decision is the same', () => {
    const decision = evaluate(SET, lookupPolicy(SET, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims: GOOD }, { allDenyPolicies: true });
    assert.deepEqual(
      decision.evaluations.map((e) => [e.policy, e.effect, e.matched]),
      [
        ['deploy', 'allow', true],
        ['deny-prt', 'deny', false],
        ['deny-bot', 'deny', false],
        ['deny-other-audience', 'deny', false],
      ],
    );
    const { evaluations: _all, ...outcome } = decision;
    const { evaluations: _candidates, ...indexed } = decide('deploy', GOOD);
    assert.deepEqual(outcome, indexed);
  });

  test('audience narrowing is the first condition, then the claims', () => {
    const decision = decide('narrow', GOOD, { audiences: [BROKER] });
    assert.deepEqual(decision.evaluations[0]?.conditions, [
      { key: 'aud', operator: 'audience', expected: OTHER_AUDIENCE, actual: [BROKER], matched: false },
      { key: 'repository', operator: 'equals', expected: 'acme/api', actual: 'acme/api', matched: true },
    ]);
    assert.equal(decision.message, `Policy 'narrow' does not match this token: the token's audience ["${BROKER}"] is not the one it requires.`);
  });

  test('a failure names each failing claim and the token\'s value, never the expected value', () => {
    const decision = decide('deploy', { repository: 'acme/api', ref: 'refs/heads/feature', event_name: null });
    assert.equal(decision.message, 'Policy \'deploy\' does not match this token: claim \'ref\' is "refs/heads/feature"; claim \'event_name\' is null.');
    assert.doesNotMatch(decision.message, /refs\/heads\/main|workflow_dispatch/);
  });

  test('absent, array and object values are described; long values are cut at about 100 characters', () => {
    const long = `refs/heads/${'x'.repeat(500)}`;
    // Without deny policies: an object where deny-prt compares `event_name` would make it deny (see below).
    const decision = decide('deploy', { repository: ['acme/api'], ref: long, event_name: { a: 'b'.repeat(300) } }, {}, compileSet({ 'deploy.yaml': POLICIES['deploy.yaml']! }));
    assert.match(decision.message, /claim 'repository' is \["acme\/api"\]/);
    // 100 characters of the JSON form, then an ellipsis.
    assert.match(decision.message, /claim 'ref' is "refs\/heads\/x{88}…; /);
    assert.match(decision.message, /claim 'event_name' is \{"a":"b{94}…\.$/);
    assert.ok(decision.message.length < 400);
    assert.match(decide('deploy', {}).message, /claim 'repository' is absent; claim 'ref' is absent; claim 'event_name' is absent\.$/);
  });

  test('control characters in a token value cannot break the message', () => {
    const decision = decide('deploy', { ...GOOD, ref: 'a\nb\u0000c' });
    assert.doesNotMatch(decision.message, /[\n\u0000]/);
  });

  test('a deny names the deny policy, never its values', () => {
    const decision = decide('deploy', { ...GOOD, event_name: 'pull_request_target', actor: 'sneaky-bot-7' });
    assert.equal(decision.message, "Denied by deny policies 'deny-prt', 'deny-bot'.");
    const single = decide('deploy', { ...GOOD, event_name: 'pull_request_target' });
    assert.equal(single.message, "Denied by deny policy 'deny-prt'.");
  });

  test("deny policies' expected values are hidden in evaluations; their matching and the token's values stay", () => {
    const decision = decide('deploy', { ...GOOD, event_name: 'pull_request_target' });
    const deny = decision.evaluations.find((e) => e.policy === 'deny-prt');
    assert.deepEqual(deny?.conditions, [{ key: 'event_name', operator: 'equals', expected: '(hidden)', actual: 'pull_request_target', matched: true }]);
    assert.doesNotMatch(JSON.stringify(decision.evaluations.filter((e) => e.effect === 'deny')), /sneaky-bot|staging/);
  });

  test('issuer mismatch and naming a deny policy evaluate nothing', () => {
    const mismatch = decide('gitlab-deploy', { project_path: 'acme/api' });
    assert.deepEqual(mismatch.evaluations, []);
    assert.equal(mismatch.message, "Policy 'gitlab-deploy' does not accept tokens from issuer 'github'.");
    const deny = decide('deny-prt', GOOD);
    assert.deepEqual(deny.evaluations, []);
    assert.equal(deny.message, "Policy 'deny-prt' is a deny policy and grants nothing; name an allow policy.");
  });

  test('a deny policy without conditions refuses every token of its issuer', () => {
    const set = compileSet({ ...POLICIES, 'freeze.yaml': 'issuer: github\neffect: deny\n' });
    const decision = decide('deploy', GOOD, {}, set);
    assert.equal(decision.reason, 'denied_by_policy');
    assert.match(decision.message, /'freeze'/);
    assert.equal(decide('gitlab-deploy', { project_path: 'acme/api' }, { issuerName: 'gitlab' }, set).allowed, true, 'another issuer is unaffected');
  });

  test('evaluate is pure: the same input, the same decision, nothing mutated', () => {
    const claims = Object.freeze({ ...GOOD });
    assert.deepEqual(decide('deploy', claims), decide('deploy', claims));
  });
});

describe('lookupPolicy', () => {
  test('finds allow and deny policies by name', () => {
    assert.equal(lookupPolicy(SET, 'deploy').name, 'deploy');
    assert.equal(lookupPolicy(SET, 'deny-prt').effect, 'deny');
  });

  const unknown: [name: string, message: string][] = [
    ['nope', "No policy named 'nope'."],
    ['__proto__', "No policy named '__proto__'."],
    ['constructor', "No policy named 'constructor'."],
    ['Deploy', "No policy named 'Deploy'."],
    ['a\nb\u0007c', "No policy named 'a?b?c'."],
    ['x'.repeat(1000), `No policy named '${'x'.repeat(128)}…'.`],
  ];
  for (const [name, message] of unknown) {
    test(`unknown: ${JSON.stringify(name.slice(0, 20))}`, () => {
      assert.throws(
        () => lookupPolicy(SET, name),
        (err: unknown) => err instanceof UnknownPolicyError && err.code === 'unknown_policy' && err.reason === 'unknown_policy' && err.message === message,
      );
    });
  }
});

describe('a deny policy that cannot be evaluated denies (docs/policies/reference.md)', () => {
  const set = compileSet({
    'deploy.yaml': POLICIES['deploy.yaml']!,
    'deny-cel.yaml': 'issuer: github\neffect: deny\nclaims:\n  actor: octocat\ncondition: claims.foo.bar == "x"\n',
    'deny-glob.yaml': 'issuer: github\neffect: deny\nclaims:\n  workflow: { glob: "release-*" }\n',
    'deny-in.yaml': 'issuer: github\neffect: deny\nclaims:\n  /extra/env: [staging, qa]\n',
    'deny-absent.yaml': 'issuer: github\neffect: deny\nclaims:\n  job_workflow_ref: { exists: false }\n  actor: mallory\n',
  });
  const rows: { name: string; claims: Record<string, unknown>; reason: string; message?: string }[] = [
    {
      name: 'a CEL condition on a missing key',
      claims: GOOD,
      reason: 'deny_policy_not_evaluable',
      message: "Denied: deny policy 'deny-cel' could not be evaluated (condition: a claim it reads is missing); a deny policy that cannot be evaluated denies.",
    },
    {
      name: 'a CEL condition selecting a field of a string (the library reports it as a missing field)',
      claims: { ...GOOD, foo: 'a string, not a map' },
      reason: 'deny_policy_not_evaluable',
      message: "Denied: deny policy 'deny-cel' could not be evaluated (condition: a claim it reads is missing); a deny policy that cannot be evaluated denies.",
    },
    { name: 'a CEL condition that evaluates: false', claims: { ...GOOD, foo: { bar: 'y' } }, reason: 'allowed' },
    { name: 'a CEL condition that evaluates: true', claims: { ...GOOD, foo: { bar: 'x' } }, reason: 'denied_by_policy' },
    { name: 'another condition of the deny policy fails: it cannot match, so it does not deny', claims: { ...GOOD, actor: 'someone-else' }, reason: 'allowed' },
    {
      name: 'a glob on an array claim',
      claims: { ...GOOD, foo: { bar: 'y' }, workflow: ['release-1'] },
      reason: 'deny_policy_not_evaluable',
      message: "Denied: deny policy 'deny-glob' could not be evaluated (claim 'workflow': it is an array, which glob cannot compare); a deny policy that cannot be evaluated denies.",
    },
    {
      name: 'an `in` on an object claim (a JSON Pointer, found through the deny index)',
      claims: { ...GOOD, foo: { bar: 'y' }, extra: { env: { name: 'staging' } } },
      reason: 'deny_policy_not_evaluable',
      message: "Denied: deny policy 'deny-in' could not be evaluated (claim '/extra/env': it is an object, which in cannot compare); a deny policy that cannot be evaluated denies.",
    },
    { name: 'an absent claim is not undecided: a deny condition on it fails', claims: { ...GOOD, foo: { bar: 'y' } }, reason: 'allowed' },
    { name: 'a null claim is absent too', claims: { ...GOOD, foo: { bar: 'y' }, workflow: null }, reason: 'allowed' },
    { name: 'a number or boolean claim has a string form: compared, not undecided', claims: { ...GOOD, foo: { bar: 'y' }, workflow: 12, extra: { env: true } }, reason: 'allowed' },
    { name: '`exists: false` on an absent claim holds (a negative condition is decided)', claims: { ...GOOD, actor: 'mallory' }, reason: 'denied_by_policy' },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const decision = decide('deploy', row.claims, {}, set);
      assert.equal(decision.reason, row.reason, decision.message);
      if (row.message !== undefined) assert.equal(decision.message, row.message);
      // The indexed evaluation and a scan of every deny policy agree.
      const full = evaluate(set, lookupPolicy(set, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims: row.claims }, { allDenyPolicies: true });
      assert.equal(full.reason, decision.reason);
    });
  }

  test('matched deny policies come before undecided ones in the reason', () => {
    // deny-cel is undecided (no `foo`), deny-glob matches.
    const decision = decide('deploy', { ...GOOD, workflow: 'release-1' }, {}, set);
    assert.equal(decision.reason, 'denied_by_policy');
    assert.equal(decision.message, "Denied by deny policy 'deny-glob'.");
  });

  test("the reason quotes neither a claim value nor the deny policy's values", () => {
    const decision = decide('deploy', { ...GOOD, foo: { bar: 'y' }, workflow: ['release-secret-value'] }, {}, set);
    assert.doesNotMatch(decision.message, /release/);
    const deny = decision.evaluations.find((e) => e.policy === 'deny-glob')!;
    assert.equal(deny.error, "claim 'workflow': it is an array, which glob cannot compare");
    assert.equal(deny.matched, false);
  });
});
