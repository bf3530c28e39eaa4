/**
 * CEL `condition:` expressions (docs/policies/reference.md), compiled once at load
 * with @bufbuild/cel and evaluated per request over the token's claims.
 *
 * @bufbuild/cel 0.6.1 has no public type checker, so the load-time checks that
 * matter are done here on the parsed AST: the only free variable is `claims`
 * (plus comprehension variables and the type names `int`, `string`, ...),
 * every function exists with a matching call form and arity, no message
 * literals, `matches()` patterns are string literals that RE2 accepts, and the
 * expression is bounded in length and nesting. Type errors that need a
 * checker (e.g. `claims.ref + 1`) surface at evaluation as a non-match.
 *
 * Evaluation is fail closed: the condition holds only when the result is
 * exactly `true`. An error (a missing claim, no matching overload, division
 * by zero), a non-bool result or a thrown exception is a non-match with a
 * reason and an `error`: the condition could not be evaluated, which makes a
 * deny policy deny (docs/policies/reference.md). Evaluation never throws.
 */
import { CelScalar, celEnv, isCelError, isCelList, isCelMap, isCelType, isCelUint, mapType, parse, plan, type CelInput } from '@bufbuild/cel';
import { strings } from '@bufbuild/cel/ext';
import { RE2JS } from 're2js';
import { suggest } from '../yaml/fields.js';
import { toAsciiFolding } from './ascii-fold.js';

type ParsedExpr = ReturnType<typeof parse>;
type Expr = ParsedExpr['expr'];

/** Longest accepted source, in UTF-16 units: the parser recurses, so inputs stay small. */
export const MAX_CONDITION_LENGTH = 4096;
/** Deepest accepted AST; evaluation recurses once per level, so this bounds its stack use. */
export const MAX_CONDITION_DEPTH = 100;
/**
 * Functions of the strings extension left out: `format` (printf-like verbs,
 * not needed to compare claims) and `strings.quote`. Enabled: charAt,
 * indexOf, lastIndexOf, lowerAscii, upperAscii, replace, split, substring,
 * trim, join.
 */
const EXCLUDED_STRING_FUNCTIONS: ReadonlySet<string> = new Set(['format', 'strings.quote']);
/** Calls the planner handles itself rather than through `env.funcs`. */
const PLANNER_CALLS: ReadonlySet<string> = new Set(['_&&_', '_||_', '_?_:_', '_[_]', '@not_strictly_false', '__not_strictly_false__']);
/** Optional-value syntax (`a.?b`, `a[?b]`): not supported by the evaluator's parser; refused should a parser emit it. */
const OPTIONAL_CALLS: ReadonlySet<string> = new Set(['_[?_]', '_?._']);
/** Type names the evaluator resolves as identifiers, e.g. `type(claims.n) == double`. */
const TYPE_IDENTIFIERS: readonly string[] = ['int', 'uint', 'double', 'bool', 'string', 'bytes', 'list', 'map', 'null_type', 'type'];
/** At most this many compiled patterns are kept (about 30 KB each); the least recently used goes first. */
const MAX_CACHED_PATTERNS = 2_000;

/**
 * Compiled `matches()` patterns by source, shared by every condition (the
 * evaluator asks for the program on every call). Least recently used first in
 * Map order, so patterns dropped by a policy reload age out instead of being
 * kept forever.
 */
const patternCache = new Map<string, RE2JS>();

function compilePattern(pattern: string): RE2JS {
  const cached = patternCache.get(pattern);
  if (cached !== undefined) {
    patternCache.delete(pattern);
    patternCache.set(pattern, cached);
    return cached;
  }
  // The pattern as written is compiled first, for RE2's own error on an invalid one; then with `(?i)` folding ASCII only.
  RE2JS.compile(pattern);
  const compiled = RE2JS.compile(toAsciiFolding(pattern));
  patternCache.set(pattern, compiled);
  if (patternCache.size > MAX_CACHED_PATTERNS) patternCache.delete(patternCache.keys().next().value!);
  return compiled;
}

/**
 * What conditions get beyond the CEL standard library: the strings extension
 * (less `format` and `strings.quote`), and `matches()` on re2js (linear time,
 * the engine the claim `regex:` operator uses, `(?i)` folding ASCII only as
 * there) with compiled patterns cached.
 * Exported for the conformance bench, which plans the spec's tests with it.
 */
export const CONDITION_ENV_OPTIONS = Object.freeze({
  funcs: strings.filter((f) => !EXCLUDED_STRING_FUNCTIONS.has(f.name)),
  re2: Object.freeze({ compile: (pattern: string) => compilePattern(pattern) }),
});

/** The one environment every condition is planned in: `claims` is a `map(string, dyn)`. */
const env = celEnv({ variables: { claims: mapType(CelScalar.STRING, CelScalar.DYN) }, ...CONDITION_ENV_OPTIONS });

/** Why a condition cannot be compiled; `line` and `column` are 1-based, relative to the expression. */
export interface ConditionCompileError {
  message: string;
  line: number;
  column: number;
}

/** One evaluation: `actual` is the bool result, or the reason there is none. */
export interface ConditionOutcome {
  /** True only when the expression evaluated to exactly `true`. */
  matched: boolean;
  /** `true`/`false`, or an error such as `no such key: ref at 2:9`, or `the condition returned a string, not a bool`. */
  actual: boolean | string;
  /**
   * Present when there is no bool result: why, in words that quote neither
   * the expression nor a claim value (`actual` may quote both), so a caller
   * may see it even for a deny policy.
   */
  error?: string;
}

export interface CompiledCondition {
  /** The expression as written. */
  readonly source: string;
  /** Whether the expression reads `claims` at all; a condition that does not is constant for every token. */
  readonly readsClaims: boolean;
  /** Pure; never throws. */
  evaluate(claims: Readonly<Record<string, unknown>>): ConditionOutcome;
}

export type ConditionCompileResult = { ok: true; condition: CompiledCondition } | { ok: false; error: ConditionCompileError };

/** Compiles a `condition:` expression, or says what is wrong and where. */
export function compileCondition(source: string): ConditionCompileResult {
  const fail = (message: string, offset = 0): ConditionCompileResult => ({ ok: false, error: { message, ...lineColumn(source, offset) } });
  if (source.trim() === '') return fail('the condition is empty');
  if (source.length > MAX_CONDITION_LENGTH) return fail(`the condition is longer than ${MAX_CONDITION_LENGTH} characters`);

  let parsed: ParsedExpr;
  try {
    parsed = parse(source);
  } catch (err) {
    if (err instanceof RangeError) return fail(`the condition is nested too deeply (at most ${MAX_CONDITION_DEPTH} levels)`);
    // ParseSyntaxError: message `<input>:L:C: ...`, location.start.offset in UTF-16 units.
    const offset = (err as { location?: { start?: { offset?: unknown } } }).location?.start?.offset;
    const detail = (err instanceof Error ? err.message : String(err)).replace(/^<input>:\d+:\d+: /, '');
    return fail(`syntax error: ${detail}`, typeof offset === 'number' ? offset : 0);
  }

  let checked: CheckOutcome;
  try {
    checked = checkExpression(parsed, ['claims']);
  } catch (err) {
    if (err instanceof RangeError) return fail(`the condition is nested too deeply (at most ${MAX_CONDITION_DEPTH} levels)`);
    throw err;
  }
  if (checked.problem !== undefined) return fail(checked.problem.message, checked.problem.offset);

  let program: ReturnType<typeof planCondition>;
  try {
    program = planCondition(parsed);
  } catch (err) {
    if (err instanceof RangeError) return fail(`the condition is nested too deeply (at most ${MAX_CONDITION_DEPTH} levels)`);
    return fail(`cannot compile the condition: ${err instanceof Error ? err.message : String(err)}`);
  }

  const positions = parsed.sourceInfo?.positions ?? {};
  const at = (exprId: bigint | undefined): string => {
    const offset = exprId === undefined ? undefined : positions[String(exprId)];
    if (offset === undefined) return '';
    const { line, column } = lineColumn(source, offset);
    return ` at ${line}:${column}`;
  };

  const condition: CompiledCondition = {
    source,
    readsClaims: checked.readsClaims,
    evaluate(claims) {
      let result: unknown;
      try {
        result = program({ claims: toCelMap(claims) as ReadonlyMap<string, CelInput> });
      } catch (err) {
        // The library reports errors as values; a throw is a bug or a stack overflow. Fail closed either way.
        return { matched: false, actual: `evaluation failed: ${err instanceof Error ? err.message : String(err)}`, error: 'its evaluation failed' };
      }
      if (result === true || result === false) return { matched: result, actual: result };
      if (isCelError(result)) return { matched: false, actual: `${describeError(result.message)}${at(result.exprId)}`, error: classifyError(result.message) };
      return { matched: false, actual: `the condition returned ${celTypeName(result)}, not a bool`, error: 'it did not return a bool' };
    },
  };
  return { ok: true, condition: Object.freeze(condition) };
}

function planCondition(parsed: ParsedExpr) {
  return plan(env, parsed);
}

/** The library's map-access error names a "field"; claims are a map, so say "key" as other CEL implementations do. */
function describeError(message: string): string {
  return message.replace(/^field not found: /, 'no such key: ');
}

/**
 * What kind of error a CEL error is, for callers: the library's message can
 * quote a claim value (`Cannot convert x to a BigInt`), so only the two kinds
 * a claim causes are told apart, by the library's fixed message prefixes.
 */
function classifyError(message: string): string {
  if (message.startsWith('field not found: ')) return 'a claim it reads is missing';
  if (message.startsWith('found no matching overload')) return 'a claim it reads is of another type';
  return 'its evaluation failed';
}

function celTypeName(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return 'a double';
    case 'bigint':
      return 'an int';
    default:
  }
  if (isCelUint(value)) return 'a uint';
  if (isCelList(value)) return 'a list';
  if (isCelMap(value)) return 'a map';
  if (isCelType(value)) return 'a type';
  if (value instanceof Uint8Array) return 'bytes';
  return 'a non-bool value';
}

/**
 * Claims as CEL input: objects become Maps (about 5x cheaper per call than a
 * plain object, and a key lookup can never reach `Object.prototype`), arrays
 * are copied element by element. JSON values only; anything else is passed as is.
 */
function toCelMap(claims: Readonly<Record<string, unknown>>): Map<string, unknown> {
  const map = new Map<string, unknown>();
  for (const key of Object.keys(claims)) map.set(key, toCelValue(claims[key]));
  return map;
}

function toCelValue(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(toCelValue);
  return toCelMap(value as Record<string, unknown>);
}

/** 1-based line and column (in code points) of a UTF-16 offset. */
function lineColumn(source: string, offset: number): { line: number; column: number } {
  const before = source.slice(0, Math.max(0, Math.min(offset, source.length)));
  const lines = before.split('\n');
  const last = lines[lines.length - 1] ?? '';
  return { line: lines.length, column: [...last].length + 1 };
}

interface CheckOutcome {
  problem?: { message: string; offset: number };
  readsClaims: boolean;
}

/**
 * Load-time checks on a parsed expression. `variables` are the declared
 * identifiers (`claims` for policies). Exported for the conformance bench.
 *
 * @throws RangeError only if the AST is deeper than the JS stack allows (the depth limit normally stops first).
 */
export function checkExpression(parsed: ParsedExpr, variables: readonly string[]): CheckOutcome {
  const positions = parsed.sourceInfo?.positions ?? {};
  let readsClaims = false;
  const problem = (e: Expr, message: string): { message: string; offset: number } => ({ message, offset: positions[String(e.id)] ?? 0 });

  const walk = (e: Expr | undefined, scope: ReadonlySet<string>, depth: number): { message: string; offset: number } | undefined => {
    if (e === undefined) return undefined;
    if (depth > MAX_CONDITION_DEPTH) return problem(e, `the condition is nested too deeply (at most ${MAX_CONDITION_DEPTH} levels)`);
    const k = e.exprKind;
    const next = depth + 1;
    switch (k.case) {
      case 'identExpr': {
        const name = k.value.name;
        if (scope.has(name)) {
          if (name === 'claims') readsClaims = true;
          return undefined;
        }
        if (TYPE_IDENTIFIERS.includes(name)) return undefined;
        const defined = variables.length === 0 ? 'no variables are defined' : `only ${variables.map((v) => `'${v}'`).join(', ')} ${variables.length === 1 ? 'is' : 'are'} defined`;
        const hint = suggest(name, variables);
        return problem(e, `undeclared reference to '${name}' (${defined})${hint === undefined ? '' : `; ${hint}`}`);
      }
      case 'selectExpr':
        return walk(k.value.operand, scope, next);
      case 'callExpr': {
        const call = k.value;
        const name = call.function;
        if (OPTIONAL_CALLS.has(name)) return problem(e, 'optional values (`.?` and `[?`) are not supported');
        if (!PLANNER_CALLS.has(name)) {
          const bad = checkCall(name, call.target !== undefined, call.args.length);
          if (bad !== undefined) return problem(e, bad);
        }
        if (name === 'matches') {
          const pattern = call.args[call.args.length - 1];
          const bad = pattern && checkPattern(pattern);
          if (bad !== undefined) return problem(pattern ?? e, bad);
        }
        const inTarget = walk(call.target, scope, next);
        if (inTarget) return inTarget;
        for (const arg of call.args) {
          const found = walk(arg, scope, next);
          if (found) return found;
        }
        return undefined;
      }
      case 'listExpr':
        for (const element of k.value.elements) {
          const found = walk(element, scope, next);
          if (found) return found;
        }
        return undefined;
      case 'structExpr': {
        if (k.value.messageName !== '') return problem(e, `message construction ('${k.value.messageName}{...}') is not supported`);
        for (const entry of k.value.entries) {
          if (entry.optionalEntry) return problem(e, 'optional values (`?key:`) are not supported');
          if (entry.keyKind.case === 'mapKey') {
            const found = walk(entry.keyKind.value, scope, next);
            if (found) return found;
          }
          const found = walk(entry.value, scope, next);
          if (found) return found;
        }
        return undefined;
      }
      case 'comprehensionExpr': {
        const c = k.value;
        const outer = walk(c.iterRange, scope, next) ?? walk(c.accuInit, scope, next);
        if (outer) return outer;
        const declared = [c.iterVar, c.iterVar2].filter((v) => v !== '');
        const shadowing = declared.find((v) => variables.includes(v) || TYPE_IDENTIFIERS.includes(v));
        if (shadowing !== undefined) return problem(e, `the variable '${shadowing}' would hide '${shadowing}'; use another name`);
        const inner = new Set([...scope, ...declared, c.accuVar]);
        return walk(c.loopCondition, inner, next) ?? walk(c.loopStep, inner, next) ?? walk(c.result, new Set([...scope, c.accuVar]), next);
      }
      case 'constExpr':
        return undefined;
      default:
        return problem(e, 'unsupported expression');
    }
  };
  const found = walk(parsed.expr, new Set(variables), 1);
  return found === undefined ? { readsClaims } : { problem: found, readsClaims };
}

/** Whether a call names a known function in a form it has: `x.f(a)` (method) or `f(x, a)` (global), with that many arguments. */
function checkCall(name: string, isMethod: boolean, argCount: number): string | undefined {
  const group = env.funcs.find(name);
  if (group === undefined) {
    const hint = suggest(name, [...new Set([...env.funcs].map((f) => f.name).filter((n) => /^[A-Za-z]/.test(n)))]);
    return `unknown function '${name}'${hint === undefined ? '' : `; ${hint}`}`;
  }
  const overloads = [...group];
  if (overloads.some((f) => (f.target !== undefined) === isMethod && f.arguments.length === argCount)) return undefined;
  const shape = (f: (typeof overloads)[number]): string =>
    f.target !== undefined ? `x.${name}(${f.arguments.map(() => '_').join(', ')})` : `${name}(${f.arguments.map(() => '_').join(', ')})`;
  const forms = [...new Set(overloads.map(shape))].join(' or ');
  return `'${name}' is not called like this; use ${forms}`;
}

/** `matches()` takes a literal pattern, checked and compiled now: a pattern from a claim would let the token choose what matches. */
function checkPattern(pattern: Expr): string | undefined {
  const k = pattern.exprKind;
  if (k.case !== 'constExpr' || k.value.constantKind.case !== 'stringValue') return 'the pattern of matches() must be a string literal';
  try {
    compilePattern(k.value.constantKind.value);
  } catch (err) {
    const detail = err instanceof Error ? err.message.replace(/^error parsing regexp: /, '') : String(err);
    return `invalid or unsupported regex: ${detail} (RE2 syntax: no backreferences, lookahead or lookbehind)`;
  }
  return undefined;
}
