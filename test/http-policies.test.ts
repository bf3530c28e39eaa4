// POST /v1/policies/evaluate (the console's playground) against the real app.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'no-prt.yaml': `issuer: local\neffect: deny\nclaims:\n  event_name: pull_request_target\n`,
  'deploy.test.yaml': `tests:
  - name: acme/api deploys
    policy: deploy
    claims: {repository: acme/api}
    expect: allow
  - name: acme/web deploys too (wrong on purpose)
    policy: deploy
    claims: {repository: acme/web}
    expect: allow
  - name: names a policy that does not exist
    policy: nope
    claims: {}
    expect: deny
`,
};
const AUTH = `Bearer ${AUDITOR_TOKEN}`;
const ALLOWED = { aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', event_name: 'push' };

let fx: BrokerFixture;
before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
});
after(() => fx.close());

const evaluate = (body: unknown) => request(fx.broker.app).post('/v1/policies/evaluate').set('Authorization', AUTH).send(body as object);
const auditCount = async () => ((await request(fx.broker.app).get('/v1/audit/events').set('Authorization', AUTH)).body as { events: unknown[] }).events.length;

describe('POST /v1/policies/evaluate', () => {
  test('a claim set is decided condition by condition, deny policies with their expected values, and nothing is recorded', async () => {
    const before = await auditCount();
    const allowed = await evaluate({ policy: 'deploy', claims: ALLOWED });
    assert.equal(allowed.status, 200, allowed.text);
    assert.equal(allowed.headers['cache-control'], 'no-store');
    assert.deepEqual(allowed.body, {
      explain_id: null,
      policy: 'deploy',
      decision: 'allow',
      reason: 'allowed',
      message: "Policy 'deploy' allows this token.",
      evaluations: [
        { policy: 'deploy', effect: 'allow', mode: 'enforce', matched: true, conditions: [{ key: 'repository', operator: 'equals', expected: 'acme/api', actual: 'acme/api', matched: true }] },
        { policy: 'no-prt', effect: 'deny', mode: 'enforce', matched: false, conditions: [{ key: 'event_name', operator: 'equals', expected: 'pull_request_target', actual: 'push', matched: false }] },
      ],
      audit_matches: [],
      truncated: false,
      issuer: 'local',
      notes: [],
    });
    const denied = await evaluate({ policy: 'deploy', claims: { ...ALLOWED, event_name: 'pull_request_target', aud: undefined } });
    assert.equal(denied.status, 200, denied.text);
    assert.deepEqual([denied.body.decision, denied.body.reason, denied.body.message], ['deny', 'denied_by_policy', "Denied by deny policy 'no-prt'."]);
    assert.deepEqual(denied.body.evaluations[1].conditions[0], { key: 'event_name', operator: 'equals', expected: 'pull_request_target', actual: 'pull_request_target', matched: true });
    assert.deepEqual(denied.body.notes, [`No aud claim: evaluated with audience ${AUDIENCE}, the first configured audience of issuer 'local'.`]);
    assert.equal(await auditCount(), before);
    const logged = fx.logLines().filter((line) => line.includes('policy evaluate'));
    assert.equal(logged.length, 2);
    assert.ok(logged.every((line) => !line.includes('acme/api')), 'the claims are not logged');
  });

  test('a token is verified as an exchange verifies it; only its SHA-256 is logged, and it stays unused', async () => {
    const token = await fx.issuer.mint({ ...ALLOWED, repository: 'acme/web' });
    const res = await evaluate({ policy: 'deploy', token });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual([res.body.decision, res.body.reason, res.body.evaluations[0].conditions[0].actual], ['deny', 'conditions_not_met', 'acme/web']);
    const line = fx.logLines().find((l) => l.includes('policy evaluate') && l.includes('"input":"token"'));
    assert.ok(line !== undefined && /"token_sha256":"[0-9a-f]{64}"/.test(line), line);
    assert.ok(!fx.logLines().some((l) => l.includes(token)));
    // Still exchangeable as far as replay goes: the refusal is the policy's, not token_replayed.
    const exchanged = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
    assert.equal(exchanged.body.error, 'access_denied');

    const expired = await fx.issuer.mint(ALLOWED, { expiresInSeconds: 1, issuedAt: 1_000_000 });
    const refused = await evaluate({ policy: 'deploy', token: expired });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, 'invalid_request');
    assert.match(refused.body.error_description, /^The token does not verify: /);
  });

  test('every bad input is a 400 with a sentence naming it; an unknown policy is a 404', async () => {
    const cases: [unknown, string][] = [
      [[], 'The request body must be a JSON object.'],
      [{ claims: ALLOWED }, 'The "policy" field must name a policy.'],
      [{ policy: 'deploy' }, 'Give either "claims" (a JSON object) or "token" (a compact JWT), not both.'],
      [{ policy: 'deploy', claims: ALLOWED, token: 'x.y.z' }, 'Give either "claims" (a JSON object) or "token" (a compact JWT), not both.'],
      [{ policy: 'deploy', claims: ['repository'] }, 'The "claims" field must be a JSON object of claims.'],
      [{ policy: 'deploy', token: 42 }, 'The "token" field must be a compact JWT.'],
      [{ policy: 'deploy', token: 'x.y.z', issuer: 'local' }, 'A token names its own issuer: give "issuer" only with "claims".'],
      [{ policy: 'deploy', claims: ALLOWED, issuer: 'nope' }, "'issuer' must be a configured issuer name (local)."],
      [{ policy: 'deploy', claims: ALLOWED, extra: 1 }, 'Unknown field "extra" in the request body; expected policy, claims or token, issuer.'],
    ];
    for (const [body, message] of cases) {
      const res = await evaluate(body);
      assert.deepEqual([res.status, res.body.error, res.body.error_description], [400, 'invalid_request', message], JSON.stringify(body));
    }
    const form = await request(fx.broker.app).post('/v1/policies/evaluate').set('Authorization', AUTH).type('form').send('policy=deploy');
    assert.deepEqual([form.status, form.body.error_description], [400, 'Send the request as JSON with "Content-Type: application/json".']);
    const broken = await request(fx.broker.app).post('/v1/policies/evaluate').set('Authorization', AUTH).type('json').send('{"policy":');
    assert.deepEqual([broken.status, broken.body.error], [400, 'invalid_request']);
    const unknown = await evaluate({ policy: 'nope', claims: ALLOWED });
    assert.deepEqual([unknown.status, unknown.body.error, unknown.body.error_description], [404, 'unknown_policy', "No policy named 'nope'."]);
  });

  test('answers auditors only; with the console cookie, only from the console origin', async () => {
    const none = await request(fx.broker.app).post('/v1/policies/evaluate').send({ policy: 'deploy', claims: ALLOWED });
    assert.deepEqual([none.status, none.body.error], [401, 'invalid_token']);
    const signIn = await request(fx.broker.app).post('/console/session').set('Origin', AUDIENCE).send({ token: AUDITOR_TOKEN });
    const cookie = String(signIn.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    const fromConsole = await request(fx.broker.app).post('/v1/policies/evaluate').set('Cookie', cookie).set('Origin', AUDIENCE).send({ policy: 'deploy', claims: ALLOWED });
    assert.deepEqual([fromConsole.status, fromConsole.body.decision], [200, 'allow']);
    for (const origin of [undefined, 'https://evil.example']) {
      const req = request(fx.broker.app).post('/v1/policies/evaluate').set('Cookie', cookie);
      const res = await (origin === undefined ? req : req.set('Origin', origin)).send({ policy: 'deploy', claims: ALLOWED });
      assert.deepEqual([res.status, res.body.error, res.body.error_description], [403, 'access_denied', 'The console accepts this request only from its own origin.'], String(origin));
    }
  });
});

describe('GET /v1/policies', () => {
  const list = () => request(fx.broker.app).get('/v1/policies').set('Authorization', AUTH);

  test('lists the loaded set with each source, and runs the test files against it', async () => {
    const res = await list();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(Object.keys(res.body.set), ['count', 'loaded_at', 'sha256', 'last_reload']);
    assert.equal(res.body.set.count, 2);
    const sha = (text: string) => createHash('sha256').update(text).digest('hex');
    assert.deepEqual(res.body.policies, [
      { name: 'deploy', description: null, issuer: 'local', effect: 'allow', mode: 'enforce', file: 'deploy.yaml', sha256: sha(POLICIES['deploy.yaml']), source_status: 'loaded', source: POLICIES['deploy.yaml'] },
      { name: 'no-prt', description: null, issuer: 'local', effect: 'deny', mode: 'enforce', file: 'no-prt.yaml', sha256: sha(POLICIES['no-prt.yaml']), source_status: 'loaded', source: POLICIES['no-prt.yaml'] },
    ]);
    assert.deepEqual(res.body.tests.files, ['deploy.test.yaml']);
    assert.deepEqual(
      res.body.tests.results.map((r: Record<string, unknown>) => [r.file, r.line, r.name, r.policy, r.expect, r.decision, r.passed, r.reason]),
      [
        ['deploy.test.yaml', 2, 'acme/api deploys', 'deploy', 'allow', 'allow', true, 'allowed'],
        ['deploy.test.yaml', 6, 'acme/web deploys too (wrong on purpose)', 'deploy', 'allow', 'deny', false, 'conditions_not_met'],
      ],
    );
    assert.deepEqual(res.body.tests.problems, [`deploy.test.yaml:11: tests[2].policy: test 'names a policy that does not exist': no policy named 'nope' in the policy directory`]);
  });

  test('a test file added or changed is run again', async () => {
    const file = path.join(fx.dir, 'policies', 'more.test.yaml');
    const names = async () => ((await list()).body.tests.results as { name: string; passed: boolean }[]).map((r) => [r.name, r.passed]);
    await writeFile(file, 'tests:\n  - name: web is denied\n    policy: deploy\n    claims: {repository: acme/web}\n    expect: deny\n');
    assert.deepEqual((await names()).slice(2), [['web is denied', true]]);
    await writeFile(file, 'tests:\n  - name: web is denied\n    policy: deploy\n    claims: {repository: acme/web}\n    expect: allow\n');
    assert.deepEqual((await names()).slice(2), [['web is denied', false]]);
  });

  test('a source changed on disk since the set loaded is not shown as the loaded one', async () => {
    // It does not compile, so the loaded set stays serving whenever the watcher reloads.
    await writeFile(path.join(fx.dir, 'policies', 'no-prt.yaml'), 'issuer: local\neffect: maybe\n');
    const res = await list();
    assert.deepEqual(
      res.body.policies.map((p: Record<string, unknown>) => [p.name, p.source_status, p.source === null]),
      [
        ['deploy', 'loaded', false],
        ['no-prt', 'changed', true],
      ],
    );
  });

  test('answers auditors only, and takes no parameter', async () => {
    const none = await request(fx.broker.app).get('/v1/policies');
    assert.deepEqual([none.status, none.body.error], [401, 'invalid_token']);
    const param = await request(fx.broker.app).get('/v1/policies?name=deploy').set('Authorization', AUTH);
    assert.deepEqual([param.status, param.body.error_description], [400, "Unknown query parameter 'name'."]);
  });
});
