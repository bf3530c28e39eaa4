import { UnknownPolicyError } from '../errors.js';
import type { CompiledPolicy, ConditionResult, Decision, PolicyEvaluation, PolicySet } from './types.js';

/** What evaluation needs from a verified token (a `VerifiedToken` fits). */
export interface EvaluationToken {
  /** Config name of the issuer that verified the token. */
  issuerName: string;
  claims: Readonly<Record<string, unknown>>;
  audiences: readonly string[];
}

/** How much of the deny policies a decision evaluates. */
export interface EvaluateOptions {
  /**
   * Evaluate every deny policy of the issuer instead of only the index's
   * candidates, so `evaluations` lists them all (the offline `policy explain`
   * and `policy test`, run by whoever holds the policy files; never over
   * HTTP, where its cost would grow with the policies). The decision
   * (allowed, reason, message) is the same either way.
   */
  allDenyPolicies?: boolean;
}

/** How much of a caller-supplied policy name an error echoes. */
const NAME_ECHO_LIMIT = 128;
/** How much of one claim value a denial message shows. */
const VALUE_ECHO_LIMIT = 100;
/** How many failing conditions a denial message lists. */
const MAX_LISTED_FAILURES = 10;
/** Deny policies' expected values are never sent to a caller (openapi.yaml, explain). */
const HIDDEN = '(hidden)';

/**
 * Finds the policy a request names.
 *
 * @throws UnknownPolicyError (reason `unknown_policy`) when there is none; the
 *   message echoes at most 128 characters of the name, control characters replaced.
 */
export function lookupPolicy(set: PolicySet, name: string): CompiledPolicy {
  const policy = set.byName.get(name);
  if (policy) return policy;
  throw new UnknownPolicyError(`No policy named '${printable(name, NAME_ECHO_LIMIT)}'.`, { reason: 'unknown_policy' });
}

/**
 * Decides whether `policy` allows `token` (docs/policies/reference.md). Pure and
 * synchronous; never throws.
 *
 * Allowed only when the policy is an allow policy, its issuer is the token's,
 * every one of its conditions holds, and no deny policy of that issuer matches
 * (deny wins) or could not be evaluated (reason `deny_policy_not_evaluable`:
 * none of its conditions failed but one could not be evaluated, so it fails
 * closed). Every condition is evaluated, even after a failure, so explain
 * and the audit record see the whole picture.
 *
 * Deny policies are looked up in the issuer's deny index (`PolicySet.denyIndex`):
 * only those that could match the token are evaluated, so the cost does not
 * grow with the number of policies. The others each have an equality or `in`
 * condition the token fails, so they could not have matched: the decision is
 * the one a scan of every deny policy would give.
 *
 * `evaluations` holds the named policy, then the deny policies evaluated, in
 * file order: the index's candidates (every deny policy the token could
 * match, which includes every one that did), or every deny policy of the
 * issuer with `{ allDenyPolicies: true }` (the offline `policy explain`).
 * Deny policies' `expected` values are replaced by `(hidden)` so nothing
 * built from a Decision can leak them. Audit-mode deny policies
 * (`mode: audit`) never deny: the ones that would (matched, or could not be
 * evaluated) are named in `auditMatches`, whatever the decision.
 * `evaluations` is empty when the policy is a deny policy or belongs to
 * another issuer, since its conditions say nothing then.
 */
export function evaluate(set: PolicySet, policy: CompiledPolicy, token: EvaluationToken, options: EvaluateOptions = {}): Decision {
  if (policy.effect !== 'allow') {
    return {
      allowed: false,
      reason: 'not_an_allow_policy',
      message: `Policy '${policy.name}' is a deny policy and grants nothing; name an allow policy.`,
      evaluations: [],
      auditMatches: [],
    };
  }
  if (policy.issuer !== token.issuerName) {
    return {
      allowed: false,
      reason: 'issuer_mismatch',
      message: `Policy '${policy.name}' does not accept tokens from issuer '${token.issuerName}'.`,
      evaluations: [],
      auditMatches: [],
    };
  }

  const named = evaluationOf(policy, token, false);
  const denyPolicies = options.allDenyPolicies === true ? set.denyByIssuer.get(token.issuerName) : set.denyIndex.get(token.issuerName)?.candidates(token.claims);
  const evaluated = (denyPolicies ?? []).map((deny) => evaluationOf(deny, token, true));
  const evaluations = [named, ...evaluated];
  // Audit-mode deny policies only say what they would deny once enforced (docs/policies/reference.md, `mode`).
  const denials = evaluated.filter((d) => d.mode === 'enforce');
  const auditMatches = evaluated.filter((d) => d.mode === 'audit' && wouldDeny(d)).map((d) => d.policy);

  const matchedDenials = denials.filter((d) => d.matched);
  if (matchedDenials.length > 0) {
    return {
      allowed: false,
      reason: 'denied_by_policy',
      message: `Denied by ${matchedDenials.length === 1 ? 'deny policy' : 'deny policies'} ${listed(matchedDenials.map((d) => `'${d.policy}'`))}.`,
      evaluations,
      auditMatches,
    };
  }
  // Fail closed: a deny policy that cannot say whether it matches denies (docs/policies/reference.md).
  const unevaluable = denials.filter((d) => d.error !== undefined);
  if (unevaluable.length > 0) {
    return {
      allowed: false,
      reason: 'deny_policy_not_evaluable',
      message: `Denied: ${listed(unevaluable.map((d) => `deny policy '${d.policy}' could not be evaluated (${d.error ?? ''})`))}; a deny policy that cannot be evaluated denies.`,
      evaluations,
      auditMatches,
    };
  }
  if (!named.matched) {
    return {
      allowed: false,
      reason: 'conditions_not_met',
      message: `Policy '${policy.name}' does not match this token: ${describeFailures(named.conditions)}.`,
      evaluations,
      auditMatches,
    };
  }
  return { allowed: true, reason: 'allowed', message: `Policy '${policy.name}' allows this token.`, evaluations, auditMatches };
}

/** What an enforced deny policy would do with this evaluation: deny when it matched, and when it could not be evaluated (fail closed). */
function wouldDeny(d: PolicyEvaluation): boolean {
  return d.matched || d.error !== undefined;
}

function evaluationOf(policy: CompiledPolicy, token: EvaluationToken, hideExpected: boolean): PolicyEvaluation {
  const results = policy.evaluate(token.claims, token.audiences);
  // A CEL error text comes from the expression (a key it reads, a position), not from the token: hidden with it.
  const conditions = hideExpected
    ? results.map((r) => ({ ...r, expected: HIDDEN, ...(r.operator === 'cel' && typeof r.actual === 'string' ? { actual: HIDDEN } : {}) }))
    : results;
  // A condition-free deny policy matches every token of its issuer: a deliberate kill switch.
  const matched = conditions.every((c) => c.matched);
  // AND of three values: one condition that fails decides; otherwise one that cannot be evaluated leaves the policy undecided.
  const decided = matched || conditions.some((c) => !c.matched && c.error === undefined);
  const undecided = decided ? undefined : conditions.find((c) => c.error !== undefined);
  return { policy: policy.name, effect: policy.effect, mode: policy.mode, matched, ...(undecided === undefined ? {} : { error: whyNotEvaluable(undecided) }), conditions };
}

/** `claim 'ref': it is an array, which glob cannot compare`; `condition: a claim it reads is missing`. The reason words never quote a claim value. */
function whyNotEvaluable(c: ConditionResult): string {
  return `${c.operator === 'cel' ? 'condition' : `claim '${printable(c.key, NAME_ECHO_LIMIT)}'`}: ${c.error ?? ''}`;
}

/** At most `MAX_LISTED_FAILURES` items, then how many more: a message stays short whatever the policies. */
function listed(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED_FAILURES).join(', ');
  return items.length > MAX_LISTED_FAILURES ? `${shown} and ${items.length - MAX_LISTED_FAILURES} more` : shown;
}

/** Names each failing condition and the token's value for it, never the expected value. */
function describeFailures(conditions: readonly ConditionResult[]): string {
  const failed = conditions.filter((c) => !c.matched);
  const parts = failed.slice(0, MAX_LISTED_FAILURES).map((c) => {
    if (c.operator === 'audience') return `the token's audience ${showValue(c.actual)} is not the one it requires`;
    // A CEL error's text quotes the expression (keys, literals it reads): callers get that it failed, explain offline shows why.
    if (c.operator === 'cel') return c.actual === false ? 'the condition is false' : 'the condition could not be evaluated (a claim it reads is missing or of another type)';
    return `claim '${printable(c.key, NAME_ECHO_LIMIT)}' is ${showValue(c.actual)}`;
  });
  if (failed.length > MAX_LISTED_FAILURES) parts.push(`and ${failed.length - MAX_LISTED_FAILURES} more`);
  return parts.join('; ');
}

function showValue(value: unknown): string {
  if (value === undefined) return 'absent';
  if (value === null) return 'null';
  let text: string;
  try {
    // Slice long strings before quoting so the cost stays bounded; JSON quoting escapes control characters.
    text = typeof value === 'string' ? JSON.stringify(value.slice(0, VALUE_ECHO_LIMIT + 1)) : (JSON.stringify(value) ?? `a ${typeof value}`);
  } catch {
    // Unserialisable values (cycles, BigInt) cannot come from a JWT; show the kind only.
    text = `a ${typeof value}`;
  }
  return text.length > VALUE_ECHO_LIMIT ? `${text.slice(0, VALUE_ECHO_LIMIT)}…` : text;
}

/** Caller-supplied text in a message: bounded, one line, no control characters. */
function printable(text: string, limit: number): string {
  const cut = text.length > limit ? `${text.slice(0, limit)}…` : text;
   
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
}
