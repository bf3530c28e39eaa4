// The deny index (issue "Scale"): a decision evaluates only the deny policies
// that could match its token, filed under one equality condition each. Leaving
// the others out must never change a decision; a seeded property test compares
// indexed and full-scan evaluation over random policies and claim sets.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compilePolicies } from '../src/policy/compile.js';
import { buildDenyIndex, exactCondition } from '../src/policy/deny-index.js';
import { evaluate, lookupPolicy, type EvaluationToken } from '../src/policy/evaluate.js';
import type { CompileContext, CompiledPolicy, PolicySet } from '../src/policy/types.js';

const BROKER = 'https://broker.example.com';
const OTHER = 'https://other.example.com';
const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: [BROKER, OTHER] , tenantClaims: [] }],
    ['gitlab', { audiences: [BROKER, OTHER] , tenantClaims: [] }],
  ]),
  providers: new Set(['jwt']),
};
const GRANT = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';
/** An allow policy every test names; it matches any token with a repository. */
const ALLOW = `name: allow\nissuer: github\nclaims:\n  repository: { exists: true }\n${GRANT}`;

function compileSet(files: Record<string, string>): PolicySet {
  const result = compilePolicies(
    Object.entries(files).map(([path, text]) => ({ path, text })),
    CTX,
  );
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set;
}

/** Deny policies as `name -> claims YAML lines`, plus the allow policy. */
function denySet(denies: Record<string, string[]>, issuer = 'github'): PolicySet {
  const files: Record<string, string> = { 'allow.yaml': ALLOW };
  for (const [name, lines] of Object.entries(denies)) {
    files[`${name}.yaml`] = `name: ${name}\nissuer: ${issuer}\neffect: deny\n${lines.length > 0 ? `claims:\n${lines.map((l) => `  ${l}`).join('\n')}\n` : ''}`;
  }
  return compileSet(files);
}

function candidates(set: PolicySet, claims: Record<string, unknown>, issuer = 'github'): string[] {
  return (set.denyIndex.get(issuer)?.candidates(claims) ?? []).map((p) => p.name);
}

const token = (claims: Record<string, unknown>, audiences: string[] = [BROKER]): EvaluationToken => ({ issuerName: 'github', claims, audiences });

/** Indexed and full-scan evaluation agree: same decision, and the candidates are exactly the deny evaluations that could have matched. */
function assertSameDecision(set: PolicySet, policy: CompiledPolicy, tok: EvaluationToken, context = ''): void {
  const indexed = evaluate(set, policy, tok);
  const full = evaluate(set, policy, tok, { allDenyPolicies: true });
  const { evaluations: indexedEvaluations, ...indexedOutcome } = indexed;
  const { evaluations: fullEvaluations, ...fullOutcome } = full;
  assert.deepEqual(indexedOutcome, fullOutcome, `decision differs ${context}`);
  const [indexedNamed, ...indexedDenials] = indexedEvaluations;
  const [fullNamed, ...fullDenials] = fullEvaluations;
  assert.deepEqual(indexedNamed, fullNamed, `named policy's evaluation differs ${context}`);
  // The candidates' evaluations are the full scan's, in the same (file) order...
  const byName = new Map(fullDenials.map((e) => [e.policy, e]));
  const names = indexedDenials.map((e) => e.policy);
  assert.deepEqual(names, fullDenials.map((e) => e.policy).filter((n) => names.includes(n)), `candidates out of file order ${context}`);
  for (const e of indexedDenials) assert.deepEqual(e, byName.get(e.policy), `evaluation of ${e.policy} differs ${context}`);
  // ...and every deny policy left out fails one of its equality conditions.
  for (const e of fullDenials) {
    if (names.includes(e.policy)) continue;
    assert.equal(e.matched, false, `${e.policy} matched but was not a candidate ${context}`);
    assert.ok(
      e.conditions.some((c) => !c.matched && (c.operator === 'equals' || c.operator === 'in')),
      `${e.policy} was left out without a failing equality condition ${context}`,
    );
  }
}

describe('exact conditions', () => {
  test('equals and in give their string forms; other operators none', () => {
    assert.deepEqual(exactCondition('repository', { operator: 'equals', value: 'acme/api' }), { key: 'repository', path: ['repository'], forms: ['acme/api'] });
    assert.deepEqual(exactCondition('/a~1b/0', { operator: 'in', values: [1, '1', true, 1.5] }), { key: '/a~1b/0', path: ['a/b', '0'], forms: ['1', 'true', '1.5'] });
    assert.equal(exactCondition('ref', { operator: 'glob', pattern: 'refs/*' }), undefined);
    assert.equal(exactCondition('ref', { operator: 'regex', pattern: 'x' }), undefined);
    assert.equal(exactCondition('ref', { operator: 'exists', exists: true }), undefined);
    // Not reachable from a policy file (the compiler refuses it); unindexed is the safe answer.
    assert.equal(exactCondition('n', { operator: 'equals', value: Number.NaN }), undefined);
  });
});

describe('which deny policies are candidates', () => {
  test('an in list: filed under each value', () => {
    const set = denySet({ 'deny-events': ['event_name: [pull_request_target, workflow_run]'], 'deny-events-op': ['event_name: { in: [issue_comment] }'] });
    assert.deepEqual(candidates(set, { event_name: 'workflow_run' }), ['deny-events']);
    assert.deepEqual(candidates(set, { event_name: 'pull_request_target' }), ['deny-events']);
    assert.deepEqual(candidates(set, { event_name: 'issue_comment' }), ['deny-events-op']);
    assert.deepEqual(candidates(set, { event_name: 'push' }), []);
  });

  test('numbers compare by their canonical string form, either way round', () => {
    const set = denySet({ 'deny-owner-string': ['repository_owner_id: "123"'], 'deny-owner-number': ['repository_owner_id: 456'], 'deny-float': ['run_attempt: 1.0'] });
    assert.deepEqual(candidates(set, { repository_owner_id: 123 }), ['deny-owner-string']);
    assert.deepEqual(candidates(set, { repository_owner_id: '456' }), ['deny-owner-number']);
    assert.deepEqual(candidates(set, { repository_owner_id: 456 }), ['deny-owner-number']);
    // YAML 1.0 is the number 1, whose string form is "1".
    assert.deepEqual(candidates(set, { run_attempt: '1' }), ['deny-float']);
    assert.deepEqual(candidates(set, { run_attempt: '1.0' }), []);
    assert.deepEqual(candidates(set, { repository_owner_id: '0123' }), []);
    const allow = lookupPolicy(set, 'allow');
    assert.equal(evaluate(set, allow, token({ repository: 'a', repository_owner_id: 123 })).reason, 'denied_by_policy');
    assert.equal(evaluate(set, allow, token({ repository: 'a', run_attempt: 1 })).reason, 'denied_by_policy');
    assert.equal(evaluate(set, allow, token({ repository: 'a', run_attempt: '1.0' })).reason, 'allowed');
  });

  test('booleans compare as true/false', () => {
    const set = denySet({ 'deny-unprotected': ['ref_protected: false'] });
    assert.deepEqual(candidates(set, { ref_protected: false }), ['deny-unprotected']);
    assert.deepEqual(candidates(set, { ref_protected: 'false' }), ['deny-unprotected']);
    assert.deepEqual(candidates(set, { ref_protected: 'False' }), []);
    assert.deepEqual(candidates(set, { ref_protected: true }), []);
  });

  test('a deny policy with only glob, regex, exists or audience conditions, or none, is always a candidate', () => {
    const set = denySet({
      'deny-glob': ['actor: { glob: "bot-*" }'],
      'deny-regex': ['ref: { regex: "refs/heads/tmp/.*" }'],
      'deny-exists': ['head_ref: { exists: true }'],
      'deny-freeze': [],
      'deny-repo': ['repository: acme/legacy'],
    });
    assert.equal(set.denyIndex.get('github')?.alwaysEvaluated, 4);
    assert.deepEqual(candidates(set, {}), ['deny-glob', 'deny-regex', 'deny-exists', 'deny-freeze']);
    assert.deepEqual(candidates(set, { repository: 'acme/legacy' }), ['deny-glob', 'deny-regex', 'deny-exists', 'deny-freeze', 'deny-repo']);
    const audience = compileSet({ 'allow.yaml': ALLOW, 'deny-aud.yaml': `issuer: github\neffect: deny\naudience: ${OTHER}\n` });
    assert.deepEqual(candidates(audience, {}), ['deny-aud']);
  });

  test('JSON Pointer keys: nested claims, and a pointer to a top-level claim shares its name\'s bucket', () => {
    const set = denySet({ 'deny-nested': ['/extra/env: staging'], 'deny-pointer': ['/repository: acme/old'], 'deny-name': ['repository: acme/old'], 'deny-slash': ['/a~1b: x'] });
    assert.deepEqual(candidates(set, { extra: { env: 'staging' } }), ['deny-nested']);
    // An array cannot be compared: every policy filed under that claim is a candidate (and denies, undecided).
    assert.deepEqual(candidates(set, { extra: { env: ['staging'] } }), ['deny-nested']);
    assert.deepEqual(candidates(set, { 'extra/env': 'staging' }), []);
    assert.deepEqual(candidates(set, { repository: 'acme/old' }), ['deny-pointer', 'deny-name']);
    assert.deepEqual(candidates(set, { 'a/b': 'x' }), ['deny-slash']);
  });

  test('a missing or null claim selects no bucket', () => {
    const set = denySet({ 'deny-repo': ['repository: acme/api'] });
    for (const claims of [{}, { repository: null }]) {
      assert.deepEqual(candidates(set, claims), [], JSON.stringify(claims));
      assertSameDecision(set, lookupPolicy(set, 'allow'), token(claims), JSON.stringify(claims));
    }
  });

  test('an array or object claim selects every policy filed under it: their condition cannot be evaluated, so they deny', () => {
    const set = denySet({ 'deny-repo': ['repository: acme/api'], 'deny-other': ['repository: acme/web'], 'deny-event': ['event_name: push'] });
    for (const claims of [{ repository: ['acme/api'] }, { repository: { name: 'acme/api' } }]) {
      assert.deepEqual(candidates(set, claims), ['deny-repo', 'deny-other'], JSON.stringify(claims));
      assertSameDecision(set, lookupPolicy(set, 'allow'), token(claims), JSON.stringify(claims));
      assert.equal(evaluate(set, lookupPolicy(set, 'allow'), token(claims)).reason, 'deny_policy_not_evaluable');
    }
  });

  test('two deny policies on the same claim and value are both candidates, in file order', () => {
    const set = denySet({ 'deny-a': ['event_name: pull_request_target'], 'deny-b': ['event_name: pull_request_target', 'actor: { glob: "octo*" }'] });
    assert.deepEqual(candidates(set, { event_name: 'pull_request_target' }), ['deny-a', 'deny-b']);
    const decision = evaluate(set, lookupPolicy(set, 'allow'), token({ repository: 'x', event_name: 'pull_request_target', actor: 'octocat' }));
    assert.equal(decision.message, "Denied by deny policies 'deny-a', 'deny-b'.");
  });

  test('a policy with several equality conditions is filed under the one fewest deny policies pin', () => {
    const denies: Record<string, string[]> = {};
    for (let i = 0; i < 20; i++) denies[`deny-${i}`] = ['event_name: pull_request_target', `repository: acme/repo-${i}`];
    const set = denySet(denies);
    assert.deepEqual(candidates(set, { event_name: 'pull_request_target', repository: 'acme/repo-7' }), ['deny-7']);
    assert.deepEqual(candidates(set, { event_name: 'pull_request_target', repository: 'acme/other' }), []);
    assertSameDecision(set, lookupPolicy(set, 'allow'), token({ event_name: 'pull_request_target', repository: 'acme/repo-7' }));
  });

  test("another issuer's deny policies are never candidates", () => {
    const set = compileSet({ 'allow.yaml': ALLOW, 'deny-gitlab.yaml': 'issuer: gitlab\neffect: deny\nclaims:\n  repository: acme/api\n' });
    assert.deepEqual(candidates(set, { repository: 'acme/api' }), []);
    assert.deepEqual(candidates(set, { repository: 'acme/api' }, 'gitlab'), ['deny-gitlab']);
    assert.equal(evaluate(set, lookupPolicy(set, 'allow'), token({ repository: 'acme/api' })).allowed, true);
  });

  test('a deny policy whose only condition is not an equality (e.g. a CEL condition) is always a candidate', () => {
    // Built directly, so this holds whether or not this build compiles `condition:`.
    const celLike: CompiledPolicy = Object.freeze({
      name: 'deny-cel',
      description: undefined,
      file: 'deny-cel.yaml',
      sha256: '0'.repeat(64),
      issuer: 'github',
      effect: 'deny',
      mode: 'enforce',
      audience: undefined,
      allowTokenReuse: false,
      grant: undefined,
      evaluate: (claims: Readonly<Record<string, unknown>>) => [{ key: 'condition', operator: 'equals', expected: 'claims.run_attempt != "1"', actual: claims.run_attempt, matched: claims.run_attempt !== '1' }],
    } as CompiledPolicy);
    const index = buildDenyIndex([{ policy: celLike, exact: [] }]);
    assert.equal(index.alwaysEvaluated, 1);
    assert.deepEqual(index.candidates({}), [celLike]);
    assert.deepEqual(index.candidates({ run_attempt: '2' }), [celLike]);
  });

  test('a compiled deny policy with a CEL condition only is always a candidate (when this build has CEL)', (t) => {
    const result = compilePolicies(
      [
        { path: 'allow.yaml', text: ALLOW },
        { path: 'deny-rerun.yaml', text: 'issuer: github\neffect: deny\ncondition: claims.run_attempt != "1"\n' },
        { path: 'deny-repo-rerun.yaml', text: 'issuer: github\neffect: deny\nclaims:\n  repository: acme/api\ncondition: claims.run_attempt != "1"\n' },
      ],
      CTX,
    );
    if (!result.ok) {
      t.skip(`CEL conditions do not compile in this build: ${result.issues[0]?.message}`);
      return;
    }
    const set = result.set;
    assert.deepEqual(candidates(set, {}), ['deny-rerun']);
    assert.deepEqual(candidates(set, { repository: 'acme/api' }), ['deny-rerun', 'deny-repo-rerun']);
    const allow = lookupPolicy(set, 'allow');
    for (const claims of [{ repository: 'acme/api', run_attempt: '2' }, { repository: 'acme/api', run_attempt: '1' }, { repository: 'acme/x', run_attempt: '2' }]) {
      assertSameDecision(set, allow, token(claims), JSON.stringify(claims));
    }
    assert.equal(evaluate(set, allow, token({ repository: 'acme/x', run_attempt: '2' })).message, "Denied by deny policy 'deny-rerun'.");
  });

  test('candidates() does not let a claim named like an Object member reach a prototype', () => {
    const set = denySet({ 'deny-proto': ['constructor: x'], 'deny-to-string': ['toString: "[object Object]"'] });
    assert.deepEqual(candidates(set, {}), []);
    assert.deepEqual(candidates(set, { constructor: 'x' }), ['deny-proto']);
  });
});

describe('property: indexed evaluation decides exactly like a scan of every deny policy', () => {
  /** mulberry32: small, seedable, good enough to pick test cases. */
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // A small vocabulary, so random policies and claims collide often.
  const KEYS = ['repository', '/repository', 'repository_owner_id', 'event_name', 'ref_protected', 'run_attempt', '/extra/env', '/groups/0'];
  const POLICY_VALUES = ['"a"', '"b"', '"1"', '"12"', '"true"', '"1.5"', '1', '12', '0', '-1', '1.5', 'true', 'false', '"-1"'];
  const CLAIM_SCALARS: unknown[] = ['a', 'b', '1', '12', 'true', 'false', '1.5', '-1', '01', 1, 12, 0, -1, 1.5, true, false, '', 'A'];

  function randomCondition(pick: <T>(items: readonly T[]) => T, rand: () => number): string {
    const r = rand();
    if (r < 0.35) return pick(POLICY_VALUES);
    if (r < 0.5) return `[${Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(POLICY_VALUES)).join(', ')}]`;
    if (r < 0.6) return `{ in: [${Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(POLICY_VALUES)).join(', ')}] }`;
    if (r < 0.72) return `{ glob: "${pick(['a*', '1*', '*', '?', 'tru?'])}" }`;
    if (r < 0.84) return `{ regex: "${pick(['[0-9]+', 'a|b', 'tr.*', '-?1'])}" }`;
    return `{ exists: ${pick(['true', 'false'])} }`;
  }

  function randomClaimValue(pick: <T>(items: readonly T[]) => T, rand: () => number): unknown {
    const r = rand();
    if (r < 0.6) return pick(CLAIM_SCALARS);
    if (r < 0.7) return null;
    if (r < 0.8) return [pick(CLAIM_SCALARS)];
    return { v: pick(CLAIM_SCALARS) };
  }

  function randomClaims(pick: <T>(items: readonly T[]) => T, rand: () => number): Record<string, unknown> {
    const claims: Record<string, unknown> = {};
    for (const key of ['repository', 'repository_owner_id', 'event_name', 'ref_protected', 'run_attempt']) {
      if (rand() < 0.75) claims[key] = randomClaimValue(pick, rand);
    }
    if (rand() < 0.6) claims.extra = rand() < 0.8 ? { env: randomClaimValue(pick, rand) } : randomClaimValue(pick, rand);
    if (rand() < 0.6) claims.groups = rand() < 0.8 ? [randomClaimValue(pick, rand), 'x'] : randomClaimValue(pick, rand);
    return claims;
  }

  const SEEDS = 60;
  const SETS_PER_SEED = 5;
  const TOKENS_PER_SET = 40;

  test(`${SEEDS * SETS_PER_SEED} random policy sets x ${TOKENS_PER_SET} random tokens`, () => {
    let denied = 0;
    let candidatesSeen = 0;
    let denyPoliciesSeen = 0;
    for (let seed = 1; seed <= SEEDS; seed++) {
      const rand = prng(seed);
      const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;
      for (let s = 0; s < SETS_PER_SEED; s++) {
        const files: Record<string, string> = { 'allow.yaml': ALLOW };
        const denyCount = 1 + Math.floor(rand() * 12);
        for (let d = 0; d < denyCount; d++) {
          const keys = [...KEYS].sort(() => rand() - 0.5).slice(0, Math.floor(rand() * 4));
          // `repository` and `/repository` are the same claim; one policy uses one of them.
          if (keys.includes('repository') && keys.includes('/repository')) keys.splice(keys.indexOf('/repository'), 1);
          const lines = keys.map((key) => `  ${key}: ${randomCondition(pick, rand)}`);
          const audience = rand() < 0.1 ? `audience: ${OTHER}\n` : '';
          files[`deny-${d}.yaml`] = `issuer: ${rand() < 0.9 ? 'github' : 'gitlab'}\neffect: deny\n${audience}${lines.length > 0 ? `claims:\n${lines.join('\n')}\n` : ''}`;
        }
        const set = compileSet(files);
        const allow = lookupPolicy(set, 'allow');
        for (let t = 0; t < TOKENS_PER_SET; t++) {
          const claims = randomClaims(pick, rand);
          const tok = token(claims, rand() < 0.2 ? [BROKER, OTHER] : [BROKER]);
          const context = `(seed ${seed}, set ${s}, token ${t}: ${JSON.stringify(claims)}; policies ${JSON.stringify(files)})`;
          assertSameDecision(set, allow, tok, context);
          const decision = evaluate(set, allow, tok);
          if (decision.reason === 'denied_by_policy') denied++;
          candidatesSeen += decision.evaluations.length - 1;
          denyPoliciesSeen += set.denyByIssuer.get('github')?.length ?? 0;
        }
      }
    }
    // The generator must exercise both outcomes and actually leave policies out.
    assert.ok(denied > 1000, `only ${denied} denials`);
    assert.ok(candidatesSeen < denyPoliciesSeen * 0.8, `the index left out too little: ${candidatesSeen} of ${denyPoliciesSeen}`);
  });
});
