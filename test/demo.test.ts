// `npm run demo` end to end: the script runs as a child process (issuer, STS emulator and broker
// on loopback), exits 0, prints every step, and never prints a secret in full.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function run(env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`demo did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('npm run demo walks through every step and prints no secret in full', { timeout: 90_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-demo-test-'));
  try {
    const secretsFile = path.join(dir, 'secrets.json');
    const env: NodeJS.ProcessEnv = { ...process.env, OIDC_BROKER_DEMO_SECRETS_FILE: secretsFile };
    delete env.FORCE_COLOR;
    const { code, stdout, stderr } = await run(env, 80_000);
    assert.equal(code, 0, `demo exited ${code}\n${stdout}\n${stderr}`);

    for (const headline of [
      '1. Mint a CI token for acme/api on refs/heads/main',
      '2. Exchange it for AWS credentials',
      '3. Exchange a fresh token for a broker-signed token',
      '4. A denial: a token from a feature branch',
      '5. Query the audit log as an auditor',
    ]) {
      assert.ok(stdout.includes(headline), `missing headline ${headline}`);
    }
    assert.doesNotMatch(stdout, /\u001b\[/, 'no colours when stdout is not a TTY');
    // Step 2: an issued temporary AWS credential, and what STS received.
    assert.match(stdout, /issued ASIA[A-Z0-9]{16} \(issuance id /);
    assert.match(stdout, /"RoleSessionName": "ci-4242"/);
    assert.match(stdout, /"SecretAccessKey": ".{4}…\(redacted\)"/);
    // Step 3: verified against the JWKS.
    assert.match(stdout, /verified with jose against the broker's JWKS/);
    // Step 4: the 403 and its reason, the explain over HTTP (hidden) and offline (shown).
    assert.match(stdout, /HTTP 403/);
    assert.ok(stdout.includes(`Policy 'demo-aws-deploy' does not match this token: claim 'ref' is \\"refs/heads/feature/login\\".`));
    assert.match(stdout, /"reason": "conditions_not_met"/);
    assert.match(stdout, /"expected": "\(hidden\)"/);
    assert.match(stdout, /npx oidc-broker policy explain --policy demo-aws-deploy/);
    assert.match(stdout, /no {3}ref {9}equals {4}refs\/heads\/main/, 'stdout is not a terminal: no glyphs');
    // Step 5: the audit events as jq -c prints them, and the chain verification.
    assert.match(stdout, /^ {4}\{"time":"[^"]+","decision":"issued","policy":"demo-aws-deploy","subject":"repo:acme\/api:ref:refs\/heads\/main","credential_id":"ASIA[A-Z0-9]{16}"\}$/m);
    assert.match(stdout, /^ {4}\{"time":"[^"]+","decision":"denied","policy":"demo-aws-deploy","subject":"repo:acme\/api:ref:refs\/heads\/feature\/login","credential_id":null\}$/m);
    assert.match(stdout, /"ok": true/);
    assert.match(stdout, /Demo finished/);

    // The broker's real port, in the iss of the tokens it signs and in the aud CI tokens are minted for; never the default 8080.
    const brokerUrl = /^ {2}broker: +(http:\/\/127\.0\.0\.1:\d+)$/m.exec(stdout)?.[1];
    assert.ok(brokerUrl !== undefined, 'the broker URL is printed');
    assert.ok(stdout.includes(`"iss": "${brokerUrl}"`), "the broker-signed token's iss is the broker's URL");
    assert.ok(stdout.includes(`"aud": "${brokerUrl}"`), "the CI token's aud is the broker's URL");
    assert.doesNotMatch(stdout, /127\.0\.0\.1:8080/);

    // Under each curl command, what it prints: nothing for TOKEN=$(curl ...), the JSON for | jq ., one JSON object a line for jq -c.
    const lines = stdout.split('\n');
    const curls = lines.flatMap((line, i) => (line.startsWith('  $ ') && line.includes('curl ') ? [i] : []));
    assert.ok(curls.length >= 10, `the curl calls: ${curls.length}`);
    for (const i of curls) {
      const command = lines[i]!;
      const printed: string[] = [];
      for (let j = i + 1; lines[j]?.startsWith('    ') === true; j++) printed.push(lines[j]!);
      if (command.startsWith('  $ TOKEN=$(curl ')) assert.deepEqual(printed, [], command);
      else if (command.endsWith(' | jq .')) assert.doesNotThrow(() => JSON.parse(printed.join('\n')), command);
      else if (command.endsWith(`| jq -c '.events[] | {time, decision, policy, subject, credential_id}'`)) {
        assert.ok(printed.length >= 4, command);
        for (const line of printed) assert.deepEqual(Object.keys(JSON.parse(line) as object), ['time', 'decision', 'policy', 'subject', 'credential_id'], line);
      } else assert.fail(`a curl line whose output is not shown as curl prints it: ${command}`);
    }
    // Nothing but the demo's own lines: no SDK notice in the middle, on either stream.
    assert.equal(stderr, '');
    assert.doesNotMatch(stdout, /Warning|NodeVersionSupport|AWS SDK/);

    // No secret in full: the emulator's SecretAccessKey/SessionToken, the CI tokens, the broker token, the auditor token.
    const secrets = JSON.parse(await readFile(secretsFile, 'utf8')) as string[];
    assert.ok(secrets.length >= 8, `expected the demo's secrets, got ${secrets.length}`);
    assert.ok(secrets.some((s) => s.startsWith('IQoJb3JpZ2luX2VjE')), 'the emulator session token is among the checked secrets');
    const everything = stdout + stderr;
    for (const secret of secrets) assert.ok(!everything.includes(secret), `a secret was printed in full: ${secret.slice(0, 12)}…`);
    // And by shape, independently of the list: no whole JWT, no whole session token.
    assert.doesNotMatch(everything, /eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}/);
    assert.doesNotMatch(everything, /IQoJb3JpZ2luX2VjE[A-Za-z0-9+/]{20,}/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
