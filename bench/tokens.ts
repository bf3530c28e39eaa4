/**
 * CI tokens shaped like real GitHub Actions OIDC tokens, for the load
 * benchmarks: the 25 claims of the real tokens in
 * test/fixtures/real-ci-tokens/github-actions.json (names and value shapes),
 * with the dev issuer's `iss` and the broker's audience, signed RS256 with a
 * 2048-bit key and an `x5t` header as GitHub's are.
 */
import { randomBytes } from 'node:crypto';
import type { DevIssuer } from '../src/dev/issuer.js';

/** Repositories the tokens come from, so the per-subject rate-limit keys and the replay keys look like many CI jobs'. */
export const REPOSITORIES = 50;
/** GitHub's tokens live 5 minutes; the benchmarks keep a pool for longer than that, so theirs live an hour. */
const LIFETIME_SECONDS = 3600;
/** GitHub sets `nbf` 5 minutes before `iat`. */
const NOT_BEFORE_SECONDS = 300;
const OWNER = 'acme';
/** The owner's immutable id, which the deployment's policy pins (bench/deployment.ts). */
export const OWNER_ID = '25015917';

export function repositoryName(index: number): string {
  return `${OWNER}/svc-${String(index % REPOSITORIES).padStart(2, '0')}`;
}

/** The claims of the `index`-th job's token, less the `iss`, `iat`, `exp` and `jti` the dev issuer sets. */
export function githubActionsClaims(index: number, audience: string): Record<string, unknown> {
  const repository = repositoryName(index);
  const repoIndex = index % REPOSITORIES;
  const ref = 'refs/heads/main';
  const now = Math.floor(Date.now() / 1000);
  return {
    sub: `repo:${repository}:ref:${ref}`,
    aud: audience,
    ref,
    sha: randomBytes(20).toString('hex'),
    repository,
    repository_owner: OWNER,
    repository_owner_id: OWNER_ID,
    run_id: String(2_800_694_956 + index),
    run_number: String(1 + (index % 997)),
    run_attempt: '1',
    repository_visibility: 'private',
    repository_id: String(433_903_792 + repoIndex),
    actor_id: String(1_559_510 + (index % 17)),
    actor: `dev-${index % 17}`,
    workflow: 'Deploy to production',
    head_ref: '',
    base_ref: '',
    event_name: 'push',
    ref_type: 'branch',
    job_workflow_ref: `${repository}/.github/workflows/deploy.yml@${ref}`,
    nbf: now - NOT_BEFORE_SECONDS,
  };
}

/** Appends tokens to `pool` until it holds `count`, signing `parallel` at a time (WebCrypto signs on libuv's thread pool). */
export async function mintGithubActionsTokens(issuer: DevIssuer, audience: string, pool: string[], count: number, parallel = 64): Promise<void> {
  const x5t = randomBytes(20).toString('base64url');
  while (pool.length < count) {
    const start = pool.length;
    const batch = Math.min(parallel, count - start);
    const minted = await Promise.all(
      Array.from({ length: batch }, (_, i) => issuer.mint(githubActionsClaims(start + i, audience), { expiresInSeconds: LIFETIME_SECONDS, header: { x5t } })),
    );
    pool.push(...minted);
  }
}
