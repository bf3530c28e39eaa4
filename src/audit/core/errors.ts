/**
 * The errors every audit store reports (docs/audit.md: fail closed). A
 * driver's error travels only as a `cause` reduced to its message and code:
 * PostgreSQL's `detail` can quote a failing row, that is, a record.
 */
import { AuditUnavailableError } from '../../errors.js';

/** What of a driver error may travel as a `cause`: its message and code (SQLSTATE, SQLITE_*) only. */
export function sanitize(err: unknown): Error {
  if (!(err instanceof Error)) return new Error('unknown error');
  const code = (err as { code?: unknown }).code;
  const clean = new Error(err.message, err.cause === undefined ? undefined : { cause: err.cause instanceof Error ? sanitize(err.cause) : undefined });
  if (typeof code === 'string') Object.assign(clean, { code });
  return clean;
}

export function openFailed(cause: unknown): AuditUnavailableError {
  return new AuditUnavailableError('The audit log cannot be opened.', { reason: 'audit_open_failed', cause: sanitize(cause) });
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
