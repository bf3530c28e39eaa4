// oidc-broker policy validate | test | explain, run in-process through runCli against temp policy directories.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import type { ExplainOutput } from '../src/policy/explain.js';
import { AUDIENCE, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { cli, cliProcess, REPO } from './helpers/cli.js';
import { parseXml } from './helpers/xml.js';

const BROKER = 'https://broker.example.com';

const CONFIG = `
issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audiences: [${BROKER}]
  - name: gitlab
    issuer: https://gitlab.example.com
    audiences: [${BROKER}]
policies:
  dir: ./policies
`;

const POLICIES: Record<string, string> = {
  'deploy.yaml': `name: deploy
issuer: github
claims:
  repository: acme/api
  ref: [refs/heads/main, refs/heads/release]
grant:
  provider: jwt
  audience: https://deploy.example.com
`,
  'deny-prt.yaml': `issuer: github
effect: deny
claims:
  event_name: pull_request_target
`,
};

const PASSING = `tests:
  - name: main may deploy
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, event_name: push}
    expect: allow
  - name: pull_request_target may not
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/main, event_name: pull_request_target}
    expect: deny
`;

const FAILING = `tests:
  - name: release may deploy
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/release}
    expect: allow
  - name: feature may deploy
    policy: deploy
    claims: {repository: acme/api, ref: refs/heads/feature}
    expect: allow
`;

let root: string;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'oidc-broker-cli-policy-'));
});
after(async () => rm(root, { recursive: true, force: true }));

/** A config and a policy directory holding `files` (policies and test files); returns the config path and the directory. */
async function workspace(name: string, files: Record<string, string>, config = CONFIG): Promise<{ config: string; dir: string }> {
  const base = path.join(root, name);
  const dir = path.join(base, 'policies');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(base, 'broker.yaml'), config);
  for (const [file, text] of Object.entries(files)) await writeFile(path.join(dir, file), text);
  return { config: path.join(base, 'broker.yaml'), dir };
}

/** An unsigned JWT: offline explain decodes without verifying. */
function unsignedJwt(payload: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(payload)}.${Buffer.from('not-a-signature').toString('base64url')}`;
}

describe('oidc-broker policy validate', () => {
  test('passes the shipped policies: a count on stdout, exit 0', async () => {
    const run = await cli(['policy', 'validate', path.join(REPO, 'policies')]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^ok: \d+ policies in \d+ files\n$/);
    assert.equal(run.stderr, '');
  });

  test('a broken directory: file:line errors and a count on stderr, exit 1', async () => {
    const ws = await workspace('validate', {
      'typo.yaml': 'issuer: github\nallow-token-reuse: true\nclaims:\n  repository_owner_id: "1234567"\n  ref: main\ngrant:\n  provider: jwt\n  audience: x\n',
    });
    const run = await cli(['policy', 'validate', ws.dir, '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /typo\.yaml:2: .*allow_token_reuse/);
    assert.match(run.stderr, /^1 problem in 1 file$/m);
    assert.equal(run.stdout, '');
  });
});

describe('oidc-broker policy test', () => {
  test('all cases pass: one PASS line each, a summary, exit 0', async () => {
    const ws = await workspace('pass', { ...POLICIES, 'deploy.test.yaml': PASSING });
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^PASS .*policies\/deploy\.test\.yaml: main may deploy$/);
    assert.match(lines[1]!, /^PASS .*policies\/deploy\.test\.yaml: pull_request_target may not$/);
    assert.equal(lines[2], '2 passed, 0 failed (1 test file)');
    assert.equal(run.stderr, '');
  });

  test('a failing case: FAIL with file:line, expected and actual decision, the failing condition and token value; exit 1', async () => {
    const ws = await workspace('fail', { ...POLICIES, 'a.test.yaml': PASSING, 'b.test.yaml': FAILING });
    const run = await cli(['policy', 'test', ws.dir, '--config', ws.config]);
    assert.equal(run.code, 1);
    const lines = run.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 5, run.stdout);
    assert.match(lines[2]!, /^PASS .*b\.test\.yaml: release may deploy$/);
    assert.equal(
      lines[3]!.replace(/^FAIL .*?b\.test\.yaml/, 'FAIL b.test.yaml'),
      `FAIL b.test.yaml:6: feature may deploy - expected allow, got deny: policy 'deploy' does not match: ref in [refs/heads/main, refs/heads/release] (token: "refs/heads/feature")`,
    );
    assert.equal(lines[4], '3 passed, 1 failed (2 test files)');
  });

  test('an invalid test file: file:line errors on stderr, exit 1; the valid files still run', async () => {
    const invalid = `tests:\n  - name: typo\n    policy: deploy\n    claims: {}\n    expcet: deny\n`;
    const ws = await workspace('invalid', { ...POLICIES, 'a.test.yaml': PASSING, 'bad.test.yaml': invalid });
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /bad\.test\.yaml:5: tests\[0\]\.expcet: unknown key 'expcet' \(hint: did you mean 'expect'\?\)/);
    assert.match(run.stderr, /bad\.test\.yaml:2: tests\[0\]: expect is required/);
    assert.match(run.stdout, /^2 passed, 0 failed, 2 problems in test files \(2 test files\)$/m);
  });

  test('a case naming a missing policy: an error at its line, exit 1', async () => {
    const ws = await workspace('missing', { ...POLICIES, 'deploy.test.yaml': `tests:\n  - name: typo\n    policy: deplyo\n    claims: {}\n    expect: deny\n` });
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /deploy\.test\.yaml:3: tests\[0\]\.policy: test 'typo': no policy named 'deplyo' in the policy directory \(hint: did you mean 'deploy'\?\)/);
  });

  test('no test files: exit 1, so a CI step pointed at the wrong directory does not pass', async () => {
    const ws = await workspace('none', POLICIES);
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /no test cases found: .*policies has no \*\.test\.yaml files/);
  });

  test('policies that do not compile: the compile errors, exit 1, no case run', async () => {
    const ws = await workspace('broken', { ...POLICIES, 'broken.yaml': 'issuer: github\nclaims:\n  ref: { globb: "x" }\n', 'deploy.test.yaml': PASSING });
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /broken\.yaml:3: claims\.ref\.globb: unknown condition operator 'globb'/);
    assert.match(run.stderr, /oidc-broker: the policies do not compile: /);
    assert.doesNotMatch(run.stdout, /PASS|FAIL/);
  });
});

describe('policy test and policy explain render the grant as the exchange does', () => {
  const AWS_CONFIG = `${CONFIG}providers:\n  aws:\n    region: eu-west-1\n`;
  const AWS_POLICIES = {
    'aws-tag.yaml': `name: aws-tag
issuer: github
claims:
  repository: acme/api
grant:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/deploy-api
  session_tags:
    ref: \${ref}
`,
  };
  const UNFIT = { repository: 'acme/api', ref: 'refs/heads/fix#1' };
  const REFUSAL = "session_tag_invalid: The policy's session tag 'ref' cannot be filled from this token: claim 'ref' holds '#' (U+0023)";

  test("a `ref` holding '#' under a policy tagging `ref`: a case expecting allow fails with the exchange's reason; one expecting deny passes", async () => {
    const cases = `tests:
  - name: a fix branch may deploy
    policy: aws-tag
    claims: ${JSON.stringify(UNFIT)}
    expect: allow
  - name: a fix branch with a hash is refused
    policy: aws-tag
    claims: ${JSON.stringify(UNFIT)}
    expect: deny
  - name: main may deploy
    policy: aws-tag
    claims: {repository: acme/api, ref: refs/heads/main}
    expect: allow
`;
    const ws = await workspace('render', { ...AWS_POLICIES, 'aws-tag.test.yaml': cases }, AWS_CONFIG);
    const run = await cli(['policy', 'test', '-c', ws.config]);
    assert.equal(run.code, 1, run.stderr);
    const lines = run.stdout.trimEnd().split('\n');
    assert.ok(lines[0]!.replace(/^FAIL .*?aws-tag\.test\.yaml/, 'FAIL aws-tag.test.yaml').startsWith(`FAIL aws-tag.test.yaml:2: a fix branch may deploy - expected allow, got deny: ${REFUSAL}`), lines[0]);
    assert.match(lines[1]!, /^PASS .*aws-tag\.test\.yaml: a fix branch with a hash is refused$/);
    assert.match(lines[2]!, /^PASS .*aws-tag\.test\.yaml: main may deploy$/);
    assert.equal(lines[3], '2 passed, 1 failed (1 test file)');
  });

  test('policy explain: DENY with the reason and message the exchange gives, exit 3; the conditions all hold', async () => {
    const ws = await workspace('render-explain', AWS_POLICIES, AWS_CONFIG);
    const run = await cli(['policy', 'explain', '--policy', 'aws-tag', '--claims', '-', '--json', '-c', ws.config], { stdin: JSON.stringify({ ...UNFIT, aud: BROKER }) });
    assert.equal(run.code, 3, run.stderr);
    const output = JSON.parse(run.stdout) as ExplainOutput;
    assert.equal(output.decision, 'deny');
    assert.equal(output.reason, 'session_tag_invalid');
    assert.ok(`${output.reason}: ${output.message}`.startsWith(REFUSAL), output.message);
    assert.equal(output.evaluations[0]!.matched, true);
  });
});

describe('oidc-broker policy explain', () => {
  const failing = { repository: 'acme/api', ref: 'refs/heads/feature', event_name: 'push' };

  test('--claims FILE: the decision and a table with ✗ on the failing condition (on a terminal); exit 3 on deny', async () => {
    const ws = await workspace('explain', POLICIES);
    const claimsFile = path.join(ws.dir, '..', 'claims.json');
    await writeFile(claimsFile, JSON.stringify({ ...failing, aud: BROKER }));
    const run = await cli(['policy', 'explain', '--policy', 'deploy', '--claims', claimsFile, '-c', ws.config], { tty: { stdout: true }, env: { NO_COLOR: undefined } });
    assert.equal(run.code, 3, run.stderr);
    const lines = run.stdout.split('\n');
    assert.equal(lines[0], 'Decision: DENY (conditions_not_met)');
    assert.match(lines[1]!, /^Policy 'deploy' does not match this token: claim 'ref' is "refs\/heads\/feature"\.$/);
    assert.match(run.stdout, /^policy deploy: 1 of 2 conditions fails$/m);
    assert.match(run.stdout, /^ {2}✓ {2}repository +equals +acme\/api +"acme\/api"$/m);
    assert.match(run.stdout, /^ {2}✗ {2}ref +in +\[refs\/heads\/main, refs\/heads\/release\] +"refs\/heads\/feature"$/m);
    // Offline, the deny policy's expected value is shown: whoever runs this holds the policy files.
    assert.match(run.stdout, /^deny policy deny-prt: does not match \(1 of 1 condition fails\)$/m);
    assert.match(run.stdout, /^ {2}✗ {2}event_name +equals +pull_request_target +"push"$/m);
    assert.equal(run.stderr, '');
  });

  test('NO_COLOR (any non-empty value) on a terminal, or stdout not a terminal: yes/no instead of ✓/✗, nothing but ASCII', async () => {
    const ws = await workspace('explain-plain', POLICIES);
    const claimsFile = path.join(ws.dir, '..', 'claims.json');
    await writeFile(claimsFile, JSON.stringify({ ...failing, aud: BROKER }));
    const args = ['policy', 'explain', '--policy', 'deploy', '--claims', claimsFile, '-c', ws.config];
    const runs = [await cli(args, { tty: { stdout: true }, env: { NO_COLOR: '1' } }), await cli(args, { env: { NO_COLOR: undefined } }), await cliProcess(args, { env: { NO_COLOR: '' } })];
    for (const run of runs) {
      assert.equal(run.code, 3, run.stderr);
      assert.match(run.stdout, /^ {2}yes {2}repository +equals +acme\/api +"acme\/api"$/m);
      assert.match(run.stdout, /^ {2}no {3}ref +in +\[refs\/heads\/main, refs\/heads\/release\] +"refs\/heads\/feature"$/m);
      assert.match(run.stdout, /^[\x09\x0a\x20-\x7e]*$/, 'ASCII only, no escape sequence');
    }
    const empty = await cli(args, { tty: { stdout: true }, env: { NO_COLOR: '' } });
    assert.match(empty.stdout, /^ {2}✓ {2}repository/m, 'an empty NO_COLOR is as if unset');
  });

  test('--claims - reads stdin; an allowed decision exits 0; a missing aud is noted', async () => {
    const ws = await workspace('explain-stdin', POLICIES);
    const run = await cli(['policy', 'explain', '--policy', 'deploy', '--claims', '-', '-c', ws.config], { stdin: JSON.stringify({ repository: 'acme/api', ref: 'refs/heads/main' }) });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^note: no aud claim: evaluated with audience https:\/\/broker\.example\.com, the first configured audience of issuer 'github'$/m);
    assert.match(run.stdout, /^Decision: ALLOW \(allowed\)$/m);
  });

  test('--token: decoded without verification and said so; the issuer is found by iss', async () => {
    const ws = await workspace('explain-token', { ...POLICIES, 'gitlab.yaml': `issuer: gitlab\nclaims:\n  project_path: acme/api\ngrant:\n  provider: jwt\n  audience: https://x.example.com\n` });
    const token = unsignedJwt({ iss: 'https://gitlab.example.com', aud: BROKER, sub: 'project_path:acme/api', project_path: 'acme/api' });
    const [allowed, mismatch, fromStdin, viaFlag] = await Promise.all([
      cli(['policy', 'explain', '--policy', 'gitlab', '--token', token, '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'deploy', '--token', token, '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'gitlab', '--token', '-', '--json', '-c', ws.config], { stdin: `${token}\n` }),
      cli(['policy', 'explain', '--policy', 'gitlab', '--token', token, '--issuer', 'github', '-c', ws.config]),
    ]);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stdout, /^note: token not verified: offline explain shows what the policy would decide$/m);
    assert.match(allowed.stdout, /^Decision: ALLOW \(allowed\)$/m);
    assert.equal(mismatch.code, 3);
    assert.match(mismatch.stdout, /^Decision: DENY \(issuer_mismatch\)$/m);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    assert.equal((JSON.parse(fromStdin.stdout) as ExplainOutput).decision, 'allow');
    assert.match(fromStdin.stderr, /^oidc-broker: note: token not verified/m, 'with --json the note goes to stderr');
    assert.equal(viaFlag.code, 3);
    assert.match(viaFlag.stdout, /^Decision: DENY \(issuer_mismatch\)$/m);
  });

  test('errors exit 1 with a message', async () => {
    const ws = await workspace('explain-errors', POLICIES);
    const claimsFile = path.join(ws.dir, '..', 'claims.json');
    await writeFile(claimsFile, '{"repository": ');
    const runs = await Promise.all([
      cli(['policy', 'explain', '--policy', 'deploy', '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'deploy', '--claims', claimsFile, '--token', 'x', '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'deplo', '--claims', '-', '-c', ws.config], { stdin: '{}' }),
      cli(['policy', 'explain', '--policy', 'deploy', '--claims', claimsFile, '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'deploy', '--claims', '-', '-c', ws.config], { stdin: '[1]' }),
      cli(['policy', 'explain', '--policy', 'deploy', '--token', 'not-a-jwt', '-c', ws.config]),
      cli(['policy', 'explain', '--policy', 'deploy', '--claims', '-', '--issuer', 'gitlub', '-c', ws.config], { stdin: '{}' }),
      cli(['policy', 'explain', '--claims', '-', '-c', ws.config], { stdin: '{}' }),
    ]);
    const expected = [
      /give either --claims FILE\.json or --token JWT/,
      /give either --claims FILE\.json or --token JWT/,
      /no policy named 'deplo' in .*policies \(did you mean 'deploy'\?\)/,
      /--claims: .*claims\.json is not JSON/,
      /--claims: stdin must hold a JSON object of claims/,
      /--token: not a JWT/,
      /--issuer: 'gitlub' is not a configured issuer \(did you mean 'github'\?\)/,
      /required option '--policy <name>' not specified/,
    ];
    runs.forEach((run, i) => {
      assert.equal(run.code, 1, `run ${i}: ${run.stderr}`);
      assert.match(run.stderr, expected[i]!, `run ${i}`);
    });
  });
});

describe('policy explain --json is the HTTP explain object', () => {
  let fx: BrokerFixture;
  before(async () => {
    fx = await startBrokerFixture({
      policies: {
        'deploy.yaml': POLICIES['deploy.yaml']!.replace('issuer: github', 'issuer: local'),
        'deny-prt.yaml': POLICIES['deny-prt.yaml']!.replace('issuer: github', 'issuer: local'),
        'deny-bots.yaml': 'issuer: local\neffect: deny\nclaims:\n  actor: { glob: "bot-*" }\n',
      },
    });
  });
  after(async () => fx.close());

  for (const [name, claims] of [
    ['allowed', { repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push', actor: 'octocat' }],
    ['a condition fails, a claim is absent', { repository: 'acme/api', ref: 'refs/heads/feature' }],
    ['a deny policy matches', { repository: 'acme/api', ref: 'refs/heads/main', event_name: 'pull_request_target', actor: 'bot-1' }],
  ] as const) {
    test(name, async () => {
      const token = await fx.issuer.mint({ aud: AUDIENCE, sub: 'repo:acme/api', ...claims });
      const res = await request(fx.broker.app).post('/v1/explain').set('Authorization', `Bearer ${token}`).send({ policy: 'deploy' });
      assert.equal(res.status, 200);
      const http = res.body as ExplainOutput;
      const run = await cli(['policy', 'explain', '--policy', 'deploy', '--token', token, '--json', '-c', path.join(fx.dir, 'broker.yaml')]);
      assert.equal(run.code, http.decision === 'allow' ? 0 : 3, run.stderr);
      const offline = JSON.parse(run.stdout) as ExplainOutput;
      assert.deepEqual(Object.keys(offline), Object.keys(http));
      assert.equal(offline.explain_id, null);
      assert.match(http.explain_id ?? '', /^[0-9A-Z]{26}$/);
      // Identical but for the policies' expected values and the deny policies that do not deny, which only the offline form (the policy owner's) shows.
      const hide = (body: ExplainOutput) =>
        body.evaluations.filter((e, i) => i === 0 || e.matched || e.error !== undefined).map((e) => ({ ...e, conditions: e.conditions.map((c) => ({ ...c, expected: '(hidden)' })) }));
      assert.deepEqual(hide(offline), http.evaluations);
      assert.deepEqual({ ...offline, explain_id: null, evaluations: null }, { ...http, explain_id: null, evaluations: null });
      const offlineDeny = offline.evaluations.find((e) => e.policy === 'deny-bots');
      assert.equal(offlineDeny?.conditions[0]?.expected, 'glob bot-*');
    });
  }
});

describe('policy validate and policy test take files as well as directories', () => {
  test('validate: policy files alone or with their directory (each file once); a test file, a missing path or another file is refused (exit 1)', async () => {
    const ws = await workspace('validate-files', { ...POLICIES, 'deploy.test.yaml': PASSING, 'notes.txt': 'not a policy\n' });
    const deploy = path.join(ws.dir, 'deploy.yaml');
    const one = await cli(['policy', 'validate', '-c', ws.config, deploy]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, 'ok: 1 policy in 1 file, 2 warnings\n');
    assert.match(one.stderr, /deploy\.yaml:3: \[privileged-triggers\]/, 'linted alone: the deny policy of its directory is not there');
    const both = await cli(['policy', 'validate', '-c', ws.config, deploy, path.join(ws.dir, 'deny-prt.yaml'), ws.dir, deploy]);
    assert.equal(both.code, 0, both.stderr);
    assert.match(both.stdout, /^ok: 2 policies in 2 files/);

    const broken = await workspace('validate-broken-file', { 'typo.yaml': 'issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audeince: x\n' });
    const typo = await cli(['policy', 'validate', '-c', broken.config, path.join(broken.dir, 'typo.yaml')]);
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /typo\.yaml:6: grant\.audeince: unknown key 'audeince'/);
    assert.match(typo.stderr, /^2 problems in 1 file$/m);

    const refused: [string, string][] = [
      [path.join(ws.dir, 'deploy.test.yaml'), `${path.join(ws.dir, 'deploy.test.yaml')} is a policy test file: run 'oidc-broker policy test ${path.join(ws.dir, 'deploy.test.yaml')}'`],
      [path.join(ws.dir, 'missing.yaml'), `${path.join(ws.dir, 'missing.yaml')} does not exist`],
      [
        path.join(ws.dir, 'notes.txt'),
        `${path.join(ws.dir, 'notes.txt')} is not a policy file: expected a policy directory, a policy file (*.yaml, *.yml) or a policy test file (*.test.yaml, *.test.yml)`,
      ],
    ];
    for (const [arg, message] of refused) {
      const run = await cli(['policy', 'validate', '-c', ws.config, deploy, arg]);
      assert.deepEqual(run, { code: 1, stdout: '', stderr: `oidc-broker: ${message}\n` }, arg);
    }
  });

  test('test: a policy file runs its own test file, a test file runs alone, several paths run together against their directory', async () => {
    const ws = await workspace('test-files', { ...POLICIES, 'deploy.test.yaml': PASSING, 'other.test.yml': FAILING, 'deny-prt.yaml': POLICIES['deny-prt.yaml']! });
    const summary = (run: { stdout: string }) => run.stdout.trimEnd().split('\n').at(-1);

    const policy = await cli(['policy', 'test', '-c', ws.config, path.join(ws.dir, 'deploy.yaml')]);
    assert.equal(policy.code, 0, policy.stderr);
    assert.equal(summary(policy), '2 passed, 0 failed (1 test file)');
    assert.ok(!policy.stdout.includes('other.test.yml'));

    const testFile = await cli(['policy', 'test', '-c', ws.config, path.join(ws.dir, 'other.test.yml')]);
    assert.equal(testFile.code, 1);
    assert.equal(summary(testFile), '1 passed, 1 failed (1 test file)');

    const several = await cli(['policy', 'test', '-c', ws.config, path.join(ws.dir, 'deploy.test.yaml'), path.join(ws.dir, 'other.test.yml'), path.join(ws.dir, 'deploy.yaml')]);
    assert.equal(several.code, 1);
    assert.equal(summary(several), '3 passed, 1 failed (2 test files)');

    const noTests = await cli(['policy', 'test', '-c', ws.config, path.join(ws.dir, 'deny-prt.yaml')]);
    assert.deepEqual(noTests, {
      code: 1,
      stdout: '',
      stderr: `oidc-broker: no test cases for ${path.join(ws.dir, 'deny-prt.yaml')}: neither ${path.join(ws.dir, 'deny-prt.test.yaml')} nor ${path.join(ws.dir, 'deny-prt.test.yml')} exists\n`,
    });
    const missing = await cli(['policy', 'test', '-c', ws.config, path.join(ws.dir, 'nope.test.yaml')]);
    assert.deepEqual(missing, { code: 1, stdout: '', stderr: `oidc-broker: ${path.join(ws.dir, 'nope.test.yaml')} does not exist\n` });
  });
});

describe('policy test --format', () => {
  const HOSTILE = `tests:
  - name: "fails & <breaks> \\"quotes\\" 'apos' \\u0001 ]]>"
    policy: deploy
    claims: {repository: acme/api, ref: "refs/heads/<feature>&"}
    expect: allow
`;

  test('json: one object with the summary, every case (its failure) and every problem; exit 1 when one fails', async () => {
    const ws = await workspace('format-json', { ...POLICIES, 'a.test.yaml': PASSING, 'b.test.yaml': FAILING, 'bad.test.yaml': 'tests:\n  - name: x\n    policy: deploy\n    claims: {}\n' });
    const run = await cli(['policy', 'test', '-c', ws.config, '--format', 'json', ws.dir]);
    assert.equal(run.code, 1);
    const report = JSON.parse(run.stdout) as { summary: unknown; cases: Record<string, unknown>[]; problems: Record<string, unknown>[] };
    assert.deepEqual(report.summary, { passed: 3, failed: 1, problems: 1, test_files: 3 });
    assert.equal(report.cases.length, 4);
    assert.deepEqual(
      { ...report.cases[3], file: path.basename(report.cases[3]!.file as string) },
      {
        file: 'b.test.yaml',
        line: 6,
        name: 'feature may deploy',
        policy: 'deploy',
        expect: 'allow',
        decision: 'deny',
        audit_matches: [],
        passed: false,
        failure: `expected allow, got deny: policy 'deploy' does not match: ref in [refs/heads/main, refs/heads/release] (token: "refs/heads/feature")`,
      },
    );
    assert.equal(report.cases[0]!.failure, null);
    assert.deepEqual({ ...report.problems[0], file: path.basename(report.problems[0]!.file as string) }, { file: 'bad.test.yaml', line: 2, key: 'tests[0]', message: 'expect is required: allow or deny', hint: null });
    assert.match(run.stderr, /bad\.test\.yaml:2: tests\[0\]: expect is required/, 'problems on stderr too');
  });

  test('junit: well-formed XML, one testsuite per test file, a testcase per case with its failure, problems as errors, text escaped', async () => {
    const ws = await workspace('format-junit', { ...POLICIES, 'a.test.yaml': PASSING, 'b.test.yaml': FAILING, 'c.test.yaml': HOSTILE, 'bad.test.yaml': 'tests:\n  - name: x\n    policy: nope\n    claims: {}\n    expect: deny\n' });
    const run = await cli(['policy', 'test', '-c', ws.config, '--format', 'junit', ws.dir]);
    assert.equal(run.code, 1);
    assert.ok(run.stdout.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n'));
    const root = parseXml(run.stdout);
    assert.equal(root.name, 'testsuites');
    assert.deepEqual(root.attributes, { name: 'oidc-broker policy test', tests: '6', failures: '2', errors: '1' });
    assert.deepEqual(
      root.children.map((s) => [s.name, path.basename(s.attributes.name!), s.attributes.tests, s.attributes.failures, s.attributes.errors]),
      [
        ['testsuite', 'a.test.yaml', '2', '0', '0'],
        ['testsuite', 'b.test.yaml', '2', '1', '0'],
        ['testsuite', 'bad.test.yaml', '1', '0', '1'],
        ['testsuite', 'c.test.yaml', '1', '1', '0'],
      ],
    );
    const [a, b, bad, c] = root.children;
    assert.deepEqual(
      a!.children.map((t) => [t.name, t.attributes.name, t.children.length]),
      [
        ['testcase', 'main may deploy', 0],
        ['testcase', 'pull_request_target may not', 0],
      ],
    );
    const failed = b!.children[1]!;
    assert.equal(failed.attributes.name, 'feature may deploy');
    assert.equal(failed.attributes.line, '6');
    assert.equal(failed.children[0]!.name, 'failure');
    assert.equal(failed.children[0]!.attributes.message, `expected allow, got deny: policy 'deploy' does not match: ref in [refs/heads/main, refs/heads/release] (token: "refs/heads/feature")`);
    assert.equal(failed.children[0]!.attributes.type, 'expected_allow');
    assert.match(bad!.children[0]!.children[0]!.attributes.message!, /bad\.test\.yaml:3: tests\[0\]\.policy: .*nope/);
    assert.equal(bad!.children[0]!.children[0]!.name, 'error');
    const hostile = c!.children[0]!;
    assert.equal(hostile.attributes.name, `fails & <breaks> "quotes" 'apos' \ufffd ]]>`, 'markup escaped; a control character XML cannot hold replaced');
    assert.match(hostile.children[0]!.attributes.message!, /\(token: "refs\/heads\/<feature>&"\)$/);
    assert.match(hostile.children[0]!.text, /^policy deploy: expected allow, got deny: /);
  });

  test('an unknown format is refused (exit 1) naming the choices', async () => {
    const ws = await workspace('format-bad', { ...POLICIES, 'a.test.yaml': PASSING });
    const run = await cli(['policy', 'test', '-c', ws.config, '--format', 'tap']);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /option '--format <format>' argument 'tap' is invalid\. Allowed choices are text, json, junit\./);
  });
});

describe('colour and glyphs in policy test', () => {
  test('on a terminal PASS and FAIL are coloured; NO_COLOR or a pipe: plain text with no escape sequence', async () => {
    const ws = await workspace('colour', { ...POLICIES, 'b.test.yaml': FAILING });
    const args = ['policy', 'test', '-c', ws.config];
    const terminal = await cli(args, { tty: { stdout: true }, env: { NO_COLOR: undefined } });
    assert.match(terminal.stdout, /^\u001b\[32mPASS\u001b\[0m .*: release may deploy$/m);
    assert.match(terminal.stdout, /^\u001b\[31mFAIL\u001b\[0m .*: feature may deploy — expected allow/m);
    for (const run of [await cli(args, { tty: { stdout: true }, env: { NO_COLOR: 'true' } }), await cliProcess(args)]) {
      assert.equal(run.code, 1);
      assert.match(run.stdout, /^PASS .*: release may deploy$/m);
      assert.match(run.stdout, /^FAIL .*: feature may deploy - expected allow/m);
      assert.match(run.stdout, /^[\x09\x0a\x20-\x7e]*$/, 'ASCII only, no escape sequence');
    }
  });
});
