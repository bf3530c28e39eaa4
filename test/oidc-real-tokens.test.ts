import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_ISSUER_BOUNDS } from '../src/oidc/issuer-defaults.js';
import { createTokenVerifier } from '../src/oidc/verify.js';
import type { IssuerConfig } from '../src/oidc/types.js';
import { readJsonFixture } from './helpers/fixtures.js';
import { assertInvalidToken } from './helpers/oidc.js';

// Real GitHub Actions ID tokens (2022-2023, long expired) and the JWKS snapshot
// that signed them (test/fixtures/README.md).
const FIXTURE = 'real-ci-tokens/github-actions.json';

interface Fixture {
  issuer: string;
  jwks: { keys: Record<string, unknown>[] };
  tokens: { token: string; verify_at: number; aud: string; claims: Record<string, unknown> }[];
}

const GITHUB = 'https://token.actions.githubusercontent.com';

describe('real GitHub Actions tokens, static JWKS, injected clock', () => {
  let fixture: Fixture;
  const fetchCalls: string[] = [];
  const realFetch = globalThis.fetch;

  // No network is allowed: static keys only, and any fetch at all fails the test.
  before(() => {
    // A missing fixture fails here, visibly, rather than skipping: a silent skip would hide a regression.
    fixture = readJsonFixture<Fixture>(FIXTURE);
    globalThis.fetch = ((input: unknown) => {
      fetchCalls.push(String(input));
      return Promise.reject(new Error('network access is not allowed in this test'));
    });
  });
  after(() => {
    globalThis.fetch = realFetch;
    assert.deepEqual(fetchCalls, [], 'no fetch may happen with static keys');
  });

  function verifierAt(time: Date | undefined, audiences: string[], onJwksFetch?: () => void) {
    const config: IssuerConfig = {
      name: 'github',
      issuer: GITHUB,
      audiences,
      jwks: fixture.jwks,
      algorithms: ['RS256'],
      clockSkewSeconds: 60,
      ...DEFAULT_ISSUER_BOUNDS,
    };
    return createTokenVerifier([config], { ...(time ? { now: () => time } : {}), ...(onJwksFetch ? { onJwksFetch } : {}) });
  }

  it('the fixture holds six tokens for the GitHub issuer', () => {
    assert.equal(fixture.issuer, GITHUB);
    assert.equal(fixture.tokens.length, 6);
  });

  it('every token verifies at its verify_at, with no network', async () => {
    let remoteFetches = 0;
    for (const entry of fixture.tokens) {
      const verifier = verifierAt(new Date(entry.verify_at * 1000), [entry.aud], () => remoteFetches++);
      const verified = await verifier.verify(entry.token);
      assert.equal(verified.issuerName, 'github');
      assert.equal(verified.issuer, GITHUB);
      assert.equal(verified.subject, entry.claims.sub);
      assert.deepEqual(verified.audiences, [entry.aud]);
      assert.equal(verified.jti, entry.claims.jti);
      assert.equal(verified.expiresAt, entry.claims.exp);
      assert.equal(verified.issuedAt, entry.claims.iat);
      assert.deepEqual({ ...verified.claims }, entry.claims);
      assert.match(verified.tokenSha256, /^[0-9a-f]{64}$/);
    }
    assert.equal(remoteFetches, 0);
  });

  it('keeps real claim values as they are (strings stay strings, emoji intact)', async () => {
    const byRunAttempt = fixture.tokens.find((t) => t.claims.run_attempt === '2');
    assert.ok(byRunAttempt, 'a token with run_attempt "2"');
    const verified = await verifierAt(new Date(byRunAttempt.verify_at * 1000), [byRunAttempt.aud]).verify(byRunAttempt.token);
    assert.equal(verified.claims.run_attempt, '2');
    assert.equal(verified.claims.ref_protected, 'false'); // a string, not a boolean
    assert.equal(typeof verified.claims.ref_protected, 'string');
    assert.equal(verified.claims.environment, 'develop');
    assert.equal(verified.claims.workflow, '1 \u{1F680} Dev');
    assert.equal(verified.subject, 'repo:spsdevops/webinar_test_despliegue:environment:develop');
    assert.equal(verified.claims.repository_owner_id, '97254907');

    const custom = fixture.tokens.find((t) => t.aud === 'github-token-action-server');
    assert.ok(custom, 'a token with a custom audience');
    const v2 = await verifierAt(new Date(custom.verify_at * 1000), [custom.aud]).verify(custom.token);
    assert.equal(v2.claims.repository_visibility, 'private');
    assert.equal(v2.claims.ref, 'refs/heads/main');
  });

  it('every token is expired at today\'s time', async () => {
    for (const entry of fixture.tokens) {
      await assertInvalidToken(verifierAt(undefined, [entry.aud]).verify(entry.token), 'expired', entry.token);
    }
  });

  it('every token is refused before its nbf and after its exp (plus skew)', async () => {
    for (const entry of fixture.tokens) {
      const nbf = entry.claims.nbf as number;
      const exp = entry.claims.exp as number;
      await assertInvalidToken(verifierAt(new Date((nbf - 61) * 1000), [entry.aud]).verify(entry.token), 'not_yet_valid');
      await assertInvalidToken(verifierAt(new Date((exp + 60) * 1000), [entry.aud]).verify(entry.token), 'expired');
    }
  });

  it('every token is refused for another audience, even at verify_at', async () => {
    for (const entry of fixture.tokens) {
      await assertInvalidToken(verifierAt(new Date(entry.verify_at * 1000), ['https://broker.example.com']).verify(entry.token), 'audience_mismatch');
    }
  });

  it('a tampered real token fails its signature', async () => {
    const entry = fixture.tokens[0]!;
    const [h, , s] = entry.token.split('.');
    const payload = Buffer.from(JSON.stringify({ ...entry.claims, repository_owner: 'attacker' })).toString('base64url');
    await assertInvalidToken(verifierAt(new Date(entry.verify_at * 1000), [entry.aud]).verify(`${h}.${payload}.${s}`), 'bad_signature');
  });
});
