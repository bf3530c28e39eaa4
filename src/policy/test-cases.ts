import { evaluateOffline, offlineToken } from './explain.js';
import type { KeyPath } from '../yaml/document.js';
import { parsePolicyYaml } from './parse.js';
import { checkKnownKeys, describeValue, echo, has, isInexactNumber, suggest, type Json, type Report } from '../yaml/fields.js';
import type { CompileContext, Decision, PolicyFile, PolicyIssue, PolicySet } from './types.js';
import { isPlainObject } from '../values.js';

/**
 * Policy test files (docs/policies/reference.md): `*.test.yaml` next to the policies,
 * each a list of cases, a claim set, a policy name and the expected decision.
 * Parsed strictly (unknown keys, missing fields and wrong types are issues
 * with file and line, like the policy compiler's) and run offline against a
 * compiled PolicySet. Pure: the CLI reads the files.
 *
 * ```yaml
 * tests:
 *   - name: main may deploy
 *     policy: api-deploy-prod
 *     issuer: github          # optional; default: the policy's issuer
 *     audience: https://...   # optional; default: the claims' aud, else the issuer's first configured audience
 *     claims: {repository: acme/api, ref: refs/heads/main}
 *     expect: allow           # allow | deny
 *     audit_matches: []       # optional: exactly these audit-mode deny policies would deny (any order)
 * ```
 */
export interface PolicyTestCase {
  file: string;
  /** Position in the file's `tests` list, from 0. */
  index: number;
  /** Line of the case's `name`. */
  line: number | undefined;
  name: string;
  policy: string;
  /** Config issuer name; undefined means the policy's issuer. */
  issuer: string | undefined;
  /** Undefined means the claims' `aud`, else the issuer's first configured audience. */
  audience: string[] | undefined;
  claims: Record<string, unknown>;
  expect: 'allow' | 'deny';
  /** When given, the audit-mode deny policies that must (exactly, in any order) would deny the token; undefined: not checked. */
  auditMatches: string[] | undefined;
  /** Where `policy` and `issuer` were written, for issues found when the case is run. */
  lines: { policy: number | undefined; issuer: number | undefined };
}

export type TestFileParse = { ok: true; cases: PolicyTestCase[] } | { ok: false; issues: PolicyIssue[] };

export interface TestCaseResult {
  case: PolicyTestCase;
  passed: boolean;
  /** The decision the broker would make for these claims (deny policies' values shown). */
  decision: Decision;
}

export interface PolicyTestRun {
  /** Invalid test files and cases that cannot run (unknown policy or issuer); any issue fails the run. */
  issues: PolicyIssue[];
  /** One per runnable case, in file order. */
  results: TestCaseResult[];
}

const ROOT_KEYS = ['tests'] as const;
const CASE_KEYS = ['name', 'policy', 'issuer', 'audience', 'claims', 'expect', 'audit_matches'] as const;
const EXPECTATIONS = ['allow', 'deny'] as const;

/** `*.test.yaml` / `*.test.yml`, not hidden: the files the policy loader skips. */
export function isPolicyTestFileName(name: string): boolean {
  return !name.startsWith('.') && /\.test\.ya?ml$/.test(name);
}

/**
 * Parses one policy test file. Every problem is reported (not just the
 * first), each with the file, the line and the key path.
 */
export function parseTestFile(file: PolicyFile): TestFileParse {
  const issues: PolicyIssue[] = [];
  const parsed = parsePolicyYaml(file, issues);
  if (parsed === undefined) return { ok: false, issues };
  const { doc, report } = parsed;

  const root = doc.value;
  if (!isPlainObject(root)) {
    report([], root === null || root === undefined ? 'the file is empty: a policy test file is a map with a `tests:` list' : 'a policy test file must be a YAML map with a `tests:` list');
    return { ok: false, issues };
  }
  checkKnownKeys(root, ROOT_KEYS, [], report);
  const tests = root.tests;
  if (!has(root, 'tests')) report([], 'tests is required: a list of test cases');
  else if (!Array.isArray(tests)) report(['tests'], `tests must be a list of test cases, not ${describeValue(tests)}`);
  else if (tests.length === 0) report(['tests'], 'tests is empty', 'add at least one case, or delete the file');

  const cases: PolicyTestCase[] = [];
  const firstLineByName = new Map<string, number | undefined>();
  (Array.isArray(tests) ? tests : []).forEach((raw, i) => {
    const at: KeyPath = ['tests', i];
    const testCase = readCase(raw, at, file.path, (path) => doc.lineOf(path), report);
    if (testCase === undefined) return;
    if (firstLineByName.has(testCase.name)) {
      const first = firstLineByName.get(testCase.name);
      report([...at, 'name'], `test name '${echo(testCase.name)}' is already used${first === undefined ? '' : ` on line ${first}`}`, 'names identify cases in the output; make them unique');
      return;
    }
    firstLineByName.set(testCase.name, testCase.line);
    cases.push(testCase);
  });
  // Top to bottom, as an editor shows them (stable: same-line issues keep their order).
  return issues.length > 0 ? { ok: false, issues: issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity)) } : { ok: true, cases };
}

function readCase(raw: unknown, at: KeyPath, file: string, lineOf: (path: KeyPath) => number | undefined, report: Report): PolicyTestCase | undefined {
  if (!isPlainObject(raw)) {
    report(at, `a test case must be a map of ${CASE_KEYS.join(', ')}, not ${describeValue(raw)}`);
    return undefined;
  }
  let problems = 0;
  const counting: Report = (path, message, hint) => {
    problems++;
    report(path, message, hint);
  };
  checkKnownKeys(raw, CASE_KEYS, at, counting);
  const name = readString(raw, 'name', at, counting, true);
  const policy = readString(raw, 'policy', at, counting, true);
  const issuer = readString(raw, 'issuer', at, counting, false);
  const audience = readAudience(raw, at, counting);
  const claims = readClaims(raw, at, counting);
  const expect = readExpect(raw, at, counting);
  const auditMatches = readAuditMatches(raw, at, counting);
  if (problems > 0 || name === undefined || policy === undefined || claims === undefined || expect === undefined) return undefined;
  return {
    file,
    index: at[1] as number,
    line: lineOf([...at, 'name']),
    name,
    policy,
    issuer,
    audience,
    claims,
    expect,
    auditMatches,
    lines: { policy: lineOf([...at, 'policy']), issuer: issuer === undefined ? undefined : lineOf([...at, 'issuer']) },
  };
}

function readString(obj: Json, key: string, at: KeyPath, report: Report, required: boolean): string | undefined {
  if (!has(obj, key)) {
    if (required) report(at, `${key} is required`);
    return undefined;
  }
  const value = obj[key];
  if (typeof value !== 'string' || value === '') {
    report([...at, key], `${key} must be a non-empty string, not ${describeValue(value)}`);
    return undefined;
  }
  return value;
}

function readAudience(obj: Json, at: KeyPath, report: Report): string[] | undefined {
  if (!has(obj, 'audience')) return undefined;
  const value = obj.audience;
  if (typeof value === 'string' && value !== '') return [value];
  if (Array.isArray(value) && value.length > 0 && value.every((a) => typeof a === 'string' && a !== '')) return value as string[];
  report([...at, 'audience'], `audience must be a string or a non-empty list of strings, not ${describeValue(value)}`);
  return undefined;
}

function readClaims(obj: Json, at: KeyPath, report: Report): Record<string, unknown> | undefined {
  if (!has(obj, 'claims')) {
    report(at, 'claims is required: a map of claim name to value, as in the token payload', 'write `claims: {}` for a token with no claims of interest');
    return undefined;
  }
  const claims = obj.claims;
  if (!isPlainObject(claims)) {
    report([...at, 'claims'], `claims must be a map of claim name to value, not ${describeValue(claims)}`);
    return undefined;
  }
  let exact = true;
  const check = (value: unknown, path: KeyPath): void => {
    if (typeof value === 'number' && isInexactNumber(value)) {
      // The case would test another value than the one written.
      report(path, `the number ${String(value)} cannot be represented exactly`, 'quote it as a string');
      exact = false;
    } else if (Array.isArray(value)) value.forEach((item, i) => check(item, [...path, i]));
    else if (isPlainObject(value)) for (const [k, v] of Object.entries(value)) check(v, [...path, k]);
  };
  check(claims, [...at, 'claims']);
  return exact ? claims : undefined;
}

function readExpect(obj: Json, at: KeyPath, report: Report): 'allow' | 'deny' | undefined {
  if (!has(obj, 'expect')) {
    report(at, 'expect is required: allow or deny');
    return undefined;
  }
  const value = obj.expect;
  if (value === 'allow' || value === 'deny') return value;
  report([...at, 'expect'], `expect must be allow or deny, not ${describeValue(value)}`, typeof value === 'string' ? suggest(value, EXPECTATIONS) : undefined);
  return undefined;
}

function readAuditMatches(obj: Json, at: KeyPath, report: Report): string[] | undefined {
  if (!has(obj, 'audit_matches')) return undefined;
  const value = obj.audit_matches;
  if (Array.isArray(value) && value.every((name) => typeof name === 'string' && name !== '')) return value as string[];
  report([...at, 'audit_matches'], `audit_matches must be a list of audit-mode deny policy names ([] for none), not ${describeValue(value)}`);
  return undefined;
}

/**
 * Whether the case's expectations hold: the decision, and, when the case
 * lists them, exactly the audit-mode deny policies that would deny.
 */
export function casePasses(testCase: PolicyTestCase, decision: Decision): boolean {
  if (decision.allowed !== (testCase.expect === 'allow')) return false;
  if (testCase.auditMatches === undefined) return true;
  const sorted = (names: readonly string[]): string => JSON.stringify([...new Set(names)].sort());
  return sorted(testCase.auditMatches) === sorted(decision.auditMatches);
}

/**
 * Parses every test file and runs every valid case against `set`, offline:
 * the claims stand for a verified token of the case's issuer (default: the
 * policy's), evaluated exactly as the broker evaluates one. A case naming a
 * policy or issuer that does not exist is an issue, not a failure.
 */
export function runPolicyTests(files: readonly PolicyFile[], set: PolicySet, ctx: CompileContext): PolicyTestRun {
  const issues: PolicyIssue[] = [];
  const results: TestCaseResult[] = [];
  for (const file of files) {
    const parsed = parseTestFile(file);
    if (!parsed.ok) {
      issues.push(...parsed.issues);
      continue;
    }
    for (const testCase of parsed.cases) {
      const outcome = runCase(testCase, set, ctx);
      if ('issue' in outcome) issues.push(outcome.issue);
      else results.push(outcome);
    }
  }
  return { issues, results };
}

function runCase(testCase: PolicyTestCase, set: PolicySet, ctx: CompileContext): TestCaseResult | { issue: PolicyIssue } {
  const issue = (line: number | undefined, key: string, message: string, hint?: string): { issue: PolicyIssue } => ({
    issue: { file: testCase.file, line, keyPath: `tests[${testCase.index}].${key}`, message: `test '${echo(testCase.name)}': ${message}`, ...(hint === undefined ? {} : { hint }) },
  });
  const policy = set.byName.get(testCase.policy);
  if (policy === undefined) {
    return issue(testCase.lines.policy, 'policy', `no policy named '${echo(testCase.policy)}' in the policy directory`, suggest(testCase.policy, [...set.byName.keys()]));
  }
  const issuerName = testCase.issuer ?? policy.issuer;
  if (!ctx.issuers.has(issuerName)) {
    const configured = [...ctx.issuers.keys()];
    return issue(testCase.lines.issuer, 'issuer', `issuer '${echo(issuerName)}' is not configured`, suggest(issuerName, configured) ?? `configured issuers: ${configured.join(', ') || '(none)'}`);
  }
  const decision = evaluateOffline(set, ctx, policy, offlineToken(ctx, issuerName, testCase.claims, testCase.audience));
  return { case: testCase, passed: casePasses(testCase, decision), decision };
}

