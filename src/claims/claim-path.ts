/**
 * How policies address claims and compare them: a top-level claim name or an
 * RFC 6901 JSON Pointer, and the claim's "string form" (docs/policies/reference.md).
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

/** Names the kind of a claim value for messages that must not print the value. */
export function describeKind(value: unknown): 'absent' | 'null' | 'an array' | 'an object' | 'a scalar' {
  if (value === undefined) return 'absent';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return 'a scalar';
}
