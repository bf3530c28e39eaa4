// src/audit/export.ts: cells, lines, the table, and the streaming writer's backpressure.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Writable } from 'node:stream';
import {
  claimString,
  createFormatter,
  csvCell,
  csvColumns,
  ndjsonLine,
  tableLayout,
  tableRow,
  writeRecords,
} from '../src/audit/export.js';
import { GENESIS_HASH } from '../src/audit/record.js';
import type { AuditRecord } from '../src/audit/types.js';

function record(seq: number, overrides: Partial<AuditRecord> = {}): AuditRecord {
  return {
    id: `01JDQ8R3W6T8Z2B4V9K1M5N${String(seq).padStart(3, '0')}`,
    time: '2026-11-25T19:00:00.000Z',
    decision: 'issued',
    error: null,
    reason: null,
    request_id: null,
    issuer: 'github',
    subject: 'repo:acme/api:ref:refs/heads/main',
    audience: ['https://broker.example.com'],
    jti: null,
    token_sha256: null,
    claims: { repository: 'acme/api' },
    unverified: null,
    policy: 'deploy',
    policy_sha256: null,
    provider: 'jwt',
    target: null,
    credential_id: `cred-${seq}`,
    expires_at: null,
    duration_seconds: 900,
    client_ip: null,
    user_agent: 'x'.repeat(500),
    audit_matches: [],
    seq,
    prev_hash: GENESIS_HASH,
    hash: 'f'.repeat(64),
    ...overrides,
  };
}

async function* records(count: number, pulled: { n: number }): AsyncGenerator<AuditRecord> {
  for (let seq = 1; seq <= count; seq += 1) {
    pulled.n = seq;
    yield record(seq);
  }
}

describe('CSV cells', () => {
  test('formula starts get a leading quote; RFC 4180 quoting doubles quotes', () => {
    assert.equal(csvCell('=1+1'), "'=1+1");
    assert.equal(csvCell('+1'), "'+1");
    assert.equal(csvCell('-1'), "'-1");
    assert.equal(csvCell('@x'), "'@x");
    assert.equal(csvCell('\tx'), "'\tx");
    assert.equal(csvCell('\rx'), `"'\rx"`);
    assert.equal(csvCell('a=1'), 'a=1');
    assert.equal(csvCell(''), '');
    assert.equal(csvCell('a,b'), '"a,b"');
    assert.equal(csvCell('say "hi"'), '"say ""hi"""');
    assert.equal(csvCell('=a,"b"'), `"'=a,""b"""`);
    assert.equal(csvCell('line\nbreak'), '"line\nbreak"');
    // Semicolon-separator spreadsheets split on `;` whatever the quoting, and evaluate each piece.
    assert.equal(csvCell("x;=cmd|' /C calc'!A0;y"), `x;'=cmd|' /C calc'!A0;y`);
    assert.equal(csvCell('a;-1;@b;+c'), "a;'-1;'@b;'+c");
    assert.equal(csvCell('a; =1'), 'a; =1');
  });

  test('claim values in their canonical string form', () => {
    assert.equal(claimString('x'), 'x');
    assert.equal(claimString(42), '42');
    assert.equal(claimString(1.5), '1.5');
    assert.equal(claimString(true), 'true');
    assert.equal(claimString(false), 'false');
    assert.equal(claimString(null), 'null');
    assert.equal(claimString(undefined), '');
    assert.equal(claimString(['a', 1]), '["a",1]');
    assert.equal(claimString({ a: 1 }), '{"a":1}');
  });

  test('columns: record fields, default CI claims, filter claims once each, then claims', () => {
    const columns = csvColumns(['run_number', 'repository']);
    assert.equal(columns[0], 'seq');
    assert.ok(columns.includes('unverified.iss') && columns.includes('unverified.sub') && !columns.includes('unverified'));
    assert.equal(columns.filter((c) => c === 'claim.repository').length, 1);
    assert.equal(columns.at(-2), 'claim.run_number');
    assert.equal(columns.at(-1), 'claims');
  });

  test('written to a terminal, control characters other than tab, CR and LF become ?', () => {
    const r = record(1, { reason: 'red \u001b[31mtext\u001b[0m\u009b', claims: null });
    const plain = createFormatter('csv').row(r);
    const terminal = createFormatter('csv', { terminal: true }).row(r);
    assert.ok(plain.includes('\u001b[31m'));
    assert.ok(!/[\u001b\u009b]/.test(terminal));
    assert.ok(terminal.includes('red ?[31mtext?[0m?'));
  });
});

describe('NDJSON and JSON', () => {
  test('a line parses back to the record; C1 controls and line separators are escaped', () => {
    const r = record(1, { reason: 'a\u009bb\u2028c\u007f' });
    const line = ndjsonLine(r);
    assert.ok(line.endsWith('\n'));
    assert.equal(line.indexOf('\n'), line.length - 1);
    assert.ok(!/[\u007f-\u009f\u2028\u2029]/.test(line));
    assert.deepEqual(JSON.parse(line), r);
  });

  test('the json format is one array, also when empty', () => {
    const empty = createFormatter('json');
    assert.deepEqual(JSON.parse(empty.head() + empty.tail()), []);
    const two = createFormatter('json');
    assert.deepEqual(JSON.parse(two.head() + two.row(record(1)) + two.row(record(2)) + two.tail()), [record(1), record(2)]);
  });
});

describe('table', () => {
  test('lines fit the width; the reason column takes the rest; controls are shown as ?', () => {
    const layout = tableLayout(100);
    const line = tableRow(record(1, { reason: `\u001b]0;pwned\u0007${'r'.repeat(200)}`, subject: 's'.repeat(80) }), layout);
    assert.ok([...line.trimEnd()].length <= 100, `fits: ${line.length}`);
    assert.ok(!line.includes('\u001b') && !line.includes('\u0007'));
    assert.ok(line.includes('…'));
    const narrow = tableRow(record(1), tableLayout(60));
    assert.ok(narrow.startsWith('2026-11-25T19:00:00.000Z  issued'));
    const unlimited = tableRow(record(1, { reason: 'r'.repeat(300) }), tableLayout());
    assert.ok(unlimited.includes('r'.repeat(300)), 'without a width the reason is never cut');
  });

  test('a record without a verified subject shows the unverified one in brackets', () => {
    const line = tableRow(record(1, { subject: null, unverified: { sub: 'who' }, policy: null, credential_id: null }), tableLayout());
    assert.match(line, /\[who\]/);
    assert.match(line, / - /);
  });
});

describe('writeRecords', () => {
  test('waits for drain: a slow destination bounds how far the source is read', async () => {
    const pulled = { n: 0 };
    const release: (() => void)[] = [];
    let written = 0;
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, callback) {
        written += chunk.length;
        release.push(callback);
      },
    });
    const done = writeRecords(slow, records(2000, pulled), createFormatter('ndjson'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const whileBlocked = pulled.n;
    assert.ok(whileBlocked < 200, `reading stopped while the destination was full (${whileBlocked} records read)`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(pulled.n, whileBlocked, 'and stays stopped');
    // Let it drain: keep completing writes until the export finishes.
    const pump = setInterval(() => release.splice(0).forEach((cb) => cb()), 1);
    const result = await done;
    clearInterval(pump);
    release.splice(0).forEach((cb) => cb());
    assert.deepEqual(result, { count: 2000, more: false, complete: true });
    assert.ok(written > 2000 * 500);
  });

  test('stops reading when the destination closes, and reports it incomplete', async () => {
    const pulled = { n: 0 };
    const out = new PassThrough({ highWaterMark: 1024 });
    const done = writeRecords(out, records(100_000, pulled), createFormatter('csv'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    out.destroy();
    const result = await done;
    assert.equal(result.complete, false);
    assert.ok(pulled.n < 1000, `stopped early (${pulled.n})`);
  });

  test('a limit stops after that many records and says whether more matched', async () => {
    const out = new PassThrough();
    const chunks: string[] = [];
    out.on('data', (c: Buffer) => chunks.push(c.toString()));
    assert.deepEqual(await writeRecords(out, records(10, { n: 0 }), createFormatter('json'), { limit: 3 }), { count: 3, more: true, complete: true });
    assert.equal((JSON.parse(chunks.join('')) as unknown[]).length, 3);
    assert.deepEqual(await writeRecords(new PassThrough().resume(), records(3, { n: 0 }), createFormatter('ndjson'), { limit: 3 }), { count: 3, more: false, complete: true });
  });

  test('a source that fails mid-way rejects, so the caller can make the cut visible', async () => {
    async function* failing(): AsyncGenerator<AuditRecord> {
      yield record(1);
      throw new Error('store down');
    }
    await assert.rejects(writeRecords(new PassThrough().resume(), failing(), createFormatter('ndjson')), /store down/);
  });
});
