import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CompactSign, SignJWT } from 'jose';
import request from 'supertest';
import {
  CHECKPOINT_TYPE,
  isCheckpointAuthentic,
  pruneAuditLog,
  signCheckpoint,
  startCheckpointer,
  toCheckpointLink,
  verifyAuditLog,
} from '../src/audit/checkpoints.js';
import { readAuthenticCheckpoint, readTrustedHeadFile } from '../src/audit/trusted-head.js';
import { parseConfig } from '../src/config.js';
import { createBroker } from '../src/main.js';
import { postgresKind, sqliteKind, type StoreLog } from './helpers/audit-stores.js';
import { hashRecord, newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditCheckpoint, AuditEntry, AuditRecord, AuditStore } from '../src/audit/types.js';
import {
  loadOrCreateSigningKey,
  loadOrCreateSigningKeySet,
  loadSigningKeySet,
  retireSigningKey,
  rotateSigningKey,
  type SigningKey,
  type SigningKeySet,
} from '../src/keys/signing-key.js';
import { createCapturingLogger } from './helpers/broker-fixture.js';

const T0 = Date.parse('2026-11-01T00:00:00Z');
const DAY = 86_400_000;
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-checkpoints-'));
  dirs.push(dir);
  return dir;
}

function entryAt(ms: number, overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(ms).toISOString(),
    decision: 'issued',
    error: null,
    reason: null,
    request_id: 'req',
    issuer: 'github',
    subject: 'repo:acme/api:ref:refs/heads/main',
    audience: ['https://broker.example.com'],
    jti: null,
    token_sha256: 'a'.repeat(64),
    claims: { repository: 'acme/api' },
    unverified: null,
    policy: 'deploy',
    policy_sha256: 'b'.repeat(64),
    provider: 'jwt',
    target: 'https://api.example.com',
    credential_id: 'cred',
    expires_at: new Date(ms + 900_000).toISOString(),
    duration_seconds: 900,
    client_ip: '127.0.0.1',
    user_agent: 'test',
    audit_matches: [],
    ...overrides,
  };
}

/** Records one day apart from T0, appended in order. */
async function appendDays(store: AuditStore, count: number, firstDay = 0): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let i = 0; i < count; i++) out.push(await store.append(entryAt(T0 + (firstDay + i) * DAY)));
  return out;
}

let dir: string;
let dbPath: string;
let store: AuditStore;
let keySet: SigningKeySet;
let key: SigningKey;
let keys: SigningKeySet['verificationKeys'];

beforeEach(async () => {
  dir = tempDir();
  dbPath = join(dir, 'audit.db');
  store = openSqliteAuditStore(dbPath);
  keySet = await loadOrCreateSigningKeySet(join(dir, 'key.jwk'), createCapturingLogger().logger);
  key = keySet.active;
  keys = keySet.verificationKeys;
});

function raw(): Database.Database {
  return new Database(dbPath, { timeout: 200 });
}

/**
 * Changes the credential_id of record `forgedSeq` and recomputes the hash of
 * every record in `tail` (consecutive, the first one's prev_hash kept), as an
 * attacker with write access to the file would.
 */
function forgeFrom(tail: readonly AuditRecord[], forgedSeq: number): void {
  const db = raw();
  let prev = tail[0]!.prev_hash;
  for (const record of tail) {
    const changed = record.seq === forgedSeq ? { ...record, credential_id: 'forged' } : record;
    const hash = hashRecord(prev, record.seq, changed);
    db.prepare('UPDATE audit_events SET credential_id = ?, prev_hash = ?, hash = ? WHERE seq = ?').run(changed.credential_id, prev, hash, record.seq);
    prev = hash;
  }
  db.close();
}

describe('checkpoint signatures', () => {
  it('verify with the broker key and only for exactly the stored statement', async () => {
    const checkpoint = await signCheckpoint(key, { seq: 7, hash: 'c'.repeat(64) }, 'periodic', new Date(T0));
    assert.equal(await isCheckpointAuthentic(checkpoint, keys), true);
    const altered: AuditCheckpoint[] = [
      { ...checkpoint, seq: 8 },
      { ...checkpoint, hash: 'd'.repeat(64) },
      { ...checkpoint, time: new Date(T0 + 1).toISOString() },
      { ...checkpoint, kind: 'prune' },
      { ...checkpoint, kid: 'another-kid' },
      { ...checkpoint, jws: checkpoint.jws.slice(0, -4) + (checkpoint.jws.endsWith('AAAA') ? 'BBBB' : 'AAAA') },
    ];
    for (const forged of altered) assert.equal(await isCheckpointAuthentic(forged, keys), false, JSON.stringify(forged));
  });

  it('a checkpoint signed by another key does not verify', async () => {
    const other = await loadOrCreateSigningKey(join(tempDir(), 'other.jwk'), createCapturingLogger().logger);
    const checkpoint = await signCheckpoint(other, { seq: 1, hash: 'c'.repeat(64) }, 'periodic', new Date(T0));
    assert.equal(await isCheckpointAuthentic({ ...checkpoint, kid: key.kid }, keys), false);
    assert.equal(await isCheckpointAuthentic(checkpoint, keys), false);
  });

  it('read from a compact JWS alone (a trusted head), it is authentic, not ours (what it claims kept for the message), or not a checkpoint', async () => {
    const genuine = await signCheckpoint(key, { seq: 7, hash: 'c'.repeat(64) }, 'periodic', new Date(T0));
    assert.deepEqual(await readAuthenticCheckpoint(`${genuine.jws}\n`, keys), { authentic: true, checkpoint: genuine });
    const other = await loadOrCreateSigningKey(join(tempDir(), 'other.jwk'), createCapturingLogger().logger);
    const foreign = await signCheckpoint(other, { seq: 7, hash: 'c'.repeat(64) }, 'periodic', new Date(T0));
    assert.deepEqual(await readAuthenticCheckpoint(foreign.jws, keys), { authentic: false, claimed: foreign });
    assert.deepEqual(await readAuthenticCheckpoint('not-a-jws', keys), { authentic: false, claimed: null });
  });

  it('a broker-issued token with the same claims is not a checkpoint (typ differs)', async () => {
    const statement = { seq: 1, hash: 'c'.repeat(64), time: new Date(T0).toISOString(), kind: 'periodic' as const };
    const jwt = await new SignJWT(statement).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' }).sign(key.privateKey);
    assert.equal(await isCheckpointAuthentic({ ...statement, kid: key.kid, jws: jwt }, keys), false);
    const genuine = await signCheckpoint(key, { seq: 1, hash: statement.hash }, 'periodic', new Date(T0));
    assert.equal(JSON.parse(Buffer.from(genuine.jws.split('.')[0]!, 'base64url').toString()).typ, CHECKPOINT_TYPE);
  });
});

describe('the checkpointer', () => {
  it('signs the newest record it wrote, logs the checkpoint, and does nothing when nothing new was written', async () => {
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000 });
    assert.equal(await checkpointer.checkpointNow(), null, 'an empty log has nothing to vouch for');
    const records = await appendDays(checkpointer.store, 3);
    const made = await checkpointer.checkpointNow();
    assert.deepEqual({ seq: made?.seq, hash: made?.hash, kind: made?.kind }, { seq: 3, hash: records[2]!.hash, kind: 'periodic' });
    assert.equal(await checkpointer.checkpointNow(), null);
    assert.deepEqual(await store.checkpoints(), [made]);
    const logged = lines().map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit checkpoint');
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.jws, made!.jws, 'the log holds a copy of the signed checkpoint');
    await checkpointer.store.append(entryAt(T0 + 3 * DAY));
    await checkpointer.stop();
    assert.deepEqual((await store.checkpoints()).map((c) => c.seq), [3, 4], 'stop() vouches for the final record');
  });

  it('after a key rotation it signs with the new active key, and every checkpoint verifies with the rotated key set', async () => {
    let serving = keySet;
    const checkpointer = startCheckpointer({ store, keys: () => serving, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
    await appendDays(checkpointer.store, 1);
    const before = await checkpointer.checkpointNow();
    assert.equal(before?.kid, keySet.active.kid);

    await rotateSigningKey(join(dir, 'key.jwk'));
    serving = await loadSigningKeySet(join(dir, 'key.jwk'));
    await appendDays(checkpointer.store, 1, 1);
    const after = await checkpointer.checkpointNow();
    assert.equal(after?.kid, serving.active.kid, 'the newest stored checkpoint, signed by the previous key, was accepted');
    assert.notEqual(after?.kid, before?.kid);
    await checkpointer.stop();

    await retireSigningKey(join(dir, 'key.jwk'), keySet.active.kid);
    const retired = await loadSigningKeySet(join(dir, 'key.jwk'));
    const result = await verifyAuditLog(store, retired.verificationKeys);
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(result.checkpoints, 2);
  });

  it('never vouches for records it did not write (another writer, or rows put in the store directly)', async () => {
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
    await appendDays(store, 2);
    assert.equal(await checkpointer.checkpointNow(), null);
    await checkpointer.store.append(entryAt(T0 + 2 * DAY));
    await appendDays(store, 2, 3);
    assert.equal((await checkpointer.checkpointNow())?.seq, 3, 'its own newest record, not the head');
    await checkpointer.stop();
  });

  it('refuses to sign when a record was rewritten since the last checkpoint, even consistently', async () => {
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000 });
    await appendDays(checkpointer.store, 2);
    assert.equal((await checkpointer.checkpointNow())?.seq, 2);
    const records = await appendDays(checkpointer.store, 3, 2);
    // The attacker changes record 4 and recomputes every hash after it.
    forgeFrom(records.slice(1), 4);
    assert.equal((await store.verify()).ok, true, 'the rewritten chain is internally consistent');
    assert.equal(await checkpointer.checkpointNow(), null);
    assert.deepEqual((await store.checkpoints()).map((c) => c.seq), [2]);
    assert.ok(lines().some((l) => l.includes('audit checkpoint refused')));
    await checkpointer.stop();
  });

  it('refuses when the newest stored checkpoint is forged or checkpoints were deleted', async () => {
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000 });
    await appendDays(checkpointer.store, 2);
    await checkpointer.checkpointNow();
    await appendDays(checkpointer.store, 1, 2);
    const db = raw();
    db.prepare('DELETE FROM audit_checkpoints').run();
    db.close();
    assert.equal(await checkpointer.checkpointNow(), null);
    assert.ok(lines().some((l) => l.includes('checkpoints were deleted')));
    const forged = await signCheckpoint(await loadOrCreateSigningKey(join(tempDir(), 'other.jwk'), createCapturingLogger().logger), { seq: 2, hash: 'e'.repeat(64) }, 'periodic', new Date(T0));
    await store.saveCheckpoint({ ...forged, kid: key.kid });
    const fresh = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000 });
    await fresh.store.append(entryAt(T0 + 9 * DAY));
    assert.equal(await fresh.checkpointNow(), null);
    assert.ok(lines().some((l) => l.includes('not authentic')));
    await checkpointer.stop();
    await fresh.stop();
  });

  it('runs on its interval', async () => {
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 20 });
    await appendDays(checkpointer.store, 1);
    for (let i = 0; i < 100 && (await store.checkpoints()).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await checkpointer.stop();
    assert.equal((await store.checkpoints())[0]?.seq, 1);
  });
});

describe('verifyAuditLog', () => {
  it('an empty log verifies', async () => {
    const result = await verifyAuditLog(store, keys);
    assert.deepEqual(result, { ok: true, events: 0, head: '0'.repeat(64), last_seq: 0, first_seq: 1, checkpoints: 0, latest_checkpoint: null });
  });

  it('an intact log with checkpoints verifies and names the latest checkpoint', async () => {
    const records = await appendDays(store, 5);
    const checkpoint = await signCheckpoint(key, { seq: 3, hash: records[2]!.hash }, 'periodic', new Date(T0 + 10 * DAY));
    await store.saveCheckpoint(checkpoint);
    const result = await verifyAuditLog(store, keys);
    assert.equal(result.ok, true);
    assert.equal(result.events, 5);
    assert.equal(result.last_seq, 5);
    assert.deepEqual(result.latest_checkpoint, { seq: 3, time: checkpoint.time, jws: checkpoint.jws });
  });

  it('catches a truncated tail that the chain alone cannot see', async () => {
    const records = await appendDays(store, 10);
    await store.saveCheckpoint(await signCheckpoint(key, { seq: 10, hash: records[9]!.hash }, 'periodic', new Date(T0 + 20 * DAY)));
    const db = raw();
    db.prepare('DELETE FROM audit_claims WHERE seq > 8').run();
    db.prepare('DELETE FROM audit_events WHERE seq > 8').run();
    db.close();
    assert.equal((await store.verify()).ok, true, 'a shorter chain is still a valid chain');
    const result = await verifyAuditLog(store, keys);
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.broken, { seq: 9, id: null, problem: 'truncated' });
    assert.equal(result.events, 8);
  });

  it('catches a chain rewritten consistently from some record on', async () => {
    const records = await appendDays(store, 6);
    await store.saveCheckpoint(await signCheckpoint(key, { seq: 6, hash: records[5]!.hash }, 'periodic', new Date(T0 + 20 * DAY)));
    // The attacker changes record 4 and recomputes every hash after it.
    forgeFrom(records.slice(3), 4);
    assert.equal((await store.verify()).ok, true, 'the rewritten chain is internally consistent');
    const result = await verifyAuditLog(store, keys);
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.broken, { seq: 6, id: records[5]!.id, problem: 'checkpoint_mismatch' });
  });

  it('catches a forged or altered checkpoint', async () => {
    const records = await appendDays(store, 3);
    await store.saveCheckpoint(await signCheckpoint(key, { seq: 3, hash: records[2]!.hash }, 'periodic', new Date(T0 + 20 * DAY)));
    const db = raw();
    db.prepare('UPDATE audit_checkpoints SET seq = 2').run();
    db.close();
    const result = await verifyAuditLog(store, keys);
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: null, problem: 'bad_checkpoint' });
  });
});

/** The `prev` link a checkpoint's JWS carries (undefined for one signed before checkpoints were chained). */
function linkOf(checkpoint: AuditCheckpoint): unknown {
  return (JSON.parse(Buffer.from(checkpoint.jws.split('.')[1]!, 'base64url').toString()) as { prev?: unknown }).prev;
}

/** A checkpoint as the broker signed them before checkpoints were chained: no `prev` in the statement. */
async function signUnlinkedCheckpoint(seq: number, hash: string, time: Date): Promise<AuditCheckpoint> {
  const statement = { seq, hash, time: time.toISOString(), kind: 'periodic' as const };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(statement))).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: CHECKPOINT_TYPE }).sign(key.privateKey);
  return { ...statement, kid: key.kid, jws };
}

describe('the checkpoint chain', () => {
  it('each checkpoint links to the one signed before it, a prune anchor included, and the log verifies', async () => {
    let clock = T0 + 40 * DAY;
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, now: () => new Date((clock += 1000)) });
    await appendDays(checkpointer.store, 2);
    const first = await checkpointer.checkpointNow();
    await appendDays(checkpointer.store, 2, 2);
    const second = await checkpointer.checkpointNow();
    assert.equal(linkOf(first!), null, 'the first checkpoint links to nothing');
    assert.deepEqual(linkOf(second!), toCheckpointLink(first!));
    const pruned = await pruneAuditLog(store, key, new Date(T0 + DAY), new Date((clock += 1000)));
    assert.deepEqual(linkOf(pruned!.anchor), toCheckpointLink(second!), 'the prune anchor links to the last one signed, not the highest seq');
    await appendDays(checkpointer.store, 1, 4);
    const third = await checkpointer.checkpointNow();
    assert.deepEqual(linkOf(third!), toCheckpointLink(pruned!.anchor));
    await checkpointer.stop();
    assert.equal((await verifyAuditLog(store, keys)).ok, true);
  });

  it('catches a checkpoint deleted from the middle of the chain', async () => {
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
    const made: AuditCheckpoint[] = [];
    for (let day = 0; day < 3; day++) {
      await appendDays(checkpointer.store, 1, day);
      made.push((await checkpointer.checkpointNow())!);
    }
    await checkpointer.stop();
    const db = raw();
    db.prepare('DELETE FROM audit_checkpoints WHERE seq = 2').run();
    db.close();
    const result = await verifyAuditLog(store, keys);
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: null, problem: 'missing_checkpoint' });
  });

  it('accepts checkpoints signed before they were chained, but only before the first linked one', async () => {
    const records = await appendDays(store, 2);
    // A log the previous version checkpointed: no links.
    await store.saveCheckpoint(await signUnlinkedCheckpoint(1, records[0]!.hash, new Date(T0 + 10 * DAY)));
    await store.saveCheckpoint(await signUnlinkedCheckpoint(2, records[1]!.hash, new Date(T0 + 11 * DAY)));
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, now: () => new Date(T0 + 12 * DAY) });
    await appendDays(checkpointer.store, 1, 2);
    const linked = await checkpointer.checkpointNow();
    await checkpointer.stop();
    assert.deepEqual(linkOf(linked!), toCheckpointLink((await store.checkpoints())[1]!), 'the first linked checkpoint links to the newest unlinked one');
    assert.equal((await verifyAuditLog(store, keys)).ok, true);

    // An unlinked checkpoint signed after linking began does not belong to this log.
    await store.saveCheckpoint(await signUnlinkedCheckpoint(3, linked!.hash, new Date(T0 + 13 * DAY)));
    const result = await verifyAuditLog(store, keys);
    assert.deepEqual(!result.ok && result.broken, { seq: 3, id: null, problem: 'unlinked_checkpoint' });
  });

  it('against a trusted head, catches a log rolled back to an older signed state, which verifies without one', async () => {
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
    await appendDays(checkpointer.store, 2);
    const older = await checkpointer.checkpointNow();
    await appendDays(checkpointer.store, 2, 2);
    const newest = await checkpointer.checkpointNow();
    await checkpointer.stop();
    assert.equal((await verifyAuditLog(store, keys, { trustedHead: newest! })).ok, true);
    const db = raw();
    db.prepare('DELETE FROM audit_checkpoints WHERE seq > 2').run();
    db.prepare('DELETE FROM audit_claims WHERE seq > 2').run();
    db.prepare('DELETE FROM audit_hours WHERE min_seq > 2').run();
    db.prepare('DELETE FROM audit_events WHERE seq > 2').run();
    db.close();
    assert.equal((await verifyAuditLog(store, keys)).ok, true, 'the older signed state is a valid log');
    assert.equal((await verifyAuditLog(store, keys, { trustedHead: older! })).ok, true);
    const result = await verifyAuditLog(store, keys, { trustedHead: newest! });
    assert.deepEqual(!result.ok && result.broken, { seq: 4, id: null, problem: 'rolled_back' });
  });
});

describe('the trusted head file', () => {
  it('holds the newest checkpoint this broker signed, written 0600', async () => {
    const headFile = join(dir, 'head', 'audit-head.jws');
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, headFile });
    await appendDays(checkpointer.store, 2);
    await checkpointer.checkpointNow();
    await appendDays(checkpointer.store, 1, 2);
    const newest = await checkpointer.checkpointNow();
    await checkpointer.stop();
    assert.equal(readFileSync(headFile, 'utf8'), `${newest!.jws}\n`);
    assert.deepEqual(await readTrustedHeadFile(headFile), newest);
    assert.equal(statSync(headFile).mode & 0o777, 0o600);
  });

  it('a head file that is not a checkpoint this broker signed stops checkpointing', async () => {
    const headFile = join(dir, 'audit-head.jws');
    const other = await loadOrCreateSigningKey(join(tempDir(), 'other.jwk'), createCapturingLogger().logger);
    writeFileSync(headFile, (await signCheckpoint(other, { seq: 1, hash: 'c'.repeat(64) }, 'periodic', new Date(T0))).jws);
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000, headFile });
    await appendDays(checkpointer.store, 1);
    assert.equal(await checkpointer.checkpointNow(), null);
    await checkpointer.stop();
    assert.deepEqual(await store.checkpoints(), []);
    assert.ok(lines().some((l) => l.includes("audit checkpoint refused: the trusted head is not a checkpoint signed by the broker's keys")));
    await assert.rejects(checkpointer.store.ping(), /not a checkpoint signed by the broker.s keys/);
  });
  it('a head file that cannot be read holds up signing, not readiness, and is read again at the next checkpoint', async () => {
    const headFile = join(dir, 'audit-head.jws');
    const first = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, headFile });
    await appendDays(first.store, 2);
    await first.stop();
    const restore = makeUnreadable(headFile);
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000, headFile });
    await checkpointer.store.ping();
    await appendDays(checkpointer.store, 1, 2);
    assert.equal(await checkpointer.checkpointNow(), null, 'nothing is signed without the trusted head');
    assert.equal(loggedAs(lines(), 'audit checkpoint refused: the trusted head file cannot be read; it is read again at the next checkpoint')[0]?.cause?.code, 'EISDIR', lines().join('\n'));
    await checkpointer.store.ping();

    restore();
    assert.equal((await checkpointer.checkpointNow())?.seq, 3);
    await checkpointer.store.ping();
    await checkpointer.stop();
    assert.equal((await readTrustedHeadFile(headFile))?.seq, 3);
  });

  it('a rollback made while the head file could not be read is caught once it can be', async () => {
    const headFile = join(dir, 'audit-head.jws');
    const first = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, headFile });
    await appendDays(first.store, 2);
    await first.checkpointNow();
    await appendDays(first.store, 1, 2);
    await first.stop();
    const restore = makeUnreadable(headFile);
    const db = raw();
    db.prepare('DELETE FROM audit_checkpoints WHERE seq > 2').run();
    db.close();
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000, headFile });
    await appendDays(checkpointer.store, 1, 3);
    assert.equal(await checkpointer.checkpointNow(), null);

    restore();
    assert.equal(await checkpointer.checkpointNow(), null);
    assert.deepEqual((await store.checkpoints()).map((c) => c.seq), [2], 'nothing was signed over the rolled-back log');
    assert.ok(lines().some((l) => l.includes('audit checkpoint refused: the store no longer holds the trusted head checkpoint')), lines().join('\n'));
    await assert.rejects(checkpointer.store.ping(), /behind the trusted head/);
    await checkpointer.stop();
  });

  it('a head signed by a key no longer in the key file is refused with what to do, until the key is back', async () => {
    const headFile = join(dir, 'audit-head.jws');
    const first = startCheckpointer({ store, keys: () => keySet, logger: createCapturingLogger().logger, intervalMs: 3_600_000, headFile });
    await appendDays(first.store, 2);
    await first.stop();
    let serving = await loadOrCreateSigningKeySet(join(tempDir(), 'other.jwk'), createCapturingLogger().logger);
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => serving, logger, intervalMs: 3_600_000, headFile });
    await appendDays(checkpointer.store, 1, 2);
    assert.equal(await checkpointer.checkpointNow(), null);
    const advice = `its key ${keySet.active.kid} is not in the signing key file; put that key back`;
    assert.ok(lines().some((l) => l.includes(advice)), lines().join('\n'));
    await assert.rejects(checkpointer.store.ping(), (err: Error) => err.message.includes(advice));

    serving = keySet; // the key file, reloaded with the key back
    assert.equal((await checkpointer.checkpointNow())?.seq, 3);
    await checkpointer.store.ping();
    await checkpointer.stop();
  });

  it('a head file that cannot be written is logged with why, and checkpointing goes on from the head it holds', async () => {
    const headFile = join(dir, 'audit-head.jws');
    const { logger, lines } = createCapturingLogger();
    const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000, headFile });
    await checkpointer.store.ping();
    // A non-empty directory where the head goes: the rename over it fails.
    mkdirSync(join(headFile, 'in-the-way'), { recursive: true });
    await appendDays(checkpointer.store, 1);
    assert.equal((await checkpointer.checkpointNow())?.seq, 1);
    const notWritten = loggedAs(lines(), 'audit trusted head not written');
    assert.equal(notWritten.length, 1, lines().join('\n'));
    assert.ok(typeof notWritten[0]?.cause?.code === 'string', JSON.stringify(notWritten[0]));
    await appendDays(checkpointer.store, 1, 1);
    assert.equal((await checkpointer.checkpointNow())?.seq, 2);
    await checkpointer.store.ping();
    await checkpointer.stop();
  });
});

/** The log lines with message `msg`, parsed. */
function loggedAs(lines: readonly string[], msg: string): { cause?: { code?: unknown } }[] {
  return lines.map((l) => JSON.parse(l) as { msg: string; cause?: { code?: unknown } }).filter((l) => l.msg === msg);
}

/**
 * Makes `file` unreadable until the returned function puts it back: a
 * directory takes its place, which fails to read even for root (whom
 * chmod 000 does not stop).
 */
function makeUnreadable(file: string): () => void {
  renameSync(file, `${file}.aside`);
  mkdirSync(file);
  return () => {
    rmSync(file, { recursive: true });
    renameSync(`${file}.aside`, file);
  };
}

/**
 * Issue 12's attack, as someone who can write the audit database but not
 * read the broker's key: delete an `issued` record and every checkpoint after
 * an older one, then renumber and rehash the records after it.
 */
async function rollBack(log: StoreLog, records: readonly AuditRecord[], deletedSeq: number, keptCheckpointSeq: number): Promise<void> {
  const kept = records.filter((r) => r.seq !== deletedSeq);
  let prev = records.find((r) => r.seq === deletedSeq - 1)!.hash;
  const statements = [
    `DELETE FROM audit_checkpoints WHERE seq > ${keptCheckpointSeq}`,
    `DELETE FROM audit_claims WHERE seq = ${deletedSeq}`,
    `DELETE FROM audit_events WHERE seq = ${deletedSeq}`,
  ];
  for (const record of kept.filter((r) => r.seq > deletedSeq)) {
    const seq = record.seq - 1;
    const hash = hashRecord(prev, seq, record);
    statements.push(`UPDATE audit_claims SET seq = ${seq} WHERE seq = ${record.seq}`, `UPDATE audit_events SET seq = ${seq}, prev_hash = '${prev}', hash = '${hash}' WHERE id = '${record.id}'`);
    prev = hash;
  }
  statements.push('DELETE FROM audit_hours', 'INSERT INTO audit_hours (hour, min_seq, max_seq) SELECT substr(time, 1, 13), min(seq), max(seq) FROM audit_events GROUP BY 1');
  for (const sql of statements) await log.exec(sql);
}

/** A broker home on `log`: a config naming the signing key file `keyFile` and a head file in its data directory. */
async function brokerHome(log: StoreLog, keyFile: string) {
  const home = tempDir();
  const configPath = join(home, 'broker.yaml');
  writeFileSync(
    configPath,
    `issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [https://broker.example.com]\npolicies:\n  dir: ./policies\naudit:\n  head_file: ./data/audit-head.jws\nproviders:\n  jwt:\n    signing_key_file: ${keyFile}\n`,
  );
  mkdirSync(join(home, 'policies'));
  const config = await parseConfig(readFileSync(configPath, 'utf8'), configPath, {});
  assert.equal(config.audit.headFile, join(home, 'data', 'audit-head.jws'));
  return {
    headFile: config.audit.headFile,
    /** Starts the broker on the log, appends `entries` through it and shuts it down (its final checkpoint); returns the records, the log lines and /readyz's status. */
    run: async (entries: AuditEntry[]): Promise<{ records: AuditRecord[]; lines: string[]; ready: number }> => {
      const { logger, lines } = createCapturingLogger();
      const broker = await createBroker(config, { logger, audit: await log.open() });
      const records: AuditRecord[] = [];
      for (const entry of entries) records.push(await broker.deps.audit.append(entry));
      const ready = (await request(broker.app).get('/readyz')).status;
      await broker.close();
      return { records, lines: lines(), ready };
    },
  };
}

for (const kind of [sqliteKind(), postgresKind()]) {
  describe(`a broker restarted on a ${kind.name} log`, () => {
    after(() => kind.cleanup());

    it('on a log checkpointed before checkpoints were chained: the old checkpoints keep verifying, and the first new one links to the newest of them', async () => {
      const log = await kind.newLog();
      const store = await log.open();
      const records = await appendDays(store, 2);
      const unlinked = [await signUnlinkedCheckpoint(1, records[0]!.hash, new Date(T0 + 10 * DAY)), await signUnlinkedCheckpoint(2, records[1]!.hash, new Date(T0 + 11 * DAY))];
      for (const checkpoint of unlinked) await store.saveCheckpoint(checkpoint);
      const { run } = await brokerHome(log, join(dir, 'key.jwk'));
      await run([entryAt(T0 + 2 * DAY)]);
      const stored = await store.checkpoints();
      assert.deepEqual(stored.map((c) => c.seq), [1, 2, 3]);
      assert.deepEqual(linkOf(stored[2]!), toCheckpointLink(unlinked[1]!));
      assert.equal((await verifyAuditLog(store, keys, { trustedHead: stored[2]! })).ok, true);
      await store.close();
    });

    it('after issue 12\'s rollback it signs nothing over the forged chain, logs why and is not ready; verify with the trusted head says rolled_back', async () => {
      const log = await kind.newLog();
      const { headFile, run } = await brokerHome(log, join(dir, 'key.jwk'));
      const first = await run([entryAt(T0), entryAt(T0 + DAY, { decision: 'denied' }), entryAt(T0 + 2 * DAY, { decision: 'denied' })]);
      const second = await run([entryAt(T0 + 3 * DAY, { decision: 'denied' }), entryAt(T0 + 4 * DAY), entryAt(T0 + 5 * DAY, { decision: 'denied' })]);
      const store = await log.open();
      const signed = await store.checkpoints();
      assert.deepEqual(signed.map((c) => c.seq), [3, 6]);
      const trustedHead = (await readTrustedHeadFile(headFile))!;
      assert.equal(trustedHead.jws, signed[1]!.jws);

      await rollBack(log, [...first.records, ...second.records], 5, 3);
      assert.equal((await verifyAuditLog(store, keys)).ok, true, 'without a trusted head the forged log verifies');
      const checked = await verifyAuditLog(store, keys, { trustedHead });
      assert.deepEqual(!checked.ok && checked.broken, { seq: 6, id: null, problem: 'rolled_back' });

      const third = await run([entryAt(T0 + 6 * DAY)]);
      assert.deepEqual((await store.checkpoints()).map((c) => c.jws), [signed[0]!.jws], 'no checkpoint was signed over the forged chain');
      assert.ok(third.lines.some((l) => l.includes('audit checkpoint refused: the store no longer holds the trusted head checkpoint')), third.lines.join('\n'));
      assert.equal(third.ready, 503);
      assert.equal(first.ready, 200);
      await store.close();
    });
  });
}

describe('pruneAuditLog', () => {
  it('deletes the records before the date, leaves a signed anchor, and the log still verifies and grows', async () => {
    const records = await appendDays(store, 20);
    const pruned = await pruneAuditLog(store, key, new Date(T0 + 10 * DAY), new Date(T0 + 30 * DAY));
    assert.equal(pruned?.deleted, 10);
    assert.deepEqual({ seq: pruned?.anchor.seq, hash: pruned?.anchor.hash, kind: pruned?.anchor.kind }, { seq: 10, hash: records[9]!.hash, kind: 'prune' });
    assert.equal((await store.query({ limit: 1000 })).events[0]?.seq, 11);

    let result = await verifyAuditLog(store, keys);
    assert.deepEqual({ ok: result.ok, first: result.first_seq, events: result.events, last: result.last_seq }, { ok: true, first: 11, events: 10, last: 20 });
    await appendDays(store, 2, 20);
    result = await verifyAuditLog(store, keys);
    assert.deepEqual({ ok: result.ok, events: result.events, last: result.last_seq }, { ok: true, events: 12, last: 22 });
  });

  it('stops at the first record that is not older, so what remains is contiguous', async () => {
    for (const day of [0, 1, 2, 9, 3, 4]) await store.append(entryAt(T0 + day * DAY));
    const pruned = await pruneAuditLog(store, key, new Date(T0 + 5 * DAY));
    assert.equal(pruned?.deleted, 3);
    assert.equal((await verifyAuditLog(store, keys)).ok, true);
  });

  it('nothing old enough: nothing happens', async () => {
    await appendDays(store, 3, 5);
    assert.equal(await pruneAuditLog(store, key, new Date(T0)), null);
    assert.equal((await store.checkpoints()).length, 0);
  });

  it('pruning everything: the next record continues the chain from the anchor', async () => {
    const records = await appendDays(store, 4);
    const pruned = await pruneAuditLog(store, key, new Date(T0 + 100 * DAY));
    assert.equal(pruned?.deleted, 4);
    const next = await store.append(entryAt(T0 + 101 * DAY));
    assert.deepEqual({ seq: next.seq, prev: next.prev_hash }, { seq: 5, prev: records[3]!.hash });
    const result = await verifyAuditLog(store, keys);
    assert.deepEqual({ ok: result.ok, first: result.first_seq, events: result.events }, { ok: true, first: 5, events: 1 });
  });

  it('a record inserted where records were pruned is caught (queries would serve it)', async () => {
    const records = await appendDays(store, 6);
    await pruneAuditLog(store, key, new Date(T0 + 3 * DAY));
    const db = raw();
    const forged = { ...records[1]!, id: newAuditId(), credential_id: 'ASIAFORGED' };
    db.prepare(
      `INSERT INTO audit_events (seq, id, time, decision, issuer, subject, claims, policy, credential_id, prev_hash, hash) VALUES (2, @id, @time, 'issued', 'github', 's', '{}', 'deploy', 'ASIAFORGED', @prev_hash, @hash)`,
    ).run({ id: forged.id, time: forged.time, prev_hash: forged.prev_hash, hash: forged.hash });
    db.close();
    assert.equal((await store.query({ credentialId: 'ASIAFORGED' })).events.length, 1);
    const result = await verifyAuditLog(store, keys);
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: forged.id, problem: 'unexpected_record' });
  });

  it('a deleted prune anchor is caught: the chain then starts with a gap', async () => {
    await appendDays(store, 6);
    await pruneAuditLog(store, key, new Date(T0 + 3 * DAY));
    const db = raw();
    db.prepare("DELETE FROM audit_checkpoints WHERE kind = 'prune'").run();
    db.close();
    const result = await verifyAuditLog(store, keys);
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.broken.problem, 'seq_gap');
    assert.equal(!result.ok && result.broken.seq, 4);
  });
});
