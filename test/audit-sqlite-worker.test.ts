// The SQLite audit store's worker thread (docs/audit.md): ordering of the
// chain under concurrency, failing closed when the worker dies and carrying
// on the same chain after, durability across a killed process, close, and
// the event loop staying free while SQLite waits, and the verification walk
// run inside the worker.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { AuditUnavailableError } from '../src/errors.js';
import { startCheckpointer, verifyAuditLog } from '../src/audit/checkpoints.js';
import { verifyWalk } from '../src/audit/core/verify-walk.js';
import { openSqliteAuditStore, openSqliteAuditStoreWithWorker } from '../src/audit/sqlite/store.js';
import type { ChainVerifyOptions } from '../src/audit/types.js';
import { loadOrCreateSigningKeySet } from '../src/keys/signing-key.js';
import { T0, appendMany, makeEntry } from './helpers/audit-entries.js';
import { createCapturingLogger } from './helpers/broker-fixture.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-worker-'));
  dirs.push(dir);
  return join(dir, 'data', 'audit.db');
}

/** Another connection holding the write lock, as another writer would. */
function holdWriteLock(path: string): { release(): void } {
  const db = new Database(path);
  db.exec('BEGIN EXCLUSIVE');
  return {
    release() {
      db.exec('ROLLBACK');
      db.close();
    },
  };
}

function isWorkerStopped(reason: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AuditUnavailableError, `expected AuditUnavailableError, got ${String(err)}`);
    assert.equal(err.code, 'audit_unavailable');
    assert.equal(err.reason, reason);
    assert.match(String((err.cause as Error | undefined)?.message), /SQLite audit worker stopped/);
    return true;
  };
}

describe('sqlite audit store: worker thread', () => {
  it('500 concurrent appends get contiguous seqs in one chain that verifies', async () => {
    const path = tempPath();
    const store = openSqliteAuditStore(path);
    const records = await appendMany(store, 500, (i) => ({ request_id: `req-${i}` }));
    // Each caller gets its own record back, and the seqs are 1..500 without a gap or a repeat.
    assert.deepEqual(
      records.map((r) => r.request_id),
      records.map((_, i) => `req-${i}`),
    );
    assert.deepEqual(
      records.map((r) => r.seq).sort((a, b) => a - b),
      Array.from({ length: 500 }, (_, i) => i + 1),
    );
    const bySeq = new Map(records.map((r) => [r.seq, r]));
    for (let seq = 2; seq <= 500; seq += 1) assert.equal(bySeq.get(seq)!.prev_hash, bySeq.get(seq - 1)!.hash);
    const verification = await store.verify();
    assert.equal(verification.ok, true);
    assert.equal(verification.events, 500);
    await store.close();
  });

  it('keeps the event loop free while an append waits on another writer’s lock', async () => {
    const path = tempPath();
    const store = openSqliteAuditStore(path, { busyTimeoutMs: 30_000 });
    await store.append(makeEntry());
    const lock = holdWriteLock(path);
    let settled = false;
    const pending = store.append(makeEntry()).finally(() => {
      settled = true;
    });
    // On the event loop, better-sqlite3 would hold this timer until the lock wait ended.
    await sleep(100);
    assert.equal(settled, false);
    lock.release();
    assert.equal((await pending).seq, 2);
    await store.close();
  });

  it('a worker killed mid-batch fails the pending appends and reads closed; the next call restarts it on the same chain', async () => {
    const path = tempPath();
    const { store, backend } = openSqliteAuditStoreWithWorker(path, { busyTimeoutMs: 60_000 });
    await appendMany(store, 3);
    // The lock keeps the batch from committing, whenever the worker receives it.
    const lock = holdWriteLock(path);
    const pending = Array.from({ length: 20 }, () => store.append(makeEntry()));
    await new Promise(setImmediate);
    // Behind the batch in the worker's queue.
    const read = store.query({});
    // A worker waiting on the lock stops once its wait returns: released
    // here, the wait succeeds rather than failing into a dying thread (see terminateWorker).
    const killed = backend.terminateWorker();
    lock.release();
    await killed;
    const outcomes = await Promise.allSettled(pending);
    for (const outcome of outcomes) assert.ok(outcome.status === 'rejected' && isWorkerStopped('audit_write_failed')(outcome.reason));
    await assert.rejects(read, isWorkerStopped('audit_read_failed'));

    const next = await store.append(makeEntry());
    assert.equal(next.seq, 4);
    const verification = await store.verify();
    assert.equal(verification.ok, true);
    assert.equal(verification.events, 4);
    await store.close();
  });

  it('an in-memory log is lost with its worker: every later call fails', async () => {
    const { store, backend } = openSqliteAuditStoreWithWorker(':memory:');
    await store.append(makeEntry());
    await backend.terminateWorker();
    for (let i = 0; i < 2; i += 1) {
      await assert.rejects(store.append(makeEntry()), (err: unknown) => {
        assert.ok(err instanceof AuditUnavailableError);
        assert.equal(err.reason, 'audit_write_failed');
        assert.match(String((err.cause as Error).message), /in-memory audit log was lost/);
        return true;
      });
    }
    await store.close();
  });

  it('close during appends writes everything queued, resolves each append, and is idempotent', async () => {
    const path = tempPath();
    const store = openSqliteAuditStore(path);
    const appends = Array.from({ length: 300 }, () => store.append(makeEntry()));
    const closes = [store.close(), store.close()];
    const records = await Promise.all(appends);
    await Promise.all(closes);
    await store.close();
    assert.deepEqual(
      records.map((r) => r.seq).sort((a, b) => a - b),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    await assert.rejects(store.append(makeEntry()), (err: unknown) => err instanceof AuditUnavailableError);

    const reopened = openSqliteAuditStore(path);
    const verification = await reopened.verify();
    assert.equal(verification.ok, true);
    assert.equal(verification.events, 300);
    await reopened.close();
  });

  it('a store keeps the process alive only while it works: not when idle, yes for an append in flight or a close', () => {
    const storeUrl = pathToFileURL(join(repoRoot, 'src/audit/sqlite/store.ts')).href;
    const entriesUrl = pathToFileURL(join(repoRoot, 'test/helpers/audit-entries.ts')).href;
    // Neither store is closed: the process must still end, after the append.
    const script = `
      import { openSqliteAuditStore } from ${JSON.stringify(storeUrl)};
      import { makeEntry } from ${JSON.stringify(entriesUrl)};
      openSqliteAuditStore(process.env.AUDIT_TEST_DB + '.idle');
      const closing = openSqliteAuditStore(process.env.AUDIT_TEST_DB + '.closing');
      await closing.append(makeEntry());
      await closing.close();
      process.stdout.write('closed ');
      void openSqliteAuditStore(process.env.AUDIT_TEST_DB).append(makeEntry()).then((record) => process.stdout.write(String(record.seq)));
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, env: { ...process.env, AUDIT_TEST_DB: tempPath() }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.signal, null, 'the process did not end by itself');
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout, 'closed 1');
  });

  it('a process killed while appending leaves a log that verifies and holds every append that had resolved', async () => {
    const path = tempPath();
    const storeUrl = pathToFileURL(join(repoRoot, 'src/audit/sqlite/store.ts')).href;
    const entriesUrl = pathToFileURL(join(repoRoot, 'test/helpers/audit-entries.ts')).href;
    // 20 appends in flight at all times, each printed once it resolved.
    const script = `
      import { openSqliteAuditStore } from ${JSON.stringify(storeUrl)};
      import { makeEntry } from ${JSON.stringify(entriesUrl)};
      const store = openSqliteAuditStore(process.env.AUDIT_TEST_DB);
      const lane = async () => {
        for (;;) {
          const record = await store.append(makeEntry());
          process.stdout.write(record.seq + ' ' + record.id + '\\n');
        }
      };
      await Promise.all(Array.from({ length: 20 }, lane));
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, env: { ...process.env, AUDIT_TEST_DB: path }, stdio: ['ignore', 'pipe', 'inherit'] });
    const resolved = new Map<number, string>();
    let buffered = '';
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          const [seq, id] = line.split(' ');
          resolved.set(Number(seq), id!);
        }
        if (resolved.size >= 1000) resolve();
      });
      child.on('exit', () => resolve());
    });
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    assert.ok(resolved.size >= 1000, 'the child stopped before appending 1000 records');

    const store = openSqliteAuditStore(path);
    const verification = await store.verify();
    assert.equal(verification.ok, true);
    const stored = new Map<number, string>();
    for (let page = await store.query({ limit: 1000 }); ; page = await store.query({ limit: 1000, cursor: page.nextCursor })) {
      for (const record of page.events) stored.set(record.seq, record.id);
      if (page.nextCursor === null) break;
    }
    for (const [seq, id] of resolved) assert.equal(stored.get(seq), id, `the append that resolved with seq ${seq} is missing`);
    await store.close();
  });

  describe('the verification walk in the worker', () => {
    /** Runs `sql` on another connection, as someone with write access to the file would. */
    function tamper(path: string, sql: string): void {
      const db = new Database(path);
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    }

    // Past the first batch of the walk (500 records), over two hours.
    const RECORDS = 1200;
    const AT = 777;
    const tamperings: { name: string; sql: string; options?: ChainVerifyOptions; problem: string; seq: number }[] = [
      { name: 'a changed record', sql: `UPDATE audit_events SET policy = 'admin' WHERE seq = ${AT}`, problem: 'hash_mismatch', seq: AT },
      { name: 'a changed claim in a record', sql: `UPDATE audit_events SET claims = replace(claims, 'acme/repo-${AT}"', 'acme/evil"') WHERE seq = ${AT}`, problem: 'hash_mismatch', seq: AT },
      { name: 'a changed claim row', sql: `UPDATE audit_claims SET value = 'acme/evil' WHERE seq = ${AT} AND name = 'repository'`, problem: 'claim_index_mismatch', seq: AT },
      { name: 'a deleted claim row', sql: `DELETE FROM audit_claims WHERE seq = ${AT} AND name = 'run_number'`, problem: 'claim_index_mismatch', seq: AT },
      { name: 'a claim row moved to another record', sql: `DELETE FROM audit_claims WHERE seq = ${AT + 1} AND name = 'repository'; UPDATE audit_claims SET seq = ${AT + 1} WHERE seq = ${AT} AND name = 'repository'`, problem: 'claim_index_mismatch', seq: AT },
      {
        name: 'a claim row duplicated over another in a table rebuilt without its key',
        sql: [
          'CREATE TABLE claims_copy AS SELECT seq, name, value FROM audit_claims',
          'DROP TABLE audit_claims',
          'CREATE TABLE audit_claims (seq INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL)',
          'INSERT INTO audit_claims SELECT * FROM claims_copy',
          'DROP TABLE claims_copy',
          `UPDATE audit_claims SET name = 'repository', value = (SELECT value FROM audit_claims WHERE seq = ${AT} AND name = 'repository') WHERE seq = ${AT} AND name = 'run_number'`,
        ].join('; '),
        problem: 'claim_index_mismatch',
        seq: AT,
      },
      { name: 'a record outside its hour range', sql: `UPDATE audit_hours SET max_seq = ${AT - 1} WHERE max_seq >= ${AT} AND min_seq <= ${AT}`, problem: 'claim_index_mismatch', seq: AT },
      { name: 'a deleted record', sql: `DELETE FROM audit_events WHERE seq = ${AT}`, problem: 'seq_gap', seq: AT + 1 },
      { name: 'a record that no longer parses', sql: `UPDATE audit_events SET claims = '{not json' WHERE seq = ${AT}`, problem: 'unreadable', seq: AT },
      { name: 'a record a checkpoint vouched for with another hash', sql: '', options: { expected: new Map([[AT, '0'.repeat(64)]]) }, problem: 'checkpoint_mismatch', seq: AT },
      { name: 'a record kept before the start of the walk', sql: '', options: { from: { seq: AT, hash: '0'.repeat(64) } }, problem: 'unexpected_record', seq: 1 },
    ];

    for (const { name, sql, options, problem, seq } of tamperings) {
      it(`finds ${name} as the walk over reads from the broker's thread does`, async () => {
        const path = tempPath();
        const { store, backend } = openSqliteAuditStoreWithWorker(path);
        await appendMany(store, RECORDS, (i) => ({ time: new Date(T0 + i * 6_000).toISOString(), claims: { repository: `acme/repo-${i + 1}`, run_number: i + 1 } }));
        if (sql !== '') tamper(path, sql);
        const inWorker = await store.verify(options);
        assert.equal(inWorker.ok, false);
        assert.deepEqual(inWorker.broken.problem, problem);
        assert.equal(inWorker.broken.seq, seq);
        // The reference: the same walk on this thread, every batch of rows read back from the worker (how the store walked before).
        assert.deepEqual(inWorker, await verifyWalk(backend, options));
        await store.close();
      });
    }

    it('serves appends between batches of a long walk, which stops at the head it read first', async () => {
      const path = tempPath();
      const store = openSqliteAuditStore(path);
      const records = await appendMany(store, 20_000);
      let walked = false;
      const walk = store.verify().finally(() => {
        walked = true;
      });
      // Posted after the walk's call: the worker has read the head when it gets this.
      const appended = await store.append(makeEntry());
      assert.equal(walked, false, 'the append waited for the whole walk');
      assert.equal(appended.seq, 20_001);
      assert.deepEqual(await walk, { ok: true, events: 20_000, head: records.at(-1)!.hash, last_seq: 20_000 });
      assert.deepEqual(await store.verify(), { ok: true, events: 20_001, head: appended.hash, last_seq: 20_001 });
      await store.close();
    });

    it('close during a long walk fails the walk closed and still closes', async () => {
      const path = tempPath();
      const store = openSqliteAuditStore(path);
      await appendMany(store, 20_000);
      // Watched from the start: the walk may fail before close resolves.
      const walkFails = assert.rejects(store.verify(), (err: unknown) => err instanceof AuditUnavailableError && err.reason === 'audit_read_failed');
      await store.close();
      await walkFails;
      const reopened = openSqliteAuditStore(path);
      assert.equal((await reopened.verify()).events, 20_000);
      await reopened.close();
    });

    it('a checkpoint made while appends go on vouches for the last record written before it started, which its walk checked', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-worker-'));
      dirs.push(dir);
      const keySet = await loadOrCreateSigningKeySet(join(dir, 'key.jwk'), createCapturingLogger().logger);
      const store = openSqliteAuditStore(tempPath());
      const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
      const records = await appendMany(checkpointer.store, 20_000);
      const checkpoint = checkpointer.checkpointNow();
      const during = await appendMany(checkpointer.store, 50);
      assert.deepEqual(await checkpoint, { ...(await checkpoint)!, seq: 20_000, hash: records.at(-1)!.hash });
      assert.ok(during.every((r) => r.seq > 20_000));
      const verification = await verifyAuditLog(checkpointer.store, keySet.verificationKeys);
      assert.equal(verification.ok, true);
      assert.equal(verification.last_seq, 20_050);
      await checkpointer.stop();
      await store.close();
    });
  });
});
