/**
 * Value helpers every layer shares: what counts as a JSON object, the string
 * form a claim compares and renders as, and how a key path is printed in
 * error messages. Pure; imports nothing of the project.
 */

/** A JSON object (not null, not an array, not a class instance). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * The string a claim compares and renders as (docs/policies/reference.md): a string
 * as is, a finite number in JavaScript's canonical form (`String(n)`), a
 * boolean as `true`/`false`. Undefined for anything else (absent, null,
 * object, array, a non-finite number), which therefore never equals a policy
 * value, is never indexed for audit queries, and cannot fill a template.
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

/** A key path as error messages print it: `grant.session_tags.repo`, `issuers[0].audiences`. */
export function formatKeyPath(keyPath: readonly PropertyKey[]): string {
  return keyPath.reduce<string>((out, key) => (typeof key === 'number' ? `${out}[${key}]` : out === '' ? String(key) : `${out}.${String(key)}`), '');
}
