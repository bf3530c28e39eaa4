import { ClaimPathError, describeKind, parseClaimPath, resolveClaim } from './claim-path.js';
import { toStringForm } from '../values.js';

/** A `${claim}` template split into parts at load. */
export interface Template {
  /** The template as written. */
  readonly source: string;
  /** The literal text between claim references, in order: every rendering contains each of them. */
  readonly literals: readonly string[];
  /** The claim references, in order; empty when the template is plain text. */
  readonly claimRefs: readonly string[];
  /**
   * Renders with claim values inserted literally (never re-expanded).
   * @throws TemplateError when a referenced claim is absent, null, or not a scalar.
   */
  render(claims: Readonly<Record<string, unknown>>, checkValue?: ClaimValueCheck): string;
}

/** Sees each claim value before it is inserted, and throws to refuse it: a TemplateError (e.g. IAM wildcards in a session policy) or the caller's own typed error (e.g. a character an STS field does not take). */
export type ClaimValueCheck = (value: string, claim: string) => void;

export class TemplateError extends Error {
  constructor(readonly claim: string, message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

/** A template that cannot be compiled; the message is safe to show. */
export class TemplateSyntaxError extends Error {
  override name = 'TemplateSyntaxError';
}

type Part = string | { ref: string; path: readonly string[] };

/**
 * Compiles a grant template once, at load (docs/policies/reference.md: "strings may
 * use ${claim} templates").
 *
 * - `${name}` inserts the top-level claim `name`; `${/a/b}` inserts the claim at
 *   that RFC 6901 JSON Pointer.
 * - `$$` is a literal `$`; a `$` not followed by `{` or `$` is literal too.
 * - Claim values are inserted literally: the output is never scanned again, so
 *   a claim holding `${secret}` stays the text `${secret}`.
 *
 * @example compileTemplate('repo:${repository}').render({ repository: 'acme/api' }) // 'repo:acme/api'
 * @throws TemplateSyntaxError on an unterminated `${`, an empty name, or a bad pointer.
 */
export function compileTemplate(source: string): Template {
  const parts: Part[] = [];
  let literal = '';
  let i = 0;
  while (i < source.length) {
    const ch = source.charAt(i);
    const next = source.charAt(i + 1);
    if (ch === '$' && next === '$') {
      literal += '$';
      i += 2;
    } else if (ch === '$' && next === '{') {
      const end = source.indexOf('}', i + 2);
      if (end === -1) throw new TemplateSyntaxError(`unterminated '\${' at character ${i + 1}; write '$$' for a literal '$'`);
      const ref = source.slice(i + 2, end);
      if (ref === '') throw new TemplateSyntaxError(`empty claim name '\${}' at character ${i + 1}`);
      if (/[\s${]/.test(ref)) throw new TemplateSyntaxError(`invalid claim name '${ref}' at character ${i + 1}: no spaces, '$' or '{'`);
      let path: readonly string[];
      try {
        path = parseClaimPath(ref);
      } catch (err) {
        if (err instanceof ClaimPathError) throw new TemplateSyntaxError(err.message);
        throw err;
      }
      if (literal !== '') parts.push(literal);
      literal = '';
      parts.push(Object.freeze({ ref, path }));
      i = end + 1;
    } else {
      literal += ch;
      i += 1;
    }
  }
  if (literal !== '') parts.push(literal);
  Object.freeze(parts);

  return Object.freeze({
    source,
    literals: Object.freeze(parts.filter((part): part is string => typeof part === 'string')),
    claimRefs: Object.freeze(parts.flatMap((part) => (typeof part === 'string' ? [] : [part.ref]))),
    render(claims: Readonly<Record<string, unknown>>, checkValue?: ClaimValueCheck): string {
      let out = '';
      for (const part of parts) {
        if (typeof part === 'string') {
          out += part;
          continue;
        }
        const value = resolveClaim(claims, part.path);
        const text = toStringForm(value);
        if (text === undefined) {
          // The message names the claim and its kind, never its value.
          throw new TemplateError(part.ref, `claim '${part.ref}' is ${describeKind(value) === 'a scalar' ? 'not a string, number or boolean' : describeKind(value)}`);
        }
        checkValue?.(text, part.ref);
        out += text;
      }
      return out;
    },
  });
}
