import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import request from 'supertest';
import { AuditUnavailableError } from '../src/errors.js';
import { compileAuditQuery } from '../src/audit/query.js';
import { openSqliteAuditStore, toSqliteSelect, type SqliteAuditStoreOptions } from '../src/audit/sqlite/store.js';
import type { AuditQuery, AuditRecord, AuditStore } from '../src/audit/types.js';
import { T0, appendMany, makeEntry } from './helpers/audit-entries.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture } from './helpers/broker-fixture.js';
import { cli, githubServeConfig, logLine } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

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

describe('sqlite audit store: file and schema', () => {
  it('creates the directory (0700) and file (0600) and the versioned schema', async () => {
    const dir = tempDir();
    const path = join(dir, 'nested', 'data', 'audit.db');
    const store = openSqliteAuditStore(path);
    await store.close();
    assert.equal(statSync(join(dir, 'nested', 'data')).mode & 0o777, 0o700);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const raw = rawConnection(path);
    try {
      assert.equal(raw.prepare('SELECT version FROM schema_version').pluck().get(), 4);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
      const indexes = raw.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all();
      assert.deepEqual(indexes, [
        'audit_claims_value',
        'audit_events_audit_matches',
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
  it('migrates a version 1 file (before checkpoints, hour ranges and audit matches) to version 4, keeping its records and indexing their hours', async () => {
    const { store, path } = openStore();
    const records = await appendMany(store, 3);
    await store.close();
    const raw = rawConnection(path);
    raw.exec('DROP TABLE audit_checkpoints; DROP TABLE audit_hours; DROP INDEX audit_events_audit_matches; ALTER TABLE audit_events DROP COLUMN audit_matches; UPDATE schema_version SET version = 1');
    raw.close();
    const reopened = openSqliteAuditStore(path);
    assert.deepEqual((await reopened.query({})).events, records);
    const window = { since: new Date(T0 - 1000).toISOString(), until: new Date(T0 + 1000).toISOString() };
    assert.deepEqual((await reopened.query(window)).events, records, 'time-window queries find the migrated records');
    assert.equal((await reopened.verify()).ok, true);
    assert.deepEqual(await reopened.checkpoints(), []);
    await reopened.saveCheckpoint({ seq: 3, hash: records[2]!.hash, time: new Date(T0).toISOString(), kind: 'periodic', kid: 'k', jws: 'j' });
    assert.equal((await reopened.checkpoints()).length, 1);
    await reopened.close();
    const check = rawConnection(path);
    try {
      assert.equal(check.prepare('SELECT version FROM schema_version').pluck().get(), 4);
    } finally {
      check.close();
    }
  });
});

describe('sqlite audit store: fails closed', () => {
  it('refuses appends once the file was deleted or replaced under it, and never recreates it empty', async () => {
    const { store, path } = openStore();
    await appendMany(store, 3);
    for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
    await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
    await assert.rejects(store.ping(), isUnavailable('audit_unwritable'));
    assert.equal(existsSync(path), false, 'no empty log was created in its place');

    // Another file at the same path (a restore, or an attacker's fresh log) is not the log this broker opened.
    const other = openSqliteAuditStore(path);
    await other.close();
    await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
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
    const storeUrl = pathToFileURL(join(repoRoot, 'src/audit/sqlite/store.ts')).href;
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

  it('refuses to open a file that is not an audit log, or a newer schema', async () => {
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
    await openSqliteAuditStore(newer).close();
    const raw = new Database(newer);
    raw.exec('UPDATE schema_version SET version = 99');
    raw.close();
    assert.throws(() => openSqliteAuditStore(newer), isUnavailable('audit_open_failed'));
  });
});

describe('sqlite audit store: query plans', () => {
  it('plans every page as an index walk in seq order: no full scan, no sort', async () => {
    const { store, path } = openStore();
    await appendMany(store, 3);
    const raw = rawConnection(path);
    try {
      const plan = (query: AuditQuery) => {
        const { text: sql, values: params } = toSqliteSelect(compileAuditQuery(query));
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
      // audit_match: the partial index over the records that have audit matches drives; json_each only reads each one's short list.
      for (const query of [{ auditMatch: 'deny-x' }, { auditMatch: 'deny-x', since: '2026-01-01T00:00:00Z' }]) {
        const detail = plan({ ...query, cursor: Buffer.from('2').toString('base64url') });
        assert.match(detail, /^SEARCH e USING INDEX audit_events_audit_matches \(seq>\?\) \| SCAN m EXISTS VIRTUAL TABLE INDEX \d+:$/, JSON.stringify(query));
      }
    } finally {
      raw.close();
    }
    await store.close();
  });
});

describe('sqlite audit store: hour ranges', () => {
  it('keeps each hour\'s seq range, bounds window queries by it, and verify catches a range that no longer covers its record', async () => {
    const { store, path } = openStore();
    const records: AuditRecord[] = [];
    for (const minute of [0, 30, 61, 62, 125]) records.push(await store.append(makeEntry({ time: new Date(T0 + minute * 60_000).toISOString() })));
    const raw = rawConnection(path);
    try {
      assert.deepEqual(raw.prepare('SELECT hour, min_seq, max_seq FROM audit_hours ORDER BY hour').all(), [
        { hour: '2026-11-25T19', min_seq: 1, max_seq: 2 },
        { hour: '2026-11-25T20', min_seq: 3, max_seq: 4 },
        { hour: '2026-11-25T21', min_seq: 5, max_seq: 5 },
      ]);
      const hour20 = { since: new Date(T0 + 60 * 60_000).toISOString(), until: new Date(T0 + 120 * 60_000).toISOString() };
      assert.deepEqual((await store.query(hour20)).events.map((e) => e.seq), [3, 4]);
      assert.equal((await store.verify()).ok, true);

      // Narrowed so that a window query would miss seq 4: the index lies, verify says so.
      raw.exec("UPDATE audit_hours SET max_seq = 3 WHERE hour = '2026-11-25T20'");
      let result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 4, id: records[3]!.id, problem: 'claim_index_mismatch' });
      raw.exec("UPDATE audit_hours SET max_seq = 4 WHERE hour = '2026-11-25T20'");
      raw.exec("DELETE FROM audit_hours WHERE hour = '2026-11-25T21'");
      result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 5, id: records[4]!.id, problem: 'claim_index_mismatch' });
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
    assert.deepEqual(await store.verify(), { ok: true, events: 3, head: records[2]!.hash, last_seq: 3 });
    assert.equal((await store.query({ claims: { run_number: '6' } })).events.length, 3);
    await store.ping();
    await store.close();
  });
});

describe('the broker over a SQLite audit log', () => {
  const POLICY = { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') };

  it('issues for a token whose claim names hold lone surrogates, records them under storable names, and the log verifies and is checkpointed', async () => {
    const fx = await startBrokerFixture({ policies: POLICY });
    let closed = false;
    try {
      const token = await fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api', 'x\ud800': 'a', 'x\udbff': 'b', nested: { 'k\ud800': 1, 'k\udbff': 2 } });
      const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(res.status, 200, res.text);
      const events = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      const [record] = (events.body as { events: AuditRecord[] }).events;
      assert.deepEqual(
        [record?.decision, record?.claims?.['x\uFFFD'], record?.claims?.['x\uFFFD#2'], record?.claims?.nested],
        ['issued', 'a', 'b', { 'k\uFFFD': 1, 'k\uFFFD#2': 2 }],
      );
      const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      assert.equal((verify.body as { ok: boolean }).ok, true, verify.text);
      // Shutting down signs a last checkpoint, which verifies the records first.
      await fx.close();
      closed = true;
      const lines = fx.logLines().map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(lines.filter((l) => l.msg === 'audit checkpoint').length, 1, fx.logLines().join('\n'));
      assert.equal(lines.filter((l) => l.level === 'error').length, 0, fx.logLines().join('\n'));
    } finally {
      if (!closed) await fx.close();
    }
  });

  it('answers 503 to the one request whose record the database refuses, logs its cause once, and commits the others', async () => {
    const fx = await startBrokerFixture({ policies: POLICY });
    try {
      const db = new Database(join(fx.dir, 'data', 'audit.db'));
      db.exec("CREATE TRIGGER refuse_records BEFORE INSERT ON audit_events WHEN NEW.user_agent = 'refused' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
      db.close();
      const tokens = await Promise.all(Array.from({ length: 9 }, () => fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api' })));
      const answers = await Promise.all(
        tokens.map((token, i) =>
          request(fx.broker.app)
            .post('/v1/exchange')
            .set('Authorization', `Bearer ${token}`)
            .set('User-Agent', i === 4 ? 'refused' : 'bystander')
            .send({ policy: 'deploy' }),
        ),
      );
      assert.deepEqual(
        answers.map((a) => a.status),
        [200, 200, 200, 200, 503, 200, 200, 200, 200],
      );
      const refused = answers[4]!;
      assert.equal((refused.body as { error: string }).error, 'audit_unavailable');
      assert.equal((refused.body as Record<string, unknown>).token, undefined);
      const requestId = refused.headers['x-request-id'] as string;
      const errors = fx.logLines()
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.level === 'error');
      assert.equal(errors.length, 1, fx.logLines().join('\n'));
      assert.equal(errors[0]!.request_id, requestId);
      const cause = (errors[0]!.cause as { reason?: string; cause?: { code?: string; message?: string } } | undefined);
      assert.equal(cause?.reason, 'audit_write_failed');
      assert.deepEqual([cause?.cause?.code, cause?.cause?.message], ['SQLITE_CONSTRAINT_TRIGGER', 'refused by the test']);
      const verify = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      assert.deepEqual([(verify.body as { ok: boolean }).ok, (verify.body as { events: number }).events], [true, 8], verify.text);
    } finally {
      await fx.close();
    }
  });

  it('serve logs why the log cannot be opened: the driver code and message', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'policies'));
    // A directory where the database file should be: SQLite cannot open it.
    mkdirSync(join(dir, 'data', 'audit.db'), { recursive: true });
    writeFileSync(join(dir, 'broker.yaml'), githubServeConfig('./data/signing-key.jwk'));
    const run = await cli(['serve', '-c', join(dir, 'broker.yaml')]);
    assert.equal(run.code, 1);
    const line = logLine('cannot start')(run.stdout);
    assert.equal(line?.error, 'The audit log cannot be opened.', run.stdout);
    assert.deepEqual(
      [(line?.cause as { code?: string } | undefined)?.code, (line?.cause as { message?: string } | undefined)?.message],
      ['SQLITE_CANTOPEN', 'unable to open database file'],
      run.stdout,
    );
  });
});
