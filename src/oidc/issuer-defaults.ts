/**
 * Defaults of the per-issuer bounds (docs/configuration.md, `issuers[]`), in a
 * module of their own so that the config loader can name them without loading
 * the verifier and jose.
 */

/**
 * `max_token_lifetime_seconds`: how far after now a token's `exp` may be. CI
 * tokens live minutes, GitLab's up to the job timeout; a day bounds the rest.
 */
export const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86_400;

/** `jwks_stale_if_error_seconds`: an hour of JWKS outage is bridged by the cached keys. */
export const DEFAULT_JWKS_STALE_IF_ERROR_SECONDS = 3600;

/** Both bounds at their defaults, for an `IssuerConfig` built without a config file (tests, benchmarks). */
export const DEFAULT_ISSUER_BOUNDS = Object.freeze({
  maxTokenLifetimeSeconds: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
  jwksStaleIfErrorSeconds: DEFAULT_JWKS_STALE_IF_ERROR_SECONDS,
});
