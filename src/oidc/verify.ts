import { createHash } from 'node:crypto';
import { decodeJwt, type JWTPayload } from 'jose';
import type { Logger } from '../logger.js';
import { verifyClaims, type ClaimRules } from './claims.js';
import { createIssuerKeyResolver, DEFAULT_JWKS_CACHE_MAX_AGE_MS, DEFAULT_JWKS_COOLDOWN_MS } from './jwks.js';
import {
  assertAllowedAlgorithm,
  decodeCompactJwsHeader,
  decodeCompactJwsPayload,
  isAsymmetricJwsAlgorithm,
  MAX_TOKEN_LENGTH,
  toInvalidTokenError,
  translateVerificationError,
  verifyCompactSignature,
} from './jws.js';
import { DEFAULT_FETCH_TIMEOUT_MS } from './safe-fetch.js';
import { isAllowedOutboundUrl } from './url-policy.js';
import type { IssuerConfig, KeyResolver, OnJwksFetch, TokenVerifier, UnverifiedIdentity, VerifiedToken } from './types.js';

export interface TokenVerifierOptions {
  /** The clock for every time check (`exp`, `nbf`, `iat`, max age) and for the key cache and cooldowns. Default: the system clock. */
  now?: () => Date;
  /**
   * Per issuer, the minimum time between remote fetches caused by an unknown
   * `kid`, and between a failed discovery/JWKS fetch and the next attempt.
   * Default 30 000 ms.
   */
  jwksCooldownMs?: number;
  /** Remote keys older than this are refetched (in the background while they may still serve as stale keys). Default 600 000 ms. */
  jwksCacheMaxAgeMs?: number;
  /** Time budget of one discovery or JWKS fetch. Default 5000 ms. */
  fetchTimeoutMs?: number;
  /** Metrics hook: one call per remote discovery or JWKS fetch, with its outcome. */
  onJwksFetch?: OnJwksFetch;
  /** Where a JWKS outage bridged by cached keys is logged (a warning per failed fetch). Default: not logged. */
  logger?: Logger;
}

/** Claims every accepted token must carry (docs/audit.md needs `sub`; `iat` feeds max age and audit). */
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat'];

/** The registered claims that hold a time (RFC 7519 section 2, NumericDate). */
const TIME_CLAIMS = ['exp', 'nbf', 'iat'] as const;

/**
 * jose checks "iat is not in the future" only when `maxTokenAge` is set (and
 * src/oidc/claims.ts keeps its rules), so an
 * issuer without `max_token_age_seconds` gets this bound (100 years): the
 * future-iat check then always runs, on the same injected clock as the rest.
 */
const UNBOUNDED_TOKEN_AGE_SECONDS = 100 * 365 * 24 * 3600;

interface IssuerEntry {
  config: IssuerConfig;
  algorithms: ReadonlySet<string>;
  resolveKey: KeyResolver;
  /** The claim rules for this issuer (jose's, see {@link verifyClaims}). */
  claimRules: ClaimRules;
}

/**
 * Creates the verifier of CI OIDC tokens for the configured issuers. Does no
 * I/O: keys are fetched on the first token of each issuer that needs them.
 *
 * `verify(token)` runs, in this order, and stops at the first failure:
 *
 * 1. size cap ({@link MAX_TOKEN_LENGTH}) and compact-JWS shape;
 * 2. header: `crit` present -> `malformed` (no extension is understood);
 *    `jku`, `x5u`, `x5c` or `jwk` present -> `untrusted_key_reference` (never fetched);
 * 3. exact `iss` lookup among the configured issuers -> `unknown_issuer` (nothing is fetched for it);
 * 4. `alg` must be asymmetric and in that issuer's allowlist -> `unsupported_algorithm`;
 * 5. numbers must be usable: `exp`, `nbf`, `iat` finite and not negative ->
 *    `invalid_claim` naming the claim; no other number anywhere in the payload
 *    non-finite -> `invalid_claim`; `exp` at most `max_token_lifetime_seconds`
 *    plus the clock skew after now -> `lifetime_too_long` (all before any key
 *    lookup, so such a token costs no fetch and no signature check);
 * 6. signature with the issuer's keys (static, `jwks_uri`, or discovery),
 *    chosen by jose's JWK Set rules and checked on `node:crypto`
 *    ({@link verifyCompactSignature}: RSA keys of 2048 bits at least, ECDSA
 *    signatures as r || s only);
 * 7. claims, on the payload decoded in step 1 and the injected clock, by
 *    jose's rules and with its error classes ({@link verifyClaims}): `iss`,
 *    `sub`, `aud`, `exp`, `iat` required, `aud` holds a configured audience,
 *    `exp`/`nbf` with the issuer's clock skew, `iat` not in the future,
 *    `max_token_age_seconds`.
 *
 * @throws TypeError at creation on an invalid issuer list (duplicate issuer,
 *   disallowed URL, no or non-asymmetric algorithms): caller misuse, config
 *   validation should have caught it.
 * @example
 * const verifier = createTokenVerifier(config.issuers, { onJwksFetch: (issuer, outcome) => metrics.jwksFetches.inc({ issuer, outcome }) });
 * const token = await verifier.verify(bearer); // VerifiedToken, or throws InvalidTokenError / IssuerUnavailableError
 */
export function createTokenVerifier(issuers: IssuerConfig[], options: TokenVerifierOptions = {}): TokenVerifier {
  const now = options.now ?? (() => new Date());
  const byIssuer = new Map<string, IssuerEntry>();
  const names = new Set<string>();
  for (const config of issuers) {
    validateIssuerConfig(config);
    if (names.has(config.name)) throw new TypeError(`issuer name ${JSON.stringify(config.name)} is configured twice`);
    if (byIssuer.has(config.issuer)) throw new TypeError(`issuer ${JSON.stringify(config.issuer)} is configured twice`);
    names.add(config.name);
    const frozen: IssuerConfig = Object.freeze({
      ...config,
      audiences: [...config.audiences],
      algorithms: [...config.algorithms],
    });
    byIssuer.set(config.issuer, {
      config: frozen,
      algorithms: new Set(config.algorithms),
      claimRules: {
        issuer: frozen.issuer,
        audiences: frozen.audiences,
        requiredClaims: REQUIRED_CLAIMS,
        clockToleranceSeconds: frozen.clockSkewSeconds,
        maxTokenAgeSeconds: frozen.maxTokenAgeSeconds ?? UNBOUNDED_TOKEN_AGE_SECONDS,
      },
      resolveKey: createIssuerKeyResolver(frozen, {
        cooldownMs: options.jwksCooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS,
        cacheMaxAgeMs: options.jwksCacheMaxAgeMs ?? DEFAULT_JWKS_CACHE_MAX_AGE_MS,
        timeoutMs: options.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS,
        onFetch: options.onJwksFetch,
        logger: options.logger,
        nowMs: () => now().getTime(),
      }),
    });
  }

  return {
    async verify(token: string): Promise<VerifiedToken> {
      // Steps 1-2: shape, size and token-supplied key references, before anything else is trusted.
      const header = decodeCompactJwsHeader(token);
      const unverified = decodeCompactJwsPayload(token);

      // Step 3: exact issuer match; an unknown issuer stops here, before any key lookup.
      const iss = unverified.iss;
      if (iss === undefined) throw toInvalidTokenError('missing_claim', { claim: 'iss' });
      if (typeof iss !== 'string') throw toInvalidTokenError('invalid_claim', { claim: 'iss' });
      const entry = byIssuer.get(iss);
      if (!entry) throw toInvalidTokenError('unknown_issuer');

      // Step 4: the algorithm policy, before the key resolver can fetch anything.
      assertAllowedAlgorithm(header.alg, entry.algorithms);

      // Step 5: jose compares times as given, so Infinity would pass as "never expires".
      const currentDate = now();
      assertUsableNumbers(unverified, entry.config, Math.floor(currentDate.getTime() / 1000));

      // Step 6: the signature, on node:crypto, with a key chosen by jose's JWK Set rules.
      // Step 7: the claims, by jose's rules, on the payload of step 1 and the clock of step 5.
      try {
        await verifyCompactSignature(token, header, entry.resolveKey);
        verifyClaims(unverified, entry.claimRules, currentDate);
      } catch (err) {
        throw translateVerificationError(err);
      }
      return toVerifiedToken(entry.config, unverified, token);
    },
  };
}

/**
 * Reads `iss` and `sub` from a token without verifying anything, for the
 * `unverified` part of a refusal's audit record (docs/audit.md). Never
 * throws; returns `{}` for anything unreadable. Values are strings only,
 * stripped of control and bidi-override characters and cut to 256 characters.
 */
export function readUnverifiedIdentity(token: string): UnverifiedIdentity {
  try {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return {};
    const payload = decodeJwt(token);
    const identity: UnverifiedIdentity = {};
    const iss = toDisplayString(payload.iss);
    const sub = toDisplayString(payload.sub);
    if (iss !== undefined) identity.iss = iss;
    if (sub !== undefined) identity.sub = sub;
    return identity;
  } catch {
    // By contract this never throws: an unreadable token simply has no identity to show.
    return {};
  }
}

const MAX_IDENTITY_LENGTH = 256;

function toDisplayString(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
   
  const cleaned = value.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '');
  const codePoints = Array.from(cleaned);
  return codePoints.length > MAX_IDENTITY_LENGTH ? codePoints.slice(0, MAX_IDENTITY_LENGTH).join('') : cleaned;
}

/**
 * Refuses numbers no issuer would mean: a time claim not finite (`1e400`
 * parses as Infinity, which jose reads as "never expires") or negative; any
 * other non-finite number in the payload (see {@link holdsNonFiniteNumber});
 * an `exp` further ahead than the issuer's `max_token_lifetime_seconds` plus
 * its clock skew. Such an `exp` would also keep the token's replay entry alive
 * as long. A missing or non-number time claim is left to step 7's presence and
 * type checks.
 *
 * @throws InvalidTokenError with reason `invalid_claim` or `lifetime_too_long`.
 */
function assertUsableNumbers(payload: JWTPayload, config: IssuerConfig, nowSeconds: number): void {
  // The time claims first, so their refusal names the claim.
  for (const claim of TIME_CLAIMS) {
    const value = payload[claim];
    if (typeof value === 'number' && !(Number.isFinite(value) && value >= 0)) throw toInvalidTokenError('invalid_claim', { claim, problem: 'unusable_time' });
  }
  if (holdsNonFiniteNumber(payload)) throw toInvalidTokenError('invalid_claim', { problem: 'non_finite_number' });
  if (typeof payload.exp === 'number' && payload.exp > nowSeconds + config.maxTokenLifetimeSeconds + config.clockSkewSeconds) {
    throw toInvalidTokenError('lifetime_too_long');
  }
}

/**
 * True if a number anywhere in `value` is not finite: JSON has no such
 * numbers, but `1e400` parses as Infinity, which policies would compare as a
 * number and the audit record (JSON again) would show as null.
 */
function holdsNonFiniteNumber(value: unknown): boolean {
  // An explicit stack: the payload's nesting is bounded only by the token size.
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (typeof next === 'number' && !Number.isFinite(next)) return true;
    if (typeof next === 'object' && next !== null) pending.push(...Object.values(next) as unknown[]);
  }
  return false;
}

function toVerifiedToken(config: IssuerConfig, payload: JWTPayload, token: string): VerifiedToken {
  // verifyClaims has checked presence, and the types of exp, iat and nbf; the rest is ours.
  const { sub, aud, jti, exp, iat } = payload;
  if (typeof sub !== 'string' || sub.length === 0) throw toInvalidTokenError('invalid_claim', { claim: 'sub' });
  const audiences = typeof aud === 'string' ? [aud] : aud;
  if (!Array.isArray(audiences) || !audiences.every((a): a is string => typeof a === 'string')) {
    throw toInvalidTokenError('invalid_claim', { claim: 'aud' });
  }
  if (jti !== undefined && typeof jti !== 'string') throw toInvalidTokenError('invalid_claim', { claim: 'jti' });
  if (typeof exp !== 'number' || typeof iat !== 'number') throw toInvalidTokenError('invalid_claim', { claim: typeof exp !== 'number' ? 'exp' : 'iat' });
  return {
    issuerName: config.name,
    issuer: config.issuer,
    subject: sub,
    audiences: [...audiences],
    jti,
    expiresAt: exp,
    issuedAt: iat,
    claims: Object.freeze({ ...payload }),
    tokenSha256: createHash('sha256').update(token, 'utf8').digest('hex'),
    signingInputSha256: createHash('sha256').update(token.slice(0, token.lastIndexOf('.')), 'utf8').digest('hex'),
  };
}

function validateIssuerConfig(config: IssuerConfig): void {
  const where = `issuer ${JSON.stringify(config?.name)}`;
  if (typeof config !== 'object' || config === null) throw new TypeError('every issuer must be an object');
  if (typeof config.name !== 'string' || config.name.length === 0) throw new TypeError('every issuer needs a name');
  if (typeof config.issuer !== 'string' || !isAllowedOutboundUrl(config.issuer)) {
    throw new TypeError(`${where}: issuer must be an https URL, or http to a loopback host`);
  }
  if (!Array.isArray(config.audiences) || config.audiences.length === 0 || !config.audiences.every((a) => typeof a === 'string' && a.length > 0)) {
    throw new TypeError(`${where}: audiences must be a non-empty list of strings`);
  }
  if (!Array.isArray(config.algorithms) || config.algorithms.length === 0) throw new TypeError(`${where}: algorithms must not be empty`);
  for (const alg of config.algorithms) {
    if (!isAsymmetricJwsAlgorithm(alg)) throw new TypeError(`${where}: algorithm ${JSON.stringify(alg)} is not an accepted asymmetric JWS algorithm (none and HMAC never are)`);
  }
  if (config.jwks !== undefined && config.jwksUri !== undefined) throw new TypeError(`${where}: set jwks or jwksUri, not both`);
  if (config.jwksUri !== undefined && !isAllowedOutboundUrl(config.jwksUri)) {
    throw new TypeError(`${where}: jwksUri must be an https URL, or http to a loopback host`);
  }
  if (!Number.isFinite(config.clockSkewSeconds) || config.clockSkewSeconds < 0) throw new TypeError(`${where}: clockSkewSeconds must be >= 0`);
  if (config.maxTokenAgeSeconds !== undefined && !(Number.isFinite(config.maxTokenAgeSeconds) && config.maxTokenAgeSeconds > 0)) {
    throw new TypeError(`${where}: maxTokenAgeSeconds must be > 0`);
  }
  if (!(Number.isFinite(config.maxTokenLifetimeSeconds) && config.maxTokenLifetimeSeconds > 0)) {
    throw new TypeError(`${where}: maxTokenLifetimeSeconds must be > 0`);
  }
  if (!(Number.isFinite(config.jwksStaleIfErrorSeconds) && config.jwksStaleIfErrorSeconds >= 0)) {
    throw new TypeError(`${where}: jwksStaleIfErrorSeconds must be >= 0`);
  }
}
