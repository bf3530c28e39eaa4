import path from 'node:path';
import type { PolicyIssue } from './types.js';

/** Policies that do not compile; the broker does not start on them (docs/policies/reference.md). */
export class PolicyLoadError extends Error {
  override name = 'PolicyLoadError';
  constructor(readonly issues: PolicyIssue[]) {
    super(`${issues.length} problem${issues.length === 1 ? '' : 's'} in the policy directory:\n${issues.map(formatPolicyIssue).join('\n')}`);
  }
}

/** `file:line: key: message (hint: ...)`, the file relative to the working directory. */
export function formatPolicyIssue(issue: PolicyIssue): string {
  const where = `${path.relative(process.cwd(), issue.file) || issue.file}${issue.line ? `:${issue.line}` : ''}`;
  return `${where}: ${issue.keyPath ? `${issue.keyPath}: ` : ''}${issue.message}${issue.hint ? ` (hint: ${issue.hint})` : ''}`;
}
