// CEL `condition:` (docs/policies/reference.md): compiled once at load with every
// error placed at its file line and expression position; evaluated fail
// closed (only an exact `true` matches; errors, non-bools and throws do not).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileCondition, MAX_CONDITION_DEPTH, MAX_CONDITION_LENGTH, type CompiledCondition, type ConditionCompileError } from '../src/policy/cel.js';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy } from '../src/policy/evaluate.js';
import type { CompileContext, PolicyIssue, PolicySet } from '../src/policy/types.js';

const BROKER = 'https://broker.example.com';
const CTX: CompileContext = { issuers: new Map([['github', { audiences: [BROKER] , tenantClaims: [] }]]), providers: new Set(['jwt']) };
const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';

function compiled(source: string): CompiledCondition {
  const result = compileCondition(source);
  if (!result.ok) assert.fail(`expected ${JSON.stringify(source)} to compile, got ${JSON.stringify(result.error)}`);
  return result.condition;
}

function compileError(source: string): ConditionCompileError {
  const result = compileCondition(source);
  if (result.ok) assert.fail(`expected ${JSON.stringify(source)} to be refused`);
  return result.error;
}

function issuesOf(text: string): PolicyIssue[] {
  const result = compilePolicies([{ path: 'p.yaml', text }], CTX);
  if (result.ok) assert.fail('expected the policy to be refused');
  return result.issues;
}

function setOf(files: Record<string, string>): PolicySet {
  const result = compilePolicies(
    Object.entries(files).map(([path, text]) => ({ path, text })),
    CTX,
  );
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set;
}

// Positions are the library's: a member call or field selection is placed at its `.`, a message literal at its start.
describe('compile errors carry a 1-based line:column inside the expression', () => {
  const rows: { name: string; source: string; line: number; column: number; message: RegExp }[] = [
    { name: 'syntax error', source: 'claims.ref == "a" &&', line: 1, column: 19, message: /^syntax error: / },
    { name: 'syntax error on a later line', source: 'claims.ref == "a" &&\n  claims.sha == "b" )', line: 2, column: 21, message: /^syntax error: / },
    { name: "undeclared identifier 'claim', with a hint", source: 'claims.ref == "a" &&\n  claim.x == "b"', line: 2, column: 3, message: /^undeclared reference to 'claim' \(only 'claims' is defined\); did you mean 'claims'\?$/ },
    { name: 'undeclared identifier inside a macro', source: 'claims.aud.exists(a, a == b)', line: 1, column: 27, message: /undeclared reference to 'b'/ },
    { name: 'unknown function, with the near miss', source: 'claims.ref.startswith("refs/tags/")', line: 1, column: 11, message: /^unknown function 'startswith'; did you mean 'startsWith'\?$/ },
    { name: 'a method called as a global function', source: 'startsWith(claims.ref, "x")', line: 1, column: 1, message: /'startsWith' is not called like this; use x\.startsWith\(_\)/ },
    { name: 'wrong number of arguments', source: 'claims.ref.endsWith()', line: 1, column: 11, message: /'endsWith' is not called like this/ },
    { name: 'a strings-extension function left out (format)', source: '"%s".format([claims.ref]) == "x"', line: 1, column: 5, message: /^unknown function 'format'/ },
    { name: 'message literal', source: 'google.protobuf.Duration{seconds: 1} == claims.d', line: 1, column: 1, message: /message construction .* is not supported/ },
    { name: 'matches() with a pattern from a claim', source: 'claims.ref.matches(claims.pattern)', line: 1, column: 26, message: /pattern of matches\(\) must be a string literal/ },
    { name: 'matches() with a pattern RE2 refuses', source: 'claims.sub.matches("(a)\\\\1")', line: 1, column: 20, message: /invalid or unsupported regex/ },
    { name: 'a comprehension variable hiding claims', source: 'claims.aud.exists(claims, claims == "x")', line: 1, column: 11, message: /'claims' would hide 'claims'/ },
    { name: 'optional syntax (not supported)', source: 'claims.?ref == "x"', line: 1, column: 7, message: /^syntax error/ },
    { name: 'empty', source: '  \n ', line: 1, column: 1, message: /empty/ },
    { name: 'too long', source: `claims.ref == "${'x'.repeat(MAX_CONDITION_LENGTH)}"`, line: 1, column: 1, message: new RegExp(`longer than ${MAX_CONDITION_LENGTH} characters`) },
    { name: 'too deep: an operator chain past the depth limit', source: Array.from({ length: MAX_CONDITION_DEPTH + 5 }, () => 'claims.a').join(' + ') + ' == 1', line: 1, column: 1, message: /nested too deeply/ },
    { name: 'too deep for the parser (RangeError), inside the length limit', source: `${'('.repeat(2000)}true${')'.repeat(2000)}`, line: 1, column: 1, message: /nested too deeply/ },
  ];
  for (const row of rows) {
    test(row.name, () => {
      const error = compileError(row.source);
      assert.match(error.message, row.message);
      if (row.name !== 'too deep: an operator chain past the depth limit') assert.deepEqual([error.line, error.column], [row.line, row.column], error.message);
    });
  }

  test('columns count characters, not UTF-16 units', () => {
    const error = compileError('"😀😀" == claim.x');
    assert.deepEqual([error.line, error.column], [1, 9]);
  });
});

describe('the policy compiler reports a condition error at its file line', () => {
  test('in a literal block (condition: |), the line of the offending expression line', () => {
    const issues = issuesOf(
      ['issuer: github', 'claims:', '  repository: acme/api', 'condition: |', '  claims.run_attempt == "1" &&', '    claims.ref.startswith("refs/tags/")', GRANT].join('\n'),
    );
    assert.equal(issues.length, 1, JSON.stringify(issues));
    const [issue] = issues;
    assert.equal(issue?.file, 'p.yaml');
    assert.equal(issue?.line, 6);
    assert.equal(issue?.keyPath, 'condition');
    assert.equal(issue?.message, "invalid CEL condition at 2:13: unknown function 'startswith'; did you mean 'startsWith'?");
    assert.match(issue?.hint ?? '', /CEL expression over `claims`/);
  });

  test('a literal block with a chomping indicator and a comment on the key line', () => {
    const issues = issuesOf(['issuer: github', 'condition: |- # why', '  claims.repository == "acme/api" &&', '', '  claim.ref == "x"', GRANT].join('\n'));
    assert.deepEqual(
      issues.map((i) => [i.line, i.keyPath, i.message]),
      [[5, 'condition', "invalid CEL condition at 3:1: undeclared reference to 'claim' (only 'claims' is defined); did you mean 'claims'?"]],
    );
  });

  test('a one-line condition: the key line', () => {
    const issues = issuesOf(['issuer: github', 'claims:', '  repository: acme/api', "condition: 'claims.ref =='", GRANT].join('\n'));
    assert.deepEqual(
      issues.map((i) => [i.line, i.keyPath]),
      [[4, 'condition']],
    );
    assert.match(issues[0]?.message ?? '', /^invalid CEL condition at 1:\d+: syntax error/);
  });

  test('a folded or multi-line quoted condition: the key line, and the position in the message', () => {
    const issues = issuesOf(['issuer: github', 'claims:', '  repository: acme/api', 'condition: >', '  claims.ref == "a" ||', '  claim.ref == "b"', GRANT].join('\n'));
    assert.deepEqual(
      issues.map((i) => [i.line, i.keyPath]),
      [[4, 'condition']],
    );
    assert.match(issues[0]?.message ?? '', /^invalid CEL condition at 1:\d+: undeclared reference to 'claim'/);
  });

  test('a condition that is not a string', () => {
    const issues = issuesOf(['issuer: github', 'claims:', '  repository: acme/api', 'condition: true', GRANT].join('\n'));
    assert.deepEqual(
      issues.map((i) => [i.line, i.keyPath, i.message]),
      [[4, 'condition', 'condition must be a CEL expression string, not true']],
    );
  });
});

describe('an allow policy needs a restriction: a condition counts if it reads claims', () => {
  test('a condition alone is enough', () => {
    const set = setOf({ 'p.yaml': `issuer: github\ncondition: claims.repository_owner_id == "1234" && claims.ref == "refs/heads/main"\n${GRANT}` });
    assert.equal(set.size, 1);
  });

  test('a condition that never reads claims is not (it would trust every token)', () => {
    const issues = issuesOf(`issuer: github\ncondition: "true"\n${GRANT}`);
    assert.deepEqual(
      issues.map((i) => [i.line, i.keyPath, i.message]),
      [[1, 'claims', 'an allow policy needs at least one claim condition']],
    );
    assert.match(issues[0]?.hint ?? '', /a `condition` counts only if it reads `claims`/);
  });

  test('with claim conditions, any valid condition is accepted', () => {
    assert.equal(setOf({ 'p.yaml': `issuer: github\nclaims:\n  repository: acme/api\ncondition: "1 == 1"\n${GRANT}` }).size, 1);
  });
});

describe('evaluation: only an exact true matches; everything else is a non-match with a reason, never a throw', () => {
  const claims = { ref: 'refs/heads/main', run_attempt: '1', n: 3, flag: true, aud: ['a', 'b'], ctx: { env: 'prod' }, nothing: null };
  const rows: { source: string; matched: boolean; actual: boolean | RegExp; note?: string }[] = [
    { source: 'claims.ref == "refs/heads/main"', matched: true, actual: true },
    { source: 'claims.ref == "refs/heads/dev"', matched: false, actual: false },
    { source: 'claims.missing == "x"', matched: false, actual: /^no such key: missing at 1:7$/, note: 'a missing claim is an error' },
    { source: 'claims.ref == "x" ||\n  claims.missing == "y"', matched: false, actual: /^no such key: missing at 2:9$/ },
    { source: 'has(claims.missing)', matched: false, actual: false, note: 'has() tests presence without an error' },
    { source: 'claims.nothing == null', matched: true, actual: true },
    { source: 'claims.ref == 1', matched: false, actual: false, note: 'CEL equality across types is false, not an error' },
    { source: 'claims.ref > 1', matched: false, actual: /no matching overload/, note: 'a wrong type for an operator is an error' },
    { source: 'claims.ref', matched: false, actual: /^the condition returned a string, not a bool$/ },
    { source: 'claims.n', matched: false, actual: /returned a double, not a bool/, note: 'JSON numbers are doubles' },
    { source: 'claims.n == 3', matched: true, actual: true, note: 'double 3.0 equals int 3' },
    { source: 'int(claims.n) + 1 == 4', matched: true, actual: true },
    { source: 'claims.flag', matched: true, actual: true },
    { source: '1 / 0 == 1 && claims.flag', matched: false, actual: /divide by zero/ },
    { source: 'claims.missing == "x" || true', matched: true, actual: true, note: 'CEL || absorbs an error when the other side is true (commutative)' },
    { source: 'true || claims.missing == "x"', matched: true, actual: true },
    { source: 'claims.missing == "x" && false', matched: false, actual: false, note: '&& absorbs an error when the other side is false' },
    { source: 'claims.aud.exists(a, a == "b")', matched: true, actual: true },
    { source: '"b" in claims.aud', matched: true, actual: true },
    { source: 'claims.ctx.env == "prod"', matched: true, actual: true },
    { source: 'claims.ref.startsWith("refs/") && claims.ref.endsWith("/main") && claims.ref.contains("heads")', matched: true, actual: true },
    { source: 'claims.ref.matches("^refs/heads/(main|release)$")', matched: true, actual: true },
    { source: 'claims.ref.split("/")[2].upperAscii() == "MAIN"', matched: true, actual: true, note: 'strings extension' },
    { source: 'size(claims.aud) == 2 && claims.aud.size() == 2', matched: true, actual: true },
    { source: 'type(claims.n) == double', matched: true, actual: true },
  ];
  for (const row of rows) {
    test(`${row.source.replace(/\s+/g, ' ')}${row.note ? ` (${row.note})` : ''}`, () => {
      const outcome = compiled(row.source).evaluate(claims);
      assert.equal(outcome.matched, row.matched);
      if (row.actual instanceof RegExp) assert.match(String(outcome.actual), row.actual);
      else assert.equal(outcome.actual, row.actual);
    });
  }

  test('claims with unusual shapes do not throw', () => {
    const condition = compiled('claims.ctx.env == "prod"');
    const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { env: 'prod' });
    assert.equal(condition.evaluate({ ctx: nullProto }).matched, true);
    assert.equal(condition.evaluate({}).matched, false);
    assert.equal(condition.evaluate({ ctx: 'prod' }).matched, false);
    assert.equal(condition.evaluate({ ctx: [1, 2] }).matched, false);
  });
});

describe('prototype names never reach JS objects', () => {
  const claims = JSON.parse('{"ref": "x", "ctx": {"env": "prod"}, "own": {"__proto__": {"polluted": true}}}') as Record<string, unknown>;
  for (const source of [
    'claims.constructor == claims.constructor',
    'claims.__proto__ == null',
    'claims["toString"] != null',
    'claims.ctx.constructor.name == "Object"',
    'claims.ctx.hasOwnProperty == null',
    'has(claims.constructor)',
    'has(claims.ctx.__proto__)',
  ]) {
    test(source, () => {
      const outcome = compiled(source).evaluate(claims);
      assert.equal(outcome.matched, false, JSON.stringify(outcome));
      if (typeof outcome.actual === 'string') assert.match(outcome.actual, /^no such key: /);
    });
  }

  test('a claim really named __proto__ (an own key from JSON) is an ordinary key', () => {
    assert.equal(compiled('claims.own.__proto__.polluted == true').evaluate(claims).matched, true);
    assert.equal(compiled('has(claims.ctx.polluted)').evaluate(claims).matched, false);
  });
});

describe('matches() is RE2: linear time on hostile input', () => {
  test('a catastrophic-backtracking pattern on a long claim finishes fast', () => {
    const condition = compiled('claims.sub.matches("^(a+)+$")');
    const sub = `${'a'.repeat(50_000)}!`;
    const started = performance.now();
    const outcome = condition.evaluate({ sub });
    const elapsed = performance.now() - started;
    assert.deepEqual(outcome, { matched: false, actual: false });
    // A backtracking engine takes longer than the universe's age here; RE2 takes milliseconds.
    assert.ok(elapsed < 2000, `took ${elapsed.toFixed(0)} ms`);
    assert.equal(condition.evaluate({ sub: 'aaa' }).matched, true);
  });
});

describe('end to end: compilePolicies + evaluate', () => {
  const set = setOf({
    'deploy.yaml': [
      'issuer: github',
      'claims:',
      '  repository: acme/api',
      'condition: |',
      '  claims.ref == "refs/heads/main" ||',
      '    (claims.ref.startsWith("refs/tags/v") && claims.run_attempt == "1")',
      GRANT,
    ].join('\n'),
    'deny-reruns.yaml': ['issuer: github', 'effect: deny', 'condition: has(claims.run_attempt) && int(claims.run_attempt) > 3'].join('\n'),
    'deny-bots.yaml': ['issuer: github', 'effect: deny', 'claims:', '  repository: acme/api', "condition: claims.actor.endsWith('[bot]')"].join('\n'),
  });
  const decide = (claims: Record<string, unknown>) => evaluate(set, lookupPolicy(set, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims });
  const base = { repository: 'acme/api', ref: 'refs/heads/main', run_attempt: '1', actor: 'octocat' };

  test('the condition holds: allowed, and the condition is the last result of the policy', () => {
    const decision = decide(base);
    assert.equal(decision.reason, 'allowed');
    assert.deepEqual(decision.evaluations[0]?.conditions.at(-1), {
      key: 'condition',
      operator: 'cel',
      expected: 'claims.ref == "refs/heads/main" ||\n  (claims.ref.startsWith("refs/tags/v") && claims.run_attempt == "1")',
      actual: true,
      matched: true,
    });
  });

  test('a tag on the first attempt holds; on a second attempt it does not', () => {
    assert.equal(decide({ ...base, ref: 'refs/tags/v1.2.3' }).reason, 'allowed');
    const decision = decide({ ...base, ref: 'refs/tags/v1.2.3', run_attempt: '2' });
    assert.equal(decision.reason, 'conditions_not_met');
    assert.equal(decision.evaluations[0]?.conditions.at(-1)?.actual, false);
  });

  test('a missing claim: not met, with the error as the actual value', () => {
    const { run_attempt: _, ...noAttempt } = base;
    const decision = decide({ ...noAttempt, ref: 'refs/tags/v1' });
    assert.equal(decision.reason, 'conditions_not_met');
    assert.equal(decision.evaluations[0]?.conditions.at(-1)?.actual, 'no such key: run_attempt at 2:50');
  });

  test('a deny policy with only a condition applies when it holds', () => {
    const decision = decide({ ...base, run_attempt: '4' });
    assert.equal(decision.allowed, false);
    assert.equal(decision.reason, 'denied_by_policy');
    assert.match(decision.message, /deny-reruns/);
    const deny = decision.evaluations.find((e) => e.policy === 'deny-reruns');
    assert.ok(deny?.matched);
    assert.deepEqual(deny.conditions, [{ key: 'condition', operator: 'cel', expected: '(hidden)', actual: true, matched: true }], "a deny policy's expression is hidden like its other values");
  });

  test('a deny policy with claims and a condition needs both', () => {
    assert.equal(decide({ ...base, actor: 'dependabot[bot]' }).reason, 'denied_by_policy');
    assert.equal(decide({ ...base, repository: 'acme/web', actor: 'dependabot[bot]' }).reason, 'conditions_not_met');
  });

  test('a deny condition that errors denies: the deny policy cannot be evaluated, and that fails closed', () => {
    const { actor: _, ...noActor } = base;
    const decision = decide(noActor);
    assert.equal(decision.allowed, false);
    assert.equal(decision.reason, 'deny_policy_not_evaluable');
    assert.equal(decision.message, "Denied: deny policy 'deny-bots' could not be evaluated (condition: a claim it reads is missing); a deny policy that cannot be evaluated denies.");
    const deny = decision.evaluations.find((e) => e.policy === 'deny-bots');
    assert.equal(deny?.matched, false);
    assert.equal(deny?.error, 'condition: a claim it reads is missing');
  });

  test('a deny condition that errors does not deny when another of its conditions fails', () => {
    const { actor: _, ...noActor } = base;
    assert.equal(decide({ ...noActor, repository: 'acme/web' }).reason, 'conditions_not_met');
  });

  test('no decision message echoes a deny expression', () => {
    const decision = decide({ ...base, actor: 'dependabot[bot]' });
    assert.doesNotMatch(JSON.stringify({ message: decision.message, evaluations: decision.evaluations }), /endsWith|\[bot\]'/);
  });
});

describe('what a caller learns from a failing condition', () => {
  test("the denial message says the condition could not be evaluated, never the error text that quotes the policy's literals", () => {
    const set = setOf({ 'deploy.yaml': `issuer: github\nclaims:\n  repository: acme/api\ncondition: 'claims.teams["acme-secret-team-4711"] == "admin"'\n${GRANT}` });
    const decision = evaluate(set, lookupPolicy(set, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims: { repository: 'acme/api', teams: {} } });
    assert.equal(decision.allowed, false);
    assert.match(decision.message, /the condition could not be evaluated/);
    assert.doesNotMatch(decision.message, /acme-secret-team-4711/);
    const condition = decision.evaluations[0]!.conditions.find((c) => c.operator === 'cel')!;
    assert.match(String(condition.actual), /acme-secret-team-4711/, 'the detail stays available to explain offline');
    const falseDecision = evaluate(set, lookupPolicy(set, 'deploy'), { issuerName: 'github', audiences: [BROKER], claims: { repository: 'acme/api', teams: { 'acme-secret-team-4711': 'viewer' } } });
    assert.match(falseDecision.message, /the condition is false/);
  });
});
