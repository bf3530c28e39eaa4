/**
 * The errors every audit store reports (docs/audit.md: fail closed). A
 * driver's error travels only as a `cause` reduced to its message and code:
 * PostgreSQL's `detail` can quote a failing row, that is, a record.
 */
import { AuditUnavailableError } from '../../errors.js';

/**
 * What of a driver error may travel as a `cause`: its message and code
 * (SQLSTATE, SQLITE_*, errno) only, down its chain of causes, with every
 * occurrence of each of `secrets` (a password in the store's URL) replaced.
 */
export function sanitize(err: unknown, secrets: readonly string[] = []): Error {
  if (!(err instanceof Error)) return new Error('unknown error');
  const code = (err as { code?: unknown }).code;
  let message = err.message;
  for (const secret of secrets) if (secret !== '') message = message.replaceAll(secret, '[redacted]');
  const clean = new Error(message, err.cause instanceof Error ? { cause: sanitize(err.cause, secrets) } : undefined);
  if (typeof code === 'string') Object.assign(clean, { code });
  return clean;
}

/**
 * What of `url` must never reach a log through an open failure's cause: the
 * whole URL and its password, as written and decoded (the driver decodes it).
 * A URL that does not parse yields its whole authority instead.
 */
export function urlSecrets(url: string): string[] {
  let password: string;
  try {
    password = new URL(url).password;
  } catch {
    return [url, /^[^:]*:\/\/([^/?#]*)/.exec(url)?.[1] ?? ''];
  }
  let decoded = password;
  try {
    decoded = decodeURIComponent(password);
  } catch {
    // Not valid percent-encoding: the driver cannot have decoded it either.
  }
  return [url, password, decoded];
}

/** @param secrets strings to keep out of the cause (see sanitize). */
export function openFailed(cause: unknown, secrets: readonly string[] = []): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot be opened.', { reason: 'audit_open_failed', cause: sanitize(cause, secrets) });
}

export function writeFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log could not record this decision.', { reason: 'audit_write_failed', cause: sanitize(cause) });
}

export function readFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot be read.', { reason: 'audit_read_failed', cause: sanitize(cause) });
}

export function unwritable(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot take writes.', { reason: 'audit_unwritable', cause: sanitize(cause) });
}
