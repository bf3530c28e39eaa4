// The audit record of a decision is a pure function of the request, what the pipeline learned and how it ended.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { AccessDeniedError, InvalidRequestError, ProviderError } from '../src/errors.js';
import type { VerifiedToken } from '../src/oidc/types.js';
import { toAuditEntry } from '../src/pipeline/audit-entry.js';
import type { Outcome, RequestFacts } from '../src/pipeline/types.js';
import { compilePolicies } from '../src/policy/compile.js';
import type { CompiledPolicy } from '../src/policy/types.js';

const ROLE = 'arn:aws:iam::123456789012:role/deploy';
const compiled = compilePolicies(
  [{ path: 'deploy.yaml', text: `issuer: github\nclaims:\n  repository: acme/api\ngrant:\n  provider: aws\n  role_arn: ${ROLE}\n` }],
  { issuers: new Map([['github', { audiences: ['https://broker.example.com'] , tenantClaims: [] }]]), providers: new Set(['jwt', 'aws']) },
);
if (!compiled.ok) throw new Error(JSON.stringify(compiled.issues));
const policy: CompiledPolicy = compiled.set.byName.get('deploy')!;
const grant = policy.grant!;

/** An unsigned JWT whose payload names an issuer and subject: readable, never verified. */
const RAW_TOKEN = `eyJhbGciOiJub25lIn0.${Buffer.from(JSON.stringify({ iss: 'https://evil.example', sub: 'repo:x/y' })).toString('base64url')}.`;
const token: VerifiedToken = {
  issuerName: 'github',
  issuer: 'https://token.actions.githubusercontent.com',
  subject: 'repo:acme/api:ref:refs/heads/main',
  audiences: ['https://broker.example.com'],
  jti: 'j-1',
  expiresAt: 2_000_000_000,
  issuedAt: 1_999_999_000,
  claims: { repository: 'acme/api' },
  tokenSha256: 'a'.repeat(64),
  signingInputSha256: 'b'.repeat(64),
};
const request: RequestFacts = { requestId: 'req-1', clientIp: '127.0.0.1', userAgent: 'curl/8', token: RAW_TOKEN };
const entryOf = (outcome: Outcome, operation: 'exchange' | 'explain' = 'exchange') => toAuditEntry({ id: 'id-1', time: new Date('2026-01-01T00:00:00Z'), operation, request, outcome });

describe('toAuditEntry', () => {
  test('an issuance records token, policy, grant and credential, and no error', () => {
    const expiresAt = new Date('2026-01-01T01:00:00Z');
    const entry = entryOf({
      kind: 'issued',
      facts: { token, policy, grant, auditMatches: ['deny-self-hosted-audit'], replayKey: 'k' },
      issued: { target: ROLE, credentialId: 'ASIA1', expiresAt, durationSeconds: 3600, credentials: { SecretAccessKey: 'secret' }, env: [] },
    });
    assert.deepEqual(entry, {
      id: 'id-1',
      time: '2026-01-01T00:00:00.000Z',
      decision: 'issued',
      error: null,
      reason: null,
      request_id: 'req-1',
      issuer: 'github',
      subject: token.subject,
      audience: token.audiences,
      jti: 'j-1',
      token_sha256: token.tokenSha256,
      claims: { repository: 'acme/api' },
      unverified: null,
      policy: 'deploy',
      policy_sha256: policy.sha256,
      provider: 'aws',
      target: ROLE,
      credential_id: 'ASIA1',
      expires_at: expiresAt.toISOString(),
      duration_seconds: 3600,
      client_ip: '127.0.0.1',
      user_agent: 'curl/8',
      audit_matches: ['deny-self-hosted-audit'],
    });
    assert.doesNotMatch(JSON.stringify(entry), /secret|eyJ/);
  });

  test('a refusal before verification: the raw token by hash, its unverified identity apart from the claims', () => {
    const entry = entryOf({ kind: 'refused', facts: {}, error: new InvalidRequestError('Bad.', { reason: 'bad_format' }) });
    assert.equal(entry.decision, 'denied');
    assert.equal(entry.error, 'invalid_request');
    assert.equal(entry.reason, 'bad_format: Bad.');
    assert.equal(entry.token_sha256, createHash('sha256').update(RAW_TOKEN).digest('hex'));
    assert.deepEqual(entry.unverified, { iss: 'https://evil.example', sub: 'repo:x/y' });
    assert.equal(entry.claims, null);
    assert.equal(entry.issuer, null);
  });

  test('a provider failure is an error record that still names the grant target (literal in the grant)', () => {
    const entry = entryOf({ kind: 'refused', facts: { token, policy, grant, replayKey: 'k' }, error: new ProviderError('STS down.', { reason: 'aws:Timeout' }) });
    assert.equal(entry.decision, 'error');
    assert.equal(entry.provider, 'aws');
    assert.equal(entry.target, ROLE);
    assert.equal(entry.credential_id, null);
    assert.equal(entry.unverified, null);
  });

  test('explain: the outcome in the reason; a refused explain is a denial with the explain prefix', () => {
    const decision = { allowed: false, reason: 'conditions_not_met', message: 'ref does not match.', evaluations: [], auditMatches: [] };
    const explained = entryOf({ kind: 'explained', facts: { token, policy }, decision }, 'explain');
    assert.equal(explained.decision, 'explain');
    assert.equal(explained.reason, 'deny: conditions_not_met: ref does not match.');
    assert.equal(explained.provider, null);
    const refused = entryOf({ kind: 'refused', facts: { token }, error: new AccessDeniedError('No.') }, 'explain');
    assert.equal(refused.decision, 'denied');
    assert.equal(refused.reason, 'explain: No.');
  });
});
