import type { components } from '@octokit/openapi-types';

export type PermissionLevel = 'read' | 'write' | 'admin';

/**
 * The GitHub App permissions an installation token may ask for, and the
 * levels each takes (docs/providers.md, "github"): repository and
 * organisation permissions; user permissions only reach user-to-server
 * tokens, never an installation token. `metadata` is read-only for Apps, so
 * it takes `read` alone even where GitHub's schema lists `write`.
 */
const CATALOGUE = {
  actions: ['read', 'write'],
  administration: ['read', 'write'],
  artifact_metadata: ['read', 'write'],
  attestations: ['read', 'write'],
  checks: ['read', 'write'],
  code_quality: ['read', 'write'],
  codespaces: ['read', 'write'],
  contents: ['read', 'write'],
  dependabot_secrets: ['read', 'write'],
  deployments: ['read', 'write'],
  discussions: ['read', 'write'],
  environments: ['read', 'write'],
  issues: ['read', 'write'],
  merge_queues: ['read', 'write'],
  metadata: ['read'],
  packages: ['read', 'write'],
  pages: ['read', 'write'],
  pull_requests: ['read', 'write'],
  repository_custom_properties: ['read', 'write'],
  repository_hooks: ['read', 'write'],
  repository_projects: ['read', 'write', 'admin'],
  secret_scanning_alerts: ['read', 'write'],
  secrets: ['read', 'write'],
  security_events: ['read', 'write'],
  single_file: ['read', 'write'],
  statuses: ['read', 'write'],
  vulnerability_alerts: ['read', 'write'],
  workflows: ['write'],
  custom_properties_for_organizations: ['read', 'write'],
  members: ['read', 'write'],
  organization_administration: ['read', 'write'],
  organization_custom_roles: ['read', 'write'],
  organization_custom_org_roles: ['read', 'write'],
  organization_custom_properties: ['read', 'write', 'admin'],
  organization_copilot_seat_management: ['read', 'write'],
  organization_copilot_agent_settings: ['read', 'write'],
  organization_announcement_banners: ['read', 'write'],
  organization_events: ['read'],
  organization_hooks: ['read', 'write'],
  organization_personal_access_tokens: ['read', 'write'],
  organization_personal_access_token_requests: ['read', 'write'],
  organization_plan: ['read'],
  organization_projects: ['read', 'write', 'admin'],
  organization_packages: ['read', 'write'],
  organization_secrets: ['read', 'write'],
  organization_self_hosted_runners: ['read', 'write'],
  organization_user_blocking: ['read', 'write'],
} as const;

/**
 * Held to GitHub's own schema of App permissions at compile time: a name
 * GitHub does not have, or a level it does not list for that name, makes
 * this assignment fail `tsc`.
 */
type AppPermissions = components['schemas']['app-permissions'];
type KnownToGithub<C> = {
  readonly [K in keyof C]: K extends keyof AppPermissions ? (C[K] extends readonly NonNullable<AppPermissions[K]>[] ? C[K] : never) : never;
};
const checked: KnownToGithub<typeof CATALOGUE> = CATALOGUE;

export const GITHUB_PERMISSIONS: Readonly<Record<string, readonly PermissionLevel[]>> = checked;
export const GITHUB_PERMISSION_NAMES: readonly string[] = Object.freeze(Object.keys(CATALOGUE));

/** `read` < `write` < `admin`: a level includes the ones below it. */
export const LEVEL_RANK: Readonly<Record<PermissionLevel, number>> = { read: 1, write: 2, admin: 3 };

export function isPermissionLevel(value: unknown): value is PermissionLevel {
  return value === 'read' || value === 'write' || value === 'admin';
}
