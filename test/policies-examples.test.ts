// Policies tested through `oidc-broker policy test` as a user would run it,
// beyond what the shipped-policy test (policies-shipped.test.ts) covers:
// - policies/examples/ (docs/providers.md, "GitHub App tokens: a walkthrough")
//   needs a providers.github block, which the development defaults lack;
// - the exemption documented in policies/deny-github-workflow-run.yaml
//   (docs/policies/guardrails.md).
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { cli, REPO } from './helpers/cli.js';

test('policies/examples/: every case of every test file passes with a github provider configured', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-examples-'));
  try {
    const keyFile = path.join(dir, 'github-app.pem');
    await writeFile(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
    const configFile = path.join(dir, 'broker.yaml');
    await writeFile(
      configFile,
      `server:
  public_url: http://127.0.0.1:8080
issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audiences: [http://127.0.0.1:8080]
policies:
  dir: ${path.join(REPO, 'policies', 'examples')}
providers:
  jwt:
    signing_key_file: ${path.join(dir, 'signing-key.jwk')}
  github:
    app_id: 123456
    private_key_file: ${keyFile}
`,
    );
    const run = await cli(['policy', 'test', path.join(REPO, 'policies', 'examples'), '--config', configFile]);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^7 passed, 0 failed \(1 test file\)$/m);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A temporary policy directory holding the workflow_run guardrail, its tests, and the allow policy its cases name. */
async function guardrailDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-guardrails-'));
  for (const name of ['deny-github-workflow-run.yaml', 'deny-github-workflow-run.test.yaml', 'github-environment-production.yaml']) {
    await copyFile(path.join(REPO, 'policies', name), path.join(dir, name));
  }
  return dir;
}

test('policies/deny-github-workflow-run.yaml: the exemption its comment documents lets only the named workflow through', async () => {
  const dir = await guardrailDir();
  try {
    // The condition is taken from the policy's own comment, so the documented text is what runs.
    const policyFile = path.join(dir, 'deny-github-workflow-run.yaml');
    const policy = await readFile(policyFile, 'utf8');
    const condition = /^#\s+(condition: .*)$/m.exec(policy)?.[1];
    assert.ok(condition, 'deny-github-workflow-run.yaml documents a condition');
    await writeFile(policyFile, `${policy}${condition}\n`);
    const cases = await readFile(path.join(dir, 'deny-github-workflow-run.test.yaml'), 'utf8');
    assert.ok(cases.includes('publish.yml'), 'the workflow_run case runs the exempted workflow');
    await writeFile(path.join(dir, 'deny-github-workflow-run-other.test.yaml'), cases.replaceAll('publish.yml', 'other.yml'));

    const run = await cli(['policy', 'test', dir]);
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stdout, /^5 passed, 1 failed \(2 test files\)$/m);
    const failures = run.stdout.split('\n').filter((line) => line.startsWith('FAIL'));
    assert.equal(failures.length, 1, run.stdout);
    assert.match(failures[0] ?? '', /deny-github-workflow-run\.test\.yaml:\d+: workflow_run on main.* expected deny, got allow/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
