/**
 * The audit store contract, run against every store: SQLite (a temp file)
 * and PostgreSQL (a schema in a database created for this run). Tampering is
 * done with direct SQL on each store's own tables.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startCheckpointer, verifyAuditLog } from '../src/audit/checkpoints.js';
import { loadOrCreateSigningKeySet } from '../src/keys/signing-key.js';
import { AuditUnavailableError, InvalidRequestError } from '../src/errors.js';
import { queryAll } from '../src/audit/query.js';
import { GENESIS_HASH, hashRecord, newAuditId } from '../src/audit/record.js';
import type { AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord, AuditStore } from '../src/audit/types.js';
import { postgresKind, sqliteKind, type StoreKind, type StoreLog } from './helpers/audit-stores.js';
import { T0, appendMany, makeEntry, randomText } from './helpers/audit-entries.js';
import { createCapturingLogger } from './helpers/broker-fixture.js';




function isUnavailable(reason: string, causeCode?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof AuditUnavailableError, `expected AuditUnavailableError, got ${String(err)}`);
    assert.equal(err.code, 'audit_unavailable');
    assert.equal(err.reason, reason);
    if (causeCode !== undefined) assert.match(String((err.cause as { code?: unknown } | undefined)?.code), causeCode);
    return true;
  };
}

function isBadRequest(reason: string) {
  return (err: unknown) => err instanceof InvalidRequestError && err.reason === reason;
}

function checkpoint(point: { seq: number; hash: string }, kind: AuditCheckpoint['kind'], time = new Date(T0 + 3_600_000).toISOString()): AuditCheckpoint {
  // The store keeps checkpoints as given; signing them is checkpoints.ts's business.
  return { seq: point.seq, hash: point.hash, time, kind, kid: 'test-kid', jws: `jws-${kind}-${point.seq}-${time}` };
}

const kinds: StoreKind[] = [sqliteKind(), postgresKind()];
after(async () => {
  for (const kind of kinds) await kind.cleanup();
});

for (const kind of kinds) {
  /** A fresh log and a store open on it. */
  async function fresh(options: Parameters<StoreLog['open']>[0] = {}): Promise<{ log: StoreLog; store: AuditStore }> {
    const log = await kind.newLog();
    return { log, store: await log.open(options) };
  }

  describe(`${kind.name} audit store: append and read back`, () => {
    it('returns what it stored, linked from the genesis hash, and reads it back identically', async () => {
      const { log, store } = await fresh();
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
      assert.deepEqual(await store.verify(), { ok: true, events: 3, head: records[2]!.hash, last_seq: 3 });
      await store.close();

      // Durable across a reopen, and the chain continues from the stored head.
      const reopened = await log.open();
      assert.deepEqual((await reopened.query({})).events, records);
      const fourth = await reopened.append(makeEntry());
      assert.equal(fourth.seq, 4);
      assert.equal(fourth.prev_hash, records[2]!.hash);
      assert.deepEqual(await reopened.verify(), { ok: true, events: 4, head: fourth.hash, last_seq: 4 });
      await reopened.close();
    });

    it('reads JSON back byte for byte: key order, numbers, escapes and non-ASCII survive', async () => {
      const { store } = await fresh();
      const claims = {
        z_last: 'first key',
        a_first: 'second key',
        '10': 'numeric-looking key',
        // eslint-disable-next-line no-loss-of-precision -- an id JSON cannot hold exactly is the point of this case
        big: 12345678901234567890,
        small: 1e-7,
        fraction: 0.1,
        exp: 1e21,
        negative: -42,
        quote: 'say "hi" \\ back\\slash',
        control: 'tab\tnewline\nbell\u0007',
        separators: 'line\u2028para\u2029',
        unicode: 'Ünïcödé ✓ 𝄞 🚀',
        nested: { b: [1, 'two', { c: null }], a: true },
        empty: {},
        list: [],
      };
      const record = await store.append(makeEntry({ claims, audience: ['b', 'a', 'ü'], unverified: { sub: 's', iss: 'i' }, duration_seconds: 2 ** 53 - 1 }));
      const [read] = (await store.query({})).events;
      assert.deepEqual(read, record);
      assert.equal(JSON.stringify(read.claims), JSON.stringify(record.claims), 'same key order');
      assert.equal(hashRecord(read.prev_hash, read.seq, read), record.hash);
      assert.equal((await store.verify()).ok, true);
      assert.deepEqual((await store.query({ claims: { unicode: 'Ünïcödé ✓ 𝄞 🚀' } })).events.map((r) => r.seq), [1]);
      assert.deepEqual((await store.query({ claims: { big: '12345678901234567000' } })).events.map((r) => r.seq), [1]);
      await store.close();
    });

    it('stores nothing it was not given', async () => {
      const { log, store } = await fresh();
      const entry = { ...makeEntry(), session_token: 'SECRET-SESSION-TOKEN', credentials: { SecretAccessKey: 'SECRET-KEY' } } as AuditEntry;
      const record = await store.append(entry);
      assert.equal('session_token' in record, false);
      assert.equal('credentials' in record, false);
      await store.close();
      const dump = await log.dump();
      assert.ok(dump.includes(record.hash), 'the dump holds the log');
      assert.equal(dump.includes('SECRET'), false);
    });

    it('rejects a malformed entry without writing it or disturbing the batch', async () => {
      const { store } = await fresh();
      const good = store.append(makeEntry());
      await assert.rejects(store.append({ ...makeEntry(), time: '2026-11-25T19:00:00Z' }), TypeError);
      await assert.rejects(store.append({ ...makeEntry(), decision: 'allowed' as 'issued' }), TypeError);
      assert.equal((await good).seq, 1);
      assert.equal((await store.append(makeEntry())).seq, 2);
      assert.equal((await store.verify()).ok, true);
      await store.close();
    });

    it('rejects only the entry whose id is already taken; the rest of the batch commits without a gap', async () => {
      const { store } = await fresh();
      const id = newAuditId();
      const results = await Promise.allSettled([store.append(makeEntry({ id })), store.append(makeEntry({ id })), store.append(makeEntry())]);
      assert.equal(results[0].status, 'fulfilled');
      assert.equal(results[1].status, 'rejected');
      assert.ok(results[1].status === 'rejected' && isUnavailable('audit_write_failed', /^(SQLITE_CONSTRAINT|23505)/)(results[1].reason));
      assert.equal(results[2].status === 'fulfilled' && results[2].value.seq, 2);
      // Also across batches.
      await assert.rejects(store.append(makeEntry({ id })), isUnavailable('audit_write_failed'));
      assert.equal((await store.append(makeEntry())).seq, 3);
      assert.deepEqual((await store.verify()).events, 3);
      await store.close();
    });
  });

  describe(`${kind.name} audit store: tamper evidence`, () => {
    async function fiveRecords() {
      const { log, store } = await fresh();
      const records = await appendMany(store, 5, (i) => ({ policy: `policy-${i + 1}`, claims: { repository: `acme/repo-${i + 1}`, run_number: i + 1 } }));
      assert.equal((await store.verify()).ok, true);
      return { log, store, records };
    }

    it('detects a changed column at that record', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec("UPDATE audit_events SET policy = 'admin' WHERE seq = 3");
      assert.deepEqual(await store.verify(), {
        ok: false,
        events: 2,
        head: records[1]!.hash,
        last_seq: 2,
        broken: { seq: 3, id: records[2]!.id, problem: 'hash_mismatch' },
      });
      await store.close();
    });

    it('detects audit matches removed from a record, or added to one', async () => {
      const { log, store } = await fresh();
      const records = await appendMany(store, 3, (i) => ({ audit_matches: i === 1 ? ['deny-self-hosted'] : [] }));
      assert.deepEqual(records.map((r) => r.audit_matches), [[], ['deny-self-hosted'], []]);
      assert.equal((await store.verify()).ok, true);
      for (const [edit, seq] of [
        ['UPDATE audit_events SET audit_matches = NULL WHERE seq = 2', 2],
        ['UPDATE audit_events SET audit_matches = \'""\' WHERE seq = 2', 2],
        ['UPDATE audit_events SET audit_matches = \'["deny-other"]\' WHERE seq = 1', 1],
      ] as const) {
        await log.exec(edit);
        const result = await store.verify();
        assert.deepEqual(!result.ok && result.broken, { seq, id: records[seq - 1]!.id, problem: 'hash_mismatch' }, edit);
        await log.exec(`UPDATE audit_events SET audit_matches = ${seq === 2 ? '\'["deny-self-hosted"]\'' : 'NULL'} WHERE seq = ${seq}`);
        assert.equal((await store.verify()).ok, true, 'restored');
      }
      await store.close();
    });

    it('detects a changed claim at that record', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec("UPDATE audit_events SET claims = replace(claims, 'acme/repo-2', 'acme/evil') WHERE seq = 2");
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'hash_mismatch' });
      await store.close();
    });

    it('detects deleted claim index rows (claim queries would lie)', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec("DELETE FROM audit_claims WHERE seq = 4 AND name = 'repository'");
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 4, id: records[3]!.id, problem: 'claim_index_mismatch' });
      assert.equal(result.events, 3);
      await store.close();
    });

    it('detects a changed claim index value', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec("UPDATE audit_claims SET value = 'acme/other' WHERE seq = 2 AND name = 'repository'");
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'claim_index_mismatch' });
      await store.close();
    });

    it('detects a record whose JSON no longer parses', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec("UPDATE audit_events SET claims = '{not json' WHERE seq = 2");
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'unreadable' });
      await assert.rejects(store.query({}), isUnavailable('audit_read_failed'));
      await store.close();
    });

    it('detects a deleted middle record at the next one', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec('DELETE FROM audit_events WHERE seq = 3');
      assert.deepEqual(await store.verify(), {
        ok: false,
        events: 2,
        head: records[1]!.hash,
        last_seq: 2,
        broken: { seq: 4, id: records[3]!.id, problem: 'seq_gap' },
      });
      await store.close();
    });

    it('detects a deleted first record', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec('DELETE FROM audit_events WHERE seq = 1');
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[1]!.id, problem: 'seq_gap' });
      await store.close();
    });

    it('cannot detect a deleted last record from the chain alone', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec('DELETE FROM audit_events WHERE seq = 5');
      // A truncated chain is still a valid chain: only a checkpoint (kept
      // elsewhere and signed) reveals the truncation.
      assert.deepEqual(await store.verify(), { ok: true, events: 4, head: records[3]!.hash, last_seq: 4 });
      // Appending goes on from the remaining head, and the deleted record's claim rows do not get in the way.
      const next = await store.append(makeEntry());
      assert.equal(next.seq, 5);
      assert.equal(next.prev_hash, records[3]!.hash);
      assert.deepEqual(await store.verify(), { ok: true, events: 5, head: next.hash, last_seq: 5 });
      await store.close();
    });

    it('detects two swapped records at the first of them', async () => {
      const { log, store, records } = await fiveRecords();
      await log.exec(
        `BEGIN;
         UPDATE audit_events SET seq = 1000002 WHERE seq = 2;
         UPDATE audit_events SET seq = 2 WHERE seq = 3;
         UPDATE audit_events SET seq = 3 WHERE seq = 1000002;
         COMMIT;`,
      );
      const result = await store.verify();
      assert.deepEqual(!result.ok && result.broken, { seq: 2, id: records[2]!.id, problem: 'prev_hash_mismatch' });
      assert.equal(result.events, 1);
      await store.close();
    });

    it('walks a long chain in batches and finds a break past the first batch', async () => {
      const { log, store } = await fresh();
      const records = await appendMany(store, 2500, (i) => ({ claims: { run_number: i } }));
      assert.deepEqual(await store.verify(), { ok: true, events: 2500, head: records[2499]!.hash, last_seq: 2500 });
      await log.exec("UPDATE audit_events SET decision = 'denied' WHERE seq = 1777");
      assert.deepEqual(await store.verify(), {
        ok: false,
        events: 1776,
        head: records[1775]!.hash,
        last_seq: 1776,
        broken: { seq: 1777, id: records[1776]!.id, problem: 'hash_mismatch' },
      });
      await store.close();
    });
  });

  describe(`${kind.name} audit store: group commit`, () => {
    it('commits 500 concurrent appends in a few transactions, in order, without gaps', async () => {
      const commits: number[] = [];
      const { store } = await fresh({ onAppendSeconds: (s) => commits.push(s) });
      const entries = Array.from({ length: 500 }, (_, i) => makeEntry({ request_id: `req-${i}` }));
      const records = await Promise.all(entries.map((e) => store.append(e)));
      assert.deepEqual(
        records.map((r) => r.seq),
        Array.from({ length: 500 }, (_, i) => i + 1),
      );
      records.forEach((r, i) => assert.equal(r.request_id, `req-${i}`));
      assert.ok(commits.length >= 1 && commits.length <= 5, `${commits.length} commits for 500 appends`);
      assert.ok(commits.every((s) => Number.isFinite(s) && s >= 0 && s < 10));
      assert.deepEqual(await store.verify(), { ok: true, events: 500, head: records[499]!.hash, last_seq: 500 });
      await store.close();
    });

    it('splits a very large queue into bounded transactions', async () => {
      const commits: number[] = [];
      const { store } = await fresh({ onAppendSeconds: (s) => commits.push(s) });
      const records = await appendMany(store, 1100);
      // At most 500 per transaction.
      assert.equal(commits.length, 3);
      assert.equal(new Set(records.map((r) => r.seq)).size, 1100);
      assert.equal((await store.verify()).ok, true);
      await store.close();
    });

    it('gives 200 appends made concurrently from separate ticks seq 1..200 with no gaps, and the chain verifies', async () => {
      const { store } = await fresh();
      const records = await Promise.all(
        Array.from({ length: 200 }, (_, i) => new Promise<AuditRecord>((resolve, reject) => setTimeout(() => void store.append(makeEntry({ request_id: `r${i}` })).then(resolve, reject), i % 7))),
      );
      assert.deepEqual(
        records.map((r) => r.seq).sort((a, b) => a - b),
        Array.from({ length: 200 }, (_, i) => i + 1),
      );
      const bySeq = [...records].sort((a, b) => a.seq - b.seq);
      bySeq.forEach((r, i) => assert.equal(r.prev_hash, i === 0 ? GENESIS_HASH : bySeq[i - 1]!.hash));
      assert.deepEqual(await store.verify(), { ok: true, events: 200, head: bySeq[199]!.hash, last_seq: 200 });
      await store.close();
    });

    it('keeps a committed batch committed when the metrics callback throws', async () => {
      const { store } = await fresh({
        onAppendSeconds: () => {
          throw new Error('metrics broke');
        },
      });
      assert.equal((await store.append(makeEntry())).seq, 1);
      assert.equal((await store.append(makeEntry())).seq, 2);
      await store.close();
    });
  });

  describe(`${kind.name} audit store: hostile text`, () => {
    it('stores claim names with lone surrogates, and names that become equal, as distinct storable names; the log verifies and is checkpointed', async () => {
      const { store } = await fresh();
      const keyDir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-keys-'));
      after(() => rmSync(keyDir, { recursive: true, force: true }));
      const keys = await loadOrCreateSigningKeySet(join(keyDir, 'key.jwk'), createCapturingLogger().logger);
      const checkpointer = startCheckpointer({ store, keys: () => keys, logger: createCapturingLogger().logger, intervalMs: 3_600_000 });
      const hostile = [
        // The pair that collided on the claim index's primary key: both are 'x\uFFFD' as UTF-8.
        makeEntry({ claims: { 'x\ud800': 'a', 'x\udbff': 'b' } }),
        // A name already storable keeps its name; the changed ones take the next free suffix.
        makeEntry({ claims: { 'x\ud800': 'a', 'x\uFFFD': 'c', 'x\uFFFD#2': 'd', 'x\udbff': 'b', nested: { 'k\ud800': ['v\udc00'], 'k\u0000': 2 } } }),
        // U+0000, which PostgreSQL text refuses, and lone surrogates in every text column.
        makeEntry({
          subject: 'sub\ud800\u0000',
          jti: 'jti\u0000',
          issuer: 'iss\udfff',
          policy: 'p\u0000\udc00',
          user_agent: 'ua\u0000',
          request_id: 'req\ud800',
          audience: ['aud\u0000'],
          unverified: { iss: 'i\ud800', sub: 's\u0000' },
          claims: { 'na\u0000me': 'v\u0000', repository: 'acme/\ud800' },
        }),
      ];
      const settled = await Promise.allSettled([makeEntry(), ...hostile, makeEntry()].map((e) => checkpointer.store.append(e)));
      assert.deepEqual(settled.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
      const records = settled.map((r) => (r as PromiseFulfilledResult<AuditRecord>).value);
      assert.deepEqual(records[1]!.claims, { 'x\uFFFD': 'a', 'x\uFFFD#2': 'b' });
      assert.deepEqual(records[2]!.claims, { 'x\uFFFD': 'c', 'x\uFFFD#2': 'd', 'x\uFFFD#3': 'a', 'x\uFFFD#4': 'b', nested: { 'k\uFFFD': ['v\uFFFD'], 'k\uFFFD#2': 2 } });
      const text = records[3]!;
      assert.deepEqual(
        [text.subject, text.jti, text.issuer, text.policy, text.user_agent, text.request_id, text.audience, text.unverified, text.claims],
        ['sub\uFFFD\uFFFD', 'jti\uFFFD', 'iss\uFFFD', 'p\uFFFD\uFFFD', 'ua\uFFFD', 'req\uFFFD', ['aud\uFFFD'], { iss: 'i\uFFFD', sub: 's\uFFFD' }, { 'na\uFFFDme': 'v\uFFFD', repository: 'acme/\uFFFD' }],
      );
      // What was hashed is what every read returns, and the claim index finds the renamed claims.
      assert.deepEqual((await store.query({})).events, records);
      assert.deepEqual((await store.query({ claims: { 'x\uFFFD#2': 'b' } })).events, [records[1]]);
      assert.deepEqual((await store.query({ claims: { 'x\uFFFD#4': 'b' } })).events, [records[2]]);
      assert.deepEqual((await store.query({ subject: 'sub\uFFFD\uFFFD' })).events, [text]);
      assert.deepEqual(await store.verify(), { ok: true, events: 5, head: records[4]!.hash, last_seq: 5 });
      const made = await checkpointer.checkpointNow();
      assert.equal(made?.seq, 5);
      assert.deepEqual((await verifyAuditLog(store, keys.verificationKeys)).ok, true);
      // Later appends and checkpoints go on as usual.
      await checkpointer.store.append(makeEntry({ claims: { 'x\ud800': 'again' } }));
      assert.equal((await checkpointer.checkpointNow())?.seq, 6);
      await store.close();
    });

    it('records text longer than an index entry (a 12 KB sub and claim value, a 2 KB claim name), reads it back exactly and finds it by its exact value', async () => {
      const { store } = await fresh();
      const longName = randomText(2048);
      const [subject, value, policy, issuer, credentialId] = [12_288, 12_288, 4096, 4096, 4096].map(randomText) as [string, string, string, string, string];
      const long = makeEntry({ subject, policy, issuer, credential_id: credentialId, claims: { repository: 'acme/api', long_value: value, [longName]: 'short' } });
      // Same lengths, one character apart at the end: a match on a prefix would find these too.
      const nearMiss = (text: string) => `${text.slice(0, -1)}${text.endsWith('a') ? 'b' : 'a'}`;
      const near = makeEntry({
        subject: nearMiss(subject),
        policy: nearMiss(policy),
        issuer: nearMiss(issuer),
        credential_id: nearMiss(credentialId),
        claims: { repository: 'acme/api', long_value: nearMiss(value), [nearMiss(longName)]: 'short' },
      });
      const records = [await store.append(makeEntry()), await store.append(long), await store.append(near)];
      const [, stored] = records;
      assert.equal(stored!.subject, subject);
      assert.deepEqual(stored!.claims, long.claims);
      assert.deepEqual((await store.query({})).events, records, 'read back as hashed');
      const filters: AuditQuery[] = [
        { subject },
        { policy },
        { issuer },
        { credentialId },
        { claims: { long_value: value } },
        { claims: { [longName]: 'short' } },
        { claims: { repository: 'acme/api', long_value: value } },
        { claims: { [longName]: 'short', long_value: value } },
        { subject, claims: { long_value: value }, since: new Date(T0).toISOString(), until: new Date(T0 + 1).toISOString() },
      ];
      for (const query of filters) assert.deepEqual((await store.query(query)).events, [stored], JSON.stringify(Object.keys(query)));
      assert.deepEqual((await store.query({ claims: { long_value: value.slice(0, -1) } })).events, []);
      assert.deepEqual((await store.query({ subject: `${subject}x` })).events, []);
      assert.deepEqual(await store.verify(), { ok: true, events: 3, head: records[2]!.hash, last_seq: 3 });
      await store.close();
    });

    it('commits every other record of a batch holding one the database refuses; that one alone fails', async () => {
      const { log, store } = await fresh();
      await store.append(makeEntry());
      await log.refuseRecords('refused');
      const poisoned = new Set([0, 7, 19]);
      // Queued in one tick, so group commit writes them as one batch first.
      const settled = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => store.append(makeEntry({ request_id: `r${i}`, user_agent: poisoned.has(i) ? 'refused' : 'test' }))));
      settled.forEach((r, i) => assert.equal(r.status, poisoned.has(i) ? 'rejected' : 'fulfilled', `append ${i}`));
      for (const r of settled) if (r.status === 'rejected') isUnavailable('audit_write_failed', kind.refusalCode)(r.reason);
      const committed = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      assert.deepEqual(
        committed.map((r) => [r.seq, r.request_id]),
        Array.from({ length: 20 }, (_, i) => `r${i}`)
          .filter((_, i) => !poisoned.has(i))
          .map((id, i) => [i + 2, id]),
      );
      assert.deepEqual(await store.verify(), { ok: true, events: 18, head: committed.at(-1)!.hash, last_seq: 18 });
      // A refusal fails the readiness check until a record commits again, like any failed append.
      await store.append(makeEntry());
      await store.ping();
      await store.close();
    });
  });

  describe(`${kind.name} audit store: fails closed`, () => {
    it('rejects within the lock timeout while another session holds the write lock, then recovers', async () => {
      const commits: number[] = [];
      const { log, store } = await fresh({ lockTimeoutMs: 200, onAppendSeconds: (s) => commits.push(s) });
      const first = await store.append(makeEntry());
      const lock = await log.holdWriteLock();
      try {
        const started = Date.now();
        const results = await Promise.allSettled([store.append(makeEntry()), store.append(makeEntry())]);
        const elapsedMs = Date.now() - started;
        for (const r of results) {
          assert.equal(r.status, 'rejected');
          assert.ok(r.status === 'rejected' && isUnavailable('audit_write_failed', kind.lockTimeoutCode)(r.reason));
        }
        assert.ok(elapsedMs >= 150 && elapsedMs < 5000, `rejected after ${elapsedMs} ms`);
        // SQLite's lock is the file's, so its probe fails; a PostgreSQL writer's lock leaves the probe
        // passing, but the appends that just failed fail this readiness check all the same.
        await assert.rejects(store.ping(), isUnavailable('audit_unwritable', kind.name === 'sqlite' ? kind.lockTimeoutCode : undefined));
        // The failures are reported once: the next check is the probe's alone.
        if (kind.name === 'postgres') await store.ping();
        // Nothing half-written.
        assert.equal(await lock.scalar('SELECT count(*) FROM audit_events'), 1);
        assert.equal(await lock.scalar('SELECT count(*) FROM audit_claims WHERE seq > 1'), 0);
      } finally {
        await lock.release();
      }
      await store.ping();
      const next = await store.append(makeEntry());
      assert.equal(next.seq, 2);
      assert.equal(next.prev_hash, first.hash);
      assert.deepEqual(await store.verify(), { ok: true, events: 2, head: next.hash, last_seq: 2 });
      assert.equal(commits.length, 2, 'only committed batches report a latency');
      await store.close();
    });

    it('follows a head another writer moved, instead of forking the chain', async () => {
      const { log, store } = await fresh();
      await store.append(makeEntry());
      const other = await log.open();
      const theirs = await other.append(makeEntry());
      await other.close();
      const ours = await store.append(makeEntry());
      assert.equal(ours.seq, 3);
      assert.equal(ours.prev_hash, theirs.hash);
      assert.equal((await store.verify()).ok, true);
      await store.close();
    });

    it('flushes queued appends on close, then refuses everything', async () => {
      const { log, store } = await fresh();
      const pending = [store.append(makeEntry()), store.append(makeEntry())];
      const closing = store.close();
      await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
      await closing;
      assert.deepEqual((await Promise.all(pending)).map((r) => r.seq), [1, 2]);
      await assert.rejects(store.append(makeEntry()), isUnavailable('audit_write_failed'));
      await assert.rejects(store.ping(), isUnavailable('audit_unwritable'));
      await assert.rejects(store.query({}), isUnavailable('audit_read_failed'));
      await assert.rejects(store.verify(), isUnavailable('audit_read_failed'));
      await assert.rejects(store.head(), isUnavailable('audit_read_failed'));
      await store.close(); // idempotent

      const reopened = await log.open();
      assert.equal((await reopened.query({})).events.length, 2);
      await reopened.close();
    });

    it('never logs', async () => {
      const methods = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;
      const saved = methods.map((m) => console[m].bind(console));
      const calls: string[] = [];
      for (const m of methods) console[m] = (...args: unknown[]) => void calls.push(`${m}: ${args.map(String).join(' ')}`);
      try {
        const { log, store } = await fresh({ lockTimeoutMs: 100 });
        await appendMany(store, 10);
        await store.query({ claims: { run_number: '6' } });
        const lock = await log.holdWriteLock();
        await store.append(makeEntry()).catch(() => undefined);
        await store.ping().catch(() => undefined);
        await lock.release();
        await log.exec("UPDATE audit_events SET policy = 'x' WHERE seq = 2");
        await store.verify();
        await store.close();
        await store.append(makeEntry()).catch(() => undefined);
      } finally {
        methods.forEach((m, i) => (console[m] = saved[i]!));
      }
      assert.deepEqual(calls, []);
    });
  });

  describe(`${kind.name} audit store: query`, () => {
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
        audit_matches: [[], ['deny-a'], [], ['deny-a', 'deny-b'], [], ['deny-b']][i % 6]!,
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
        const { store } = await fresh();
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
      ['auditMatch', { auditMatch: 'deny-a' }, (r) => r.audit_matches.includes('deny-a')],
      ['auditMatch, the second name of a list', { auditMatch: 'deny-b' }, (r) => r.audit_matches.includes('deny-b')],
      ['auditMatch is exact', { auditMatch: 'deny' }, none],
      ['auditMatch and decision', { auditMatch: 'deny-a', decision: 'explain' }, (r) => r.audit_matches.includes('deny-a') && r.decision === 'explain'],
      ['since is inclusive', { since: new Date(T0 + 10 * 60_000).toISOString() }, (r) => r.seq >= 11],
      ['until is exclusive', { until: new Date(T0 + 10 * 60_000).toISOString() }, (r) => r.seq <= 10],
      ['since/until with offsets and no fraction', { since: '2026-11-25T20:05:00+01:00', until: '2026-11-25T15:15:00-04:00' }, (r) => r.seq >= 6 && r.seq <= 15],
      ['since rounds a sub-millisecond fraction up', { since: '2026-11-25T19:05:00.0000001Z' }, (r) => r.seq >= 7],
      ['a window ending in an hour without records', { since: '2026-11-25T19:35:00Z', until: '2026-11-25T20:00:00.001Z' }, (r) => r.seq >= 36],
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
      ['a filter holding U+0000 matches nothing', { policy: 'p-a\u0000', claims: { repository: 'acme/\u0000' } }, none],
      ['claim and time window', { claims: { repository: 'acme/web' }, since: new Date(T0 + 5 * 60_000).toISOString(), until: new Date(T0 + 20 * 60_000).toISOString() }, (r) => claim(r, 'repository') === 'acme/web' && r.seq >= 6 && r.seq <= 20],
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
      const { store } = await fresh();
      // Minutes after T0, some hours apart, appended out of order.
      const minutes = [10, 5, 20, 7, 30, 14, 6, 125, 61, 2, 59];
      await appendMany(store, minutes.length, (i) => ({ time: new Date(T0 + minutes[i]! * 60_000).toISOString() }));
      const walk = async (window: AuditQuery) => {
        const seqs: number[] = [];
        let cursor: string | undefined;
        do {
          const page = await store.query({ ...window, limit: 1, cursor });
          seqs.push(...page.events.map((r) => r.seq));
          cursor = page.nextCursor ?? undefined;
        } while (cursor !== undefined);
        return seqs;
      };
      assert.deepEqual(await walk({ since: new Date(T0 + 6 * 60_000).toISOString(), until: new Date(T0 + 15 * 60_000).toISOString() }), [1, 4, 6, 7]);
      assert.deepEqual(await walk({ since: new Date(T0 + 59 * 60_000).toISOString(), until: new Date(T0 + 62 * 60_000).toISOString() }), [9, 11]);
      assert.deepEqual(await walk({ since: new Date(T0 + 3 * 60_000).toISOString(), until: new Date(T0 + 7 * 60_000).toISOString() }), [2, 7]);
      assert.deepEqual(await walk({ since: new Date(T0 + 60 * 60_000).toISOString() }), [8, 9]);
      assert.deepEqual(await walk({ until: new Date(T0 + 6 * 60_000).toISOString() }), [2, 10]);
      assert.deepEqual(await store.query({ since: new Date(T0 + 126 * 60_000).toISOString() }), { events: [], nextCursor: null });
      assert.deepEqual(await store.query({ until: new Date(T0).toISOString() }), { events: [], nextCursor: null });
      assert.deepEqual(await store.query({ since: '2026-11-26T00:00:00Z', until: '2026-11-27T00:00:00Z' }), { events: [], nextCursor: null });
      await store.close();
    });

    it('defaults to 100 per page', async () => {
      const { store } = await fresh();
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
      const { store } = await fresh();
      await appendMany(store, 25, (i) => ({ decision: i % 2 === 0 ? 'issued' : 'denied', claims: { run_number: i % 3 === 0 ? 6 : '6' } }));
      const window = { since: new Date(T0).toISOString(), until: new Date(T0 + 60_000).toISOString() };
      const seen: AuditRecord[] = [];
      let cursor: string | undefined;
      for (let page = 0; ; page += 1) {
        assert.ok(page < 100, 'pagination terminates');
        const result = await store.query({ decision: 'issued', claims: { run_number: '6' }, ...window, limit: 4, cursor });
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
  });

  describe(`${kind.name} audit store: checkpoints and pruning`, () => {
    /** Records one minute apart from T0. */
    async function minutes(store: AuditStore, n: number): Promise<AuditRecord[]> {
      const records: AuditRecord[] = [];
      for (let i = 0; i < n; i += 1) records.push(await store.append(makeEntry({ time: new Date(T0 + i * 60_000).toISOString(), claims: { repository: 'acme/api', n: i } })));
      return records;
    }

    it('reports the head: the genesis for an empty log, then the last record', async () => {
      const { store } = await fresh();
      assert.deepEqual(await store.head(), { seq: 0, hash: GENESIS_HASH });
      const records = await appendMany(store, 3);
      assert.deepEqual(await store.head(), { seq: 3, hash: records[2]!.hash });
      await store.close();
    });

    it('finds the prune boundary: the last of the oldest records that are all older than the cutoff', async () => {
      const { store } = await fresh();
      assert.equal(await store.pruneBoundary(new Date(T0).toISOString()), null);
      const times = [0, 1, 2, 10, 3, 11];
      const records = await appendMany(store, times.length, (i) => ({ time: new Date(T0 + times[i]! * 60_000).toISOString() }));
      const at = (m: number) => new Date(T0 + m * 60_000).toISOString();
      assert.equal(await store.pruneBoundary(at(0)), null, 'nothing is older than the first record');
      assert.deepEqual(await store.pruneBoundary(at(1)), { seq: 1, hash: records[0]!.hash }, 'exclusive cutoff');
      assert.deepEqual(await store.pruneBoundary(at(2)), { seq: 2, hash: records[1]!.hash });
      // Seq 5 (minute 3) is older than minute 5, but seq 4 (minute 10) is not: pruning stops before seq 4.
      assert.deepEqual(await store.pruneBoundary(at(5)), { seq: 3, hash: records[2]!.hash });
      assert.deepEqual(await store.pruneBoundary(at(12)), { seq: 6, hash: records[5]!.hash }, 'everything is older');
      await store.close();
    });

    it('stores checkpoints idempotently and lists them in seq order, then time', async () => {
      const { store } = await fresh();
      const records = await appendMany(store, 3);
      const late = checkpoint({ seq: 3, hash: records[2]!.hash }, 'periodic', new Date(T0 + 7_200_000).toISOString());
      const early = checkpoint({ seq: 3, hash: records[2]!.hash }, 'periodic', new Date(T0 + 3_600_000).toISOString());
      const first = checkpoint({ seq: 1, hash: records[0]!.hash }, 'periodic', new Date(T0 + 9_000_000).toISOString());
      assert.deepEqual(await store.checkpoints(), []);
      await store.saveCheckpoint(late);
      await store.saveCheckpoint(first);
      await store.saveCheckpoint(early);
      await store.saveCheckpoint(late);
      await store.saveCheckpoint({ ...first });
      assert.deepEqual(await store.checkpoints(), [first, early, late]);
      await store.close();
    });

    it('passes the hashes checkpoints vouch for to the walk', async () => {
      const { store } = await fresh();
      const records = await appendMany(store, 4);
      assert.equal((await store.verify({ expected: new Map([[2, records[1]!.hash]]) })).ok, true);
      const result = await store.verify({ expected: new Map([[3, 'f'.repeat(64)]]) });
      assert.deepEqual(!result.ok && result.broken, { seq: 3, id: records[2]!.id, problem: 'checkpoint_mismatch' });
      assert.equal(result.last_seq, 2);
      await store.close();
    });

    it('refuses an anchor that is not a prune checkpoint or does not match the record, deleting nothing', async () => {
      const { store } = await fresh();
      const records = await minutes(store, 4);
      await assert.rejects(store.prune(checkpoint({ seq: 2, hash: records[1]!.hash }, 'periodic')), TypeError);
      await assert.rejects(store.prune(checkpoint({ seq: 2, hash: records[2]!.hash }, 'prune')), (err) => err instanceof Error && !(err instanceof AuditUnavailableError) && /anchor's hash/.test(err.message));
      await assert.rejects(store.prune(checkpoint({ seq: 9, hash: records[2]!.hash }, 'prune')), /anchor's hash/);
      assert.equal((await store.query({})).events.length, 4);
      assert.deepEqual(await store.checkpoints(), []);
      await store.close();
    });

    it('prunes up to the anchor with its claim rows, keeps the anchor, and the rest verifies from it', async () => {
      const { log, store } = await fresh();
      const records = await minutes(store, 6);
      const boundary = await store.pruneBoundary(new Date(T0 + 3 * 60_000).toISOString());
      assert.deepEqual(boundary, { seq: 3, hash: records[2]!.hash });
      const anchor = checkpoint(boundary, 'prune');
      assert.equal(await store.prune(anchor), 3);
      assert.deepEqual((await store.query({})).events.map((r) => r.seq), [4, 5, 6]);
      assert.deepEqual((await store.query({ claims: { repository: 'acme/api' } })).events.map((r) => r.seq), [4, 5, 6]);
      assert.equal(await log.scalar('SELECT count(*) FROM audit_claims WHERE seq <= 3'), 0);
      assert.deepEqual(await store.checkpoints(), [anchor]);
      assert.deepEqual(await store.head(), { seq: 6, hash: records[5]!.hash });
      assert.deepEqual(await store.verify({ from: anchor }), { ok: true, events: 3, head: records[5]!.hash, last_seq: 6 });
      const fromGenesis = await store.verify();
      assert.deepEqual(!fromGenesis.ok && fromGenesis.broken, { seq: 4, id: records[3]!.id, problem: 'seq_gap' });
      // The window lookup still finds what is left.
      assert.deepEqual((await store.query({ since: new Date(T0).toISOString(), until: new Date(T0 + 5 * 60_000).toISOString() })).events.map((r) => r.seq), [4, 5]);
      // Pruning the same anchor again deletes nothing and stores nothing new.
      await assert.rejects(store.prune(anchor), /anchor's hash/);
      await store.close();
    });

    it('continues the chain from the anchor after everything was pruned', async () => {
      const { log, store } = await fresh();
      const records = await minutes(store, 3);
      const anchor = checkpoint({ seq: 3, hash: records[2]!.hash }, 'prune');
      assert.equal(await store.prune(anchor), 3);
      assert.deepEqual((await store.query({})).events, []);
      assert.deepEqual(await store.head(), { seq: 3, hash: records[2]!.hash });
      assert.equal(await store.pruneBoundary(new Date(T0 + 3_600_000).toISOString()), null);
      assert.deepEqual(await store.verify({ from: anchor }), { ok: true, events: 0, head: anchor.hash, last_seq: 3 });

      const next = await store.append(makeEntry({ time: new Date(T0 + 10 * 60_000).toISOString() }));
      assert.equal(next.seq, 4);
      assert.equal(next.prev_hash, anchor.hash);
      await store.close();
      // Also for another instance, which has nothing but the store to go on.
      const other = await log.open();
      const more = await appendMany(other, 2);
      assert.deepEqual(more.map((r) => r.seq), [5, 6]);
      assert.equal(more[0]!.prev_hash, next.hash);
      assert.deepEqual(await other.verify({ from: anchor }), { ok: true, events: 3, head: more[1]!.hash, last_seq: 6 });
      assert.deepEqual((await other.query({ claims: { repository: 'acme/api' } })).events.map((r) => r.seq), [4, 5, 6]);
      await other.close();
    });
  });
}
