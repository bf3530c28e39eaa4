// Broker-signed tokens carry rendered claims exactly as the CI token held them: nothing is
// replaced or cut, so relying parties that decide on a claim never see two claims as one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { AUDIENCE, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';

const POLICIES = {
  'jwt-ref.yaml': `
issuer: local
claims:
  repository: acme/api
grant:
  provider: jwt
  audience: https://deploy.example.com/\${ref}
  claims:
    ref: \${ref}
`,
};

let fx: BrokerFixture;

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
});

after(async () => {
  await fx.close();
});

test('the audience and claims of a broker-signed token are the claim values byte for byte, distinct for distinct claims', async () => {
  const jwks = createLocalJWKSet((await request(fx.broker.app).get('/.well-known/jwks.json')).body);
  const seen = new Set<string>();
  const refs = ['refs/heads/release_1', 'refs/heads/release#1', 'refs/heads/release(1', 'refs/heads/release;1', 'refs/heads/größe 1', 'x'.repeat(300)];
  for (const ref of refs) {
    const token = await fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api', ref });
    const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'jwt-ref' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const audience = `https://deploy.example.com/${ref}`;
    const { payload } = await jwtVerify(res.body.credentials.access_token as string, jwks, { audience });
    assert.equal(payload['ref'], ref);
    seen.add(payload['ref']);
  }
  assert.equal(seen.size, refs.length);
});
