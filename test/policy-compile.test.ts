// compilePolicies (docs/policies/reference.md): every invalid policy
// is refused at load with file, line and key path; a valid one compiles to an
// immutable, ready-to-evaluate set.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileContext, loadConfig } from '../src/config.js';
import { compilePolicies } from '../src/policy/compile.js';
import { loadPolicyDir } from '../src/policy/load.js';
import type { CompileContext, PolicyIssue, PolicySet } from '../src/policy/types.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/policies/', import.meta.url));
const REPO_POLICIES = fileURLToPath(new URL('../policies/', import.meta.url));

const CTX: CompileContext = {
  issuers: new Map([
    ['github', { audiences: ['https://broker.example.com'] , tenantClaims: [] }],
    ['gitlab', { audiences: ['https://broker.example.com', 'https://gitlab-broker.example.com'] , tenantClaims: [] }],
  ]),
  providers: new Set(['jwt']),
};

/** A minimal valid allow policy; rows replace or add lines. */
const GRANT = ['grant:', '  provider: jwt', '  audience: https://deploy.example.com'];

function compileOne(lines: string[], file = 'p.yaml') {
  return compilePolicies([{ path: file, text: `${lines.join('\n')}\n` }], CTX);
}

function issuesOf(lines: string[], file = 'p.yaml'): PolicyIssue[] {
  const result = compileOne(lines, file);
  assert.equal(result.ok, false, 'expected the policy to be refused');
  return result.ok ? [] : result.issues;
}

function setOf(lines: string[], file = 'p.yaml'): PolicySet {
  const result = compileOne(lines, file);
  if (!result.ok) assert.fail(`expected the policy to compile, got ${JSON.stringify(result.issues, null, 2)}`);
  return result.set;
}

interface ExpectedIssue {
  line: number | undefined;
  keyPath: string;
  message: string | RegExp;
  hint?: string | RegExp;
}

function assertIssues(actual: PolicyIssue[], expected: ExpectedIssue[]): void {
  const show = JSON.stringify(actual, null, 2);
  assert.equal(actual.length, expected.length, `issue count; got ${show}`);
  expected.forEach((want, i) => {
    const got = actual[i];
    assert.ok(got);
    assert.equal(got.file, 'p.yaml');
    assert.equal(got.line, want.line, `line of issue ${i}; got ${show}`);
    assert.equal(got.keyPath, want.keyPath, `keyPath of issue ${i}; got ${show}`);
    if (typeof want.message === 'string') assert.equal(got.message, want.message);
    else assert.match(got.message, want.message);
    if (want.hint === undefined) assert.equal(got.hint, undefined, `no hint expected on issue ${i}; got ${show}`);
    else if (typeof want.hint === 'string') assert.equal(got.hint, want.hint);
    else assert.match(got.hint ?? '', want.hint);
  });
}

describe('each invalid policy is refused with its line and key path', () => {
  const rows: { name: string; lines: string[]; issues: ExpectedIssue[] }[] = [
    {
      name: 'unknown top-level key, differing only by - vs _',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'allow-token-reuse: true', ...GRANT],
      issues: [{ line: 4, keyPath: 'allow-token-reuse', message: "unknown key 'allow-token-reuse'", hint: "did you mean 'allow_token_reuse'?" }],
    },
    {
      name: 'unknown key within a small edit distance',
      lines: ['issuer: github', 'descripton: typo', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 2, keyPath: 'descripton', message: "unknown key 'descripton'", hint: "did you mean 'description'?" }],
    },
    {
      name: 'unknown key without a near miss gets no hint',
      lines: ['issuer: github', 'colour: blue', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 2, keyPath: 'colour', message: "unknown key 'colour'" }],
    },
    {
      name: 'unknown grant key, cut short',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', ...GRANT, '  max_duration: 900'],
      issues: [{ line: 7, keyPath: 'grant.max_duration', message: "unknown key 'max_duration'", hint: "did you mean 'max_duration_seconds'?" }],
    },
    {
      name: 'unknown condition operator',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  ref: { globs: "refs/heads/*" }', ...GRANT],
      issues: [{ line: 4, keyPath: 'claims.ref.globs', message: "unknown condition operator 'globs'", hint: "did you mean 'glob'?" }],
    },
    {
      name: 'regex with a backreference',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  sub:', '    regex: "(a)\\\\1"', ...GRANT],
      issues: [{ line: 5, keyPath: 'claims.sub.regex', message: 'invalid or unsupported regex: invalid escape sequence: `\\1`', hint: /no backreferences, lookahead or lookbehind/ }],
    },
    {
      name: 'regex with a lookahead',
      lines: ['issuer: github', 'claims:', '  sub: { regex: "repo:acme/(?=api)" }', ...GRANT],
      issues: [{ line: 3, keyPath: 'claims.sub.regex', message: /invalid or unsupported regex: invalid or unsupported Perl syntax: `\(\?=`/, hint: /RE2 syntax/ }],
    },
    {
      name: 'regex that would close the anchoring group',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  sub: { regex: "a)|(b" }', ...GRANT],
      issues: [{ line: 4, keyPath: 'claims.sub.regex', message: /invalid or unsupported regex/, hint: /RE2 syntax/ }],
    },
    {
      name: 'CEL condition that does not compile: refused at its line, with the position in the expression',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', "condition: 'claims.run_attempt == \"1\" && claim.ref == \"x\"'", ...GRANT],
      issues: [{ line: 4, keyPath: 'condition', message: "invalid CEL condition at 1:30: undeclared reference to 'claim' (only 'claims' is defined); did you mean 'claims'?", hint: /CEL expression over `claims`/ }],
    },
    {
      name: 'deny policy with a grant',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  event_name: pull_request_target', ...GRANT],
      issues: [{ line: 5, keyPath: 'grant', message: 'a deny policy cannot have a grant', hint: 'remove `grant`, or set effect: allow' }],
    },
    {
      name: 'allow policy without a grant: the line of the map that lacks it',
      lines: ['# a comment first', 'issuer: github', 'claims:', '  repository: acme/api'],
      issues: [{ line: 2, keyPath: 'grant', message: 'an allow policy needs a grant', hint: /provider/ }],
    },
    {
      name: 'allow policy without claim conditions is too broad',
      lines: ['issuer: github', ...GRANT],
      issues: [{ line: 1, keyPath: 'claims', message: 'an allow policy needs at least one claim condition', hint: /trust every token of issuer 'github'/ }],
    },
    {
      name: 'allow policy with an empty claims map is too broad',
      lines: ['issuer: github', 'claims: {}', ...GRANT],
      issues: [{ line: 2, keyPath: 'claims', message: 'an allow policy needs at least one claim condition', hint: /every token/ }],
    },
    {
      name: 'issuer missing',
      lines: ['claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'issuer', message: 'issuer is required', hint: 'name one of the configured issuers: github, gitlab' }],
    },
    {
      name: 'issuer not configured, near miss',
      lines: ['issuer: githb', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'issuer', message: "issuer 'githb' is not configured", hint: "did you mean 'github'?" }],
    },
    {
      name: 'issuer not configured',
      lines: ['issuer: circleci', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'issuer', message: "issuer 'circleci' is not configured", hint: 'configured issuers: github, gitlab' }],
    },
    {
      name: "audience not one of the issuer's audiences",
      lines: ['issuer: github', 'audience: https://gitlab-broker.example.com', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 2, keyPath: 'audience', message: "audience 'https://gitlab-broker.example.com' is not one of issuer 'github''s configured audiences", hint: 'accepted: https://broker.example.com' }],
    },
    {
      name: 'provider not configured',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', '  provider: aws', '  role_arn: arn:aws:iam::123456789012:role/deploy'],
      issues: [{ line: 5, keyPath: 'grant.provider', message: "provider 'aws' is not configured/supported", hint: 'configured providers: jwt' }],
    },
    {
      name: 'provider unknown',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', '  provider: jtw', '  audience: x'],
      issues: [{ line: 5, keyPath: 'grant.provider', message: "unknown provider 'jtw'", hint: "did you mean 'jwt'?" }],
    },
    {
      name: 'grant without provider',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', '  audience: x'],
      issues: [{ line: 4, keyPath: 'grant.provider', message: 'grant.provider is required', hint: 'one of aws, gcp, github, jwt' }],
    },
    {
      name: 'jwt grant without audience',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', '  provider: jwt'],
      issues: [{ line: 4, keyPath: 'grant.audience', message: 'grant.audience is required for provider jwt', hint: /verify/ }],
    },
    {
      name: 'jwt grant overriding registered claims',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', ...GRANT, '  claims:', '    repo: ${repository}', '    sub: ${repository}', '    exp: "9999999999"'],
      issues: [
        { line: 9, keyPath: 'grant.claims.sub', message: "claim 'sub' is set by the broker and cannot be overridden", hint: /iss, sub, aud, exp, nbf, iat, jti/ },
        { line: 10, keyPath: 'grant.claims.exp', message: "claim 'exp' is set by the broker and cannot be overridden", hint: /reserved/ },
      ],
    },
    {
      name: 'jwt grant claim that is not a string',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', ...GRANT, '  claims:', '    tier: 1'],
      issues: [{ line: 8, keyPath: 'grant.claims.tier', message: 'expected a string template, not 1', hint: 'quote it' }],
    },
    {
      name: 'template errors',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', '  provider: jwt', '  audience: https://${host', '  claims:', '    empty: x-${}'],
      issues: [
        { line: 6, keyPath: 'grant.audience', message: /^invalid template: unterminated '\$\{' at character 9/ },
        { line: 8, keyPath: 'grant.claims.empty', message: /^invalid template: empty claim name/ },
      ],
    },
    ...[30, 43_201, '"900"', 900.5].map((value) => ({
      name: `max_duration_seconds: ${value}`,
      lines: ['issuer: github', 'claims:', '  repository: acme/api', ...GRANT, `  max_duration_seconds: ${value}`],
      issues: [{ line: 7, keyPath: 'grant.max_duration_seconds', message: /^max_duration_seconds must be an integer from 60 to 43200/ }],
    })),
    {
      name: 'name with a bad character',
      lines: ['name: deploy prod', 'issuer: github', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'name', message: "invalid policy name 'deploy prod'", hint: /letters, digits/ }],
    },
    {
      name: 'name starting with -',
      lines: ['issuer: github', 'name: -deploy', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 2, keyPath: 'name', message: "invalid policy name '-deploy'", hint: /starting with a letter or digit/ }],
    },
    {
      name: 'name of 129 characters',
      lines: [`name: ${'a'.repeat(129)}`, 'issuer: github', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'name', message: /^invalid policy name 'a{100}…'$/, hint: /1 to 128/ }],
    },
    {
      name: 'name not a string',
      lines: ['name: [a]', 'issuer: github', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 1, keyPath: 'name', message: 'name must be a string', hint: 'quote it' }],
    },
    {
      name: 'effect with the wrong case',
      lines: ['issuer: github', 'effect: Deny', 'claims:', '  event_name: pull_request_target'],
      issues: [{ line: 2, keyPath: 'effect', message: "effect must be allow or deny, not 'Deny'", hint: "did you mean 'deny'?" }],
    },
    {
      name: 'allow_token_reuse not a boolean',
      lines: ['issuer: github', 'allow_token_reuse: "yes"', 'claims:', '  repository: acme/api', ...GRANT],
      issues: [{ line: 2, keyPath: 'allow_token_reuse', message: "allow_token_reuse must be true or false, not 'yes'" }],
    },
    {
      name: 'allow_token_reuse on a deny policy',
      lines: ['issuer: github', 'effect: deny', 'allow_token_reuse: true', 'claims:', '  event_name: pull_request_target'],
      issues: [{ line: 3, keyPath: 'allow_token_reuse', message: 'allow_token_reuse applies only to allow policies', hint: /remove it/ }],
    },
    {
      name: 'null condition',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  environment:', ...GRANT],
      issues: [{ line: 4, keyPath: 'claims.environment', message: 'a null condition matches nothing', hint: /exists: false/ }],
    },
    {
      name: 'empty list',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  event_name: []'],
      issues: [{ line: 4, keyPath: 'claims.event_name', message: 'a list condition needs at least one value' }],
    },
    {
      name: 'empty in list',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  event_name: { in: [] }'],
      issues: [{ line: 4, keyPath: 'claims.event_name.in', message: 'a list condition needs at least one value' }],
    },
    {
      name: 'list entry that is not a scalar',
      lines: ['issuer: github', 'claims:', '  ref:', '    - refs/heads/main', '    - [refs/heads/dev]', ...GRANT],
      issues: [{ line: 5, keyPath: 'claims.ref[1]', message: 'expected a string, number or boolean, not a list' }],
    },
    {
      name: 'number too large to compare exactly',
      lines: ['issuer: github', 'claims:', '  repository_id: 12345678901234567890', ...GRANT],
      issues: [{ line: 3, keyPath: 'claims.repository_id', message: 'the number 12345678901234567000 cannot be compared exactly', hint: 'quote it as a string' }],
    },
    {
      name: 'condition map with two operators',
      lines: ['issuer: github', 'claims:', '  ref: { glob: "refs/*", regex: "refs/.*" }', ...GRANT],
      issues: [{ line: 3, keyPath: 'claims.ref', message: 'a condition map holds exactly one of in, glob, regex, exists', hint: /separate policies/ }],
    },
    {
      name: 'empty condition map',
      lines: ['issuer: github', 'claims:', '  ref: {}', ...GRANT],
      issues: [{ line: 3, keyPath: 'claims.ref', message: 'a condition map holds exactly one of in, glob, regex, exists' }],
    },
    {
      name: 'exists not a boolean',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  env:', '    exists: "yes"'],
      issues: [{ line: 5, keyPath: 'claims.env.exists', message: 'exists must be true or false' }],
    },
    {
      name: 'glob not a string',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  run: { glob: 5 }'],
      issues: [{ line: 4, keyPath: 'claims.run.glob', message: 'glob must be a string pattern', hint: 'quote it' }],
    },
    {
      name: 'JSON Pointer with a bad ~ escape',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  /a~2b: x'],
      issues: [{ line: 4, keyPath: 'claims./a~2b', message: "invalid JSON Pointer '/a~2b': '~' must be followed by 0 or 1 (RFC 6901)" }],
    },
    {
      name: 'claims not a map',
      lines: ['issuer: github', 'effect: deny', 'claims: [repository]'],
      issues: [{ line: 3, keyPath: 'claims', message: 'claims must be a map of claim name to condition' }],
    },
    {
      name: 'YAML syntax error',
      lines: ['issuer: github', 'claims:', '  repository: acme/api: x', ...GRANT],
      issues: [{ line: 3, keyPath: '', message: 'YAML syntax error: Nested mappings are not allowed in compact mappings' }],
    },
    {
      name: 'YAML indentation error',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', ' ref: refs/heads/main', ...GRANT],
      issues: [{ line: 4, keyPath: '', message: 'YAML syntax error: All mapping items must start at the same column' }],
    },
    {
      name: 'duplicate key',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  ref: refs/heads/main', '  repository: acme/web', ...GRANT],
      issues: [{ line: 5, keyPath: '', message: "duplicate key 'repository' (each key may appear once per map)" }],
    },
    {
      name: 'unknown YAML tag',
      lines: ['issuer: github', 'claims:', '  repository: !secret acme/api', ...GRANT],
      issues: [{ line: 3, keyPath: '', message: 'YAML: Unresolved tag: !secret' }],
    },
    {
      name: 'collection as a key',
      lines: ['issuer: github', 'claims:', '  ? [a, b]', '  : x', ...GRANT],
      issues: [{ line: 3, keyPath: '', message: 'map keys must be plain strings' }],
    },
    {
      name: 'more than one document',
      lines: ['issuer: github', '---', 'issuer: gitlab'],
      issues: [{ line: 2, keyPath: '', message: /^YAML syntax error: Source contains multiple documents/ }],
    },
    {
      name: 'empty file',
      lines: ['# nothing here'],
      issues: [{ line: 1, keyPath: '', message: 'the file is empty: a policy is a YAML map' }],
    },
    {
      name: 'not a map',
      lines: ['- issuer: github'],
      issues: [{ line: 1, keyPath: '', message: 'a policy must be a YAML map of keys' }],
    },
    {
      name: 'several problems in one file are all reported, top to bottom',
      lines: ['isuer: github', 'effect: allow', 'claims:', '  ref: { regex: "(" }', 'grant:', '  provider: jwt', '  audience: ${}', 'condition: "claims.x =="'],
      issues: [
        { line: 1, keyPath: 'isuer', message: "unknown key 'isuer'", hint: "did you mean 'issuer'?" },
        { line: 1, keyPath: 'issuer', message: 'issuer is required', hint: /configured issuers/ },
        { line: 4, keyPath: 'claims.ref.regex', message: /invalid or unsupported regex: missing closing \)/, hint: /RE2/ },
        { line: 7, keyPath: 'grant.audience', message: /empty claim name/ },
        { line: 8, keyPath: 'condition', message: /^invalid CEL condition at 1:\d+: syntax error/, hint: /CEL/ },
      ],
    },
  ];
  for (const row of rows) {
    test(row.name, () => assertIssues(issuesOf(row.lines), row.issues));
  }
});

describe('names are unique across files', () => {
  const policy = (name: string | undefined): string =>
    `${name === undefined ? '' : `name: ${name}\n`}issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: x\n`;

  test('an explicit duplicate names both files, at the second name line', () => {
    const result = compilePolicies(
      [
        { path: 'policies/a.yaml', text: policy('deploy') },
        { path: 'policies/b.yaml', text: `# comment\n${policy('deploy')}` },
      ],
      CTX,
    );
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.deepEqual(result.issues, [
      {
        file: 'policies/b.yaml',
        line: 2,
        keyPath: 'name',
        message: "policy name 'deploy' is already used by policies/a.yaml",
        hint: 'names must be unique across the policy directory; rename one of the two',
      },
    ]);
  });

  test('a name defaulted from the file name collides too (no line: it is not written anywhere)', () => {
    const result = compilePolicies(
      [
        { path: 'policies/deploy.yaml', text: policy(undefined) },
        { path: 'policies/other.yml', text: policy('deploy') },
        { path: 'policies/deploy.yml', text: policy(undefined) },
      ],
      CTX,
    );
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.deepEqual(
      result.issues.map((i) => [i.file, i.line, i.message]),
      [
        ['policies/other.yml', 1, "policy name 'deploy' is already used by policies/deploy.yaml"],
        ['policies/deploy.yml', undefined, "policy name 'deploy' is already used by policies/deploy.yaml"],
      ],
    );
  });

  test('a file name that is not a valid policy name needs an explicit name', () => {
    const result = compilePolicies([{ path: 'policies/my policy.yaml', text: policy(undefined) }], CTX);
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.deepEqual(result.issues.map((i) => [i.line, i.keyPath, i.message]), [[undefined, 'name', "the file name gives the invalid policy name 'my policy'"]]);
  });
});

describe('a fixture directory of broken policies: all issues from all files, with file:line', () => {
  test('test/fixtures/policies/invalid', async () => {
    const dir = path.join(FIXTURES, 'invalid');
    const expected = JSON.parse(await readFile(path.join(dir, 'expected.json'), 'utf8')) as PolicyIssue[];
    const result = compilePolicies(await loadPolicyDir(dir), CTX);
    assert.equal(result.ok, false);
    if (result.ok) return;
    const relative = result.issues.map((issue) => ({
      ...issue,
      file: path.relative(dir, issue.file),
      message: issue.message.replaceAll(`${dir}${path.sep}`, ''),
    }));
    assert.deepEqual(relative, expected);
  });
});

describe('a valid policy compiles to a frozen, ready set', () => {
  test('fields, defaults and hash', async () => {
    const files = await loadPolicyDir(path.join(FIXTURES, 'valid'));
    const result = compilePolicies(files, CTX);
    if (!result.ok) assert.fail(JSON.stringify(result.issues));
    const { set } = result;
    assert.equal(set.size, 2);
    assert.deepEqual([...set.byName.keys()], ['deny-prt', 'deploy']);

    const deploy = set.byName.get('deploy');
    assert.ok(deploy);
    assert.equal(deploy.description, 'Deploy acme/api from main');
    assert.equal(deploy.issuer, 'github');
    assert.equal(deploy.effect, 'allow');
    assert.equal(deploy.audience, 'https://broker.example.com');
    assert.equal(deploy.allowTokenReuse, false);
    assert.equal(deploy.file, path.join(FIXTURES, 'valid', 'deploy.yaml'));
    const bytes = await readFile(path.join(FIXTURES, 'valid', 'deploy.yaml'));
    assert.equal(deploy.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.equal(deploy.grant?.provider, 'jwt');
    assert.equal(deploy.grant.maxDurationSeconds, 600);
    assert.equal(deploy.grant.audience.source, 'https://deploy.example.com');
    assert.deepEqual(Object.keys(deploy.grant.claims), ['repository']);
    assert.deepEqual(
      deploy.evaluate({}, []).map((c) => [c.key, c.operator]),
      [
        ['aud', 'audience'],
        ['repository_owner_id', 'equals'],
        ['repository', 'equals'],
        ['ref', 'in'],
        ['event_name', 'in'],
        ['job_workflow_ref', 'glob'],
        ['sub', 'regex'],
        ['ref_protected', 'equals'],
        ['/nested/path', 'exists'],
      ],
    );

    const deny = set.byName.get('deny-prt');
    assert.ok(deny);
    assert.equal(deny.effect, 'deny');
    assert.equal(deny.grant, undefined);
    assert.deepEqual(set.denyByIssuer.get('github'), [deny]);
    assert.equal(set.denyByIssuer.get('gitlab'), undefined);
  });

  test('defaults: effect allow, no audience, no token reuse, 900 seconds', () => {
    const set = setOf(['issuer: github', 'claims:', '  repository: acme/api', ...GRANT], 'dir/my-policy.yml');
    const policy = set.byName.get('my-policy');
    assert.ok(policy);
    assert.equal(policy.effect, 'allow');
    assert.equal(policy.audience, undefined);
    assert.equal(policy.description, undefined);
    assert.equal(policy.allowTokenReuse, false);
    assert.equal(policy.grant?.provider, 'jwt');
    assert.equal(policy.grant.maxDurationSeconds, 900);
    assert.deepEqual(policy.grant.claims, {});
  });

  test('allow_token_reuse, and a deny policy without conditions (a kill switch for its issuer)', () => {
    const result = compilePolicies(
      [
        { path: 'reuse.yaml', text: `issuer: github\nallow_token_reuse: true\nclaims:\n  repository: acme/api\n${GRANT.join('\n')}\n` },
        { path: 'stop.yaml', text: 'issuer: gitlab\neffect: deny\n' },
      ],
      CTX,
    );
    if (!result.ok) assert.fail(JSON.stringify(result.issues));
    assert.equal(result.set.byName.get('reuse')?.allowTokenReuse, true);
    assert.equal(result.set.denyByIssuer.get('gitlab')?.length, 1);
  });

  test('sha256 covers the exact bytes, BOM included, when the loader supplies them', () => {
    const text = `issuer: github\nclaims:\n  repository: acme/api\n${GRANT.join('\n')}\n`;
    const bytes = new Uint8Array(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]));
    const result = compilePolicies([{ path: 'bom.yaml', text, bytes }], CTX);
    if (!result.ok) assert.fail(JSON.stringify(result.issues));
    assert.equal(result.set.byName.get('bom')?.sha256, createHash('sha256').update(bytes).digest('hex'));
    const withoutBytes = compilePolicies([{ path: 'bom.yaml', text }], CTX);
    if (!withoutBytes.ok) assert.fail();
    assert.equal(withoutBytes.set.byName.get('bom')?.sha256, createHash('sha256').update(text).digest('hex'));
  });

  test('the set, its maps, policies and grants cannot be changed', () => {
    const set = setOf(['issuer: github', 'claims:', '  repository: acme/api', ...GRANT, '  claims:', '    r: ${repository}']);
    const policy = set.byName.get('p');
    assert.ok(policy);
    assert.ok(Object.isFrozen(set));
    assert.ok(Object.isFrozen(set.byName));
    assert.equal((set.byName as unknown as { set?: unknown }).set, undefined, 'no Map mutators');
    assert.equal((set.denyByIssuer as unknown as { delete?: unknown }).delete, undefined);
    assert.ok(Object.isFrozen(policy));
    assert.ok(Object.isFrozen(policy.grant));
    assert.ok(policy.grant?.provider === 'jwt' && Object.isFrozen(policy.grant.claims));
    assert.throws(() => {
      (policy as { issuer: string }).issuer = 'gitlab';
    }, TypeError);
  });

  test('an empty directory compiles to an empty set', () => {
    const result = compilePolicies([], CTX);
    assert.ok(result.ok);
    assert.equal(result.set.size, 0);
  });

  test("the repository's example policies compile with the dev-default config", async () => {
    const ctx = compileContext(await loadConfig(undefined, {}));
    const result = compilePolicies(await loadPolicyDir(REPO_POLICIES), ctx);
    if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
    assert.ok(result.set.size > 0);
  });
});

describe('validate hints: unknown keys name the closest known key, or where the key belongs', () => {
  const ALL_PROVIDERS: CompileContext = { ...CTX, providers: new Set(['jwt', 'aws', 'gcp']) };
  const ROLE = 'arn:aws:iam::123456789012:role/deploy';
  const issuesWith = (lines: string[]): PolicyIssue[] => {
    const result = compilePolicies([{ path: 'p.yaml', text: `${lines.join('\n')}\n` }], ALL_PROVIDERS);
    assert.equal(result.ok, false, 'expected the policy to be refused');
    return result.ok ? [] : result.issues;
  };
  const CLAIMS = ['claims:', '  repository: acme/api'];
  const rows: { name: string; lines: string[]; issues: ExpectedIssue[] }[] = [
    {
      name: 'top level: claim -> claims (edit distance)',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', 'claim:', '  ref: refs/heads/main', ...GRANT],
      issues: [{ line: 4, keyPath: 'claim', message: "unknown key 'claim'", hint: "did you mean 'claims'?" }],
    },
    {
      name: 'top level: efect -> effect',
      lines: ['issuer: github', 'efect: deny', ...CLAIMS, ...GRANT],
      issues: [{ line: 2, keyPath: 'efect', message: "unknown key 'efect'", hint: "did you mean 'effect'?" }],
    },
    {
      name: 'top level: abbreviated words (allow_reuse -> allow_token_reuse)',
      lines: ['issuer: github', 'allow_reuse: true', ...CLAIMS, ...GRANT],
      issues: [{ line: 2, keyPath: 'allow_reuse', message: "unknown key 'allow_reuse'", hint: "did you mean 'allow_token_reuse'?" }],
    },
    {
      name: 'top level: JWT and CEL words as aliases (aud, cel)',
      lines: ['issuer: github', 'aud: https://broker.example.com', ...CLAIMS, 'cel: claims.ref == "refs/heads/main"', ...GRANT],
      issues: [
        { line: 2, keyPath: 'aud', message: "unknown key 'aud'", hint: "did you mean 'audience'?" },
        { line: 5, keyPath: 'cel', message: "unknown key 'cel'", hint: "did you mean 'condition'?" },
      ],
    },
    {
      name: 'top level: a claim name written outside claims:',
      lines: ['issuer: github', ...CLAIMS, 'ref: refs/heads/main', ...GRANT],
      issues: [{ line: 4, keyPath: 'ref', message: "unknown key 'ref'", hint: "'ref' belongs under `claims:`, where each claim condition goes" }],
    },
    {
      name: 'top level: a near miss of a claim name',
      lines: ['issuer: github', ...CLAIMS, 'owner: acme', ...GRANT],
      issues: [{ line: 4, keyPath: 'owner', message: "unknown key 'owner'", hint: "did you mean 'repository_owner' or 'repository_owner_id'? it belongs under `claims:`, where each claim condition goes" }],
    },
    {
      name: 'top level: grant keys written outside grant:',
      lines: ['issuer: github', ...CLAIMS, `role_arn: ${ROLE}`, 'max_duration_seconds: 900', ...GRANT],
      issues: [
        { line: 4, keyPath: 'role_arn', message: "unknown key 'role_arn'", hint: "'role_arn' belongs under `grant:` (provider aws)" },
        { line: 5, keyPath: 'max_duration_seconds', message: "unknown key 'max_duration_seconds'", hint: "'max_duration_seconds' belongs under `grant:`" },
      ],
    },
    {
      name: 'aws grant: role-arn -> role_arn, max_duration -> max_duration_seconds, max_duration_secs too',
      lines: ['issuer: github', ...CLAIMS, 'grant:', '  provider: aws', `  role-arn: ${ROLE}`, '  max_duration: 900', '  max_duration_secs: 900'],
      issues: [
        { line: 4, keyPath: 'grant.role_arn', message: 'grant.role_arn is required', hint: /IAM role ARN/ },
        { line: 6, keyPath: 'grant.role-arn', message: "unknown key 'role-arn'", hint: "did you mean 'role_arn'?" },
        { line: 7, keyPath: 'grant.max_duration', message: "unknown key 'max_duration'", hint: "did you mean 'max_duration_seconds'?" },
        { line: 8, keyPath: 'grant.max_duration_secs', message: "unknown key 'max_duration_secs'", hint: "did you mean 'max_duration_seconds'?" },
      ],
    },
    {
      name: "jwt grant: another provider's key, and a top-level key",
      lines: ['issuer: github', ...CLAIMS, ...GRANT, `  role_arn: ${ROLE}`, '  effect: allow'],
      issues: [
        { line: 7, keyPath: 'grant.role_arn', message: "unknown key 'role_arn'", hint: "'role_arn' belongs in aws grants; this grant's provider is jwt" },
        { line: 8, keyPath: 'grant.effect', message: "unknown key 'effect'", hint: "'effect' belongs at the top level of the policy, not under `grant:`" },
      ],
    },
    {
      name: 'gcp grant: a near miss of its own key wins over a key valid elsewhere',
      lines: ['issuer: github', ...CLAIMS, 'grant:', '  provider: gcp', '  service_account: deploy@acme.iam.gserviceaccount.com', '  audience: https://x.example.com', '  claims: {}'],
      issues: [
        { line: 7, keyPath: 'grant.audience', message: "unknown key 'audience'", hint: "did you mean 'id_token_audience'?" },
        { line: 8, keyPath: 'grant.claims', message: "unknown key 'claims'", hint: "'claims' belongs at the top level of the policy or in jwt grants; this grant's provider is gcp" },
      ],
    },
    {
      name: 'condition operators: regexp -> regex, exist -> exists (near misses)',
      lines: ['issuer: github', 'claims:', '  sub: { regexp: "repo:acme/.*" }', '  environment: { exist: true }', ...GRANT],
      issues: [
        { line: 3, keyPath: 'claims.sub.regexp', message: "unknown condition operator 'regexp'", hint: "did you mean 'regex'?" },
        { line: 4, keyPath: 'claims.environment.exist', message: "unknown condition operator 'exist'", hint: "did you mean 'exists'?" },
      ],
    },
    {
      name: 'condition operators from other policy languages',
      lines: [
        'issuer: github',
        'claims:',
        '  ref: { prefix: "refs/tags/" }',
        '  sha: { ends_with: "abc" }',
        '  event_name: { equals: push }',
        '  actor: { not_in: [dependabot] }',
        '  environment: { one_of: [prod] }',
        '  runner_environment: { pattern: "x" }',
        ...GRANT,
      ],
      issues: [
        { line: 3, keyPath: 'claims.ref.prefix', message: "unknown condition operator 'prefix'", hint: 'did you mean { glob: "refs/tags/*" }?' },
        { line: 4, keyPath: 'claims.sha.ends_with', message: "unknown condition operator 'ends_with'", hint: 'did you mean { glob: "*abc" }?' },
        { line: 5, keyPath: 'claims.event_name.equals', message: "unknown condition operator 'equals'", hint: 'a plain value matches exactly: write the value itself ("push") instead of a map' },
        { line: 6, keyPath: 'claims.actor.not_in', message: "unknown condition operator 'not_in'", hint: /no negated operator: write an effect: deny policy .* or a CEL `condition`/ },
        { line: 7, keyPath: 'claims.environment.one_of', message: "unknown condition operator 'one_of'", hint: "did you mean 'in'?" },
        { line: 8, keyPath: 'claims.runner_environment.pattern', message: "unknown condition operator 'pattern'", hint: "did you mean 'regex' (or 'glob')?" },
      ],
    },
    {
      name: 'an unknown operator with no obvious meaning lists the operators',
      lines: ['issuer: github', 'claims:', '  ref: { frobnicate: x }', ...GRANT],
      issues: [{ line: 3, keyPath: 'claims.ref.frobnicate', message: "unknown condition operator 'frobnicate'", hint: 'use one of in, glob, regex, exists' }],
    },
  ];
  for (const row of rows) {
    test(row.name, () => assertIssues(issuesWith(row.lines), row.issues));
  }
});

describe('validate hints: a plain value with * or ? is refused, since it would match only literally', () => {
  const rows: { name: string; lines: string[]; issues: ExpectedIssue[] }[] = [
    {
      name: 'a plain value with *',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  ref: refs/heads/*', ...GRANT],
      issues: [
        {
          line: 4,
          keyPath: 'claims.ref',
          message: "'refs/heads/*' contains '*', but a plain value is matched exactly, not as a pattern",
          hint: 'a plain value matches exactly; did you mean { glob: "refs/heads/*" }? (to match it literally, write { in: ["refs/heads/*"] })',
        },
      ],
    },
    {
      name: 'a plain value with ? in a JSON Pointer condition of a deny policy',
      lines: ['issuer: github', 'effect: deny', 'claims:', '  /ctx/branch: "release-?"'],
      issues: [{ line: 4, keyPath: 'claims./ctx/branch', message: /contains '\?'/, hint: /did you mean \{ glob: "release-\?" \}\?/ }],
    },
    {
      name: 'a one-item list with *',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  ref: ["refs/tags/v*"]', ...GRANT],
      issues: [
        {
          line: 4,
          keyPath: 'claims.ref[0]',
          message: "'refs/tags/v*' contains '*', but a list value is matched exactly, not as a pattern",
          hint: 'a list value matches exactly; did you mean { glob: "refs/tags/v*" }? (to match them literally, write { in: ["refs/tags/v*"] })',
        },
      ],
    },
    {
      name: 'a list mixing exact values and globs: one regex says the same',
      lines: ['issuer: github', 'claims:', '  repository: acme/api', '  ref: [refs/heads/main, "refs/tags/v*"]', ...GRANT],
      issues: [
        {
          line: 4,
          keyPath: 'claims.ref[1]',
          message: "'refs/tags/v*' contains '*', but a list value is matched exactly, not as a pattern",
          hint: 'list values match exactly; did you mean { regex: "refs/heads/main|refs/tags/v[^/]*" }? (to match them literally, write { in: ["refs/heads/main", "refs/tags/v*"] })',
        },
      ],
    },
  ];
  for (const row of rows) {
    test(row.name, () => assertIssues(issuesOf(row.lines), row.issues));
  }

  test('{ in: [...] } is exact and may hold * or ? literally', () => {
    const set = setOf(['issuer: github', 'claims:', '  repository: acme/api', '  ref: { in: ["refs/heads/*", "what?"] }', ...GRANT]);
    const policy = set.byName.get('p');
    assert.ok(policy);
    const refOf = (ref: string) => policy.evaluate({ repository: 'acme/api', ref }, []).find((c) => c.key === 'ref')?.matched;
    assert.equal(refOf('refs/heads/*'), true);
    assert.equal(refOf('refs/heads/main'), false);
    assert.equal(refOf('what?'), true);
    assert.equal(refOf('whatX'), false);
  });

  test('numbers and booleans are never patterns; glob and regex maps are unaffected', () => {
    assert.equal(setOf(['issuer: github', 'claims:', '  run_attempt: 1', '  ref_protected: true', '  ref: { glob: "refs/*" }', '  sub: { regex: "repo:acme/.*" }', ...GRANT]).size, 1);
  });
});
