/**
 * What the YAML front end (parse.ts) gives back, shared by its two readers:
 * the `yaml` library and the fast path (fast.ts).
 */

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
  lineOf(path: readonly PropertyKey[]): number | undefined;
}

/** One reason the text is not a usable YAML document. */
export interface YamlProblem {
  /** 1-based; absent when the problem has no single place. */
  line: number | undefined;
  /**
   * `syntax`: the text is not YAML. `refused`: YAML the front end does not
   * read, because the library would have to guess (an unknown tag) or expand
   * too much (aliases). `key`: a duplicate or non-string map key. Each reader
   * (config, policies) frames the message its own way.
   */
  kind: 'syntax' | 'refused' | 'key';
  /** What is wrong, without framing: the library's message, or the front end's own for `key`. */
  message: string;
}

export type YamlParseResult = { ok: true; doc: YamlDocument } | { ok: false; problems: YamlProblem[] };
