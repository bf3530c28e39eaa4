// oidc-broker audit query | verify | prune, run in-process through runCli (and as a real process where exit codes and pipes matter).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { signCheckpoint, type AuditVerification } from '../src/audit/checkpoints.js';
import { queryAll } from '../src/audit/query.js';
import { newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditEntry, AuditQuery, AuditRecord } from '../src/audit/types.js';
import { generateSigningJwk, loadSigningKey } from '../src/keys/signing-key.js';
import { PG_ADMIN_URL } from './helpers/audit-stores.js';
import { cli, cliProcess } from './helpers/cli.js';

const OLD = 40;
const RECENT = 2500;
const OLD_T0 = Date.UTC(2020, 0, 1);
const T0 = Date.UTC(2026, 0, 1);

let root: string;
let log: Log;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-audit-'));
  log = await makeLog('shared');
});
after(async () => rm(root, { recursive: true, force: true }));

interface Log {
  dir: string;
  config: string;
  db: string;
  keyFile: string;
}

function entry(ms: number, i: number, overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(ms).toISOString(),
    decision: i % 5 === 0 ? 'denied' : 'issued',
    error: i % 5 === 0 ? 'access_denied' : null,
    reason: i % 5 === 0 ? 'no_policy_matched: no policy matched' : null,
    request_id: null,
    issuer: 'github',
    subject: `repo:acme/svc-${i % 3}:ref:refs/heads/main`,
    audience: ['https://broker.example.com'],
    jti: null,
    token_sha256: null,
    claims: { repository: `acme/svc-${i % 3}`, run_number: i, ref_protected: i % 2 === 0 },
    unverified: null,
    policy: i % 2 === 0 ? 'deploy' : 'build',
    policy_sha256: null,
    provider: 'jwt',
    target: 'https://deploy.example.com',
    credential_id: `cred-${i}`,
    expires_at: null,
    duration_seconds: 600,
    client_ip: null,
    user_agent: null,
    audit_matches: [],
    ...overrides,
  };
}

/** A config, a signing key, and an audit log of OLD records from 2020 then RECENT from 2026, with a signed checkpoint at the head. */
async function makeLog(name: string, options: { checkpoint?: boolean } = {}): Promise<Log> {
  const dir = path.join(root, name);
  await mkdir(dir);
  const keyFile = path.join(dir, 'signing-key.jwk');
  await writeFile(keyFile, JSON.stringify(await generateSigningJwk()), { mode: 0o600 });
  const config = path.join(dir, 'broker.yaml');
  await writeFile(config, 'audit:\n  url: sqlite:./audit.db\nproviders:\n  jwt:\n    signing_key_file: ./signing-key.jwk\n');
  const db = path.join(dir, 'audit.db');
  const store = openSqliteAuditStore(db);
  const appends: Promise<AuditRecord>[] = [];
  for (let i = 0; i < OLD; i += 1) appends.push(store.append(entry(OLD_T0 + i * 60_000, i)));
  for (let i = 0; i < RECENT; i += 1) appends.push(store.append(entry(T0 + i * 1000, OLD + i, i === 7 ? { reason: '=HYPERLINK("http://evil.example")', user_agent: '@evil' } : {})));
  await Promise.all(appends);
  if (options.checkpoint !== false) await store.saveCheckpoint(await signCheckpoint(await loadSigningKey(keyFile), await store.head(), 'periodic', new Date()));
  await store.close();
  return { dir, config, db, keyFile };
}

/** A copy of the shared log, for a test that changes it (much cheaper than writing a new one). */
async function copyLog(name: string): Promise<Log> {
  const dir = path.join(root, name);
  await cp(log.dir, dir, { recursive: true });
  return { dir, config: path.join(dir, 'broker.yaml'), db: path.join(dir, 'audit.db'), keyFile: path.join(dir, 'signing-key.jwk') };
}

async function storeRecords(log: Log, query: AuditQuery = {}): Promise<AuditRecord[]> {
  const store = openSqliteAuditStore(log.db);
  try {
    const out: AuditRecord[] = [];
    for await (const record of queryAll(store, { limit: 1000, ...query })) out.push(record);
    return out;
  } finally {
    await store.close();
  }
}

function countRows(log: Log): number {
  const db = new Database(log.db, { readonly: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM audit_events').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** RFC 4180, strict enough for these tests. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i += 1;
    } else cell += c;
  }
  assert.ok(cell === '' && row.length === 0, 'ends with CRLF');
  return rows;
}

describe('audit query', () => {
  test('ndjson prints every record by default, each line the stored record', async () => {
    const run = await cli(['audit', 'query', '-c', log.config, '--format', 'ndjson']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '', 'no progress when stderr is not a terminal');
    const lines = run.stdout.trimEnd().split('\n');
    assert.equal(lines.length, OLD + RECENT);
    assert.deepEqual(
      lines.map((l) => JSON.parse(l) as AuditRecord),
      await storeRecords(log),
    );
  });

  test('csv prints every record; it parses back; formula cells are neutralised; claim filters add columns', async () => {
    const run = await cli(['audit', 'query', '-c', log.config, '--format', 'csv', '--claim', 'run_number=47']);
    assert.equal(run.code, 0, run.stderr);
    const rows = parseCsv(run.stdout);
    const header = rows[0]!;
    assert.ok(header.includes('claim.run_number'));
    assert.equal(rows.length, 2);
    const [record] = await storeRecords(log, { claims: { run_number: '47' } });
    const row = rows[1]!;
    assert.equal(row[header.indexOf('id')], record!.id);
    assert.equal(row[header.indexOf('reason')], `'=HYPERLINK("http://evil.example")`);
    assert.equal(row[header.indexOf('user_agent')], "'@evil");
    assert.equal(row[header.indexOf('claim.run_number')], '47');
    assert.equal(row[header.indexOf('claim.ref_protected')], 'false');
    assert.deepEqual(JSON.parse(row.at(-1)!), record!.claims);

    const all = await cli(['audit', 'query', '-c', log.config, '--format', 'csv']);
    const allRows = parseCsv(all.stdout);
    assert.equal(allRows.length, 1 + OLD + RECENT);
    const ids = allRows.slice(1).map((r) => r[header.indexOf('id')]);
    assert.deepEqual(ids, (await storeRecords(log)).map((r) => r.id));
  });

  test('json and table stop at 100 by default and say so on stderr; --limit and --limit all', async () => {
    const json = await cli(['audit', 'query', '-c', log.config, '--format', 'json']);
    assert.equal(json.code, 0);
    assert.equal((JSON.parse(json.stdout) as unknown[]).length, 100);
    assert.match(json.stderr, /showing the first 100 matching records; more match/);
    const five = await cli(['audit', 'query', '-c', log.config, '--format', 'json', '--limit', '5', '--decision', 'denied']);
    assert.deepEqual(JSON.parse(five.stdout), (await storeRecords(log, { decision: 'denied' })).slice(0, 5));
    const everything = await cli(['audit', 'query', '-c', log.config, '--format', 'json', '--limit', 'all']);
    assert.equal((JSON.parse(everything.stdout) as unknown[]).length, OLD + RECENT);
    assert.equal(everything.stderr, '');
    const exact = await cli(['audit', 'query', '-c', log.config, '--format', 'ndjson', '--limit', String(OLD), '--until', '2021-01-01']);
    assert.equal(exact.stdout.trimEnd().split('\n').length, OLD);
    assert.equal(exact.stderr, '', 'no "more match" note when the limit is exactly the number of matches');

    const table = await cli(['audit', 'query', '-c', log.config]);
    assert.equal(table.code, 0);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^TIME\s+DECISION\s+POLICY\s+SUBJECT\s+CREDENTIAL_ID\s+REASON$/);
    assert.equal(lines.length, 101);
    const narrow = await cli(['audit', 'query', '-c', log.config, '--limit', '20'], { tty: { stdout: true, columns: 90 } });
    for (const line of narrow.stdout.trimEnd().split('\n')) assert.ok([...line].length <= 90, `fits 90 columns: ${line}`);
  });

  test('filters: dates, decision, policy, issuer, subject, credential id, claims', async () => {
    const cases: [string[], AuditQuery][] = [
      [['--since', '2026-01-01T00:10:00Z', '--until', '2026-01-01T00:20:00Z'], { since: '2026-01-01T00:10:00.000Z', until: '2026-01-01T00:20:00.000Z' }],
      [['--until', '2021-01-01'], { until: '2021-01-01T00:00:00.000Z' }],
      [['--decision', 'denied', '--policy', 'deploy'], { decision: 'denied', policy: 'deploy' }],
      [['--issuer', 'github', '--subject', 'repo:acme/svc-1:ref:refs/heads/main'], { issuer: 'github', subject: 'repo:acme/svc-1:ref:refs/heads/main' }],
      [['--credential-id', 'cred-99'], { credentialId: 'cred-99' }],
      [['--claim', 'repository=acme/svc-2', '--claim', 'ref_protected=true'], { claims: { repository: 'acme/svc-2', ref_protected: 'true' } }],
    ];
    for (const [args, query] of cases) {
      const run = await cli(['audit', 'query', '-c', log.config, '--format', 'ndjson', ...args]);
      assert.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`);
      const expected = await storeRecords(log, query);
      assert.ok(expected.length > 0, args.join(' '));
      assert.deepEqual(run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as AuditRecord), expected, args.join(' '));
    }
  });

  test('progress on stderr only when stderr is a terminal and stdout is not', async () => {
    const redirected = await cli(['audit', 'query', '-c', log.config, '--format', 'csv'], { tty: { stderr: true } });
    assert.match(redirected.stderr, new RegExp(`${OLD + RECENT} records written\\n$`));
    assert.ok(!redirected.stdout.includes('records written'));
    const onTerminal = await cli(['audit', 'query', '-c', log.config, '--format', 'csv'], { tty: { stderr: true, stdout: true } });
    assert.equal(onTerminal.stderr, '');
    const piped = await cli(['audit', 'query', '-c', log.config, '--format', 'csv']);
    assert.equal(piped.stderr, '');
  });

  test('bad arguments exit 1 with a one-line message; a missing audit file is not created', async () => {
    const cases: [string[], RegExp][] = [
      [['--since', 'yesterday'], /--since: expected a duration back from now such as 24h or 7d \(m, h, d\), an RFC 3339 time/],
      [['--since', '24'], /--since: expected a duration/],
      [['--since', '7w'], /--since: expected a duration/],
      [['--until', '2026-02-30'], /--until: expected/],
      [['--limit', '0'], /--limit: expected a positive integer or 'all'/],
      [['--limit', '1.5'], /--limit/],
      [['--claim', 'no-equals'], /--claim: expected name=value/],
      [['--claim', '=x'], /--claim: expected name=value/],
      [['--claim', 'a=1', '--claim', 'a=2'], /claim 'a' is given twice/],
      [['--policy', ''], /--policy: must not be empty/],
      [['--decision', 'maybe'], /argument 'maybe' is invalid/],
      [['--format', 'xml'], /argument 'xml' is invalid/],
      [Array.from({ length: 21 }, (_, i) => ['--claim', `c${i}=x`]).flat(), /At most 20 claim filters/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(['audit', 'query', '-c', log.config, ...args]);
      assert.equal(run.code, 1, args.join(' '));
      assert.match(run.stderr, message);
      assert.equal(run.stdout, '');
    }
    const lone = await cli(['audit', 'query', '-c', log.config, '--since', 'nope']);
    assert.equal(lone.stderr.trimEnd().split('\n').length, 1, 'one line');

    const missing = path.join(root, 'missing');
    await mkdir(missing);
    await writeFile(path.join(missing, 'broker.yaml'), 'audit:\n  url: sqlite:./nope/audit.db\n');
    const run = await cli(['audit', 'query', '-c', path.join(missing, 'broker.yaml')]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /the audit log .*nope\/audit\.db does not exist/);
    assert.equal(existsSync(path.join(missing, 'nope')), false, 'nothing was created');

    const badConfig = await cli(['audit', 'query', '-c', path.join(root, 'no-such.yaml')]);
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.stderr, /cannot load the config/);
  });

  test('a store that cannot be opened: one line with the driver code and message, and never the URL password', async () => {
    // A database named like the password, so the driver's own message quotes it.
    const url = new URL(PG_ADMIN_URL);
    url.password = 'hunter2db';
    url.pathname = '/hunter2db';
    const dir = path.join(root, 'unopenable');
    await mkdir(dir);
    await writeFile(path.join(dir, 'broker.yaml'), `audit:\n  url: ${url.toString()}\nproviders:\n  jwt:\n    signing_key_file: ${log.keyFile}\n`);
    for (const command of ['query', 'verify']) {
      const run = await cli(['audit', command, '-c', path.join(dir, 'broker.yaml')]);
      assert.equal(run.code, 1);
      assert.match(run.stderr, /^oidc-broker: cannot open the audit log postgres:\/\/\S+: The audit log cannot be opened\. \(3D000: database "\[redacted\]" does not exist\)\n$/, run.stderr);
      assert.equal(`${run.stdout}${run.stderr}`.includes('hunter2db'), false, run.stderr);
    }
  });

  test('help documents formats, limits and exit codes', async () => {
    const help = await cli(['audit', 'query', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Exit codes/);
    assert.match(help.stdout, /default: 100 for\s+table and json, all for ndjson and csv/);
    for (const sub of ['verify', 'prune']) assert.match((await cli(['audit', sub, '--help'])).stdout, /Exit codes: 0/);
  });
});

describe('audit verify', () => {
  test('an intact log: exit 0 and a readable summary; --json is the API result', async () => {
    const run = await cli(['audit', 'verify', '-c', log.config]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^audit log OK: sqlite:/);
    assert.match(run.stdout, new RegExp(`events verified:\\s+${OLD + RECENT} \\(seq 1 to ${OLD + RECENT}\\)`));
    assert.match(run.stdout, new RegExp(`checkpoints:\\s+1, the latest vouches for seq ${OLD + RECENT}`));
    const json = await cli(['audit', 'verify', '-c', log.config, '--json']);
    assert.equal(json.code, 0);
    const result = JSON.parse(json.stdout) as AuditVerification;
    assert.equal(result.ok, true);
    assert.equal(result.events, OLD + RECENT);
    assert.equal(result.first_seq, 1);
    assert.equal(result.last_seq, OLD + RECENT);
    assert.equal(result.checkpoints, 1);
  });

  test('a tampered row: exit 2, the first broken record and the problem in plain words', async () => {
    const tampered = await copyLog('tampered');
    const db = new Database(tampered.db);
    db.prepare("UPDATE audit_events SET policy = 'innocent' WHERE seq = 100").run();
    db.close();
    const run = await cli(['audit', 'verify', '-c', tampered.config]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stdout, /^audit log BROKEN/);
    assert.match(run.stdout, /broken at:\s+seq 100 \(id [0-9A-Z]{26}\)/);
    assert.match(run.stdout, /hash_mismatch: its content no longer matches its hash: a field was changed/);
    assert.match(run.stdout, /verified before:\s+99 events \(seq 1 to 99\)/);
    const json = await cli(['audit', 'verify', '-c', tampered.config, '--json']);
    assert.equal(json.code, 2);
    assert.deepEqual((JSON.parse(json.stdout) as AuditVerification & { ok: false }).broken.seq, 100);

    // Deleting the newest records is caught by the checkpoint.
    const truncated = await copyLog('truncated');
    const db2 = new Database(truncated.db);
    db2.prepare('DELETE FROM audit_events WHERE seq > ?').run(OLD + RECENT - 3);
    db2.close();
    const cut = await cli(['audit', 'verify', '-c', truncated.config]);
    assert.equal(cut.code, 2);
    assert.match(cut.stdout, /truncated: the chain ends before the newest signed checkpoint/);
  });

  test('the signing key is read, never created; --jwks verifies with public keys instead', async () => {
    const nokey = await copyLog('nokey');
    await rm(nokey.keyFile);
    const run = await cli(['audit', 'verify', '-c', nokey.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /the signing key .*signing-key\.jwk does not exist/);
    assert.equal(existsSync(nokey.keyFile), false, 'no key was created');

    const withKey = await copyLog('jwks');
    const jwks = path.join(withKey.dir, 'jwks.json');
    await writeFile(jwks, JSON.stringify({ keys: [(await loadSigningKey(withKey.keyFile)).publicJwk] }));
    await rm(withKey.keyFile);
    const ok = await cli(['audit', 'verify', '-c', withKey.config, '--jwks', jwks]);
    assert.equal(ok.code, 0, ok.stderr);
    const other = path.join(withKey.dir, 'other.json');
    const { d: _d, ...otherPublic } = await generateSigningJwk();
    await writeFile(other, JSON.stringify({ keys: [otherPublic] }));
    const wrongKey = await cli(['audit', 'verify', '-c', withKey.config, '--jwks', other]);
    assert.equal(wrongKey.code, 2);
    assert.match(wrongKey.stdout, /bad_checkpoint/);
  });

  test('--trusted-head (a head file or a JWS) catches a log rolled back to an older signed state; the newest JWS is printed to keep', async () => {
    const rolled = await copyLog('rolled-back');
    const last = OLD + RECENT;
    const db = new Database(rolled.db);
    const hashAt = (seq: number) => (db.prepare('SELECT hash FROM audit_events WHERE seq = ?').get(seq) as { hash: string }).hash;
    const newest = db.prepare('SELECT jws FROM audit_checkpoints WHERE seq = ?').get(last) as { jws: string };
    const key = await loadSigningKey(rolled.keyFile);
    const older = await signCheckpoint(key, { seq: last - 3, hash: hashAt(last - 3) }, 'periodic', new Date(T0 - 1000));
    db.prepare('INSERT INTO audit_checkpoints (seq, hash, time, kind, kid, jws) VALUES (?, ?, ?, ?, ?, ?)').run(older.seq, older.hash, older.time, older.kind, older.kid, older.jws);
    const headFile = path.join(rolled.dir, 'audit-head.jws');
    await writeFile(headFile, `${newest.jws}\n`);

    const before = await cli(['audit', 'verify', '-c', rolled.config, '--trusted-head', headFile]);
    assert.equal(before.code, 0, before.stdout + before.stderr);
    assert.ok(before.stdout.includes(`newest JWS:       ${newest.jws}`), before.stdout);

    // The database writer deletes the newest records and the checkpoint after the older one.
    db.prepare('DELETE FROM audit_checkpoints WHERE seq = ?').run(last);
    for (const table of ['audit_claims', 'audit_hours', 'audit_events']) db.prepare(`DELETE FROM ${table} WHERE ${table === 'audit_hours' ? 'min_seq' : 'seq'} > ?`).run(last - 3);
    db.close();
    const unaware = await cli(['audit', 'verify', '-c', rolled.config]);
    assert.equal(unaware.code, 0, 'without a trusted head an older signed state verifies');
    for (const trustedHead of [headFile, newest.jws]) {
      const run = await cli(['audit', 'verify', '-c', rolled.config, '--trusted-head', trustedHead]);
      assert.equal(run.code, 2, run.stdout + run.stderr);
      assert.match(run.stdout, new RegExp(`broken at:\\s+seq ${last}\n`));
      assert.match(run.stdout, /rolled_back: the store does not hold the trusted head checkpoint/);
      const json = await cli(['audit', 'verify', '-c', rolled.config, '--json', '--trusted-head', trustedHead]);
      assert.deepEqual((JSON.parse(json.stdout) as AuditVerification & { ok: false }).broken, { seq: last, id: null, problem: 'rolled_back' });
    }

    const otherKeyFile = path.join(rolled.dir, 'other-key.jwk');
    await writeFile(otherKeyFile, JSON.stringify(await generateSigningJwk()), { mode: 0o600 });
    const forged = await signCheckpoint({ ...(await loadSigningKey(otherKeyFile)), kid: key.kid }, { seq: last, hash: 'f'.repeat(64) }, 'periodic', new Date());
    const notOurs = await cli(['audit', 'verify', '-c', rolled.config, '--trusted-head', forged.jws]);
    assert.equal(notOurs.code, 1);
    assert.match(notOurs.stderr, /--trusted-head: the checkpoint \(seq \d+, kid .+\) does not verify with the broker's keys/);
    const missing = await cli(['audit', 'verify', '-c', rolled.config, '--trusted-head', path.join(rolled.dir, 'nope.jws')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--trusted-head: '.*nope\.jws' is neither a checkpoint JWS nor an existing file/);
  });
});

describe('audit prune', () => {
  test('without --yes: a dry run that says what would go and deletes nothing', async () => {
    const pruned = await copyLog('dry');
    const run = await cli(['audit', 'prune', '-c', pruned.config, '--before', '2021-01-01']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`dry run: would delete ${OLD} records older than 2021-01-01T00:00:00.000Z \\(seq 1 to ${OLD},`));
    assert.match(run.stdout, new RegExp(`start at seq ${OLD + 1}`));
    assert.match(run.stdout, /run again with --yes/);
    assert.equal(countRows(pruned), OLD + RECENT);

    // A retention period in days, ending 30 days before the records of 2026: the records of 2020 are older.
    const days = Math.floor((Date.now() - T0) / 86_400_000) + 30;
    const retention = await cli(['audit', 'prune', '-c', pruned.config, '--before', `${days}d`]);
    assert.equal(retention.code, 0, retention.stderr);
    assert.match(retention.stdout, new RegExp(`dry run: would delete ${OLD} records older than \\d{4}-\\d{2}-\\d{2}T[\\d:.]+Z \\(seq 1 to ${OLD},`));
  });

  test('with --yes: deletes, prints the anchor, and verify still passes', async () => {
    const pruned = await copyLog('prune');
    const before = await storeRecords(pruned);
    const run = await cli(['audit', 'prune', '-c', pruned.config, '--before', '2021-01-01T00:00:00Z', '--yes']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`deleted ${OLD} records`));
    assert.ok(run.stdout.includes(`anchor: seq ${OLD}, hash ${before[OLD - 1]!.hash}`));
    assert.equal(countRows(pruned), RECENT);

    const verify = await cli(['audit', 'verify', '-c', pruned.config, '--json']);
    assert.equal(verify.code, 0, verify.stdout);
    const result = JSON.parse(verify.stdout) as AuditVerification;
    assert.equal(result.first_seq, OLD + 1);
    assert.equal(result.events, RECENT);
    assert.match((await cli(['audit', 'verify', '-c', pruned.config])).stdout, /records before seq 41 were pruned/);

    const again = await cli(['audit', 'prune', '-c', pruned.config, '--before', '2021-01-01', '--yes']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /nothing to prune/);
  });

  test('a date is required and validated; a broken log is never pruned (exit 2)', async () => {
    for (const bad of ['yesterday', '2021-13-01', '2021-01-01 00:00']) {
      const run = await cli(['audit', 'prune', '-c', log.config, '--before', bad, '--yes']);
      assert.equal(run.code, 1, bad);
      assert.match(run.stderr, /--before: expected/);
    }
    const missing = await cli(['audit', 'prune', '-c', log.config]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--before <date>/);

    const tampered = await copyLog('prune-tampered');
    const db = new Database(tampered.db);
    db.prepare("UPDATE audit_events SET subject = 'someone-else' WHERE seq = 3").run();
    db.close();
    const run = await cli(['audit', 'prune', '-c', tampered.config, '--before', '2021-01-01', '--yes']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /does not verify \(hash_mismatch at seq 3\); nothing was pruned/);
    assert.equal(countRows(tampered), OLD + RECENT);
    assert.equal(countRows(log), OLD + RECENT, 'the shared log was never touched');
  });
});

// What only a real process shows: the bin's exit code, a closed pipe. Side by side, each on its own log.
describe('as a real process', { concurrency: true }, () => {
  test('a broken chain exits 2', async () => {
    const tampered = await makeLog('tampered-process', { checkpoint: false });
    const db = new Database(tampered.db);
    db.prepare('DELETE FROM audit_events WHERE seq = 5').run();
    db.close();
    const run = await cliProcess(['audit', 'verify', '-c', tampered.config]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stdout, /broken at:\s+seq 6/);
    assert.match(run.stdout, /seq_gap/);
  });

  test('a reader that stops early (| head) ends the command quietly', async () => {
    const run = await cliProcess(['audit', 'query', '-c', log.config, '--format', 'ndjson'], { closeStdoutAfterBytes: 1 });
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /EPIPE|Error/);
  });
});
