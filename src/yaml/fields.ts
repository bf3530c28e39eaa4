import type { KeyPath } from './document.js';
import { compileTemplate, TemplateSyntaxError } from '../claims/template.js';
import type { Template } from '../claims/template.js';

/** Reading values out of a parsed policy file, reporting problems at their key path. */
export type Report = (path: KeyPath, message: string, hint?: string) => void;
export type Json = Record<string, unknown>;

/** How much of an operator-written value an issue message echoes. */
const ECHO_LIMIT = 100;

export function readTemplate(value: unknown, at: KeyPath, report: Report): Template | undefined {
  if (typeof value !== 'string') {
    report(at, `expected a string template, not ${describeValue(value)}`, 'quote it');
    return undefined;
  }
  try {
    return compileTemplate(value);
  } catch (err) {
    if (!(err instanceof TemplateSyntaxError)) throw err;
    report(at, `invalid template: ${err.message}`);
    return undefined;
  }
}

/** Hints for an unknown key beyond near misses of the known ones. */
export interface KeyHints {
  /** Other words people use for a known key (lower case), e.g. `aud` for `audience`. */
  readonly aliases?: ReadonlyMap<string, string>;
  /** Keys that are valid elsewhere, with where, e.g. `role_arn` -> "in aws grants; this grant's provider is jwt". */
  readonly elsewhere?: ReadonlyMap<string, string>;
}

/** Unknown keys are errors (a typo must not silently drop a restriction), with a hint where one is obvious. */
export function checkKnownKeys(obj: Json, known: readonly string[], at: KeyPath, report: Report, hints: KeyHints = {}): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) report([...at, key], `unknown key '${echo(key)}'`, hintForKey(key, known, hints));
  }
}

/**
 * The hint for an unknown key, most specific first: a known alias; a near
 * miss of a known key; a key that is valid elsewhere says where; a near miss
 * of a key valid elsewhere, with where.
 */
export function hintForKey(key: string, known: readonly string[], hints: KeyHints = {}): string | undefined {
  const alias = hints.aliases?.get(key.toLowerCase());
  if (alias !== undefined) return `did you mean '${alias}'?`;
  const near = suggest(key, known);
  if (near !== undefined || hints.elsewhere === undefined) return near;
  const where = hints.elsewhere.get(key);
  if (where !== undefined) return `'${echo(key)}' belongs ${where}`;
  const others = closest(key, [...hints.elsewhere.keys()]);
  const place = others[0] === undefined ? undefined : hints.elsewhere.get(others[0]);
  if (place === undefined) return undefined;
  const same = others.filter((o) => hints.elsewhere?.get(o) === place);
  return `did you mean ${same.map((o) => `'${o}'`).join(' or ')}? it belongs ${place}`;
}

/**
 * "did you mean ...?" for a word that differs from a known one only by `-`/`_`
 * or case, by a small edit distance, by being cut short, or by abbreviated
 * words (`max_duration_secs`, `allow_reuse`); undefined when nothing is close.
 */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const found = closest(word, candidates);
  if (found.length === 0) return undefined;
  return `did you mean ${found.map((c) => `'${c}'`).join(' or ')}?`;
}

/** The candidates close to `word`: one, or two when two are equally plausible; empty when none or too many are. */
export function closest(word: string, candidates: readonly string[]): string[] {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '');
  const exactish = candidates.find((c) => norm(c) === norm(word));
  if (exactish !== undefined) return [exactish];
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate);
    const allowed = Math.min(2, Math.floor(candidate.length / 3));
    if (distance <= allowed && (best === undefined || distance < best.distance)) best = { candidate, distance };
  }
  if (best !== undefined) return [best.candidate];
  if (norm(word).length < 4) return [];
  // A truncated or abbreviated key (`max_duration`, `desc`, `allow_reuse`) is a near miss too, if long enough and not ambiguous.
  const shortened = candidates.filter((c) => norm(c).startsWith(norm(word)) || abbreviates(word, c));
  return shortened.length <= 2 ? shortened : [];
}

/**
 * Whether each `-`/`_` separated word of `word` abbreviates a word of
 * `candidate`, in order (same first letter, the rest in sequence):
 * `max_duration_secs` -> `max_duration_seconds`, `allow_reuse` -> `allow_token_reuse`.
 */
function abbreviates(word: string, candidate: string): boolean {
  const split = (s: string): string[] => s.toLowerCase().split(/[-_]+/).filter((t) => t !== '');
  const parts = split(word);
  const words = split(candidate);
  if (parts.length === 0 || parts.length > words.length || parts.some((p) => p.length < 2)) return false;
  let j = 0;
  for (const part of parts) {
    while (j < words.length && !isAbbreviation(part, words[j] ?? '')) j++;
    if (j === words.length) return false;
    j++;
  }
  return true;
}

function isAbbreviation(part: string, full: string): boolean {
  if (part[0] !== full[0] || part.length > full.length) return false;
  let i = 1;
  for (let j = 1; j < full.length && i < part.length; j++) if (full[j] === part[i]) i++;
  return i === part.length;
}

/** Optimal string alignment distance: Levenshtein plus adjacent transpositions (`jtw` -> `jwt` is 1). */
export function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64) return Infinity;
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((rows[i - 1]?.[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (rows[i - 1]?.[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, (rows[i - 2]?.[j - 2] ?? 0) + 1);
      row[j] = best;
    }
    rows.push(row);
  }
  return rows[a.length]?.[b.length] ?? Infinity;
}

export function has(obj: Json, key: string): boolean {
  return Object.hasOwn(obj, key);
}

/**
 * Whether a number YAML read cannot stand for what was written: a long id such
 * as 12345678901234567890 becomes an imprecise float, and `.inf`/`.nan` are no
 * value a token carries. Such numbers are refused, with a hint to quote them.
 */
export function isInexactNumber(value: number): boolean {
  return !Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value));
}

export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string') return `'${echo(value)}'`;
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeof value;
}

/**
 * A value from the file quoted in a problem: cut to its first characters, and
 * on one line (control, line-separator and bidi characters become `?`), as each
 * problem prints as one `file:line: key: message` line.
 */
export function echo(value: string): string {
  const cut = value.length > ECHO_LIMIT ? `${value.slice(0, ECHO_LIMIT)}…` : value;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, '?');
}
