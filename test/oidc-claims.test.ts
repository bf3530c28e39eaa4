// The verifier's claim checks (src/oidc/claims.ts) against jose's, the
// reference they mirror (docs/performance.md, "Claim checks on the decoded
// payload"): on random claim sets and rules, jose's UnsecuredJWT.decode and
// verifyClaims both accept, or both refuse with the same error class, claim
// and reason. Fixed seed, printed as a test diagnostic; FUZZ_SEED=<n>
// replaces it and FUZZ_SCALE=<k> multiplies the number of runs.
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, it, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { errors, UnsecuredJWT, type JWTPayload } from 'jose';
import { verifyClaims, type ClaimRules } from '../src/oidc/claims.js';
import { DEFAULT_ISSUER_BOUNDS } from '../src/oidc/issuer-defaults.js';
import { createTokenVerifier } from '../src/oidc/verify.js';
import { assertInvalidToken } from './helpers/oidc.js';

const ISSUER = 'https://issuer.example.com';
const AUDIENCE_POOL = ['https://broker.example.com', 'sts.amazonaws.com', 'b'];
const NOW_SECONDS = 1_700_000_000;
const UNSECURED_HEADER = Buffer.from('{"alg":"none"}').toString('base64url');

/** How a check ended: accepted, or the error's class, claim and reason. */
type Outcome = 'accepted' | { error: string; claim?: string; reason?: string };

function toOutcome(check: () => void): Outcome {
  try {
    check();
    return 'accepted';
  } catch (err) {
    if (err instanceof errors.JWTClaimValidationFailed || err instanceof errors.JWTExpired) return { error: err.constructor.name, claim: err.claim, reason: err.reason };
    if (err instanceof Error) return { error: err.constructor.name };
    throw err;
  }
}

function joseOutcome(payload: JWTPayload, rules: ClaimRules, now: Date): Outcome {
  const segment = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return toOutcome(() =>
    UnsecuredJWT.decode(`${UNSECURED_HEADER}.${segment}.`, {
      issuer: rules.issuer,
      audience: [...rules.audiences],
      requiredClaims: [...rules.requiredClaims],
      clockTolerance: rules.clockToleranceSeconds,
      maxTokenAge: rules.maxTokenAgeSeconds,
      currentDate: now,
    }),
  );
}

function ourOutcome(payload: JWTPayload, rules: ClaimRules, now: Date): Outcome {
  // The verifier checks the claims of a freshly parsed payload, as jose does.
  return toOutcome(() => verifyClaims(JSON.parse(JSON.stringify(payload)) as JWTPayload, rules, now));
}

const RUN_SCALE = Number(process.env.FUZZ_SCALE ?? 1);

function seedFor(t: TestContext, seed: number): number {
  const chosen = process.env.FUZZ_SEED === undefined ? seed : Number(process.env.FUZZ_SEED);
  t.diagnostic(`fast-check seed ${chosen}`);
  return chosen;
}

/** Values of the wrong type for any claim. */
const wrongType: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.constantFrom('', '1700000000', ISSUER, AUDIENCE_POOL[0]),
  fc.array(fc.oneof(fc.constantFrom(ISSUER, ...AUDIENCE_POOL), fc.integer()), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
);

/** A time claim placed relative to the rules: now, plus or minus the tolerance and the max age, plus a step of a second or a fraction. */
interface TimeSpec {
  tolerances: -1 | 0 | 1;
  ages: -1 | 0;
  offsetSeconds: number;
}
const timeSpec: fc.Arbitrary<TimeSpec> = fc.record({
  tolerances: fc.constantFrom(-1 as const, 0 as const, 1 as const),
  ages: fc.constantFrom(-1 as const, 0 as const),
  offsetSeconds: fc.oneof(fc.integer({ min: -2, max: 2 }), fc.constantFrom(-0.5, 0.5, -1.25), fc.integer({ min: -100_000, max: 100_000 })),
});
/** Mostly present and right, so that most cases reach the time checks; absent is undefined. */
function usually<T>(right: fc.Arbitrary<T>, wrong: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> {
  return fc.option(fc.oneof({ weight: 8, arbitrary: right }, { weight: 1, arbitrary: wrong }), { nil: undefined, freq: 12 });
}
/** A number near a boundary, or a value of the wrong type. */
const timeClaim = usually<TimeSpec | { value: unknown }>(timeSpec, wrongType.map((value) => ({ value })));

interface Case {
  rules: ClaimRules;
  nowMs: number;
  iss?: unknown;
  aud?: unknown;
  sub?: unknown;
  exp?: TimeSpec | { value: unknown };
  nbf?: TimeSpec | { value: unknown };
  iat?: TimeSpec | { value: unknown };
  extra: Record<string, unknown>;
}

const caseArbitrary: fc.Arbitrary<Case> = fc.record({
  rules: fc.record({
    issuer: fc.constant(ISSUER),
    audiences: fc.oneof(fc.constant(AUDIENCE_POOL), fc.shuffledSubarray(AUDIENCE_POOL, { minLength: 1 })),
    requiredClaims: fc.oneof(fc.constant(['iss', 'sub', 'aud', 'exp', 'iat']), fc.shuffledSubarray(['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'])),
    clockToleranceSeconds: fc.oneof(fc.constantFrom(0, 1, 60, 300), fc.nat(1000)),
    maxTokenAgeSeconds: fc.oneof(fc.constantFrom(0, 1, 600, 3600, 100 * 365 * 24 * 3600), fc.nat(100_000)),
  }),
  // A fraction of a second on the clock: jose floors it.
  nowMs: fc.integer({ min: NOW_SECONDS * 1000, max: NOW_SECONDS * 1000 + 1999 }),
  iss: usually<unknown>(fc.constant(ISSUER), fc.oneof(fc.constantFrom(`${ISSUER}/`, 'https://other.example.com'), wrongType)),
  aud: usually<unknown>(
    fc.oneof(fc.constantFrom(...AUDIENCE_POOL, 'https://other.example.com'), fc.array(fc.constantFrom(...AUDIENCE_POOL, 'https://other.example.com'), { maxLength: 3 })),
    wrongType,
  ),
  sub: usually<unknown>(fc.constant('repo:acme/api:ref:refs/heads/main'), wrongType),
  exp: timeClaim,
  nbf: timeClaim,
  iat: timeClaim,
  extra: fc.dictionary(fc.constantFrom('jti', 'repository', 'ref', 'actor', 'azp', 'job_workflow_ref'), fc.oneof(fc.string({ maxLength: 8 }), fc.integer())),
});

function toPayload(c: Case): JWTPayload {
  const payload: Record<string, unknown> = { ...c.extra };
  for (const name of ['iss', 'aud', 'sub'] as const) if (c[name] !== undefined) payload[name] = c[name];
  for (const name of ['exp', 'nbf', 'iat'] as const) {
    const spec = c[name];
    if (spec === undefined) continue;
    payload[name] =
      'value' in spec
        ? spec.value
        : Math.floor(c.nowMs / 1000) + spec.tolerances * c.rules.clockToleranceSeconds + spec.ages * c.rules.maxTokenAgeSeconds + spec.offsetSeconds;
  }
  return payload;
}

describe('claim checks: held equal to jose', () => {
  test('random claim sets and rules: jose and verifyClaims accept or refuse alike', (t) => {
    const seed = seedFor(t, 20_261_206);
    fc.assert(
      fc.property(caseArbitrary, (c) => {
        const payload = toPayload(c);
        const now = new Date(c.nowMs);
        assert.deepEqual(ourOutcome(payload, c.rules, now), joseOutcome(payload, c.rules, now), JSON.stringify(payload));
      }),
      {
        seed,
        numRuns: 5000 * RUN_SCALE,
        reporter: (details) => {
          if (details.failed) throw new Error(`seed ${seed}: ${fc.defaultReportMessage(details)}\n${String(details.errorInstance)}`);
        },
      },
    );
  });
});

describe('claim checks: boundaries', () => {
  const rules: ClaimRules = {
    issuer: ISSUER,
    audiences: [AUDIENCE_POOL[0]!],
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat'],
    clockToleranceSeconds: 60,
    maxTokenAgeSeconds: 3600,
  };
  // 0.9 s past the second: both sides floor it.
  const now = new Date(NOW_SECONDS * 1000 + 900);
  const valid = { iss: ISSUER, sub: 'repo:acme/api', aud: AUDIENCE_POOL[0], iat: NOW_SECONDS - 10, exp: NOW_SECONDS + 300 };

  const rows: { name: string; claims: JWTPayload; expected: Outcome }[] = [
    { name: 'a valid claim set', claims: {}, expected: 'accepted' },
    { name: 'exp one second after now minus tolerance', claims: { exp: NOW_SECONDS - 59 }, expected: 'accepted' },
    { name: 'exp == now - tolerance', claims: { exp: NOW_SECONDS - 60 }, expected: { error: 'JWTExpired', claim: 'exp', reason: 'check_failed' } },
    { name: 'nbf == now + tolerance', claims: { nbf: NOW_SECONDS + 60 }, expected: 'accepted' },
    { name: 'nbf one second later', claims: { nbf: NOW_SECONDS + 61 }, expected: { error: 'JWTClaimValidationFailed', claim: 'nbf', reason: 'check_failed' } },
    { name: 'iat exactly max age plus tolerance old', claims: { iat: NOW_SECONDS - 3660 }, expected: 'accepted' },
    { name: 'iat one second older', claims: { iat: NOW_SECONDS - 3661 }, expected: { error: 'JWTExpired', claim: 'iat', reason: 'check_failed' } },
    { name: 'iat == now + tolerance', claims: { iat: NOW_SECONDS + 60 }, expected: 'accepted' },
    { name: 'iat one second further ahead', claims: { iat: NOW_SECONDS + 61 }, expected: { error: 'JWTClaimValidationFailed', claim: 'iat', reason: 'check_failed' } },
    { name: 'aud array without a configured audience', claims: { aud: ['https://other.example.com', 'sts.amazonaws.com'] }, expected: { error: 'JWTClaimValidationFailed', claim: 'aud', reason: 'check_failed' } },
    { name: 'aud array with a configured audience', claims: { aud: ['https://other.example.com', AUDIENCE_POOL[0]!] }, expected: 'accepted' },
    { name: 'aud an object', claims: { aud: { 0: AUDIENCE_POOL[0] } as unknown as string }, expected: { error: 'JWTClaimValidationFailed', claim: 'aud', reason: 'check_failed' } },
    { name: 'exp a string', claims: { exp: String(NOW_SECONDS + 300) as unknown as number }, expected: { error: 'JWTClaimValidationFailed', claim: 'exp', reason: 'invalid' } },
    { name: 'nbf null', claims: { nbf: null as unknown as number }, expected: { error: 'JWTClaimValidationFailed', claim: 'nbf', reason: 'invalid' } },
    { name: 'iss missing (checked before aud)', claims: { iss: undefined, aud: undefined }, expected: { error: 'JWTClaimValidationFailed', claim: 'iss', reason: 'missing' } },
  ];
  for (const row of rows) {
    it(`${row.name}: ${typeof row.expected === 'string' ? row.expected : `${row.expected.error} ${row.expected.claim}`}`, () => {
      const payload = JSON.parse(JSON.stringify({ ...valid, ...row.claims })) as JWTPayload;
      assert.deepEqual(ourOutcome(payload, rules, now), row.expected);
      assert.deepEqual(joseOutcome(payload, rules, now), row.expected, 'jose agrees');
    });
  }

  it('refuses an invalid clock, as jose does, rather than comparing with NaN', () => {
    assert.throws(() => verifyClaims({ ...valid }, rules, new Date(Number.NaN)), TypeError);
  });
});

describe('claim checks: the verifier reads the payload as jose does', () => {
  // The claims are checked on the payload decoded before the signature check,
  // so that decoding must refuse what jose's would: invalid UTF-8 is not replaced.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const verifier = createTokenVerifier([
    {
      name: 'static',
      issuer: ISSUER,
      audiences: [AUDIENCE_POOL[0]!],
      algorithms: ['RS256'],
      clockSkewSeconds: 60,
      ...DEFAULT_ISSUER_BOUNDS,
      jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' }] },
    },
  ]);
  const signed = (headerBytes: Buffer, payloadBytes: Buffer): string => {
    const input = `${headerBytes.toString('base64url')}.${payloadBytes.toString('base64url')}`;
    return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
  };
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'k1' }));
  const withByte = (json: string, marker: string, byte: number): Buffer => {
    const bytes = Buffer.from(json);
    bytes[bytes.indexOf(marker)] = byte;
    return bytes;
  };
  const claimsJson = (): string => {
    const now = Math.floor(Date.now() / 1000);
    return JSON.stringify({ iss: ISSUER, sub: 'repo:acme/api', aud: AUDIENCE_POOL[0], iat: now, exp: now + 300, ref: 'QQ' });
  };

  it('accepts the well-formed token', async () => {
    const verified = await verifier.verify(signed(header, Buffer.from(claimsJson())));
    assert.equal(verified.claims.ref, 'QQ');
  });

  it('refuses a signed payload that is not valid UTF-8 as malformed', async () => {
    const token = signed(header, withByte(claimsJson(), 'QQ', 0xff));
    await assertInvalidToken(verifier.verify(token), 'malformed', token);
  });

  it('refuses a signed header that is not valid UTF-8 as malformed', async () => {
    const token = signed(withByte(JSON.stringify({ alg: 'RS256', kid: 'k1', x: 'QQ' }), 'QQ', 0xc0), Buffer.from(claimsJson()));
    await assertInvalidToken(verifier.verify(token), 'malformed', token);
  });
});
