/**
 * What shutdown logs when part of it fails (docs/architecture.md, "Shutdown"):
 * the failure's whole cause chain, down to the driver's code and message.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { AUDIENCE, startBrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

describe('shutdown', () => {
  test('a final audit checkpoint the database refuses is logged with its cause chain, and the store still closes', async () => {
    const fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') } });
    const db = new Database(path.join(fx.dir, 'data', 'audit.db'));
    db.exec("CREATE TRIGGER refuse_checkpoints BEFORE INSERT ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    db.close();
    const token = await fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api' });
    const res = await request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    // Shutdown checkpoints the record just written: the trigger refuses it.
    await fx.close();
    const line = fx.logLines().map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'final audit checkpoint failed');
    assert.ok(line, fx.logLines().join('\n'));
    const codes: unknown[] = [];
    const messages: unknown[] = [];
    for (let cause = line.cause as Record<string, unknown> | undefined; cause !== undefined; cause = cause.cause as Record<string, unknown> | undefined) {
      codes.push(cause.code);
      messages.push(cause.message);
    }
    assert.ok(codes.includes('SQLITE_CONSTRAINT_TRIGGER'), JSON.stringify(line));
    assert.ok(messages.includes('refused by the test'), JSON.stringify(line));
  });
});
