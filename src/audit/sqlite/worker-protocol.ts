/**
 * The messages between the SQLite audit store and its worker thread
 * (`worker.ts`, `worker-client.ts`). They carry data only (structured clone):
 * a call names a backend method and its arguments; a reply carries the
 * result or the error, which is rebuilt on the other side with its name,
 * message, code and causes, so that the store's error mapping and
 * `isValueRefusal` see what the driver reported.
 */
import type { AuditEntry, AuditRecord } from '../types.js';
import type { FileIdentity, SqliteBackend } from './backend.js';

/** What the worker is started with (`workerData`). */
export interface SqliteWorkerData {
  path: string;
  busyTimeoutMs: number;
  identity: FileIdentity | null;
}

export type SqliteMethod = keyof SqliteBackend;

export const SQLITE_METHODS: readonly SqliteMethod[] = ['appendBatch', 'head', 'hourSpan', 'hourRanges', 'readPage', 'readStats', 'readRange', 'verifyChain', 'pruneBoundary', 'deleteThrough', 'saveCheckpoint', 'checkpoints', 'ping', 'close'];

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

/**
 * appendBatch's per-entry result as it crosses: the record's place in the
 * chain, or the error that refused that entry alone. Not the whole record:
 * the broker's thread already holds the entry it sent, and copying its
 * claims back would cost the event loop a second structured clone per record.
 */
export type WireAppendResult = { link: Pick<AuditRecord, 'seq' | 'prev_hash' | 'hash'> } | { refused: WireError };

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
  return results.map((r) => (r instanceof Error ? { refused: toWireError(r) } : { link: { seq: r.seq, prev_hash: r.prev_hash, hash: r.hash } }));
}

/**
 * The records of a batch from the entries sent (canonical, and cloned
 * unchanged: the record the worker stored and hashed is each entry plus its
 * link) and the worker's per-entry results, in the same order.
 */
export function fromWireAppendResults(entries: readonly AuditEntry[], results: readonly WireAppendResult[]): (AuditRecord | Error)[] {
  if (results.length !== entries.length) throw new Error(`the SQLite audit worker answered ${results.length} results for ${entries.length} entries`);
  return results.map((r, i) => ('link' in r ? { ...entries[i]!, ...r.link } : fromWireError(r.refused)));
}
