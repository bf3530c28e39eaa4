/**
 * Requests Node's HTTP parser refuses before express runs (headers over the
 * 16 KiB cap): answered with the documented JSON error and an X-Request-Id,
 * recorded like every other refusal, and counted against `refused_per_ip` so a
 * flood of them is summarised instead of recorded one by one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import request from 'supertest';
import type { AuditRecord } from '../src/audit/types.js';
import { listen, type RunningServer } from '../src/http/server.js';
import { AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy } from './helpers/oidc.js';

const REFUSED_PER_IP = 2;

let fx: BrokerFixture;
let running: RunningServer;

before(async () => {
  fx = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') }, limits: { refused_per_ip: REFUSED_PER_IP } });
  running = await listen(fx.broker, { host: '127.0.0.1', port: 0, logger: fx.broker.deps.logger });
});

after(async () => {
  // shutdown closes the broker, so the fixture's own close would close it twice.
  await running?.shutdown();
  await fx?.issuer.close();
  await rm(fx.dir, { recursive: true, force: true });
});

/** Sends `GET /v1/exchange` with 20 KiB of headers on a raw socket; resolves with what came back before the server closed it. */
function oversizedHeaders(): Promise<{ status: number; headers: Map<string, string>; body: string }> {
  const { port } = new URL(running.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let raw = '';
    socket.on('data', (chunk: Buffer) => (raw += chunk.toString('utf8')));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = raw.split('\r\n\r\n');
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body });
    });
    socket.write(`GET /v1/exchange HTTP/1.1\r\nHost: 127.0.0.1\r\n`);
    for (let i = 0; i < 20; i++) socket.write(`X-Padding-${i}: ${'x'.repeat(1024)}\r\n`);
    socket.write('\r\n');
  });
}

async function auditEvents(): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return res.body.events as AuditRecord[];
}

describe('headers over the cap', () => {
  test('413 request_too_large as JSON with an X-Request-Id, and one denied record with that request id', async () => {
    const res = await oversizedHeaders();
    assert.equal(res.status, 413);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const requestId = res.headers.get('x-request-id');
    assert.ok(requestId, 'an X-Request-Id');
    assert.deepEqual(JSON.parse(res.body), { error: 'request_too_large', error_description: 'The request headers are larger than 16 KiB.', request_id: requestId });
    const records = (await auditEvents()).filter((e) => e.request_id === requestId);
    assert.equal(records.length, 1, 'exactly one record');
    assert.equal(records[0]!.decision, 'denied');
    assert.equal(records[0]!.error, 'request_too_large');
    assert.equal(records[0]!.reason, 'headers_too_large: The request headers are larger than 16 KiB.');
    assert.equal(records[0]!.client_ip, '127.0.0.1');
    assert.ok(fx.logLines().some((line) => line.includes(requestId) && line.includes('request_too_large')), 'logged with its request id');
  });

  test('a flood counts against refused_per_ip: past it, 429 and one record for the window, not one per request', async () => {
    const before = (await auditEvents()).length;
    // The first test's request already counted once; this fills the window.
    for (let i = 1; i < REFUSED_PER_IP; i++) assert.equal((await oversizedHeaders()).status, 413);
    const limited = await Promise.all(Array.from({ length: 5 }, () => oversizedHeaders()));
    for (const res of limited) {
      assert.equal(res.status, 429);
      assert.equal(JSON.parse(res.body).error, 'rate_limited');
      assert.ok(Number(res.headers.get('retry-after')) > 0, 'says when to retry');
      assert.ok(res.headers.get('x-request-id'));
    }
    const events = await auditEvents();
    assert.equal(events.length - before, REFUSED_PER_IP, 'the 413s of this test and the first 429 of the window only');
    assert.equal(events.filter((e) => e.error === 'rate_limited').length, 1);
  });
});

describe('a client that goes on sending after its request was refused', () => {
  let roomy: BrokerFixture;
  let roomyServer: RunningServer;

  before(async () => {
    // A limit far above what these tests send, so every refusal would be recorded on its own.
    roomy = await startBrokerFixture({ policies: { 'deploy.yaml': localJwtPolicy('https://deploy.example.com') }, limits: { refused_per_ip: 10_000 } });
    roomyServer = await listen(roomy.broker, { host: '127.0.0.1', port: 0, logger: roomy.broker.deps.logger });
  });

  after(async () => {
    await roomyServer?.shutdown();
    await roomy?.issuer.close();
    if (roomy) await rm(roomy.dir, { recursive: true, force: true });
  });

  /** Writes `bytes` in one go and resolves with the status line's code once the server has closed the connection. */
  function sendRaw(bytes: Buffer): Promise<number> {
    const { port } = new URL(roomyServer.url);
    return new Promise((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1');
      let raw = '';
      socket.on('data', (chunk: Buffer) => (raw += chunk.toString('latin1')));
      // The server may close while the rest is still being written.
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(Number(raw.split(' ')[1])));
      socket.write(bytes);
    });
  }

  async function recordsWith(reason: string): Promise<AuditRecord[]> {
    const res = await request(roomy.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
    assert.equal(res.status, 200);
    return (res.body.events as AuditRecord[]).filter((e) => e.reason?.startsWith(`${reason}: `));
  }

  test('512 KiB of headers: one 413, one record (Node reports the overflow again for every later chunk)', async () => {
    const headers = Buffer.from(`GET /v1/exchange HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(512 * 1024)}\r\n\r\n`);
    assert.equal(await sendRaw(headers), 413);
    assert.equal((await recordsWith('headers_too_large')).length, 1);
  });

  test('malformed HTTP followed by 1 MiB: one 400, one record', async () => {
    assert.equal(await sendRaw(Buffer.concat([Buffer.from('GARBAGE\x01 / HTTP/1.1\r\n'), Buffer.alloc(1024 * 1024, 0x61)])), 400);
    assert.equal((await recordsWith('malformed_http')).length, 1);
  });
});
