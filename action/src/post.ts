/**
 * oidc-broker GitHub Action, post step: when the job ends, revokes the GitHub
 * token the main step saved (only for github grants with `revoke: true`).
 * Bundled to action/dist/post.js (`npm run build:action`). It never fails the
 * job: the job's work is done, and a token it could not revoke expires within
 * the hour anyway; it says so with a warning.
 */
import { revokeGitHubToken, STATE } from './revoke.js';
import { addMask, getState, info, logWarning } from './runner.js';

async function run(): Promise<void> {
  const token = getState(STATE.token);
  if (token === '') return; // another grant, revoke: false, or the main step issued nothing
  // The runner masks it already from the main step; mask again in case this log is read alone.
  addMask(token);
  const apiUrl = getState(STATE.apiUrl);
  const expiresAt = getState(STATE.expiresAt);
  const outcome = await revokeGitHubToken(apiUrl, token);
  switch (outcome.kind) {
    case 'revoked':
      info(`Revoked the GitHub token at ${apiUrl}: it no longer works.`);
      return;
    case 'refused':
      if (outcome.status === 401) {
        logWarning(`Did not revoke the GitHub token: ${apiUrl} answered HTTP 401, so it had already expired or been revoked.`);
      } else {
        logWarning(`Could not revoke the GitHub token: ${apiUrl}/installation/token answered HTTP ${outcome.status}. It stays valid until ${expiresAt}.`);
      }
      return;
    case 'unreachable':
      logWarning(`Could not reach ${apiUrl} to revoke the GitHub token (${outcome.cause}). It stays valid until ${expiresAt}.`);
      return;
  }
}

run().catch((err: unknown) => {
  logWarning(`Could not revoke the GitHub token: ${err instanceof Error ? err.message : String(err)}`);
});
