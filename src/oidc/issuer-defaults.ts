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

/** GitHub Actions' issuer on GitHub.com; an enterprise with a customised issuer gets `<this>/<enterprise slug>`. */
const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';
const GITHUB_TENANT_CLAIMS = Object.freeze(['repository_owner_id', 'repository_id', 'repository_owner', 'repository']);
const GITLAB_TENANT_CLAIMS = Object.freeze(['namespace_id', 'project_id', 'namespace_path', 'project_path']);
/** CircleCI's issuer names the organisation already; its tokens carry the organisation id in `aud` unless the job asks for another audience. */
const CIRCLECI_TENANT_CLAIMS = Object.freeze(['aud', 'oidc.circleci.com/project-id']);
const BUILDKITE_TENANT_CLAIMS = Object.freeze(['organization_id', 'organization_slug']);
const NO_TENANT_CLAIMS: readonly string[] = Object.freeze([]);

/**
 * `tenant_claims` of an issuer that does not set it (docs/configuration.md,
 * "Tenant claims"): for the issuers that many customers share, the claims
 * that tell one customer's tokens from another's; none for any other issuer.
 * Trailing slashes are ignored, so a near miss of a shared issuer is still
 * treated as shared (stricter, never looser).
 */
export function defaultTenantClaims(issuerUrl: string): readonly string[] {
  const url = issuerUrl.replace(/\/+$/, '');
  // GitHub.com, an enterprise's customised issuer on it, and GitHub Enterprise Server (`https://HOST/_services/token`).
  if (url === GITHUB_ACTIONS_ISSUER || url.startsWith(`${GITHUB_ACTIONS_ISSUER}/`) || /^https:\/\/[^/]+\/_services\/token$/.test(url)) return GITHUB_TENANT_CLAIMS;
  if (url === 'https://gitlab.com') return GITLAB_TENANT_CLAIMS;
  if (url.startsWith('https://oidc.circleci.com/org/')) return CIRCLECI_TENANT_CLAIMS;
  if (url === 'https://agent.buildkite.com') return BUILDKITE_TENANT_CLAIMS;
  return NO_TENANT_CLAIMS;
}
