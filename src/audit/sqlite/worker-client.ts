/**
 * The store's side of the SQLite worker (`worker.ts`): an AuditBackend whose
 * every call is a message to the worker thread that owns the connection.
 *
 * Fails closed: if the worker dies (an uncaught error, out of memory,
 * terminated), every call waiting on it rejects with the cause, and the next
 * call starts a fresh worker. A fresh worker holds nothing from the old one:
 * each append transaction reads the head from the file under the write lock,
 * so a restart cannot fork the chain. An in-memory log (`:memory:`, tests
 * only) died with its worker and is never restarted.
 */
import { Worker } from 'node:worker_threads';
import type { AuditBackend } from '../core/backend.js';
import type { AuditEntry } from '../types.js';
import { isValueRefusal, type SqliteBackend } from './backend.js';
import { fromWireAppendResults, fromWireError, type SqliteCall, type SqliteMethod, type SqliteReply, type SqliteWorkerData, type WireAppendResult } from './worker-protocol.js';

/** The SQLite backend in its worker, plus what tests need to kill the worker as a crash would. */
export interface SqliteWorkerBackend extends AuditBackend {
  /**
   * Terminates the current worker as a crash would, without closing the
   * store: the next call starts a new one. For tests only: a SQLite call
   * that fails in a thread being terminated aborts the whole process
   * (better-sqlite3 cannot raise its error there), so the worker must not
   * be inside a failing call (a lock wait that times out) meanwhile.
   * @internal
   */
  terminateWorker(): Promise<void>;
}

interface PendingCall {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

interface RunningWorker {
  worker: Worker;
  pending: Map<number, PendingCall>;
  /** The error the worker died of, if it reported one before exiting. */
  error: Error | null;
  /** Set once it is being terminated: from then on it keeps the process alive until it has exited. */
  stopping: boolean;
}

/**
 * Starts the worker for the file at `data.path` (already created and
 * migrated: openSqliteFile) and returns the backend that talks to it.
 * @param batchDeadlineMs see AuditBackend.batchDeadlineMs.
 */
export function startSqliteWorker(data: SqliteWorkerData, batchDeadlineMs: number): SqliteWorkerBackend {
  let running: RunningWorker | null = spawn();
  let nextId = 1;
  let closing: Promise<void> | null = null;
  /** Why no worker may be started any more (an in-memory log lost with its worker), or null. */
  let lost: Error | null = null;

  function spawn(): RunningWorker {
    const { script, options } = workerScript();
    const worker = new Worker(script, { ...options, workerData: data });
    const run: RunningWorker = { worker, pending: new Map(), error: null, stopping: false };
    worker.on('message', (reply: SqliteReply) => {
      const call = run.pending.get(reply.id);
      if (call === undefined) return;
      run.pending.delete(reply.id);
      // A reply that comes in while the worker is being terminated (a walk failing after close) must not let the process exit before it has.
      if (run.pending.size === 0 && !run.stopping) worker.unref();
      if (reply.ok) call.resolve(reply.value);
      else call.reject(fromWireError(reply.error));
    });
    worker.on('error', (err) => {
      run.error = err;
    });
    worker.on('exit', (exitCode) => {
      if (running === run) running = null;
      const stopped = new Error(`the SQLite audit worker stopped (exit code ${exitCode})`, run.error === null ? undefined : { cause: run.error });
      if (data.path === ':memory:') lost ??= new Error('the in-memory audit log was lost with its worker', { cause: stopped });
      for (const call of run.pending.values()) call.reject(stopped);
      run.pending.clear();
    });
    // Only calls waiting on the worker keep the process alive (see send).
    // After the listeners: adding a 'message' listener refs the worker again.
    worker.unref();
    return run;
  }

  /** Calls `method` in the worker, starting one if none runs. */
  function call<M extends SqliteMethod>(method: M, ...args: Parameters<SqliteBackend[M]>): ReturnType<SqliteBackend[M]> {
    let reply: Promise<unknown>;
    if (closing !== null) reply = Promise.reject(new Error('the audit store is closed'));
    else if (lost !== null) reply = Promise.reject(lost);
    else reply = send((running ??= spawn()), method, args);
    // The worker answers appendBatch with each entry's link, or its error, as data (worker-protocol.ts).
    return (method === 'appendBatch' ? reply.then((results) => fromWireAppendResults(args[0] as AuditEntry[], results as WireAppendResult[])) : reply) as ReturnType<SqliteBackend[M]>;
  }

  function send(run: RunningWorker, method: SqliteMethod, args: unknown[]): Promise<unknown> {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      try {
        run.worker.postMessage({ id, method, args } satisfies SqliteCall);
      } catch (err) {
        // Arguments that cannot be cloned: a caller bug, this call's alone.
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      run.pending.set(id, { resolve, reject });
      run.worker.ref();
    });
  }

  return {
    forbiddenCharacter: null,
    batchDeadlineMs,
    isValueRefusal,
    appendBatch: (entries) => call('appendBatch', entries),
    head: () => call('head'),
    hourSpan: (fromHour, toHour) => call('hourSpan', fromHour, toHour),
    hourRanges: () => call('hourRanges'),
    readPage: (query, upperSeq) => call('readPage', query, upperSeq),
    readStats: (query, upperSeq, bucketChars, top) => call('readStats', query, upperSeq, bucketChars, top),
    readRange: (afterSeq, throughSeq, limit) => call('readRange', afterSeq, throughSeq, limit),
    verifyChain: (options) => call('verifyChain', options),
    pruneBoundary: (before) => call('pruneBoundary', before),
    deleteThrough: (anchor) => call('deleteThrough', anchor),
    saveCheckpoint: (checkpoint) => call('saveCheckpoint', checkpoint),
    checkpoints: () => call('checkpoints'),
    ping: () => call('ping'),

    close() {
      closing ??= (async () => {
        const run = running;
        if (run === null) return;
        try {
          // Replies come back in the order of the calls, but for a
          // verification walk, which spans several turns of the worker's
          // loop: every other call made before close (a batch in flight) has
          // its answer before this one. A walk still running fails at its
          // next batch (the store is closed) before touching SQLite, so the
          // worker is idle when terminated (see terminateWorker).
          await send(run, 'close', []);
        } finally {
          await stop(run);
        }
      })();
      return closing;
    },

    async terminateWorker() {
      if (running !== null) await stop(running);
    },
  };

  /** Terminates `run`'s worker; the process stays alive until it has stopped, so that whoever awaits this carries on. */
  async function stop(run: RunningWorker): Promise<void> {
    run.stopping = true;
    run.worker.ref();
    await run.worker.terminate();
  }
}

/**
 * The worker's entry point beside this module: `worker.js` in the built
 * broker (`dist/`). Run from the TypeScript sources (tests, under tsx), the
 * sibling is `worker.ts`, and tsx's loader does not reach a worker's entry
 * point by itself, so a one-line bootstrap registers it first.
 */
function workerScript(): { script: string | URL; options: { eval?: boolean } } {
  if (!import.meta.url.endsWith('.ts')) return { script: new URL('./worker.js', import.meta.url), options: {} };
  const entry = new URL('./worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return { script: `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`, options: { eval: true } };
}
