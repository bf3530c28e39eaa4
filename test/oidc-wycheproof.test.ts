import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { InvalidTokenError } from '../src/errors.js';
import { readJsonFixture } from './helpers/fixtures.js';
import { ASYMMETRIC_JWS_ALGORITHMS, isAsymmetricJwsAlgorithm, verifyJwsSignature } from '../src/oidc/jws.js';

// Project Wycheproof JWS vectors (C2SP/wycheproof, Apache-2.0; test/fixtures/README.md).
// They exercise the signature layer the token verifier uses, not the JWT claim checks.
const FIXTURE = 'wycheproof/json_web_signature_test.json';

interface Vector {
  tcId: number;
  comment: string;
  jws: unknown;
  result: 'valid' | 'invalid' | 'acceptable';
  flags?: string[];
}
interface Group {
  comment: string;
  public?: Record<string, unknown>;
  private?: Record<string, unknown>;
  tests: Vector[];
}

/**
 * Valid vectors we knowingly refuse, because their JWK's `alg` differs from
 * the token's. Key selection (jose's JWKS rules, which the verifier uses)
 * honours a JWK `alg` as a restriction on the key (RFC 7517 section 4.4), so a
 * key published for one algorithm is never used to verify another:
 *
 * - RFC 7520 figure 20 is PS384, but Wycheproof's key says `"alg": "PS256"`;
 * - RFC 7520 figure 27 is ES512, but its key says `"alg": "ES521"` (a typo in the RFC).
 */
const KNOWN_REFUSALS = new Map<number, { reason: string; why: string }>([
  [346, { reason: 'unknown_key', why: 'JWK alg PS256 does not equal the token alg PS384' }],
  [350, { reason: 'unknown_key', why: 'JWK alg PS256 does not equal the token alg PS384' }],
  [347, { reason: 'unknown_key', why: 'JWK alg "ES521" (RFC 7520 typo) does not equal the token alg ES512' }],
  [351, { reason: 'unknown_key', why: 'JWK alg "ES521" (RFC 7520 typo) does not equal the token alg ES512' }],
]);

function headerAlg(jws: unknown): unknown {
  if (typeof jws !== 'string') return undefined;
  try {
    return (JSON.parse(Buffer.from(jws.split('.')[0] ?? '', 'base64url').toString('utf8')) as { alg?: unknown }).alg;
  } catch {
    return undefined;
  }
}

async function outcome(jws: unknown, key: Record<string, unknown>, allowed: readonly string[]): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    await verifyJwsSignature(jws as string, key, allowed);
    return { ok: true };
  } catch (err) {
    assert.ok(err instanceof InvalidTokenError, `expected InvalidTokenError, got ${String(err)}`);
    return { ok: false, reason: err.reason ?? '' };
  }
}

describe('Wycheproof JWS vectors at the signature layer', () => {
  let suite: { numberOfTests: number; testGroups: Group[] };
  let all: { group: Group; test: Vector }[];
  before(() => {
    suite = readJsonFixture(FIXTURE);
    all = suite.testGroups.flatMap((g) => g.tests.map((t) => ({ group: g, test: t })));
  });

  it('the file holds the 401 documented vectors', () => {
    assert.equal(suite.numberOfTests, 401);
    assert.equal(all.length, 401);
  });

  it('vectors with a public key: valid asymmetric ones verify, every invalid one fails, symmetric ones are refused', async (t) => {
    const counts = { validVerified: 0, validRefusedKnown: 0, invalidRefused: 0, symmetricRefused: 0 };
    const reasons = new Map<string, number>();
    const withKey = all.filter(({ group }) => group.public !== undefined);
    for (const { group, test } of withKey) {
      const label = `tcId ${test.tcId} (${group.comment}/${test.comment})`;
      const alg = headerAlg(test.jws);
      const result = await outcome(test.jws, group.public!, ASYMMETRIC_JWS_ALGORITHMS);
      if (!result.ok) reasons.set(result.reason, (reasons.get(result.reason) ?? 0) + 1);

      if (typeof alg === 'string' && /^HS/i.test(alg)) {
        assert.ok(!result.ok, `${label}: a symmetric alg must be refused`);
        assert.equal(result.reason, 'unsupported_algorithm', label);
        counts.symmetricRefused++;
      } else if (test.result === 'valid') {
        const known = KNOWN_REFUSALS.get(test.tcId);
        if (known) {
          assert.deepEqual(result, { ok: false, reason: known.reason }, `${label}: ${known.why}`);
          counts.validRefusedKnown++;
        } else {
          assert.ok(isAsymmetricJwsAlgorithm(alg), `${label}: valid vectors here are asymmetric`);
          assert.deepEqual(result, { ok: true }, `${label}: must verify`);
          counts.validVerified++;
        }
      } else {
        assert.ok(!result.ok, `${label}: an ${test.result} vector must fail`);
        counts.invalidRefused++;
      }
    }
    assert.equal(counts.validVerified + counts.validRefusedKnown + counts.invalidRefused + counts.symmetricRefused, withKey.length);
    t.diagnostic(`vectors with a public key: ${withKey.length}; ${JSON.stringify(counts)}`);
    t.diagnostic(`refusal reasons: ${JSON.stringify(Object.fromEntries([...reasons].sort()))}`);
  });

  it('valid asymmetric vectors fail when their alg is not in the allowlist', async () => {
    const valid = all.filter(({ group, test }) => group.public !== undefined && test.result === 'valid' && !KNOWN_REFUSALS.has(test.tcId));
    for (const { group, test } of valid) {
      const alg = headerAlg(test.jws) as string;
      const others = ASYMMETRIC_JWS_ALGORITHMS.filter((a) => a !== alg);
      assert.deepEqual(await outcome(test.jws, group.public!, others), { ok: false, reason: 'unsupported_algorithm' }, `tcId ${test.tcId}`);
      // And with exactly their alg allowed, they verify.
      assert.deepEqual(await outcome(test.jws, group.public!, [alg]), { ok: true }, `tcId ${test.tcId}`);
    }
  });

  it('HMAC vectors are refused even with the real secret and HS* in the allowlist', async (t) => {
    let refused = 0;
    const reasons = new Map<string, number>();
    const symmetric = all.filter(({ group }) => group.public === undefined);
    for (const { group, test } of symmetric) {
      assert.ok(group.private, `tcId ${test.tcId} has a key`);
      const result = await outcome(test.jws, group.private, ['HS256', 'HS384', 'HS512', ...ASYMMETRIC_JWS_ALGORITHMS]);
      assert.ok(!result.ok, `tcId ${test.tcId} (${test.result}) must be refused`);
      reasons.set(result.reason, (reasons.get(result.reason) ?? 0) + 1);
      // A well-formed HMAC token is refused for its algorithm (a malformed one may be refused earlier, as malformed).
      assert.ok(['unsupported_algorithm', 'malformed'].includes(result.reason), `tcId ${test.tcId}: ${result.reason}`);
      if (test.result === 'valid' && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/.test(String(test.jws))) {
        assert.equal(result.reason, 'unsupported_algorithm', `tcId ${test.tcId}`);
      }
      refused++;
    }
    t.diagnostic(
      `symmetric-key vectors: ${symmetric.length}, refused: ${refused} (of which marked valid: ${symmetric.filter(({ test }) => test.result === 'valid').length}); reasons ${JSON.stringify(Object.fromEntries([...reasons].sort()))}`,
    );
  });
});
