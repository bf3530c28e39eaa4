/**
 * The messages between the SQLite audit store and its worker thread
 * (`worker.ts`, `worker-client.ts`). They carry data only (structured clone):
 * a call names a backend method and its arguments; a reply carries the
 * result or the error, which is rebuilt on the other side with its name,
 * message, code and causes, so that the store's error mapping and
 * `isValueRefusal` see what the driver reported.
 */
import type { AuditRecord } from '../types.js';
import type { FileIdentity, SqliteBackend } from './backend.js';

/** What the worker is started with (`workerData`). */
export interface SqliteWorkerData {
  path: string;
  busyTimeoutMs: number;
  identity: FileIdentity | null;
}

export type SqliteMethod = keyof SqliteBackend;

export const SQLITE_METHODS: readonly SqliteMethod[] = ['appendBatch', 'head', 'hourSpan', 'hourRanges', 'readPage', 'readRange', 'verifyChain', 'pruneBoundary', 'deleteThrough', 'saveCheckpoint', 'checkpoints', 'ping', 'close'];

export interface SqliteCall {
  id: number;
  method: SqliteMethod;
  args: unknown[];
}

export type SqliteReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError };

/** An error as it crosses between threads. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  cause?: WireError;
}

/** appendBatch's per-entry result as it crosses: the record, or the error that refused that entry alone. */
export type WireAppendResult = { record: AuditRecord } | { refused: WireError };

export function toWireError(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const wire: WireError = { name: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') wire.code = code;
  if (err.cause !== undefined) wire.cause = toWireError(err.cause);
  return wire;
}

export function fromWireError(wire: WireError): Error {
  const err = new Error(wire.message, wire.cause === undefined ? undefined : { cause: fromWireError(wire.cause) });
  err.name = wire.name;
  if (wire.code !== undefined) Object.assign(err, { code: wire.code });
  return err;
}

export function toWireAppendResults(results: readonly (AuditRecord | Error)[]): WireAppendResult[] {
  return results.map((r) => (r instanceof Error ? { refused: toWireError(r) } : { record: r }));
}

export function fromWireAppendResults(results: readonly WireAppendResult[]): (AuditRecord | Error)[] {
  return results.map((r) => ('record' in r ? r.record : fromWireError(r.refused)));
}
