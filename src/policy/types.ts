/**
 * Compiled trust policies (docs/policies/reference.md). Everything here is built once
 * at load by `compilePolicies`; evaluation only compares.
 */
import type { SharedIssuerKind } from '../oidc/issuer-defaults.js';
import type { Grant, ProviderName } from '../providers/registry.js';

export type Effect = 'allow' | 'deny';
/** `audit`: a deny policy that records its matches on the decision's audit record (`audit_matches`) and never denies (docs/policies/reference.md, `mode`). */
export type PolicyMode = 'enforce' | 'audit';
export type ConditionOperator = 'equals' | 'in' | 'glob' | 'regex' | 'exists' | 'audience' | 'cel';

/** The outcome of one condition, as explain shows it. */
export interface ConditionResult {
  /** Claim name, or a JSON Pointer starting with `/`; `aud` for the audience condition; `condition` for the CEL condition (operator `cel`). */
  key: string;
  operator: ConditionOperator;
  /** Human form of what was required, e.g. `refs/heads/main`, `[push, workflow_dispatch]`, `glob acme/*`. */
  expected: string;
  /**
   * The claim's value in the token; undefined when absent. For `cel`: the
   * bool result, or a string saying why there is none (an evaluation error
   * with its position in the expression, or a non-bool result).
   */
  actual: unknown;
  matched: boolean;
  /**
   * Present when the condition could not be evaluated (docs/policies/reference.md,
   * "Conditions that cannot be evaluated"): a CEL error or non-bool result, or
   * a claim that is an object or array where a string form is compared. Says
   * why without any claim value, so it is safe to show a caller. `matched` is
   * false then.
   */
  error?: string;
}

export interface CompiledPolicy {
  name: string;
  description: string | undefined;
  /** Path of the file it came from. */
  file: string;
  /** Hex SHA-256 of the file's bytes as loaded. */
  sha256: string;
  /** Config name of the issuer. */
  issuer: string;
  effect: Effect;
  /** Always `enforce` for allow policies (the compiler refuses `audit` there). */
  mode: PolicyMode;
  /** Optional narrowing: the token's `aud` must contain it. */
  audience: string | undefined;
  allowTokenReuse: boolean;
  /** Evaluates every condition (AND); pure, never throws. */
  evaluate(claims: Readonly<Record<string, unknown>>, audiences: readonly string[]): ConditionResult[];
  /** Absent on deny policies. */
  grant: Grant | undefined;
}

export interface PolicySet {
  /** Allow and deny policies by name. */
  readonly byName: ReadonlyMap<string, CompiledPolicy>;
  /** Deny policies indexed by issuer name, so a decision never scans unrelated policies. */
  readonly denyByIssuer: ReadonlyMap<string, readonly CompiledPolicy[]>;
  /**
   * The same deny policies, per issuer, indexed by their equality conditions:
   * a decision evaluates only the deny policies that could match its token
   * (see deny-index.ts), so its cost does not grow with the number of policies.
   */
  readonly denyIndex: ReadonlyMap<string, DenyIndex>;
  readonly size: number;
}

/**
 * The deny policies of one issuer, indexed by their equality conditions
 * (built by deny-index.ts).
 */
export interface DenyIndex {
  /** Every deny policy of the issuer, in file order (the offline explain lists them all). */
  readonly all: readonly CompiledPolicy[];
  /** How many of them have no equality condition, so every decision evaluates them. */
  readonly alwaysEvaluated: number;
  /**
   * The deny policies that could match a token with these claims, in file
   * order: those filed under the token's own string form of an indexed claim
   * (or all those filed under a claim that is an object or array in the
   * token, since their condition on it cannot be evaluated), plus those
   * without an equality condition. Every other deny policy of the issuer
   * fails one of its equality conditions on these claims.
   */
  candidates(claims: Readonly<Record<string, unknown>>): readonly CompiledPolicy[];
}

/** One policy file as read from disk. */
export interface PolicyFile {
  path: string;
  text: string;
  /** The file's exact bytes, for `sha256`; when absent the UTF-8 encoding of `text` is hashed. */
  bytes?: Uint8Array | undefined;
}

/** What the compiler needs to know about the running config. */
export interface CompileContext {
  /**
   * Configured issuers by name, with their accepted audiences and their
   * tenant claims, one of which every allow policy must pin (docs/configuration.md,
   * `tenant_claims`), and which shared CI service the issuer is, if any (the
   * lint reads GitHub's claims only on a GitHub issuer, policy/lint.ts).
   */
  issuers: ReadonlyMap<string, { audiences: readonly string[]; tenantClaims: readonly string[]; kind?: SharedIssuerKind | undefined }>;
  /** Providers this broker can issue from. */
  providers: ReadonlySet<ProviderName>;
}

export interface PolicyIssue {
  file: string;
  /** 1-based; absent when the problem is not at one place (e.g. a duplicate name across files). */
  line?: number | undefined;
  /** Dotted key path inside the file, e.g. `claims.ref.glob`; empty for the whole file. */
  keyPath: string;
  message: string;
  hint?: string | undefined;
  /** Set on a lint warning (policy/lint.ts): the id of the rule that found it, shown as `[rule]`. */
  rule?: LintRule | undefined;
}

/** The lint rules (docs/policies/reference.md, "Lint"); the ids are stable, for grep and for reviewers. */
export type LintRule =
  | 'name-without-id'
  | 'legacy-sub-only'
  | 'trailing-wildcard'
  | 'double-star-ref'
  | 'unanchored-regex'
  | 'overlapping-sibling'
  | 'privileged-triggers';

/**
 * `warnings`: what loads but must be seen, each time the set is loaded (a
 * policy that trusts every tenant of its issuer, docs/policies/reference.md,
 * "Tenant binding").
 */
export type CompileResult = { ok: true; set: PolicySet; warnings: PolicyIssue[] } | { ok: false; issues: PolicyIssue[] };

export interface PolicyEvaluation {
  policy: string;
  effect: Effect;
  mode: PolicyMode;
  /** True when every condition held. */
  matched: boolean;
  /**
   * Present when the policy could not be evaluated: no condition failed but
   * at least one could not be evaluated (its `error`, with the condition's
   * key). A deny policy that cannot be evaluated denies (fail closed).
   */
  error?: string;
  conditions: ConditionResult[];
}

export interface Decision {
  allowed: boolean;
  /** Machine reason: `allowed`, `conditions_not_met`, `denied_by_policy`, `deny_policy_not_evaluable`, `issuer_mismatch`, `not_an_allow_policy`. */
  reason: string;
  /** Sentence safe to return to the caller: names the failing claims, never another policy's values. */
  message: string;
  /** The named policy's evaluation, then the deny policies evaluated: the deny index's candidates, or every deny policy of the issuer with `allDenyPolicies`. */
  evaluations: PolicyEvaluation[];
  /**
   * Names of the audit-mode deny policies that would deny this token if they
   * were enforced (matched, or could not be evaluated), in file order; they
   * denied nothing. Empty when none, or when no deny policy was evaluated.
   */
  auditMatches: string[];
}
