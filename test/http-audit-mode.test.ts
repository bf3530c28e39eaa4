// Audit-mode deny policies through the real broker (docs/policies/guardrails.md,
// "Rolling out a guardrail in audit mode"): the decision's record names the
// guardrail, the audit API and `audit query` find those records, and one line
// switches it to enforce. Run against both audit backends, including logs
// written before the field existed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import request from 'supertest';
import { migrate } from '../src/audit/postgres/schema.js';
import { openPostgresAuditStore } from '../src/audit/postgres/store.js';
import { RECORD_COLUMNS } from '../src/audit/rows.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditRecord, AuditStore } from '../src/audit/types.js';
import { appendMany } from './helpers/audit-entries.js';
import { PostgresTestDatabase } from './helpers/audit-stores.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { cli } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

const GUARDRAIL = 'deny-self-hosted';
/** The guardrail file; rolling it out is changing this one line. */
const guardrail = (mode: 'audit' | 'enforce') => `issuer: local\neffect: deny\nmode: ${mode}\nclaims:\n  runner_environment: self-hosted\n`;
const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  [`${GUARDRAIL}.yaml`]: guardrail('audit'),
  'deny-prt.yaml': 'issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n',
  // Allowed, then refused when its grant is rendered for the token: a refusal after authorization.
  'needs-env.yaml': 'issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: https://env.example.com\n  claims:\n    env: ${environment}\n',
};
const HOSTED = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', event_name: 'push', runner_environment: 'github-hosted' };
const SELF_HOSTED = { ...HOSTED, runner_environment: 'self-hosted' };

const db = new PostgresTestDatabase();
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  await db.drop();
});

interface Backend {
  name: 'sqlite' | 'postgres';
  /** A store for the fixture (undefined: the fixture's own SQLite log), and the `audit.url` a CLI config names it by. */
  open(): Promise<{ store: AuditStore | undefined; url: string }>;
}

const BACKENDS: Backend[] = [
  { name: 'sqlite', open: () => Promise.resolve({ store: undefined, url: 'sqlite:./data/audit.db' }) },
  {
    name: 'postgres',
    async open() {
      const url = db.url(await db.newSchema());
      return { store: await openPostgresAuditStore(url, { connectTimeoutMs: 2000 }), url };
    },
  },
];

function auditGet(fx: BrokerFixture, query: Record<string, string>) {
  return request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query(query);
}

async function exchange(fx: BrokerFixture, claims: Record<string, unknown>, policy = 'deploy') {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims });
  return request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
}

/** The record with this id, read through the audit API. */
async function recordOf(fx: BrokerFixture, id: string): Promise<AuditRecord> {
  const res = await auditGet(fx, { limit: '1000' });
  assert.equal(res.status, 200, res.text);
  const found = (res.body.events as AuditRecord[]).find((e) => e.id === id);
  assert.ok(found, `a record with id ${id}`);
  return found;
}

async function lastRecord(fx: BrokerFixture): Promise<AuditRecord> {
  const res = await auditGet(fx, { limit: '1000' });
  assert.equal(res.status, 200, res.text);
  return (res.body.events as AuditRecord[]).at(-1)!;
}

/** Every record id `audit_match=<name>` finds, walked page by page with `limit`. */
async function walkAuditMatch(fx: BrokerFixture, name: string, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await auditGet(fx, { audit_match: name, limit: String(limit), ...(cursor === null ? {} : { cursor }) });
    assert.equal(res.status, 200, res.text);
    const events = res.body.events as AuditRecord[];
    assert.ok(events.length <= limit);
    for (const event of events) assert.ok(event.audit_matches.includes(name), JSON.stringify(event.audit_matches));
    ids.push(...events.map((e) => e.id));
    cursor = res.body.next_cursor as string | null;
  } while (cursor !== null);
  return ids;
}

for (const backend of BACKENDS) {
  describe(`audit-mode deny policies through the broker (${backend.name})`, () => {
    let fx: BrokerFixture;
    let auditUrl: string;
    /** Ids of the records the guardrail matched, in order. */
    const matched: string[] = [];

    before(async () => {
      const { store, url } = await backend.open();
      auditUrl = url;
      fx = await startBrokerFixture({ policies: POLICIES, ...(store === undefined ? {} : { brokerOptions: { audit: store } }) });
    });
    after(() => fx.close());

    test('an exchange the audit-mode guardrail matches is issued, and its record names the guardrail; one it does not match names none', async () => {
      const issued = await exchange(fx, SELF_HOSTED);
      assert.equal(issued.status, 200, issued.text);
      const record = await recordOf(fx, issued.body.issuance_id as string);
      assert.equal(record.decision, 'issued');
      assert.deepEqual(record.audit_matches, [GUARDRAIL]);
      matched.push(record.id);

      const hosted = await exchange(fx, HOSTED);
      assert.equal(hosted.status, 200, hosted.text);
      assert.deepEqual((await recordOf(fx, hosted.body.issuance_id as string)).audit_matches, []);
    });

    test('a token an enforced deny policy refuses: denied as before, and the record names the audit-mode match too', async () => {
      const denied = await exchange(fx, { ...SELF_HOSTED, event_name: 'pull_request_target' });
      assert.equal(denied.status, 403);
      assert.equal(denied.body.error, 'access_denied');
      assert.equal(denied.body.error_description, "Denied by deny policy 'deny-prt'.");
      const record = await lastRecord(fx);
      assert.deepEqual([record.decision, record.error, record.audit_matches], ['denied', 'access_denied', [GUARDRAIL]]);
      matched.push(record.id);
    });

    test('a refusal after authorization (the grant cannot be rendered) names the audit-mode match too', async () => {
      const refused = await exchange(fx, SELF_HOSTED, 'needs-env');
      assert.equal(refused.status, 403);
      assert.equal(refused.body.error, 'access_denied');
      const record = await lastRecord(fx);
      assert.deepEqual([record.decision, record.policy, record.reason?.split(':')[0], record.audit_matches], ['denied', 'needs-env', 'template_claim_unusable', [GUARDRAIL]]);
      matched.push(record.id);
    });

    test('explain answers allow, lists the guardrail as audit mode, and its record names it', async () => {
      const token = await fx.issuer.mint({ aud: AUDIENCE, ...SELF_HOSTED });
      const res = await request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.decision, 'allow');
      assert.deepEqual(res.body.audit_matches, [GUARDRAIL]);
      assert.deepEqual(
        (res.body.evaluations as { policy: string; mode: string; matched: boolean }[]).map((e) => [e.policy, e.mode, e.matched]),
        [['deploy', 'enforce', true], [GUARDRAIL, 'audit', true]],
      );
      const record = await recordOf(fx, res.body.explain_id as string);
      assert.deepEqual([record.decision, record.audit_matches], ['explain', [GUARDRAIL]]);
      matched.push(record.id);
    });

    test('audit_match finds exactly the records the guardrail matched, each once, page by page', async () => {
      // More matches between records it did not match, so pages cross both.
      for (let i = 0; i < 3; i += 1) {
        const res = await exchange(fx, SELF_HOSTED);
        assert.equal(res.status, 200, res.text);
        matched.push(res.body.issuance_id as string);
        assert.equal((await exchange(fx, HOSTED)).status, 200);
      }
      for (const limit of [1, 2, 1000]) assert.deepEqual(await walkAuditMatch(fx, GUARDRAIL, limit), matched, `limit ${limit}`);
      const issuedOnly = await auditGet(fx, { audit_match: GUARDRAIL, decision: 'issued' });
      assert.deepEqual((issuedOnly.body.events as AuditRecord[]).map((e) => e.decision), ['issued', 'issued', 'issued', 'issued']);
      // An enforced deny policy is never an audit match; a name no policy has matches nothing.
      assert.deepEqual(await walkAuditMatch(fx, 'deny-prt', 100), []);
      assert.deepEqual(await walkAuditMatch(fx, 'deny-self', 100), []);
    });

    test('a bad audit_match is a 400 naming the parameter', async () => {
      const empty = await auditGet(fx, { audit_match: '' });
      assert.equal(empty.status, 400);
      assert.deepEqual([empty.body.error, empty.body.error_description], ['invalid_request', "Query parameter 'audit_match' must not be empty."]);
      const twice = await request(fx.broker.app).get(`/v1/audit/events?audit_match=${GUARDRAIL}&audit_match=x`).set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      assert.equal(twice.status, 400);
      assert.equal(twice.body.error_description, "Query parameter 'audit_match' must be given once.");
    });

    test('exports carry audit_matches: NDJSON as the list, CSV as a column of names', async () => {
      const ndjson = await auditGet(fx, { audit_match: GUARDRAIL }).set('Accept', 'application/x-ndjson');
      assert.equal(ndjson.status, 200);
      const lines = ndjson.text.trimEnd().split('\n').map((l) => JSON.parse(l) as AuditRecord);
      assert.deepEqual(lines.map((r) => [r.id, r.audit_matches]), matched.map((id) => [id, [GUARDRAIL]]));
      const csv = await auditGet(fx, { audit_match: GUARDRAIL }).set('Accept', 'text/csv');
      assert.equal(csv.status, 200);
      const [header, first] = csv.text.split('\r\n').map((line) => line.split(','));
      const column = header!.indexOf('audit_matches');
      assert.equal(header![column + 1], 'prev_hash');
      assert.equal(first![column], GUARDRAIL);
    });

    test('/metrics counts the decisions each audit-mode policy would have denied', async () => {
      const res = await request(fx.broker.app).get('/metrics');
      assert.equal(res.status, 200);
      assert.match(res.text, new RegExp(`^broker_audit_mode_matches_total\\{policy="${GUARDRAIL}"\\} ${matched.length}$`, 'm'));
      assert.doesNotMatch(res.text, /broker_audit_mode_matches_total\{policy="deny-prt"\}/);
    });

    test('oidc-broker audit query --audit-match prints the same records', async () => {
      const config = path.join(fx.dir, 'audit-only.yaml');
      await writeFile(config, `audit:\n  url: ${JSON.stringify(auditUrl)}\n`);
      const run = await cli(['audit', 'query', '-c', config, '--audit-match', GUARDRAIL, '--format', 'ndjson']);
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as AuditRecord).id), matched);
      const empty = await cli(['audit', 'query', '-c', config, '--audit-match', '']);
      assert.deepEqual([empty.code, empty.stderr], [1, 'oidc-broker: --audit-match: must not be empty\n']);
    });

    test('switching the one line to mode: enforce denies the same token, and the log still verifies', async () => {
      await writeFile(path.join(fx.dir, 'policies', `${GUARDRAIL}.yaml`), guardrail('enforce'));
      assert.equal((await fx.broker.reloadPolicies('sighup')).outcome, 'success');
      const denied = await exchange(fx, SELF_HOSTED);
      assert.equal(denied.status, 403);
      assert.equal(denied.body.error_description, `Denied by deny policy '${GUARDRAIL}'.`);
      const record = await lastRecord(fx);
      assert.deepEqual([record.decision, record.error, record.audit_matches], ['denied', 'access_denied', []]);
      const verified = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
      assert.equal(verified.status, 200);
      assert.equal(verified.body.ok, true, verified.text);
    });
  });
}

/**
 * A log as a broker before audit mode left it: records without the
 * `audit_matches` column, hashed without the field. Opening it migrates it;
 * its records must still verify and read back with `audit_matches: []`.
 */
const OLD_LOGS: { name: string; open(): Promise<{ store: AuditStore; old: AuditRecord[] }> }[] = [
  {
    name: 'sqlite',
    async open() {
      const dir = mkdtempSync(path.join(tmpdir(), 'oidc-broker-audit-mode-'));
      dirs.push(dir);
      const file = path.join(dir, 'audit.db');
      const writer = openSqliteAuditStore(file);
      const old = await appendMany(writer, 3);
      await writer.close();
      // Schema version 3, as it was before audit_matches.
      const raw = new Database(file);
      raw.exec('DROP INDEX audit_events_audit_matches; ALTER TABLE audit_events DROP COLUMN audit_matches; UPDATE schema_version SET version = 3');
      raw.close();
      return { store: openSqliteAuditStore(file), old };
    },
  },
  {
    name: 'postgres',
    async open() {
      const written = await db.newSchema();
      const writer = await openPostgresAuditStore(db.url(written), { connectTimeoutMs: 2000 });
      const old = await appendMany(writer, 3);
      await writer.close();
      // Schema version 2, as it was before audit_matches, holding the same rows.
      const schema = await db.newSchema();
      const pool = new pg.Pool({ connectionString: db.url(schema), max: 1 });
      try {
        await migrate(pool, 5000, 2);
        const columns = RECORD_COLUMNS.filter((c) => c !== 'audit_matches').join(', ');
        await pool.query(`INSERT INTO audit_events (${columns}) SELECT ${columns} FROM ${written}.audit_events`);
        for (const table of ['audit_claims', 'audit_hours']) await pool.query(`INSERT INTO ${table} SELECT * FROM ${written}.${table}`);
      } finally {
        await pool.end();
      }
      return { store: await openPostgresAuditStore(db.url(schema), { connectTimeoutMs: 2000 }), old };
    },
  },
];

for (const log of OLD_LOGS) {
  describe(`a log from before audit mode (${log.name})`, () => {
    test('is migrated: its records keep their hashes and verify, new records name their audit matches, and audit_match finds only those', async () => {
      const { store, old } = await log.open();
      const fx = await startBrokerFixture({ policies: POLICIES, brokerOptions: { audit: store } });
      try {
        const issued = await exchange(fx, SELF_HOSTED);
        assert.equal(issued.status, 200, issued.text);
        const all = await auditGet(fx, {});
        const events = all.body.events as AuditRecord[];
        assert.deepEqual(events.slice(0, 3), old, 'old records read back as written, audit_matches empty, same hashes');
        assert.deepEqual(events.map((e) => e.audit_matches), [[], [], [], [GUARDRAIL]]);
        const verified = await request(fx.broker.app).get('/v1/audit/verify').set('Authorization', `Bearer ${AUDITOR_TOKEN}`);
        assert.equal(verified.status, 200);
        assert.deepEqual([verified.body.ok, verified.body.events, verified.body.head], [true, 4, events[3]!.hash], verified.text);
        assert.deepEqual(await walkAuditMatch(fx, GUARDRAIL, 1), [issued.body.issuance_id]);
      } finally {
        await fx.close();
      }
    });
  });
}
