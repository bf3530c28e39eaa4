import path from 'node:path';
import type { Logger } from '../logger.js';
import type { PolicyIssue } from './types.js';

/** Policies that do not compile; the broker does not start on them (docs/policies/reference.md). */
export class PolicyLoadError extends Error {
  override name = 'PolicyLoadError';
  constructor(readonly issues: PolicyIssue[]) {
    super(`${issues.length} problem${issues.length === 1 ? '' : 's'} in the policy directory:\n${issues.map(formatPolicyIssue).join('\n')}`);
  }
}

/** `file:line: key: message (hint: ...)`, with `[rule] ` before the key for a lint warning; the file relative to the working directory. */
export function formatPolicyIssue(issue: PolicyIssue): string {
  const where = `${path.relative(process.cwd(), issue.file) || issue.file}${issue.line ? `:${issue.line}` : ''}`;
  return `${where}: ${issue.rule ? `[${issue.rule}] ` : ''}${issue.keyPath ? `${issue.keyPath}: ` : ''}${issue.message}${issue.hint ? ` (hint: ${issue.hint})` : ''}`;
}

/**
 * Logs each warning of a set that loaded, at warn level, on every load
 * (start-up and each reload that swaps the set in), so that a policy trusting
 * every tenant of its issuer is never silent (docs/policies/reference.md, "Tenant binding").
 */
export function logPolicyWarnings(logger: Logger, warnings: readonly PolicyIssue[]): void {
  for (const warning of warnings) logger.warn(warning.message, { at: formatPolicyIssue(warning) });
}
