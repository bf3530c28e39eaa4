/**
 * The SQLite audit store (docs/audit.md): the store core (`../core/store.ts`)
 * over the SQLite backend, which runs in a worker thread (`worker.ts`) so
 * that no commit, fsync or lock wait blocks the broker's event loop.
 */
import { openFailed } from '../core/errors.js';
import { createAuditStore, type AuditStoreOptions } from '../core/store.js';
import type { AuditStore } from '../types.js';
import { openSqliteFile, toSqliteSelect } from './backend.js';
import { startSqliteWorker, type SqliteWorkerBackend } from './worker-client.js';

export { toSqliteSelect };

export interface SqliteAuditStoreOptions extends AuditStoreOptions {
  /** How long a write waits for another connection's lock before failing; default 2000 ms. */
  busyTimeoutMs?: number;
}

const DEFAULT_BUSY_TIMEOUT_MS = 2000;
/**
 * On top of the lock wait, how long one batch may take to write and commit;
 * together they bound how long an append waits in the queue behind a batch
 * in flight (AuditBackend.batchDeadlineMs).
 */
const BATCH_WRITE_ALLOWANCE_MS = 3000;

/**
 * Opens (creating if needed) the audit log at `path`: the parent directory is
 * created with mode 0700, the file with mode 0600, and the schema is created
 * or migrated, here, before the store returns; then the worker thread that
 * serves every read and write is started.
 *
 * @param path file path, or `:memory:` (tests only: nothing is durable, and
 *   the log is lost for good if its worker dies).
 * @throws AuditUnavailableError (reason `audit_open_failed`) if the file cannot
 *   be opened, is not an audit log, or has a newer schema than this code.
 *
 * @example
 * const audit = openSqliteAuditStore('./data/audit.db', { onAppendSeconds: (s) => histogram.observe(s) });
 * const record = await audit.append(entry); // durable once resolved
 */
export function openSqliteAuditStore(path: string, options: SqliteAuditStoreOptions = {}): AuditStore {
  return openSqliteAuditStoreWithWorker(path, options).store;
}

/**
 * openSqliteAuditStore, also returning its backend, whose worker tests
 * terminate to see the store fail closed.
 * @internal
 */
export function openSqliteAuditStoreWithWorker(path: string, options: SqliteAuditStoreOptions = {}): { store: AuditStore; backend: SqliteWorkerBackend } {
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new TypeError('busyTimeoutMs must be a non-negative integer');
  let identity;
  try {
    identity = openSqliteFile(path, busyTimeoutMs);
  } catch (err) {
    throw openFailed(err);
  }
  const backend = startSqliteWorker({ path, busyTimeoutMs, identity }, busyTimeoutMs + BATCH_WRITE_ALLOWANCE_MS);
  return { store: createAuditStore(backend, options), backend };
}
