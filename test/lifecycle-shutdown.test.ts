/**
 * What shutdown logs when part of it fails (docs/architecture.md, "Shutdown"):
 * the failure's whole cause chain, down to the driver's code and message; and
 * a token left spent by an exchange it abandoned is never left so silently.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { AUDIENCE, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';
import { startRedisProxy, type RedisProxy } from './helpers/redis-proxy.js';

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

/** What the replay store's keys begin with (src/replay/redis-store.ts): the proxy below acts on those commands only. */
const REPLAY_KEY_PREFIX = 'oidc-broker:replay:';

/**
 * Steers the replay store's commands through the proxy: held until
 * `passHeldThenDrop()` passes them on and drops every later one (a Redis that
 * stops answering). Every other command (the rate limits share the URL) goes
 * through.
 */
function holdReplayCommands(proxy: RedisProxy) {
  const held: { forward: () => void; client: net.Socket }[] = [];
  proxy.route((chunk, forward, client) => {
    if (!chunk.includes(REPLAY_KEY_PREFIX)) forward();
    else held.push({ forward, client });
  });
  return {
    holding: () => held.length > 0,
    /** Passes the held commands on and drops later ones; resolves once the connection they came on closes. */
    passHeldThenDrop(): Promise<void> {
      proxy.route((chunk, forward) => {
        if (!chunk.includes(REPLAY_KEY_PREFIX)) forward();
      });
      const client = held[0]!.client;
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      for (const { forward } of held.splice(0)) forward();
      return closed;
    },
  };
}

/** Polls until `probe` holds; bounded by the test runner's timeout, not by a threshold of ours. */
async function eventually(probe: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await probe())) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe('an exchange abandoned at shutdown while its replay claim is on its way', () => {
  test('a claim that lands late and cannot be released either is not silent: a warning names the request and the cause', async () => {
    const proxy = await startRedisProxy();
    let fx: BrokerFixture | undefined;
    try {
      fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') }, extraConfig: `replay:\n  url: "${proxy.url}"\n` });
      const broker = fx.broker;
      // The Redis store queues nothing before it is connected.
      await eventually(async () => (await request(broker.app).get('/readyz')).status === 200);
      const token = await fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api' });
      const replay = holdReplayCommands(proxy);
      const answered = request(broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' }).then((res) => res);
      await eventually(replay.holding);
      // Shutdown that waits no longer: the exchange ends as abandoned while its claim is still on its way.
      const drained = broker.deps.decisions.drain(0);
      await eventually(() => broker.deps.decisions.abandoned.aborted);
      // The claim lands now, after the end; releasing it gets no answer, and the store drops the connection it timed out on.
      await replay.passHeldThenDrop();
      await drained;
      const res = await answered;
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error, 'not_ready');
      const line = fx
        .logLines()
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.msg === 'replay claim not released: the token stays spent though nothing was issued');
      assert.ok(line, fx.logLines().join('\n'));
      assert.equal(line.level, 'warn');
      assert.equal(line.request_id, res.headers['x-request-id']);
      assert.equal((line.cause as { reason?: string } | undefined)?.reason, 'replay_store_unreachable', JSON.stringify(line));
    } finally {
      await fx?.close();
      await proxy.close();
    }
  });
});
