// AWS and GCP grants are compiled at load: every field checked, every problem at its line.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compilePolicies } from '../src/policy/compile.js';
import type { AwsGrant } from '../src/providers/aws/grant.js';
import type { GcpGrant } from '../src/providers/gcp/grant.js';
import type { ProviderName } from '../src/providers/registry.js';
import type { CompileContext, PolicyIssue } from '../src/policy/types.js';

const ROLE = 'arn:aws:iam::123456789012:role/deploy';
const SA = 'deploy@my-project.iam.gserviceaccount.com';

function compile(grantLines: string[], providers: ProviderName[] = ['jwt', 'aws', 'gcp']) {
  const ctx: CompileContext = { issuers: new Map([['github', { audiences: ['https://b.example.com'] , tenantClaims: [] }]]), providers: new Set(providers) };
  const text = ['issuer: github', 'claims:', '  repository: acme/api', 'grant:', ...grantLines.map((l) => `  ${l}`)].join('\n');
  return compilePolicies([{ path: 'p.yaml', text: `${text}\n` }], ctx);
}

function grantOf<G>(lines: string[]): G {
  const result = compile(lines);
  if (!result.ok) assert.fail(JSON.stringify(result.issues, null, 2));
  return result.set.byName.get('p')!.grant as G;
}

function issuesOf(lines: string[], providers?: ProviderName[]): PolicyIssue[] {
  const result = compile(lines, providers);
  assert.equal(result.ok, false, 'expected a refusal');
  return result.ok ? [] : result.issues;
}

describe('aws grants', () => {
  test('compile with defaults, templates and literals', () => {
    const grant = grantOf<AwsGrant>([
      'provider: aws',
      `role_arn: ${ROLE}`,
      'session_name: gh-${run_id}',
      'session_tags:',
      '  repo: ${repository}',
      'transitive_tag_keys: [repo]',
      'session_policy:',
      '  Version: "2012-10-17"',
      '  Statement: [{Effect: Allow, Action: "s3:GetObject", Resource: "arn:aws:s3:::b/${repository}/*"}]',
    ]);
    assert.equal(grant.provider, 'aws');
    assert.equal(grant.roleArn, ROLE);
    assert.equal(grant.maxDurationSeconds, 3600);
    assert.equal(grant.sessionName?.render({ run_id: '7' }), 'gh-7');
    assert.deepEqual(grant.sessionTags.map(([k, v]) => [k, v.source]), [['repo', '${repository}']]);
    assert.deepEqual(grant.transitiveTagKeys, ['repo']);
    assert.equal(grant.externalId, undefined);
    assert.ok(Object.isFrozen(grant));
  });

  const refusals: [name: string, lines: string[], line: number, keyPath: string, message: RegExp][] = [
    ['role_arn missing (reported at the grant)', ['provider: aws'], 4, 'grant.role_arn', /required/],
    ['role_arn from a claim', ['provider: aws', 'role_arn: arn:aws:iam::123456789012:role/${repository}'], 6, 'grant.role_arn', /role_arn must be an IAM role ARN/],
    ['role_arn not a role', ['provider: aws', 'role_arn: arn:aws:iam::123456789012:user/bob'], 6, 'grant.role_arn', /IAM role ARN/],
    ['tag key aws:', ['provider: aws', `role_arn: ${ROLE}`, 'session_tags:', '  "aws:x": y'], 8, 'grant.session_tags.aws:x', /not start with aws:/],
    ['duplicate tag key by case', ['provider: aws', `role_arn: ${ROLE}`, 'session_tags:', '  Repo: a', '  repo: b'], 9, 'grant.session_tags.repo', /case-insensitive/],
    ['transitive key not a tag', ['provider: aws', `role_arn: ${ROLE}`, 'transitive_tag_keys: [nope]'], 7, 'grant.transitive_tag_keys[0]', /not one of session_tags/],
    ['session policy without Statement', ['provider: aws', `role_arn: ${ROLE}`, 'session_policy: {Version: "2012-10-17"}'], 7, 'grant.session_policy', /Version and Statement/],
    ['policy arn malformed', ['provider: aws', `role_arn: ${ROLE}`, 'policy_arns: [ReadOnlyAccess]'], 7, 'grant.policy_arns[0]', /managed policy ARN/],
    ['external id too short', ['provider: aws', `role_arn: ${ROLE}`, 'external_id: x'], 7, 'grant.external_id', /2-1224/],
    ['region malformed', ['provider: aws', `role_arn: ${ROLE}`, 'region: Europe'], 7, 'grant.region', /AWS region/],
    ['duration under STS floor', ['provider: aws', `role_arn: ${ROLE}`, 'max_duration_seconds: 899'], 7, 'grant.max_duration_seconds', /900 to 43200/],
    ['unknown key with a hint', ['provider: aws', `role_arn: ${ROLE}`, 'session-name: x'], 7, 'grant.session-name', /unknown key/],
  ];
  for (const [name, lines, line, keyPath, message] of refusals) {
    test(`refuses: ${name}`, () => {
      const issue = issuesOf(lines).find((i) => i.keyPath === keyPath);
      assert.ok(issue, `an issue at ${keyPath}: ${JSON.stringify(issuesOf(lines))}`);
      assert.equal(issue.line, line);
      assert.match(issue.message, message);
    });
  }

  test('more than 50 tags are refused', () => {
    const tags = Array.from({ length: 51 }, (_, i) => `  t${i}: v`);
    const issues = issuesOf(['provider: aws', `role_arn: ${ROLE}`, 'session_tags:', ...tags]);
    assert.ok(issues.some((i) => /at most 50 session tags/.test(i.message)));
  });

  test('an aws grant needs providers.aws configured', () => {
    const issues = issuesOf(['provider: aws', `role_arn: ${ROLE}`], ['jwt']);
    assert.equal(issues[0]!.keyPath, 'grant.provider');
    assert.match(issues[0]!.message, /not configured/);
  });
});

describe('gcp grants', () => {
  test('access tokens by default, cloud-platform scope, include_email on', () => {
    const grant = grantOf<GcpGrant>(['provider: gcp', `service_account: ${SA}`]);
    assert.deepEqual([grant.tokenType, grant.scopes, grant.delegates, grant.includeEmail, grant.maxDurationSeconds], [
      'access_token',
      ['https://www.googleapis.com/auth/cloud-platform'],
      [],
      true,
      3600,
    ]);
  });

  test('id tokens need a templated audience', () => {
    const grant = grantOf<GcpGrant>(['provider: gcp', `service_account: ${SA}`, 'token_type: id_token', 'id_token_audience: https://${repository}.example.com']);
    assert.equal(grant.idTokenAudience?.render({ repository: 'api' }), 'https://api.example.com');
  });

  const refusals: [name: string, lines: string[], keyPath: string, message: RegExp][] = [
    ['service account missing', ['provider: gcp'], 'grant.service_account', /required/],
    ['service account from a claim', ['provider: gcp', 'service_account: ${repository}@p.iam.gserviceaccount.com'], 'grant.service_account', /service account email/],
    ['scope not a URL', ['provider: gcp', `service_account: ${SA}`, 'scopes: [cloud-platform]'], 'grant.scopes[0]', /OAuth scope URL/],
    ['empty scopes', ['provider: gcp', `service_account: ${SA}`, 'scopes: []'], 'grant.scopes', /cannot be empty/],
    ['delegate not an email', ['provider: gcp', `service_account: ${SA}`, 'delegates: [bob]'], 'grant.delegates[0]', /service account email/],
    ['id token without audience', ['provider: gcp', `service_account: ${SA}`, 'token_type: id_token'], 'grant.id_token_audience', /required/],
    ['audience on an access token', ['provider: gcp', `service_account: ${SA}`, 'id_token_audience: x'], 'grant.id_token_audience', /goes with token_type: id_token/],
    ['id token with a lifetime', ['provider: gcp', `service_account: ${SA}`, 'token_type: id_token', 'id_token_audience: x', 'max_duration_seconds: 600'], 'grant.max_duration_seconds', /always last 3600 s/],
    ['unknown token type', ['provider: gcp', `service_account: ${SA}`, 'token_type: refresh_token'], 'grant.token_type', /access_token or id_token/],
    ['include_email not boolean', ['provider: gcp', `service_account: ${SA}`, 'include_email: "yes"'], 'grant.include_email', /true or false/],
  ];
  for (const [name, lines, keyPath, message] of refusals) {
    test(`refuses: ${name}`, () => {
      const issue = issuesOf(lines).find((i) => i.keyPath === keyPath);
      assert.ok(issue, `an issue at ${keyPath}: ${JSON.stringify(issuesOf(lines))}`);
      assert.match(issue.message, message);
      assert.ok(issue.line !== undefined && issue.line >= 4, 'at the key, or at the grant when the key is missing');
    });
  }
});
