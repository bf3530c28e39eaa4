/**
 * The broker's own exchange deadline (docs/configuration.md,
 * `server.exchange_timeout_seconds`): a provider that accepts the call and
 * never answers ends in 504 `exchange_timeout` and one `error` record, with the
 * provider left on its own defaults; a credential that arrives after the
 * deadline is discarded, never delivered, and gets no second record.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { openAuditStore } from '../src/audit/open.js';
import type { AuditRecord } from '../src/audit/types.js';
import { listen, type RunningServer } from '../src/http/server.js';
import { startGcpEmulator, startStsEmulator, type GcpEmulator, type StsEmulator } from './emulators/index.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';

const SERVICE_ACCOUNT = 'deployer@emulator-project.iam.gserviceaccount.com';
const ROLE = 'arn:aws:iam::123456789012:role/deploy-api';
const BROKER_KEY = { accessKeyId: 'AKIAOIDCBROKERDEADLN', secretAccessKey: 'broker/secret/key/for/deadline/tests/only/0' };
const CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' };
/** What the provider SDKs and ADC read from the environment; the file sets its own and restores the rest. */
const ENV = ['GCE_METADATA_HOST', 'GCE_METADATA_IP', 'METADATA_SERVER_DETECTION', 'GOOGLE_APPLICATION_CREDENTIALS', 'GOOGLE_CLOUD_PROJECT', 'GCLOUD_PROJECT', 'CLOUDSDK_CONFIG', 'HOME', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'] as const;

let gcp: GcpEmulator;
let sts: StsEmulator;
let fx: BrokerFixture;
let home: string;
let restoreEnv: () => void;

before(async () => {
  const saved = ENV.map((name) => [name, process.env[name]] as const);
  restoreEnv = () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  home = await mkdtemp(path.join(tmpdir(), 'lifecycle-deadline-home-'));
  gcp = await startGcpEmulator({ serviceAccounts: [SERVICE_ACCOUNT] });
  sts = await startStsEmulator({ ...BROKER_KEY, region: 'eu-west-1' });
  for (const name of ENV) delete process.env[name];
  process.env['HOME'] = home;
  process.env['CLOUDSDK_CONFIG'] = home;
  process.env['GCE_METADATA_HOST'] = gcp.metadataHost;
  process.env['AWS_ACCESS_KEY_ID'] = BROKER_KEY.accessKeyId;
  process.env['AWS_SECRET_ACCESS_KEY'] = BROKER_KEY.secretAccessKey;
  fx = await startBrokerFixture({
    policies: {
      'gcp-deploy.yaml': `issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: gcp\n  service_account: ${SERVICE_ACCOUNT}\n`,
      'aws-deploy.yaml': `issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: ${ROLE}\n`,
    },
    // Both providers on their default timeout_seconds (25 s): only the broker's deadline is short.
    providerConfig: `  gcp:\n    endpoint: ${gcp.iamUrl}\n  aws:\n    region: eu-west-1\n    endpoint: ${sts.url}\n`,
    exchangeTimeoutSeconds: 2,
  });
});

after(async () => {
  await fx?.close();
  await gcp?.close();
  await sts?.close();
  restoreEnv();
  await rm(home, { recursive: true, force: true });
});

async function recordsOf(requestId: string): Promise<AuditRecord[]> {
  const res = await request(fx.broker.app).get('/v1/audit/events').set('Authorization', `Bearer ${AUDITOR_TOKEN}`).query({ limit: 1000 });
  assert.equal(res.status, 200);
  return (res.body.events as AuditRecord[]).filter((e) => e.request_id === requestId);
}

/** Resolves with `check()`'s first defined value, polled while the broker and the emulators work in the background. */
async function eventually<T>(check: () => T | undefined): Promise<T> {
  for (;;) {
    const found = check();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function exchangeCall(policy: string): Promise<request.Response> {
  const token = await fx.issuer.mint({ aud: AUDIENCE, ...CLAIMS });
  return request(fx.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy });
}

/** The 504 and its one `error` record, whose reason says the provider was still running and that nothing issued later is delivered. */
async function assertTimedOut(res: request.Response, policy: string, provider: string): Promise<AuditRecord> {
  assert.equal(res.status, 504, JSON.stringify(res.body));
  assert.equal(res.body.error, 'exchange_timeout');
  assert.equal(res.body.request_id, res.headers['x-request-id']);
  assert.equal(res.body.credentials, undefined);
  assert.match(res.body.error_description as string, /deadline \(provider step\); anything issued after it is discarded/);
  const records = await recordsOf(String(res.headers['x-request-id']));
  assert.equal(records.length, 1, 'exactly one record');
  const record = records[0]!;
  assert.equal(record.decision, 'error');
  assert.equal(record.error, 'exchange_timeout');
  assert.equal(record.policy, policy);
  assert.equal(record.provider, provider);
  assert.ok(record.reason?.startsWith('provider_timeout: '), String(record.reason));
  assert.match(record.reason ?? '', /discarded/);
  assert.equal(record.credential_id, null);
  return record;
}

describe('the exchange deadline', () => {
  test('GCP IAM that accepts the call and never answers: 504 exchange_timeout within the broker deadline, one error record', async () => {
    gcp.setFault({ kind: 'hang' });
    try {
      const res = await exchangeCall('gcp-deploy');
      await assertTimedOut(res, 'gcp-deploy', 'gcp');
      // The SDK call goes on after the answer: it reaches IAM, which holds it.
      await eventually(() => gcp.refusals().find((r) => r.status === 'hang'));
    } finally {
      gcp.setFault({ kind: 'none' });
    }
  });

  test('an STS call still running at the deadline is aborted (no retry mints another credential): nothing answered, one record', async () => {
    let answerLate!: () => void;
    const seenBefore = sts.requests.length;
    sts.setFault({ kind: 'delay', until: new Promise<void>((resolve) => (answerLate = resolve)), times: 1 });
    try {
      const res = await exchangeCall('aws-deploy');
      const record = await assertTimedOut(res, 'aws-deploy', 'aws');
      // STS answers only now; the broker's deadline already closed the SDK's connection (before the 504 was
      // even recorded), so the answer reaches nobody. Left to the SDK, it would still be waiting and take it.
      answerLate();
      const call = await eventually(() => (sts.requests[seenBefore]?.status === undefined ? undefined : sts.requests[seenBefore]));
      assert.equal(call.abandoned, true, 'the call was aborted before STS answered');
      assert.equal(sts.requests.length, seenBefore + 1, 'one call, no retry');
      assert.deepEqual(await recordsOf(String(res.headers['x-request-id'])), [record], 'still exactly one record');
    } finally {
      answerLate();
    }
  });
});

describe('many exchanges in flight', () => {
  test('each listens for shutdown on one shared signal without a MaxListenersExceededWarning', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    let release!: () => void;
    sts.setFault({ kind: 'delay', until: new Promise<void>((resolve) => (release = resolve)), times: 20 });
    const seenBefore = sts.requests.length;
    try {
      const calls = Array.from({ length: 20 }, () => exchangeCall('aws-deploy'));
      // All twenty wait on STS at once, each with its listener registered.
      await eventually(() => (sts.requests.length >= seenBefore + 20 ? true : undefined));
      release();
      for (const res of await Promise.all(calls)) assert.equal(res.status, 200, JSON.stringify(res.body));
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message), []);
    } finally {
      process.off('warning', onWarning);
      sts.setFault({ kind: 'none' });
    }
  });
});

describe('shutdown', () => {
  test('an exchange still deciding when shutdown stops waiting is recorded as abandoned before the store closes; its STS call is aborted', async () => {
    // A broker of its own: once abandoned, its decisions stay abandoned. On the default deadline (30 s), so only shutdown ends the call.
    const own = await startBrokerFixture({
      policies: { 'aws-deploy.yaml': `issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: ${ROLE}\n` },
      providerConfig: `  aws:\n    region: eu-west-1\n    endpoint: ${sts.url}\n`,
    });
    let answerLate!: () => void;
    sts.setFault({ kind: 'delay', until: new Promise<void>((resolve) => (answerLate = resolve)), times: 1 });
    try {
      const calls = sts.requests.length;
      const token = await own.issuer.mint({ aud: AUDIENCE, ...CLAIMS });
      const answered = request(own.broker.app).post('/v1/exchange').set('Authorization', `Bearer ${token}`).send({ policy: 'aws-deploy' }).then((res) => res);
      await eventually(() => sts.requests[calls]);
      assert.equal(own.broker.deps.decisions.count(), 1);
      // Shutdown that waits no longer: what is in flight is abandoned, and recorded.
      await own.broker.deps.decisions.drain(0);
      const res = await answered;
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error, 'not_ready');
      const records = (await own.broker.deps.audit.query({ limit: 1000 })).events.filter((e) => e.request_id === res.headers['x-request-id']);
      assert.equal(records.length, 1);
      assert.equal(records[0]!.decision, 'error');
      assert.match(records[0]!.reason ?? '', /^abandoned_at_shutdown: /);
      // Abandoning the exchange reaches the SDK call: its connection is closed before STS answers.
      answerLate();
      const call = await eventually(() => (sts.requests[calls]!.status === undefined ? undefined : sts.requests[calls]!));
      assert.equal(call.abandoned, true, 'the call was aborted before STS answered');
    } finally {
      answerLate();
      await own.close();
    }
  });

  test('the whole shutdown keeps to one bound: the decisions in flight get only what the HTTP wait left of it, and the one still deciding is recorded as abandoned', async () => {
    // The exchange deadline (30 s) is far past the shutdown's bound (3 s): only shutdown ends the call.
    const graceMs = 3_000;
    const own = await startBrokerFixture({
      policies: { 'aws-deploy.yaml': `issuer: local\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: ${ROLE}\n` },
      providerConfig: `  aws:\n    region: eu-west-1\n    endpoint: ${sts.url}\n`,
      exchangeTimeoutSeconds: 30,
    });
    let answerLate!: () => void;
    sts.setFault({ kind: 'delay', until: new Promise<void>((resolve) => (answerLate = resolve)), times: 1 });
    let running: RunningServer | undefined;
    try {
      running = await listen(own.broker, { host: '127.0.0.1', port: 0, logger: own.broker.deps.logger, graceMs });
      const calls = sts.requests.length;
      const token = await own.issuer.mint({ aud: AUDIENCE, ...CLAIMS });
      // Over the listener, so the HTTP wait holds for this request until the bound.
      const cut = new Promise<Error>((resolve, reject) => {
        const req = http.request(`${running!.url}/v1/exchange`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
        req.on('response', (res) => reject(new Error(`answered ${res.statusCode}`)));
        req.on('error', resolve);
        req.end(JSON.stringify({ policy: 'aws-deploy' }));
      });
      await eventually(() => sts.requests[calls]);
      const startedAt = performance.now();
      await running.shutdown();
      const tookMs = performance.now() - startedAt;
      // An upper bound only, and a generous one: the records and the stores' close fit in half the bound again.
      assert.ok(tookMs < 1.5 * graceMs, `shutdown took ${Math.round(tookMs)} ms, past its ${graceMs} ms bound`);
      await cut;
      const store = await openAuditStore(`sqlite:${path.join(own.dir, 'data', 'audit.db')}`);
      try {
        const records = (await store.query({ limit: 1000 })).events.filter((e) => e.policy === 'aws-deploy');
        assert.equal(records.length, 1);
        assert.equal(records[0]!.decision, 'error');
        assert.match(records[0]!.reason ?? '', /^abandoned_at_shutdown: /);
      } finally {
        await store.close();
      }
    } finally {
      answerLate();
      // Shutdown closes the broker (once, however often it is called), so the fixture's own close would close it twice.
      if (running) await running.shutdown();
      else await own.broker.close();
      await own.issuer.close();
      await rm(own.dir, { recursive: true, force: true });
    }
  });
});
