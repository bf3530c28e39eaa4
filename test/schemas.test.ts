// The JSON Schemas in schema/ (for editors, through yaml-language-server)
// against the real compiler and config loader: every shipped policy, policy
// test file and documented config example must pass the schemas, and a set
// of invalid documents must be refused by the schema AND by the code, so the
// two cannot silently drift apart in those cases.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import { compileContext, ConfigError, loadConfig } from '../src/config.js';
import { defaultTenantClaims } from '../src/oidc/issuer-defaults.js';
import { compilePolicies } from '../src/policy/compile.js';
import { loadPolicyDir } from '../src/policy/load.js';
import { parseTestFile, runPolicyTests } from '../src/policy/test-cases.js';
import type { CompileContext } from '../src/policy/types.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const at = (...parts: string[]) => path.join(ROOT, ...parts);

let policySchema: ValidateFunction;
let testsSchema: ValidateFunction;
let configSchema: ValidateFunction;

before(async () => {
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
  addFormats.default(ajv);
  const load = async (name: string) => ajv.compile(JSON.parse(await readFile(at('schema', name), 'utf8')) as object);
  policySchema = await load('policy.schema.json');
  testsSchema = await load('policy-tests.schema.json');
  configSchema = await load('config.schema.json');
});

/** Parses YAML as the policy parser does (YAML 1.2 core schema, no merge keys). */
function yaml(text: string): unknown {
  return parse(text, { version: '1.2', schema: 'core', merge: false, uniqueKeys: true });
}

function schemaErrors(validate: ValidateFunction, value: unknown): string {
  return validate(value) ? '' : JSON.stringify(validate.errors, null, 2);
}

/** Files under `dir` (recursively) whose names match, hidden entries skipped as the loader skips them. */
async function filesUnder(dir: string, match: (name: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(full, match)));
    else if (match(entry.name)) out.push(full);
  }
  return out.sort();
}

const isTestFile = (name: string) => /\.test\.ya?ml$/.test(name);

/** The ```yaml blocks of a Markdown file that parse to a map, with their line. */
async function yamlBlocks(doc: string): Promise<{ where: string; text: string; value: Record<string, unknown> }[]> {
  const markdown = await readFile(at(doc), 'utf8');
  const out: { where: string; text: string; value: Record<string, unknown> }[] = [];
  for (const match of markdown.matchAll(/```yaml\n([\s\S]*?)```/g)) {
    const text = match[1]!;
    let value: unknown;
    try {
      value = yaml(text);
    } catch {
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
    out.push({ where: `${doc}:${markdown.slice(0, match.index).split('\n').length}`, text, value: value as Record<string, unknown> });
  }
  return out;
}

/** Issuers and providers every policy below may name. */
const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: ['https://broker.example.com'], tenantClaims: [] }],
    ['gitlab', { audiences: ['https://broker.example.com'], tenantClaims: [] }],
  ]),
  providers: new Set(['jwt', 'aws', 'gcp']),
};

function compiles(text: string): { ok: boolean; issues: string } {
  const result = compilePolicies([{ path: 'p.yaml', text }], CTX);
  return { ok: result.ok, issues: result.ok ? '' : JSON.stringify(result.issues, null, 2) };
}

describe('policy.schema.json', () => {
  test('accepts every shipped policy and every valid fixture policy', async () => {
    // The files the policy loader reads: test/fixtures/policies/valid also holds decoys it skips
    // (a hidden file, a subdirectory, a README), which are not policies.
    const files = [...(await loadPolicyDir(at('policies'))), ...(await loadPolicyDir(at('test/fixtures/policies/valid')))];
    assert.ok(files.length >= 15, `found only ${files.length} policy files`);
    for (const file of files) {
      assert.equal(schemaErrors(policySchema, yaml(file.text)), '', path.relative(ROOT, file.path));
    }
  });

  test('the shipped policies compile with the development defaults (the schema accepts what the compiler accepts)', async () => {
    const ctx = compileContext(await loadConfig(undefined));
    const result = compilePolicies(await loadPolicyDir(at('policies')), ctx);
    assert.equal(result.ok, true, result.ok ? '' : JSON.stringify(result.issues, null, 2));
  });

  // Policies both the schema and the compiler accept: every provider and condition form.
  const valid: Record<string, string> = {
    'every condition form, jwt grant with claims': `
name: deploy
issuer: github
audience: https://broker.example.com
claims:
  repository_owner_id: "1234567"
  repository_id: 7654321
  ref: [refs/heads/main, refs/heads/release]
  event_name: { in: [push, "workflow_*"] }
  job_workflow_ref: { glob: "acme/workflows/.github/workflows/deploy.yml@refs/tags/v*" }
  sub: { regex: "repo:acme/api:environment:(prod|production)" }
  ref_protected: true
  /nested/a~1b: { exists: true }
  oidc.circleci.com/project-id: "22222222-2222-2222-2222-222222222222"
allow_token_reuse: false
grant:
  provider: jwt
  audience: https://deploy.example.com/\${repository}
  max_duration_seconds: 600
  claims:
    repository: \${repository}
    cost: $$5 for \${/nested/a~1b}
`,
    'aws grant (the README example)': `
name: api-deploy-prod
issuer: github
claims: { repository_owner_id: "1234567", repository: acme/api, ref: refs/heads/main }
grant:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/api-deploy
  region: eu-west-1
  session_name: gh-\${repository}-\${run_id}
  source_identity: \${actor}
  session_tags: { repository: "\${repository}", "team:owner": platform }
  transitive_tag_keys: [repository]
  policy_arns: [arn:aws:iam::aws:policy/ReadOnlyAccess]
  external_id: acme-ci
  max_duration_seconds: 900
  session_policy:
    Version: "2012-10-17"
    Statement:
      - { Effect: Allow, Action: ["s3:PutObject"], Resource: ["arn:aws:s3:::acme-artifacts/\${repository}/*"] }
`,
    'gcp id token grant, condition only': `
name: web-invoke
issuer: github
condition: 'claims.repository_owner_id == "1234567"'
grant:
  provider: gcp
  service_account: web-deployer@acme-prod.iam.gserviceaccount.com
  token_type: id_token
  id_token_audience: https://release-hook.example.com
  include_email: false
`,
    'gcp access token grant': `
name: web-deploy-gcp
issuer: github
claims: { repository_owner_id: "1234567" }
grant:
  provider: gcp
  service_account: web-deployer@acme-prod.iam.gserviceaccount.com
  scopes: [https://www.googleapis.com/auth/cloud-platform]
  delegates: [hop@acme-prod.iam.gserviceaccount.com]
  max_duration_seconds: 1800
`,
    'deny policy without conditions (a kill switch)': `
name: deny-all-github
issuer: github
effect: deny
`,
    'deny policy in audit mode': `
name: deny-self-hosted
issuer: github
effect: deny
mode: audit
claims:
  runner_environment: self-hosted
`,
    'allow policy saying mode: enforce': `
name: deploy
issuer: github
mode: enforce
claims:
  repository_owner_id: "1234567"
grant:
  provider: jwt
  audience: https://deploy.example.com
`,
  };
  for (const [name, text] of Object.entries(valid)) {
    test(`accepted by both: ${name}`, () => {
      assert.equal(schemaErrors(policySchema, yaml(text)), '', 'schema');
      const compiled = compiles(text);
      assert.equal(compiled.ok, true, compiled.issues);
    });
  }

  // Policies both must refuse. Each starts from a valid policy and breaks one thing.
  const base = (lines: string) => `name: p\nissuer: github\n${lines}`;
  const jwtGrant = 'grant:\n  provider: jwt\n  audience: https://deploy.example.com\n';
  const owner = 'claims:\n  repository_owner_id: "1234567"\n';
  const invalid: Record<string, string> = {
    'unknown top-level key': base(`allow-token-reuse: true\n${owner}${jwtGrant}`),
    'a claim written at the top level': base(`ref: refs/heads/main\n${owner}${jwtGrant}`),
    'effect not in the enum': base(`effect: permit\n${owner}${jwtGrant}`),
    'mode not in the enum': base(`effect: deny\nmode: dry-run\n${owner}`),
    'an allow policy in audit mode': base(`mode: audit\n${owner}${jwtGrant}`),
    'an explicit allow policy in audit mode': base(`effect: allow\nmode: audit\n${owner}${jwtGrant}`),
    'issuer missing': `name: p\n${owner}${jwtGrant}`,
    'invalid policy name': `name: "-p"\nissuer: github\n${owner}${jwtGrant}`,
    'an allow policy without a grant': base(owner),
    'an allow policy without any condition': base(jwtGrant),
    'a deny policy with a grant': base(`effect: deny\n${owner}${jwtGrant}`),
    'a deny policy with allow_token_reuse': base(`effect: deny\nallow_token_reuse: true\n${owner}`),
    'unknown condition operator': base(`claims:\n  ref: { globs: "refs/tags/v*" }\n${jwtGrant}`),
    'two operators in one condition': base(`claims:\n  ref: { glob: "a*", regex: "b" }\n${jwtGrant}`),
    'a * in a plain value': base(`claims:\n  ref: "refs/tags/v*"\n${jwtGrant}`),
    'a ? in a bare list item': base(`claims:\n  ref: [main, "v?"]\n${jwtGrant}`),
    'an empty list condition': base(`claims:\n  ref: []\n${jwtGrant}`),
    'a null condition': base(`claims:\n  ref:\n${jwtGrant}`),
    'a number beyond 2^53': base(`claims:\n  repository_id: 12345678901234567890\n${jwtGrant}`),
    'exists that is not a boolean': base(`claims:\n  env: { exists: "yes" }\n${jwtGrant}`),
    'a bad JSON Pointer escape': base(`claims:\n  /a~2b: x\n${jwtGrant}`),
    'a condition that is not a string': base(`${owner}condition: true\n${jwtGrant}`),
    'grant without provider': base(`${owner}grant:\n  audience: https://deploy.example.com\n`),
    'unknown provider': base(`${owner}grant:\n  provider: azure\n`),
    'jwt grant without audience': base(`${owner}grant:\n  provider: jwt\n`),
    'jwt grant overriding a registered claim': base(`${owner}${jwtGrant}  claims:\n    sub: x\n`),
    'jwt grant with a key of another provider': base(`${owner}${jwtGrant}  role_arn: arn:aws:iam::123456789012:role/x\n`),
    'jwt max_duration_seconds out of range': base(`${owner}${jwtGrant}  max_duration_seconds: 30\n`),
    'an unterminated template': base(`${owner}${jwtGrant}  claims:\n    repo: \${repository\n`),
    'an empty template': base(`${owner}${jwtGrant}  claims:\n    repo: x-\${}\n`),
    'a template that is not a string': base(`${owner}${jwtGrant}  claims:\n    n: 5\n`),
    'aws role_arn with a template': base(`${owner}grant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/\${repository}\n`),
    'aws grant without role_arn': base(`${owner}grant:\n  provider: aws\n`),
    'aws session tag key starting with aws:': base(`${owner}grant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/x\n  session_tags: { "aws:x": y }\n`),
    'aws max_duration_seconds below STS minimum': base(`${owner}grant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/x\n  max_duration_seconds: 600\n`),
    'aws session policy without Statement': base(`${owner}grant:\n  provider: aws\n  role_arn: arn:aws:iam::123456789012:role/x\n  session_policy: { Version: "2012-10-17" }\n`),
    'gcp token_type not in the enum': base(`${owner}grant:\n  provider: gcp\n  service_account: a@b.iam.gserviceaccount.com\n  token_type: refresh_token\n`),
    'gcp id_token without id_token_audience': base(`${owner}grant:\n  provider: gcp\n  service_account: a@b.iam.gserviceaccount.com\n  token_type: id_token\n`),
    'gcp id_token_audience without id_token': base(`${owner}grant:\n  provider: gcp\n  service_account: a@b.iam.gserviceaccount.com\n  id_token_audience: https://x.example.com\n`),
    'gcp id_token with another lifetime': base(`${owner}grant:\n  provider: gcp\n  service_account: a@b.iam.gserviceaccount.com\n  token_type: id_token\n  id_token_audience: x\n  max_duration_seconds: 600\n`),
    'gcp empty scopes': base(`${owner}grant:\n  provider: gcp\n  service_account: a@b.iam.gserviceaccount.com\n  scopes: []\n`),
  };
  test('accepted by both: the policy the invalid ones below break', () => {
    const text = base(`${owner}${jwtGrant}`);
    assert.equal(schemaErrors(policySchema, yaml(text)), '', 'schema');
    const compiled = compiles(text);
    assert.equal(compiled.ok, true, compiled.issues);
  });
  for (const [name, text] of Object.entries(invalid)) {
    test(`refused by both: ${name}`, () => {
      assert.equal(policySchema(yaml(text)), false, `the schema accepts it:\n${text}`);
      assert.equal(compiles(text).ok, false, `the compiler accepts it:\n${text}`);
    });
  }
});

describe('policy-tests.schema.json', () => {
  test('accepts every shipped policy test file and the fixture test file', async () => {
    const files = [...(await filesUnder(at('policies'), isTestFile)), ...(await filesUnder(at('test/fixtures/policies/valid'), isTestFile))];
    assert.ok(files.length >= 10, `found only ${files.length} test files`);
    for (const file of files) {
      const text = await readFile(file, 'utf8');
      assert.equal(schemaErrors(testsSchema, yaml(text)), '', path.relative(ROOT, file));
      const parsed = parseTestFile({ path: file, text });
      assert.equal(parsed.ok, true, parsed.ok ? '' : JSON.stringify(parsed.issues, null, 2));
    }
  });

  const ok = '  - name: main may deploy\n    policy: deploy\n    claims: {repository: acme/api}\n    expect: allow\n';
  const invalid: Record<string, string> = {
    'unknown top-level key': `tests:\n${ok}cases: []\n`,
    'unknown key in a case': `tests:\n${ok}  - name: b\n    policy: deploy\n    claims: {}\n    expect: deny\n    expected: deny\n`,
    'expect not in the enum': 'tests:\n  - name: a\n    policy: deploy\n    claims: {}\n    expect: allowed\n',
    'claims missing': 'tests:\n  - name: a\n    policy: deploy\n    expect: allow\n',
    'policy missing': 'tests:\n  - name: a\n    claims: {}\n    expect: allow\n',
    'an empty list of tests': 'tests: []\n',
    'an empty audience list': 'tests:\n  - name: a\n    policy: deploy\n    audience: []\n    claims: {}\n    expect: allow\n',
    'a claim number beyond 2^53': 'tests:\n  - name: a\n    policy: deploy\n    claims: {id: 12345678901234567890}\n    expect: allow\n',
    'audit_matches that is not a list': 'tests:\n  - name: a\n    policy: deploy\n    claims: {}\n    expect: allow\n    audit_matches: deny-x\n',
    'audit_matches with an empty name': 'tests:\n  - name: a\n    policy: deploy\n    claims: {}\n    expect: allow\n    audit_matches: [""]\n',
  };
  test('accepted by both: the test file the invalid ones below break', () => {
    const text = `tests:\n${ok}  - name: recorded by an audit-mode guardrail\n    policy: deploy\n    claims: {}\n    expect: deny\n    audit_matches: [deny-x]\n`;
    assert.equal(schemaErrors(testsSchema, yaml(text)), '', 'schema');
    const parsed = parseTestFile({ path: 't.test.yaml', text });
    assert.equal(parsed.ok, true, parsed.ok ? '' : JSON.stringify(parsed.issues, null, 2));
  });
  for (const [name, text] of Object.entries(invalid)) {
    test(`refused by both: ${name}`, () => {
      assert.equal(testsSchema(yaml(text)), false, `the schema accepts it:\n${text}`);
      assert.equal(parseTestFile({ path: 't.test.yaml', text }).ok, false, `the parser accepts it:\n${text}`);
    });
  }
});

describe('config.schema.json', () => {
  let dir: string;
  const env: NodeJS.ProcessEnv = {
    SECOPS_TOKEN_SHA256: 'a'.repeat(64),
    CIRCLECI_ORG_ID: '11111111-1111-1111-1111-111111111111',
    AUDIT_DB_PASSWORD: 'secret',
    REDIS_PASSWORD: 'secret',
  };
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-schemas-'));
    // The air-gapped example reads a static JWKS: give it one (public keys only).
    await mkdir(path.join(dir, 'keys'));
    const jwks = { keys: [{ kty: 'EC', crv: 'P-256', kid: 'k', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' }] };
    await writeFile(path.join(dir, 'keys', 'gitlab-jwks.json'), JSON.stringify(jwks));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function loads(text: string): Promise<{ ok: boolean; error: string }> {
    const file = path.join(dir, 'broker.yaml');
    await writeFile(file, text);
    try {
      await loadConfig(file, env);
      return { ok: true, error: '' };
    } catch (err) {
      if (err instanceof ConfigError) return { ok: false, error: err.message };
      throw err;
    }
  }

  const CONFIG_KEYS = new Set(['server', 'issuers', 'policies', 'audit', 'replay', 'providers', 'auditors', 'console']);

  /** Every ```yaml block of the docs whose top-level keys are all config keys: a config example. */
  async function configExamples(): Promise<{ where: string; text: string }[]> {
    const docs = ['README.md', ...(await filesUnder(at('docs'), (n) => n.endsWith('.md'))).map((f) => path.relative(ROOT, f))];
    const out: { where: string; text: string }[] = [];
    for (const doc of docs) {
      for (const block of await yamlBlocks(doc)) {
        const keys = Object.keys(block.value);
        if (keys.length > 0 && keys.every((k) => CONFIG_KEYS.has(k))) out.push(block);
      }
    }
    return out;
  }

  test('accepts every config example in the docs, and so does the loader', async () => {
    const examples = await configExamples();
    assert.ok(examples.length >= 5, `found only ${examples.length} config examples`);
    for (const { where, text } of examples) {
      assert.equal(schemaErrors(configSchema, yaml(text)), '', where);
      const loaded = await loads(text);
      assert.equal(loaded.ok, true, `${where}: ${loaded.error}`);
    }
  });

  const valid: Record<string, string> = {
    'an empty file (every default)': '{}\n',
    'the issuer the invalid ones below break': 'issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n',
    'everything this version accepts': `
server: { host: 0.0.0.0, port: 0, public_url: "https://broker.example.com/", trusted_proxies: [10.0.0.0/8, 192.0.2.7, "fd00::/8"], admin_port: 9090 }
issuers:
  - name: local
    issuer: http://127.0.0.1:8081
  - name: gitlab
    issuer: https://gitlab.example.com
    audiences: [https://broker.example.com]
    jwks_uri: https://gitlab.example.com/oauth/discovery/keys
    algorithms: [RS256, EdDSA]
    clock_skew_seconds: 0
    max_token_age_seconds: 600
    max_token_lifetime_seconds: 7200
    jwks_stale_if_error_seconds: 0
    tenant_claims: [namespace_id, project_id]
policies: { dir: ./policies }
audit: { url: "postgres://broker:\${AUDIT_DB_PASSWORD}@db.internal:5432/audit", checkpoint_interval_seconds: 10 }
replay: { url: "rediss://broker:\${REDIS_PASSWORD}@redis.internal:6380/2" }
providers:
  jwt: { signing_key_file: ./data/signing-key.jwk }
  aws: { region: eu-west-1, endpoint: http://localhost:4566, timeout_seconds: 60 }
  gcp: { endpoint: "http://[::1]:9090", max_lifetime_seconds: 43200, timeout_seconds: 1 }
auditors:
  - { name: secops, token_sha256: "\${SECOPS_TOKEN_SHA256}" }
limits: { refused_per_ip: 1, exchanges_per_subject: 1000000, explains_per_subject: 20, auditor_failures_per_ip: 10 }
console: { session_seconds: 3600 }
`,
  };
  for (const [name, text] of Object.entries(valid)) {
    test(`accepted by both: ${name}`, async () => {
      assert.equal(schemaErrors(configSchema, yaml(text)), '', 'schema');
      const loaded = await loads(text);
      assert.equal(loaded.ok, true, loaded.error);
    });
  }

  const issuer = 'issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n';
  const invalid: Record<string, string> = {
    'unknown key': 'server:\n  prot: 8080\n',
    'unknown top-level key': 'rate_limits:\n  refused_per_ip: 120\n',
    'a limit of 0': 'limits:\n  exchanges_per_subject: 0\n',
    'an unknown limit': 'limits:\n  exchanges_per_minute: 10\n',
    'a trusted proxy that is a host name': 'server:\n  trusted_proxies: [proxy.internal]\n',
    'a tenant claim that is a JSON Pointer': `${issuer}    tenant_claims: [/repository_owner_id]\n`,
    'a tenant claim named twice': `${issuer}    tenant_claims: [repository_id, repository_id]\n`,
    'algorithm not in the enum': `${issuer}    algorithms: [HS256]\n`,
    'issuer URL missing': 'issuers:\n  - name: github\n',
    'auditor without token_sha256': 'auditors:\n  - name: secops\n',
    'a Redis database above 15': 'replay:\n  url: redis://127.0.0.1:6379/16\n',
    'a Redis URL without a port': 'replay:\n  url: redis://127.0.0.1/0\n',
    'a Redis URL without a database': 'replay:\n  url: redis://127.0.0.1:6379\n',
    'a replay URL of another scheme': 'replay:\n  url: http://127.0.0.1:6379/0\n',
    'an admin port out of range': 'server:\n  admin_port: 70000\n',
    'jwks_uri and jwks_file together': `${issuer}    jwks_uri: https://example.com/jwks\n    jwks_file: ./keys/gitlab-jwks.json\n`,
    'plain http to a non-loopback host': 'issuers:\n  - name: x\n    issuer: http://issuer.example.com\n',
    'credentials in a URL': 'server:\n  public_url: https://user:pass@broker.example.com\n',
    'a port as a string': 'server:\n  port: "8080"\n',
    'a port out of range': 'server:\n  port: 70000\n',
    'clock skew out of range': `${issuer}    clock_skew_seconds: 301\n`,
    'a token lifetime bound of 0': `${issuer}    max_token_lifetime_seconds: 0\n`,
    'a token lifetime bound above 31 days': `${issuer}    max_token_lifetime_seconds: 2678401\n`,
    'a negative stale-if-error bound': `${issuer}    jwks_stale_if_error_seconds: -1\n`,
    'stale-if-error with jwks_file (never fetched)': `${issuer}    jwks_file: ./keys/gitlab-jwks.json\n    jwks_stale_if_error_seconds: 600\n`,
    'an uppercase token hash': `auditors:\n  - name: secops\n    token_sha256: ${'A'.repeat(64)}\n`,
    'a bare providers.aws (null)': 'providers:\n  aws:\n',
    'an audit URL of another scheme': 'audit:\n  url: mysql://db/audit\n',
    'an empty list of audiences': `${issuer}    audiences: []\n`,
    'a console session under a minute': 'console:\n  session_seconds: 59\n',
    'a console session over an hour': 'console:\n  session_seconds: 3601\n',
    'an unknown console key': 'console:\n  enabled: false\n',
  };
  for (const [name, text] of Object.entries(invalid)) {
    test(`refused by both: ${name}`, async () => {
      assert.equal(configSchema(yaml(text)), false, `the schema accepts it:\n${text}`);
      assert.equal((await loads(text)).ok, false, `the loader accepts it:\n${text}`);
    });
  }
});

describe('copy-paste policy examples', () => {
  /** The issuers and providers the cookbook's recipes assume. */
  const RECIPES_CTX: CompileContext = {
    // The hosted issuers with their default tenant claims, so that every recipe shows a tenant pin.
    issuers: new Map([
      ['github', { audiences: ['https://broker.example.com', 'https://broker-prod.example.com'], tenantClaims: defaultTenantClaims('https://token.actions.githubusercontent.com') }],
      ['gitlab', { audiences: ['https://broker.example.com'], tenantClaims: defaultTenantClaims('https://gitlab.com') }],
      ['circleci', { audiences: ['https://broker.example.com'], tenantClaims: defaultTenantClaims('https://oidc.circleci.com/org/00000000-0000-0000-0000-000000000000') }],
      ['buildkite', { audiences: ['https://broker.example.com'], tenantClaims: defaultTenantClaims('https://agent.buildkite.com') }],
      ['legacy-ci', { audiences: ['https://broker.example.com'], tenantClaims: [] }],
    ]),
    providers: new Set(['jwt', 'aws', 'gcp']),
  };

  test('every policy of the cookbook compiles, and every test case of the cookbook passes against them', async () => {
    const blocks = await yamlBlocks('docs/policies/cookbook.md');
    const policies = blocks.filter((b) => 'issuer' in b.value);
    const testFiles = blocks.filter((b) => 'tests' in b.value);
    assert.ok(policies.length >= 15 && testFiles.length >= 12, `found ${policies.length} policies and ${testFiles.length} test files`);
    for (const block of policies) assert.equal(schemaErrors(policySchema, block.value), '', block.where);
    for (const block of testFiles) assert.equal(schemaErrors(testsSchema, block.value), '', block.where);
    const compiled = compilePolicies(policies.map((b) => ({ path: b.where, text: b.text })), RECIPES_CTX);
    if (!compiled.ok) assert.fail(JSON.stringify(compiled.issues, null, 2));
    const run = runPolicyTests(testFiles.map((b) => ({ path: b.where, text: b.text })), compiled.set, RECIPES_CTX);
    assert.deepEqual(run.issues, []);
    const failed = run.results.filter((r) => !r.passed).map((r) => `${r.case.file}: ${r.case.name}: ${r.decision.message}`);
    assert.deepEqual(failed, []);
    assert.ok(run.results.length >= 30, `only ${run.results.length} cases`);
  });

  test('every policy of the README passes the schema and compiles', async () => {
    const policies = (await yamlBlocks('README.md')).filter((b) => 'issuer' in b.value && 'grant' in b.value);
    assert.ok(policies.length >= 1, `found ${policies.length} policies`);
    for (const block of policies) {
      assert.equal(schemaErrors(policySchema, block.value), '', block.where);
      const compiled = compilePolicies([{ path: block.where, text: block.text }], RECIPES_CTX);
      assert.equal(compiled.ok, true, compiled.ok ? '' : JSON.stringify(compiled.issues, null, 2));
    }
  });
});
