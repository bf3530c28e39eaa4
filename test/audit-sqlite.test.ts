import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { AuditUnavailableError, InvalidRequestError } from '../src/errors.js';
import { compileAuditQuery, queryAll } from '../src/audit/query.js';
import { GENESIS_HASH, hashRecord, newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore, toSqliteSelect, type SqliteAuditStoreOptions } from '../src/audit/sqlite-store.js';
import type { AuditEntry, AuditQuery, AuditRecord, AuditStore } from '../src/audit/types.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-'));
  dirs.push(dir);
  return dir;
}

function openStore(options: SqliteAuditStoreOptions = {}): { store: AuditStore; path: string } {
  const path = join(tempDir(), 'data', 'audit.db');
  return { store: openSqliteAuditStore(path, { busyTimeoutMs: 200, ...options }), path };
}

const T0 = Date.UTC(2026, 10, 25, 19, 0, 0);

function makeEntry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(T0).toISOString(),
    decision: 'issued',
    error: null,
    reason: null,
    request_id: 'req-1',
    issuer: 'https://token.actions.githubusercontent.com',
    subject: 'repo:acme/api:ref:refs/heads/main',
    audience: ['https://broker.example.com'],
    jti: 'jti-1',
    token_sha256: 'a'.repeat(64),
    claims: { repository: 'acme/api', run_number: 6, ref_protected: true },
    unverified: null,
    policy: 'api-deploy-prod',
    policy_sha256: 'b'.repeat(64),
    provider: 'aws',
    target: 'arn:aws:iam::123456789012:role/deploy',
    credential_id: 'ASIAEXAMPLE',
    expires_at: new Date(T0 + 900_000).toISOString(),
    duration_seconds: 900,
    client_ip: '127.0.0.1',
    user_agent: 'test',
    ...overrides,
  };
}

async function appendMany(store: AuditStore, n: number, overrides: (i: number) => Partial<AuditEntry> = () => ({})): Promise<AuditRecord[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => store.append(makeEntry(overrides(i)))));
}

/** A second connection to the same file, as an attacker (or an operator's sqlite3 shell) would have. */
function rawConnection(path: string): Database.Database {
  return new Database(path, { timeout: 200 });
}

function isUnavailable(reason: string, causeCode?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof AuditUnavailableError, `expected AuditUnavailableError, got ${String(err)}`);
    assert.equal(err.code, 'audit_unavailable');
    assert.equal(err.reason, reason);
    if (causeCode !== undefined) assert.match(String((err.cause as { code?: unknown } | undefined)?.code), new RegExp(`^${causeCode}`));
    return true;
  };
}

function isBadRequest(reason: string) {
  return (err: unknown) => err instanceof InvalidRequestError && err.reason === reason;
}

describe('sqlite audit store: append and read back', () => {
  it('creates the directory (0700) and file (0600) and the versioned schema', async () => {
    const dir = tempDir();
    const path = join(dir, 'nested', 'data', 'audit.db');
    const store = openSqliteAuditStore(path);
    await store.close();
    assert.equal(statSync(join(dir, 'nested', 'data')).mode & 0o777, 0o700);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const raw = rawConnection(path);
    try {
      assert.equal(raw.prepare('SELECT version FROM schema_version').pluck().get(), 1);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
      const indexes = raw.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all();
      assert.deepEqual(indexes, [
        'audit_claims_value',
        'audit_events_credential_id',
        'audit_events_decision',
        'audit_events_issuer',
        'audit_events_policy',
        'audit_events_subject',
        'audit_events_time',
      ]);
    } finally {
      raw.close();
    }
  });

  it('returns what it stored, linked from the genesis hash, and reads it back identically', async () => {
    const { store, path } = openStore();
    const full = makeEntry();
    const minimal = { id: newAuditId(), time: new Date(T0 + 1).toISOString(), decision: 'error' } as AuditEntry;
    const refused = makeEntry({
      decision: 'denied',
      error: 'invalid_token',
      reason: 'The token has expired.',
      claims: null,
      unverified: { iss: 'https://evil.example', sub: 'x' },
      policy: null,
      credential_id: null,
    });
    const records = [await store.append(full), await store.append(minimal), await store.append(refused)];

    assert.deepEqual(records.map((r) => r.seq), [1, 2, 3]);
    assert.equal(records[0]!.prev_hash, GENESIS_HASH);
    assert.equal(records[1]!.prev_hash, records[0]!.hash);
    assert.equal(records[2]!.prev_hash, records[1]!.hash);
    for (const r of records) assert.equal(r.hash, hashRecord(r.prev_hash, r.seq, r));
    assert.deepEqual(records[0], { ...full, seq: 1, prev_hash: GENESIS_HASH, hash: records[0]!.hash });
    // Absent fields are stored and returned as null, never invented.
    assert.equal(records[1]!.claims, null);
    assert.equal(records[1]!.policy, null);

    assert.deepEqual((await store.query({})).events, records);
    assert.deepEqual(await store.verify(), { ok: true, events: 3, head: records[2]!.hash });
    await store.close();

    // Durable across a reopen, and the chain continues from the stored head.
    const reopened = openSqliteAuditStore(path);
    assert.deepEqual((await reopened.query({})).events, records);
    const fourth = await reopened.append(makeEntry());
    assert.equal(fourth.seq, 4);
    assert.equal(fourth.prev_hash, records[2]!.hash);
    assert.deepEqual(await reopened.verify(), { ok: true, events: 4, head: fourth.hash });
    await reopened.close();
  });

  it('stores nothing it was not given', async () => {
    const { store, path } = openStore();
    const entry = { ...makeEntry(), session_token: 'SECRET-SESSION-TOKEN', credentials: { SecretAccessKey: 'SECRET-KEY' } } as AuditEntry;
    const record = await store.append(entry);
    assert.equal('session_token' in record, false);
    assert.equal('credentials' in record, false);
    await store.close();
    for (const file of readdirSync(join(path, '..'))) {
      const bytes = readFileSync(join(path, '..', file)).toString('latin1');
      assert.equal(bytes.includes('SECRET'), false, file);
    }
  });

  it('rejects a malformed entry without writing it or disturbing the batch', async () => {
    const { store } = openStore();
    const good = store.append(makeEntry());
    await assert.rejects(store.append({ ...makeEntry(), time: '2026-11-25T19:00:00Z' }), TypeError);
    await assert.rejects(store.append({ ...makeEntry(), decision: 'allowed' as 'issued' }), TypeError);
    assert.equal((await good).seq, 1);
    assert.equal((await store.append(makeEntry())).seq, 2);
    assert.equal((await store.verify()).ok, true);
    await store.close();
  });

  it('rejects only the entry whose id is already taken; the rest of the batch commits without a gap', async () => {
    const { store } = openStore();
    const id = newAuditId();
    const results = await Promise.allSettled([store.append(makeEntry({ id })), store.append(makeEntry({ id })), store.append(makeEntry())]);
    assert.equal(results[0]!.status, 'fulfilled');
    assert.equal(results[1]!.status, 'rejected');
    assert.ok(results[1]!.status === 'rejected' && isUnavailable('audit_write_failed', 'SQLITE_CONSTRAINT')(results[1]!.reason));
    assert.equal(results[2]!.status === 'fulfilled' && results[2]!.value.seq, 2);
    assert.deepEqual((await store.verify()).events, 2);
    await store.close();
  });
});

describe('sqlite audit store: tamper evidence', () => {
  async function fiveRecords() {
    const { store, path } = openStore();
    const records = await appendMany(store, 5, (i) => ({ policy: `policy-${i + 1}`, claims: { repository: `acme/repo-${i + 1}`, run_number: i + 1 } }));
    assert.equal((await store.verify()).ok, true);
    return { store, path, records };
  }

  function tamper(path: string, sql: string): void {
    const raw = rawConnection(path);
    try {
      raw.exec(sql);
    } finally {
      raw.close();
    }
  }

  it('detects a changed column at that record', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, "UPDATE audit_events SET policy = 'admin' WHERE seq = 3");
    assert.deepEqual(await store.verify(), {
      ok: false,
      events: 2,
      head: records[1]!.hash,
      broken: { seq: 3, id: records[2]!.id, problem: 'hash_mismatch' },
    });
    await store.close();
  });

  it('detects a changed claim at that record', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, `UPDATE audit_events SET claims = json_set(claims, '$.repository', 'acme/evil') WHERE seq = 2`);
    const result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'hash_mismatch' });
    await store.close();
  });

  it('detects a claim index that no longer matches its record (claim queries would lie)', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, "DELETE FROM audit_claims WHERE seq = 4 AND name = 'repository'");
    const result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 4, id: records[3]!.id, problem: 'claim_index_mismatch' });
    await store.close();
  });

  it('detects a record whose JSON no longer parses', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, "UPDATE audit_events SET claims = '{not json' WHERE seq = 2");
    const result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'unreadable' });
    await assert.rejects(store.query({}), isUnavailable('audit_read_failed'));
    await store.close();
  });

  it('detects a deleted middle record at the next one', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, 'DELETE FROM audit_events WHERE seq = 3');
    assert.deepEqual(await store.verify(), {
      ok: false,
      events: 2,
      head: records[1]!.hash,
      broken: { seq: 4, id: records[3]!.id, problem: 'seq_gap' },
    });
    await store.close();
  });

  it('detects a deleted first record', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, 'DELETE FROM audit_events WHERE seq = 1');
    const result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'seq_gap' });
    await store.close();
  });

  it('cannot detect a deleted last record from the chain alone', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(path, 'DELETE FROM audit_events WHERE seq = 5');
    // A truncated chain is still a valid chain: what remains verifies, one
    // record shorter, with the fourth record as head. Only a head recorded
    // somewhere else (signed checkpoints, a later issue) reveals the
    // truncation; this test pins that the store does not pretend otherwise.
    assert.deepEqual(await store.verify(), { ok: true, events: 4, head: records[3]!.hash });
    // Appending goes on from the remaining head.
    const next = await store.append(makeEntry());
    assert.equal(next.seq, 5);
    assert.equal(next.prev_hash, records[3]!.hash);
    assert.deepEqual(await store.verify(), { ok: true, events: 5, head: next.hash });
    await store.close();
  });

  it('detects two swapped records at the first of them', async () => {
    const { store, path, records } = await fiveRecords();
    tamper(
      path,
      `BEGIN;
       UPDATE audit_events SET seq = -2 WHERE seq = 2;
       UPDATE audit_events SET seq = 2 WHERE seq = 3;
       UPDATE audit_events SET seq = 3 WHERE seq = -2;
       COMMIT;`,
    );
    const result = await store.verify();
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[2]!.id, problem: 'prev_hash_mismatch' });
    assert.equal(result.events, 1);
    await store.close();
  });

  it('walks a long chain in batches and finds a break past the first batch', async () => {
    const { store, path } = openStore();
    const records = await appendMany(store, 2500, (i) => ({ claims: { run_number: i } }));
    assert.deepEqual(await store.verify(), { ok: true, events: 2500, head: records[2499]!.hash });
    tamper(path, "UPDATE audit_events SET decision = 'denied' WHERE seq = 1777");
    assert.deepEqual(await store.verify(), {
      ok: false,
      events: 1776,
      head: records[1775]!.hash,
      broken: { seq: 1777, id: records[1776]!.id, problem: 'hash_mismatch' },
    });
    await store.close();
  });
});

describe('sqlite audit store: group commit', () => {
  it('commits 500 concurrent appends in a few transactions, in order, without gaps', async () => {
    const commits: number[] = [];
    const { store } = openStore({ onAppendSeconds: (s) => commits.push(s) });
    const entries = Array.from({ length: 500 }, (_, i) => makeEntry({ request_id: `req-${i}` }));
    const records = await Promise.all(entries.map((e) => store.append(e)));
    assert.deepEqual(
      records.map((r) => r.seq),
      Array.from({ length: 500 }, (_, i) => i + 1),
    );
    records.forEach((r, i) => assert.equal(r.request_id, `req-${i}`));
    assert.ok(commits.length >= 1 && commits.length <= 5, `${commits.length} commits for 500 appends`);
    assert.ok(commits.every((s) => Number.isFinite(s) && s >= 0 && s < 10));
    assert.deepEqual(await store.verify(), { ok: true, events: 500, head: records[499]!.hash });
    await store.close();
  });

  it('splits a very large queue into bounded transactions', async () => {
    const commits: number[] = [];
    const { store } = openStore({ onAppendSeconds: (s) => commits.push(s) });
    const records = await appendMany(store, 1100);
    // At most 500 per transaction, so one commit never holds the event loop for long.
    assert.equal(commits.length, 3);
    assert.equal(new Set(records.map((r) => r.seq)).size, 1100);
    assert.equal((await store.verify()).ok, true);
    await store.close();
  });

  it('keeps a committed batch committed when the metrics callback throws', async () => {
    const { store } = openStore({
      onAppendSeconds: () => {
        throw new Error('metrics broke');
      },
    });
    assert.equal((await store.append(makeEntry())).seq, 1);
    assert.equal((await store.append(makeEntry())).seq, 2);
    await store.close();
  });
});

describe('sqlite audit store: fails closed', () => {
  it('rejects within the busy timeout while another connection holds the write lock, then recovers', async () => {
    const commits: number[] = [];
    const { store, path } = openStore({ busyTimeoutMs: 200, onAppendSeconds: (s) => commits.push(s) });
    const first = await store.append(makeEntry());
    const raw = rawConnection(path);
    raw.exec('BEGIN EXCLUSIVE');
    try {
      const started = Date.now();
      const results = await Promise.allSettled([store.append(makeEntry()), store.append(makeEntry())]);
      const elapsedMs = Date.now() - started;
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.ok(r.status === 'rejected' && isUnavailable('audit_write_failed', 'SQLITE_BUSY')(r.reason));
      }
      assert.ok(elapsedMs >= 150 && elapsedMs < 2000, `rejected after ${elapsedMs} ms`);
      await assert.rejects(store.ping(), isUnavailable('audit_unwritable', 'SQLITE_BUSY'));
      // Nothing half-written.
      assert.equal(raw.prepare('SELECT count(*) FROM audit_events').pluck().get(), 1);
      assert.equal(raw.prepare('SELECT count(*) FROM audit_claims WHERE seq > 1').pluck().get(), 0);
    } finally {
      raw.exec('ROLLBACK');
      raw.close();
    }
    await store.ping();
    const next = await store.append(makeEntry());
    assert.equal(next.seq, 2);
    assert.equal(next.prev_hash, first.hash);
    assert.deepEqual(await store.verify(), { ok: true, events: 2, head: next.hash });
    assert.equal(commits.length, 2, 'only committed batches report a latency');
    await store.close();
  });

  it('follows a head another writer moved, instead of forking the chain', async () => {
    const { store, path } = openStore();
    await store.append(makeEntry());
    const other = openSqliteAuditStore(path, { busyTimeoutMs: 200 });
    const theirs = await other.append(makeEntry());
    await other.close();
    const ours = await store.append(makeEntry());
    assert.equal(ours.seq, 3);
    assert.equal(ours.prev_hash, theirs.hash);
    assert.equal((await store.verify()).ok, true);
    await store.close();
  });

  it('rejects appends on a read-only file and recovers once it is writable again', async (t) => {
    // Root ignores file modes, so as root the scenario runs as `nobody`.
    let ids: { uid: number; gid: number } | undefined;
    if (process.getuid?.() === 0) {
      const nobody = spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' });
      const group = spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' });
      if (nobody.status !== 0 || group.status !== 0) return t.skip('running as root and there is no nobody user');
      ids = { uid: Number(nobody.stdout.trim()), gid: Number(group.stdout.trim()) };
    }
    const dir = tempDir();
    if (ids !== undefined) chownSync(dir, ids.uid, ids.gid);
    const storeUrl = pathToFileURL(join(repoRoot, 'src/audit/sqlite-store.ts')).href;
    const recordUrl = pathToFileURL(join(repoRoot, 'src/audit/record.ts')).href;
    const script = `
      import { chmodSync, existsSync } from 'node:fs';
      import { openSqliteAuditStore } from ${JSON.stringify(storeUrl)};
      import { newAuditId } from ${JSON.stringify(recordUrl)};
      const path = process.env.AUDIT_TEST_DB;
      const entry = () => ({ id: newAuditId(), time: new Date().toISOString(), decision: 'issued' });
      const outcome = (p) => p.then((v) => ['ok', v?.seq ?? null], (e) => [e.name, e.reason, e.cause?.code ?? null]);
      const out = {};
      let store = openSqliteAuditStore(path, { busyTimeoutMs: 200 });
      out.before = await outcome(store.append(entry()));
      await store.close();
      chmodSync(path, 0o444);
      store = openSqliteAuditStore(path, { busyTimeoutMs: 200 });
      out.readOnlyAppend = await outcome(store.append(entry()));
      out.readOnlyPing = await outcome(store.ping());
      out.readOnlyQuery = (await store.query({})).events.length;
      // SQLite created -wal and -shm with the database file's (read-only)
      // mode, so "writable again" means all three files.
      for (const file of [path, path + '-wal', path + '-shm']) if (existsSync(file)) chmodSync(file, 0o600);
      out.recoveredPing = await outcome(store.ping());
      out.recoveredAppend = await outcome(store.append(entry()));
      out.verify = await store.verify();
      await store.close();
      process.stdout.write(JSON.stringify(out));
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: repoRoot,
      env: { ...process.env, AUDIT_TEST_DB: join(dir, 'audit.db') },
      encoding: 'utf8',
      timeout: 60_000,
      ...ids,
    });
    assert.equal(child.status, 0, child.stderr);
    const out = JSON.parse(child.stdout) as Record<string, unknown>;
    assert.deepEqual(out.before, ['ok', 1]);
    assert.deepEqual(out.readOnlyAppend, ['AuditUnavailableError', 'audit_write_failed', 'SQLITE_READONLY']);
    assert.deepEqual(out.readOnlyPing, ['AuditUnavailableError', 'audit_unwritable', 'SQLITE_READONLY']);
    assert.equal(out.readOnlyQuery, 1);
    assert.deepEqual(out.recoveredPing, ['ok', null]);
    assert.deepEqual(out.recoveredAppend, ['ok', 2]);
    assert.equal((out.verify as { ok: boolean; events: number }).ok, true);
    assert.equal((out.verify as { ok: boolean; events: number }).events, 2);
  });

  it('flushes queued appends on close, then refuses everything', async () => {
    const { store, path } = openStore();
    const pending = store.append(makeEntry());
    await store.close();
    assert.equal((await pending).seq, 1);
    await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
    await assert.rejects(store.ping(), isUnavailable('audit_unwritable'));
    await assert.rejects(store.query({}), isUnavailable('audit_read_failed'));
    await assert.rejects(store.verify(), isUnavailable('audit_read_failed'));
    await store.close(); // idempotent

    const reopened = openSqliteAuditStore(path);
    assert.equal((await reopened.query({})).events.length, 1);
    await reopened.close();
  });

  it('refuses to open a file that is not an audit log, or a newer schema', () => {
    const dir = tempDir();
    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, 'this is not a database'.repeat(100));
    assert.throws(() => openSqliteAuditStore(garbage), isUnavailable('audit_open_failed'));

    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE users (name TEXT)');
    db.close();
    assert.throws(() => openSqliteAuditStore(foreign), isUnavailable('audit_open_failed'));

    const newer = join(dir, 'newer.db');
    openSqliteAuditStore(newer).close();
    const raw = new Database(newer);
    raw.exec('UPDATE schema_version SET version = 99');
    raw.close();
    assert.throws(() => openSqliteAuditStore(newer), isUnavailable('audit_open_failed'));
  });

  it('never logs', async () => {
    const methods = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;
    const saved = methods.map((m) => console[m]);
    const calls: string[] = [];
    for (const m of methods) console[m] = (...args: unknown[]) => void calls.push(`${m}: ${args.map(String).join(' ')}`);
    try {
      const { store, path } = openStore({ busyTimeoutMs: 50 });
      await appendMany(store, 10);
      await store.query({ claims: { run_number: '6' } });
      const raw = rawConnection(path);
      raw.exec('BEGIN EXCLUSIVE');
      await store.append(makeEntry()).catch(() => undefined);
      await store.ping().catch(() => undefined);
      raw.exec('ROLLBACK');
      raw.exec("UPDATE audit_events SET policy = 'x' WHERE seq = 2");
      raw.close();
      await store.verify();
      await store.close();
      await store.append(makeEntry()).catch(() => undefined);
    } finally {
      methods.forEach((m, i) => (console[m] = saved[i]!));
    }
    assert.deepEqual(calls, []);
  });
});

describe('sqlite audit store: query', () => {
  const N = 40;
  const decisions = ['issued', 'denied', 'error', 'explain'] as const;
  function variant(i: number): Partial<AuditEntry> {
    const refProtected = [true, 'true', false, undefined][i % 4];
    return {
      time: new Date(T0 + i * 60_000).toISOString(),
      decision: decisions[i % 4]!,
      policy: ['p-a', 'p-b', 'p-c'][i % 3]!,
      issuer: i % 2 === 0 ? 'https://gitlab.example' : 'https://token.actions.githubusercontent.com',
      subject: `sub-${i % 5}`,
      credential_id: i % 4 === 0 ? `ASIA${i}` : null,
      claims: {
        repository: i % 2 === 0 ? 'acme/web' : 'acme/api',
        run_number: [6, '6', 7][i % 3],
        ...(refProtected === undefined ? {} : { ref_protected: refProtected }),
        nested: { run_number: 6 },
        list: ['6'],
        nothing: null,
      },
    };
  }

  let shared: Promise<{ store: AuditStore; records: AuditRecord[] }> | undefined;
  function dataset() {
    shared ??= (async () => {
      const { store } = openStore();
      const records: AuditRecord[] = [];
      for (let i = 0; i < N; i += 1) records.push(await store.append(makeEntry(variant(i))));
      return { store, records };
    })();
    return shared;
  }
  after(async () => {
    if (shared !== undefined) await (await shared).store.close();
  });

  const claim = (r: AuditRecord, name: string) => r.claims?.[name];
  const none = () => false;
  const cases: [string, AuditQuery, (r: AuditRecord) => boolean][] = [
    ['decision', { decision: 'denied' }, (r) => r.decision === 'denied'],
    ['policy', { policy: 'p-b' }, (r) => r.policy === 'p-b'],
    ['issuer', { issuer: 'https://gitlab.example' }, (r) => r.issuer === 'https://gitlab.example'],
    ['subject', { subject: 'sub-3' }, (r) => r.subject === 'sub-3'],
    ['credentialId', { credentialId: 'ASIA8' }, (r) => r.credential_id === 'ASIA8'],
    ['since is inclusive', { since: new Date(T0 + 10 * 60_000).toISOString() }, (r) => r.seq >= 11],
    ['until is exclusive', { until: new Date(T0 + 10 * 60_000).toISOString() }, (r) => r.seq <= 10],
    ['since/until with offsets and no fraction', { since: '2026-11-25T20:05:00+01:00', until: '2026-11-25T15:15:00-04:00' }, (r) => r.seq >= 6 && r.seq <= 15],
    ['since rounds a sub-millisecond fraction up', { since: '2026-11-25T19:05:00.0000001Z' }, (r) => r.seq >= 7],
    ['claim string', { claims: { repository: 'acme/api' } }, (r) => claim(r, 'repository') === 'acme/api'],
    ['claim number and string alike', { claims: { run_number: '6' } }, (r) => String(claim(r, 'run_number')) === '6'],
    ['claim boolean true and "true" alike', { claims: { ref_protected: 'true' } }, (r) => String(claim(r, 'ref_protected')) === 'true'],
    ['claim boolean false', { claims: { ref_protected: 'false' } }, (r) => claim(r, 'ref_protected') === false],
    ['claim string form is exact', { claims: { run_number: '6.0' } }, none],
    ['claims are case-sensitive', { claims: { repository: 'ACME/API' } }, none],
    ['object claims never match a scalar', { claims: { nested: '{"run_number":6}' } }, none],
    ['array claims never match a scalar', { claims: { list: '6' } }, none],
    ['null claims never match', { claims: { nothing: 'null' } }, none],
    ['missing claims never match', { claims: { absent: '' } }, none],
    [
      'filters combine with AND',
      { decision: 'issued', issuer: 'https://gitlab.example', claims: { run_number: '6', ref_protected: 'true' } },
      (r) => r.decision === 'issued' && r.issuer === 'https://gitlab.example' && String(claim(r, 'run_number')) === '6' && String(claim(r, 'ref_protected')) === 'true',
    ],
  ];

  for (const [name, query, predicate] of cases) {
    it(`filters: ${name}`, async () => {
      const { store, records } = await dataset();
      const expected = records.filter(predicate).map((r) => r.seq);
      const page = await store.query({ ...query, limit: 1000 });
      assert.deepEqual(page.events.map((r) => r.seq), expected);
      assert.equal(page.nextCursor, null);
      // Not vacuous: every case that can match does match some records, and not all.
      if (predicate !== none) assert.ok(expected.length > 0 && expected.length < N, `${expected.length} matches`);
    });
  }

  it('validates limit and cursor', async () => {
    const { store } = await dataset();
    for (const limit of [0, -5, 1001, 2.5, Number.NaN]) await assert.rejects(store.query({ limit }), isBadRequest('bad_limit'));
    for (const cursor of ['', '!!!', 'MQ==', Buffer.from('x').toString('base64url')]) await assert.rejects(store.query({ cursor }), isBadRequest('bad_cursor'));
    await assert.rejects(store.query({ since: 'yesterday' }), isBadRequest('bad_time'));
    await assert.rejects(store.query({ decision: 'allowed' as 'issued' }), isBadRequest('bad_decision'));
    assert.equal((await store.query({ limit: 1000 })).events.length, N);
    assert.equal((await store.query({ limit: 1 })).events.length, 1);
  });

  it('pages by cursor; nextCursor is null exactly when nothing follows', async () => {
    const { store, records } = await dataset();
    const issued = records.filter((r) => r.decision === 'issued').map((r) => r.seq); // 10 records
    const p1 = await store.query({ decision: 'issued', limit: 5 });
    assert.deepEqual(p1.events.map((r) => r.seq), issued.slice(0, 5));
    assert.ok(p1.nextCursor !== null);
    const p2 = await store.query({ decision: 'issued', limit: 5, cursor: p1.nextCursor });
    assert.deepEqual(p2.events.map((r) => r.seq), issued.slice(5));
    assert.equal(p2.nextCursor, null);
    // A cursor past the end is valid and empty.
    const last = await store.query({ limit: 1, cursor: Buffer.from(String(10_000)).toString('base64url') });
    assert.deepEqual(last, { events: [], nextCursor: null });
  });

  it('pages a time window whose records are not in time order', async () => {
    const { store } = openStore();
    const minutes = [10, 5, 20, 7, 30, 14, 6];
    await appendMany(store, minutes.length, (i) => ({ time: new Date(T0 + minutes[i]! * 60_000).toISOString() }));
    const window = { since: new Date(T0 + 6 * 60_000).toISOString(), until: new Date(T0 + 15 * 60_000).toISOString() };
    const seqs: number[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.query({ ...window, limit: 1, cursor });
      seqs.push(...page.events.map((r) => r.seq));
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
    assert.deepEqual(seqs, [1, 4, 6, 7]);
    assert.deepEqual(await store.query({ since: new Date(T0 + 40 * 60_000).toISOString() }), { events: [], nextCursor: null });
    assert.deepEqual(await store.query({ until: new Date(T0).toISOString() }), { events: [], nextCursor: null });
    await store.close();
  });

  it('defaults to 100 per page', async () => {
    const { store } = openStore();
    await appendMany(store, 150);
    const p1 = await store.query({});
    assert.equal(p1.events.length, 100);
    assert.ok(p1.nextCursor !== null);
    const p2 = await store.query({ cursor: p1.nextCursor });
    assert.deepEqual(p2.events.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => 101 + i));
    assert.equal(p2.nextCursor, null);
    await store.close();
  });

  it('returns every match exactly once while records are appended between pages', async () => {
    const { store } = openStore();
    await appendMany(store, 25, (i) => ({ decision: i % 2 === 0 ? 'issued' : 'denied', claims: { run_number: i % 3 === 0 ? 6 : '6' } }));
    const seen: AuditRecord[] = [];
    let cursor: string | undefined;
    for (let page = 0; ; page += 1) {
      assert.ok(page < 100, 'pagination terminates');
      const result = await store.query({ decision: 'issued', claims: { run_number: '6' }, limit: 4, cursor });
      seen.push(...result.events);
      if (page < 5) {
        // Interleaved appends: two that match, one that does not.
        await store.append(makeEntry({ decision: 'issued', claims: { run_number: 6 } }));
        await store.append(makeEntry({ decision: 'denied', claims: { run_number: 6 } }));
        await store.append(makeEntry({ decision: 'issued', claims: { run_number: '6' } }));
      }
      if (result.nextCursor === null) break;
      cursor = result.nextCursor;
    }
    const all: AuditRecord[] = [];
    for await (const r of queryAll(store, { decision: 'issued', claims: { run_number: '6' }, limit: 1000 })) all.push(r);
    assert.equal(all.length, 13 + 10);
    assert.deepEqual(seen.map((r) => r.id), all.map((r) => r.id));
    assert.equal(new Set(seen.map((r) => r.id)).size, seen.length);
    await store.close();
  });

  it('plans every page as an index walk in seq order: no full scan, no sort', async () => {
    const { store, path } = openStore();
    await appendMany(store, 3);
    const raw = rawConnection(path);
    try {
      const plan = (query: AuditQuery) => {
        const { sql, params } = toSqliteSelect(compileAuditQuery(query));
        return raw
          .prepare(`EXPLAIN QUERY PLAN ${sql}`)
          .all(...params)
          .map((row) => (row as { detail: string }).detail)
          .join(' | ');
      };
      const single: [AuditQuery, RegExp][] = [
        [{}, /INTEGER PRIMARY KEY/],
        [{ decision: 'issued' }, /audit_events_decision/],
        [{ policy: 'p' }, /audit_events_policy/],
        [{ issuer: 'i' }, /audit_events_issuer/],
        [{ subject: 's' }, /audit_events_subject/],
        [{ credentialId: 'c' }, /audit_events_credential_id/],
        [{ since: '2026-01-01T00:00:00Z', until: '2026-02-01T00:00:00Z' }, /INTEGER PRIMARY KEY/],
        [{ claims: { repository: 'acme/api' } }, /audit_claims_value/],
      ];
      for (const [query, index] of single) {
        const detail = plan({ ...query, cursor: Buffer.from('2').toString('base64url') });
        assert.match(detail, index, JSON.stringify(query));
        assert.doesNotMatch(detail, /TEMP B-TREE|\bSCAN\b/, JSON.stringify(query));
      }
      const combined: AuditQuery[] = [
        { decision: 'denied', policy: 'p', issuer: 'i', subject: 's', credentialId: 'c' },
        { decision: 'issued', claims: { a: '1', b: '2', c: '3' } },
        { since: '2026-01-01T00:00:00Z', claims: { a: '1' }, subject: 's' },
      ];
      for (const query of combined) assert.doesNotMatch(plan(query), /TEMP B-TREE|\bSCAN\b/, JSON.stringify(query));
    } finally {
      raw.close();
    }
    await store.close();
  });
});

describe('sqlite audit store: in memory', () => {
  it('works on :memory: for tests of other modules', async () => {
    const store = openSqliteAuditStore(':memory:');
    const records = await appendMany(store, 3);
    assert.deepEqual(await store.verify(), { ok: true, events: 3, head: records[2]!.hash });
    assert.equal((await store.query({ claims: { run_number: '6' } })).events.length, 3);
    await store.ping();
    await store.close();
  });
});
