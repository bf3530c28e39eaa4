// docs/policies/reference.md, "Matching semantics": one table row per rule. Each row is
// a policy `claims:` entry as YAML, compiled by the real compiler, and a token's
// claims; the row pins whether that condition matches.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compilePolicies } from '../src/policy/compile.js';
import { RE2JS } from 're2js';
import { compileMatcher, globToRe2, MatcherError } from '../src/policy/matchers.js';
import type { CompileContext, CompiledPolicy, ConditionResult } from '../src/policy/types.js';

const CTX: CompileContext = { issuers: new Map([['github', { audiences: ['https://broker.example.com'] , tenantClaims: [] }]]), providers: new Set(['jwt']) };

/** Compiles a deny policy (so no grant is needed) holding exactly this one condition. */
function policyWith(condition: string): CompiledPolicy {
  const text = `issuer: github\neffect: deny\nclaims:\n  ${condition}\n`;
  const result = compilePolicies([{ path: 'row.yaml', text }], CTX);
  if (!result.ok) throw new Error(`does not compile: ${JSON.stringify(result.issues)}`);
  const policy = result.set.byName.get('row');
  assert.ok(policy);
  return policy;
}

function conditionOf(condition: string, claims: Record<string, unknown>): ConditionResult {
  const [result, ...rest] = policyWith(condition).evaluate(claims, []);
  assert.ok(result);
  assert.equal(rest.length, 0);
  return result;
}

interface Row {
  condition: string;
  claims: Record<string, unknown>;
  matched: boolean;
}

function runRows(rows: Row[]): void {
  for (const row of rows) {
    test(`${row.condition} vs ${JSON.stringify(row.claims)} -> ${row.matched}`, () => {
      assert.equal(conditionOf(row.condition, row.claims).matched, row.matched);
    });
  }
}

describe('glob: whole value; * stops at /, ** crosses it, ? is one non-/ character', () => {
  runRows([
    { condition: 'ref: { glob: "refs/tags/v*" }', claims: { ref: 'refs/tags/v1.2.3' }, matched: true },
    { condition: 'ref: { glob: "refs/tags/v*" }', claims: { ref: 'refs/tags/v' }, matched: true },
    { condition: 'ref: { glob: "refs/tags/v*" }', claims: { ref: 'refs/tags/v1/../evil' }, matched: false },
    { condition: 'ref: { glob: "refs/tags/v*" }', claims: { ref: 'xrefs/tags/v1' }, matched: false },
    { condition: 'ref: { glob: "refs/heads/**" }', claims: { ref: 'refs/heads/feature/deep/x' }, matched: true },
    { condition: 'ref: { glob: "a**b" }', claims: { ref: 'a/x\ny/b' }, matched: true },
    { condition: 'ref: { glob: "refs/heads/?" }', claims: { ref: 'refs/heads/a' }, matched: true },
    { condition: 'ref: { glob: "refs/heads/?" }', claims: { ref: 'refs/heads/ab' }, matched: false },
    { condition: 'ref: { glob: "refs/heads/?" }', claims: { ref: 'refs/heads/' }, matched: false },
    { condition: 'ref: { glob: "a?b" }', claims: { ref: 'a/b' }, matched: false },
    { condition: 'ref: { glob: "a?b" }', claims: { ref: 'a\u00e9b' }, matched: true },
    { condition: 'repository: { glob: "acme/*" }', claims: { repository: 'acme/api/extra' }, matched: false },
    // Every other character is literal, including regex metacharacters.
    { condition: 'ref: { glob: "v1.2" }', claims: { ref: 'v1x2' }, matched: false },
    { condition: 'ref: { glob: "a+b" }', claims: { ref: 'aab' }, matched: false },
    { condition: 'ref: { glob: "a+b" }', claims: { ref: 'a+b' }, matched: true },
    { condition: 'ref: { glob: "[ab]" }', claims: { ref: 'a' }, matched: false },
    { condition: 'ref: { glob: "[ab]" }', claims: { ref: '[ab]' }, matched: true },
    { condition: 'ref: { glob: "a|b" }', claims: { ref: 'a' }, matched: false },
    { condition: 'ref: { glob: "a\\\\b" }', claims: { ref: 'a\\b' }, matched: true },
    { condition: 'ref: { glob: "(a)" }', claims: { ref: '(a)' }, matched: true },
  ]);

  test('globToRe2 translates to an RE2 body', () => {
    assert.equal(globToRe2('refs/tags/v*'), 'refs/tags/v[^/]*');
    assert.equal(globToRe2('a/**/b?'), 'a/(?s:.*)/b[^/]');
    assert.equal(globToRe2('a.b$'), 'a\\.b\\$');
  });
});

describe('regex: anchored as ^(?:...)$ with RE2 semantics', () => {
  runRows([
    // A top-level | cannot escape the anchors.
    { condition: 'x: { regex: "a|b" }', claims: { x: 'xa' }, matched: false },
    { condition: 'x: { regex: "a|b" }', claims: { x: 'bx' }, matched: false },
    { condition: 'x: { regex: "a|b" }', claims: { x: 'a' }, matched: true },
    { condition: 'x: { regex: "a|b" }', claims: { x: 'b' }, matched: true },
    { condition: 'sub: { regex: "repo:acme/api:environment:(prod|production)" }', claims: { sub: 'repo:acme/api:environment:production' }, matched: true },
    { condition: 'sub: { regex: "repo:acme/api:environment:(prod|production)" }', claims: { sub: 'repo:acme/api:environment:prod-evil' }, matched: false },
    { condition: 'sub: { regex: "repo:acme/api:environment:(prod|production)" }', claims: { sub: 'evil-repo:acme/api:environment:prod' }, matched: false },
    // sigstore's unanchored SAN regex matches evil-user@example.com; ours must not.
    { condition: 'email: { regex: "user@example\\\\.com" }', claims: { email: 'evil-user@example.com' }, matched: false },
    { condition: 'email: { regex: "user@example\\\\.com" }', claims: { email: 'user@example.com' }, matched: true },
    // `$` is end of text, not end of line.
    { condition: 'x: { regex: "acme" }', claims: { x: 'acme\n' }, matched: false },
    { condition: 'x: { regex: "(?i)acme" }', claims: { x: 'ACME' }, matched: true },
    { condition: 'n: { regex: "[0-9]+" }', claims: { n: 42 }, matched: true },
  ]);

  test('a pattern is linear time: a classic catastrophic-backtracking input answers at once', () => {
    const started = performance.now();
    assert.equal(conditionOf('x: { regex: "(a+)+$" }', { x: `${'a'.repeat(5000)}!` }).matched, false);
    assert.ok(performance.now() - started < 1000);
  });

  for (const pattern of ['(a)\\1', 'a(?=b)', 'a(?!b)', '(?<=a)b', '(?<!a)b', 'a)|(b', 'a{1001}', '[', '\\Qa)|(?:b']) {
    test(`compileMatcher refuses ${pattern}`, () => {
      assert.throws(() => compileMatcher('x', { operator: 'regex', pattern }), { name: 'MatcherError', message: /invalid or unsupported regex/ });
    });
  }
});

describe('scalars and lists compare the claim\'s string form, case-sensitively', () => {
  runRows([
    { condition: 'repository: acme/api', claims: { repository: 'acme/api' }, matched: true },
    { condition: 'repository: acme/api', claims: { repository: 'ACME/api' }, matched: false },
    { condition: 'repository_id: "7654321"', claims: { repository_id: 7654321 }, matched: true },
    { condition: 'repository_id: 7654321', claims: { repository_id: '7654321' }, matched: true },
    { condition: 'repository_id: 7654321', claims: { repository_id: 7654321 }, matched: true },
    { condition: 'run_attempt: "1"', claims: { run_attempt: JSON.parse('1.0') as number }, matched: true },
    { condition: 'run_attempt: "1"', claims: { run_attempt: '01' }, matched: false },
    { condition: 'run_attempt: "1.0"', claims: { run_attempt: 1 }, matched: false },
    { condition: 'ratio: 1.5', claims: { ratio: 1.5 }, matched: true },
    { condition: 'ref_protected: true', claims: { ref_protected: true }, matched: true },
    { condition: 'ref_protected: true', claims: { ref_protected: 'true' }, matched: true },
    { condition: 'ref_protected: "true"', claims: { ref_protected: true }, matched: true },
    { condition: 'ref_protected: true', claims: { ref_protected: 'True' }, matched: false },
    { condition: 'ref_protected: true', claims: { ref_protected: 1 }, matched: false },
    { condition: 'ref_protected: false', claims: { ref_protected: false }, matched: true },
    // YAML 1.2: `yes` is a string, not a boolean.
    { condition: 'flag: yes', claims: { flag: true }, matched: false },
    { condition: 'flag: yes', claims: { flag: 'yes' }, matched: true },
    { condition: 'ref: [refs/heads/main, refs/heads/release]', claims: { ref: 'refs/heads/release' }, matched: true },
    { condition: 'ref: [refs/heads/main, refs/heads/release]', claims: { ref: 'refs/heads/dev' }, matched: false },
    { condition: 'event_name: { in: [push, workflow_dispatch] }', claims: { event_name: 'workflow_dispatch' }, matched: true },
    { condition: 'event_name: { in: [push, workflow_dispatch] }', claims: { event_name: 'pull_request_target' }, matched: false },
    { condition: 'x: [1, true]', claims: { x: 1 }, matched: true },
    { condition: 'x: [1, true]', claims: { x: 'true' }, matched: true },
    // `*` in an `in` list is exact, not a glob (a plain value with `*` is refused at load: see policy-compile.test.ts).
    { condition: 'ref: { in: ["refs/heads/*"] }', claims: { ref: 'refs/heads/main' }, matched: false },
    { condition: 'ref: { in: ["refs/heads/*"] }', claims: { ref: 'refs/heads/*' }, matched: true },
  ]);
});

describe('a missing or null claim never matches, except exists: false', () => {
  runRows([
    { condition: 'repository: acme/api', claims: {}, matched: false },
    { condition: 'repository: acme/api', claims: { repository: null }, matched: false },
    { condition: 'repository: "null"', claims: { repository: null }, matched: false },
    { condition: 'ref: [a, b]', claims: {}, matched: false },
    { condition: 'ref: { glob: "**" }', claims: {}, matched: false },
    { condition: 'ref: { glob: "**" }', claims: { ref: null }, matched: false },
    { condition: 'ref: { regex: ".*" }', claims: { ref: null }, matched: false },
    { condition: 'env: { exists: true }', claims: {}, matched: false },
    { condition: 'env: { exists: true }', claims: { env: null }, matched: false },
    { condition: 'env: { exists: true }', claims: { env: '' }, matched: true },
    { condition: 'env: { exists: true }', claims: { env: false }, matched: true },
    { condition: 'env: { exists: true }', claims: { env: [] }, matched: true },
    { condition: 'env: { exists: false }', claims: {}, matched: true },
    { condition: 'env: { exists: false }', claims: { env: null }, matched: true },
    { condition: 'env: { exists: false }', claims: { env: '' }, matched: false },
    { condition: 'env: { exists: false }', claims: { env: 'production' }, matched: false },
    // Only own properties are claims: nothing resolves through the prototype.
    { condition: 'constructor: { exists: true }', claims: {}, matched: false },
    { condition: 'toString: { exists: false }', claims: {}, matched: true },
  ]);
});

describe('an object or array claim never equals a scalar, list entry, glob or regex', () => {
  runRows([
    { condition: 'groups: admin', claims: { groups: ['admin'] }, matched: false },
    { condition: 'groups: "a,b"', claims: { groups: ['a', 'b'] }, matched: false },
    { condition: 'groups: [admin]', claims: { groups: ['admin'] }, matched: false },
    { condition: 'x: "[object Object]"', claims: { x: {} }, matched: false },
    { condition: 'x: { in: ["[object Object]"] }', claims: { x: { a: 1 } }, matched: false },
    { condition: 'x: { glob: "**" }', claims: { x: ['anything'] }, matched: false },
    { condition: 'x: { regex: "(?s).*" }', claims: { x: { a: 'b' } }, matched: false },
  ]);
});

describe('keys starting with / are RFC 6901 JSON Pointers', () => {
  runRows([
    { condition: '/nested/path: ok', claims: { nested: { path: 'ok' } }, matched: true },
    { condition: '/nested/path: ok', claims: { 'nested/path': 'ok' }, matched: false },
    { condition: '/repository: acme/api', claims: { repository: 'acme/api' }, matched: true },
    { condition: '/a~1b: x', claims: { 'a/b': 'x' }, matched: true },
    { condition: '/a~1b: x', claims: { a: { b: 'x' } }, matched: false },
    { condition: '/a~0b: x', claims: { 'a~b': 'x' }, matched: true },
    // ~01 is ~1 literally (unescape ~1 first, then ~0).
    { condition: '/a~01: x', claims: { 'a~1': 'x' }, matched: true },
    { condition: '/groups/0: admin', claims: { groups: ['admin', 'dev'] }, matched: true },
    { condition: '/groups/1: admin', claims: { groups: ['admin', 'dev'] }, matched: false },
    { condition: '/groups/01: dev', claims: { groups: ['admin', 'dev'] }, matched: false },
    { condition: '/groups/-: { exists: false }', claims: { groups: ['admin'] }, matched: true },
    { condition: '/groups/length: { exists: false }', claims: { groups: ['admin'] }, matched: true },
    { condition: '/nested/missing: { exists: false }', claims: { nested: {} }, matched: true },
    { condition: '/nested/missing: { exists: true }', claims: { nested: {} }, matched: false },
    { condition: '/s/0: a', claims: { s: 'abc' }, matched: false },
    { condition: '/constructor/name: Object', claims: {}, matched: false },
    { condition: '/run/attempt: 2', claims: { run: { attempt: 2 } }, matched: true },
  ]);

  test('a bad ~ escape fails to compile', () => {
    assert.throws(() => compileMatcher('/a~2b', { operator: 'exists', exists: true }), { name: 'MatcherError', message: /'~' must be followed by 0 or 1/ });
  });
});

describe('condition results carry what explain shows', () => {
  const rows: { condition: string; claims: Record<string, unknown>; result: ConditionResult }[] = [
    { condition: 'ref: refs/heads/main', claims: { ref: 'refs/heads/dev' }, result: { key: 'ref', operator: 'equals', expected: 'refs/heads/main', actual: 'refs/heads/dev', matched: false } },
    { condition: 'ref: [a, b]', claims: { ref: 'b' }, result: { key: 'ref', operator: 'in', expected: '[a, b]', actual: 'b', matched: true } },
    { condition: 'ref: { glob: "v*" }', claims: {}, result: { key: 'ref', operator: 'glob', expected: 'glob v*', actual: undefined, matched: false } },
    { condition: 'ref: { regex: "v.+" }', claims: { ref: null }, result: { key: 'ref', operator: 'regex', expected: 'regex v.+', actual: null, matched: false } },
    { condition: '/a/b: { exists: false }', claims: { a: { b: 1 } }, result: { key: '/a/b', operator: 'exists', expected: 'absent or null', actual: 1, matched: false } },
  ];
  for (const row of rows) {
    test(row.condition, () => assert.deepEqual(conditionOf(row.condition, row.claims), row.result));
  }
});

test('a claim named __proto__ is a condition like any other, never dropped', () => {
  const policy = policyWith('__proto__: x');
  assert.equal(policy.evaluate({}, [])[0]?.matched, false);
  assert.equal(policy.evaluate(JSON.parse('{"__proto__": "x"}') as Record<string, unknown>, [])[0]?.matched, true);
});

describe('(?i) folds ASCII letters only (docs/policies/reference.md, "Regex")', () => {
  runRows([
    // U+017F LONG S folds to s, U+212A KELVIN SIGN to k, in RE2's Unicode folding: never here.
    { condition: 'ref: { regex: "(?i)refs/heads/release" }', claims: { ref: 'refs/heads/relea\u017fe' }, matched: false },
    { condition: 'ref: { regex: "(?i)refs/heads/release" }', claims: { ref: 'refs/heads/relea\u017fe'.replace('\u017f', 's') }, matched: true },
    { condition: 'x: { regex: "(?i)kelvin" }', claims: { x: '\u212aelvin' }, matched: false },
    { condition: 'x: { regex: "(?i)[k-s]+" }', claims: { x: '\u212a\u017f' }, matched: false },
    { condition: 'x: { regex: "(?i)\\\\x73" }', claims: { x: '\u017f' }, matched: false },
    { condition: 'x: { regex: "(?i)[\\\\x{17f}]" }', claims: { x: 's' }, matched: false },
    // ASCII case variants still match.
    { condition: 'ref: { regex: "(?i)refs/heads/release" }', claims: { ref: 'REFS/Heads/ReLeAsE' }, matched: true },
    { condition: 'x: { regex: "(?i)[k-s]+" }', claims: { x: 'KlMs' }, matched: true },
    { condition: 'x: { regex: "(?i)\\\\x73" }', claims: { x: 'S' }, matched: true },
    // Fold then negate, as RE2 does: (?i)[^a] excludes A too.
    { condition: 'x: { regex: "(?i)[^a]" }', claims: { x: 'A' }, matched: false },
    { condition: 'x: { regex: "(?i)[^a]" }', claims: { x: '\u017f' }, matched: true },
    // Outside ASCII, case is not folded.
    { condition: 'x: { regex: "(?i)\u00e9" }', claims: { x: '\u00c9' }, matched: false },
    // Scoped flags keep their scope.
    { condition: 'x: { regex: "a(?i:b)c" }', claims: { x: 'aBc' }, matched: true },
    { condition: 'x: { regex: "a(?i:b)c" }', claims: { x: 'aBC' }, matched: false },
    { condition: 'x: { regex: "(?i)a(?-i)b" }', claims: { x: 'Ab' }, matched: true },
    { condition: 'x: { regex: "(?i)a(?-i)b" }', claims: { x: 'AB' }, matched: false },
  ]);

  test('a negated class item that cannot be folded ASCII only is refused at load, with file and line', () => {
    const result = compilePolicies([{ path: 'fold.yaml', text: 'issuer: github\neffect: deny\nclaims:\n  x: { regex: "(?i)[\\\\P{Lu}x]" }\n' }], CTX);
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.issues.length, 1);
    assert.equal(result.issues[0]!.file, 'fold.yaml');
    assert.equal(result.issues[0]!.line, 4);
    assert.match(result.issues[0]!.message, /unsupported regex: under \(\?i\), the negated class item \\P\{Lu\} cannot be folded ASCII only/);
  });

  test('CEL matches() folds ASCII only too', () => {
    const result = compilePolicies([{ path: 'cel.yaml', text: 'issuer: github\neffect: deny\ncondition: claims.ref.matches("(?i)^refs/heads/release$")\n' }], CTX);
    if (!result.ok) assert.fail(JSON.stringify(result.issues));
    const policy = result.set.byName.get('cel')!;
    assert.equal(policy.evaluate({ ref: 'refs/heads/relea\u017fe' }, [])[0]!.matched, false);
    assert.equal(policy.evaluate({ ref: 'REFS/HEADS/RELEASE' }, [])[0]!.matched, true);
  });

  test('property: a (?i) pattern matches as JavaScript\'s non-Unicode /i does, which never folds into ASCII (seed printed on failure)', () => {
    // Over letters whose only folds are ASCII pairs, U+017F and U+212A: JavaScript's non-Unicode
    // ignoreCase never maps a non-ASCII character to an ASCII one, so it is the ASCII-only reference.
    const ALPHABET = ['a', 'B', 'k', 'K', 's', 'S', 'z', '\u017f', '\u212a', '0', '-', '.'];
    const atom = fc.oneof(
      fc.constantFrom('a', 'B', 'k', 's', 'S', 'z', '\u017f', '\u212a', '0', '\\-', '.', '\\x73', '\\x4B', '\\w', '\\W', '\\d'),
      fc.constantFrom('[a-z]', '[k-s]', '[^s]', '[^a-k]', '[A-Z0]', '[\\x{17f}]', '[\\w-]', '[^\\W]'),
    );
    const pattern: fc.Arbitrary<string> = fc.letrec<{ re: string }>((tie) => ({
      re: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        atom,
        fc.tuple(tie('re'), tie('re')).map(([a, b]) => `${a}${b}`),
        fc.tuple(tie('re'), tie('re')).map(([a, b]) => `(?:${a}|${b})`),
        fc.tuple(tie('re'), fc.constantFrom('*', '+', '?', '{1,2}')).map(([a, q]) => `(?:${a})${q}`),
      ),
    })).re;
    const input = fc.array(fc.constantFrom(...ALPHABET), { maxLength: 6 }).map((chars) => chars.join(''));
    const seed = 20261206;
    fc.assert(
      fc.property(pattern, fc.array(input, { minLength: 1, maxLength: 8 }), (body, inputs) => {
        const matcher = compileMatcher('x', { operator: 'regex', pattern: `(?i)${body}` });
        const reference = new RegExp(`^(?:${body.replace('\\x{17f}', '\\u017f')})$`, 'i');
        for (const value of inputs) assert.equal(matcher({ x: value }).matched, reference.test(value), `(?i)${body} vs ${JSON.stringify(value)}`);
      }),
      { seed, numRuns: 300, reporter: (details) => { if (details.failed) throw new Error(`seed ${seed}: ${fc.defaultReportMessage(details)}`); } },
    );
  });

  test('property: any pattern RE2 accepts compiles (or is refused, saying why); on ASCII it matches as RE2\'s own (?i) (seed printed on failure)', () => {
    // On ASCII patterns and ASCII values, Unicode folding and ASCII folding agree: RE2 itself is the reference there.
    const ascii = ['(?i)', '(?-i)', '(?i:', '(?s-i:', '(?P<n>', '(', ')', '[', ']', '^', '-', '\\', '\\Q', '\\E', '\\P{Lu}', '\\pL', '[:^upper:]', '[:alpha:]', '\\101', 'a', 'K', 'q', '|', '*', '{2}', '.', '\\W', 'z', '[^', 'b-', '\\p{^Greek}', '\\d', '$', '\\b', '[]', '\\-', ':]', '[:', '(?m)', '(?im)', '\n', '\\x5A'];
    const pieces = [...ascii, '\\x{17f}', '\u017f', '\u212a', '\u{1f600}'];
    const value = fc.array(fc.constantFrom('a', 'A', 'b', 'B', 'k', 'K', 'q', 'Q', 'z', 'Z', '-', ':', '^', ']', '[', '\n', '0', '_'), { maxLength: 5 }).map((c) => c.join(''));
    const seed = 1206;
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...pieces), { maxLength: 12 }), fc.array(value, { minLength: 1, maxLength: 8 }), (parts, values) => {
        const pattern = parts.join('');
        let reference: RE2JS;
        try {
          RE2JS.compile(pattern);
          reference = RE2JS.compile(`^(?:${pattern})$`);
        } catch {
          return;
        }
        let matcher: ReturnType<typeof compileMatcher>;
        try {
          matcher = compileMatcher('x', { operator: 'regex', pattern });
        } catch (err) {
          assert.ok(err instanceof MatcherError, `${pattern}: ${String(err)}`);
          // Only the refusal of an unfoldable negated item; a rewrite RE2 rejects would be a bug.
          assert.match(err.message, /under \(\?i\)/, pattern);
          return;
        }
        if (!/^[\x00-\x7f]*$/.test(pattern)) return;
        for (const v of values) assert.equal(matcher({ x: v }).matched, reference.matches(v), `${JSON.stringify(pattern)} vs ${JSON.stringify(v)}`);
      }),
      { seed, numRuns: 1500, reporter: (details) => { if (details.failed) throw new Error(`seed ${seed}: ${fc.defaultReportMessage(details)}`); } },
    );
  });
});
