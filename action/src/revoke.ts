/**
 * Revoking a GitHub App installation token when the job ends: the main step
 * saves the token and where to revoke it, the post step (action/src/post.ts)
 * sends GitHub's `DELETE /installation/token` with it. See
 * docs/providers.md, "GitHub App tokens: a walkthrough".
 */
import { isSecureUrl } from '../../src/client/broker-url.js';
import { ClientError, describeCause } from '../../src/client/errors.js';

/** Names of what the main step saves for the post step (`STATE_<name>` there). */
export const STATE = { token: 'github-token', apiUrl: 'github-api-url', expiresAt: 'github-token-expires-at' } as const;

export const DEFAULT_GITHUB_API_URL = 'https://api.github.com';
export const REVOKE_TIMEOUT_MS = 10_000;

/**
 * The GitHub API the token is revoked at: the `github-api-url` input, else the
 * runner's `GITHUB_API_URL` (GitHub Enterprise Server runners set it), else
 * github.com. The token travels in a header, so plain http is refused except
 * on loopback.
 * @throws ClientError when the URL is not https (or loopback http)
 */
export function resolveGitHubApiUrl(input: string, env: NodeJS.ProcessEnv): string {
  const value = input || env.GITHUB_API_URL || DEFAULT_GITHUB_API_URL;
  const source = input ? 'The github-api-url input' : 'GITHUB_API_URL';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ClientError(`${source} ${JSON.stringify(value)} is not a URL.`, false);
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ClientError(`${source} ${JSON.stringify(value)} must be a plain base URL, e.g. https://github.example.com/api/v3.`, false);
  }
  if (!isSecureUrl(url)) {
    throw new ClientError(`${source} ${JSON.stringify(value)} must be an https URL: the GitHub token is sent to it to revoke it.`, false);
  }
  return value.replace(/\/+$/, '');
}

export type RevokeOutcome = { kind: 'revoked' } | { kind: 'refused'; status: number } | { kind: 'unreachable'; cause: string };

/**
 * `DELETE {apiUrl}/installation/token` with the token itself as credential;
 * GitHub answers 204 once the token no longer works. Redirects are not
 * followed, so the token goes nowhere but `apiUrl`. Never throws.
 */
export async function revokeGitHubToken(apiUrl: string, token: string, timeoutMs: number = REVOKE_TIMEOUT_MS): Promise<RevokeOutcome> {
  try {
    const response = await fetch(`${apiUrl}/installation/token`, {
      method: 'DELETE',
      headers: {
        authorization: `Bearer ${token}`,
        accept: 'application/vnd.github+json',
        'x-github-api-version': '2022-11-28',
        'user-agent': 'oidc-broker-action',
      },
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    return response.status === 204 ? { kind: 'revoked' } : { kind: 'refused', status: response.status };
  } catch (err) {
    return { kind: 'unreachable', cause: describeCause(err) };
  }
}
