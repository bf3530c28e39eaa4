import { createHash } from 'node:crypto';

/**
 * How a bearer credential is named in the audit log (`credential_id`,
 * docs/audit.md): `sha256:` and the hex SHA-256 of the token, never the
 * token. Whoever holds the token can find its record by hashing it.
 */
export function toCredentialFingerprint(token: string): string {
  return `sha256:${createHash('sha256').update(token).digest('hex')}`;
}
