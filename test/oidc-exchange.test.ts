// The verifier's refusals and issuer outages as a CI job sees them: through
// the broker's HTTP app, with its audit log and replay store
// (docs/configuration.md#issuers).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import type { AuditRecord } from '../src/audit/types.js';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { createApp } from '../src/http/app.js';
import type { ReplayStore } from '../src/replay/types.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { DISCOVERY_PATH, JWKS_PATH, localJwtPolicy, manualClock } from './helpers/oidc.js';
import { DEFAULT_JWKS_COOLDOWN_MS } from '../src/oidc/jwks.js';

const CLAIMS = { aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' };

async function auditRecords(fx: BrokerFixture): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return res.body.events as AuditRecord[];
}

async function recordOf(fx: BrokerFixture, res: request.Response): Promise<AuditRecord> {
  const record = (await auditRecords(fx)).find((r) => r.request_id === res.headers['x-request-id']);
  assert.ok(record, 'the request has its own audit record');
  return record;
}

/** The broker's own replay store, with every claim it is asked for kept in `claims`. */
function countingReplay(store: ReplayStore): { store: ReplayStore; claims: number[] } {
  const claims: number[] = [];
  return {
    claims,
    store: {
      claim: (key, expiresAtMs) => {
        claims.push(expiresAtMs);
        return store.claim(key, expiresAtMs);
      },
      release: (key) => store.release(key),
      ping: () => store.ping(),
      close: () => store.close(),
    },
  };
}

describe('exchange: a token whose times are not usable', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
  });
  after(() => fx.close());

  for (const [claim, raw] of [
    ['exp', '1e400'],
    ['nbf', '-1e400'],
    ['iat', '1e400'],
  ] as const) {
    test(`${claim}: ${raw} -> 401 invalid_token, a denied record naming "${claim}", no credential, the replay store untouched`, async () => {
      const replay = countingReplay(fx.broker.deps.replay);
      const app = createApp({ ...fx.broker.deps, replay: replay.store });
      const token = await fx.issuer.mint(CLAIMS, { rawClaims: { [claim]: raw } });
      const res = await request(app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(res.status, 401, JSON.stringify(res.body));
      assert.equal(res.body.error, 'invalid_token');
      assert.match(res.body.error_description, new RegExp(`"${claim}" claim is not a usable time`));
      assert.equal(res.body.credentials, undefined);
      const record = await recordOf(fx, res);
      assert.equal(record.decision, 'denied');
      assert.equal(record.error, 'invalid_token');
      assert.match(String(record.reason), new RegExp(`^invalid_claim: .*"${claim}" claim is not a usable time`));
      assert.equal(record.credential_id, null);
      assert.deepEqual(replay.claims, []);

      // The same app and store do claim for a usable token: the count above means something.
      const good = await request(app).post('/v1/exchange').set('Authorization', `Bearer ${await fx.issuer.mint(CLAIMS)}`).send({ policy: 'deploy' });
      assert.equal(good.status, 200, JSON.stringify(good.body));
      assert.equal(replay.claims.length, 1);
    });
  }

  test('exp beyond max_token_lifetime_seconds -> 401 invalid_token (lifetime_too_long), recorded, nothing claimed', async () => {
    const replay = countingReplay(fx.broker.deps.replay);
    const app = createApp({ ...fx.broker.deps, replay: replay.store });
    const iat = Math.floor(Date.now() / 1000);
    const token = await fx.issuer.mint(CLAIMS, { issuedAt: iat, expiresInSeconds: 30 * 86_400 });
    const res = await request(app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
    assert.equal(res.status, 401);
    assert.equal(res.body.error, 'invalid_token');
    const record = await recordOf(fx, res);
    assert.equal(record.decision, 'denied');
    assert.match(String(record.reason), /^lifetime_too_long: .*"exp"/);
    assert.deepEqual(replay.claims, []);
  });
});

describe('exchange: an issuer that is down when the broker starts', () => {
  let fx: BrokerFixture;
  let down: DevIssuer;
  const clock = manualClock();

  before(async () => {
    down = await startDevIssuer({ alg: 'ES256' });
    down.setFailure('500');
    fx = await startBrokerFixture({
      now: clock.now,
      extraIssuers: `  - name: flaky\n    issuer: ${down.url}\n    audiences: [${AUDIENCE}]\n`,
      policies: {
        'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
        'flaky.yaml': 'issuer: flaky\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: https://flaky.example.com\n',
      },
    });
  });
  after(async () => {
    await fx.close();
    await down.close();
  });

  function exchange(token: string, policy: string) {
    return request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
  }

  test('the broker starts; that issuer answers 503 issuer_unavailable, the other works; it works once the issuer is back', async () => {
    const refused = await exchange(await down.mint({ ...CLAIMS, iat: clock.seconds() }), 'flaky');
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(refused.body.error, 'issuer_unavailable');
    assert.equal(refused.body.credentials, undefined);
    const record = await recordOf(fx, refused);
    assert.equal(record.decision, 'error');
    assert.equal(record.error, 'issuer_unavailable');
    assert.equal(down.requestCount(DISCOVERY_PATH), 1);

    const other = await exchange(await fx.issuer.mint({ ...CLAIMS, iat: clock.seconds() }), 'deploy');
    assert.equal(other.status, 200, JSON.stringify(other.body));

    // Back, but inside the failed fetch's cooldown: not asked again yet.
    down.setFailure('none');
    assert.equal((await exchange(await down.mint({ ...CLAIMS, iat: clock.seconds() }), 'flaky')).status, 503);
    assert.equal(down.requestCount(DISCOVERY_PATH), 1);
    clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
    const recovered = await exchange(await down.mint({ ...CLAIMS, iat: clock.seconds() }), 'flaky');
    assert.equal(recovered.status, 200, JSON.stringify(recovered.body));
    assert.equal(down.requestCount(JWKS_PATH), 1);
  });
});
