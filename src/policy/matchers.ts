import { RE2JS, RE2Set } from 're2js';
import { ClaimPathError, parseClaimPath, resolveClaim } from '../claims/claim-path.js';
import { toStringForm } from '../values.js';
import { AsciiFoldError, toAsciiFolding } from './ascii-fold.js';
import type { ConditionResult } from './types.js';

/** A value a policy may compare a claim with. */
export type PolicyScalar = string | number | boolean;

/** One claim condition as written, after the compiler has checked its shape. */
export type ConditionSpec =
  | { operator: 'equals'; value: PolicyScalar }
  | { operator: 'in'; values: readonly PolicyScalar[] }
  | { operator: 'glob'; pattern: string }
  | { operator: 'regex'; pattern: string }
  | { operator: 'exists'; exists: boolean };

/** Checks one condition against a token's claims; pure, never throws. */
export type ClaimMatcher = (claims: Readonly<Record<string, unknown>>) => ConditionResult;

/** A condition that cannot be compiled; `message` is safe to show, `hint` optional. */
export class MatcherError extends Error {
  override name = 'MatcherError';
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/**
 * Builds the matcher for one claim condition, once, at load:
 * the key is split into JSON Pointer segments, a list becomes a Set, a glob or
 * regex becomes an RE2 program (linear time, so a token cannot cause a
 * backtracking blow-up).
 *
 * Semantics (docs/policies/reference.md): the claim is compared by its string form; an
 * absent or null claim matches nothing but `exists: false` (which matches
 * only absent or null). An object or array claim matches nothing either, and
 * its result carries an `error`: the condition cannot be evaluated, which
 * makes a deny policy deny.
 *
 * @param key a top-level claim name, or a JSON Pointer starting with `/`.
 * @throws MatcherError for a bad pointer or a regex RE2 rejects.
 */
export function compileMatcher(key: string, spec: ConditionSpec): ClaimMatcher {
  let path: readonly string[];
  try {
    path = parseClaimPath(key);
  } catch (err) {
    if (err instanceof ClaimPathError) throw new MatcherError(err.message);
    throw err;
  }
  const result = (operator: ConditionResult['operator'], expected: string, actual: unknown, matched: boolean): ConditionResult =>
    Object.freeze({ key, operator, expected, actual, matched });
  // An object or array claim has no string form: the condition cannot say whether it holds (docs/policies/reference.md).
  const compared = (operator: ConditionResult['operator'], expected: string, actual: unknown, test: (form: string) => boolean): ConditionResult => {
    const form = toStringForm(actual);
    if (form !== undefined) return result(operator, expected, actual, test(form));
    if (typeof actual !== 'object' || actual === null) return result(operator, expected, actual, false);
    return Object.freeze({ key, operator, expected, actual, matched: false, error: `it is ${Array.isArray(actual) ? 'an array' : 'an object'}, which ${operator} cannot compare` });
  };

  switch (spec.operator) {
    case 'equals': {
      const want = scalarForm(spec.value);
      return (claims) => compared('equals', want, resolveClaim(claims, path), (form) => form === want);
    }
    case 'in': {
      const wanted = new Set(spec.values.map(scalarForm));
      const expected = `[${[...wanted].join(', ')}]`;
      return (claims) => compared('in', expected, resolveClaim(claims, path), (form) => wanted.has(form));
    }
    case 'glob': {
      const program = sharedProgram(`glob\u0000${spec.pattern}`, () => compileAnchored(globToRe2(spec.pattern)));
      const expected = `glob ${spec.pattern}`;
      return (claims) => compared('glob', expected, resolveClaim(claims, path), (form) => program.matches(form));
    }
    case 'regex': {
      const program = sharedProgram(`regex\u0000${spec.pattern}`, () => compileRegex(spec.pattern));
      const expected = `regex ${spec.pattern}`;
      return (claims) => compared('regex', expected, resolveClaim(claims, path), (form) => program.matches(form));
    }
    case 'exists': {
      const { exists } = spec;
      return (claims) => {
        const actual = resolveClaim(claims, path);
        // docs/policies/reference.md: a null claim counts as absent.
        const present = actual !== undefined && actual !== null;
        return result('exists', exists ? 'exists' : 'absent or null', actual, present === exists);
      };
    }
    default: {
      const unreachable: never = spec;
      throw new TypeError(`unknown condition ${JSON.stringify(unreachable)}`);
    }
  }
}

/**
 * Compiled programs by pattern, shared by every matcher with the same glob or
 * regex: policy sets repeat patterns across files (an organisation's workflow
 * glob, a branch regex), and one RE2 program costs about 0.1 ms to compile and
 * tens of KB to keep. Matching is synchronous and leaves a program as it was,
 * so sharing is invisible. Held weakly: a program lives as long as a compiled
 * policy uses it, so a reload frees the patterns it dropped, and one that
 * keeps a pattern (even a new set compiled next to the old) finds it here.
 * Only programs that compiled are cached; a bad pattern fails, with the same
 * error, every time.
 */
const programs = new Map<string, WeakRef<RE2JS>>();
const collected = new FinalizationRegistry<string>((key) => {
  if (programs.get(key)?.deref() === undefined) programs.delete(key);
});

function sharedProgram(key: string, compile: () => RE2JS): RE2JS {
  const cached = programs.get(key)?.deref();
  if (cached !== undefined) return cached;
  const program = compile();
  programs.set(key, new WeakRef(program));
  collected.register(program, key);
  return program;
}

/** A policy number or boolean compares by its string form, like a claim (`true` matches `"true"`). */
function scalarForm(value: PolicyScalar): string {
  return typeof value === 'string' ? value : String(value);
}

/** RE2 metacharacters; escaping them (and only them) makes every other glob character literal. */
const RE2_META = /[\\.+*?()|[\]{}^$]/;

/** `text` as an RE2 pattern that matches exactly it. */
export function escapeRe2(text: string): string {
  return [...text].map((ch) => (RE2_META.test(ch) ? `\\${ch}` : ch)).join('');
}

/**
 * Translates a glob (docs/policies/reference.md) to an RE2 pattern body: `*` is any
 * run without `/`, `**` (or more stars) any run including `/`, `?` one
 * character other than `/`; every other character is literal.
 *
 * @example globToRe2('refs/tags/v*') // 'refs/tags/v[^/]*'
 */
export function globToRe2(glob: string): string {
  let out = '';
  const chars = [...glob]; // by code point, so `?` is one character, not one UTF-16 unit
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (ch === '*') {
      let run = 1;
      while (chars[i + 1] === '*') {
        run++;
        i++;
      }
      // `(?s:...)` so `**` also crosses newlines; `[^/]` already does in RE2.
      out += run === 1 ? '[^/]*' : '(?s:.*)';
    } else if (ch === '?') {
      out += '[^/]';
    } else {
      out += escapeRe2(ch);
    }
  }
  return out;
}

/**
 * Compiles a policy regex so it can only ever match the whole value.
 *
 * The body is parsed on its own first: a body that is not a complete regex
 * by itself (e.g. `a)|(b`) could otherwise close the wrapping group and escape
 * the anchors. Then `^(?:...)$` anchors it (so a top-level `|` stays inside),
 * and `matches()` demands a whole-input match as a second guard. `(?i)`
 * folds ASCII letters only (see ascii-fold.ts).
 *
 * `RE2Set.add` runs RE2JS's parser (with the flags `RE2JS.compile` uses)
 * without building a program: the same check, and the same errors, as
 * compiling the body, for a third of the cost.
 */
function compileRegex(pattern: string): RE2JS {
  try {
    new RE2Set().add(pattern);
  } catch (err) {
    throw regexError(err);
  }
  let body: string;
  try {
    body = toAsciiFolding(pattern);
    // The rewritten body must be complete on its own too, so the anchors below stay around all of it.
    if (body !== pattern) new RE2Set().add(body);
  } catch (err) {
    if (err instanceof AsciiFoldError) throw new MatcherError(`unsupported regex: ${err.message}`);
    throw regexError(err);
  }
  return compileAnchored(body);
}

function compileAnchored(body: string): RE2JS {
  try {
    return RE2JS.compile(`^(?:${body})$`);
  } catch (err) {
    throw regexError(err);
  }
}

function regexError(err: unknown): MatcherError {
  const detail = err instanceof Error ? err.message.replace(/^error parsing regexp: /, '') : String(err);
  return new MatcherError(
    `invalid or unsupported regex: ${detail}`,
    'patterns use RE2 syntax (linear time): no backreferences, lookahead or lookbehind',
  );
}
