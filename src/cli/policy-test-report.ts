import path from 'node:path';
import { summarizeDecision } from '../policy/explain.js';
import type { TestCaseResult } from '../policy/test-cases.js';
import type { PolicyIssue } from '../policy/types.js';
import type { Glyphs } from './style.js';

/** The output formats of `policy test` (docs/policies/reference.md, "Policy tests"). */
export const POLICY_TEST_FORMATS = ['text', 'json', 'junit'] as const;
export type PolicyTestFormat = (typeof POLICY_TEST_FORMATS)[number];

/** Everything one `policy test` run found: the cases run, the problems in test files, the test files read. */
export interface PolicyTestReport {
  results: readonly TestCaseResult[];
  issues: readonly PolicyIssue[];
  testFiles: readonly string[];
}

/** Why a case failed (`expected allow, got deny: ...`), or null when it passed. */
export function failureOf(result: TestCaseResult): string | null {
  if (result.passed) return null;
  const { case: c, decision } = result;
  const got = decision.allowed ? 'allow' : 'deny';
  if (got !== c.expect) return `expected ${c.expect}, got ${got}: ${summarizeDecision(decision)}`;
  const names = (list: readonly string[]): string => `[${list.join(', ')}]`;
  return `expected audit_matches ${names(c.auditMatches ?? [])}, got ${names(decision.auditMatches)}`;
}

/** `PASS file: name`, or `FAIL file:line: name — expected allow, got deny: why`; audit-mode matches in parentheses. */
export function resultLine(result: TestCaseResult, glyphs: Glyphs): string {
  const { case: c, decision } = result;
  const file = displayPath(c.file);
  // Audit-mode matches are what the case will decide once they are enforced: worth a look even when it passes.
  const audited = decision.auditMatches.length === 0 ? '' : ` (would deny (audit mode): ${decision.auditMatches.join(', ')})`;
  const failure = failureOf(result);
  if (failure === null) return `${glyphs.pass} ${file}: ${c.name}${audited}`;
  return `${glyphs.fail} ${file}${c.line ? `:${c.line}` : ''}: ${c.name} ${glyphs.dash} ${failure}`;
}

/**
 * The report as one JSON object: `summary` (counts), `cases` (one per case
 * run, in file order) and `problems` (invalid test files and cases).
 */
export function toJsonReport(report: PolicyTestReport): string {
  const passed = report.results.filter((r) => r.passed).length;
  return `${JSON.stringify(
    {
      summary: { passed, failed: report.results.length - passed, problems: report.issues.length, test_files: report.testFiles.length },
      cases: report.results.map((result) => ({
        file: displayPath(result.case.file),
        line: result.case.line ?? null,
        name: result.case.name,
        policy: result.case.policy,
        expect: result.case.expect,
        decision: result.decision.allowed ? 'allow' : 'deny',
        audit_matches: result.decision.auditMatches,
        passed: result.passed,
        failure: failureOf(result),
      })),
      problems: report.issues.map((issue) => ({ file: displayPath(issue.file), line: issue.line ?? null, key: issue.keyPath, message: issue.message, hint: issue.hint ?? null })),
    },
    null,
    2,
  )}\n`;
}

/**
 * The report as JUnit XML, as CI test-report viewers read it: one
 * `<testsuite>` per test file, one `<testcase>` per case (a `<failure>`
 * with the reason when it failed), and each problem of the file as a
 * `<testcase>` holding an `<error>`.
 */
export function toJunitReport(report: PolicyTestReport, formatIssue: (issue: PolicyIssue) => string): string {
  const suites = new Map<string, { cases: string[]; failures: number; errors: number }>();
  const suite = (file: string) => {
    const key = displayPath(file);
    let found = suites.get(key);
    if (found === undefined) suites.set(key, (found = { cases: [], failures: 0, errors: 0 }));
    return found;
  };
  for (const file of report.testFiles) suite(file);
  for (const result of report.results) {
    const file = displayPath(result.case.file);
    const into = suite(result.case.file);
    const head = `<testcase classname="${xml(file)}" name="${xml(result.case.name)}" file="${xml(file)}"${result.case.line ? ` line="${result.case.line}"` : ''}`;
    const failure = failureOf(result);
    if (failure === null) {
      into.cases.push(`${head}/>`);
    } else {
      into.failures += 1;
      into.cases.push(`${head}>\n      <failure message="${xml(failure)}" type="${xml(`expected_${result.case.expect}`)}">${xml(`policy ${result.case.policy}: ${failure}`)}</failure>\n    </testcase>`);
    }
  }
  for (const issue of report.issues) {
    const file = displayPath(issue.file);
    const into = suite(issue.file);
    into.errors += 1;
    const where = `${file}${issue.line ? `:${issue.line}` : ''}${issue.keyPath ? `: ${issue.keyPath}` : ''}`;
    into.cases.push(`<testcase classname="${xml(file)}" name="${xml(where)}" file="${xml(file)}"${issue.line ? ` line="${issue.line}"` : ''}>\n      <error message="${xml(formatIssue(issue))}"/>\n    </testcase>`);
  }
  const total = (pick: (s: { cases: string[]; failures: number; errors: number }) => number) => [...suites.values()].reduce((sum, s) => sum + pick(s), 0);
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>', `<testsuites name="oidc-broker policy test" tests="${total((s) => s.cases.length)}" failures="${total((s) => s.failures)}" errors="${total((s) => s.errors)}">`];
  for (const [file, s] of suites) {
    lines.push(`  <testsuite name="${xml(file)}" tests="${s.cases.length}" failures="${s.failures}" errors="${s.errors}">`);
    for (const c of s.cases) lines.push(`    ${c}`);
    lines.push('  </testsuite>');
  }
  lines.push('</testsuites>');
  return `${lines.join('\n')}\n`;
}

/** Characters XML 1.0 cannot hold at all (control characters, lone surrogates, U+FFFE/U+FFFF): shown as U+FFFD. */
const NOT_XML = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Text for an XML attribute value or element: markup escaped; tab, CR and LF as references, so attribute normalisation keeps them. */
export function xml(text: string): string {
  return text
    .replace(NOT_XML, '\ufffd')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\t/g, '&#9;')
    .replace(/\n/g, '&#10;')
    .replace(/\r/g, '&#13;');
}

export function displayPath(file: string): string {
  return path.relative(process.cwd(), file) || file;
}
