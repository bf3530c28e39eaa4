// The example policies under policies/examples/ (docs/providers.md, "GitHub App
// tokens: a walkthrough"): they need a providers.github block, which the
// development defaults lack, so they are tested through `oidc-broker policy
// test` with a config that has one.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
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
