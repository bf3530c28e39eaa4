import type { KeyPath } from './parse.js';
import { compileTemplate, TemplateSyntaxError } from './template.js';
import type { Template } from './types.js';

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

/** Unknown keys are errors (a typo must not silently drop a restriction), with a hint for near misses. */
export function checkKnownKeys(obj: Json, known: readonly string[], at: KeyPath, report: Report): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) report([...at, key], `unknown key '${echo(key)}'`, suggest(key, known));
  }
}

/**
 * "did you mean ...?" for a key that differs from a known one only by `-`/`_`
 * or case, by a small edit distance, or by being cut short.
 */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '');
  const exactish = candidates.find((c) => norm(c) === norm(word));
  if (exactish !== undefined) return `did you mean '${exactish}'?`;
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate);
    const allowed = Math.min(2, Math.floor(candidate.length / 3));
    if (distance <= allowed && (best === undefined || distance < best.distance)) best = { candidate, distance };
  }
  // A truncated key (`max_duration`, `desc`) is a near miss too, if long enough to be unambiguous.
  const prefixOf = norm(word).length >= 4 ? candidates.find((c) => norm(c).startsWith(norm(word))) : undefined;
  const candidate = best?.candidate ?? prefixOf;
  return candidate && `did you mean '${candidate}'?`;
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

export function isJsonObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string') return `'${echo(value)}'`;
  return String(value);
}

export function echo(value: string): string {
  return value.length > ECHO_LIMIT ? `${value.slice(0, ECHO_LIMIT)}…` : value;
}
