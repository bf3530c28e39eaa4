// oidc-broker audit query | verify --url: the CLI against a real broker on loopback, records made through real exchanges and appended through its store; compared with the database mode on the same log.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AuditVerification } from '../src/audit/checkpoints.js';
import { newAuditId } from '../src/audit/record.js';
import type { AuditEntry, AuditRecord } from '../src/audit/types.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { cli, cliProcess } from './helpers/cli.js';
import { localJwtPolicy } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'watch-dispatch.yaml': 'issuer: local\neffect: deny\nmode: audit\nclaims:\n  event_name: workflow_dispatch\n',
};
/** Old records, more than one page of the API (1000), from 2025. */
const BULK = 1150;
const T0 = Date.UTC(2025, 0, 1);

let fx: BrokerFixture;
let server: http.Server;
let url: string;
let config: string;
/** The records the exchanges of `before` made (time: now). */
let recent: number;

/** The auditor token in the environment, as an auditor's shell would hold it. */
const WITH_TOKEN = { env: { OIDC_BROKER_AUDITOR_TOKEN: AUDITOR_TOKEN } };

function entry(i: number): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(T0 + i * 60_000).toISOString(),
    decision: i % 4 === 0 ? 'denied' : 'issued',
    error: i % 4 === 0 ? 'access_denied' : null,
    reason: i % 4 === 0 ? 'no_policy_matched: no policy matched' : null,
    request_id: newAuditId(),
    issuer: 'local',
    subject: `repo:acme/svc-${i % 3}:ref:refs/heads/main`,
    audience: [AUDIENCE],
    jti: null,
    token_sha256: null,
    claims: { repository: `acme/svc-${i % 3}`, run_number: i },
    unverified: null,
    policy: 'deploy',
    policy_sha256: null,
    provider: 'jwt',
    target: 'https://deploy.example.com',
    credential_id: `cred-${i}`,
    expires_at: null,
    duration_seconds: 600,
    client_ip: null,
    user_agent: i === 3 ? '=HYPERLINK("http://evil.example")' : null,
    audit_matches: [],
  };
}

before(async () => {
  fx = await startBrokerFixture({ policies: POLICIES });
  server = http.createServer(fx.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  config = path.join(fx.dir, 'broker.yaml');

  const appends: Promise<AuditRecord>[] = [];
  for (let i = 0; i < BULK; i += 1) appends.push(fx.broker.deps.audit.append(entry(i)));
  await Promise.all(appends);

  const exchange = async (claims: Record<string, unknown>): Promise<number> => {
    const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push', ...claims });
    const res = await fetch(`${url}/v1/exchange`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"policy":"deploy"}' });
    await res.arrayBuffer();
    return res.status;
  };
  assert.equal(await exchange({}), 200);
  assert.equal(await exchange({ event_name: 'workflow_dispatch' }), 200);
  assert.equal(await exchange({ repository: 'evil/api', sub: 'repo:evil/api:ref:refs/heads/main' }), 403);
  recent = 3;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await fx.close();
});

function ndjson(text: string): AuditRecord[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditRecord);
}

describe('audit query --url', () => {
  test('every format prints exactly what the database mode prints for the same log, paging through next_cursor', async () => {
    for (const format of ['ndjson', 'csv', 'json', 'table']) {
      const args = ['audit', 'query', '--format', format, '--limit', 'all'];
      const remote = await cli([...args, '--url', url], WITH_TOKEN);
      assert.equal(remote.code, 0, remote.stderr);
      assert.equal(remote.stderr, '');
      const local = await cli([...args, '-c', config]);
      assert.equal(local.code, 0, local.stderr);
      assert.equal(remote.stdout, local.stdout, format);
    }
    const all = ndjson((await cli(['audit', 'query', '--url', url, '--format', 'ndjson'], WITH_TOKEN)).stdout);
    assert.equal(all.length, BULK + recent);
    assert.deepEqual(
      all.map((r) => r.seq),
      all.map((_, i) => i + 1),
      'every record once, in chain order, across the pages',
    );
  });

  test('filters: decision, policy, subject, credential id, --claim and --audit-match go to the broker', async () => {
    const cases: [string[], (r: AuditRecord) => boolean][] = [
      [['--decision', 'denied'], (r) => r.decision === 'denied'],
      [['--claim', 'repository=acme/svc-1', '--claim', 'run_number=7'], (r) => r.claims?.repository === 'acme/svc-1' && r.claims.run_number === 7],
      [['--subject', 'repo:acme/api:ref:refs/heads/main', '--policy', 'deploy'], (r) => r.subject === 'repo:acme/api:ref:refs/heads/main' && r.policy === 'deploy'],
      [['--credential-id', 'cred-42'], (r) => r.credential_id === 'cred-42'],
      [['--audit-match', 'watch-dispatch'], (r) => r.audit_matches.includes('watch-dispatch')],
      [['--issuer', 'local', '--until', '2025-01-01T00:10:00Z'], (r) => r.issuer === 'local' && r.time < '2025-01-01T00:10:00.000Z'],
    ];
    const all = ndjson((await cli(['audit', 'query', '--url', url, '--format', 'ndjson'], WITH_TOKEN)).stdout);
    for (const [filters, keep] of cases) {
      const run = await cli(['audit', 'query', '--url', url, '--format', 'ndjson', ...filters], WITH_TOKEN);
      assert.equal(run.code, 0, run.stderr);
      const expected = all.filter(keep);
      assert.ok(expected.length > 0, filters.join(' '));
      assert.deepEqual(
        ndjson(run.stdout).map((r) => r.seq),
        expected.map((r) => r.seq),
        filters.join(' '),
      );
    }
  });

  test('relative times: --since 24h and 7d find the exchanges of this run, --until 24h only the old records', async () => {
    const since24h = ndjson((await cli(['audit', 'query', '--url', url, '--format', 'ndjson', '--since', '24h'], WITH_TOKEN)).stdout);
    assert.deepEqual(
      since24h.map((r) => [r.decision, r.claims?.repository]),
      [
        ['issued', 'acme/api'],
        ['issued', 'acme/api'],
        ['denied', 'evil/api'],
      ],
    );
    const denied7d = ndjson((await cli(['audit', 'query', '--url', url, '--format', 'ndjson', '--since', '7d', '--decision', 'denied'], WITH_TOKEN)).stdout);
    assert.deepEqual(
      denied7d.map((r) => r.claims?.repository),
      ['evil/api'],
    );
    const minutes = ndjson((await cli(['audit', 'query', '--url', url, '--format', 'ndjson', '--since', '90m'], WITH_TOKEN)).stdout);
    assert.equal(minutes.length, recent);
    const old = await cli(['audit', 'query', '--url', url, '--format', 'ndjson', '--until', '24h'], WITH_TOKEN);
    assert.equal(ndjson(old.stdout).length, BULK);
  });

  test('--limit cuts the output and says so on stderr; --token-file reads the token from a file', async () => {
    const tokenFile = path.join(fx.dir, 'auditor.token');
    await writeFile(tokenFile, `${AUDITOR_TOKEN}\n`, { mode: 0o600 });
    const run = await cli(['audit', 'query', '--url', `${url}/`, '--token-file', tokenFile, '--format', 'json', '--limit', '5'], { env: { OIDC_BROKER_AUDITOR_TOKEN: undefined } });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(
      (JSON.parse(run.stdout) as AuditRecord[]).map((r) => r.seq),
      [1, 2, 3, 4, 5],
    );
    assert.equal(run.stderr, 'oidc-broker: showing the first 5 matching records; more match (use --limit N or --limit all)\n');
  });

  test('a refused token exits 4 with the broker status, error code and request id on stderr, nothing on stdout', async () => {
    const run = await cli(['audit', 'query', '--url', url], { env: { OIDC_BROKER_AUDITOR_TOKEN: 'not-an-auditor-token' } });
    assert.equal(run.code, 4);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^oidc-broker: GET \/v1\/audit\/events: the broker answered 401 invalid_token: This token is not an auditor token\. \(request_id [0-9A-Z]+\)\n$/);
    assert.ok(!run.stderr.includes('not-an-auditor-token'), 'the token is never printed');
  });

  test('an unreachable broker exits 5 naming the cause', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const run = await cli(['audit', 'query', '--url', `http://127.0.0.1:${port}`], WITH_TOKEN);
    assert.equal(run.code, 5);
    assert.equal(run.stderr, `oidc-broker: GET /v1/audit/events: cannot reach the broker at http://127.0.0.1:${port}: ECONNREFUSED\n`);
  });

  test('behind a proxy: a 503 on the first page exits 5 with nothing printed; a 429 on a later page exits 5 saying the output is incomplete', async () => {
    // Forwards to the real broker, except what `answer` decides to refuse.
    let answer: (search: URLSearchParams) => { status: number; headers?: Record<string, string>; body: unknown } | null = () => null;
    const proxy = http.createServer((req, res) => {
      const target = new URL(req.url!, url);
      const refusal = answer(target.searchParams);
      if (refusal !== null) {
        res.writeHead(refusal.status, { 'content-type': 'application/json', ...refusal.headers });
        res.end(JSON.stringify(refusal.body));
        return;
      }
      void fetch(target, { headers: { authorization: req.headers.authorization! } }).then(async (upstream) => {
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type')! });
        res.end(Buffer.from(await upstream.arrayBuffer()));
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxied = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      answer = () => ({ status: 503, body: { error: 'audit_unavailable', error_description: 'The audit log cannot be read now.', request_id: 'req-1' } });
      const down = await cli(['audit', 'query', '--url', proxied, '--format', 'csv'], WITH_TOKEN);
      assert.deepEqual(down, { code: 5, stdout: '', stderr: 'oidc-broker: GET /v1/audit/events: the broker answered 503 audit_unavailable: The audit log cannot be read now. (request_id req-1)\n' });

      answer = (search) => (search.has('cursor') ? { status: 429, headers: { 'retry-after': '7' }, body: { error: 'rate_limited', error_description: 'Too many requests.', request_id: 'req-2' } } : null);
      const cut = await cli(['audit', 'query', '--url', proxied, '--format', 'ndjson'], WITH_TOKEN);
      assert.equal(cut.code, 5);
      const written = ndjson(cut.stdout).length;
      assert.ok(written > 0 && written <= 1000, `records of the first page were written: ${written}`);
      assert.equal(
        cut.stderr,
        `oidc-broker: reading the audit log failed after ${written} records; the output is incomplete: GET /v1/audit/events: the broker answered 429 rate_limited: Too many requests. (retry after 7 s) (request_id req-2)\n`,
      );
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  test('bad arguments exit 1 before any request: no token, a token on several lines, a clear-text URL, a mode mix', async () => {
    const multiline = path.join(fx.dir, 'two-lines.token');
    await writeFile(multiline, 'abc\ndef\n');
    const cases: [string[], NodeJS.ProcessEnv, string][] = [
      [['--url', url], { OIDC_BROKER_AUDITOR_TOKEN: undefined }, '--url needs the auditor token: give --token-file FILE or set OIDC_BROKER_AUDITOR_TOKEN'],
      [['--url', url], { OIDC_BROKER_AUDITOR_TOKEN: '' }, '--url needs the auditor token: give --token-file FILE or set OIDC_BROKER_AUDITOR_TOKEN'],
      [['--url', url, '--token-file', path.join(fx.dir, 'missing.token')], {}, `--token-file: cannot read ${path.join(fx.dir, 'missing.token')} (ENOENT)`],
      [['--url', url, '--token-file', multiline], {}, `the auditor token from --token-file ${multiline} must be one line without spaces or control characters`],
      [
        ['--url', 'http://broker.example.com'],
        WITH_TOKEN.env,
        "--url: expected an https:// URL (http:// only to localhost, 127.0.0.1 or [::1]), got 'http://broker.example.com': the auditor token must not travel in clear text",
      ],
      [['--url', 'broker.example.com'], WITH_TOKEN.env, "--url: expected the broker's URL, such as https://broker.example.com, got 'broker.example.com'"],
      [
        ['--url', 'https://auditor:pw@broker.example.com'],
        WITH_TOKEN.env,
        '--url: expected the broker URL without user, password, query or fragment (the auditor token comes from --token-file or $OIDC_BROKER_AUDITOR_TOKEN)',
      ],
      [['--url', url, '-c', config], WITH_TOKEN.env, '--url and --config exclude each other: over HTTP the broker reads its own config'],
      [['--token-file', multiline, '-c', config], {}, '--token-file applies only with --url'],
      [['--url', url, '--since', 'yesterday'], WITH_TOKEN.env, "--since: expected a duration back from now such as 24h or 7d (m, h, d), an RFC 3339 time such as 2026-11-25T19:00:00Z or a date such as 2026-11-25, got 'yesterday'"],
    ];
    for (const [args, env, message] of cases) {
      const run = await cli(['audit', 'query', ...args], { env });
      assert.equal(run.code, 1, args.join(' '));
      assert.equal(run.stderr, `oidc-broker: ${message}\n`, args.join(' '));
      assert.equal(run.stdout, '');
    }
  });

  test('as a real process: the exit code of a refused token, and the records of a good one', async () => {
    const refused = await cliProcess(['audit', 'query', '--url', url, '--since', '24h'], { env: { OIDC_BROKER_AUDITOR_TOKEN: 'wrong' } });
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, /401 invalid_token/);
    const good = await cliProcess(['audit', 'query', '--url', url, '--since', '24h', '--format', 'ndjson'], { env: { OIDC_BROKER_AUDITOR_TOKEN: AUDITOR_TOKEN } });
    assert.equal(good.code, 0, good.stderr);
    assert.equal(ndjson(good.stdout).length, recent);
  });
});

describe('audit verify --url', () => {
  test('prints the summary, or with --json the body of GET /v1/audit/verify; exit 0 for an intact log', async () => {
    const summary = await cli(['audit', 'verify', '--url', url], WITH_TOKEN);
    assert.equal(summary.code, 0, summary.stderr);
    assert.match(summary.stdout, new RegExp(`^audit log OK: ${url}/\\n  events verified:  ${BULK + recent} \\(seq 1 to ${BULK + recent}\\)\\n`));
    const json = await cli(['audit', 'verify', '--url', url, '--json'], WITH_TOKEN);
    assert.equal(json.code, 0, json.stderr);
    const direct = await fetch(`${url}/v1/audit/verify`, { headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } });
    assert.deepEqual(JSON.parse(json.stdout) as AuditVerification, await direct.json());
  });

  test('--trusted-head is sent to the broker, which refuses one it did not sign (exit 1, 400 invalid_request); --jwks does not apply', async () => {
    const forged = `${Buffer.from('{"alg":"ES256","kid":"k"}').toString('base64url')}.${Buffer.from('{"seq":1,"hash":"00","time":"2026-01-01T00:00:00Z","kind":"periodic"}').toString('base64url')}.c2ln`;
    const run = await cli(['audit', 'verify', '--url', url, '--trusted-head', forged], WITH_TOKEN);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^oidc-broker: GET \/v1\/audit\/verify: the broker answered 400 invalid_request: 'trusted_head' is not a checkpoint signed by the broker's keys\. \(request_id [0-9A-Z]+\)\n$/);
    const missing = await cli(['audit', 'verify', '--url', url, '--trusted-head', path.join(fx.dir, 'no-head.jws')], WITH_TOKEN);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, `oidc-broker: --trusted-head: '${path.join(fx.dir, 'no-head.jws')}' is neither a checkpoint JWS nor an existing file\n`);
    const jwks = await cli(['audit', 'verify', '--url', url, '--jwks', 'keys.json'], WITH_TOKEN);
    assert.equal(jwks.code, 1);
    assert.equal(jwks.stderr, 'oidc-broker: --jwks does not apply with --url: the broker verifies with its own keys\n');
  });

  test('a refused token exits 4', async () => {
    const run = await cli(['audit', 'verify', '--url', url], { env: { OIDC_BROKER_AUDITOR_TOKEN: 'nope' } });
    assert.equal(run.code, 4);
    assert.match(run.stderr, /^oidc-broker: GET \/v1\/audit\/verify: the broker answered 401 invalid_token: /);
  });
});

describe('the database mode reads only audit and providers.jwt of the config', () => {
  test('a ${VAR} that is unset elsewhere does not stop audit query or verify; one in audit.url does, naming the key', async () => {
    const text = `issuers:\n  - name: local\n    issuer: \${UNSET_ISSUER_URL}\nproviders:\n  jwt:\n    signing_key_file: ./data/signing-key.jwk\n  gcp:\n    credentials_file: \${UNSET_GCP_FILE}\naudit:\n  url: sqlite:./data/audit.db\nauditors: \${UNSET_AUDITORS}\n`;
    const narrow = path.join(fx.dir, 'narrow.yaml');
    await writeFile(narrow, text);
    const env = { env: { UNSET_ISSUER_URL: undefined, UNSET_GCP_FILE: undefined, UNSET_AUDITORS: undefined } };
    const query = await cli(['audit', 'query', '-c', narrow, '--format', 'ndjson', '--since', '24h'], env);
    assert.equal(query.code, 0, query.stderr);
    assert.equal(ndjson(query.stdout).length, recent);
    const verify = await cli(['audit', 'verify', '-c', narrow], env);
    assert.equal(verify.code, 0, verify.stderr);

    const inAudit = path.join(fx.dir, 'in-audit.yaml');
    await writeFile(inAudit, 'audit:\n  url: sqlite:${UNSET_AUDIT_DIR}/audit.db\n');
    const refused = await cli(['audit', 'query', '-c', inAudit], { env: { UNSET_AUDIT_DIR: undefined } });
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, `oidc-broker: cannot load the config:\n${inAudit}:2: audit.url: environment variable UNSET_AUDIT_DIR is not set\n`);

    const badKey = path.join(fx.dir, 'bad-key.yaml');
    await writeFile(badKey, 'audit:\n  url: mysql://x\n  typo: 1\nproviders:\n  jwt:\n    signing_key_file: ""\n');
    const invalid = await cli(['audit', 'verify', '-c', badKey]);
    assert.equal(invalid.code, 1);
    assert.equal(
      invalid.stderr,
      `oidc-broker: cannot load the config:\n${badKey}:2: audit.url: expected sqlite:<path> or postgres://user:password@host:port/database\n${badKey}:3: audit: unknown key 'typo'\n${badKey}:6: providers.jwt.signing_key_file: Too small: expected string to have >=1 characters\n`,
    );
  });
});
