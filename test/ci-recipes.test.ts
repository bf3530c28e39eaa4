// The CI components in ci/ (GitLab CI/CD component, CircleCI orb, Buildkite
// plugin), each run the way its CI would: its script rendered from its
// inputs, in bash, with the environment the CI sets and a stand-in for the
// CI's token CLI, exchanging through the single-file bundle at a real broker.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { parse } from 'yaml';
import { REPO } from './helpers/cli.js';
import { startExchangeSetup, type ExchangeSetup } from './helpers/exchange-setup.js';

const CI = path.join(REPO, 'ci');
const EXCHANGE_COMMAND = `node ${path.join(REPO, 'client', 'dist', 'oidc-broker-exchange.cjs')} --retry-base-delay 0.01`;

let setup: ExchangeSetup;
let dir: string;
let bin: string;
let log: string;

/**
 * Stand-ins for `buildkite-agent oidc request-token --audience A [--claim C]`
 * and `circleci run oidc get --claims '{"aud":A}'`: each mints a token for A
 * at the test issuer and logs how it was called.
 */
const FAKE_CLI = `#!/usr/bin/env node
const fs = require('node:fs');
const args = process.argv.slice(2);
const flag = (name) => args[args.indexOf(name) + 1];
const aud = args.includes('--audience') ? flag('--audience') : JSON.parse(flag('--claims')).aud;
fs.appendFileSync(process.env.FAKE_CI_LOG, JSON.stringify(args) + '\\n');
fetch(process.env.FAKE_CI_ISSUER + '/token?format=raw', {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ ...JSON.parse(process.env.FAKE_CI_CLAIMS), aud }),
}).then(async (res) => process.stdout.write(await res.text()));
`;

before(async () => {
  setup = await startExchangeSetup();
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-ci-recipes-'));
  bin = path.join(dir, 'bin');
  log = path.join(dir, 'ci-cli.log');
  await mkdir(bin);
  for (const name of ['buildkite-agent', 'circleci']) {
    await writeFile(path.join(bin, name), FAKE_CLI);
    await chmod(path.join(bin, name), 0o755);
  }
});

after(async () => {
  await setup.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  setup.reset();
  await writeFile(log, '');
});

interface BashRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `bash -c script` with only `env`, PATH (the fake CLIs first) and what the fake CLIs need. */
async function bash(script: string, env: Record<string, string>, shellOptions: string[] = []): Promise<BashRun> {
  const child = spawn('bash', [...shellOptions, '-c', script], {
    cwd: dir,
    env: {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      HOME: dir,
      FAKE_CI_LOG: log,
      FAKE_CI_ISSUER: setup.aws.fx.issuer.url,
      FAKE_CI_CLAIMS: JSON.stringify(setup.steer.claims),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stdout, stderr };
}

const cliCalls = async () => (await readFile(log, 'utf8')).split('\n').filter(Boolean).map((line) => JSON.parse(line) as string[]);
const issuedKeyId = () => setup.aws.sts.requests.at(-1)!.credentials!.AccessKeyId;

describe('GitLab CI/CD component (ci/gitlab/templates/oidc-broker.yml)', () => {
  /** The component as GitLab renders it: `$[[ inputs.x ]]` replaced by the given inputs or the spec's defaults. */
  async function render(inputs: Record<string, string>) {
    const [specText, jobText] = (await readFile(path.join(CI, 'gitlab', 'templates', 'oidc-broker.yml'), 'utf8')).split('\n---\n');
    const spec = parse(specText!) as { spec: { inputs: Record<string, { default?: unknown }> } };
    const values: Record<string, string> = {};
    for (const [name, input] of Object.entries(spec.spec.inputs)) if (input.default !== undefined) values[name] = String(input.default);
    Object.assign(values, inputs);
    const rendered = jobText!.replace(/\$\[\[ inputs\.([a-z-]+) \]\]/g, (_, name: string) => {
      assert.ok(name in values, `input ${name} has a value`);
      return values[name]!;
    });
    return (parse(rendered) as Record<string, { id_tokens: Record<string, { aud: string }>; variables: Record<string, string>; before_script: string[] }>)['.oidc-broker']!;
  }

  /** A job that extends `.oidc-broker`: before_script then script in one shell, as the runner runs them (errexit, pipefail). */
  async function runJob(inputs: Record<string, string>, script: string[]) {
    const job = await render({ 'exchange-command': EXCHANGE_COMMAND, ...inputs });
    const token = await setup.mint(job.id_tokens.OIDC_BROKER_ID_TOKEN!.aud);
    return { job, run: await bash([...job.before_script, ...script].join('\n'), { ...job.variables, OIDC_BROKER_ID_TOKEN: token }, ['-e', '-o', 'pipefail']) };
  }

  test('the ID token is for broker-url; the job script sees the AWS credential; a 503 is retried', async () => {
    setup.steer.failFirst = 1;
    const { job, run } = await runJob({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy' }, ['echo "key=$AWS_ACCESS_KEY_ID region=$AWS_REGION creds=${OIDC_BROKER_CREDS-unset}"']);
    assert.equal(job.id_tokens.OIDC_BROKER_ID_TOKEN!.aud, setup.proxyUrl);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `key=${issuedKeyId()} region=eu-west-1 creds=unset\n`);
    assert.deepEqual(setup.seen.exchanges, ['POST /v1/exchange?format=env', 'POST /v1/exchange?format=env']);
    assert.match(run.stderr, /^oidc-broker: attempt 1 of 3 failed: The broker answered HTTP 503/);
  });

  test('a denial stops the job before its script, with the reason', async () => {
    setup.steer.claims = { ...setup.steer.claims, ref: 'refs/heads/feature' };
    const { run } = await runJob({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy' }, ['echo script ran']);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^oidc-broker: The broker answered HTTP 403 access_denied: Policy 'aws-deploy' does not match this token: claim 'ref' is "refs\/heads\/feature"\./);
    assert.equal(setup.seen.exchanges.length, 1);
  });
});

describe('Buildkite plugin (ci/buildkite/plugin.yml, hooks/pre-command)', () => {
  /** The agent sources the hook, then runs the command with what it exported. */
  const runStep = (config: Record<string, string>, command: string) =>
    bash(`source ${path.join(CI, 'buildkite', 'hooks', 'pre-command')}\n${command}`, {
      BUILDKITE_PLUGIN_OIDC_BROKER_EXCHANGE_COMMAND: EXCHANGE_COMMAND,
      ...Object.fromEntries(Object.entries(config).map(([name, value]) => [`BUILDKITE_PLUGIN_OIDC_BROKER_${name.toUpperCase().replace(/-/g, '_')}`, value])),
    });

  test('every property the hook reads is in plugin.yml', async () => {
    const plugin = parse(await readFile(path.join(CI, 'buildkite', 'plugin.yml'), 'utf8')) as { configuration: { properties: Record<string, unknown> } };
    const hook = await readFile(path.join(CI, 'buildkite', 'hooks', 'pre-command'), 'utf8');
    const read = [...hook.matchAll(/\$\{prefix\}_([A-Z_]+)/g)].map((m) => m[1]!.toLowerCase().replace(/_/g, '-'));
    assert.deepEqual([...new Set(read)].sort(), Object.keys(plugin.configuration.properties).sort());
  });

  test('a fresh token per attempt with the audience and claims asked for; the command sees the credential', async () => {
    setup.steer.failFirst = 1;
    const run = await runStep({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy', 'duration-seconds': '900' }, 'echo "key=$AWS_ACCESS_KEY_ID"');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `key=${issuedKeyId()}\n`);
    const expected = ['oidc', 'request-token', '--audience', setup.proxyUrl, '--claim', 'organization_id,pipeline_id'];
    assert.deepEqual(await cliCalls(), [expected, expected]);
    assert.equal(setup.aws.sts.requests.at(-1)!.DurationSeconds, 900);
    assert.match(run.stderr, /oidc-broker: exchanged this job's token under policy aws-deploy\n$/);
  });

  test('without broker-url the hook fails, naming it', async () => {
    const run = await runStep({ policy: 'aws-deploy' }, 'echo command ran');
    assert.notEqual(run.code, 0);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /the oidc-broker plugin needs broker-url/);
    assert.deepEqual(await cliCalls(), []);
  });

  test('a denial fails the hook, so the command never runs', async () => {
    setup.steer.claims = { ...setup.steer.claims, ref: 'refs/heads/feature' };
    const run = await runStep({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy', claims: '' }, 'echo command ran');
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.deepEqual(await cliCalls(), [['oidc', 'request-token', '--audience', setup.proxyUrl]]);
    assert.match(run.stderr, /HTTP 403 access_denied/);
  });
});

describe('CircleCI orb (ci/circleci/orb/src/)', () => {
  /** The with-credentials command as CircleCI packs and runs it: `<< parameters.x >>` replaced, the script included, its environment set. */
  async function runCommand(parameters: Record<string, string>) {
    const orb = path.join(CI, 'circleci', 'orb', 'src');
    const command = parse(await readFile(path.join(orb, 'commands', 'with-credentials.yml'), 'utf8')) as {
      parameters: Record<string, { default?: unknown }>;
      steps: { run: { environment: Record<string, string>; command: string } }[];
    };
    const values: Record<string, string> = {};
    for (const [name, parameter] of Object.entries(command.parameters)) if (parameter.default !== undefined) values[name] = String(parameter.default);
    Object.assign(values, parameters);
    const fill = (text: string) => text.replace(/<< parameters\.([a-z-]+) >>/g, (_, name: string) => values[name]!);
    const { environment, command: script } = command.steps[0]!.run;
    const include = /^<< include\((scripts\/[a-z-]+\.sh)\) >>$/.exec(script);
    assert.ok(include, 'the step runs an included script');
    return bash(await readFile(path.join(orb, include[1]!), 'utf8'), Object.fromEntries(Object.entries(environment).map(([name, value]) => [name, fill(value)])));
  }

  test('a fresh token per attempt for the broker-url audience; the command runs in the same shell with the credential', async () => {
    setup.steer.failFirst = 1;
    const run = await runCommand({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy', command: 'echo "key=$AWS_ACCESS_KEY_ID"', 'exchange-command': EXCHANGE_COMMAND });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `key=${issuedKeyId()}\n`);
    const expected = ['run', 'oidc', 'get', '--claims', JSON.stringify({ aud: setup.proxyUrl })];
    assert.deepEqual(await cliCalls(), [expected, expected]);
  });

  test('a denial fails the step and the command never runs', async () => {
    setup.steer.claims = { ...setup.steer.claims, ref: 'refs/heads/feature' };
    const run = await runCommand({ 'broker-url': setup.proxyUrl, policy: 'aws-deploy', command: 'echo command ran', 'exchange-command': EXCHANGE_COMMAND, 'max-attempts': '5' });
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.equal(setup.seen.exchanges.length, 1);
    assert.match(run.stderr, /HTTP 403 access_denied/);
  });
});
