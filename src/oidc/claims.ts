import { errors, type JWTPayload } from 'jose';

/** The claim rules the token verifier applies to each issuer's tokens, in jose's terms. */
export interface ClaimRules {
  /** The only accepted `iss`. */
  issuer: string;
  /** `aud` (a string, or an array of strings) must hold at least one of these. */
  audiences: readonly string[];
  /** Claims that must be present, whatever their value. */
  requiredClaims: readonly string[];
  /** Allowed clock difference with the issuer for `exp`, `nbf` and `iat`, in seconds, >= 0. */
  clockToleranceSeconds: number;
  /** How old `iat` may be, in seconds, >= 0; also makes `iat` required and refuses it in the future. */
  maxTokenAgeSeconds: number;
}

const CHECK_FAILED = 'check_failed';

/**
 * Checks a decoded claim set by jose 6's JWT claim-set rules
 * (`validateClaimsSet`, which `jwtVerify` runs), for the options the token
 * verifier sets: the same presence order, types, tolerance arithmetic and
 * comparisons, and jose's own error classes with the same `claim` and
 * `reason`, so `translateVerificationError` maps them as it maps jose's. It
 * exists so the payload decoded once for the verifier's early steps is not
 * decoded again by jose (docs/performance.md); a differential test against
 * jose's `UnsecuredJWT.decode` holds the two equal (test/oidc-claims.test.ts).
 *
 * @param now the verifier's clock; seconds are floored, as jose does.
 * @throws errors.JWTClaimValidationFailed a claim missing (`missing`), of the wrong type (`invalid`), or refused (`check_failed`)
 * @throws errors.JWTExpired `exp` passed, or `iat` older than `maxTokenAgeSeconds` (claim `iat`)
 * @throws TypeError if `now` is an invalid date (caller misuse; jose refuses it too)
 */
export function verifyClaims(payload: JWTPayload, rules: ClaimRules, now: Date): void {
  // jose checks presence in the reverse of this order, each claim once: the
  // required list, then what maxTokenAge, audience and issuer imply.
  const presence = [...rules.requiredClaims, 'iat', 'aud', 'iss'].reverse();
  for (const claim of new Set(presence)) {
    if (!Object.hasOwn(payload, claim)) throw new errors.JWTClaimValidationFailed(`missing required "${claim}" claim`, payload, claim, 'missing');
  }
  if (payload.iss !== rules.issuer) throw unexpectedClaim(payload, 'iss');
  if (!holdsAudience(payload.aud, rules.audiences)) throw unexpectedClaim(payload, 'aud');

  const tolerance = rules.clockToleranceSeconds;
  const nowSeconds = Math.floor(now.getTime() / 1000);
  // NaN would make every comparison below false, that is, accept every token.
  if (!Number.isFinite(nowSeconds)) throw new TypeError('Invalid currentDate option input');
  // maxTokenAgeSeconds makes iat required: absent is `invalid` here, as in jose.
  const iat = numericDate(payload, 'iat', true);
  const nbf = numericDate(payload, 'nbf');
  if (nbf !== undefined && nbf > nowSeconds + tolerance) {
    throw new errors.JWTClaimValidationFailed('"nbf" claim timestamp check failed', payload, 'nbf', CHECK_FAILED);
  }
  const exp = numericDate(payload, 'exp');
  if (exp !== undefined && exp <= nowSeconds - tolerance) {
    throw new errors.JWTExpired('"exp" claim timestamp check failed', payload, 'exp', CHECK_FAILED);
  }
  const age = nowSeconds - iat;
  if (age - tolerance > rules.maxTokenAgeSeconds) {
    throw new errors.JWTExpired('"iat" claim timestamp check failed (too far in the past)', payload, 'iat', CHECK_FAILED);
  }
  if (age < -tolerance) {
    throw new errors.JWTClaimValidationFailed('"iat" claim timestamp check failed (it should be in the past)', payload, 'iat', CHECK_FAILED);
  }
}

function unexpectedClaim(payload: JWTPayload, claim: string): errors.JWTClaimValidationFailed {
  return new errors.JWTClaimValidationFailed(`unexpected "${claim}" claim value`, payload, claim, CHECK_FAILED);
}

/** jose's audience test: a string `aud` must be configured, an array must share one member with the configuration; anything else fails. */
function holdsAudience(aud: unknown, audiences: readonly string[]): boolean {
  if (typeof aud === 'string') return audiences.includes(aud);
  return Array.isArray(aud) && audiences.some((audience) => (aud as unknown[]).includes(audience));
}

/**
 * A time claim's value; absent and not `required` gives undefined, anything
 * else but a number is `invalid`. Finiteness and sign are the verifier's
 * earlier step (src/oidc/verify.ts).
 */
function numericDate(payload: JWTPayload, claim: 'exp' | 'nbf' | 'iat', required: true): number;
function numericDate(payload: JWTPayload, claim: 'exp' | 'nbf' | 'iat'): number | undefined;
function numericDate(payload: JWTPayload, claim: 'exp' | 'nbf' | 'iat', required = false): number | undefined {
  const value = payload[claim];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'number') throw new errors.JWTClaimValidationFailed(`"${claim}" claim must be a number`, payload, claim, 'invalid');
  return value;
}
