// Fuzzing the policy compiler (docs/policies/reference.md, "A policy file"): random
// policy documents built from the grammar, and mutations of the shipped
// policies and their test files. Whatever the input, compilePolicies never throws, and each problem
// is an issue naming the file, a line and (where there is one) the key, as
// `policy validate` prints it. Fixed seeds: a failure prints its seed and the
// shrunk input, and reruns the same.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { compileContext, loadConfig } from '../src/config.js';
import { compilePolicies } from '../src/policy/compile.js';
import { formatPolicyIssue } from '../src/policy/issues.js';
import { loadPolicyDir, PolicyDirError } from '../src/policy/load.js';
import { parseTestFile, runPolicyTests } from '../src/policy/test-cases.js';
import type { PolicyFile, PolicyIssue } from '../src/policy/types.js';
import { AWS_GRANT_KEYS } from '../src/providers/aws/grant.js';
import { GCP_GRANT_KEYS } from '../src/providers/gcp/grant.js';
import { JWT_GRANT_KEYS } from '../src/providers/jwt/grant.js';

const SHIPPED_DIR = fileURLToPath(new URL('../policies/', import.meta.url));
// The built-in development defaults, which the shipped policies compile against (test/policies-shipped.test.ts).
const CTX = compileContext(await loadConfig(undefined, {}));
const ISSUERS = [...CTX.issuers.keys()];
const AUDIENCES = [...new Set([...CTX.issuers.values()].flatMap((i) => i.audiences))];
const SHIPPED: { name: string; text: string }[] = [];
const SHIPPED_TESTS: { name: string; text: string }[] = [];
for (const name of (await readdir(SHIPPED_DIR)).filter((n) => n.endsWith('.yaml')).sort()) {
  // Printed by name when a property fails.
  const file = { name, text: await readFile(path.join(SHIPPED_DIR, name), 'utf8'), [fc.toStringMethod]: () => name } as { name: string; text: string };
  (name.endsWith('.test.yaml') ? SHIPPED_TESTS : SHIPPED).push(file);
}
const SHIPPED_SET = compilePolicies(
  SHIPPED.map((f) => ({ path: f.name, text: f.text })),
  CTX,
);

/** A file's problems, as every caller of the compiler sees them: each names the file and a line, and formats as one `file:line: key: message` line. */
function assertWellFormedIssues(issues: readonly PolicyIssue[], files: readonly PolicyFile[]): void {
  const paths = new Set(files.map((f) => f.path));
  assert.ok(issues.length > 0, 'a failed compile lists its problems');
  for (const issue of issues) {
    const shown = JSON.stringify(issue).slice(0, 500);
    assert.ok(paths.has(issue.file), `names one of the files: ${shown}`);
    assert.ok(Number.isInteger(issue.line) && issue.line! >= 1, `has a line: ${shown}`);
    const lines = files.find((f) => f.path === issue.file)!.text.split(/\r\n|\r|\n/).length;
    assert.ok(issue.line! <= lines + 1, `the line is in the file (${lines} lines): ${shown}`);
    assert.equal(typeof issue.keyPath, 'string');
    assert.ok(typeof issue.message === 'string' && issue.message.length > 0, `has a message: ${shown}`);
    const formatted = formatPolicyIssue(issue);
    assert.ok(formatted.startsWith(`${path.relative(process.cwd(), issue.file) || issue.file}:${issue.line}: `), formatted.slice(0, 300));
    assert.ok(!/[\r\n]/.test(formatted), `one line: ${formatted.slice(0, 300)}`);
  }
}

/** Compiles; a throw fails the property with the input that caused it. */
function compileChecked(files: PolicyFile[]): void {
  let result: ReturnType<typeof compilePolicies>;
  try {
    result = compilePolicies(files, CTX);
  } catch (err) {
    assert.fail(`compilePolicies threw ${err instanceof Error ? `${err.name}: ${err.message.slice(0, 300)}` : String(err)}`);
  }
  if (!result.ok) assertWellFormedIssues(result.issues, files);
}

function runProperty<T>(seed: number, numRuns: number, arbitrary: fc.Arbitrary<T>, check: (value: T) => void): void {
  fc.assert(fc.property(arbitrary, check), {
    seed,
    numRuns,
    reporter: (details) => {
      if (details.failed) throw new Error(`seed ${seed}: ${fc.defaultReportMessage(details)}\n${String(details.errorInstance)}`);
    },
  });
}

// Values of every shape, for keys given the wrong type.
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
);
const scalar = fc.oneof(fc.constantFrom('acme/api', 'refs/heads/main', 'push', '1234567', '', 'a*b', 'x?'), fc.string({ maxLength: 12 }), fc.integer(), fc.boolean());
const pattern = fc.oneof(
  fc.constantFrom('refs/heads/*', '**', 'a|b', '(?i)release', '[', '(a)\\1', '(?i)[\\P{Lu}x]', 'a{1001}', '\\Q', '(?i)\\x{17f}', 'a)|(b'),
  fc.string({ maxLength: 12 }),
);
const condition = fc.oneof(
  scalar,
  fc.array(scalar, { maxLength: 4 }),
  fc.record({ in: fc.oneof(fc.array(scalar, { maxLength: 3 }), anyValue) }),
  fc.record({ glob: fc.oneof(pattern, anyValue) }),
  fc.record({ regex: fc.oneof(pattern, anyValue) }),
  fc.record({ exists: fc.oneof(fc.boolean(), anyValue) }),
  fc.dictionary(fc.constantFrom('glob', 'regex', 'in', 'exists', 'globs', 'not_in', 'prefix', 'eq'), anyValue, { maxKeys: 3 }),
  anyValue,
);
const claimKey = fc.oneof(fc.constantFrom('repository', 'ref', '/a/b', '/a~1b', '/', '/a/~2', 'aud', '__proto__', 'constructor'), fc.string({ maxLength: 10 }));
const celSource = fc.oneof(
  fc.constantFrom('claims.ref == "refs/heads/main"', 'has(claims.x) && claims.x.matches("(?i)a")', 'claims.foo.bar', 'true', '1 +', 'claims.ref.matches(claims.x)', '[1,2].all(x, x > 0)', `${'('.repeat(200)}1${')'.repeat(200)}`),
  fc.array(fc.constantFrom('claims', '.', 'ref', '==', '"x"', '(', ')', '[', ']', '&&', '||', '!', 'has', 'matches', ',', '1', 'size', '?', ':', '\n'), { maxLength: 12 }).map((t) => t.join(' ')),
);
const grantKeys: Record<string, readonly string[]> = { jwt: JWT_GRANT_KEYS, aws: AWS_GRANT_KEYS, gcp: GCP_GRANT_KEYS };
const grant = fc.constantFrom('jwt', 'aws', 'gcp', 'github', 7).chain((provider) =>
  fc
    .dictionary(fc.oneof(fc.constantFrom(...(grantKeys[String(provider)] ?? ['provider'])), fc.string({ maxLength: 6 })), fc.oneof(anyValue, fc.constantFrom('${ref}', '${/a/b}', '${', 'arn:aws:iam::123456789012:role/x', 'https://deploy.example.com', 900)), { maxKeys: 5 })
    .map((rest) => ({ ...rest, provider })),
);
/** A policy document from the grammar of docs/policies/reference.md: each key present or not, of the right type or not. */
const policyDocument = fc.record(
  {
    name: fc.oneof(fc.constantFrom('deploy', 'a'.repeat(129), '-bad', 'ok.name_1'), fc.string({ maxLength: 10 }), anyValue),
    description: fc.oneof(fc.string({ maxLength: 20 }), anyValue),
    issuer: fc.oneof(fc.constantFrom(...ISSUERS), fc.string({ maxLength: 8 }), anyValue),
    effect: fc.oneof(fc.constantFrom('allow', 'deny', 'Deny'), anyValue),
    audience: fc.oneof(fc.constantFrom(...AUDIENCES), fc.string({ maxLength: 8 }), anyValue),
    claims: fc.oneof(fc.dictionary(claimKey, condition, { maxKeys: 5 }), anyValue),
    condition: fc.oneof(celSource, anyValue),
    allow_token_reuse: fc.oneof(fc.boolean(), anyValue),
    grant: fc.oneof(grant, anyValue),
    unknown: fc.dictionary(fc.constantFrom('allow-token-reuse', 'claim', 'cel', '<<', 'grants'), anyValue, { maxKeys: 1 }),
  },
  { requiredKeys: [] },
).map(({ unknown, ...keys }) => ({ ...keys, ...unknown }));

/** A text edit of one shipped policy, printed by what it does when a property fails. */
type Mutation = (text: string) => string;
function described(what: string, edit: Mutation): Mutation {
  return Object.assign(edit, { [fc.toStringMethod]: () => what });
}
const lineEdit = (what: string, edit: (lines: string[], at: number) => void) =>
  fc.nat().map<Mutation>((n) =>
    described(`${what} ${n}`, (text) => {
      const lines = text.split('\n');
      edit(lines, n % lines.length);
      return lines.join('\n');
    }),
  );
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  lineEdit('delete line', (lines, at) => lines.splice(at, 1)),
  lineEdit('duplicate line', (lines, at) => lines.splice(at, 0, lines[at]!)),
  fc.tuple(fc.nat(), fc.constantFrom('[1, 2]', '{a: 1}', 'null', '123', 'true', '"x"', '!!binary aGk=', '!custom x', '~', '', '&a x', '*a', '|\n  block', '>-', '"unterminated', "'", '[', '{')).map<Mutation>(
    ([n, value]) =>
      described(`retype key ${n} as ${JSON.stringify(value)}`, (text) => {
        // Retype one `key: value` line.
        const lines = text.split('\n');
        const keyed = lines.map((l, i) => [l, i] as const).filter(([l]) => /^\s*[\w/-]+:/.test(l));
        if (keyed.length === 0) return text;
        const [line, at] = keyed[n % keyed.length]!;
        lines[at] = `${line.slice(0, line.indexOf(':') + 1)} ${value}`;
        return lines.join('\n');
      }),
  ),
  fc
    .tuple(fc.nat(), fc.string({ unit: 'binary', maxLength: 8 }))
    .map<Mutation>(([n, inserted]) => described(`insert ${JSON.stringify(inserted)} at ${n}`, (text) => text.slice(0, n % (text.length + 1)) + inserted + text.slice(n % (text.length + 1)))),
  fc.constantFrom<Mutation>(
    ...([
    (text) => `\uFEFF${text}`,
    (text) => text.replace(/^( +)/gm, (spaces) => '\t'.repeat(spaces.length / 2)),
    (text) => text.replace(/\n/g, '\r\n'),
    (text) => text.replace(/\n/g, '\r'),
    (text) => `${text}\n---\n${text}`,
    (text) => `${text}\ndescription: ${'x'.repeat(200_000)}\n`,
    (text) => text.replace(/^name: .*/m, `name: ${'n'.repeat(100_000)}`),
    (text) => text.replace(/^claims:/m, `claims:\n  huge: { regex: "${'a'.repeat(50_000)}" }`),
    (text) => text.replace(/^claims:/m, `claims:\n  deep: ${'['.repeat(5000)}${']'.repeat(5000)}`),
    (text) => text.replace(/^claims:/m, `claims:\n  deep: ${'{a: '.repeat(3000)}1${'}'.repeat(3000)}`),
    (text) => `${text}\nclaims:\n  x: 1\n`,
    (text) => `anchors: &a [x, x, x, x, x, x, x, x, x, x]\n${['b', 'c', 'd', 'e', 'f', 'g'].map((k, i) => `${k}: &${k} [${Array(10).fill(i === 0 ? '*a' : `*${String.fromCharCode(k.charCodeAt(0) - 1)}`).join(', ')}]`).join('\n')}\n${text}`,
    (text) => text.replace(/^issuer: (.*)$/m, 'issuer: &iss $1\ndescription: *iss'),
    (text) => text.replace(/^issuer: .*$/m, 'issuer: *undefined_anchor'),
    (text) => text.replace(/^claims:/m, 'claims: &c\n  a: 1\nfoo: *c\nclaims2:'),
    (text) => text.replace(/^(\w+):/m, '? $1\n:'),
    (text) => text.replace(/^(\w+):/m, '? [$1]\n:'),
    (text) => text.replace(/^(\w+):/m, '"$1\\u0000":'),
    (text) => text.replace(/^condition: .*$/m, `condition: "${'!'.repeat(3000)}true"`),
    (text) => `%YAML 1.1\n---\n${text}`,
    (text) => `%TAG ! tag:x,2026:\n---\n${text}`,
    (text) => text.replace(/^claims:/m, 'claims: !!map'),
    () => '',
    () => '\n\n\n',
    () => '---',
    () => 'null',
    () => '- a\n- b\n',
    ] as Mutation[]).map((edit) => described(edit.toString().slice(0, 120), edit)),
  ),
);

// Run counts keep this file near 10 s on a loaded two-core machine; a deeper search is a matter of raising them locally.
describe('the policy compiler never throws, and names file and line for every problem', () => {
  test('random documents from the grammar, written as YAML', { timeout: 120_000 }, () => {
    runProperty(20261206, 500, fc.array(policyDocument, { minLength: 1, maxLength: 3 }), (documents) => {
      compileChecked(documents.map((doc, i) => ({ path: `fuzz-${i}.yaml`, text: stringify(doc) })));
    });
  });

  test('mutations of the shipped policies', { timeout: 120_000 }, () => {
    runProperty(1206, 800, fc.tuple(fc.constantFrom(...SHIPPED), fc.array(mutation, { minLength: 1, maxLength: 3 })), ([shipped, edits]) => {
      const text = edits.reduce((t, edit) => edit(t), shipped.text);
      compileChecked([{ path: shipped.name, text }]);
    });
  });

  test('mutations of the shipped policy test files: parsed and run against the shipped policies, never a throw', { timeout: 120_000 }, () => {
    if (!SHIPPED_SET.ok) assert.fail('the shipped policies compile (test/policies-shipped.test.ts)');
    const set = SHIPPED_SET.set;
    runProperty(2026, 250, fc.tuple(fc.constantFrom(...SHIPPED_TESTS), fc.array(mutation, { minLength: 1, maxLength: 3 })), ([shipped, edits]) => {
      const file: PolicyFile = { path: shipped.name, text: edits.reduce((t, edit) => edit(t), shipped.text) };
      let parsed: ReturnType<typeof parseTestFile>;
      try {
        parsed = parseTestFile(file);
        // Mutated claims (objects, arrays, huge strings) reach evaluate and the explain summary through the runner.
        runPolicyTests([file], set, CTX);
      } catch (err) {
        assert.fail(`threw ${err instanceof Error ? `${err.name}: ${err.message.slice(0, 300)}` : String(err)}`);
      }
      if (!parsed.ok) assertWellFormedIssues(parsed.issues, [file]);
    });
  });

  test('random bytes, invalid UTF-8 included: the loader refuses them naming the file; decoded with replacements, they compile or are issues', { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fuzz-policies-'));
    try {
      const seed = 612;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...SHIPPED), fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 6 }), async (shipped, at, inserted) => {
          const original = Buffer.from(shipped.text, 'utf8');
          const cut = at % (original.length + 1);
          const bytes = Buffer.concat([original.subarray(0, cut), Buffer.from(inserted), original.subarray(cut)]);
          const file = path.join(dir, shipped.name);
          await writeFile(file, bytes);
          let loaded: PolicyFile[] | undefined;
          try {
            loaded = await loadPolicyDir(dir);
          } catch (err) {
            assert.ok(err instanceof PolicyDirError, String(err));
            assert.equal(err.message, `Policy file '${file}' is not valid UTF-8.`);
          }
          if (loaded !== undefined) compileChecked(loaded);
          compileChecked([{ path: shipped.name, text: bytes.toString('utf8'), bytes }]);
          await rm(file);
        }),
        {
          seed,
          numRuns: 150,
          reporter: (details) => {
            if (details.failed) throw new Error(`seed ${seed}: ${fc.defaultReportMessage(details)}\n${String(details.errorInstance)}`);
          },
        },
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('regressions the fuzzer found', () => {
  const issuesOf = (text: string): PolicyIssue[] => {
    const result = compilePolicies([{ path: 'found.yaml', text }], CTX);
    assert.equal(result.ok, false);
    return result.ok ? [] : result.issues;
  };

  test('an alias without an anchor names the line of the alias (it had no line)', () => {
    const [issue, ...rest] = issuesOf('issuer: github\neffect: deny\ndescription: *undefined_anchor\n');
    assert.equal(rest.length, 0);
    assert.deepEqual({ line: issue!.line, message: issue!.message }, { line: 3, message: 'YAML: Unresolved alias (the anchor must be set before the alias): undefined_anchor' });
  });

  test('too many aliases name the line of the first alias (it had no line)', () => {
    const bomb = 'a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n';
    const [issue] = issuesOf(bomb);
    assert.equal(issue!.line, 2);
    assert.match(issue!.message, /^YAML: Excessive alias count/);
  });

  test('an empty or blank file is a problem at line 1 (it had no line)', () => {
    for (const text of ['', '\n\n\n', '# only a comment\n']) {
      assert.deepEqual(issuesOf(text).map((i) => [i.line, i.message]), [[1, 'the file is empty: a policy is a YAML map']], JSON.stringify(text));
    }
  });

  test('a value with a line break is quoted on one line (a block scalar name broke the `file:line:` format)', () => {
    const [issue] = issuesOf('name: |\n  block\n  evil.yaml:1: forged\nissuer: github\neffect: deny\n');
    assert.equal(issue!.message, "invalid policy name 'block?evil.yaml:1: forged?'");
    assert.doesNotMatch(formatPolicyIssue(issue!), /\n/);
  });
});
