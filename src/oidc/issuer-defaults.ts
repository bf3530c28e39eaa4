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

/** The CI services whose issuer many customers share, which the broker knows the claims of. */
export type SharedIssuerKind = 'github' | 'gitlab' | 'circleci' | 'buildkite';

const TENANT_CLAIMS: Readonly<Record<SharedIssuerKind, readonly string[]>> = Object.freeze({
  github: Object.freeze(['repository_owner_id', 'repository_id', 'repository_owner', 'repository']),
  gitlab: Object.freeze(['namespace_id', 'project_id', 'namespace_path', 'project_path']),
  /** CircleCI's issuer names the organisation already; its tokens carry the organisation id in `aud` unless the job asks for another audience. */
  circleci: Object.freeze(['aud', 'oidc.circleci.com/project-id']),
  buildkite: Object.freeze(['organization_id', 'organization_slug']),
});
const NO_TENANT_CLAIMS: readonly string[] = Object.freeze([]);

/**
 * Which shared CI service an issuer URL is, if any: GitHub.com, an
 * enterprise's customised issuer on it, GitHub Enterprise Server
 * (`https://HOST/_services/token`), GitLab.com, CircleCI, Buildkite.
 * Trailing slashes are ignored, so a near miss of a shared issuer is still
 * treated as shared (stricter, never looser).
 */
export function sharedIssuerKind(issuerUrl: string): SharedIssuerKind | undefined {
  const url = issuerUrl.replace(/\/+$/, '');
  if (url === GITHUB_ACTIONS_ISSUER || url.startsWith(`${GITHUB_ACTIONS_ISSUER}/`) || /^https:\/\/[^/]+\/_services\/token$/.test(url)) return 'github';
  if (url === 'https://gitlab.com') return 'gitlab';
  if (url.startsWith('https://oidc.circleci.com/org/')) return 'circleci';
  if (url === 'https://agent.buildkite.com') return 'buildkite';
  return undefined;
}

/**
 * `tenant_claims` of an issuer that does not set it (docs/configuration.md,
 * "Tenant claims"): for the issuers that many customers share
 * (`sharedIssuerKind`), the claims that tell one customer's tokens from
 * another's; none for any other issuer.
 */
export function defaultTenantClaims(issuerUrl: string): readonly string[] {
  const kind = sharedIssuerKind(issuerUrl);
  return kind === undefined ? NO_TENANT_CLAIMS : TENANT_CLAIMS[kind];
}
