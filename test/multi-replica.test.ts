// Three `oidc-broker serve` processes on loopback sharing one PostgreSQL audit log, one Redis
// (replay and limits), one policy directory and one signing key file, driven at once
// (docs/configuration.md#replay, #limits, #providers-jwt; docs/audit.md).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { cliProcess, logLine, spawnCli, waitForOutput, type CliProcess } from './helpers/cli.js';
import { PostgresTestDatabase } from './helpers/audit-stores.js';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { localJwtPolicy } from './helpers/oidc.js';

const AUDIENCE = 'https://broker.multi-replica.test';
const AUDITOR_TOKEN = `auditor-${randomUUID()}`;
/** A Redis database no other test file uses; its broker keys are deleted at the end. */
const REDIS_URL = 'redis://127.0.0.1:6379/11';
const CLAIMS = { aud: AUDIENCE, repository: 'acme/api' };

const POLICIES: Record<string, string> = {
  'once.yaml': localJwtPolicy('https://once.example.com'),
  'load.yaml': localJwtPolicy('https://load.example.com'),
  'reuse.yaml': localJwtPolicy('https://reuse.example.com', 'allow_token_reuse: true\n'),
};

interface Replica {
  name: string;
  url: string;
  run: CliProcess;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  /** The `X-Request-Id` the broker answered with. */
  requestId: string | null;
  headers: Headers;
}

let dir: string;
let configPath: string;
let issuer: DevIssuer;
const db = new PostgresTestDatabase();
/** The replicas the tests drive, in order A, B, C (then the replacement). */
const replicas: Replica[] = [];
/** Every process started, for the clean-up. */
const started: Replica[] = [];
/** The subject the limit test uses up; the shutdown test looks for its summary record. */
const limitedSubject = `limited-${randomUUID()}`;

async function startReplica(name: string): Promise<Replica> {
  const run = spawnCli(['serve', '--config', configPath], { cwd: dir });
  const replica: Replica = { name, url: '', run };
  started.push(replica);
  replica.url = ((await waitForOutput(run, logLine('listening'))) as { url: string }).url;
  return replica;
}

async function exchange(replica: Replica, token: string, policyName: string): Promise<Answer> {
  const res = await fetch(`${replica.url}/v1/exchange`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ policy: policyName }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, requestId: res.headers.get('x-request-id'), headers: res.headers };
}

async function getJson(replica: Replica, pathAndQuery: string, auth = false): Promise<Answer> {
  const res = await fetch(`${replica.url}${pathAndQuery}`, auth ? { headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } } : {});
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, requestId: res.headers.get('x-request-id'), headers: res.headers };
}

/** Every audit record matching `query`, read as NDJSON (docs/audit.md). */
async function auditEvents(replica: Replica, query: string): Promise<Array<Record<string, unknown>>> {
  const res = await fetch(`${replica.url}/v1/audit/events?${query === '' ? '' : `${query}&`}limit=1000`, {
    headers: { authorization: `Bearer ${AUDITOR_TOKEN}`, accept: 'application/x-ndjson' },
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function verify(replica: Replica): Promise<{ ok: boolean; events: number; checkpoints: number }> {
  const res = await getJson(replica, '/v1/audit/verify', true);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as { ok: boolean; events: number; checkpoints: number };
}

function decodeSegment(token: string, index: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[index]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Runs `tasks` with at most `width` in flight; returns their results in order. */
async function bounded<T>(count: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, worker));
  return results;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls /readyz (bounded): the Redis store queues nothing before it is connected, so exchanges wait for a ready replica. */
async function untilReady(replica: Replica): Promise<void> {
  let status = 0;
  for (let i = 0; i < 300 && status !== 200; i++) {
    status = (await getJson(replica, '/readyz')).status;
    if (status !== 200) await sleep(100);
  }
  assert.equal(status, 200, `replica ${replica.name} is ready`);
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-replicas-'));
  issuer = await startDevIssuer({ port: 0, audience: AUDIENCE });
  await db.admin();
  await mkdir(path.join(dir, 'policies'));
  for (const [file, text] of Object.entries(POLICIES)) await writeFile(path.join(dir, 'policies', file), text);
  const keyFile = path.join(dir, 'signing-key.jwk');
  const generated = await cliProcess(['keys', 'generate', '--out', keyFile]);
  assert.equal(generated.code, 0, generated.stderr);
  configPath = path.join(dir, 'broker.yaml');
  await writeFile(
    configPath,
    `server: { host: 127.0.0.1, port: 0 }
issuers:
  - { name: local, issuer: "${issuer.url}", audiences: ["${AUDIENCE}"] }
policies: { dir: ./policies }
audit: { url: "${db.url()}", checkpoint_interval_seconds: 86400 }
replay: { url: "${REDIS_URL}" }
providers: { jwt: { signing_key_file: ./signing-key.jwk } }
auditors:
  - { name: secops, token_sha256: ${createHash('sha256').update(AUDITOR_TOKEN).digest('hex')} }
limits: { refused_per_ip: 1000000, exchanges_per_subject: 3, explains_per_subject: 1000000, auditor_failures_per_ip: 1000000 }
`,
  );
  // All three start together on an empty database: the tables are created under an advisory lock (docs/audit.md).
  replicas.push(...(await Promise.all([startReplica('A'), startReplica('B'), startReplica('C')])));
  for (const replica of replicas) await untilReady(replica);
}, { timeout: 120_000 });

after(async () => {
  for (const replica of started) {
    if (replica.run.child.exitCode === null && replica.run.child.signalCode === null) {
      replica.run.child.kill('SIGTERM');
      await replica.run.exited;
    }
  }
  await issuer?.close();
  await db.drop();
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    for (let i = 0; i < 10_000; i++) {
      const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', 'oidc-broker:*', 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = nextCursor;
      if (cursor === '0') break;
    }
  } finally {
    redis.disconnect();
  }
  await rm(dir, { recursive: true, force: true });
});

// The timeouts are a safety net against a hang (a log line that never comes), far above any run.
describe('three replicas on one PostgreSQL, one Redis, one policy directory and one key file', { timeout: 180_000 }, () => {
  test('a token exchanged on one replica is refused on another: 409 token_replayed, with and without jti', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const withJti = await issuer.mint({ ...CLAIMS, sub: `replay-${randomUUID()}` });
    const withoutJti = await issuer.mint({ ...CLAIMS, sub: `replay-${randomUUID()}` }, { omit: ['jti'] });
    assert.equal(decodeSegment(withoutJti, 1).jti, undefined);
    for (const token of [withJti, withoutJti]) {
      const first = await exchange(a, token, 'once');
      assert.equal(first.status, 200, JSON.stringify(first.body));
      for (const other of [b, c]) {
        const again = await exchange(other, token, 'once');
        assert.equal(again.status, 409, `${other.name}: ${JSON.stringify(again.body)}`);
        assert.equal(again.body.error, 'token_replayed');
      }
    }
    // The same token raced on all three at once, with and without jti: exactly one exchange wins
    // (three copies: the subject's limit, exchanges_per_subject: 3, counts the refused ones too).
    for (const omit of [[], ['jti']]) {
      const sub = `race-${randomUUID()}`;
      const raced = await issuer.mint({ ...CLAIMS, sub }, { omit });
      const answers = await Promise.all(replicas.map((r) => exchange(r, raced, 'once')));
      assert.deepEqual(
        answers.map((x) => x.status).sort(),
        [200, 409, 409],
      );
      const records = await auditEvents(a, `subject=${sub}`);
      assert.deepEqual(records.map((r) => r.error ?? r.decision).sort(), ['issued', 'token_replayed', 'token_replayed']);
    }
  });

  test('after concurrent load through all three, every issuance is audited and each replica verifies the whole chain', async () => {
    const before = await verify(replicas[0]!);
    assert.equal(before.ok, true);
    const total = 300;
    const tokens = await Promise.all(Array.from({ length: total }, (_, i) => issuer.mint({ ...CLAIMS, sub: `load-${i}-${randomUUID()}` })));
    let loading = true;
    // Auditors verify on every replica while the three write: each answer is a consistent, unbroken chain.
    const duringLoad = Promise.all(
      replicas.map(async (replica) => {
        const seen: Array<{ ok: boolean; events: number }> = [];
        for (let i = 0; i < 20 && loading; i++) seen.push(await verify(replica));
        return seen;
      }),
    );
    const answers = await bounded(total, 24, (i) => exchange(replicas[i % 3]!, tokens[i]!, 'load'));
    loading = false;
    for (const [i, seen] of (await duringLoad).entries()) {
      for (const [j, result] of seen.entries()) {
        assert.equal(result.ok, true, `replica ${replicas[i]!.name} during the load: ${JSON.stringify(result)}`);
        if (j > 0) assert.ok(result.events >= seen[j - 1]!.events, 'a later verification never sees fewer records');
      }
      assert.ok(seen.length > 0);
    }
    for (const answer of answers) assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const issued = new Set(answers.map((x) => x.body.issuance_id as string));
    assert.equal(issued.size, total);
    const requestIdOf = new Map(answers.map((x) => [x.body.issuance_id as string, x.requestId]));

    for (const replica of replicas) {
      const records = await auditEvents(replica, 'policy=load&decision=issued');
      assert.deepEqual(new Set(records.map((r) => r.id as string)), issued, `replica ${replica.name} reads every issuance`);
      for (const record of records) assert.equal(record.request_id, requestIdOf.get(record.id as string), 'the record is the request the client sent');
      const result = await verify(replica);
      assert.equal(result.ok, true, `replica ${replica.name}: ${JSON.stringify(result)}`);
      assert.equal(result.events, before.events + total, `replica ${replica.name} counts every record`);
      assert.equal((await auditEvents(replica, '')).length, result.events, `replica ${replica.name} lists as many records as it verifies`);
    }
  });

  test('the per-subject exchange limit holds across replicas: the 4th exchange of a subject is 429 on each', async () => {
    const sub = limitedSubject;
    for (const replica of replicas) {
      const ok = await exchange(replica, await issuer.mint({ ...CLAIMS, sub }), 'reuse');
      assert.equal(ok.status, 200, `${replica.name}: ${JSON.stringify(ok.body)}`);
    }
    for (const replica of replicas) {
      const limited = await exchange(replica, await issuer.mint({ ...CLAIMS, sub }), 'reuse');
      assert.equal(limited.status, 429, `${replica.name}: ${JSON.stringify(limited.body)}`);
      assert.equal(limited.body.error, 'rate_limited');
      assert.ok(Number(limited.headers.get('retry-after')) > 0, 'Retry-After gives the seconds until the window ends');
    }
    // docs/audit.md: with replicas sharing their limits, the first limited request is recorded once across them.
    const records = await auditEvents(replicas[0]!, `subject=${encodeURIComponent(sub)}&decision=denied`);
    assert.equal(records.filter((r) => r.error === 'rate_limited').length, 1, JSON.stringify(records.map((r) => r.reason)));
  });

  test('the per-subject limit holds for exchanges racing on all three replicas: 3 answered 200, the rest 429, one record of the first refusal', async () => {
    const sub = `raced-${randomUUID()}`;
    const tokens = await Promise.all(Array.from({ length: 12 }, () => issuer.mint({ ...CLAIMS, sub })));
    const answers = await Promise.all(tokens.map((token, i) => exchange(replicas[i % 3]!, token, 'reuse')));
    const statuses = answers.map((x) => x.status);
    assert.equal(statuses.filter((x) => x === 200).length, 3, statuses.join(' '));
    assert.equal(statuses.filter((x) => x === 429).length, 9, statuses.join(' '));
    const records = await auditEvents(replicas[0]!, `subject=${encodeURIComponent(sub)}`);
    assert.equal(records.filter((r) => r.decision === 'issued').length, 3);
    assert.equal(records.filter((r) => r.error === 'rate_limited').length, 1, JSON.stringify(records.map((r) => [r.decision, r.reason])));
  });

  test('a policy file written into, then changed in, the shared directory reaches every replica', async () => {
    const hashes = async () => Promise.all(replicas.map(async (r) => ((await getJson(r, '/readyz')).body.policies as { sha256: string }).sha256));
    /** Polls every replica's /readyz (bounded) until all serve one set other than `old`. */
    const untilAllMoveFrom = async (old: string): Promise<string> => {
      let now = await hashes();
      for (let i = 0; i < 300 && !now.every((h) => h !== old && h === now[0]); i++) {
        await sleep(100);
        now = await hashes();
      }
      assert.ok(
        now.every((h) => h !== old && h === now[0]),
        `every replica serves one new set: ${now.join(' ')}`,
      );
      return now[0]!;
    };
    const start = await hashes();
    assert.equal(new Set(start).size, 1, 'the replicas start on one set');
    for (const [step, audience] of ['https://late.example.com', 'https://changed.example.com'].entries()) {
      const previous = step === 0 ? start[0]! : await hashes().then((h) => h[0]!);
      await writeFile(path.join(dir, 'policies', 'late.yaml'), localJwtPolicy(audience));
      await untilAllMoveFrom(previous);
      for (const replica of replicas) {
        const answer = await exchange(replica, await issuer.mint({ ...CLAIMS, sub: `late-${randomUUID()}` }), 'late');
        assert.equal(answer.status, 200, `${replica.name}: ${JSON.stringify(answer.body)}`);
        const token = (answer.body.credentials as { access_token: string }).access_token;
        assert.equal(decodeSegment(token, 1).aud, audience, `${replica.name} issues under the policy as written now`);
      }
    }
  });

  test('a policy file that does not compile leaves every replica on the set it serves; removing it, and a policy, reaches every replica', async () => {
    type Status = { sha256: string; last_reload: { ok: boolean; outcome: string } | null };
    const statuses = async () => Promise.all(replicas.map(async (r) => (await getJson(r, '/readyz')).body.policies as Status));
    const serving = (await statuses())[0]!.sha256;
    await writeFile(path.join(dir, 'policies', 'broken.yaml'), 'issuer: local\nclaims:\n  repository: [\n');
    let now = await statuses();
    for (let i = 0; i < 300 && !now.every((x) => x.last_reload?.outcome === 'failure'); i++) {
      await sleep(100);
      now = await statuses();
    }
    for (const [i, x] of now.entries()) {
      assert.equal(x.last_reload?.outcome, 'failure', `${replicas[i]!.name}: ${JSON.stringify(x)}`);
      assert.equal(x.sha256, serving, `${replicas[i]!.name} keeps serving the previous set`);
    }
    const still = await exchange(replicas[2]!, await issuer.mint({ ...CLAIMS, sub: `broken-${randomUUID()}` }), 'late');
    assert.equal(still.status, 200, JSON.stringify(still.body));

    await rm(path.join(dir, 'policies', 'broken.yaml'));
    await rm(path.join(dir, 'policies', 'late.yaml'));
    now = await statuses();
    for (let i = 0; i < 300 && !now.every((x) => x.sha256 !== serving && x.sha256 === now[0]!.sha256 && x.last_reload?.ok === true); i++) {
      await sleep(100);
      now = await statuses();
    }
    assert.ok(
      now.every((x) => x.sha256 !== serving && x.sha256 === now[0]!.sha256),
      JSON.stringify(now),
    );
    for (const replica of replicas) {
      const gone = await exchange(replica, await issuer.mint({ ...CLAIMS, sub: `gone-${randomUUID()}` }), 'late');
      assert.equal(gone.status, 404, `${replica.name}: ${JSON.stringify(gone.body)}`);
      assert.equal(gone.body.error, 'unknown_policy');
    }
  });

  test('a key rotation and SIGHUP reach every replica: both kids in each JWKS, new tokens carry the new kid', async () => {
    const jwksKids = async (r: Replica) => ((await getJson(r, '/.well-known/jwks.json')).body.keys as Array<{ kid: string }>).map((k) => k.kid);
    const oldKids = await jwksKids(replicas[0]!);
    assert.equal(oldKids.length, 1);
    // A short-lived fourth replica writes one record and, at SIGTERM, a checkpoint signed with the key about to be rotated out.
    const brief = await startReplica('brief');
    assert.equal((await exchange(brief, await issuer.mint({ ...CLAIMS, sub: `brief-${randomUUID()}` }), 'once')).status, 200);
    brief.run.child.kill('SIGTERM');
    assert.equal(await brief.run.exited, 0);
    assert.equal(logLine('audit checkpoint')(brief.run.stdout())?.kid, oldKids[0], 'the old key signed the checkpoint');
    const rotated = await cliProcess(['keys', 'rotate', '--config', configPath], { cwd: dir });
    assert.equal(rotated.code, 0, rotated.stderr);
    const keySet = JSON.parse(await readFile(path.join(dir, 'signing-key.jwk'), 'utf8')) as { keys: Array<{ kid: string; state: string }> };
    const newKid = keySet.keys.find((k) => k.state === 'active')!.kid;
    assert.notEqual(newKid, oldKids[0]);
    for (const replica of replicas) replica.run.child.kill('SIGHUP');
    // A reload logs only when the file changed (docs/configuration.md#rotating-the-signing-key): the first such line is this rotation, by SIGHUP or by the 30 s poll.
    for (const replica of replicas) {
      const reloaded = await waitForOutput(replica.run, logLine('signing keys reloaded'));
      assert.equal(reloaded.active_kid, newKid, `${replica.name} reloaded the rotated file`);
    }
    for (const replica of replicas) {
      const kids = await jwksKids(replica);
      assert.deepEqual(kids.sort(), [oldKids[0]!, newKid].sort(), `${replica.name} publishes both keys`);
    }
    for (const [i, replica] of replicas.entries()) {
      const answer = await exchange(replica, await issuer.mint({ ...CLAIMS, sub: `rotated-${randomUUID()}` }), 'once');
      assert.equal(answer.status, 200, `${replica.name}: ${JSON.stringify(answer.body)}`);
      const token = (answer.body.credentials as { access_token: string }).access_token;
      assert.equal(decodeSegment(token, 0).kid, newKid, `${replica.name} signs with the new key`);
      // Another replica's JWKS verifies it.
      const other = replicas[(i + 1) % replicas.length]!;
      const jwks = createLocalJWKSet((await getJson(other, '/.well-known/jwks.json')).body as unknown as JSONWebKeySet);
      const { payload } = await jwtVerify(token, jwks, { audience: 'https://once.example.com' });
      assert.equal(payload.jti, answer.body.issuance_id);
    }
  });

  test('a replica killed with SIGKILL mid-load loses no record of a credential a client received', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const total = 240;
    const tokens = await Promise.all(Array.from({ length: total }, (_, i) => issuer.mint({ ...CLAIMS, sub: `kill-${i}-${randomUUID()}` })));
    let answered = 0;
    let broken = 0;
    const answers = await bounded(total, 24, async (i): Promise<Answer | null> => {
      const target = replicas[i % 3]!;
      if (target === c && c.run.child.signalCode !== null) return null;
      try {
        const answer = await exchange(target, tokens[i]!, 'load');
        answered += 1;
        // Once a third of the load is answered, the third replica dies with requests in flight.
        if (answered === Math.floor(total / 3)) c.run.child.kill('SIGKILL');
        return answer;
      } catch {
        // The connection to the killed replica broke: the client received nothing.
        assert.equal(target, c);
        broken += 1;
        return null;
      }
    });
    assert.equal(await c.run.exited, null);
    assert.equal(c.run.child.signalCode, 'SIGKILL');
    const received = answers.filter((x): x is Answer => x !== null && x.status === 200).map((x) => x.body.issuance_id as string);
    assert.ok(received.length > 0);
    assert.ok(broken > 0, 'requests to the killed replica were in flight when it died');
    const survivorAnswers = answers.filter((x, i) => i % 3 !== 2 && x !== null);
    for (const x of survivorAnswers) assert.equal(x!.status, 200, JSON.stringify(x!.body));
    for (const survivor of [a, b]) {
      const ids = new Set((await auditEvents(survivor, 'policy=load&decision=issued')).map((r) => r.id as string));
      for (const id of received) assert.ok(ids.has(id), `${survivor.name}: issuance ${id} is in the audit log`);
      const result = await verify(survivor);
      assert.equal(result.ok, true, `${survivor.name}: ${JSON.stringify(result)}`);
    }
  });

  test('replicas stopped with SIGTERM write their summaries and checkpoints with the new key; a replacement refuses a token they exchanged and verifies the chain', async () => {
    const [a, b] = replicas as [Replica, Replica, Replica];
    const exchangedBefore = await issuer.mint({ ...CLAIMS, sub: `restart-${randomUUID()}` });
    assert.equal((await exchange(a, exchangedBefore, 'once')).status, 200);
    const checkpointKids: unknown[] = [];
    // A first: a checkpoint vouches only for a record its replica wrote after the newest stored checkpoint (docs/audit.md),
    // and B writes its summary at shutdown, after A's last record.
    for (const stopping of [a, b]) {
      stopping.run.child.kill('SIGTERM');
      assert.equal(await stopping.run.exited, 0);
      assert.equal(logLine('audit checkpoint refused')(stopping.run.stdout()), undefined, `${stopping.name}: ${stopping.run.stdout()}`);
      checkpointKids.push(logLine('audit checkpoint')(stopping.run.stdout())?.kid);
    }
    const activeKid = (JSON.parse(await readFile(path.join(dir, 'signing-key.jwk'), 'utf8')) as { keys: Array<{ kid: string; state: string }> }).keys.find((k) => k.state === 'active')!.kid;
    assert.deepEqual(checkpointKids, [activeKid, activeKid], 'each stopped replica signed its last checkpoint with the rotated key');

    // A replacement replica on the same files reads everything the others wrote.
    const replacement = await startReplica('D');
    replicas.push(replacement);
    await untilReady(replacement);
    // docs/configuration.md#replay: Redis is shared by every broker process and survives a restart.
    const replayed = await exchange(replacement, exchangedBefore, 'once');
    assert.equal(replayed.status, 409, JSON.stringify(replayed.body));
    assert.equal(replayed.body.error, 'token_replayed');
    // docs/audit.md: each replica writes a summary of the requests it dropped itself, at the end of the window or at shutdown
    // (the one SIGKILLed could not: it answered only a 429, no credential).
    const records = await auditEvents(replacement, `subject=${encodeURIComponent(limitedSubject)}&decision=denied`);
    const summaries = records.filter((r) => r.error === 'rate_limited' && String(r.reason).includes(' dropped from '));
    // B's, written at its SIGTERM (and C's too, had the one-minute window ended before C was killed).
    assert.ok(summaries.length >= 1, JSON.stringify(records.map((r) => r.reason)));
    for (const summary of summaries) assert.match(String(summary.reason), /^exchanges_per_subject: 1 dropped from /);
    const result = await verify(replacement);
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.ok(result.checkpoints >= 3, `the checkpoints of both keys verify: ${JSON.stringify(result)}`);

    // Retiring the old key takes it out of the JWKS, not out of the file: the checkpoint it signed still verifies.
    const oldKid = logLine('audit checkpoint')(started.find((r) => r.name === 'brief')!.run.stdout())?.kid as string;
    const retired = await cliProcess(['keys', 'retire', '--config', configPath, '--', oldKid], { cwd: dir });
    assert.equal(retired.code, 0, retired.stderr);
    replacement.run.child.kill('SIGHUP');
    await waitForOutput(replacement.run, logLine('signing keys reloaded'));
    const jwks = (await getJson(replacement, '/.well-known/jwks.json')).body.keys as Array<{ kid: string }>;
    assert.deepEqual(
      jwks.map((k) => k.kid),
      [activeKid],
    );
    const afterRetire = await verify(replacement);
    assert.equal(afterRetire.ok, true, JSON.stringify(afterRetire));
    assert.equal(afterRetire.checkpoints, result.checkpoints);
  });
});
