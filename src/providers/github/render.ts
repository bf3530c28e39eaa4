import { AccessDeniedError } from '../../errors.js';
import { renderGrant } from '../types.js';
import type { GithubGrant } from './grant.js';

/** GitHub's names: an owner of letters, digits and `-` (at most 39), a repository of letters, digits and `._-` (at most 100), never `.` or `..`. */
const REPOSITORY = /^([A-Za-z0-9-]{1,39})\/([A-Za-z0-9._-]{1,100})$/;
export const REPOSITORY_TEXT = 'owner/name (owner: letters, digits and -, at most 39; name: letters, digits and . _ -, at most 100, not . or ..)';

export function isRepositoryName(value: string): boolean {
  const match = REPOSITORY.exec(value);
  return match !== null && match[2] !== '.' && match[2] !== '..';
}

/** The repositories one token asks for, under one owner. */
export interface RenderedRepositories {
  owner: string;
  /** Repository names without the owner, in grant order, each once. */
  names: string[];
}

/**
 * Renders the grant's repositories for one token. A value that is not a
 * GitHub repository name, or repositories under two owners (two
 * installations), is refused, never altered: a claim holding `/` or `..`
 * must not reach another repository. Pure and free of the SDK, so explain
 * and `policy test` run the very rendering the exchange runs (the module's
 * `checkGrant`).
 *
 * @throws AccessDeniedError when the grant cannot be rendered for this token.
 */
export function renderGithubRepositories(grant: GithubGrant, claims: Readonly<Record<string, unknown>>): RenderedRepositories {
  return renderGrant('github', () => {
    let owner: string | undefined;
    const names: string[] = [];
    for (const [index, template] of grant.repositories.entries()) {
      const rendered = template.render(claims);
      if (!isRepositoryName(rendered)) {
        throw new AccessDeniedError(
          `The policy's repositories[${index}] (${template.source}) does not render to a GitHub repository for this token; it must be ${REPOSITORY_TEXT}. The broker refuses a value rather than alter it.`,
          { reason: 'github_repository_invalid' },
        );
      }
      const [repoOwner, name] = rendered.split('/') as [string, string];
      if (owner === undefined) owner = repoOwner;
      else if (owner.toLowerCase() !== repoOwner.toLowerCase()) {
        throw new AccessDeniedError(
          `The policy's repositories render to two owners for this token ('${owner}' and '${repoOwner}'); one GitHub token covers the repositories of one installation, so one owner. The policy's owners must split the grant.`,
          { reason: 'github_repositories_span_owners' },
        );
      }
      if (!names.some((known) => known.toLowerCase() === name.toLowerCase())) names.push(name);
    }
    return { owner: owner!, names };
  });
}

/** The audit record's target: the repositories and permissions asked for, e.g. `acme/app,acme/lib contents:write,pull_requests:write`. */
export function githubTarget(repositories: RenderedRepositories, grant: GithubGrant): string {
  const permissions = Object.entries(grant.permissions).map(([name, level]) => `${name}:${level}`);
  return `${repositories.names.map((name) => `${repositories.owner}/${name}`).join(',')} ${permissions.join(',')}`;
}
