/**
 * The SQLite audit store's worker thread: owns the one connection to the
 * file and serves the backend's methods (`backend.ts`) in the order their
 * messages arrive, so the broker's event loop never waits on SQLite
 * (docs/audit.md). A reply to appendBatch is posted only after its COMMIT
 * returned.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openSqliteBackend } from './backend.js';
import { SQLITE_METHODS, toWireAppendResults, toWireError, type SqliteCall, type SqliteReply, type SqliteWorkerData } from './worker-protocol.js';

const port = parentPort;
if (port === null) throw new Error('the SQLite audit worker must run in a worker thread');
const backend = openSqliteBackend(workerData as SqliteWorkerData);

port.on('message', (call: SqliteCall) => {
  void serve(call).then((reply) => port.postMessage(reply));
});

async function serve({ id, method, args }: SqliteCall): Promise<SqliteReply> {
  try {
    if (!SQLITE_METHODS.includes(method)) throw new TypeError(`unknown audit backend method: ${String(method)}`);
    // Every method but verifyChain runs synchronously up to its result
    // (better-sqlite3), so those never interleave; the walk yields between
    // batches, each read synchronously, and calls that arrive meanwhile run
    // whole in between.
    const value: unknown = await (backend[method] as (...a: unknown[]) => Promise<unknown>)(...args);
    return { id, ok: true, value: method === 'appendBatch' ? toWireAppendResults(value as Parameters<typeof toWireAppendResults>[0]) : value };
  } catch (err) {
    return { id, ok: false, error: toWireError(err) };
  }
}
