import path from 'node:path';
import { parseClaimPath } from '../claims/claim-path.js';
import type { SharedIssuerKind } from '../oidc/issuer-defaults.js';
import { formatKeyPath, isPlainObject, toStringForm } from '../values.js';
import type { KeyPath, YamlDocument } from '../yaml/document.js';
import { echo, has } from '../yaml/fields.js';
import { readCondition } from './compile.js';
import { compileMatcher, escapeRe2, globToRe2, type ConditionSpec } from './matchers.js';
import { parsePolicyYaml } from './parse.js';
import type { CompileContext, CompiledPolicy, LintRule, PolicyFile, PolicyIssue, PolicySet } from './types.js';

/** One claim condition as written. */
interface LintCondition {
  /** The key as written: a claim name or a JSON Pointer. */
  readonly key: string;
  /** The top-level claim it reads, whether written as a name or as `/name`; undefined for a nested claim. */
  readonly claim: string | undefined;
  readonly spec: ConditionSpec;
  readonly at: KeyPath;
}

/** A compiled policy with its conditions as written and where they are. */
interface LintedPolicy {
  readonly policy: CompiledPolicy;
  readonly kind: SharedIssuerKind | undefined;
  readonly doc: YamlDocument;
  readonly conditions: readonly LintCondition[];
  /** Top-level claims with an equality or `in` condition, and the string forms it accepts. */
  readonly exact: ReadonlyMap<string, ReadonlySet<string>>;
  readonly cel: string | undefined;
}

/**
 * Claims that name an account (a repository, owner, namespace, project or
 * pipeline), which whoever registers the name controls.
 */
const NAME_CLAIM = /(?:^|[/._-])(?:repo|repository|owner|namespace|project|org|organi[sz]ation|pipeline|vcs-origin)(?:[._-](?:path|slug|name))?$/;
/** Claims that hold a ref or branch name, which whoever may push one chooses. */
const REF_CLAIM = /(?:^|[/._-])(?:ref|branch|tag|sub)$/;

/**
 * Per shared issuer, the claims that name an account and the claim with its
 * immutable id (docs/policies/reference.md, "Lint"): a name is freed on a
 * rename or deletion and can be registered by someone else; the id cannot.
 */
const NAME_IDS: Readonly<Record<SharedIssuerKind, ReadonlyMap<string, string>>> = {
  github: new Map([
    ['repository', 'repository_id'],
    ['repository_owner', 'repository_owner_id'],
  ]),
  gitlab: new Map([
    ['project_path', 'project_id'],
    ['namespace_path', 'namespace_id'],
  ]),
  circleci: new Map([['oidc.circleci.com/vcs-origin', 'oidc.circleci.com/project-id']]),
  buildkite: new Map([
    ['organization_slug', 'organization_id'],
    ['pipeline_slug', 'pipeline_id'],
  ]),
};

/**
 * GitHub events whose runs carry the base repository's identity while acting
 * on what a fork's pull request supplies (docs/policies/guardrails.md).
 */
const PRIVILEGED_EVENTS = ['pull_request_target', 'workflow_run'] as const;
/** The shipped guardrail that refuses each privileged event (policies/). */
const GUARDRAIL_FILES: Readonly<Record<(typeof PRIVILEGED_EVENTS)[number], string>> = {
  pull_request_target: 'deny-github-pull-request-target.yaml',
  workflow_run: 'deny-github-workflow-run.yaml',
};

/** A GitHub subject in the format that names the owner and repository only: `repo:OWNER/REPO:...`. */
const LEGACY_SUB = /^repo:([^:/@]+)\/([^:/@]+):(.*)$/s;
/** The same in a glob or regex: an owner/repository part without wildcards or regex syntax. */
const LEGACY_SUB_PATTERN = /^repo:([A-Za-z0-9_.\\-]+)\/([A-Za-z0-9_.\\-]+):(.*)$/s;

/**
 * Lints a policy set that compiled (docs/policies/reference.md, "Lint"):
 * warnings about policies that load but trust more than they seem to, or
 * stop matching when GitHub moves a repository to its immutable subject
 * format. Each names the file, line and key path, the rule's id, and the safer
 * form in its hint. Allow policies only, except `legacy-sub-only`, which a
 * deny policy fails open on.
 *
 * Pure: `files` are the files `set` was compiled from; a file that is not in
 * the set is skipped. `policy validate` runs it; loading does not (lint never
 * refuses a policy set, and start-up and reload stay as fast as compiling).
 */
export function lintPolicies(files: readonly PolicyFile[], set: PolicySet, ctx: CompileContext): PolicyIssue[] {
  const byFile = new Map([...set.byName.values()].map((policy) => [policy.file, policy]));
  const policies: LintedPolicy[] = [];
  for (const file of files) {
    const policy = byFile.get(file.path);
    const linted = policy && readPolicy(file, policy, ctx);
    if (linted) policies.push(linted);
  }
  const warnings: PolicyIssue[] = [];
  const warn = (p: LintedPolicy, rule: LintRule, at: KeyPath, message: string, hint: string): void => {
    warnings.push({ file: p.policy.file, line: p.doc.lineOf(at), keyPath: formatKeyPath(at), message, hint, rule });
  };
  const guarded = guardedEvents(policies);
  const siblings = exactValueIndex(policies);
  for (const p of policies) {
    checkLegacySub(p, warn);
    if (p.policy.effect !== 'allow') continue;
    checkNamesWithoutIds(p, warn);
    checkPatterns(p, warn);
    checkOverlaps(p, siblings, warn);
    checkPrivilegedTriggers(p, guarded.get(p.policy.issuer), warn);
  }
  // File order, then top to bottom, as compile issues come out.
  const order = new Map(files.map((f, i) => [f.path, i]));
  return warnings.sort((a, b) => (order.get(a.file) ?? 0) - (order.get(b.file) ?? 0) || (a.line ?? 0) - (b.line ?? 0));
}

type Warn = (p: LintedPolicy, rule: LintRule, at: KeyPath, message: string, hint: string) => void;

function readPolicy(file: PolicyFile, policy: CompiledPolicy, ctx: CompileContext): LintedPolicy | undefined {
  // The set compiled from these files, so parsing reports nothing new.
  const parsed = parsePolicyYaml(file, []);
  const root = parsed?.doc.value;
  if (parsed === undefined || !isPlainObject(root)) return undefined;
  const conditions: LintCondition[] = [];
  const exact = new Map<string, Set<string>>();
  const claims = isPlainObject(root.claims) ? root.claims : {};
  for (const [key, raw] of Object.entries(claims)) {
    const read = readCondition(key, raw, () => undefined);
    if (read === undefined) continue;
    const segments = parseClaimPath(key);
    const claim = segments.length === 1 ? segments[0] : undefined;
    conditions.push({ key, claim, spec: read.spec, at: read.at });
    const forms = exactForms(read.spec);
    if (claim !== undefined && forms !== undefined) exact.set(claim, new Set(forms));
  }
  const cel = has(root, 'condition') && typeof root.condition === 'string' ? root.condition : undefined;
  return { policy, kind: ctx.issuers.get(policy.issuer)?.kind, doc: parsed.doc, conditions, exact, cel };
}

/** The string forms an equality or `in` condition accepts, as claims compare (docs/policies/reference.md). */
function exactForms(spec: ConditionSpec): string[] | undefined {
  if (spec.operator === 'equals') return [toStringForm(spec.value) ?? ''];
  if (spec.operator === 'in') return spec.values.map((v) => toStringForm(v) ?? '');
  return undefined;
}

/** `name-without-id`: an account pinned by name, without its immutable id. */
function checkNamesWithoutIds(p: LintedPolicy, warn: Warn): void {
  if (p.kind === undefined) return;
  const pairs = NAME_IDS[p.kind];
  for (const c of p.conditions) {
    const idClaim = c.claim === undefined ? undefined : pairs.get(c.claim);
    if (idClaim === undefined || c.spec.operator === 'exists' || p.exact.has(idClaim)) continue;
    warn(
      p,
      'name-without-id',
      c.at,
      `${c.claim} is pinned by name without ${idClaim}: a name is freed when it is renamed or deleted, and whoever registers it next gets tokens this policy accepts`,
      `add ${idClaim}: "<id>" under claims:; an id never changes, and the name kept beside it makes a rename fail closed`,
    );
  }
}

/**
 * `legacy-sub-only`: a GitHub `sub` condition that matches only the subject
 * format naming the owner and repository, not the immutable one with their
 * ids (`repo:OWNER@OWNER_ID/REPO@REPO_ID:...`) that repositories get when
 * created after the change or opted in: an allow policy stops matching, a
 * deny policy stops refusing.
 */
function checkLegacySub(p: LintedPolicy, warn: Warn): void {
  if (p.kind !== 'github') return;
  for (const c of p.conditions) {
    if (c.claim !== 'sub') continue;
    const legacy = legacySubject(c.spec);
    if (legacy === undefined) continue;
    const id = (claim: string): string => {
      const forms = p.exact.get(claim);
      return forms?.size === 1 ? escapeRe2([...forms][0]!) : '[0-9]+';
    };
    const both = `repo:${legacy.owner}(@${id('repository_owner_id')})?/${legacy.repository}(@${id('repository_id')})?:${legacy.rest}`;
    warn(
      p,
      'legacy-sub-only',
      c.at,
      `sub matches only GitHub's subject format repo:OWNER/REPO:..., not the immutable repo:OWNER@OWNER_ID/REPO@REPO_ID:... that new and opted-in repositories get: ${p.policy.effect === 'deny' ? 'this deny policy stops refusing' : 'this policy stops accepting'} their tokens`,
      `match both formats: { regex: ${JSON.stringify(both)} }`,
    );
  }
}

/** The owner, repository and rest of a legacy-only `sub` condition, as regex parts; undefined when it is not one. */
function legacySubject(spec: ConditionSpec): { owner: string; repository: string; rest: string } | undefined {
  const fromValue = (value: string) => {
    const m = LEGACY_SUB.exec(value);
    return m && { owner: escapeRe2(m[1]!), repository: escapeRe2(m[2]!), rest: escapeRe2(m[3]!) };
  };
  switch (spec.operator) {
    case 'equals':
    case 'in': {
      const values = (spec.operator === 'equals' ? [spec.value] : spec.values).map(String);
      // A list that holds an id-format subject already covers it (or means not to).
      if (values.some((v) => v.includes('@'))) return undefined;
      for (const value of values) {
        const parts = fromValue(value);
        if (parts) return parts;
      }
      return undefined;
    }
    case 'glob': {
      const m = spec.pattern.includes('@') ? null : LEGACY_SUB_PATTERN.exec(spec.pattern);
      return m ? { owner: escapeRe2(m[1]!), repository: escapeRe2(m[2]!), rest: globToRe2(m[3]!) } : undefined;
    }
    case 'regex': {
      const m = spec.pattern.includes('@') ? null : LEGACY_SUB_PATTERN.exec(spec.pattern);
      return m ? { owner: m[1]!, repository: m[2]!, rest: m[3]! } : undefined;
    }
    case 'exists':
      return undefined;
  }
}

/** `trailing-wildcard`, `double-star-ref` and `unanchored-regex`: patterns that match more than they seem to. */
function checkPatterns(p: LintedPolicy, warn: Warn): void {
  for (const c of p.conditions) {
    const name = c.claim ?? c.key;
    if (c.spec.operator === 'glob') {
      const { pattern } = c.spec;
      if (NAME_CLAIM.test(name) && pattern.endsWith('*')) {
        const prefix = pattern.replace(/\*+$/, '');
        const names = `{ in: [${JSON.stringify(`${prefix}NAME`)}, ...] }`;
        const idClaim = p.kind === undefined || c.claim === undefined ? undefined : NAME_IDS[p.kind].get(c.claim);
        warn(
          p,
          'trailing-wildcard',
          c.at,
          `glob '${echo(pattern)}' on ${c.key} matches every name that starts with '${echo(prefix)}', including names registered later`,
          idClaim === undefined ? `list the exact names: ${names}` : `pin the ones meant by id: ${idClaim}: ["<id>", ...], or list their names: ${names}`,
        );
      }
      if (REF_CLAIM.test(name) && pattern.includes('**')) {
        warn(
          p,
          'double-star-ref',
          c.at,
          `'**' in glob '${echo(pattern)}' on ${c.key} matches any depth of '/'-separated names: any branch or tag that someone who can push names below it`,
          `one level only: { glob: ${JSON.stringify(pattern.replace(/\*{2,}/g, '*'))} }, or list the refs: { in: [...] }`,
        );
      }
    } else if (c.spec.operator === 'regex') {
      const { pattern } = c.spec;
      const narrowed = narrowDotStars(pattern);
      if (narrowed !== pattern) {
        warn(
          p,
          'unanchored-regex',
          c.at,
          `regex '${echo(pattern)}' on ${c.key} has '.*' or '.+', which matches any run of characters, '/' and ':' included: the regex is anchored, but that part is not`,
          `match only what may be there: { regex: ${JSON.stringify(narrowed)} } stays within one '/'-separated part, or list the alternatives (a|b)`,
        );
      }
    }
  }
}

/**
 * The regex with each `.*` and `.+` outside a bracket class (and not
 * escaped) narrowed to one `/`-separated part; the same string when it has none.
 */
function narrowDotStars(pattern: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '\\') {
      out += pattern.slice(i, i + 2);
      i++;
    } else if (inClass) {
      out += ch;
      if (ch === ']') inClass = false;
    } else if (ch === '[') {
      // `[]...]` and `[^]...]`: a `]` right after the opening is literal.
      const open = pattern.slice(i).match(/^\[\^?\]?/)![0];
      out += open;
      i += open.length - 1;
      inClass = true;
    } else if (ch === '.' && (pattern[i + 1] === '*' || pattern[i + 1] === '+')) {
      out += `[^/]${pattern[i + 1]}`;
      i++;
    } else {
      out += ch;
    }
  }
  return out;
}

/** The allow policies that pin one claim to one value, and the same split by another claim they pin, built when first needed. */
interface ValueEntry {
  readonly policies: LintedPolicy[];
  readonly byClaim: Map<string, { byForm: Map<string, LintedPolicy[]>; unpinned: LintedPolicy[] }>;
}

/** Allow policies' equality and `in` values, by issuer and claim, then by value; and which of them each pattern matches. */
interface ExactValueIndex {
  readonly byClaim: Map<string, Map<string, ValueEntry>>;
  /** The values of a bucket a glob or regex matches, by bucket and pattern: policy sets repeat patterns. */
  readonly matched: Map<string, readonly string[]>;
}

function exactValueIndex(policies: readonly LintedPolicy[]): ExactValueIndex {
  const byClaim = new Map<string, Map<string, ValueEntry>>();
  for (const p of policies) {
    if (p.policy.effect !== 'allow') continue;
    for (const [claim, forms] of p.exact) {
      const bucket = `${p.policy.issuer}\u0000${claim}`;
      let byValue = byClaim.get(bucket);
      if (byValue === undefined) {
        byValue = new Map<string, ValueEntry>();
        byClaim.set(bucket, byValue);
      }
      for (const form of forms) {
        const entry = byValue.get(form);
        if (entry === undefined) byValue.set(form, { policies: [p], byClaim: new Map() });
        else entry.policies.push(p);
      }
    }
  }
  return { byClaim, matched: new Map() };
}

/**
 * `overlapping-sibling`: a glob or regex that also matches a value another
 * allow policy of the issuer pins, where nothing else keeps the two apart
 * (no claim both pin to disjoint values): a token meant for the other policy
 * is accepted by this one too.
 */
function checkOverlaps(p: LintedPolicy, index: ExactValueIndex, warn: Warn): void {
  for (const c of p.conditions) {
    if (c.claim === undefined || (c.spec.operator !== 'glob' && c.spec.operator !== 'regex')) continue;
    const bucket = `${p.policy.issuer}\u0000${c.claim}`;
    const byValue = index.byClaim.get(bucket);
    if (byValue === undefined) continue;
    const key = `${bucket}\u0000${c.spec.operator}\u0000${c.spec.pattern}`;
    let matched = index.matched.get(key);
    if (matched === undefined) {
      const matcher = compileMatcher('value', c.spec);
      matched = [...byValue.keys()].filter((value) => matcher({ value }).matched);
      index.matched.set(key, matched);
    }
    for (const value of matched) {
      const other = overlapping(p, byValue.get(value)!);
      if (other === undefined) continue;
      const where = `${path.basename(other.policy.file)}:${other.doc.lineOf(['claims', c.key]) ?? other.doc.lineOf(['claims']) ?? 1}`;
      warn(
        p,
        'overlapping-sibling',
        c.at,
        `${c.spec.operator} '${echo(c.spec.pattern)}' on ${c.key} also matches '${echo(value)}', which policy '${other.policy.name}' (${where}) pins: a token meant for that policy is accepted by this one too`,
        `narrow the ${c.spec.operator} so that it leaves out '${echo(value)}', or list this policy's own values: { in: [...] }`,
      );
      break;
    }
  }
}

/**
 * The first policy of `entry`, other than `p`, that a token could match
 * together with `p`. Only the policies that could pass `p`'s most selective
 * exact claim are looked at (those that pin it to one of `p`'s values, or do
 * not pin it), so that a directory of many policies pinning the same value
 * (`ref: refs/heads/main`, each for its own repository) costs about one
 * look per policy instead of one per pair.
 */
function overlapping(p: LintedPolicy, entry: ValueEntry): LintedPolicy | undefined {
  let candidates: LintedPolicy[][] = [entry.policies];
  let fewest = entry.policies.length;
  for (const [claim, forms] of p.exact) {
    const split = splitBy(entry, claim);
    const lists = [...[...forms].map((form) => split.byForm.get(form) ?? []), split.unpinned];
    const count = lists.reduce((n, list) => n + list.length, 0);
    if (count < fewest) [candidates, fewest] = [lists, count];
  }
  for (const list of candidates) {
    const other = list.find((o) => o !== p && !disjoint(p, o));
    if (other !== undefined) return other;
  }
  return undefined;
}

function splitBy(entry: ValueEntry, claim: string): { byForm: Map<string, LintedPolicy[]>; unpinned: LintedPolicy[] } {
  let split = entry.byClaim.get(claim);
  if (split !== undefined) return split;
  split = { byForm: new Map(), unpinned: [] };
  for (const o of entry.policies) {
    const forms = o.exact.get(claim);
    if (forms === undefined) split.unpinned.push(o);
    else {
      for (const form of forms) {
        const list = split.byForm.get(form);
        if (list === undefined) split.byForm.set(form, [o]);
        else list.push(o);
      }
    }
  }
  entry.byClaim.set(claim, split);
  return split;
}

/** True when some claim is pinned by both policies to values none of which they share, so no token matches both. */
function disjoint(a: LintedPolicy, b: LintedPolicy): boolean {
  for (const [claim, forms] of a.exact) {
    const others = b.exact.get(claim);
    if (others !== undefined && !sharesOne(forms, others)) return true;
  }
  return false;
}

function sharesOne(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  for (const form of a) if (b.has(form)) return true;
  return false;
}

/**
 * The privileged events each issuer's deny policies refuse outright: an
 * enforced deny policy (one in audit mode refuses nothing) without an
 * audience whose only claim condition is an equality or
 * `in` on `event_name` (a CEL exemption beside it, as
 * policies/deny-github-workflow-run.yaml documents, keeps it a guardrail).
 */
function guardedEvents(policies: readonly LintedPolicy[]): Map<string, Set<string>> {
  const guarded = new Map<string, Set<string>>();
  for (const p of policies) {
    const [only] = p.conditions;
    if (p.policy.effect !== 'deny' || p.policy.mode !== 'enforce' || p.policy.audience !== undefined || p.conditions.length !== 1 || only?.claim !== 'event_name') continue;
    const events = guarded.get(p.policy.issuer) ?? new Set<string>();
    for (const form of exactForms(only.spec) ?? []) events.add(form);
    guarded.set(p.policy.issuer, events);
  }
  return guarded;
}

/**
 * `privileged-triggers`: a GitHub allow policy that pins neither the event
 * nor the workflow, while the directory has no deny policy for some
 * privileged event (docs/policies/guardrails.md).
 */
function checkPrivilegedTriggers(p: LintedPolicy, guarded: ReadonlySet<string> | undefined, warn: Warn): void {
  if (p.kind !== 'github') return;
  const pinned = (claim: string) => p.conditions.some((c) => c.claim === claim) || (p.cel !== undefined && new RegExp(`\\b${claim}\\b`).test(p.cel));
  if (pinned('event_name') || pinned('job_workflow_ref')) return;
  const open = PRIVILEGED_EVENTS.filter((event) => !guarded?.has(event));
  if (open.length === 0) return;
  warn(
    p,
    'privileged-triggers',
    p.conditions.length > 0 ? ['claims'] : ['issuer'],
    `policy '${p.policy.name}' accepts tokens of any event, ${open.join(' and ')} included: those runs carry the base repository's identity but can act on code or artifacts from a fork's pull request`,
    `add event_name: [push, workflow_dispatch] under claims:, pin job_workflow_ref to a reviewed workflow, or keep the deny polic${open.length === 1 ? 'y' : 'ies'} ${open.map((e) => GUARDRAIL_FILES[e]).join(' and ')} in the directory (docs/policies/guardrails.md)`,
  );
}
