/**
 * How policies address claims and compare them: a top-level claim name or an
 * RFC 6901 JSON Pointer, and the claim's "string form" (contract section 3).
 * Shared by the matchers and the grant templates so both read a claim the same way.
 */

/** A claim reference that cannot be parsed; the message is safe to show. */
export class ClaimPathError extends Error {
  override name = 'ClaimPathError';
}

/**
 * Splits a claim reference into segments, once, at load. A reference starting
 * with `/` is an RFC 6901 JSON Pointer (section 4: `~1` is `/`, `~0` is `~`,
 * and any other `~` is an error); anything else is one top-level claim name.
 *
 * @example parseClaimPath('/groups/0') // ['groups', '0']
 * @throws ClaimPathError on an empty reference or a bad `~` escape.
 */
export function parseClaimPath(ref: string): readonly string[] {
  if (ref === '') throw new ClaimPathError('a claim name cannot be empty');
  if (!ref.startsWith('/')) return Object.freeze([ref]);
  const segments = ref
    .slice(1)
    .split('/')
    .map((raw) => {
      if (/~(?![01])/.test(raw)) throw new ClaimPathError(`invalid JSON Pointer '${ref}': '~' must be followed by 0 or 1 (RFC 6901)`);
      // Order matters (RFC 6901 section 4): `~01` is `~1` literally, not `/`.
      return raw.replaceAll('~1', '/').replaceAll('~0', '~');
    });
  return Object.freeze(segments);
}

/** RFC 6901 section 4: an array index is `0` or digits without a leading zero. */
const ARRAY_INDEX = /^(?:0|[1-9][0-9]*)$/;

/**
 * The value at `path` in the claims, or undefined when absent. Only own
 * properties count, so `constructor` or `__proto__` never reach a prototype.
 */
export function resolveClaim(claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let node: unknown = claims;
  for (const segment of path) {
    if (Array.isArray(node)) {
      if (!ARRAY_INDEX.test(segment)) return undefined;
      const index = Number(segment);
      if (index >= node.length) return undefined;
      node = node[index];
    } else if (typeof node === 'object' && node !== null) {
      if (!Object.hasOwn(node, segment)) return undefined;
      node = (node as Record<string, unknown>)[segment];
    } else {
      return undefined;
    }
  }
  return node;
}

/**
 * The string a claim compares and renders as: a string as is, a number in
 * JavaScript's canonical form (`String(n)`), a boolean as `true`/`false`.
 * Undefined for anything else (absent, null, object, array), which therefore
 * never equals a policy value and cannot be rendered into a template.
 */
export function toStringForm(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
      return Number.isFinite(value) ? String(value) : undefined;
    case 'boolean':
    case 'bigint':
      return String(value);
    default:
      return undefined;
  }
}

/** Names the kind of a claim value for messages that must not print the value. */
export function describeKind(value: unknown): 'absent' | 'null' | 'an array' | 'an object' | 'a scalar' {
  if (value === undefined) return 'absent';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return 'a scalar';
}
