import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import { parseSimpleYaml } from './yaml-fast.js';

/** A path into a parsed document: map keys and sequence indexes. */
export type KeyPath = readonly (string | number)[];

/** A YAML document as plain data, plus where each key was written. */
export interface YamlDocument {
  /** The document as plain JS data (maps become objects, `__proto__` stays an own key). */
  readonly value: unknown;
  /**
   * The 1-based line of the key at `path` (of the item, for a sequence index).
   * When the path does not exist, the line of its deepest existing ancestor, so
   * "missing key" issues point at the map that lacks it.
   */
  lineOf(path: KeyPath): number | undefined;
}

/** One reason the text is not a usable YAML document. */
export interface YamlProblem {
  /** 1-based; absent when the problem has no single place. */
  line: number | undefined;
  message: string;
}

export type YamlParseResult = { ok: true; doc: YamlDocument } | { ok: false; problems: YamlProblem[] };

/** Bounds alias expansion ("billion laughs"); a policy file has no use for more. */
const MAX_ALIAS_COUNT = 100;

/**
 * Parses one YAML document (YAML 1.2 core schema, so `yes`/`no` stay strings and
 * `<<` is an ordinary key). Syntax errors, duplicate keys, unknown tags,
 * non-scalar keys and multiple documents are problems, each with its line:
 * a policy must mean exactly what it says, so nothing is guessed or dropped.
 *
 * Text in the simple subset most policy files use is read by a fast path
 * (yaml-fast.ts) that gives the same value and lines; anything else, and
 * every text with a problem, goes through the `yaml` library.
 */
export function parseYamlDocument(text: string): YamlParseResult {
  const simple = parseSimpleYaml(text);
  if (simple !== undefined) return { ok: true, doc: simple };
  return parseYamlDocumentFully(text);
}

/** `parseYamlDocument` without the fast path: always the `yaml` library. */
export function parseYamlDocumentFully(text: string): YamlParseResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    uniqueKeys: true,
    version: '1.2',
    schema: 'core',
    merge: false,
  });
  const lineAt = (offset: number | undefined): number | undefined => (offset === undefined ? undefined : lineCounter.linePos(offset).line);

  const problems: YamlProblem[] = [];
  for (const err of doc.errors) {
    const message = err.code === 'DUPLICATE_KEY' ? describeDuplicate(doc, err.pos[0]) : `YAML syntax error: ${err.message}`;
    problems.push({ line: lineAt(err.pos[0]), message });
  }
  // Warnings (e.g. an unresolved `!tag`) mean the parser guessed; refuse rather than guess.
  for (const warning of doc.warnings) {
    problems.push({ line: lineAt(warning.pos[0]), message: `YAML: ${warning.message}` });
  }
  if (problems.length === 0) checkKeys(doc.contents, lineAt, problems);
  if (problems.length > 0) return { ok: false, problems };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // Thrown for an unresolved or over-used alias; the message names no secret.
    return { ok: false, problems: [{ line: undefined, message: `YAML: ${err instanceof Error ? err.message : String(err)}` }] };
  }
  return {
    ok: true,
    doc: { value, lineOf: (path) => lineAt(locate(doc, path)) },
  };
}

/** Names the repeated key; the error's own range covers only its first character. */
function describeDuplicate(doc: Document, offset: number): string {
  let key: string | undefined;
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        key = String(pair.key.value);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return `duplicate key${key === undefined ? '' : ` '${key}'`} (each key may appear once per map)`;
}

/**
 * Map keys must be plain scalars: the yaml library would stringify a
 * collection key (`? [a]`) and a null key, which hides a mistake.
 */
function checkKeys(node: unknown, lineAt: (offset: number | undefined) => number | undefined, problems: YamlProblem[]): void {
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = pair.key;
      if (!isScalar(key) || !['string', 'number', 'boolean'].includes(typeof key.value)) {
        const offset = isScalar(key) || isMap(key) || isSeq(key) || isAlias(key) ? key.range?.[0] : undefined;
        problems.push({ line: lineAt(offset ?? node.range?.[0]), message: 'map keys must be plain strings' });
        continue;
      }
      checkKeys(pair.value, lineAt, problems);
    }
  } else if (isSeq(node)) {
    for (const item of node.items) checkKeys(item, lineAt, problems);
  }
}

/** Offset of the key at `path`, or of the deepest ancestor that exists. */
function locate(doc: Document, path: KeyPath): number | undefined {
  let node: unknown = doc.contents;
  let offset = (doc.contents as Node | null)?.range?.[0];
  for (const segment of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node) && typeof segment === 'string') {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === segment);
      if (!pair || !isScalar(pair.key)) return offset;
      offset = pair.key.range?.[0] ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item: unknown = node.items[segment];
      if (!isScalar(item) && !isMap(item) && !isSeq(item) && !isAlias(item)) return offset;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else {
      return offset;
    }
  }
  return offset;
}
