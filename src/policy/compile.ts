import { createHash } from 'node:crypto';
import path from 'node:path';
import { ClaimPathError, parseClaimPath } from './claim-path.js';
import { compileMatcher, MatcherError, type ClaimMatcher, type ConditionSpec, type PolicyScalar } from './matchers.js';
import { parseYamlDocument, type KeyPath, type YamlDocument } from './parse.js';
import { readGrant } from './grants.js';
import { checkKnownKeys, describeValue, echo, has, isJsonObject, suggest, type Json, type Report } from './yaml-values.js';
import type {
  CompileContext,
  CompiledPolicy,
  CompileResult,
  ConditionResult,
  Effect,
  PolicyFile,
  PolicyIssue,
  PolicySet,
} from './types.js';

/** Contract section 3: policy names are what callers send and what metrics label, so keep them plain. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const POLICY_KEYS = ['name', 'description', 'issuer', 'effect', 'audience', 'claims', 'condition', 'allow_token_reuse', 'grant'] as const;
const CONDITION_OPERATORS = ['in', 'glob', 'regex', 'exists'] as const;


/**
 * Compiles a policy directory into an immutable `PolicySet` (contract section
 * 3, STYLE section 5), or returns every issue found in every file, each with
 * file, line and key path. Start-up, reload and the `policy` CLI commands all
 * call this, so a policy that validates is exactly a policy that loads.
 *
 * Pure apart from hashing: files are read by `loadPolicyDir`.
 */
export function compilePolicies(files: readonly PolicyFile[], ctx: CompileContext): CompileResult {
  const issues: PolicyIssue[] = [];
  const policies: CompiledPolicy[] = [];
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
    if (compiled.policy) policies.push(compiled.policy);
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, set: buildPolicySet(policies) };
}

interface FileOutcome {
  issues: PolicyIssue[];
  /** The policy's name when it is valid, even if the rest of the file is not, so duplicates are still caught. */
  name?: { value: string; line: number | undefined };
  policy?: CompiledPolicy;
}

function compileFile(file: PolicyFile, ctx: CompileContext): FileOutcome {
  const issues: PolicyIssue[] = [];
  const parsed = parseYamlDocument(file.text);
  if (!parsed.ok) {
    return { issues: parsed.problems.map((p) => ({ file: file.path, line: p.line, keyPath: '', message: p.message })) };
  }
  const { doc } = parsed;
  const report: Report = (keyPath, message, hint) => {
    issues.push({ file: file.path, line: doc.lineOf(keyPath), keyPath: formatKeyPath(keyPath), message, ...(hint === undefined ? {} : { hint }) });
  };
  const root = doc.value;
  if (!isJsonObject(root)) {
    report([], root === null || root === undefined ? 'the file is empty: a policy is a YAML map' : 'a policy must be a YAML map of keys');
    return { issues };
  }
  checkKnownKeys(root, POLICY_KEYS, [], report);

  const name = readName(root, file, doc, report, issues);
  const description = readOptional(root, 'description', 'string', report);
  const effect = readEffect(root, report);
  const issuer = readIssuer(root, ctx, report);
  const audience = readAudience(root, issuer, ctx, report);
  const allowTokenReuse = readOptional(root, 'allow_token_reuse', 'boolean', report);
  if (allowTokenReuse !== undefined && effect === 'deny') {
    report(['allow_token_reuse'], 'allow_token_reuse applies only to allow policies', 'remove it from this deny policy');
  }
  if (has(root, 'condition')) {
    // Fail closed: silently ignoring a condition would make the policy broader than written.
    report(['condition'], 'CEL conditions are not supported by this version', 'express the rule with `claims` conditions, or remove `condition`');
  }
  const conditions = readClaims(root, report);
  if (effect === 'allow' && issuer !== undefined && conditions !== undefined && conditions.length === 0) {
    report(
      ['claims'],
      'an allow policy needs at least one claim condition',
      `without one it would trust every token of issuer '${issuer}'; pin the owner and repository ids, the ref, and so on`,
    );
  }
  const grant = readGrant(root, effect, ctx, report);

  const outcome: FileOutcome = { issues };
  if (name !== undefined) outcome.name = name;
  if (issues.length > 0 || name === undefined || effect === undefined || issuer === undefined || conditions === undefined) return outcome;
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
    audience,
    allowTokenReuse: allowTokenReuse ?? false,
    conditions,
    grant: effect === 'allow' ? grant : undefined,
  });
  return outcome;
}

function makePolicy(p: Omit<CompiledPolicy, 'evaluate'> & { conditions: readonly ClaimMatcher[] }): CompiledPolicy {
  const { conditions, ...fields } = p;
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

/** The claim conditions, in file order; undefined when any is invalid. */
function readClaims(root: Json, report: Report): ClaimMatcher[] | undefined {
  if (!has(root, 'claims')) return [];
  const claims = root.claims;
  if (!isJsonObject(claims)) {
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
    } catch (err) {
      if (!(err instanceof MatcherError)) throw err;
      report(spec.at, err.message, err.hint);
      valid = false;
    }
  }
  return valid ? matchers : undefined;
}

/** Checks one condition's shape; `at` is where a compile error (e.g. a bad regex) belongs. */
function readCondition(key: string, raw: unknown, report: Report): { spec: ConditionSpec; at: KeyPath } | undefined {
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
    return values && { spec: { operator: 'in', values }, at };
  }
  if (!isJsonObject(raw)) {
    const value = readScalar(raw, at, report);
    return value === undefined ? undefined : { spec: { operator: 'equals', value }, at };
  }

  const operators = Object.keys(raw);
  let known = true;
  for (const op of operators) {
    if (!(CONDITION_OPERATORS as readonly string[]).includes(op)) {
      report([...at, op], `unknown condition operator '${echo(op)}'`, suggest(op, CONDITION_OPERATORS) ?? `use one of ${CONDITION_OPERATORS.join(', ')}`);
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
    // YAML reads a long id like 12345678901234567890 as an imprecise float; comparing that would match the wrong ids.
    if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value))) {
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

function buildPolicySet(policies: readonly CompiledPolicy[]): PolicySet {
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

function formatKeyPath(keyPath: KeyPath): string {
  return keyPath.reduce<string>((out, segment) => (typeof segment === 'number' ? `${out}[${segment}]` : out === '' ? segment : `${out}.${segment}`), '');
}

