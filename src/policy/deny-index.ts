/**
 * Deny policies indexed by their exact-match conditions (issue "Scale"), so a
 * decision evaluates only the deny policies that could match the token instead
 * of every deny policy of its issuer.
 *
 * Why it is exact: a policy matches only when every one of its conditions
 * holds (`CompiledPolicy.evaluate` is an AND). An equality or `in` condition
 * holds only when the claim's string form is one of its accepted forms. So a
 * deny policy is filed under one of its equality conditions, once per accepted
 * form; a token can only match it if the token's string form of that claim
 * selects that bucket. A deny policy that is in no bucket the token selects
 * has a failing condition and cannot match: leaving it out changes the
 * evaluations listed, never the decision. A token whose indexed claim is an
 * object or array selects every policy filed under that claim: their
 * condition on it cannot be evaluated, so they are not known to fail. Deny
 * policies without an equality condition (only glob, regex, exists,
 * audience, or none at all) are always candidates.
 */
import { parseClaimPath, resolveClaim } from '../claims/claim-path.js';
import { toStringForm } from '../values.js';
import type { ConditionSpec } from './matchers.js';
import type { CompiledPolicy, DenyIndex } from './types.js';

/** An equality or `in` condition: the claim at `path` must have one of `forms` as its string form. */
export interface ExactCondition {
  /** The claim as written: a top-level name or a JSON Pointer. */
  readonly key: string;
  readonly path: readonly string[];
  /** The accepted string forms, without duplicates. */
  readonly forms: readonly string[];
}

/** A deny policy and its exact-match conditions, as the compiler found them. */
export interface DenyEntry {
  readonly policy: CompiledPolicy;
  readonly exact: readonly ExactCondition[];
}

/**
 * The exact-match form of a condition, or undefined for any other operator.
 * Policy values take the string form claims compare by (`toStringForm`, the
 * helper the matchers use): a number by its canonical form, a boolean as
 * `true`/`false`, so `12345` and `"12345"` share a bucket as they match the same claims.
 */
export function exactCondition(key: string, spec: ConditionSpec): ExactCondition | undefined {
  let values: readonly unknown[];
  if (spec.operator === 'equals') values = [spec.value];
  else if (spec.operator === 'in') values = spec.values;
  else return undefined;
  const forms = new Set<string>();
  for (const value of values) {
    const form = toStringForm(value);
    // Not reachable for a compiled policy (numbers are finite); unindexed is the safe answer.
    if (form === undefined) return undefined;
    forms.add(form);
  }
  if (forms.size === 0) return undefined;
  return Object.freeze({ key, path: parseClaimPath(key), forms: Object.freeze([...forms]) });
}

interface IndexedClaim {
  path: readonly string[];
  /** String form -> ordinals (file order) of the deny policies filed under it. */
  buckets: Map<string, number[]>;
  /** Every ordinal filed under this claim, for a token whose claim is an object or array. */
  filed: number[];
}

/**
 * Builds the index of one issuer's deny policies, given in file order.
 *
 * Each deny policy with equality conditions is filed under one of them: the
 * most selective by a simple estimate, i.e. the condition whose accepted
 * values are pinned by the fewest deny policies of the issuer (fewer forms,
 * then file order, break ties). `repository: acme/legacy` wins over
 * `event_name: pull_request_target` when many deny policies pin that event.
 */
export function buildDenyIndex(entries: readonly DenyEntry[]): DenyIndex {
  const all = Object.freeze(entries.map((e) => e.policy));
  const pathKey = (path: readonly string[]): string => JSON.stringify(path);
  const bucketKey = (path: readonly string[], form: string): string => `${pathKey(path)}\u0000${form}`;

  const pinnedBy = new Map<string, number>();
  for (const entry of entries) {
    for (const condition of entry.exact) {
      for (const form of condition.forms) {
        const key = bucketKey(condition.path, form);
        pinnedBy.set(key, (pinnedBy.get(key) ?? 0) + 1);
      }
    }
  }

  const claims = new Map<string, IndexedClaim>();
  const always: number[] = [];
  entries.forEach((entry, ordinal) => {
    let best: { condition: ExactCondition; score: number } | undefined;
    for (const condition of entry.exact) {
      const score = condition.forms.reduce((sum, form) => sum + (pinnedBy.get(bucketKey(condition.path, form)) ?? 0), 0);
      if (best === undefined || score < best.score || (score === best.score && condition.forms.length < best.condition.forms.length)) best = { condition, score };
    }
    if (best === undefined) {
      always.push(ordinal);
      return;
    }
    const { path, forms } = best.condition;
    let claim = claims.get(pathKey(path));
    if (claim === undefined) {
      claim = { path, buckets: new Map(), filed: [] };
      claims.set(pathKey(path), claim);
    }
    claim.filed.push(ordinal);
    for (const form of forms) {
      const bucket = claim.buckets.get(form);
      if (bucket === undefined) claim.buckets.set(form, [ordinal]);
      else bucket.push(ordinal);
    }
  });

  const indexed = [...claims.values()];
  const alwaysPolicies = Object.freeze(always.map((ordinal) => all[ordinal] as CompiledPolicy));
  return Object.freeze({
    all,
    alwaysEvaluated: always.length,
    candidates(tokenClaims: Readonly<Record<string, unknown>>): readonly CompiledPolicy[] {
      let hits: number[] | undefined;
      for (const claim of indexed) {
        const value = resolveClaim(tokenClaims, claim.path);
        const form = toStringForm(value);
        // Absent and null claims equal no policy value: their conditions fail.
        // An object or array cannot be compared: every policy filed under the
        // claim is undecided there, and must be evaluated (a deny it leaves undecided denies).
        const bucket = form !== undefined ? claim.buckets.get(form) : typeof value === 'object' && value !== null ? claim.filed : undefined;
        if (bucket === undefined) continue;
        hits = hits === undefined ? [...always, ...bucket] : hits.concat(bucket);
      }
      if (hits === undefined) return alwaysPolicies;
      // A policy is filed under one claim (once per distinct form, or once in `filed`), so it appears at most once here.
      return hits.sort((a, b) => a - b).map((ordinal) => all[ordinal] as CompiledPolicy);
    },
  });
}
