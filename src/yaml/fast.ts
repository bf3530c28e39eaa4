/**
 * A fast path for the YAML that policy files are almost always written in
 * (docs/performance.md, "YAML parsing": the `yaml` library takes 0.2 to 0.6 ms
 * per policy file, over 2 s of start-up at 10,000 files): block maps, block
 * sequences of one-line values, one-line flow sequences and flow maps, plain,
 * single- and double-quoted scalars, comments.
 *
 * It either returns exactly what `parseYamlWithLibrary` (parse.ts) would (the
 * same plain data, built the way `yaml`'s `toJS` builds it, and the same
 * `lineOf` answers) or undefined, and the caller parses the text fully. It is
 * deliberately narrow: anything it does not fully understand (tabs, CR, BOM,
 * control characters, anchors, aliases, tags, directives, block scalars, multi-line
 * scalars, escapes other than `\\` and `\"`, duplicate keys, keys that are not
 * plain names, plain scalars that could be numbers other than small decimal
 * integers, empty values, odd indentation...) falls back, so every error and
 * warning still comes from the full parser with its own message and line.
 * `test/yaml-fast.test.ts` checks the two agree.
 */
import type { YamlDocument } from './document.js';

type FastNode = { kind: 'scalar' } | { kind: 'map'; entries: Map<string, Located> } | { kind: 'seq'; items: Located[] };
/** A node and the 1-based line of its key (map entries) or of the item itself (sequence items). */
interface Located {
  line: number;
  node: FastNode;
}
interface Parsed {
  value: unknown;
  node: FastNode;
}
interface Line {
  /** 1-based. */
  number: number;
  indent: number;
  /** The line after its indentation; never empty, never a comment. */
  content: string;
}

/** Thrown inside the fast path to give up; never escapes `parseSimpleYaml`. */
class Unsupported extends Error {}
const unsupported = (): never => {
  throw new Unsupported();
};

/**
 * Newlines and printable characters only: no tabs, CR, NEL, BOM, line or
 * paragraph separators, control characters or lone surrogates to reason about.
 * (Only the space is trimmed below: YAML trims spaces and tabs, never U+00A0 or U+3000.)
 */
const SIMPLE_TEXT = /^(?:[\n\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]|[\ud800-\udbff][\udc00-\udfff])*$/;
/** Keys the fast path accepts: plain names and JSON Pointers (core schema resolves them to strings, see `isPlainString`). */
const KEY = /^[A-Za-z_/][A-Za-z0-9_./~-]*/;
/** A block map entry: a key, then `:` and a space or the end of the line. */
const KEY_LINE = /^([A-Za-z_/][A-Za-z0-9_./~-]*):(?: +|$)/;
/** What may follow a value on its line: spaces, or spaces and a comment. */
const TRAILER = /^(?: *| +#.*)$/;
/** A plain scalar may not start with an indicator (YAML 1.2 section 7.3.3); the exceptions (`-x`, `:x`, `?x`) fall back too. */
const INDICATOR_FIRST = /^[-?:,[\]{}#&*!|>'"%@`]/;
/** Plain scalars of the core schema that are not strings, or might not be. */
const NULL_WORDS = new Set(['~', 'null', 'Null', 'NULL']);
const BOOL_WORDS = new Map([
  ['true', true],
  ['True', true],
  ['TRUE', true],
  ['false', false],
  ['False', false],
  ['FALSE', false],
]);
/** Decimal integers that are exact as a double and resolve the same by `parseInt` and `Number`. */
const SMALL_INT = /^(?:0|[1-9][0-9]{0,14})$/;
/** Longer lines fall back: `yaml` limits implicit keys to 1024 characters. */
const MAX_LINE = 1000;

/**
 * Parses `text` if it is in the simple subset, else returns undefined.
 * Never throws.
 */
export function parseSimpleYaml(text: string): YamlDocument | undefined {
  if (!SIMPLE_TEXT.test(text)) return undefined;
  try {
    return parse(text);
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
}

function parse(text: string): YamlDocument {
  const lines: Line[] = [];
  const raw = text.split('\n');
  for (let i = 0; i < raw.length; i++) {
    const line = raw[i] as string;
    if (line.length > MAX_LINE) unsupported();
    let indent = 0;
    while (line.charCodeAt(indent) === 32) indent++;
    const content = line.slice(indent);
    if (content === '' || content.startsWith('#')) continue;
    // Directives and document markers.
    if (indent === 0 && (content.startsWith('%') || content.startsWith('---') || content.startsWith('...'))) unsupported();
    lines.push({ number: i + 1, indent, content: trimSpaces(content) });
  }
  const first = lines[0];
  if (first === undefined || first.indent !== 0) unsupported();
  const state = { lines, next: 0 };
  const root = blockMap(state, 0);
  if (state.next !== lines.length) unsupported();
  const rootLine = (first as Line).number;
  return {
    value: root.value,
    lineOf(path: readonly PropertyKey[]): number | undefined {
      let node = root.node;
      let line = rootLine;
      for (const segment of path) {
        let found: Located | undefined;
        if (node.kind === 'map' && typeof segment === 'string') found = node.entries.get(segment);
        else if (node.kind === 'seq' && typeof segment === 'number') found = node.items[segment];
        if (found === undefined) return line;
        line = found.line;
        node = found.node;
      }
      return line;
    },
  };
}

interface State {
  lines: Line[];
  next: number;
}

/** A block map whose keys sit at exactly `indent`. */
function blockMap(state: State, indent: number): Parsed {
  const object: Record<string, unknown> = {};
  const entries = new Map<string, Located>();
  while (state.next < state.lines.length) {
    const line = state.lines[state.next] as Line;
    if (line.indent < indent) break;
    if (line.indent > indent) unsupported();
    const match = KEY_LINE.exec(line.content);
    if (match === null) unsupported();
    const key = (match as RegExpExecArray)[1] as string;
    checkKey(key);
    if (entries.has(key)) unsupported();
    const rest = line.content.slice((match as RegExpExecArray)[0].length);
    state.next++;
    let parsed: Parsed;
    if (rest === '' || rest.startsWith('#')) {
      // The value is the block below: a deeper map or sequence, or a sequence at the same indentation.
      const below = state.lines[state.next];
      if (below === undefined) unsupported();
      const { indent: belowIndent, content } = below as Line;
      const isItem = content === '-' || content.startsWith('- ');
      if (belowIndent > indent) parsed = isItem ? blockSeq(state, belowIndent) : blockMap(state, belowIndent);
      else if (belowIndent === indent && isItem) parsed = blockSeq(state, indent);
      else parsed = unsupported(); // an empty value: null
    } else {
      parsed = inlineValue(rest, line.number);
      const below = state.lines[state.next];
      // A deeper line after a one-line value continues a multi-line scalar, or is an error.
      if (below !== undefined && below.indent > indent) unsupported();
    }
    setKey(object, key, parsed.value);
    entries.set(key, { line: line.number, node: parsed.node });
  }
  if (entries.size === 0) unsupported();
  return { value: object, node: { kind: 'map', entries } };
}

/** A block sequence of one-line values whose `- ` sits at exactly `indent`. */
function blockSeq(state: State, indent: number): Parsed {
  const array: unknown[] = [];
  const items: Located[] = [];
  while (state.next < state.lines.length) {
    const line = state.lines[state.next] as Line;
    if (line.indent !== indent || !line.content.startsWith('- ')) break;
    let from = 2;
    while (line.content.charCodeAt(from) === 32) from++;
    const rest = line.content.slice(from);
    if (rest === '' || rest.startsWith('#')) unsupported();
    const parsed = inlineValue(rest, line.number);
    array.push(parsed.value);
    items.push({ line: line.number, node: parsed.node });
    state.next++;
    const below = state.lines[state.next];
    if (below !== undefined && below.indent > indent) unsupported();
  }
  if (items.length === 0) unsupported();
  return { value: array, node: { kind: 'seq', items } };
}

/** A value that starts and ends on its line, followed by nothing but spaces and a comment. */
function inlineValue(text: string, line: number): Parsed {
  const first = text[0];
  if (first === '"' || first === "'" || first === '[' || first === '{') {
    const reader = { text, at: 0 };
    const parsed = first === '[' ? flowSeq(reader, line) : first === '{' ? flowMap(reader, line) : quoted(reader);
    if (!TRAILER.test(text.slice(reader.at))) unsupported();
    return parsed;
  }
  const comment = text.indexOf(' #');
  const plain = trimSpaces(comment === -1 ? text : text.slice(0, comment));
  if (plain.includes(': ') || plain.endsWith(':')) unsupported();
  return { value: plainScalar(plain), node: { kind: 'scalar' } };
}

interface Reader {
  text: string;
  at: number;
}

/** Drops trailing spaces (only spaces: `trimEnd` would also drop U+00A0 and friends, which YAML keeps). */
function trimSpaces(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 32) end--;
  return end === text.length ? text : text.slice(0, end);
}

function skipSpaces(reader: Reader): void {
  while (reader.text.charCodeAt(reader.at) === 32) reader.at++;
}

/** A one-line `[a, "b", 'c']` of scalars. */
function flowSeq(reader: Reader, line: number): Parsed {
  reader.at++; // [
  const array: unknown[] = [];
  const items: Located[] = [];
  for (;;) {
    skipSpaces(reader);
    const value = flowScalar(reader, ',]');
    array.push(value);
    items.push({ line, node: { kind: 'scalar' } });
    skipSpaces(reader);
    const ch = reader.text[reader.at++];
    if (ch === ']') break;
    if (ch !== ',') unsupported();
  }
  return { value: array, node: { kind: 'seq', items } };
}

/** A one-line `{ key: value, ... }` whose values are scalars or one-line flow sequences. */
function flowMap(reader: Reader, line: number): Parsed {
  reader.at++; // {
  const object: Record<string, unknown> = {};
  const entries = new Map<string, Located>();
  for (;;) {
    skipSpaces(reader);
    const key = KEY.exec(reader.text.slice(reader.at))?.[0];
    if (key === undefined) unsupported();
    checkKey(key as string);
    if (entries.has(key as string)) unsupported();
    reader.at += (key as string).length;
    if (reader.text[reader.at] !== ':' || reader.text[reader.at + 1] !== ' ') unsupported();
    reader.at += 2;
    skipSpaces(reader);
    const parsed: Parsed = reader.text[reader.at] === '[' ? flowSeq(reader, line) : { value: flowScalar(reader, ',}'), node: { kind: 'scalar' } };
    setKey(object, key as string, parsed.value);
    entries.set(key as string, { line, node: parsed.node });
    skipSpaces(reader);
    const ch = reader.text[reader.at++];
    if (ch === '}') break;
    if (ch !== ',') unsupported();
  }
  return { value: object, node: { kind: 'map', entries } };
}

/** A quoted scalar, or a plain one ending before one of `stops`; no empty or odd items. */
function flowScalar(reader: Reader, stops: string): unknown {
  const first = reader.text[reader.at];
  if (first === '"' || first === "'") return quoted(reader).value;
  let end = reader.at;
  while (end < reader.text.length && !stops.includes(reader.text[end] as string)) end++;
  const plain = trimSpaces(reader.text.slice(reader.at, end));
  // In flow context `[]{},` end a plain scalar and `:`/`#` have rules of their own: leave them to the full parser.
  if (/[[\]{}:#]/.test(plain)) unsupported();
  reader.at = end;
  return plainScalar(plain);
}

/** A one-line quoted scalar: `'...'` with `''` for a quote, or `"..."` with only `\\` and `\"` escapes. */
function quoted(reader: Reader): Parsed {
  const { text } = reader;
  const quote = text[reader.at];
  let out = '';
  let i = reader.at + 1;
  for (;;) {
    const ch = text[i];
    if (ch === undefined) unsupported(); // continues on the next line
    if (quote === "'") {
      if (ch === "'") {
        if (text[i + 1] !== "'") break;
        out += "'";
        i += 2;
        continue;
      }
    } else if (ch === '"') {
      break;
    } else if (ch === '\\') {
      const escaped = text[i + 1];
      if (escaped !== '\\' && escaped !== '"') unsupported();
      out += escaped;
      i += 2;
      continue;
    }
    out += ch;
    i++;
  }
  reader.at = i + 1;
  return { value: out, node: { kind: 'scalar' } };
}

/** A plain scalar resolved by the YAML 1.2 core schema: null, bool, small decimal int, or a string that nothing else could match. */
function plainScalar(plain: string): unknown {
  if (plain === '' || INDICATOR_FIRST.test(plain)) unsupported();
  if (NULL_WORDS.has(plain)) return null;
  const bool = BOOL_WORDS.get(plain);
  if (bool !== undefined) return bool;
  if (SMALL_INT.test(plain)) return Number(plain);
  // Every other int, float, hex, octal, .inf and .nan form starts with one of these.
  if (/^[-+.0-9]/.test(plain)) unsupported();
  return plain;
}

/** Keys must resolve to the string as written; `true: x` or `null: x` are left to the full parser. */
function checkKey(key: string): void {
  if (NULL_WORDS.has(key) || BOOL_WORDS.has(key)) unsupported();
}

/** As `yaml`'s toJS adds a pair: an own data property, even for `__proto__` or an inherited name. */
function setKey(object: Record<string, unknown>, key: string, value: unknown): void {
  if (key in object) Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  else object[key] = value;
}
