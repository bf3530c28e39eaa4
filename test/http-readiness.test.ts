// /readyz answers 503 whenever the broker cannot issue (openapi.yaml, docs/audit.md): real append
// failures even when the store's probe passes, an unreadable signing key; the public listener
// leaves out what names policy files.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { AUDIENCE, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
};

let fx: BrokerFixture;
before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
});
after(async () => fx.close());

async function exchangeStatus(): Promise<number> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api', repository: 'acme/api' });
  return (await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' })).status;
}

describe('readiness', () => {
  test('an append that failed makes the next check 503 though the probe passes; the check after it is the probe alone', async () => {
    const db = new Database(path.join(fx.dir, 'data', 'audit.db'));
    try {
      // Inserts fail; the probe (an update rolled back) still passes.
      db.exec("CREATE TRIGGER refuse_appends BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
      assert.equal(await exchangeStatus(), 503);
      const failing = await request(fx.broker.app).get('/readyz');
      assert.equal(failing.status, 503, JSON.stringify(failing.body));
      assert.equal(failing.body.error, 'not_ready');
      assert.equal(failing.body.checks.audit, 'unavailable');
      // No append since: a broker out of rotation must be able to come back.
      assert.equal((await request(fx.broker.app).get('/readyz')).status, 200);
      assert.equal(await exchangeStatus(), 503);
      db.exec('DROP TRIGGER refuse_appends');
      // A committed append clears the failure before any check sees it.
      assert.equal(await exchangeStatus(), 200);
      const ready = await request(fx.broker.app).get('/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(ready.body.checks, { accepting: true, policies: 1, audit: 'writable', replay: 'reachable', signing_key: 'readable' });
    } finally {
      db.exec('DROP TRIGGER IF EXISTS refuse_appends');
      db.close();
    }
  });

  test('a signing key file that cannot be read answers 503', async () => {
    const keyFile = fx.config.providers.jwt.signingKeyFile;
    await rename(keyFile, `${keyFile}.away`);
    try {
      const res = await request(fx.broker.app).get('/readyz');
      assert.equal(res.status, 503);
      assert.equal(res.body.checks.signing_key, 'unreadable');
      assert.match(res.body.error_description, /signing key/);
    } finally {
      await rename(`${keyFile}.away`, keyFile);
    }
    assert.equal((await request(fx.broker.app).get('/readyz')).status, 200);
  });

  test('/metrics is on the API app unless an admin port is set; the admin app always serves it', async () => {
    assert.equal(fx.config.server.adminPort, undefined);
    assert.equal((await request(fx.broker.app).get('/metrics')).status, 200);
    assert.equal((await request(fx.broker.adminApp).get('/metrics')).status, 200);
    assert.equal((await request(fx.broker.adminApp).post('/v1/exchange')).status, 404);
  });
});
