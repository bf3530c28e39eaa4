/**
 * The one YAML front end: the broker's config (config.ts) and every policy and
 * policy test file (policy/parse.ts) are read here, with the same strictness.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from 'yaml';
import type { YamlParseResult, YamlProblem } from './document.js';
import { parseSimpleYaml } from './fast.js';

/** Bounds alias expansion ("billion laughs"); neither a config nor a policy file has a use for more. */
const MAX_ALIAS_COUNT = 100;

/**
 * Parses one YAML document (YAML 1.2 core schema, so `yes`/`no` stay strings and
 * `<<` is an ordinary key). Syntax errors, duplicate keys, unknown tags,
 * non-scalar keys and multiple documents are problems, each with its line:
 * a config or a policy must mean exactly what it says, so nothing is guessed
 * or dropped.
 *
 * Text in the simple subset most policy files use is read by a fast path
 * (fast.ts) that gives the same value and lines; anything else, and every
 * text with a problem, goes through the `yaml` library. The fast path is kept
 * for start-up time: docs/performance.md, "YAML parsing", has the figures.
 */
export function parseYaml(text: string): YamlParseResult {
  const simple = parseSimpleYaml(text);
  if (simple !== undefined) return { ok: true, doc: simple };
  return parseYamlWithLibrary(text);
}

/** `parseYaml` without the fast path: always the `yaml` library. */
export function parseYamlWithLibrary(text: string): YamlParseResult {
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
    const line = lineAt(err.pos[0]);
    problems.push(err.code === 'DUPLICATE_KEY' ? { line, kind: 'key', message: describeDuplicate(doc, err.pos[0]) } : { line, kind: 'syntax', message: err.message });
  }
  // Warnings (e.g. an unresolved `!tag`) mean the parser guessed; refuse rather than guess.
  for (const warning of doc.warnings) {
    problems.push({ line: lineAt(warning.pos[0]), kind: 'refused', message: warning.message });
  }
  if (problems.length === 0) checkKeys(doc.contents, lineAt, problems);
  if (problems.length > 0) return { ok: false, problems };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // Thrown for an unresolved or over-used alias; the message names no secret. Its line: the first
    // alias that resolves to nothing, else the first alias (every problem names a line).
    return { ok: false, problems: [{ line: lineAt(aliasOffset(doc)), kind: 'refused', message: err instanceof Error ? err.message : String(err) }] };
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
        problems.push({ line: lineAt(offset ?? node.range?.[0]), kind: 'key', message: 'map keys must be plain strings' });
        continue;
      }
      checkKeys(pair.value, lineAt, problems);
    }
  } else if (isSeq(node)) {
    for (const item of node.items) checkKeys(item, lineAt, problems);
  }
}

/** Offset of the first alias without an anchor before it, else of the first alias; else of the document. */
function aliasOffset(doc: Document): number | undefined {
  let first: number | undefined;
  let unresolved: number | undefined;
  visit(doc, {
    Alias(_, alias) {
      first ??= alias.range?.[0];
      if (alias.resolve(doc) === undefined) {
        unresolved = alias.range?.[0];
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return unresolved ?? first ?? doc.contents?.range?.[0] ?? 0;
}

/** Offset of the key at `path`, or of the deepest ancestor that exists. */
function locate(doc: Document, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  // An empty document has no contents: the whole file starts at line 1.
  let offset = doc.contents?.range?.[0] ?? 0;
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
