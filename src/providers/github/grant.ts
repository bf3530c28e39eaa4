import type { Template } from '../../claims/template.js';
import { isPlainObject } from '../../values.js';
import { checkKnownKeys, describeValue, echo, has, readTemplate, suggest, type Json, type KeyHints, type Report } from '../../yaml/fields.js';
import { countFailures } from '../grant-fields.js';
import { GITHUB_PERMISSION_NAMES, GITHUB_PERMISSIONS, isPermissionLevel, type PermissionLevel } from './permissions.js';
import { isRepositoryName, REPOSITORY_TEXT } from './render.js';

export interface GithubGrant {
  provider: 'github';
  /** `owner/name` templates, in file order; every literal owner is the same (one installation). */
  repositories: readonly Template[];
  /** Permission name to level, sorted by name (the order of the audit record's target). */
  permissions: Readonly<Record<string, PermissionLevel>>;
}

export const GITHUB_GRANT_KEYS = ['provider', 'repositories', 'permissions'] as const;

/** The characters an `owner/name` may hold (render.ts checks the whole value once claims are in). */
const REPOSITORY_CHAR = /^[A-Za-z0-9._/-]$/;

/**
 * A `github` grant (docs/policies/reference.md): `repositories` (templates of
 * `owner/name`, literal owners all equal) and `permissions` (GitHub App
 * permission to level, checked against GitHub's names and levels). GitHub
 * fixes an installation token's lifetime at one hour, so `max_duration_seconds`
 * is refused rather than silently ignored.
 */
export function compileGithubGrant(grant: Json, report: Report, hints: KeyHints): GithubGrant | undefined {
  if (has(grant, 'max_duration_seconds')) {
    report(['grant', 'max_duration_seconds'], 'a github grant takes no max_duration_seconds: GitHub fixes an installation token\'s lifetime at one hour', 'remove it; the job can revoke the token when it ends');
  }
  checkKnownKeys(
    Object.fromEntries(Object.entries(grant).filter(([key]) => key !== 'max_duration_seconds')),
    GITHUB_GRANT_KEYS,
    ['grant'],
    report,
    hints,
  );
  const { failing, failed } = countFailures(report);
  const repositories = readRepositories(grant, failing);
  const permissions = readPermissions(grant, failing);
  if (failed() || has(grant, 'max_duration_seconds') || repositories === undefined || permissions === undefined) return undefined;
  return Object.freeze({ provider: 'github', repositories: Object.freeze(repositories), permissions });
}

function readRepositories(grant: Json, report: Report): Template[] | undefined {
  if (!has(grant, 'repositories')) {
    report(['grant', 'repositories'], 'grant.repositories is required for provider github', 'a list of owner/name, e.g. [acme/app] or ["${repository}"]');
    return undefined;
  }
  const value = grant.repositories;
  if (!Array.isArray(value) || value.length === 0) {
    report(['grant', 'repositories'], `repositories must be a non-empty list of owner/name, not ${describeValue(value)}`);
    return undefined;
  }
  const templates: Template[] = [];
  let firstOwner: { owner: string; index: number } | undefined;
  for (const [index, raw] of value.entries()) {
    const at = ['grant', 'repositories', index];
    const template = readTemplate(raw, at, report);
    if (!template) continue;
    const disallowed = template.literals.join('').split('').find((char) => !REPOSITORY_CHAR.test(char));
    if (template.claimRefs.length === 0 && !isRepositoryName(template.source)) {
      report(at, `'${echo(template.source)}' is not a repository: expected ${REPOSITORY_TEXT}`);
      continue;
    }
    if (disallowed !== undefined) {
      report(at, `'${echo(disallowed)}' is not allowed in a repository: expected ${REPOSITORY_TEXT}`);
      continue;
    }
    const owner = literalOwner(template);
    if (owner !== undefined) {
      if (firstOwner === undefined) firstOwner = { owner, index };
      else if (firstOwner.owner.toLowerCase() !== owner.toLowerCase()) {
        report(at, `owner '${echo(owner)}' differs from '${echo(firstOwner.owner)}' in repositories[${firstOwner.index}]: one token covers the repositories of one installation, so of one owner`, 'write one policy per owner');
        continue;
      }
    }
    templates.push(template);
  }
  return templates.length === value.length ? templates : undefined;
}

/** The owner a template fixes in its own text (`acme/${repo}`), if it does. */
function literalOwner(template: Template): string | undefined {
  const head = template.literals[0];
  if (head === undefined || template.source.startsWith('${') || !head.includes('/')) return undefined;
  return head.slice(0, head.indexOf('/'));
}

function readPermissions(grant: Json, report: Report): Readonly<Record<string, PermissionLevel>> | undefined {
  if (!has(grant, 'permissions')) {
    report(['grant', 'permissions'], 'grant.permissions is required for provider github', 'a map of GitHub App permission to read, write or admin, e.g. {contents: read}');
    return undefined;
  }
  const value = grant.permissions;
  if (!isPlainObject(value) || Object.keys(value).length === 0) {
    report(['grant', 'permissions'], `permissions must be a non-empty map of GitHub App permission to level, not ${describeValue(value)}`);
    return undefined;
  }
  const permissions: Record<string, PermissionLevel> = {};
  let ok = true;
  for (const name of Object.keys(value).sort()) {
    const level = value[name];
    const at = ['grant', 'permissions', name];
    const allowed = Object.hasOwn(GITHUB_PERMISSIONS, name) ? GITHUB_PERMISSIONS[name] : undefined;
    if (allowed === undefined) {
      report(at, `'${echo(name)}' is not a GitHub App permission an installation token can hold`, suggest(name, GITHUB_PERMISSION_NAMES));
      ok = false;
    } else if (!isPermissionLevel(level) || !allowed.includes(level)) {
      report(at, `${name} must be ${allowed.join(' or ')}, not ${describeValue(level)}`, isPermissionLevel(level) ? `GitHub offers ${name} only as ${allowed.join(' or ')}` : undefined);
      ok = false;
    } else Object.defineProperty(permissions, name, { value: level, enumerable: true });
  }
  return ok ? Object.freeze(permissions) : undefined;
}
