import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { InvalidRequestError } from '../src/errors.js';
import { compileAuditQuery, parseCursor, queryAll, toCursor, toTimeBound } from '../src/audit/query.js';
import { GENESIS_HASH, hashRecord, newAuditId, toCanonicalEntry, toClaimIndex, verifyChain } from '../src/audit/record.js';
import type { AuditEntry, AuditPage, AuditQuery, AuditRecord } from '../src/audit/types.js';

function entry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return toCanonicalEntry({
    id: newAuditId(),
    time: '2026-11-25T19:00:00.000Z',
    decision: 'issued',
    policy: 'api-deploy-prod',
    claims: { repository: 'acme/api', run_number: 6 },
    ...overrides,
  } as AuditEntry);
}

function chain(entries: AuditEntry[]): AuditRecord[] {
  let prev = GENESIS_HASH;
  return entries.map((e, i) => {
    const hash = hashRecord(prev, i + 1, e);
    const record = { ...e, seq: i + 1, prev_hash: prev, hash };
    prev = hash;
    return record;
  });
}

describe('hashRecord', () => {
  it('is SHA-256 over prev_hash and the RFC 8785 form of every field plus seq', () => {
    const e = toCanonicalEntry({ id: 'A', time: '2026-11-25T19:00:00.000Z', decision: 'denied', claims: { b: 1, a: 'x' } } as unknown as AuditEntry);
    const canonical =
      '{"audience":null,"claims":{"a":"x","b":1},"client_ip":null,"credential_id":null,"decision":"denied","duration_seconds":null,' +
      '"error":null,"expires_at":null,"id":"A","issuer":null,"jti":null,"policy":null,"policy_sha256":null,"provider":null,"reason":null,' +
      '"request_id":null,"seq":1,"subject":null,"target":null,"time":"2026-11-25T19:00:00.000Z","token_sha256":null,"unverified":null,"user_agent":null}';
    const expected = createHash('sha256').update(GENESIS_HASH + canonical).digest('hex');
    assert.equal(hashRecord(GENESIS_HASH, 1, e), expected);
  });

  it('hashes audit_matches only when it names a policy: a record without matches hashes as records did before the field existed', () => {
    const old = toCanonicalEntry({ id: 'A', time: '2026-11-25T19:00:00.000Z', decision: 'issued' } as unknown as AuditEntry);
    assert.deepEqual(old.audit_matches, []);
    const withoutField =
      '{"audience":null,"claims":null,"client_ip":null,"credential_id":null,"decision":"issued","duration_seconds":null,' +
      '"error":null,"expires_at":null,"id":"A","issuer":null,"jti":null,"policy":null,"policy_sha256":null,"provider":null,"reason":null,' +
      '"request_id":null,"seq":1,"subject":null,"target":null,"time":"2026-11-25T19:00:00.000Z","token_sha256":null,"unverified":null,"user_agent":null}';
    assert.equal(hashRecord(GENESIS_HASH, 1, old), createHash('sha256').update(GENESIS_HASH + withoutField).digest('hex'));
    const matched = { ...old, audit_matches: ['deny-self-hosted'] };
    const withField = `{"audience":null,"audit_matches":["deny-self-hosted"],${withoutField.slice('{"audience":null,'.length)}`;
    assert.equal(hashRecord(GENESIS_HASH, 1, matched), createHash('sha256').update(GENESIS_HASH + withField).digest('hex'));
    assert.notEqual(hashRecord(GENESIS_HASH, 1, matched), hashRecord(GENESIS_HASH, 1, old), 'removing the matches breaks the hash');
    assert.notEqual(hashRecord(GENESIS_HASH, 1, matched), hashRecord(GENESIS_HASH, 1, { ...old, audit_matches: ['deny-other'] }));
  });

  it('treats absent and null alike, ignores key order and non-entry properties', () => {
    const a = entry({ claims: { x: 1, y: [1, 2] } });
    const b = { ...a, claims: { y: [1, 2], x: 1 }, seq: 99, hash: 'ff', extra: 'ignored' } as unknown as AuditEntry;
    const c = { ...a } as Partial<AuditEntry>;
    delete c.error;
    assert.equal(hashRecord(GENESIS_HASH, 1, a), hashRecord(GENESIS_HASH, 1, b));
    assert.equal(hashRecord(GENESIS_HASH, 1, a), hashRecord(GENESIS_HASH, 1, c as AuditEntry));
  });

  it('depends on seq, prev_hash and every field', () => {
    const a = entry();
    const base = hashRecord(GENESIS_HASH, 1, a);
    assert.notEqual(hashRecord(GENESIS_HASH, 2, a), base);
    assert.notEqual(hashRecord('1'.repeat(64), 1, a), base);
    assert.notEqual(hashRecord(GENESIS_HASH, 1, { ...a, policy: 'other' }), base);
    assert.notEqual(hashRecord(GENESIS_HASH, 1, { ...a, claims: { ...a.claims, run_number: '6' } }), base);
    assert.notEqual(hashRecord(GENESIS_HASH, 1, { ...a, policy: null }), hashRecord(GENESIS_HASH, 1, { ...a, policy: '' }));
  });

  it('rejects a malformed prev_hash or seq', () => {
    assert.throws(() => hashRecord('abc', 1, entry()), TypeError);
    assert.throws(() => hashRecord(GENESIS_HASH.toUpperCase().replace(/0/g, 'A'), 1, entry()), TypeError);
    for (const seq of [0, -1, 1.5, Number.NaN]) assert.throws(() => hashRecord(GENESIS_HASH, seq, entry()), TypeError);
  });
});

describe('toCanonicalEntry', () => {
  it('fills absent fields with null, drops unknown properties and survives a JSON round trip', () => {
    const e = toCanonicalEntry({ id: 'A', time: '2026-11-25T19:00:00.123Z', decision: 'error', secret: 'x', claims: { n: -0, u: undefined } } as unknown as AuditEntry);
    assert.equal(e.error, null);
    assert.equal(e.audience, null);
    assert.equal('secret' in e, false);
    assert.deepEqual(e.claims, { n: 0 });
    assert.deepEqual(JSON.parse(JSON.stringify(e)), e);
  });

  it('rejects wrong types and times the store cannot compare as text', () => {
    const good = { id: 'A', time: '2026-11-25T19:00:00.000Z', decision: 'issued' };
    const bad: Record<string, unknown>[] = [
      { id: '' },
      { time: '2026-11-25T19:00:00Z' },
      { time: '2026-11-25T20:00:00.000+01:00' },
      { time: '2026-02-30T00:00:00.000Z' },
      { decision: 'allowed' },
      { policy: 5 },
      { audience: 'aud' },
      { audience: [1] },
      { claims: [] },
      { claims: 'x' },
      { unverified: { iss: 1 } },
      { unverified: { token: 'raw' } },
      { duration_seconds: 1.5 },
      { duration_seconds: Number.NaN },
      { audit_matches: 'deny-x' },
      { audit_matches: [1] },
      { audit_matches: {} },
    ];
    for (const overrides of bad) assert.throws(() => toCanonicalEntry({ ...good, ...overrides } as AuditEntry), TypeError, JSON.stringify(overrides));
  });
});

describe('toCanonicalEntry: text every store keeps exactly', () => {
  /** Code units that make names collide once stored: lone surrogates, U+0000, their replacement, and the suffix's own characters. */
  const hostileName = fc.string({ unit: fc.constantFrom('x', '\ud800', '\udbff', '\udc00', '\u0000', '\uFFFD', '#', '2', '3'), maxLength: 4 });
  const claimSet = fc.dictionary(hostileName, fc.oneof(hostileName, fc.integer(), fc.dictionary(hostileName, hostileName, { maxKeys: 4 })), { maxKeys: 8 });

  /** Every key and string of a JSON value, at any depth. */
  function texts(value: unknown): string[] {
    if (typeof value === 'string') return [value];
    if (Array.isArray(value)) return value.flatMap(texts);
    if (value !== null && typeof value === 'object') return Object.entries(value).flatMap(([key, v]) => [key, ...texts(v)]);
    return [];
  }

  it('keeps every claim, under a name distinct as UTF-8, with no lone surrogate or U+0000 left; the same claims always get the same names', () => {
    fc.assert(
      fc.property(claimSet, (claims) => {
        const canonical = entry({ claims }).claims!;
        const storable = (text: string) => text.isWellFormed() && !text.includes('\u0000');
        assert.ok(texts(canonical).every(storable));
        // Nothing lost at any level, and no two names equal once encoded as the stores encode them.
        const shape = (value: unknown): unknown =>
          value !== null && typeof value === 'object' ? Object.values(value).map(shape) : typeof value;
        assert.deepEqual(shape(canonical), shape(claims));
        const utf8 = Object.keys(canonical).map((name) => Buffer.from(name, 'utf8').toString('hex'));
        assert.equal(new Set(utf8).size, Object.keys(claims).length);
        assert.deepEqual(entry({ claims }).claims, canonical);
        assert.deepEqual(entry({ claims: canonical }).claims, canonical, 'canonical claims stay as they are');
        assert.deepEqual(JSON.parse(JSON.stringify(canonical)), canonical);
      }),
    );
  });

  it('keeps names already storable, and gives the changed ones their storable form or the first free #n suffix, in key order', () => {
    const { claims } = entry({ claims: { 'x\ud800': 1, 'x\uFFFD': 2, 'x\udbff': 3, 'x\uFFFD#3': 4, 'x\u0000': 5 } });
    assert.deepEqual(Object.entries(claims!), [
      ['x\uFFFD#2', 1],
      ['x\uFFFD', 2],
      ['x\uFFFD#4', 3],
      ['x\uFFFD#3', 4],
      ['x\uFFFD#5', 5],
    ]);
    const proto = JSON.parse('{"__proto__\\u0000": 1, "__proto__": {"a\\ud800": 2}}') as Record<string, unknown>;
    const kept = entry({ claims: proto }).claims!;
    assert.equal(Object.getPrototypeOf(kept), Object.prototype);
    assert.deepEqual(Object.entries(kept), [
      ['__proto__\uFFFD', 1],
      ['__proto__', { 'a\uFFFD': 2 }],
    ]);
  });
});

describe('toClaimIndex', () => {
  it('indexes top-level scalars by their canonical string form only', () => {
    assert.deepEqual(toClaimIndex({ s: 'x', n: 6, f: 1.5, t: true, b: false, z: null, o: { a: 1 }, a: [1] }), [
      ['s', 'x'],
      ['n', '6'],
      ['f', '1.5'],
      ['t', 'true'],
      ['b', 'false'],
    ]);
    assert.deepEqual(toClaimIndex(null), []);
  });
});

describe('verifyChain', () => {
  const records = chain([entry(), entry({ decision: 'denied' }), entry({ policy: 'p3' }), entry()]);

  it('accepts an intact chain and reports its head', () => {
    assert.deepEqual(verifyChain(records), { ok: true, events: 4, head: records[3]!.hash, last_seq: 4 });
    assert.deepEqual(verifyChain([]), { ok: true, events: 0, head: GENESIS_HASH, last_seq: 0 });
  });

  it('reports a changed field as a hash mismatch at that record', () => {
    const tampered = records.map((r) => (r.seq === 3 ? { ...r, policy: 'evil' } : r));
    assert.deepEqual(verifyChain(tampered), {
      ok: false,
      events: 2,
      head: records[1]!.hash,
      last_seq: 2,
      broken: { seq: 3, id: records[2]!.id, problem: 'hash_mismatch' },
    });
  });

  it('reports a deleted record as a seq gap at the next one', () => {
    const result = verifyChain(records.filter((r) => r.seq !== 2));
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.broken, { seq: 3, id: records[2]!.id, problem: 'seq_gap' });
    const first = verifyChain(records.slice(1));
    assert.deepEqual(!first.ok && first.broken.seq, 2);
  });

  it('reports records moved to other positions as a prev_hash mismatch', () => {
    // Renumbered so the seqs still run 1..4: only the links give it away.
    const [r1, r2, r3, r4] = records as [AuditRecord, AuditRecord, AuditRecord, AuditRecord];
    const swapped = [r1, { ...r3, seq: 2 }, { ...r2, seq: 3 }, r4];
    const result = verifyChain(swapped);
    assert.deepEqual(!result.ok && result.broken, { seq: 2, id: r3.id, problem: 'prev_hash_mismatch' });
  });

  it('starts from a given point (a prune anchor) and checks the hashes checkpoints vouch for', () => {
    const from = { seq: 2, hash: records[1]!.hash };
    assert.deepEqual(verifyChain(records.slice(2), { from }), { ok: true, events: 2, head: records[3]!.hash, last_seq: 4 });
    assert.deepEqual(verifyChain([], { from }), { ok: true, events: 0, head: from.hash, last_seq: 2 });
    const wrongAnchor = verifyChain(records.slice(2), { from: { seq: 2, hash: records[0]!.hash } });
    assert.deepEqual(!wrongAnchor.ok && wrongAnchor.broken, { seq: 3, id: records[2]!.id, problem: 'prev_hash_mismatch' });
    assert.equal(verifyChain(records, { expected: new Map([[3, records[2]!.hash]]) }).ok, true);
    const vouched = verifyChain(records, { expected: new Map([[3, 'e'.repeat(64)]]) });
    assert.deepEqual(vouched, {
      ok: false,
      events: 2,
      head: records[1]!.hash,
      last_seq: 2,
      broken: { seq: 3, id: records[2]!.id, problem: 'checkpoint_mismatch' },
    });
  });

  it('reports a recomputed hash without a fixed successor at the successor', () => {
    const forged = records.map((r) => ({ ...r }));
    forged[1]!.policy = 'evil';
    forged[1]!.hash = hashRecord(forged[1]!.prev_hash, 2, forged[1]!);
    const result = verifyChain(forged);
    assert.deepEqual(!result.ok && result.broken, { seq: 3, id: records[2]!.id, problem: 'prev_hash_mismatch' });
  });
});

describe('newAuditId', () => {
  it('is a ULID and increases monotonically', () => {
    const ids = Array.from({ length: 1000 }, () => newAuditId());
    for (const id of ids) assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('compileAuditQuery', () => {
  it('defaults the limit to 100 and accepts 1..1000', () => {
    assert.equal(compileAuditQuery({}).limit, 100);
    assert.equal(compileAuditQuery({ limit: 1 }).limit, 1);
    assert.equal(compileAuditQuery({ limit: 1000 }).limit, 1000);
  });

  it('rejects limits outside 1..1000 and non-integers', () => {
    for (const limit of [0, -1, 1001, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '10' as unknown as number]) {
      assert.throws(() => compileAuditQuery({ limit }), (err) => err instanceof InvalidRequestError && err.reason === 'bad_limit', String(limit));
    }
  });

  it('rejects an unknown decision and empty claim names', () => {
    assert.throws(() => compileAuditQuery({ decision: 'allowed' as 'issued' }), (err) => err instanceof InvalidRequestError && err.reason === 'bad_decision');
    assert.throws(() => compileAuditQuery({ claims: { '': 'x' } }), (err) => err instanceof InvalidRequestError && err.reason === 'bad_filter');
  });
});

describe('cursors', () => {
  it('round-trip a seq', () => {
    for (const seq of [0, 1, 42, 1_000_000, Number.MAX_SAFE_INTEGER]) assert.equal(parseCursor(toCursor(seq)), seq);
    assert.match(toCursor(12345), /^[A-Za-z0-9_-]+$/);
  });

  it('reject anything toCursor did not write', () => {
    const bad = [
      '',
      'not a cursor',
      'MQ==', // padded
      Buffer.from('abc').toString('base64url'),
      Buffer.from('-1').toString('base64url'),
      Buffer.from('1.5').toString('base64url'),
      Buffer.from('01').toString('base64url'),
      Buffer.from('1e3').toString('base64url'),
      Buffer.from('99999999999999999').toString('base64url'),
      'MQ!',
      'M Q',
      'A'.repeat(100),
    ];
    for (const cursor of bad) {
      assert.throws(() => parseCursor(cursor), (err) => err instanceof InvalidRequestError && err.reason === 'bad_cursor', cursor);
      assert.throws(() => compileAuditQuery({ cursor }), (err) => err instanceof InvalidRequestError && err.reason === 'bad_cursor', cursor);
    }
    // Non-canonical base64url that Node decodes to "1" anyway.
    assert.throws(() => parseCursor('MR'), InvalidRequestError);
  });
});

describe('toTimeBound', () => {
  it('normalises RFC 3339 times to toISOString text, rounding up to the millisecond', () => {
    const cases: [string, string][] = [
      ['2026-11-25T19:00:00Z', '2026-11-25T19:00:00.000Z'],
      ['2026-11-25T19:00:00.5Z', '2026-11-25T19:00:00.500Z'],
      ['2026-11-25t19:00:00.123z', '2026-11-25T19:00:00.123Z'],
      ['2026-11-25T19:00:00.123000Z', '2026-11-25T19:00:00.123Z'],
      ['2026-11-25T19:00:00.1230001Z', '2026-11-25T19:00:00.124Z'],
      ['2026-11-25T20:30:00+01:30', '2026-11-25T19:00:00.000Z'],
      ['2026-11-25T17:00:00-02:00', '2026-11-25T19:00:00.000Z'],
      ['2016-12-31T23:59:60Z', '2017-01-01T00:00:00.000Z'],
      ['0050-01-01T00:00:00Z', '0050-01-01T00:00:00.000Z'],
    ];
    for (const [input, expected] of cases) assert.equal(toTimeBound(input, 'since'), expected, input);
  });

  it('rejects anything else', () => {
    for (const input of ['', 'yesterday', '2026-11-25', '2026-11-25T19:00Z', '2026-11-25 19:00:00Z', '2026-13-01T00:00:00Z', '2026-02-29T00:00:00Z', '2026-11-25T24:00:00Z', '2026-11-25T19:00:00', '2026-11-25T19:00:00+1:00', '0000-01-01T00:00:00+01:00']) {
      assert.throws(() => toTimeBound(input, 'until'), (err) => err instanceof InvalidRequestError && err.reason === 'bad_time' && err.message.includes("'until'"), input);
    }
  });
});

describe('queryAll', () => {
  it('walks every page with the same filters', async () => {
    const all = chain(Array.from({ length: 7 }, () => entry()));
    const seen: AuditQuery[] = [];
    const store = {
      async query(q: AuditQuery): Promise<AuditPage> {
        seen.push(q);
        const after = q.cursor === undefined ? 0 : parseCursor(q.cursor);
        const events = all.filter((r) => r.seq > after).slice(0, q.limit);
        const last = events.at(-1);
        return { events, nextCursor: last !== undefined && last.seq < all.length ? toCursor(last.seq) : null };
      },
    };
    const out: AuditRecord[] = [];
    for await (const r of queryAll(store, { limit: 3, policy: 'api-deploy-prod' })) out.push(r);
    assert.deepEqual(out.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(seen.length, 3);
    assert.ok(seen.every((q) => q.policy === 'api-deploy-prod' && q.limit === 3));
  });
});
