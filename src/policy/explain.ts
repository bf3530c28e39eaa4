import { grantRenderRefusal } from '../providers/registry.js';
import { evaluate, type EvaluationToken } from './evaluate.js';
import type { CompileContext, CompiledPolicy, ConditionOperator, ConditionResult, Decision, Effect, PolicyMode, PolicySet } from './types.js';

/**
 * The explain output (openapi.yaml, `POST /v1/explain`; docs/policies/troubleshooting.md,
 * `policy explain`): a Decision as JSON, and its text rendering. The HTTP
 * route and the offline CLI print the same object, so a script reads both
 * the same way.
 */
export interface ExplainOutput {
  /** Id of the explain's audit record; null offline, where nothing is recorded. */
  explain_id: string | null;
  /** The policy the request named. */
  policy: string;
  decision: 'allow' | 'deny';
  /** Machine reason: `allowed`, `conditions_not_met`, `denied_by_policy`, `issuer_mismatch`, `not_an_allow_policy` (offline also `audience_not_accepted`), or the grant rendering's refusal (`session_tag_invalid`, `template_claim_unusable`, ...: docs/providers.md). */
  reason: string;
  /** Sentence; names failing claims and the token's values, never another policy's values. */
  message: string;
  /**
   * The named policy, then the deny policies: over HTTP only those that deny
   * the token (matched, or could not be evaluated), or would deny it once
   * enforced (audit mode); offline every deny policy of the token's issuer.
   */
  evaluations: ExplainEvaluation[];
  /** Audit-mode deny policies that would deny this token once enforced; they denied nothing (docs/policies/reference.md, `mode`). */
  audit_matches: string[];
  /** True when the HTTP answer was cut to its size bound (openapi.yaml): fewer evaluations or conditions, or shortened strings. */
  truncated: boolean;
}

export interface ExplainEvaluation {
  policy: string;
  effect: Effect;
  /** `audit`: a deny policy that only records what it would deny. */
  mode: PolicyMode;
  /** Every condition held (for a deny policy: it denies the token, or in audit mode would). */
  matched: boolean;
  /** Why the policy could not be evaluated (no condition failed, one could not be evaluated); a deny policy then denies. */
  error?: string;
  conditions: ExplainCondition[];
}

export interface ExplainCondition {
  /** Claim name, JSON Pointer, `aud` (audience narrowing) or `condition` (CEL). */
  key: string;
  operator: ConditionOperator;
  /** Human form of what the policy requires; `(hidden)` over HTTP and for deny policies' values wherever the reader is not the owner. */
  expected: string;
  /** The token's value for the key, as JSON (the token's audiences for `aud`); left out when the token lacks the claim. */
  actual?: unknown;
  matched: boolean;
  /** Why the condition could not be evaluated, in words that quote no claim value. */
  error?: string;
}

const HIDDEN = '(hidden)';

/**
 * The HTTP answer's bounds (openapi.yaml, `ExplainResponse`): at most 64 KiB
 * of JSON whatever the policies and the token, so neither many deny policies
 * nor a large claim makes explain an amplifier.
 */
const EXPLAIN_RESPONSE_MAX_BYTES = 64 * 1024;
/** Deny policies listed over HTTP (the decision message names as many). */
const MAX_EXPLAINED_DENY_POLICIES = 10;
/** Conditions listed per policy over HTTP. */
const MAX_EXPLAINED_CONDITIONS = 32;
/** Characters kept of a key, an error or an `actual` string (or of an object's or array's JSON, shown as a string) over HTTP. */
const MAX_EXPLAINED_STRING = 256;
/** Characters kept of the decision message over HTTP. */
const MAX_EXPLAINED_MESSAGE = 2048;

/**
 * The explain object. `reader: 'caller'` (HTTP) hides every policy's expected
 * values: any holder of a token for the broker's audience can call explain,
 * and a policy's pinned ids, refs and workflow paths are reconnaissance for
 * them; the conditions, operators, the caller's own claim values and what
 * matched are enough to see why. For the caller it also lists only the deny
 * policies that deny the token (the others' names and keys are
 * reconnaissance too, and their number is the policy set's), and is bounded
 * to `EXPLAIN_RESPONSE_MAX_BYTES` (`truncated` says when something was cut).
 * `'owner'` (the offline CLI, run by whoever holds the policy files) shows
 * everything.
 */
export function toExplainOutput(policy: string, decision: Decision, explainId: string | null, reader: 'caller' | 'owner'): ExplainOutput {
  const [named, ...denials] = decision.evaluations;
  const shownDenials = reader === 'caller' ? denials.filter((d) => d.matched || d.error !== undefined) : denials;
  const output: ExplainOutput = {
    explain_id: explainId,
    policy,
    decision: decision.allowed ? 'allow' : 'deny',
    reason: decision.reason,
    message: decision.message,
    evaluations: (named === undefined ? [] : [named, ...shownDenials]).map((e) => ({
      policy: e.policy,
      effect: e.effect,
      mode: e.mode,
      matched: e.matched,
      ...(e.error === undefined ? {} : { error: e.error }),
      conditions: e.conditions.map((c) => {
        const shown = reader === 'caller' ? { ...c, expected: HIDDEN } : c;
        const actual = hidesActual(shown) ? HIDDEN : shown.actual;
        return { key: c.key, operator: c.operator, expected: shown.expected, ...(actual === undefined ? {} : { actual }), matched: c.matched, ...(c.error === undefined ? {} : { error: c.error }) };
      }),
    })),
    audit_matches: [...decision.auditMatches],
    truncated: false,
  };
  return reader === 'caller' ? bounded(output) : output;
}

/**
 * The caller's answer cut to its bounds: at most 10 deny policies and 32
 * conditions each, strings cut to 256 characters (an object or array `actual`
 * whose JSON is longer becomes that JSON, cut, as a string), then conditions
 * kept in order while the JSON stays within 64 KiB. Every cut sets `truncated`.
 */
function bounded(output: ExplainOutput): ExplainOutput {
  let truncated = false;
  const cut = (text: string, limit: number): string => {
    if (text.length <= limit) return text;
    truncated = true;
    // Never split a surrogate pair: a lone half is not text.
    const end = /[\uD800-\uDBFF]/.test(text.charAt(limit - 2)) ? limit - 2 : limit - 1;
    return `${text.slice(0, end)}…`;
  };
  const cutActual = (value: unknown): unknown => {
    if (typeof value === 'string') return cut(value, MAX_EXPLAINED_STRING);
    if (typeof value !== 'object' || value === null) return value;
    const json = JSON.stringify(value);
    return json.length <= MAX_EXPLAINED_STRING ? value : cut(json, MAX_EXPLAINED_STRING);
  };
  const capped = <T>(items: readonly T[], limit: number): T[] => {
    if (items.length > limit) truncated = true;
    return items.slice(0, limit);
  };

  const [named, ...denials] = output.evaluations;
  const evaluations = (named === undefined ? [] : [named, ...capped(denials, MAX_EXPLAINED_DENY_POLICIES)]).map((e) => ({
    ...e,
    ...(e.error === undefined ? {} : { error: cut(e.error, MAX_EXPLAINED_STRING) }),
    conditions: capped(e.conditions, MAX_EXPLAINED_CONDITIONS).map((c) => ({
      ...c,
      key: cut(c.key, MAX_EXPLAINED_STRING),
      expected: cut(c.expected, MAX_EXPLAINED_STRING),
      ...('actual' in c ? { actual: cutActual(c.actual) } : {}),
      ...(c.error === undefined ? {} : { error: cut(c.error, MAX_EXPLAINED_STRING) }),
    })),
  }));
  const message = cut(output.message, MAX_EXPLAINED_MESSAGE);

  // What is left of the byte budget once everything but the conditions is counted (`truncated: true` included, the longer form).
  const bytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value));
  let budget = EXPLAIN_RESPONSE_MAX_BYTES - bytes({ ...output, message, evaluations: evaluations.map((e) => ({ ...e, conditions: [] })), truncated: true });
  const kept = evaluations.map((e) => {
    const conditions: ExplainCondition[] = [];
    for (const c of e.conditions) {
      // +1 for the comma between two conditions.
      const size = bytes(c) + 1;
      if (size > budget) {
        truncated = true;
        break;
      }
      budget -= size;
      conditions.push(c);
    }
    return { ...e, conditions };
  });
  return { ...output, message, evaluations: kept, truncated };
}

/**
 * A hidden CEL condition's `actual` is hidden too unless it is the bool
 * result: an evaluation error's text comes from the expression (a key it
 * reads, a pattern, a position), not from the token.
 */
function hidesActual(c: ConditionResult): boolean {
  return c.expected === HIDDEN && c.operator === 'cel' && typeof c.actual !== 'boolean';
}

/**
 * An allow decision as the exchange would end it: the grant is rendered for
 * the token's claims (pure, no upstream call), and a grant the claims cannot
 * fill turns the decision into that refusal, with the reason and message the
 * exchange gives (docs/providers.md, "Claim templates and how claim values
 * are made safe"). The evaluations stay: every condition held.
 */
export function withGrantRendered(policy: CompiledPolicy, decision: Decision, claims: Readonly<Record<string, unknown>>): Decision {
  if (!decision.allowed || policy.grant === undefined) return decision;
  const refusal = grantRenderRefusal(policy.grant, claims);
  return refusal === null ? decision : { ...decision, allowed: false, reason: refusal.reason ?? 'access_denied', message: refusal.message };
}

/** A token as the offline commands (`policy explain`, `policy test`) make it up: nothing is verified. */
export interface OfflineToken extends EvaluationToken {
  /** True when the audiences were not given and the issuer's first configured audience was used. */
  defaultAudience: boolean;
}

/**
 * Builds the evaluation input from a claim set: the audiences are `audience`
 * if given, else the claims' `aud` (string or list of strings), else the
 * issuer's first configured audience (what a CI job asking this broker would
 * normally request).
 */
export function offlineToken(ctx: CompileContext, issuerName: string, claims: Readonly<Record<string, unknown>>, audience?: readonly string[]): OfflineToken {
  if (audience !== undefined) return { issuerName, claims, audiences: [...audience], defaultAudience: false };
  const aud = claims.aud;
  if (typeof aud === 'string') return { issuerName, claims, audiences: [aud], defaultAudience: false };
  if (Array.isArray(aud)) return { issuerName, claims, audiences: aud.filter((a): a is string => typeof a === 'string'), defaultAudience: false };
  const first = ctx.issuers.get(issuerName)?.audiences[0];
  return { issuerName, claims, audiences: first === undefined ? [] : [first], defaultAudience: true };
}

/**
 * The decision an exchange of this (unverified) token would get, for the
 * offline commands. Like the broker's verifier, a token none of whose
 * audiences the issuer accepts is refused before any policy is evaluated
 * (reason `audience_not_accepted`); like its issue step, an allowed token
 * whose claims cannot fill the grant is refused (`withGrantRendered`). Every deny policy of the issuer is
 * evaluated (not just the deny index's candidates), and their expected values
 * are shown: whoever runs these commands holds the policy files.
 */
export function evaluateOffline(set: PolicySet, ctx: CompileContext, policy: CompiledPolicy, token: EvaluationToken): Decision {
  const accepted = ctx.issuers.get(token.issuerName)?.audiences ?? [];
  if (!token.audiences.some((a) => accepted.includes(a))) {
    const shown = token.audiences.length === 0 ? 'no audience' : `audience ${token.audiences.map((a) => JSON.stringify(a)).join(', ')}`;
    return {
      allowed: false,
      reason: 'audience_not_accepted',
      message: `A token with ${shown} would be refused before any policy is evaluated: issuer '${token.issuerName}' accepts ${accepted.map((a) => JSON.stringify(a)).join(', ') || 'no audience'}.`,
      evaluations: [],
      auditMatches: [],
    };
  }
  return withGrantRendered(policy, revealDenyExpected(set, evaluate(set, policy, token, { allDenyPolicies: true }), token), token.claims);
}

/**
 * Puts deny policies' expected values back into a Decision (evaluate() hides
 * them) by evaluating those policies again. Offline use only: the HTTP API
 * must never reveal them.
 */
export function revealDenyExpected(set: PolicySet, decision: Decision, token: EvaluationToken): Decision {
  return {
    ...decision,
    evaluations: decision.evaluations.map((evaluation) => {
      const policy = set.byName.get(evaluation.policy);
      if (evaluation.effect !== 'deny' || policy === undefined) return evaluation;
      const revealed = policy.evaluate(token.claims, token.audiences);
      const sameShape = revealed.length === evaluation.conditions.length && revealed.every((r, i) => r.key === evaluation.conditions[i]?.key && r.operator === evaluation.conditions[i]?.operator);
      return sameShape ? { ...evaluation, conditions: evaluation.conditions.map((c, i) => ({ ...c, expected: revealed[i]!.expected, actual: revealed[i]!.actual })) } : evaluation;
    }),
  };
}

/** How much of one value the text rendering shows; `--json` has them whole. */
const CELL_LIMIT = 80;

/**
 * The explain output as a table for a terminal: the decision and its
 * message (and the audit-mode deny policies that would deny the token once
 * enforced), then for each evaluated policy one row per condition (✓ or ✗,
 * or the `marks` given for output that must stay ASCII; key, operator,
 * expected, the token's value). `notes` come first, one per line (e.g.
 * "token not verified").
 */
export function renderExplainText(output: ExplainOutput, notes: readonly string[] = [], marks: { holds: string; fails: string } = { holds: '✓', fails: '✗' }): string {
  const lines: string[] = notes.map((n) => `note: ${n}`);
  if (lines.length > 0) lines.push('');
  lines.push(`Decision: ${output.decision.toUpperCase()} (${output.reason})`);
  lines.push(clean(output.message, Infinity));
  // Not part of the decision, but what it will be once these guardrails are enforced.
  if (output.audit_matches.length > 0) lines.push(`Would deny (audit mode): ${output.audit_matches.map((name) => `'${name}'`).join(', ')}; not enforced.`);
  if (output.evaluations.length === 0) return `${lines.join('\n')}\n`;

  const header = ['', 'KEY', 'OPERATOR', 'EXPECTED', 'ACTUAL'];
  const rows = output.evaluations.map((e) => e.conditions.map((c) => [c.matched ? marks.holds : marks.fails, clean(c.key, CELL_LIMIT), c.operator, clean(c.expected, CELL_LIMIT), clean(showActual(c.actual), CELL_LIMIT)]));
  const widths = header.map((h, i) => Math.max(width(h), ...rows.flat().map((r) => width(r[i]!))));
  const format = (cells: readonly string[]): string => `  ${cells.map((cell, i) => (i === cells.length - 1 ? cell : cell + ' '.repeat(widths[i]! - width(cell)))).join('  ')}`.trimEnd();

  output.evaluations.forEach((evaluation, i) => {
    const kind = evaluation.effect === 'allow' ? 'policy' : evaluation.mode === 'audit' ? 'deny policy (audit mode)' : 'deny policy';
    lines.push('', `${kind} ${evaluation.policy}: ${evaluationVerdict(evaluation)}`);
    if (evaluation.conditions.length === 0) return;
    lines.push(format(header));
    for (const row of rows[i]!) lines.push(format(row));
  });
  return `${lines.join('\n')}\n`;
}

function evaluationVerdict(e: ExplainEvaluation): string {
  const failed = e.conditions.filter((c) => !c.matched).length;
  const total = e.conditions.length;
  if (e.effect === 'deny') {
    const denies = e.mode === 'audit' ? 'would deny this token (audit mode)' : 'denies this token';
    if (e.error !== undefined) return `could not be evaluated (${e.error}): ${denies}`;
    if (total === 0) return `matches every token of its issuer: ${denies}`;
    return e.matched ? `matches: ${denies}` : `does not match (${failed} of ${total} condition${total === 1 ? '' : 's'} fail${failed === 1 ? 's' : ''})`;
  }
  return e.matched ? `every condition holds (${total})` : `${failed} of ${total} condition${total === 1 ? '' : 's'} fail${failed === 1 ? 's' : ''}`;
}

/**
 * One line on why a decision went the way it did, naming each failing
 * condition with what it requires and the token's value (for `policy test`'s
 * FAIL lines; offline, so deny policies' values are shown when revealed).
 */
export function summarizeDecision(decision: Decision): string {
  const [named, ...denials] = decision.evaluations;
  if (decision.reason === 'denied_by_policy') {
    return denials
      .filter((d) => d.matched && d.mode === 'enforce')
      .map((d) => `deny policy '${d.policy}' matches${d.conditions.length === 0 ? ' every token of its issuer' : `: ${d.conditions.map(describeCondition).join('; ')}`}`)
      .join('; ');
  }
  if (decision.reason === 'conditions_not_met' && named) {
    return `policy '${named.policy}' does not match: ${named.conditions.filter((c) => !c.matched).map(describeCondition).join('; ')}`;
  }
  // Any other denial (issuer mismatch, a grant the claims cannot fill, ...) as the audit record words it.
  return decision.allowed ? decision.message : `${decision.reason}: ${decision.message}`;
}

/** `ref in [refs/heads/main] (token: "refs/heads/dev")` */
function describeCondition(c: ConditionResult): string {
  const token = clean(showActual(c.actual), CELL_LIMIT);
  const expected = clean(c.expected, CELL_LIMIT);
  switch (c.operator) {
    case 'equals':
      return `${c.key} = ${expected} (token: ${token})`;
    case 'in':
      return `${c.key} in ${expected} (token: ${token})`;
    case 'exists':
      return `${c.key} ${expected === 'exists' ? 'exists' : `is ${expected}`} (token: ${token})`;
    case 'audience':
      return `aud holds ${expected} (token: ${token})`;
    default:
      // glob, regex: `expected` already names the operator; cel and anything newer: the expression.
      return `${c.key} ${c.operator === 'glob' || c.operator === 'regex' ? 'matches ' : ''}${expected} (token: ${token})`;
  }
}

function showActual(value: unknown): string {
  if (value === undefined) return '(absent)';
  try {
    return JSON.stringify(value) ?? `a ${typeof value}`;
  } catch {
    return `a ${typeof value}`;
  }
}

/** One line, no control or bidi characters (claims are untrusted input on a terminal), cut to `limit`. */
function clean(text: string, limit: number): string {
   
  const flat = text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?');
  const chars = [...flat];
  return chars.length > limit ? `${chars.slice(0, limit - 1).join('')}…` : flat;
}

function width(text: string): number {
  return [...text].length;
}
