import type { CryptoKey, FlattenedJWSInput, JWSHeaderParameters } from 'jose';

/** One trusted OIDC issuer, as validated by `src/config.ts` (docs/configuration.md, `issuers[]`). */
export interface IssuerConfig {
  /** Name that policies refer to (`issuer: github`). */
  name: string;
  /** Exact `iss` value; https, or http only for loopback hosts. */
  issuer: string;
  /** Accepted `aud` values; a token must carry at least one. */
  audiences: string[];
  /** Skip discovery and fetch keys from here. */
  jwksUri?: string | undefined;
  /** Static keys: no network at all (air-gapped, pinned). Already read and parsed. */
  jwks?: { keys: Record<string, unknown>[] } | undefined;
  /** Allowlist of JWS algorithms; never `none` or HS*. */
  algorithms: string[];
  clockSkewSeconds: number;
  /** Reject tokens whose `iat` is older than this. */
  maxTokenAgeSeconds?: number | undefined;
  /**
   * Reject tokens whose `exp` is further than this (plus the clock skew) after
   * the broker's now (docs/configuration.md, `max_token_lifetime_seconds`;
   * `src/config.ts` fills in the default).
   */
  maxTokenLifetimeSeconds: number;
  /**
   * How long remote keys keep verifying past their normal refresh while the
   * issuer's JWKS cannot be fetched; 0 turns it off (docs/configuration.md,
   * `jwks_stale_if_error_seconds`; `src/config.ts` fills in the default).
   * Unused with static `jwks`.
   */
  jwksStaleIfErrorSeconds: number;
}

/** A token whose signature, issuer, audience and lifetime have been checked. */
export interface VerifiedToken {
  /** Config name of the issuer (`github`). */
  issuerName: string;
  /** The `iss` claim. */
  issuer: string;
  subject: string;
  audiences: string[];
  jti: string | undefined;
  /** Unix seconds. */
  expiresAt: number;
  /** Unix seconds. */
  issuedAt: number;
  /** The whole verified payload. */
  claims: Readonly<Record<string, unknown>>;
  /** Hex SHA-256 of the compact token: what we log and store instead of the token. */
  tokenSha256: string;
  /**
   * Hex SHA-256 of the signing input (`header.payload`): the replay key of a
   * token without `jti` (docs/policies/reference.md). Not of the whole token:
   * a signature has other valid encodings (spare bits in its last base64url
   * character, ECDSA's s and n - s), and re-encoding it must not make a new token.
   */
  signingInputSha256: string;
}

/** What can be read from a token that failed verification; goes under `unverified` in the audit record. */
export interface UnverifiedIdentity {
  iss?: string;
  sub?: string;
}

export interface TokenVerifier {
  /**
   * @throws InvalidTokenError (bad token: reason says why) or IssuerUnavailableError (keys unreachable).
   */
  verify(token: string): Promise<VerifiedToken>;
}

/**
 * Machine reasons of an `InvalidTokenError` raised by `oidc/` (kept in the
 * audit record and shown by explain). Closed, so a `switch` over it is exhaustive.
 */
export type InvalidTokenReason =
  | 'malformed'
  | 'token_too_large'
  | 'untrusted_key_reference'
  | 'unknown_issuer'
  | 'unsupported_algorithm'
  | 'unknown_key'
  | 'ambiguous_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'token_too_old'
  | 'lifetime_too_long'
  | 'audience_mismatch'
  | 'missing_claim'
  | 'invalid_claim';

/** Machine reasons of an `IssuerUnavailableError` raised by `oidc/`. */
export type IssuerUnavailableReason = 'discovery_failed' | 'jwks_unavailable';

/**
 * Outcome of one remote discovery or JWKS fetch, for the `broker_jwks_fetches_total`
 * metric: `stale` is a failed JWKS fetch after which the cached keys keep
 * verifying (stale-if-error); `error` is a failed fetch with nothing to fall back on.
 */
export type JwksFetchOutcome = 'ok' | 'error' | 'stale';

/** Metrics hook: called once per remote discovery or JWKS fetch (never for static keys). */
export type OnJwksFetch = (issuerName: string, outcome: JwksFetchOutcome) => void;

/**
 * Finds the public key for a token's protected header; the shape jose's
 * `jwtVerify`/`compactVerify` accept as a key getter.
 *
 * @throws InvalidTokenError (`unknown_key`), IssuerUnavailableError, or a jose error the verifier maps.
 */
export type KeyResolver = (protectedHeader: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;
