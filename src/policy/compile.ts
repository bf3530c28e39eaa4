import { createHash } from 'node:crypto';
import path from 'node:path';
import { compileCondition, type CompiledCondition } from './cel.js';
import { ClaimPathError, parseClaimPath } from '../claims/claim-path.js';
import { buildDenyIndex, exactCondition, type ExactCondition } from './deny-index.js';
import { compileMatcher, globToRe2, MatcherError, type ClaimMatcher, type ConditionSpec, type PolicyScalar } from './matchers.js';
import type { KeyPath } from '../yaml/document.js';
import { parsePolicyYaml } from './parse.js';
import { grantKeyProviders, readGrant } from './grants.js';
import { checkKnownKeys, describeValue, echo, has, isInexactNumber, suggest, type Json, type KeyHints, type Report } from '../yaml/fields.js';
import type {
  CompileContext,
  CompiledPolicy,
  CompileResult,
  ConditionResult,
  Effect,
  PolicyFile,
  PolicyMode,
  PolicyIssue,
  PolicySet,
} from './types.js';
import type { YamlDocument } from '../yaml/document.js';
import { isPlainObject } from '../values.js';

/** docs/policies/reference.md: policy names are what callers send and what metrics label, so keep them plain. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const POLICY_KEYS = ['name', 'description', 'issuer', 'effect', 'mode', 'audience', 'claims', 'condition', 'allow_token_reuse', 'allow_any_tenant', 'grant'] as const;
const CONDITION_OPERATORS = ['in', 'glob', 'regex', 'exists'] as const;
/** Other words for top-level keys: JWT claim names and the language's name. */
const POLICY_KEY_ALIASES: ReadonlyMap<string, string> = new Map([
  ['aud', 'audience'],
  ['iss', 'issuer'],
  ['cel', 'condition'],
  ['expr', 'condition'],
  ['expression', 'condition'],
]);
/** Claims CI tokens commonly carry; written at the top level they were meant under `claims:`. */
const COMMON_CLAIMS = [
  'sub', 'ref', 'ref_type', 'ref_protected', 'sha', 'repository', 'repository_id', 'repository_owner', 'repository_owner_id',
  'repository_visibility', 'environment', 'event_name', 'actor', 'actor_id', 'workflow', 'workflow_ref', 'job_workflow_ref',
  'run_attempt', 'runner_environment', 'head_ref', 'base_ref', 'project_path', 'project_id', 'namespace_path', 'namespace_id',
  'pipeline_source', 'user_login', 'organization_id', 'pipeline_slug', 'build_branch', 'vcs_origin', 'jti',
] as const;

let topLevelHintsCache: KeyHints | undefined;
/** Unknown top-level keys: grant keys and claim names say where they belong. */
function topLevelHints(): KeyHints {
  if (topLevelHintsCache !== undefined) return topLevelHintsCache;
  const elsewhere = new Map<string, string>();
  for (const claim of COMMON_CLAIMS) elsewhere.set(claim, 'under `claims:`, where each claim condition goes');
  for (const [key, providers] of grantKeyProviders()) {
    if ((POLICY_KEYS as readonly string[]).includes(key)) continue;
    elsewhere.set(key, `under \`grant:\`${providers.length === 1 ? ` (provider ${providers.join('')})` : ''}`);
  }
  topLevelHintsCache = { aliases: POLICY_KEY_ALIASES, elsewhere };
  return topLevelHintsCache;
}


/**
 * Compiles a policy directory into an immutable `PolicySet`
 * (docs/policies/reference.md), or returns every issue found in every file, each with
 * file, line and key path. Start-up, reload and the `policy` CLI commands all
 * call this, so a policy that validates is exactly a policy that loads.
 *
 * Pure apart from hashing: files are read by `loadPolicyDir`.
 */
export function compilePolicies(files: readonly PolicyFile[], ctx: CompileContext): CompileResult {
  const issues: PolicyIssue[] = [];
  const warnings: PolicyIssue[] = [];
  const policies: CompiledPolicy[] = [];
  const exactConditions = new Map<CompiledPolicy, readonly ExactCondition[]>();
  const firstFileByName = new Map<string, string>();
  for (const file of files) {
    const compiled = compileFile(file, ctx);
    const fileIssues = compiled.issues;
    if (compiled.name !== undefined) {
      const first = firstFileByName.get(compiled.name.value);
      if (first === undefined) {
        firstFileByName.set(compiled.name.value, file.path);
      } else {
        fileIssues.push({
          file: file.path,
          line: compiled.name.line,
          keyPath: 'name',
          message: `policy name '${compiled.name.value}' is already used by ${first}`,
          hint: 'names must be unique across the policy directory; rename one of the two',
        });
      }
    }
    // Stable sort: file order first, then top to bottom within a file, as an editor shows them.
    issues.push(...fileIssues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity)));
    if (compiled.policy) {
      policies.push(compiled.policy);
      exactConditions.set(compiled.policy, compiled.exact ?? []);
      warnings.push(...(compiled.warnings ?? []));
    }
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, set: buildPolicySet(policies, exactConditions), warnings };
}

interface FileOutcome {
  issues: PolicyIssue[];
  /** The policy's name when it is valid, even if the rest of the file is not, so duplicates are still caught. */
  name?: { value: string; line: number | undefined };
  policy?: CompiledPolicy;
  /** The policy's equality and `in` conditions, which the deny index files it under. */
  exact?: readonly ExactCondition[];
  /** Reported on every load of a set holding the policy (`CompileResult.warnings`). */
  warnings?: PolicyIssue[];
}

function compileFile(file: PolicyFile, ctx: CompileContext): FileOutcome {
  const issues: PolicyIssue[] = [];
  const parsed = parsePolicyYaml(file, issues);
  if (parsed === undefined) return { issues };
  const { doc, report } = parsed;
  const root = doc.value;
  if (!isPlainObject(root)) {
    report([], root === null || root === undefined ? 'the file is empty: a policy is a YAML map' : 'a policy must be a YAML map of keys');
    return { issues };
  }
  checkKnownKeys(root, POLICY_KEYS, [], report, topLevelHints());

  const name = readName(root, file, doc, report, issues);
  const description = readOptional(root, 'description', 'string', report);
  const effect = readEffect(root, report);
  const mode = readMode(root, effect, report);
  const issuer = readIssuer(root, ctx, report);
  const audience = readAudience(root, issuer, ctx, report);
  const allowTokenReuse = readOptional(root, 'allow_token_reuse', 'boolean', report);
  if (allowTokenReuse !== undefined && effect === 'deny') {
    report(['allow_token_reuse'], 'allow_token_reuse applies only to allow policies', 'remove it from this deny policy');
  }
  const allowAnyTenant = readAllowAnyTenant(root, report);
  const exact: ExactCondition[] = [];
  const conditions = readClaims(root, report, exact);
  const condition = readCelCondition(root, file, doc, report, issues);
  const binding = conditions === undefined ? undefined : checkTenantBinding({ root, effect, issuer, ctx, exact, allowAnyTenant, report });
  // A CEL condition counts only if it reads `claims`: `condition: "true"` would trust every token too.
  const restricts = (conditions !== undefined && conditions.length > 0) || condition === null || condition?.readsClaims === true;
  // An unpinned tenant was just reported at the same line, with the fix that also restricts.
  if (effect === 'allow' && issuer !== undefined && conditions !== undefined && !restricts && binding !== 'refused') {
    report(
      ['claims'],
      'an allow policy needs at least one claim condition',
      `without one it would trust every token of issuer '${issuer}'; pin the owner and repository ids, the ref, and so on (a \`condition\` counts only if it reads \`claims\`)`,
    );
  }
  const grant = readGrant(root, effect, ctx, report, POLICY_KEYS);

  const outcome: FileOutcome = { issues };
  if (name !== undefined) outcome.name = name;
  if (issues.length > 0 || name === undefined || effect === undefined || mode === undefined || issuer === undefined || conditions === undefined || condition === null) return outcome;
  if (effect === 'allow' && grant === undefined) return outcome;

  outcome.policy = makePolicy({
    name: name.value,
    description,
    file: file.path,
    sha256: createHash('sha256')
      .update(file.bytes ?? Buffer.from(file.text, 'utf8'))
      .digest('hex'),
    issuer,
    effect,
    mode,
    audience,
    allowTokenReuse: allowTokenReuse ?? false,
    conditions,
    condition,
    grant: effect === 'allow' ? grant : undefined,
  });
  outcome.exact = exact;
  if (binding === 'every tenant' && allowAnyTenant !== undefined) {
    outcome.warnings = [
      {
        file: file.path,
        line: doc.lineOf(['allow_any_tenant']),
        keyPath: 'allow_any_tenant',
        message: `policy '${name.value}' trusts every tenant of issuer '${issuer}' (allow_any_tenant: ${JSON.stringify(echo(allowAnyTenant))})`,
        hint: `pin one of ${(ctx.issuers.get(issuer)?.tenantClaims ?? []).join(', ')} under claims: and remove allow_any_tenant`,
      },
    ];
  }
  return outcome;
}

/**
 * `allow_any_tenant`: the reason a policy may trust every tenant of its
 * issuer (docs/policies/reference.md, "Tenant binding"). A bare `true` is
 * refused so that the file says why to whoever reviews it.
 */
function readAllowAnyTenant(root: Json, report: Report): string | undefined {
  if (!has(root, 'allow_any_tenant')) return undefined;
  const value = root.allow_any_tenant;
  if (typeof value === 'string' && value.trim() !== '') return value;
  report(
    ['allow_any_tenant'],
    `allow_any_tenant takes the reason why every tenant of the issuer may use this policy, not ${describeValue(value)}`,
    'e.g. allow_any_tenant: "our GitHub Enterprise Server hosts only our own organisations"',
  );
  return undefined;
}

/** `pinned`: an exact tenant condition; `every tenant`: none, by `allow_any_tenant`; `refused`: none, reported; `not required`: a deny policy, or an issuer without tenant claims. */
type TenantBinding = 'pinned' | 'every tenant' | 'refused' | 'not required';

/**
 * Tenant binding (docs/policies/reference.md, "Tenant binding"): on an issuer
 * that many tenants share, an allow policy must pin one of the issuer's tenant
 * claims to exact values, else any tenant's token that meets the rest of it
 * is trusted. Only an equality or `in` condition pins: a glob, regex or
 * `exists` matches values another tenant can have, and a CEL condition cannot
 * be shown at load to pin anything.
 */
function checkTenantBinding(p: {
  root: Json;
  effect: Effect | undefined;
  issuer: string | undefined;
  ctx: CompileContext;
  exact: readonly ExactCondition[];
  allowAnyTenant: string | undefined;
  report: Report;
}): TenantBinding | undefined {
  const { root, effect, issuer, ctx, exact, allowAnyTenant, report } = p;
  if (effect === undefined || issuer === undefined) return undefined;
  const tenantClaims = ctx.issuers.get(issuer)?.tenantClaims ?? [];
  // A JSON Pointer to a top-level claim (`/repository_id`) pins it as well as its plain name.
  const pinned = exact.find((c) => c.path.length === 1 && tenantClaims.includes(c.path[0]!));
  const needless = (why: string): undefined => {
    report(['allow_any_tenant'], `allow_any_tenant has no effect: ${why}`, 'remove it, so that no warning says this policy trusts every tenant');
    return undefined;
  };
  if (effect === 'deny') return allowAnyTenant === undefined ? 'not required' : needless('it applies only to allow policies');
  if (tenantClaims.length === 0) return allowAnyTenant === undefined ? 'not required' : needless(`issuer '${issuer}' has no tenant claims`);
  if (pinned !== undefined) return allowAnyTenant === undefined ? 'pinned' : needless(`the policy pins the tenant claim '${echo(pinned.key)}'`);
  if (allowAnyTenant !== undefined) return 'every tenant';
  // An allow_any_tenant without a usable reason was reported at its own line: that is the one thing to fix.
  if (has(root, 'allow_any_tenant')) return undefined;
  const [first, ...others] = tenantClaims as [string, ...string[]];
  const example = /[_-]id$/.test(first) ? '123456' : '<exact value>';
  report(
    isPlainObject(root.claims) ? ['claims'] : ['issuer'],
    `an allow policy of issuer '${issuer}' must pin a tenant: one of ${tenantClaims.join(', ')} to exact values (a glob, regex, exists or condition does not pin one)`,
    `pin a tenant: add "${first}: ${example}"${others.length > 0 ? ` (or ${others.join(', ')})` : ''} under claims:, or, if every tenant of '${issuer}' may use it, say why in allow_any_tenant: "..."`,
  );
  return 'refused';
}

function makePolicy(p: Omit<CompiledPolicy, 'evaluate'> & { conditions: readonly ClaimMatcher[]; condition: CompiledCondition | undefined }): CompiledPolicy {
  const { conditions, condition, ...fields } = p;
  const audience = fields.audience;
  return Object.freeze({
    ...fields,
    evaluate(claims: Readonly<Record<string, unknown>>, audiences: readonly string[]): ConditionResult[] {
      const results: ConditionResult[] = [];
      // Audience narrowing first: it is what explain should show before any claim.
      if (audience !== undefined) {
        results.push(Object.freeze({ key: 'aud', operator: 'audience', expected: audience, actual: Object.freeze([...audiences]), matched: audiences.includes(audience) }));
      }
      for (const matcher of conditions) results.push(matcher(claims));
      // The CEL condition last: it may combine the claims above, and its result is the least plain to read.
      if (condition !== undefined) {
        const { matched, actual, error } = condition.evaluate(claims);
        // trimEnd: a `condition: |` block ends with a newline that says nothing.
        results.push(Object.freeze({ key: 'condition', operator: 'cel', expected: condition.source.trimEnd(), actual, matched, ...(error === undefined ? {} : { error }) }));
      }
      return results;
    },
  });
}

function readName(root: Json, file: PolicyFile, doc: YamlDocument, report: Report, issues: PolicyIssue[]): FileOutcome['name'] {
  if (!has(root, 'name')) {
    const fallback = path.basename(file.path).replace(/\.ya?ml$/, '');
    if (NAME_PATTERN.test(fallback)) return { value: fallback, line: undefined };
    issues.push({ file: file.path, line: undefined, keyPath: 'name', message: `the file name gives the invalid policy name '${echo(fallback)}'`, hint: 'set `name:` explicitly' });
    return undefined;
  }
  const value = root.name;
  if (typeof value !== 'string') {
    report(['name'], 'name must be a string', 'quote it');
    return undefined;
  }
  if (!NAME_PATTERN.test(value)) {
    report(['name'], `invalid policy name '${echo(value)}'`, 'use 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit');
    return undefined;
  }
  return { value, line: doc.lineOf(['name']) };
}

function readEffect(root: Json, report: Report): Effect | undefined {
  if (!has(root, 'effect')) return 'allow';
  const value = root.effect;
  if (value === 'allow' || value === 'deny') return value;
  report(['effect'], `effect must be allow or deny, not ${describeValue(value)}`, typeof value === 'string' ? suggest(value, ['allow', 'deny']) : undefined);
  return undefined;
}

/**
 * `mode` (docs/policies/reference.md): a deny policy in `audit` mode records
 * its matches instead of denying, so a guardrail can be rolled out and watched
 * before it is enforced. An allow policy has nothing to roll out that way: an
 * allow policy that did not allow would just be a policy nobody can use.
 */
function readMode(root: Json, effect: Effect | undefined, report: Report): PolicyMode | undefined {
  if (!has(root, 'mode')) return 'enforce';
  const value = root.mode;
  if (value !== 'enforce' && value !== 'audit') {
    report(['mode'], `mode must be enforce or audit, not ${describeValue(value)}`, typeof value === 'string' ? suggest(value, ['enforce', 'audit']) : undefined);
    return undefined;
  }
  if (value === 'audit' && effect === 'allow') {
    report(['mode'], 'mode: audit applies only to deny policies', 'remove it: an allow policy always enforces; to try a guardrail first, write it as an effect: deny policy with mode: audit');
    return undefined;
  }
  return value;
}

function readIssuer(root: Json, ctx: CompileContext, report: Report): string | undefined {
  const configured = [...ctx.issuers.keys()];
  if (!has(root, 'issuer')) {
    report(['issuer'], 'issuer is required', `name one of the configured issuers: ${configured.join(', ') || '(none)'}`);
    return undefined;
  }
  const value = root.issuer;
  if (typeof value !== 'string') {
    report(['issuer'], 'issuer must be a string naming a configured issuer');
    return undefined;
  }
  if (!ctx.issuers.has(value)) {
    report(['issuer'], `issuer '${echo(value)}' is not configured`, suggest(value, configured) ?? `configured issuers: ${configured.join(', ') || '(none)'}`);
    return undefined;
  }
  return value;
}

function readAudience(root: Json, issuer: string | undefined, ctx: CompileContext, report: Report): string | undefined {
  const value = readOptional(root, 'audience', 'string', report);
  if (value === undefined || issuer === undefined) return value;
  const accepted = ctx.issuers.get(issuer)?.audiences ?? [];
  if (!accepted.includes(value)) {
    // A narrowing to an audience the verifier never accepts would make the policy dead; say so now.
    report(['audience'], `audience '${echo(value)}' is not one of issuer '${issuer}''s configured audiences`, `accepted: ${accepted.join(', ')}`);
  }
  return value;
}

/** A YAML key line such as `condition: |-  # comment`: what follows the colon. */
const CONDITION_KEY_LINE = /^\s*(?:condition|"condition"|'condition')\s*:(.*)$/;

/**
 * The CEL `condition`, compiled: undefined when absent, null when invalid
 * (reported). A compile error is placed at its own line in the file when the
 * expression is a single line after the key or a literal block (`|`), else at
 * the key; the message always gives the position inside the expression.
 */
function readCelCondition(root: Json, file: PolicyFile, doc: YamlDocument, report: Report, issues: PolicyIssue[]): CompiledCondition | null | undefined {
  if (!has(root, 'condition')) return undefined;
  const source = root.condition;
  if (typeof source !== 'string') {
    report(['condition'], `condition must be a CEL expression string, not ${describeValue(source)}`, 'quote it, or write it as a block: `condition: |`');
    return null;
  }
  const compiled = compileCondition(source);
  if (compiled.ok) return compiled.condition;
  const { message, line, column } = compiled.error;
  const keyLine = doc.lineOf(['condition']);
  let fileLine = keyLine;
  if (keyLine !== undefined) {
    const afterKey = CONDITION_KEY_LINE.exec(file.text.split(/\r?\n/)[keyLine - 1] ?? '')?.[1]?.trim() ?? '';
    // In a literal block, expression line n is n lines below the `condition: |` line; a one-line value sits on the key line.
    if (afterKey.startsWith('|')) fileLine = keyLine + line;
    else if (afterKey !== '' && !source.includes('\n')) fileLine = keyLine;
  }
  issues.push({
    file: file.path,
    line: fileLine,
    keyPath: 'condition',
    message: `invalid CEL condition at ${line}:${column}: ${message}`,
    hint: 'the condition is a CEL expression over `claims`, e.g. claims.run_attempt == "1"; see docs/policies/troubleshooting.md',
  });
  return null;
}

/** The claim conditions, in file order; undefined when any is invalid. Equality and `in` conditions are also added to `exact`. */
function readClaims(root: Json, report: Report, exact: ExactCondition[]): ClaimMatcher[] | undefined {
  if (!has(root, 'claims')) return [];
  const claims = root.claims;
  if (!isPlainObject(claims)) {
    report(['claims'], 'claims must be a map of claim name to condition');
    return undefined;
  }
  const matchers: ClaimMatcher[] = [];
  let valid = true;
  for (const [key, raw] of Object.entries(claims)) {
    const spec = readCondition(key, raw, report);
    if (spec === undefined) {
      valid = false;
      continue;
    }
    try {
      matchers.push(compileMatcher(key, spec.spec));
      const equality = exactCondition(key, spec.spec);
      if (equality !== undefined) exact.push(equality);
    } catch (err) {
      if (!(err instanceof MatcherError)) throw err;
      report(spec.at, err.message, err.hint);
      valid = false;
    }
  }
  return valid ? matchers : undefined;
}

/**
 * Checks one condition's shape; `at` is where a compile error (e.g. a bad
 * regex) belongs. The lint (lint.ts) reads conditions through it too, with a
 * `report` that drops what compiling already reported.
 */
export function readCondition(key: string, raw: unknown, report: Report): { spec: ConditionSpec; at: KeyPath } | undefined {
  const at: KeyPath = ['claims', key];
  if (key.startsWith('/')) {
    try {
      parseClaimPath(key);
    } catch (err) {
      if (!(err instanceof ClaimPathError)) throw err;
      report(at, err.message);
      return undefined;
    }
  } else if (key === '') {
    report(at, 'a claim name cannot be empty');
    return undefined;
  }
  if (raw === null || raw === undefined) {
    report(at, 'a null condition matches nothing', 'use { exists: false } to require an absent claim, or give a value');
    return undefined;
  }
  if (Array.isArray(raw)) {
    const values = readScalarList(raw, at, report);
    if (values === undefined) return undefined;
    const wildcard = values.findIndex(looksLikePattern);
    if (wildcard >= 0) {
      reportWildcard([...at, wildcard], values[wildcard] as string, values, report, true);
      return undefined;
    }
    return { spec: { operator: 'in', values }, at };
  }
  if (!isPlainObject(raw)) {
    const value = readScalar(raw, at, report);
    if (value === undefined) return undefined;
    if (looksLikePattern(value)) {
      reportWildcard(at, value, [value], report, false);
      return undefined;
    }
    return { spec: { operator: 'equals', value }, at };
  }

  const operators = Object.keys(raw);
  let known = true;
  for (const op of operators) {
    if (!(CONDITION_OPERATORS as readonly string[]).includes(op)) {
      report([...at, op], `unknown condition operator '${echo(op)}'`, operatorHint(op, raw[op]));
      known = false;
    }
  }
  if (!known) return undefined;
  const [op] = operators;
  if (op === undefined || operators.length > 1) {
    report(at, `a condition map holds exactly one of ${CONDITION_OPERATORS.join(', ')}`, operators.length > 1 ? 'write separate policies, or use a regex' : undefined);
    return undefined;
  }
  const opAt: KeyPath = [...at, op];
  const value = raw[op];
  switch (op) {
    case 'in': {
      if (!Array.isArray(value)) {
        report(opAt, 'in must be a list of values');
        return undefined;
      }
      const values = readScalarList(value, opAt, report);
      return values && { spec: { operator: 'in', values }, at: opAt };
    }
    case 'glob':
    case 'regex':
      if (typeof value !== 'string') {
        report(opAt, `${op} must be a string pattern`, 'quote it');
        return undefined;
      }
      return { spec: { operator: op, pattern: value }, at: opAt };
    case 'exists':
      if (typeof value !== 'boolean') {
        report(opAt, 'exists must be true or false');
        return undefined;
      }
      return { spec: { operator: 'exists', exists: value }, at: opAt };
    default:
      return undefined;
  }
}

/**
 * A plain value (or bare list item) with `*` or `?`: docs/policies/reference.md says
 * plain values match exactly, so the author almost certainly meant a glob.
 * `{ in: [...] }` stays exact and is how to match a literal `*` or `?`.
 */
function looksLikePattern(value: PolicyScalar): value is string {
  return typeof value === 'string' && /[*?]/.test(value);
}

function reportWildcard(at: KeyPath, value: string, values: readonly PolicyScalar[], report: Report, inList: boolean): void {
  const quoted = (v: PolicyScalar): string => JSON.stringify(typeof v === 'string' ? echo(v) : v);
  const literally = `(to match ${inList ? 'them' : 'it'} literally, write { in: [${values.map(quoted).join(', ')}] })`;
  const what = inList ? 'a list value' : 'a plain value';
  const message = `'${echo(value)}' contains ${value.includes('*') ? "'*'" : "'?'"}, but ${what} is matched exactly, not as a pattern`;
  if (!inList || values.length === 1) {
    report(at, message, `${what} matches exactly; did you mean { glob: ${quoted(value)} }? ${literally}`);
    return;
  }
  // Several values, some of them globs: one regex says the same (globs translated, other values escaped).
  const alternatives = values.map((v) => globToRe2(String(v)));
  report(at, message, `list values match exactly; did you mean { regex: ${quoted(alternatives.join('|'))} }? ${literally}`);
}

/** Hint for an unknown condition operator: a near miss, or what to write instead of a common operator from other policy languages. */
function operatorHint(op: string, value: unknown): string {
  const lower = op.toLowerCase().replace(/-/g, '_');
  const shown = typeof value === 'string' ? echo(value) : undefined;
  const asGlob = (glob: string | undefined): string => (shown === undefined ? '{ glob: "..." }' : `{ glob: ${JSON.stringify(glob)} }`);
  if (['equals', 'equal', 'eq', 'is', 'exact', 'value'].includes(lower)) {
    return `a plain value matches exactly: write the value itself${shown === undefined ? '' : ` (${JSON.stringify(shown)})`} instead of a map`;
  }
  if (/^(not|ne|neq|not_?(in|equals?|glob|regex|matches)|none_of|exclude[sd]?)$/.test(lower)) {
    return 'there is no negated operator: write an effect: deny policy for the values to refuse, or a CEL `condition` with !';
  }
  if (['prefix', 'starts_with', 'startswith', 'begins_with'].includes(lower)) return `did you mean ${asGlob(shown && `${shown}*`)}?`;
  if (['suffix', 'ends_with', 'endswith'].includes(lower)) return `did you mean ${asGlob(shown && `*${shown}`)}?`;
  if (['pattern', 'regexp', 're', 'match', 'matches'].includes(lower)) return suggest(op, CONDITION_OPERATORS) ?? "did you mean 'regex' (or 'glob')?";
  if (['any', 'any_of', 'one_of', 'oneof', 'values', 'list', 'within'].includes(lower)) return "did you mean 'in'?";
  if (['present', 'defined', 'has', 'exist', 'required'].includes(lower)) return "did you mean 'exists'?";
  return suggest(op, CONDITION_OPERATORS) ?? `use one of ${CONDITION_OPERATORS.join(', ')}`;
}

function readScalarList(list: unknown[], at: KeyPath, report: Report): PolicyScalar[] | undefined {
  if (list.length === 0) {
    // An empty list matches nothing: in a deny policy that silently disables it.
    report(at, 'a list condition needs at least one value');
    return undefined;
  }
  const values: PolicyScalar[] = [];
  let valid = true;
  list.forEach((item, i) => {
    const value = readScalar(item, [...at, i], report);
    if (value === undefined) valid = false;
    else values.push(value);
  });
  return valid ? values : undefined;
}

/** A policy value: a string, or a number/boolean that compares by its string form. */
function readScalar(value: unknown, at: KeyPath, report: Report): PolicyScalar | undefined {
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    // Comparing an imprecise float would match the wrong ids.
    if (isInexactNumber(value)) {
      report(at, `the number ${String(value)} cannot be compared exactly`, 'quote it as a string');
      return undefined;
    }
    return value;
  }
  report(at, `expected a string, number or boolean, not ${describeValue(value)}`);
  return undefined;
}

function readOptional(root: Json, key: string, type: 'string', report: Report): string | undefined;
function readOptional(root: Json, key: string, type: 'boolean', report: Report): boolean | undefined;
function readOptional(root: Json, key: string, type: 'string' | 'boolean', report: Report): string | boolean | undefined {
  if (!has(root, key)) return undefined;
  const value = root[key];
  if (typeof value === type) return value as string | boolean;
  report([key], `${key} must be ${type === 'string' ? 'a string' : 'true or false'}, not ${describeValue(value)}`);
  return undefined;
}

function buildPolicySet(policies: readonly CompiledPolicy[], exactConditions: ReadonlyMap<CompiledPolicy, readonly ExactCondition[]>): PolicySet {
  const denies = new Map<string, CompiledPolicy[]>();
  for (const policy of policies) {
    if (policy.effect !== 'deny') continue;
    const list = denies.get(policy.issuer) ?? [];
    list.push(policy);
    denies.set(policy.issuer, list);
  }
  return Object.freeze({
    byName: readonlyMap(policies.map((p) => [p.name, p] as const)),
    denyByIssuer: readonlyMap([...denies].map(([issuer, list]) => [issuer, Object.freeze(list)] as const)),
    denyIndex: readonlyMap([...denies].map(([issuer, list]) => [issuer, buildDenyIndex(list.map((policy) => ({ policy, exact: exactConditions.get(policy) ?? [] })))] as const)),
    size: policies.length,
  });
}

/** `Object.freeze` does not stop `Map.prototype.set`; a view without mutators does. */
function readonlyMap<K, V>(entries: Iterable<readonly [K, V]>): ReadonlyMap<K, V> {
  const inner = new Map<K, V>(entries);
  const view: ReadonlyMap<K, V> = {
    get size() {
      return inner.size;
    },
    get: (key) => inner.get(key),
    has: (key) => inner.has(key),
    forEach: (callback, thisArg?: unknown) => inner.forEach((value, key) => callback.call(thisArg, value, key, view)),
    entries: () => inner.entries(),
    keys: () => inner.keys(),
    values: () => inner.values(),
    [Symbol.iterator]: () => inner[Symbol.iterator](),
  };
  return Object.freeze(view);
}


