/**
 * Case-insensitive patterns fold ASCII letters only (docs/policies/reference.md,
 * "Regex"). RE2's `(?i)` folds by Unicode, so `(?i)refs/heads/release` would
 * also match `refs/heads/releaſe` (U+017F LONG S folds to `s`) and a KELVIN
 * SIGN (U+212A) would pass for `k`: a claim could slip past a deny pattern, or
 * into an allow pattern, with a look-alike. RE2 has no ASCII-only flag, so a
 * pattern is rewritten before it is compiled: every `i` flag is removed and,
 * where it was on, each ASCII letter `x` becomes `[xX]`, and each class or
 * class escape gains the other case of the ASCII letters it holds. Non-ASCII
 * characters then match only themselves (`é` is not `É`).
 *
 * Classes follow RE2's order, fold then negate: `(?i)[^a]` excludes both `a`
 * and `A`, `(?i)\P{Lu}` every uppercase letter and `a` to `z`. A negated item
 * inside a class whose ASCII letters are not closed under case
 * (`[\P{Lu}x]`, `[[:^lower:]]`) cannot be written as a union of class items
 * once folded, and is refused.
 */
import { RE2JS } from 're2js';

/** Why a case-insensitive pattern cannot be folded ASCII only; `message` is safe to show. */
export class AsciiFoldError extends Error {
  override name = 'AsciiFoldError';
}

const ASCII_LETTERS: readonly string[] = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'];
/** A flag group that may set `i`: without one, a pattern is left as it is. */
const MAY_SET_FOLD = /\(\?[imsU-]*i/;
const FLAG_GROUP = /^\(\?([imsU-]*)([:)])/;
const NAMED_GROUP = /^\(\?P?<[^>]*>/;

/**
 * The pattern with `(?i)` folding ASCII letters only. `pattern` must already be
 * valid RE2 (the caller checks it first, for RE2's own error messages); the
 * result is valid RE2 and matches what `pattern` would, but for case folding
 * outside ASCII.
 *
 * @throws AsciiFoldError for a negated class item that cannot be folded (see above).
 * @example toAsciiFolding('(?i)ab[c-e]') // '(?-m)[aA][bB][CDEc-e]'
 */
export function toAsciiFolding(pattern: string): string {
  if (!MAY_SET_FOLD.test(pattern)) return pattern;
  let out = '';
  let fold = false;
  // Tracked only to write a flag group that changes nothing (see below).
  let multiLine = false;
  const outer: { fold: boolean; multiLine: boolean }[] = [];
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i] as string;
    if (c === '\\') {
      if (pattern[i + 1] === 'Q') {
        const close = pattern.indexOf('\\E', i + 2);
        const end = close < 0 ? pattern.length : close + 2;
        out += fold ? [...pattern.slice(i + 2, close < 0 ? pattern.length : close)].map(quotedLiteral).join('') : pattern.slice(i, end);
        i = end;
        continue;
      }
      const end = escapeEnd(pattern, i);
      const escape = pattern.slice(i, end);
      out += fold ? foldEscape(escape) : escape;
      i = end;
      continue;
    }
    if (c === '[') {
      const end = classEnd(pattern, i);
      const text = pattern.slice(i, end);
      out += fold ? foldClass(text) : text;
      i = end;
      continue;
    }
    if (c === '(') {
      const rest = pattern.slice(i);
      const flags = FLAG_GROUP.exec(rest);
      if (flags !== null) {
        const [whole, letters = '', close] = flags;
        let nextFold: boolean = fold;
        let nextMultiLine: boolean = multiLine;
        let kept = '';
        let negated = false;
        for (const flag of letters) {
          if (flag === '-') negated = true;
          if (flag === 'm') nextMultiLine = !negated;
          if (flag === 'i') nextFold = !negated;
          else kept += flag;
        }
        // `(?s-i)` keeps `(?s)`: a trailing `-` without a flag after it is a syntax error.
        kept = kept.replace(/-$/, '');
        if (close === ')') {
          fold = nextFold;
          multiLine = nextMultiLine;
          // A flag group ends a repetition run (`z{2}(?i){2}` is valid RE2, `z{2}{2}` is not): an
          // emptied `(?i)` becomes one that restates the current `m`, which changes nothing.
          out += `(?${kept === '' ? (multiLine ? 'm' : '-m') : kept})`;
        } else {
          outer.push({ fold, multiLine });
          fold = nextFold;
          multiLine = nextMultiLine;
          out += `(?${kept}:`;
        }
        i += whole.length;
        continue;
      }
      const named = NAMED_GROUP.exec(rest);
      const header = named === null ? '(' : named[0];
      outer.push({ fold, multiLine });
      out += header;
      i += header.length;
      continue;
    }
    if (c === ')') {
      ({ fold, multiLine } = outer.pop() ?? { fold, multiLine });
      out += c;
      i++;
      continue;
    }
    out += fold && isAsciiLetter(c) ? `[${c}${swapCase(c)}]` : c;
    i++;
  }
  return out;
}

/** One character of a `\Q...\E` run, folded, written outside the run. */
function quotedLiteral(ch: string): string {
  if (isAsciiLetter(ch)) return `[${ch}${swapCase(ch)}]`;
  // Every ASCII character that is not a letter or digit is itself when escaped.
  return ch.length === 1 && ch < '\u0080' && !/[0-9]/.test(ch) ? `\\${ch}` : ch;
}

/** An escape outside a class: a literal or class escape gains the other case of its ASCII letters. */
function foldEscape(escape: string): string {
  const negated = negatedItem(escape);
  if (negated !== undefined) {
    const letters = lettersIn(`[${negated}]`);
    const missing = otherCases(letters);
    // Fold then negate: the negated set loses the other case of the letters it excluded.
    return missing === '' ? escape : `[^${negated}${missing}]`;
  }
  const missing = otherCases(lettersIn(`^(?:${escape})$`));
  return missing === '' ? escape : `[${escape}${missing}]`;
}

/** A bracket class: its positive items gain the other case of their ASCII letters; the class's `^` applies after. */
function foldClass(text: string): string {
  const negatedClass = text[1] === '^';
  let i = negatedClass ? 2 : 1;
  let body = '';
  let missing = '';
  let first = true;
  while (i < text.length - 1 || (first && text[i] === ']')) {
    const end = classItemEnd(text, i, first);
    let item = text.slice(i, end);
    if (first && item === ']') item = '\\]';
    first = false;
    const negated = negatedItem(item);
    if (negated !== undefined) {
      if (otherCases(lettersIn(`[${negated}]`)) !== '') {
        throw new AsciiFoldError(`under (?i), the negated class item ${item} cannot be folded ASCII only; put it outside the brackets, or list the letters`);
      }
    } else {
      // `\x00` first: an item such as `^` or `-` keeps its literal meaning inside the test class.
      missing += otherCases(lettersIn(`[\\x00${item}]`));
    }
    body += item;
    i = end;
  }
  // The added letters go first, so a leading `-` of the original stays a literal once escaped.
  const lead = body.startsWith('-') ? `\\${body}` : body;
  return `[${negatedClass ? '^' : ''}${missing}${lead}]`;
}

/** The positive form of a negated class item (`\PL`, `\p{^Greek}`, `\W`, `[:^alpha:]`), or undefined for a positive one. */
function negatedItem(item: string): string | undefined {
  if (item.startsWith('\\P')) return item.startsWith('\\P{^') ? undefined : `\\p${item.slice(2)}`;
  if (item.startsWith('\\p{^')) return `\\p{${item.slice(4)}`;
  if (item === '\\W' || item === '\\D' || item === '\\S') return item.toLowerCase();
  if (item.startsWith('[:^')) return `[:${item.slice(3)}`;
  return undefined;
}

/** Where a class item starting at `i` ends: a POSIX class, an escape or a character, and a range's end if it has one. */
function classItemEnd(text: string, i: number, first: boolean): number {
  if (text.startsWith('[:', i)) {
    const close = text.indexOf(':]', i + 2);
    if (close >= 0) return close + 2;
  }
  const lowEnd = text[i] === '\\' ? escapeEnd(text, i) : first && text[i] === ']' ? i + 1 : i + charLength(text, i);
  // A range: `-` then anything but the closing `]`.
  if (text[lowEnd] === '-' && lowEnd + 1 < text.length - 1) {
    const hi = lowEnd + 1;
    return text[hi] === '\\' ? escapeEnd(text, hi) : hi + charLength(text, hi);
  }
  return lowEnd;
}

/** Where the bracket class starting at `i` ends (just past its `]`). */
function classEnd(pattern: string, i: number): number {
  let j = i + 1;
  if (pattern[j] === '^') j++;
  let first = true;
  while (j < pattern.length && (pattern[j] !== ']' || first)) {
    if (pattern.startsWith('[:', j) && pattern.indexOf(':]', j + 2) >= 0) j = pattern.indexOf(':]', j + 2) + 2;
    else if (pattern[j] === '\\') j = escapeEnd(pattern, j);
    else j += charLength(pattern, j);
    first = false;
  }
  return j + 1;
}

/** Where the escape starting at `i` (a backslash) ends, in RE2's syntax. */
function escapeEnd(pattern: string, i: number): number {
  const c = pattern[i + 1];
  if (c === 'p' || c === 'P' || c === 'x') {
    if (pattern[i + 2] === '{') {
      const close = pattern.indexOf('}', i + 3);
      return close < 0 ? pattern.length : close + 1;
    }
    return c === 'x' ? i + 4 : i + 3;
  }
  if (c !== undefined && c >= '0' && c <= '7') {
    let j = i + 2;
    while (j < i + 4 && /[0-7]/.test(pattern[j] ?? '')) j++;
    return j;
  }
  return i + 1 + charLength(pattern, i + 1);
}

function charLength(text: string, i: number): number {
  return (text.codePointAt(i) ?? 0) > 0xffff ? 2 : 1;
}

/** Letters in a set, tested by RE2 without folding; cached, as policy sets repeat their patterns. */
const lettersCache = new Map<string, readonly string[]>();
function lettersIn(program: string): readonly string[] {
  const cached = lettersCache.get(program);
  if (cached !== undefined) return cached;
  const compiled = RE2JS.compile(program);
  const letters = ASCII_LETTERS.filter((letter) => compiled.matches(letter));
  if (lettersCache.size >= 1000) lettersCache.clear();
  lettersCache.set(program, letters);
  return letters;
}

/** The letters whose other case is missing from `letters`, in that other case. */
function otherCases(letters: readonly string[]): string {
  const held = new Set(letters);
  return letters.map(swapCase).filter((l) => !held.has(l)).join('');
}

function isAsciiLetter(c: string): boolean {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

function swapCase(c: string): string {
  return c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase();
}
