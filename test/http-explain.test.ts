// POST /v1/explain: the exchange's input, the decision as an answer, nothing issued, one `explain` audit record.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import type { StsEmulator } from './emulators/index.js';
import { startAwsBroker, type AwsBroker } from './helpers/aws-broker.js';
import type { AuditRecord } from '../src/audit/types.js';
import { explain } from '../src/pipeline/explain.js';

const POLICIES = {
  'deploy.yaml': `
name: deploy
issuer: local
claims:
  repository: acme/api
  ref: [refs/heads/main, refs/heads/release]
grant:
  provider: jwt
  audience: https://deploy.example.com
`,
  'deny-prt.yaml': `
issuer: local
effect: deny
claims:
  event_name: pull_request_target
`,
  // Values an explain must never reveal to a caller: only the token's own values are shown.
  'deny-blocklist.yaml': `
issuer: local
effect: deny
claims:
  repository_owner: { in: [blocklisted-org-7f3a, other-blocked-org-91c2] }
  workflow: { regex: "secret-workflow-pattern-[0-9]+" }
`,
  'guarded.yaml': `
issuer: local
claims:
  repository: acme/guarded
grant:
  provider: jwt
  audience: https://deploy.example.com
`,
  // Its condition cannot be evaluated on a token without \`foo\`: it must deny, not be skipped.
  'deny-guarded-cel.yaml': `
issuer: local
effect: deny
claims:
  repository: acme/guarded
condition: claims.foo.bar == "x"
`,
};

const GOOD_CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', repository_owner: 'acme', ref: 'refs/heads/main', event_name: 'push', workflow: 'deploy' };

let fx: BrokerFixture;
const secrets: string[] = [];

async function mint(claims: Record<string, unknown> = GOOD_CLAIMS, options?: Parameters<BrokerFixture['issuer']['mint']>[1]): Promise<string> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...claims }, options);
  secrets.push(token);
  return token;
}

function explainCall(token: string | undefined, body: unknown = { policy: 'deploy' }) {
  const req = request(fx.broker.app).post('/v1/explain');
  if (token !== undefined) req.set('Authorization', `Bearer ${token}`);
  return req.send(body as object);
}

function exchangeCall(token: string, body: object = { policy: 'deploy' }) {
  return request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send(body);
}

async function auditEvents(): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return res.body.events as AuditRecord[];
}

async function auditRecord(id: string): Promise<AuditRecord> {
  const found = (await auditEvents()).find((e) => e.id === id);
  assert.ok(found, `audit record ${id} exists`);
  return found;
}

async function lastAuditRecord(): Promise<AuditRecord> {
  const events = await auditEvents();
  assert.ok(events.length > 0);
  return events[events.length - 1]!;
}

function assertErrorBody(res: request.Response, status: number, code: string): void {
  assert.equal(res.status, status, `status for ${code}: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.error, code);
  assert.equal(typeof res.body.error_description, 'string');
  assert.equal(res.body.request_id, res.headers['x-request-id']);
}

interface Condition {
  key: string;
  operator: string;
  expected: string;
  actual?: unknown;
  matched: boolean;
}
interface Evaluation {
  policy: string;
  effect: string;
  matched: boolean;
  conditions: Condition[];
}

function evaluationOf(body: { evaluations: Evaluation[] }, policy: string): Evaluation {
  const found = body.evaluations.find((e) => e.policy === policy);
  assert.ok(found, `evaluation of ${policy}`);
  return found;
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
});

after(async () => {
  await fx.close();
});

describe('POST /v1/explain answers the decision, condition by condition', () => {
  test('an allowed token: every condition with the expected value and the claim value; audited as explain', async () => {
    const res = await explainCall(await mint());
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(Object.keys(res.body).sort(), ['audit_matches', 'decision', 'evaluations', 'explain_id', 'message', 'policy', 'reason', 'truncated']);
    assert.equal(res.body.policy, 'deploy');
    assert.equal(res.body.decision, 'allow');
    assert.equal(res.body.reason, 'allowed');
    assert.equal(res.body.truncated, false);
    assert.match(res.body.message, /allows/);
    // The named policy only: no deny policy denies this token, and those that do not are not listed.
    assert.deepEqual(res.body.evaluations.map((e: Evaluation) => e.policy), ['deploy']);
    assert.deepEqual(res.body.evaluations[0], {
      policy: 'deploy',
      effect: 'allow',
      mode: 'enforce',
      matched: true,
      conditions: [
        { key: 'repository', operator: 'equals', expected: '(hidden)', actual: 'acme/api', matched: true },
        { key: 'ref', operator: 'in', expected: '(hidden)', actual: 'refs/heads/main', matched: true },
      ],
    });

    const record = await auditRecord(res.body.explain_id);
    assert.equal(record.decision, 'explain');
    assert.equal(record.error, null);
    assert.match(record.reason!, /^allow: allowed: /);
    assert.equal(record.policy, 'deploy');
    assert.match(record.policy_sha256!, /^[0-9a-f]{64}$/);
    assert.equal(record.credential_id, null);
    assert.equal(record.provider, null);
    assert.equal(record.expires_at, null);
    assert.equal(record.issuer, 'local');
    assert.equal(record.subject, GOOD_CLAIMS.sub);
    assert.equal((record.claims as Record<string, unknown>).repository, 'acme/api');
    assert.equal(record.request_id, res.headers['x-request-id']);
  });

  test('a denied token is a 200 too, naming the failing condition and the token value', async () => {
    const res = await explainCall(await mint({ ...GOOD_CLAIMS, ref: 'refs/heads/feature' }));
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'deny');
    assert.equal(res.body.reason, 'conditions_not_met');
    assert.match(res.body.message, /refs\/heads\/feature/);
    const deploy = evaluationOf(res.body, 'deploy');
    assert.equal(deploy.matched, false);
    assert.deepEqual(
      deploy.conditions.find((c) => c.key === 'ref'),
      { key: 'ref', operator: 'in', expected: '(hidden)', actual: 'refs/heads/feature', matched: false },
    );
    assert.equal(deploy.conditions.find((c) => c.key === 'repository')?.matched, true);
    const record = await auditRecord(res.body.explain_id);
    assert.equal(record.decision, 'explain');
    assert.match(record.reason!, /^deny: conditions_not_met: /);
  });

  test('an absent claim has no `actual`', async () => {
    const res = await explainCall(await mint({ sub: 'x', repository: 'acme/api' }));
    assert.equal(res.status, 200);
    const ref = evaluationOf(res.body, 'deploy').conditions.find((c) => c.key === 'ref')!;
    assert.equal(ref.matched, false);
    assert.ok(!('actual' in ref));
  });

  test('a matching deny policy: its conditions show the token values, never the policy values', async () => {
    const res = await explainCall(await mint({ ...GOOD_CLAIMS, repository_owner: 'blocklisted-org-7f3a', workflow: 'secret-workflow-pattern-42' }));
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'deny');
    assert.equal(res.body.reason, 'denied_by_policy');
    assert.match(res.body.message, /deny-blocklist/);
    const deny = evaluationOf(res.body, 'deny-blocklist');
    assert.equal(deny.effect, 'deny');
    assert.equal(deny.matched, true);
    assert.deepEqual(deny.conditions, [
      { key: 'repository_owner', operator: 'in', expected: '(hidden)', actual: 'blocklisted-org-7f3a', matched: true },
      { key: 'workflow', operator: 'regex', expected: '(hidden)', actual: 'secret-workflow-pattern-42', matched: true },
    ]);
    const record = await auditRecord(res.body.explain_id);
    assert.match(record.reason!, /^deny: denied_by_policy: /);
  });

  test('a deny policy that does not match is not listed: neither its name, nor its keys, nor its values', async () => {
    // A candidate of the deny index (no equality condition pins it out) that fails its regex.
    const res = await explainCall(await mint({ ...GOOD_CLAIMS, repository_owner: 'blocklisted-org-7f3a' }));
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'allow');
    for (const hidden of ['deny-blocklist', 'deny-prt', 'other-blocked-org-91c2', 'secret-workflow-pattern', 'pull_request_target', 'event_name']) {
      assert.ok(!res.text.includes(hidden), `${hidden} is not in the answer`);
    }
  });

  test('naming a deny policy is a deny decision, not an error', async () => {
    const res = await explainCall(await mint(), { policy: 'deny-prt' });
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'deny');
    assert.equal(res.body.reason, 'not_an_allow_policy');
  });

  test('never a credential, never the token', async () => {
    const token = await mint();
    const res = await explainCall(token, { policy: 'deploy', duration_seconds: 300 });
    assert.equal(res.status, 200);
    assert.equal(res.body.credentials, undefined);
    assert.equal(res.body.issuance_id, undefined);
    assert.doesNotMatch(res.text, /access_token|credentials/);
    assert.ok(!res.text.includes(token.split('.')[2]!), 'the token is not echoed');
    assert.equal((await auditRecord(res.body.explain_id)).credential_id, null);
  });

  test('the token may come in the body instead of the header', async () => {
    const res = await explainCall(undefined, { policy: 'deploy', token: await mint() });
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'allow');
  });
});

describe('a deny policy that cannot be evaluated denies (fail closed), with a reason naming it', () => {
  const GUARDED = { sub: 'repo:acme/guarded:ref:refs/heads/main', repository: 'acme/guarded', ref: 'refs/heads/main' };

  test('a CEL condition on a missing key: the exchange answers 403, and its record says which deny policy and why', async () => {
    const res = await exchangeCall(await mint(GUARDED), { policy: 'guarded' });
    assertErrorBody(res, 403, 'access_denied');
    assert.equal(res.body.credentials, undefined);
    const expected = "Denied: deny policy 'deny-guarded-cel' could not be evaluated (condition: a claim it reads is missing); a deny policy that cannot be evaluated denies.";
    assert.equal(res.body.error_description, expected);
    const record = await lastAuditRecord();
    assert.equal(record.request_id, res.headers['x-request-id']);
    assert.equal(record.decision, 'denied');
    assert.equal(record.error, 'access_denied');
    assert.equal(record.reason, `deny_policy_not_evaluable: ${expected}`);
    assert.equal(record.credential_id, null);
    assert.ok(!record.reason.includes('foo'), 'the reason does not quote the expression');
  });

  test('the same deny policy evaluated on a token that has the key: it denies only when it matches', async () => {
    const allowed = await exchangeCall(await mint({ ...GUARDED, foo: { bar: 'y' } }), { policy: 'guarded' });
    assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
    secrets.push(allowed.body.credentials.access_token);
    const denied = await exchangeCall(await mint({ ...GUARDED, foo: { bar: 'x' } }), { policy: 'guarded' });
    assertErrorBody(denied, 403, 'access_denied');
    assert.equal(denied.body.error_description, "Denied by deny policy 'deny-guarded-cel'.");
  });

  test('explain lists the deny policy with its error, the expression and its error text hidden', async () => {
    const res = await explainCall(await mint(GUARDED), { policy: 'guarded' });
    assert.equal(res.status, 200);
    assert.equal(res.body.decision, 'deny');
    assert.equal(res.body.reason, 'deny_policy_not_evaluable');
    assert.deepEqual(evaluationOf(res.body, 'deny-guarded-cel'), {
      policy: 'deny-guarded-cel',
      effect: 'deny',
      mode: 'enforce',
      matched: false,
      error: 'condition: a claim it reads is missing',
      conditions: [
        { key: 'repository', operator: 'equals', expected: '(hidden)', actual: 'acme/guarded', matched: true },
        { key: 'condition', operator: 'cel', expected: '(hidden)', actual: '(hidden)', matched: false, error: 'a claim it reads is missing' },
      ],
    });
    assert.ok(!res.text.includes('foo'));
    assert.match((await auditRecord(res.body.explain_id)).reason!, /^deny: deny_policy_not_evaluable: /);
  });

  test('an array claim where a deny regex compares a string: 403, the deny policy named', async () => {
    const res = await exchangeCall(await mint({ ...GOOD_CLAIMS, repository_owner: 'blocklisted-org-7f3a', workflow: ['secret-workflow-pattern-1'] }));
    assertErrorBody(res, 403, 'access_denied');
    assert.equal(res.body.error_description, "Denied: deny policy 'deny-blocklist' could not be evaluated (claim 'workflow': it is an array, which regex cannot compare); a deny policy that cannot be evaluated denies.");
    const record = await lastAuditRecord();
    assert.equal(record.decision, 'denied');
    assert.match(record.reason!, /^deny_policy_not_evaluable: /);
    assert.ok(!record.reason!.includes('secret-workflow-pattern'), 'neither the pattern nor the claim value is in the reason');
  });
});

describe('explain does not use up the token', () => {
  test('explain, then exchange the same token: 200; explain again after the exchange: still 200', async () => {
    const token = await mint();
    assert.equal((await explainCall(token)).status, 200);
    assert.equal((await explainCall(token)).status, 200);
    const exchanged = await exchangeCall(token);
    assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
    secrets.push(exchanged.body.credentials.access_token);
    assert.equal((await explainCall(token)).status, 200);
    assert.equal((await exchangeCall(token)).status, 409, 'the exchange itself still counts against replay');
  });

  test('a token without jti too (replay keyed by hash)', async () => {
    const token = await mint(GOOD_CLAIMS, { omit: ['jti'] });
    assert.equal((await explainCall(token)).status, 200);
    const exchanged = await exchangeCall(token);
    assert.equal(exchanged.status, 200);
    secrets.push(exchanged.body.credentials.access_token);
  });
});

describe('refusals answer as the exchange does, and are audited as refused explains', () => {
  const cases: { name: string; status: number; code: string; call: () => Promise<request.Response> }[] = [
    { name: 'no token at all', status: 401, code: 'invalid_token', call: async () => explainCall(undefined) },
    { name: 'garbage token', status: 401, code: 'invalid_token', call: async () => explainCall('not.a.jwt') },
    { name: 'expired token', status: 401, code: 'invalid_token', call: async () => explainCall(await mint(GOOD_CLAIMS, { issuedAt: Math.floor(Date.now() / 1000) - 3600, expiresInSeconds: 600 })) },
    { name: 'wrong audience', status: 401, code: 'invalid_token', call: async () => explainCall(await mint({ ...GOOD_CLAIMS, aud: 'https://elsewhere.example.com' })) },
    { name: 'unknown policy', status: 404, code: 'unknown_policy', call: async () => explainCall(await mint(), { policy: 'no-such-policy' }) },
    { name: 'Authorization not Bearer', status: 400, code: 'invalid_request', call: async () => request(fx.broker.app).post('/v1/explain').set('Authorization', 'Basic Zm9vOmJhcg==').send({ policy: 'deploy' }) },
    { name: 'token in header and body', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), { policy: 'deploy', token: await mint() }) },
    { name: 'token field not a string', status: 400, code: 'invalid_request', call: async () => explainCall(undefined, { policy: 'deploy', token: 42 }) },
    { name: 'no policy named', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), {}) },
    { name: 'policy not a string', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), { policy: ['deploy'] }) },
    { name: 'duration not an integer', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), { policy: 'deploy', duration_seconds: '900' }) },
    { name: 'duration out of range', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), { policy: 'deploy', duration_seconds: 0 }) },
    { name: 'unknown body field', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), { policy: 'deploy', verbose: true }) },
    { name: 'body is a JSON array', status: 400, code: 'invalid_request', call: async () => explainCall(await mint(), [1, 2]) },
    {
      name: 'body that is not JSON by content type',
      status: 400,
      code: 'invalid_request',
      call: async () => request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${await mint()}`).type('form').send('policy=deploy'),
    },
    {
      name: 'compressed body (never inflated)',
      status: 400,
      code: 'invalid_request',
      call: async () => request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${await mint()}`).set('Content-Type', 'application/json').set('Content-Encoding', 'gzip').send('garbage'),
    },
    {
      name: 'body is not JSON',
      status: 400,
      code: 'invalid_request',
      call: async () => request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${await mint()}`).set('Content-Type', 'application/json').send('{"policy":'),
    },
    { name: 'body too large', status: 413, code: 'request_too_large', call: async () => explainCall(await mint(), { policy: 'deploy', padding: 'x'.repeat(100_000) }) },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const res = await c.call();
      assertErrorBody(res, c.status, c.code);
      assert.equal(res.body.evaluations, undefined);
      if (c.status === 401) assert.match(String(res.headers['www-authenticate']), /^Bearer error="invalid_token"/);
      const record = await lastAuditRecord();
      assert.equal(record.request_id, res.headers['x-request-id'], 'the refusal has its own record');
      assert.equal(record.decision, 'denied');
      assert.equal(record.error, c.code);
      assert.match(record.reason!, /^explain: ./);
      assert.equal(record.credential_id, null);
    });
  }

  test('a token that fails verification keeps what it claims under `unverified`, never `claims`', async () => {
    const res = await explainCall(await mint(GOOD_CLAIMS, { issuedAt: Math.floor(Date.now() / 1000) - 3600, expiresInSeconds: 600 }));
    assert.equal(res.status, 401);
    const record = await lastAuditRecord();
    assert.equal(record.claims, null);
    assert.deepEqual(record.unverified, { iss: fx.issuer.url, sub: GOOD_CLAIMS.sub });
  });

  test('an unknown policy is recorded with the verified token', async () => {
    const res = await explainCall(await mint(), { policy: 'no-such-policy' });
    assert.equal(res.status, 404);
    const record = await lastAuditRecord();
    assert.equal(record.subject, GOOD_CLAIMS.sub);
    assert.equal(record.policy, null);
    assert.match(record.reason!, /^explain: unknown_policy: /);
  });
});

describe('metrics and secrets', () => {
  test('explains are counted under decision "explain", whatever their outcome', async () => {
    const res = await request(fx.broker.app).get('/metrics');
    assert.match(res.text, /broker_exchanges_total\{policy="deploy",provider="none",decision="explain"\} \d+/);
    assert.match(res.text, /broker_exchanges_total\{policy="unknown",provider="none",decision="explain"\} \d+/);
  });

  test('neither the audit database nor the logs hold a raw CI token', async () => {
    assert.ok(secrets.length > 10);
    const db = new Database(path.join(fx.dir, 'data', 'audit.db'), { readonly: true });
    const dumped = JSON.stringify(db.prepare('SELECT * FROM audit_events').all());
    db.close();
    const files = Buffer.concat([await readFile(path.join(fx.dir, 'data', 'audit.db')), await readFile(path.join(fx.dir, 'data', 'audit.db-wal')).catch(() => Buffer.alloc(0))]);
    const logs = fx.logLines().join('\n');
    for (const secret of secrets) {
      const signature = secret.split('.')[2]!;
      assert.ok(!dumped.includes(signature) && !files.includes(signature) && !logs.includes(signature));
    }
    assert.ok(logs.includes('"msg":"explain"'), 'explains are logged as explain');
  });
});

describe('with 2,000 deny policies the answer stays small and names only the deny policies that deny', () => {
  const DENY_POLICIES = 2000;
  const ALLOW = POLICIES['deploy.yaml'];
  let big: BrokerFixture;
  before(async () => {
    const policies: Record<string, string> = { 'deploy.yaml': ALLOW };
    for (let i = 0; i < DENY_POLICIES; i++) {
      const name = `deny-${String(i).padStart(4, '0')}-${'n'.repeat(100)}`;
      // Half are filed in the deny index under `repository`; half have no equality condition, so every exchange evaluates them.
      policies[`${name}.yaml`] =
        i % 2 === 0
          ? `name: ${name}\nissuer: local\neffect: deny\nclaims:\n  repository: acme/blocked-${i}\n`
          : `name: ${name}\nissuer: local\neffect: deny\nclaims:\n  actor: { glob: "evil-*" }\n${Array.from({ length: 40 }, (_, k) => `  absent-${k}-${'k'.repeat(240)}: { exists: false }`).join('\n')}\n`;
    }
    big = await startBrokerFixture({ policies });
  });
  after(async () => big.close());

  const bigExplain = async (claims: Record<string, unknown>) => {
    const token = await big.issuer.mint({ aud: AUDIENCE, ...claims });
    secrets.push(token);
    return request(big.broker.app).post('/v1/explain').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
  };

  test('none denies: only the allow policy is listed, with what failed, within 64 KiB', async () => {
    const res = await bigExplain({ ...GOOD_CLAIMS, ref: 'refs/heads/feature', actor: 'octocat' });
    assert.equal(res.status, 200);
    assert.ok(Buffer.byteLength(res.text) <= 64 * 1024, `${Buffer.byteLength(res.text)} bytes`);
    assert.equal(res.body.reason, 'conditions_not_met');
    assert.equal(res.body.message, "Policy 'deploy' does not match this token: claim 'ref' is \"refs/heads/feature\".");
    assert.deepEqual(res.body.evaluations.map((e: Evaluation) => e.policy), ['deploy']);
    assert.deepEqual(evaluationOf(res.body, 'deploy').conditions.find((c) => c.key === 'ref'), { key: 'ref', operator: 'in', expected: '(hidden)', actual: 'refs/heads/feature', matched: false });
    assert.equal(res.body.truncated, false);
    assert.doesNotMatch(res.text, /deny-\d{4}|absent-/, 'no deny policy that does not deny is named, nor its keys');
  });

  test('explain evaluates only the deny index\'s candidates, as the exchange does', async () => {
    const claims = { ...GOOD_CLAIMS, ref: 'refs/heads/feature', actor: 'octocat' };
    const token = await big.issuer.mint({ aud: AUDIENCE, ...claims });
    secrets.push(token);
    const result = await explain(big.broker.deps, { requestId: 'explain-candidates', clientIp: null, userAgent: null, token, policy: 'deploy', durationSeconds: undefined });
    const candidates = big.broker.deps.policies().denyIndex.get('local')!.candidates(claims);
    // The 1,000 policies pinned to other repositories are not evaluated; the 1,000 without an equality condition are.
    assert.equal(candidates.length, DENY_POLICIES / 2);
    assert.deepEqual(result.decision.evaluations.slice(1).map((e) => e.policy), candidates.map((p) => p.name));
  });

  test('a thousand deny: at most ten are listed, each bounded, `truncated` is set, the answer is within 64 KiB', async () => {
    // Ten deny policies of 32 conditions with 250-character keys would be about 100 KB: the byte bound cuts conditions too.
    const res = await bigExplain({ ...GOOD_CLAIMS, actor: 'evil-1' });
    assert.equal(res.status, 200);
    assert.ok(Buffer.byteLength(res.text) <= 64 * 1024, `${Buffer.byteLength(res.text)} bytes`);
    assert.equal(res.body.reason, 'denied_by_policy');
    assert.match(res.body.message, /^Denied by deny policies 'deny-0001-n+', .* and 990 more\.$/);
    assert.equal(res.body.truncated, true);
    const denials = res.body.evaluations.slice(1) as Evaluation[];
    assert.equal(denials.length, 10);
    assert.ok(denials.every((e) => e.matched && /^deny-\d{3}[13579]-/.test(e.policy)), 'only deny policies that matched');
    assert.ok(denials.every((e) => e.conditions.length <= 32));
    assert.ok(denials.some((e) => e.conditions.length < 32), 'the byte bound dropped conditions');
    assert.deepEqual(res.body.evaluations[0].policy, 'deploy');
  });
});

describe('explain renders the grant of an allowed policy as the exchange does: a token the exchange refuses there is not "allow"', () => {
  const BROKER_KEY = { accessKeyId: 'AKIAOIDCBROKERTEST02', secretAccessKey: 'broker/secret/key/for/explain/tests/0000000' };
  const RENDER_POLICIES = {
    'aws-tag.yaml': `
name: aws-tag
issuer: local
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/deploy-api
  session_tags:
    ref: \${ref}
`,
    'jwt-env.yaml': `
name: jwt-env
issuer: local
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://deploy.example.com/\${environment}
`,
  };
  let aws: AwsBroker;
  let sts: StsEmulator;
  let renderFx: BrokerFixture;

  before(async () => {
    aws = await startAwsBroker({ policies: RENDER_POLICIES, brokerKey: BROKER_KEY });
    ({ sts, fx: renderFx } = aws);
  });

  after(() => aws.close());

  async function mintFor(claims: Record<string, unknown>): Promise<string> {
    const token = await renderFx.issuer.mint({ aud: AUDIENCE, ...GOOD_CLAIMS, ...claims });
    secrets.push(token);
    return token;
  }

  /** Explains, then exchanges, a token with these claims; with the audit records of both. */
  async function explainAndExchange(
    policy: string,
    claims: Record<string, unknown>,
  ): Promise<{ explained: request.Response; exchanged: request.Response; explainRecord: AuditRecord | undefined; exchangeRecord: AuditRecord }> {
    const explained = await request(renderFx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${await mintFor(claims)}`).send({ policy });
    const exchanged = await request(renderFx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${await mintFor(claims)}`).send({ policy });
    const res = await request(renderFx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
    const events = res.body.events as AuditRecord[];
    return { explained, exchanged, explainRecord: events.find((e) => e.id === explained.body.explain_id), exchangeRecord: events[events.length - 1]! };
  }

  test("a `ref` holding '#' under a policy tagging `ref`: explain says deny (session_tag_invalid), and the exchange refuses with the same reason and message", async () => {
    const calls = sts.callCount();
    const { explained, exchanged, explainRecord, exchangeRecord } = await explainAndExchange('aws-tag', { ref: 'refs/heads/fix#1' });
    assert.equal(explained.status, 200, JSON.stringify(explained.body));
    assert.equal(explained.body.decision, 'deny');
    assert.equal(explained.body.reason, 'session_tag_invalid');
    assert.ok(explained.body.message.startsWith("The policy's session tag 'ref' cannot be filled from this token: "), explained.body.message);
    // Every condition held: the refusal is the grant's, not the policy's conditions'.
    assert.equal(evaluationOf(explained.body, 'aws-tag').matched, true);

    assert.equal(exchanged.status, 403, JSON.stringify(exchanged.body));
    assert.equal(exchanged.body.error, 'access_denied');
    assert.equal(exchanged.body.error_description, explained.body.message);
    assert.equal(exchangeRecord.decision, 'denied');
    assert.equal(exchangeRecord.reason, `session_tag_invalid: ${explained.body.message}`);
    assert.equal(sts.callCount(), calls, 'neither explain nor the exchange called STS');
    assert.equal(explainRecord?.decision, 'explain');
    assert.equal(explainRecord.reason, `deny: session_tag_invalid: ${explained.body.message}`);
  });

  test('the same policy with a `ref` that fits: explain says allow and the exchange issues', async () => {
    const { explained, exchanged } = await explainAndExchange('aws-tag', { ref: 'refs/heads/main' });
    assert.equal(explained.body.decision, 'allow', JSON.stringify(explained.body));
    assert.equal(explained.body.reason, 'allowed');
    assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
    secrets.push(exchanged.body.credentials.SecretAccessKey, exchanged.body.credentials.SessionToken);
    assert.equal(sts.requests.at(-1)!.Tags.find((t) => t.Key === 'ref')?.Value, 'refs/heads/main');
  });

  test('a jwt audience template on an absent claim: explain says deny (template_claim_unusable), as the exchange does', async () => {
    const { explained, exchanged } = await explainAndExchange('jwt-env', {});
    assert.equal(explained.body.decision, 'deny', JSON.stringify(explained.body));
    assert.equal(explained.body.reason, 'template_claim_unusable');
    assert.equal(exchanged.status, 403, JSON.stringify(exchanged.body));
    assert.equal(exchanged.body.error_description, explained.body.message);
  });
});
