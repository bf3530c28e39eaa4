import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, parseConfig, resolveConfigPath } from '../src/config.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-config-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

const file = () => path.join(dir, 'broker.yaml');

async function rejects(text: string, expected: RegExp, env: NodeJS.ProcessEnv = {}): Promise<void> {
  await assert.rejects(parseConfig(text, file(), env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, expected);
    return true;
  });
}

describe('built-in development defaults', () => {
  test('loopback, local dev issuer and the hosted CI providers, SQLite audit, memory replay, the public URL as audience', async () => {
    const config = await loadConfig(undefined, {});
    assert.equal(config.source, 'built-in defaults');
    assert.equal(config.server.host, '127.0.0.1');
    assert.equal(config.server.port, 8080);
    assert.equal(config.server.publicUrl, 'http://127.0.0.1:8080');
    assert.deepEqual(config.issuers.map((i) => [i.name, i.issuer, i.audiences]), [
      ['local', 'http://127.0.0.1:8081', ['http://127.0.0.1:8080']],
      ['github', 'https://token.actions.githubusercontent.com', ['http://127.0.0.1:8080']],
      ['gitlab', 'https://gitlab.com', ['http://127.0.0.1:8080']],
      // CircleCI's issuer is per organisation; the default names a placeholder no real token carries.
      ['circleci', 'https://oidc.circleci.com/org/00000000-0000-0000-0000-000000000000', ['http://127.0.0.1:8080']],
      ['buildkite', 'https://agent.buildkite.com', ['http://127.0.0.1:8080']],
    ]);
    for (const issuer of config.issuers) {
      assert.deepEqual(issuer.algorithms, ['RS256', 'ES256'], issuer.name);
      assert.equal(issuer.clockSkewSeconds, 60, issuer.name);
      assert.equal(issuer.maxTokenAgeSeconds, undefined, issuer.name);
      assert.equal(issuer.jwksUri, undefined, issuer.name);
    }
    assert.equal(config.audit.url, `sqlite:${path.resolve('data/audit.db')}`);
    assert.equal(config.replay.url, 'memory:');
    assert.equal(config.providers.jwt.signingKeyFile, path.resolve('data/signing-key.jwk'));
  });

  test('PORT overrides the port, and the default audience follows it; a bad PORT is refused', async () => {
    const config = await loadConfig(undefined, { PORT: '9090' });
    assert.equal(config.server.port, 9090);
    for (const issuer of config.issuers) assert.deepEqual(issuer.audiences, ['http://127.0.0.1:9090'], issuer.name);
    for (const bad of ['', 'eighty', '70000', '-1', '80.5']) {
      await assert.rejects(loadConfig(undefined, { PORT: bad }), /PORT: expected an integer/);
    }
  });

  test('resolution order: --config, then BROKER_CONFIG, then ./broker.yaml, then none', () => {
    assert.equal(resolveConfigPath('a.yaml', { BROKER_CONFIG: 'b.yaml' }), 'a.yaml');
    assert.equal(resolveConfigPath(undefined, { BROKER_CONFIG: 'b.yaml' }), 'b.yaml');
    assert.equal(resolveConfigPath(undefined, {}), undefined); // the repository root has no broker.yaml
  });
});

describe('a config file', () => {
  test('relative paths resolve against the file; ${ENV} is substituted in strings', async () => {
    const config = await parseConfig(
      `server:\n  public_url: \${PUBLIC_URL}\nissuers:\n  - name: gh\n    issuer: https://token.actions.githubusercontent.com\n    audiences: ["\${PUBLIC_URL}", other]\npolicies:\n  dir: ./pol\naudit:\n  url: sqlite:./audit/log.db\n`,
      file(),
      { PUBLIC_URL: 'https://broker.example.com/' },
    );
    assert.equal(config.server.publicUrl, 'https://broker.example.com');
    assert.deepEqual(config.issuers[0]!.audiences, ['https://broker.example.com/', 'other']);
    assert.equal(config.policies.dir, path.join(dir, 'pol'));
    assert.equal(config.audit.url, `sqlite:${path.join(dir, 'audit', 'log.db')}`);
    assert.equal(config.audit.checkpointIntervalSeconds, 300);
  });

  const cases: [name: string, text: string, expected: RegExp][] = [
    ['unknown key at its own line', 'server:\n  port: 8080\n  hots: 0.0.0.0\n', /broker\.yaml:3: server: unknown key 'hots'/],
    ['wrong type names the type it got', 'server:\n  port: "8080"\n', /broker\.yaml:2: server\.port: expected number, got string "8080"/],
    ['http issuer off loopback', 'issuers:\n  - name: a\n    issuer: http://10.0.0.1\n', /broker\.yaml:3: issuers\[0\]\.issuer: expected an https:\/\/ URL/],
    ['alg none', 'issuers:\n  - name: a\n    issuer: https://a.example.com\n    algorithms: [none]\n', /issuers\[0\]\.algorithms\[0\]: expected asymmetric algorithms/],
    ['HMAC', 'issuers:\n  - name: a\n    issuer: https://a.example.com\n    algorithms: [HS256]\n', /none and HMAC are never accepted/],
    ['duplicate issuer name', 'issuers:\n  - name: a\n    issuer: https://a.example.com\n  - name: a\n    issuer: https://b.example.com\n', /broker\.yaml:4: issuers\[1\]\.name: duplicate issuer name 'a'/],
    ['duplicate issuer URL', 'issuers:\n  - name: a\n    issuer: https://a.example.com\n  - name: b\n    issuer: https://a.example.com\n', /issuers\[1\]\.issuer: duplicate issuer issuer/],
    ['jwks_uri and jwks_file', 'issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_uri: https://a.example.com/k\n    jwks_file: k.json\n', /set jwks_uri or jwks_file, not both/],
    ['auditor hash not hex', 'auditors:\n  - name: x\n    token_sha256: secret\n', /auditors\[0\]\.token_sha256: expected the lowercase hex SHA-256/],
    ['YAML syntax', 'server: [\n', /broker\.yaml:\d+: invalid YAML/],
    ['duplicate YAML key', 'server:\n  port: 1\n  port: 2\n', /broker\.yaml:3: invalid YAML: duplicate key 'port'/],
    // The policies' strictness (one YAML front end): no guessing at tags, no collection keys, aliases bounded.
    ['unknown YAML tag', 'server:\n  host: !secret x\n', /broker\.yaml:2: invalid YAML: Unresolved tag: !secret/],
    ['a non-string map key', 'server:\n  ? [a]\n  : b\n', /broker\.yaml:2: invalid YAML: map keys must be plain strings/],
    ['too many aliases', `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [${Array(10).fill('*a').join(', ')}]\nc: [${Array(10).fill('*b').join(', ')}]\n`, /broker\.yaml:2: invalid YAML: .*alias/i],
    ['a YAML 1.1 boolean is a string (core schema)', 'server:\n  port: 8080\n  public_url: yes\n', /broker\.yaml:3: server\.public_url: expected a URL/],
    ['unset env var', 'server:\n  public_url: ${NOPE_NOT_SET}\n', /broker\.yaml:2: server\.public_url: environment variable NOPE_NOT_SET is not set/],
    ['audit url not sqlite', 'audit:\n  url: mysql://x\n', /audit\.url: expected sqlite:<path> or postgres:\/\//],
    ['checkpoint interval too short', 'audit:\n  checkpoint_interval_seconds: 1\n', /broker\.yaml:2: audit\.checkpoint_interval_seconds: Too small/],
    ['a Redis database above 15', 'replay:\n  url: redis://127.0.0.1:6379/16\n', /broker\.yaml:2: replay\.url: expected memory:, or redis:\/\/\[user:password@\]host:port\/db with db 0-15 \(rediss:\/\/ for TLS\)/],
    ['a Redis URL without a port', 'replay:\n  url: redis://127.0.0.1/0\n', /broker\.yaml:2: replay\.url: expected memory:, or redis:\/\//],
    ['a Redis URL with options', 'replay:\n  url: redis://127.0.0.1:6379/0?family=6\n', /broker\.yaml:2: replay\.url: expected memory:, or redis:\/\//],
    ['not a URL', 'replay:\n  url: localhost:6379\n', /broker\.yaml:2: replay\.url: expected memory:, or redis:\/\//],
    ['the admin port is the API port', 'server:\n  port: 8080\n  admin_port: 8080\n', /broker\.yaml: server\.admin_port: expected a port other than the API port \(8080\)/],
    [
      "an issuer that is the broker's own public URL",
      'server:\n  public_url: https://broker.example.com\nissuers:\n  - name: self\n    issuer: https://broker.example.com/\n',
      /broker\.yaml: issuers\[0\]\.issuer: 'https:\/\/broker\.example\.com\/' is this broker's own server\.public_url/,
    ],
    ['an exchange deadline of 0', 'server:\n  exchange_timeout_seconds: 0\n', /broker\.yaml:2: server\.exchange_timeout_seconds/],
    ['an exchange deadline past the HTTP request timeout', 'server:\n  exchange_timeout_seconds: 60\n', /broker\.yaml:2: server\.exchange_timeout_seconds/],
  ];
  for (const [name, text, expected] of cases) test(`refuses: ${name}`, () => rejects(text, expected));

  test('the admin port is checked against the API port after PORT', () => rejects('server:\n  admin_port: 9000\n', /server\.admin_port: expected a port other than the API port \(9000\)/, { PORT: '9000' }));

  test('accepts Redis and TLS Redis URLs, and an admin port', async () => {
    for (const url of ['redis://127.0.0.1:6379/0', 'rediss://broker:secret@redis.internal:6380/15', 'redis://[::1]:6379/3']) {
      assert.equal((await parseConfig(`replay:\n  url: ${url}\n`, file(), {})).replay.url, url);
    }
    const config = await parseConfig('server:\n  port: 8080\n  admin_port: 9090\n', file(), {});
    assert.equal(config.server.adminPort, 9090);
    assert.equal((await parseConfig('{}\n', file(), {})).server.adminPort, undefined);
  });

  test('server.exchange_timeout_seconds: 30 by default, with or without a server section', async () => {
    assert.equal((await parseConfig('{}\n', file(), {})).server.exchangeTimeoutSeconds, 30);
    assert.equal((await parseConfig('server:\n  port: 8080\n', file(), {})).server.exchangeTimeoutSeconds, 30);
    assert.equal((await parseConfig('server:\n  exchange_timeout_seconds: 10\n', file(), {})).server.exchangeTimeoutSeconds, 10);
  });

  test('a postgres:// audit URL is kept as written, with ${ENV} substituted', async () => {
    const config = await parseConfig('audit:\n  url: postgres://broker:${PGPASS}@db.internal:5432/audit\n  checkpoint_interval_seconds: 60\n', file(), { PGPASS: 's3cret' });
    assert.equal(config.audit.url, 'postgres://broker:s3cret@db.internal:5432/audit');
    assert.equal(config.audit.checkpointIntervalSeconds, 60);
  });

  test('jwks_file: read once at load; private or symmetric keys and non-JWKS files are refused', async () => {
    await writeFile(path.join(dir, 'pub.json'), JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b', kid: 'k' }] }));
    const config = await parseConfig('issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_file: pub.json\n', file(), {});
    assert.equal(config.issuers[0]!.jwks?.keys[0]?.kid, 'k');
    await writeFile(path.join(dir, 'priv.json'), JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b', d: 'secret' }] }));
    await rejects('issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_file: priv.json\n', /holds private or symmetric key material/);
    await writeFile(path.join(dir, 'oct.json'), JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }));
    await rejects('issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_file: oct.json\n', /holds private or symmetric key material/);
    await writeFile(path.join(dir, 'notjwks.json'), '{"hello": 1}');
    await rejects('issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_file: notjwks.json\n', /must be a JWKS/);
    await rejects('issuers:\n  - name: a\n    issuer: https://a.example.com\n    jwks_file: missing.json\n', /cannot read a JSON Web Key Set .* \(ENOENT\)/);
  });

  test('a missing file is named', async () => {
    await assert.rejects(loadConfig(path.join(dir, 'nope.yaml'), {}), /nope\.yaml: cannot read the config file \(ENOENT\)/);
  });
});
