// GET /v1/audit/stats against the real app, over both audit stores (SQLite and PostgreSQL at 127.0.0.1:5432).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import type { AuditEntry, AuditStats } from '../src/audit/types.js';
import { makeEntry, T0 } from './helpers/audit-entries.js';
import { postgresKind, sqliteKind } from './helpers/audit-stores.js';
import { AUDITOR_TOKEN, startBrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const AUTH = `Bearer ${AUDITOR_TOKEN}`;
const HOUR = 3_600_000;
const at = (ms: number) => new Date(T0 + ms).toISOString();
const [A, B, C] = ['repo:acme/api:ref:refs/heads/main', 'repo:acme/web:ref:refs/heads/main', 'repo:acme/ops:ref:refs/heads/main'];
const denied = (reason: string, policy: string | null): Partial<AuditEntry> => ({ decision: 'denied', error: 'access_denied', reason, policy, subject: B, credential_id: null, claims: { repository: 'acme/web' } });

/** T0 is 19:00Z; the window below is 18:00Z to 22:00Z. */
const ENTRIES: Partial<AuditEntry>[] = [
  { time: at(-HOUR - 1), ...denied('before the window', 'deploy') },
  { time: at(-HOUR / 2), subject: A, policy: 'deploy' },
  { time: at(-HOUR / 2 + 1), subject: A, policy: 'deploy' },
  ...[1, 2, 3].map((i) => ({ time: at(10 * 60_000 + i), ...denied('condition_failed: ref', 'deploy') })),
  { time: at(20 * 60_000), ...denied('no_policy_matched', null) },
  { time: at(HOUR + 5 * 60_000), decision: 'error', error: 'server_error', reason: 'provider_failed', subject: A, policy: 'deploy', credential_id: null },
  { time: at(3 * HOUR - 1), subject: C, policy: 'other', claims: { repository: 'acme/ops' } },
  { time: at(3 * HOUR), subject: C, policy: 'other', claims: { repository: 'acme/ops' } },
];
const WINDOW = { since: at(-HOUR), until: at(3 * HOUR) };

for (const kind of [sqliteKind(), postgresKind()]) {
  describe(`GET /v1/audit/stats (${kind.name})`, async () => {
    const log = await kind.newLog();
    const store = await log.open();
    for (const overrides of ENTRIES) await store.append(makeEntry(overrides));
    const fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') }, brokerOptions: { audit: store } });
    after(async () => {
      await fx.close();
      await kind.cleanup();
    });
    const stats = async (query: Record<string, string>) => {
      const res = await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', AUTH).query(query);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      return res.body as AuditStats;
    };

    test('counts per hour by decision and by policy, the top denial reasons and subjects, in the window only', async () => {
      assert.deepEqual(await stats(WINDOW), {
        since: WINDOW.since,
        until: WINDOW.until,
        bucket: 'hour',
        buckets: ['2026-11-25T18:00:00.000Z', '2026-11-25T19:00:00.000Z', '2026-11-25T20:00:00.000Z', '2026-11-25T21:00:00.000Z'],
        total: 8,
        by_decision: { issued: [2, 0, 0, 1], denied: [0, 4, 0, 0], error: [0, 0, 1, 0], explain: [0, 0, 0, 0] },
        by_policy: [
          { policy: 'deploy', total: 6, counts: [2, 3, 1, 0] },
          { policy: 'other', total: 1, counts: [0, 0, 0, 1] },
          { policy: null, total: 1, counts: [0, 1, 0, 0] },
        ],
        top_denial_reasons: [
          { error: 'access_denied', reason: 'condition_failed: ref', count: 3 },
          { error: 'access_denied', reason: 'no_policy_matched', count: 1 },
        ],
        top_subjects: [
          { subject: B, count: 4, denied: 4 },
          { subject: A, count: 3, denied: 0 },
          { subject: C, count: 1, denied: 0 },
        ],
      });
    });

    test('takes every filter of the events route, and cuts the top lists at top', async () => {
      const filtered = await stats({ ...WINDOW, 'claim.repository': 'acme/api' });
      assert.equal(filtered.total, 3);
      assert.deepEqual(filtered.top_subjects, [{ subject: A, count: 3, denied: 0 }]);
      assert.deepEqual((await stats({ ...WINDOW, decision: 'denied', policy: 'deploy' })).by_decision.denied, [0, 3, 0, 0]);
      assert.deepEqual((await stats({ ...WINDOW, subject: C })).by_policy, [{ policy: 'other', total: 1, counts: [0, 0, 0, 1] }]);
      const top = await stats({ ...WINDOW, top: '1' });
      assert.deepEqual([top.by_policy.map((p) => p.policy), top.top_subjects.map((s) => s.subject), top.top_denial_reasons.length], [['deploy'], [B], 1]);
    });

    test('buckets by day, and a window with nothing in it answers zeros', async () => {
      const days = await stats({ bucket: 'day', since: '2026-11-24T12:00:00Z', until: '2026-11-27T00:00:00Z' });
      assert.deepEqual(days.buckets, ['2026-11-24T00:00:00.000Z', '2026-11-25T00:00:00.000Z', '2026-11-26T00:00:00.000Z']);
      assert.deepEqual([days.total, days.by_decision.issued, days.by_decision.denied], [10, [0, 4, 0], [0, 5, 0]]);
      const empty = await stats({ since: '2026-01-01T00:00:00Z', until: '2026-01-01T02:00:00Z' });
      assert.deepEqual([empty.total, empty.by_decision.issued, empty.by_policy, empty.top_subjects], [0, [0, 0], [], []]);
      // PostgreSQL text cannot hold U+0000 and no stored value does: a filter holding it matches nothing on either store.
      const nul = await stats({ ...WINDOW, subject: 'repo:acme/api\u0000' });
      assert.deepEqual([nul.total, nul.buckets.length, nul.top_subjects], [0, 4, []]);
    });
  });
}

describe('GET /v1/audit/stats: refusals', async () => {
  const fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
  after(() => fx.close());

  test('every bad input is a 400 invalid_request with a message naming it', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ bucket: 'week' }, "'bucket' must be hour or day."],
      [{ top: '0' }, "'top' must be an integer from 1 to 20."],
      [{ top: '21' }, "'top' must be an integer from 1 to 20."],
      [{ top: '1.5' }, "'top' must be an integer from 1 to 20."],
      [{ limit: '5' }, "Unknown query parameter 'limit'."],
      [{ cursor: 'MQ' }, "Unknown query parameter 'cursor'."],
      [{ since: 'yesterday' }, "'since' must be an RFC 3339 time such as 2026-11-25T19:00:00Z."],
      [{ decision: 'maybe' }, "'decision' must be one of issued, denied, error, explain."],
      [{ since: '2026-11-25T19:00:00Z', until: '2026-11-25T19:00:00Z' }, "'since' must be before 'until'."],
      [{ since: '2026-01-01T00:00:00Z', until: '2026-03-01T00:00:00Z' }, "The window from 'since' to 'until' spans 1416 hour buckets; at most 1000 are allowed."],
      [{ bucket: 'day', since: '2020-01-01T00:00:00Z', until: '2026-01-01T00:00:00Z' }, "The window from 'since' to 'until' spans 2192 day buckets; at most 1000 are allowed."],
      [{ 'claim.': 'x' }, "Query parameter 'claim.' needs a claim name: claim.<name>=<value>."],
    ];
    for (const [query, message] of cases) {
      const res = await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', AUTH).query(query);
      assert.equal(res.status, 400, JSON.stringify(query));
      assert.deepEqual([res.body.error, res.body.error_description], ['invalid_request', message], JSON.stringify(query));
    }
    const twice = await request(fx.broker.app).get('/v1/audit/stats?bucket=hour&bucket=day').set('Authorization', AUTH);
    assert.deepEqual([twice.status, twice.body.error_description], [400, "Query parameter 'bucket' must be given once."]);
  });

  test('the window defaults to the last 24 hours by hour and 30 days by day, and 1000 buckets are allowed', async () => {
    const hours = await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', AUTH);
    assert.equal(hours.status, 200, hours.text);
    const body = hours.body as AuditStats;
    assert.equal(Date.parse(body.until) - Date.parse(body.since), 24 * HOUR);
    assert.ok(body.buckets.length === 24 || body.buckets.length === 25, String(body.buckets.length));
    const days = (await request(fx.broker.app).get('/v1/audit/stats?bucket=day').set('Authorization', AUTH)).body as AuditStats;
    assert.equal(Date.parse(days.until) - Date.parse(days.since), 30 * 24 * HOUR);
    const widest = await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', AUTH).query({ since: '2026-01-01T00:00:00Z', until: '2026-02-11T16:00:00Z' });
    assert.deepEqual([widest.status, (widest.body as AuditStats).buckets.length], [200, 1000]);
  });

  test('answers auditors only', async () => {
    const none = await request(fx.broker.app).get('/v1/audit/stats');
    assert.deepEqual([none.status, none.body.error], [401, 'invalid_token']);
    const wrong = await request(fx.broker.app).get('/v1/audit/stats').set('Authorization', 'Bearer not-an-auditor');
    assert.deepEqual([wrong.status, wrong.body.error], [401, 'invalid_token']);
  });
});
