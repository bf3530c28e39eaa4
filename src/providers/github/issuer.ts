import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAppAuth } from '@octokit/auth-app';
import { Octokit } from '@octokit/core';
import { RequestError } from '@octokit/request-error';
import { AccessDeniedError, ProviderError, ProviderThrottledError } from '../../errors.js';
import { toCredentialFingerprint } from '../fingerprint.js';
import type { IssuedCredential, Provider } from '../types.js';
import { createAppJwtSigner } from './app-jwt.js';
import type { GithubGrant } from './grant.js';
import { LEVEL_RANK, isPermissionLevel } from './permissions.js';
import { githubTarget, renderGithubRepositories, type RenderedRepositories } from './render.js';

export interface GithubProviderOptions {
  appId: string;
  /** The App's private key (an RSA key, read once by `loadGithubAppKey`). */
  privateKey: KeyObject;
  /** https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
  apiUrl: string;
  /** The whole exchange's GitHub calls, retries included. */
  deadlineMs: number;
  /** One HTTP attempt. */
  attemptTimeoutMs: number;
  maxAttempts?: number;
  /** How long an installation lookup is reused, and how many are kept (docs/architecture.md, cache table). */
  installationCache?: { ttlMs: number; maxEntries: number };
  now?: () => number;
}

/** GitHub fixes an installation token's lifetime. */
const TOKEN_LIFETIME_SECONDS = 3600;
/** The most a 503 asks a caller to wait, whatever GitHub's reset says: a CI job should not sleep an hour on our word. */
const MAX_RETRY_AFTER_SECONDS = 300;
/** GitHub's answers here are a few kilobytes; anything far larger is not GitHub. */
const MAX_RESPONSE_BYTES = 1024 * 1024;
const DEFAULT_INSTALLATION_CACHE = { ttlMs: 5 * 60_000, maxEntries: 1000 } as const;

/** An installation as the lookup answered it: what the token request needs and the permission check reads. */
interface Installation {
  id: number;
  account: string;
  permissions: Readonly<Record<string, string>>;
}

/**
 * Reads the App's private key once, at start: an RSA key in PEM (PKCS#1
 * `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`).
 *
 * @throws Error naming the file and what is wrong, never the key's content.
 */
export async function loadGithubAppKey(file: string): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`providers.github.private_key_file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // The parser's own message may quote the file; say only what is expected.
    throw new Error(`providers.github.private_key_file: ${file} is not a PEM private key (expected the App's RSA key as GitHub downloads it)`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`providers.github.private_key_file: ${file} holds a ${key.asymmetricKeyType ?? 'non-RSA'} key; GitHub Apps sign with RSA (RS256)`);
  return key;
}

/**
 * GitHub App installation tokens (docs/policies/reference.md, `github`):
 * `@octokit/auth-app` authenticates as the App with the JWT of
 * `createAppJwtSigner` (and retries once on GitHub-reported clock skew); the installation is looked
 * up by repository (cached, bounded); each exchange creates its own token for
 * the grant's repositories and permissions.
 *
 * Tokens are created with `octokit.request` and the App JWT, not with
 * auth-app's installation authentication: that one caches tokens and shares
 * one pending request between concurrent callers with the same options, so two
 * jobs could receive the same token, and one job revoking it at its end would
 * cut the other off.
 */
export function createGithubProvider(options: GithubProviderOptions): Provider<GithubGrant> {
  const now = options.now ?? Date.now;
  const maxAttempts = options.maxAttempts ?? 3;
  const cacheLimits = options.installationCache ?? DEFAULT_INSTALLATION_CACHE;
  const octokit = new Octokit({
    baseUrl: options.apiUrl.replace(/\/+$/, ''),
    userAgent: 'oidc-broker',
    authStrategy: createAppAuth,
    // auth-app warns (with GitHub's message) when it retries after clock skew; that retry is all we need of it.
    auth: { appId: options.appId, createJwt: createAppJwtSigner(options.appId, options.privateKey, now), log: { warn: () => undefined } },
    log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
    request: { fetch: cappedFetch, redirect: 'manual' },
  });
  const installations = new Map<string, { installation: Installation; expiresAt: number }>();

  /** One call, retried on 5xx, network errors and attempt timeouts while the deadline allows. */
  const call = async <T>(send: (signal: AbortSignal) => Promise<T>, exchangeSignal: AbortSignal | undefined): Promise<T> => {
    const deadline = AbortSignal.timeout(options.deadlineMs);
    const ends = exchangeSignal ? AbortSignal.any([exchangeSignal, deadline]) : deadline;
    const deadlineAt = now() + options.deadlineMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await send(AbortSignal.any([ends, AbortSignal.timeout(options.attemptTimeoutMs)]));
      } catch (err) {
        const backoffMs = 200 * 2 ** (attempt - 1) * (0.5 + Math.random() / 2);
        const retryable = isRetryable(err) && !ends.aborted && attempt < maxAttempts && now() + backoffMs < deadlineAt;
        if (!retryable) throw err;
        await sleep(backoffMs, undefined, { signal: ends }).catch(() => undefined);
        if (ends.aborted) throw err;
      }
    }
  };

  const lookup = async (owner: string, repo: string, signal: AbortSignal | undefined, fresh: boolean): Promise<{ installation: Installation; cached: boolean }> => {
    const key = `${owner}/${repo}`.toLowerCase();
    const hit = installations.get(key);
    if (!fresh && hit && hit.expiresAt > now()) return { installation: hit.installation, cached: true };
    installations.delete(key);
    let data: { id: number; account: object | null; permissions: Record<string, string | undefined> };
    try {
      ({ data } = await call((attemptSignal) => octokit.request('GET /repos/{owner}/{repo}/installation', { owner, repo, request: { signal: attemptSignal } }), signal));
    } catch (err) {
      if (err instanceof RequestError && err.status === 404) {
        throw new AccessDeniedError(
          `The broker's GitHub App is not installed on ${owner}/${repo} (or cannot see it); an administrator of ${owner} must install the App on that repository, or the policy must name another.`,
          { reason: 'github_app_not_installed' },
        );
      }
      throw toProviderError(err, 'installation lookup');
    }
    const installation: Installation = {
      id: data.id,
      // An enterprise account has a slug, not a login.
      account: data.account !== null && 'login' in data.account && typeof data.account.login === 'string' ? data.account.login : owner,
      permissions: Object.freeze(Object.fromEntries(Object.entries(data.permissions).filter((entry): entry is [string, string] => typeof entry[1] === 'string'))),
    };
    // Bounded: the oldest entry goes first (a Map iterates in insertion order).
    if (installations.size >= cacheLimits.maxEntries) installations.delete(installations.keys().next().value!);
    installations.set(key, { installation, expiresAt: now() + cacheLimits.ttlMs });
    return { installation, cached: false };
  };

  const createToken = async (installation: Installation, repositories: RenderedRepositories, grant: GithubGrant, signal: AbortSignal | undefined) => {
    const { data } = await call(
      (attemptSignal) =>
        octokit.request('POST /app/installations/{installation_id}/access_tokens', {
          installation_id: installation.id,
          repositories: repositories.names,
          permissions: grant.permissions,
          request: { signal: attemptSignal },
        }),
      signal,
    );
    return data;
  };

  const issueOnce = async (grant: GithubGrant, repositories: RenderedRepositories, signal: AbortSignal | undefined, fresh: boolean): Promise<{ token: string; expiresAt: string } | 'stale'> => {
    const { installation, cached } = await lookup(repositories.owner, repositories.names[0]!, signal, fresh);
    refuseUngrantedPermissions(grant, installation);
    try {
      const data = await createToken(installation, repositories, grant, signal);
      if (typeof data.token !== 'string' || data.token === '' || typeof data.expires_at !== 'string') {
        throw new ProviderError('GitHub answered without a token; try again shortly.', { reason: 'github:incomplete_response' });
      }
      return { token: data.token, expiresAt: data.expires_at };
    } catch (err) {
      if (err instanceof RequestError && err.status === 422) {
        // The permissions were checked against the installation: a 422 is about the repositories, unless that installation was a cached one GitHub has since changed.
        installations.delete(`${repositories.owner}/${repositories.names[0]!}`.toLowerCase());
        if (cached) return 'stale';
        const named = repositories.names.map((name) => `${repositories.owner}/${name}`).join(', ');
        throw new AccessDeniedError(
          `GitHub refused a token for ${named}: at least one of them is not in the App's installation on ${installation.account}; an administrator of ${installation.account} must add it to the installation, or the policy must drop it.`,
          { reason: 'github_repository_not_in_installation' },
        );
      }
      throw toProviderError(err, 'token creation');
    }
  };

  return {
    async issue({ grant, token, signal }): Promise<IssuedCredential> {
      const repositories = renderGithubRepositories(grant, token.claims);
      let issued = await issueOnce(grant, repositories, signal, false);
      // Asked again once, with a fresh lookup, so the refusal names the right cause.
      if (issued === 'stale') issued = await issueOnce(grant, repositories, signal, true);
      if (issued === 'stale') throw new ProviderError('GitHub kept refusing the token request; try again shortly.', { reason: 'github:unprocessable' });
      const expiresAt = new Date(issued.expiresAt);
      if (Number.isNaN(expiresAt.getTime())) throw new ProviderError('GitHub answered with an unreadable expiry; try again shortly.', { reason: 'github:incomplete_response' });
      return {
        target: githubTarget(repositories, grant),
        credentialId: toCredentialFingerprint(issued.token),
        expiresAt,
        durationSeconds: Math.max(0, Math.min(TOKEN_LIFETIME_SECONDS, Math.round((expiresAt.getTime() - now()) / 1000))),
        credentials: { token: issued.token, token_type: 'token', expires_at: expiresAt.toISOString() },
        env: [
          ['GITHUB_TOKEN', issued.token],
          ['GH_TOKEN', issued.token],
        ],
      };
    },
  };
}

/** A permission beyond what the installation holds is refused before asking GitHub, naming it (GitHub's own 422 does not say which). */
function refuseUngrantedPermissions(grant: GithubGrant, installation: Installation): void {
  for (const [name, level] of Object.entries(grant.permissions)) {
    const held = installation.permissions[name];
    if (held === undefined || !isPermissionLevel(held) || LEVEL_RANK[held] < LEVEL_RANK[level]) {
      throw new AccessDeniedError(
        `The policy asks for ${name}: ${level}, but the broker's GitHub App installation on ${installation.account} holds ${held === undefined ? 'no ' + name + ' permission' : `${name}: ${held}`}; the App's owners must grant it (and ${installation.account} accept the change), or the policy must ask for less.`,
        { reason: 'github_permission_not_granted' },
      );
    }
  }
}

function isRetryable(err: unknown): boolean {
  if (isAbort(err)) return true;
  if (!(err instanceof RequestError)) return false;
  // A RequestError without a response is a network failure (octokit gives it status 500).
  return err.response === undefined || err.status >= 500;
}

/** An attempt or the exchange timed out: octokit rethrows an AbortError, and wraps a TimeoutError as a network failure. */
function isAbort(err: unknown): boolean {
  const isAbortName = (e: unknown): boolean => e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError');
  return isAbortName(err) || (err instanceof RequestError && err.response === undefined && isAbortName(err.cause));
}

/** Seconds to wait that a rate-limit answer names, or undefined when it is no rate limit (by status and headers, never message text). */
function rateLimitWait(err: RequestError): number | undefined {
  if (err.status !== 403 && err.status !== 429) return undefined;
  const headers = err.response?.headers ?? {};
  const retryAfter = Number(headers['retry-after']);
  if (headers['retry-after'] !== undefined && Number.isFinite(retryAfter)) return retryAfter;
  if (headers['x-ratelimit-remaining'] === '0') {
    const reset = Number(headers['x-ratelimit-reset']);
    return Number.isFinite(reset) ? reset - Math.floor(Date.now() / 1000) : 60;
  }
  return err.status === 429 ? 60 : undefined;
}

/** By status, headers and error type, never by message text. */
function toProviderError(err: unknown, step: string): Error {
  if (err instanceof ProviderError || err instanceof AccessDeniedError) return err;
  if (isAbort(err)) return new ProviderError(`GitHub did not answer the ${step} in time; try again shortly.`, { reason: 'github:timeout', cause: err });
  if (!(err instanceof RequestError) || err.response === undefined) {
    return new ProviderError(`GitHub could not be reached for the ${step}; try again shortly.`, { reason: 'github:unreachable', cause: err });
  }
  const wait = rateLimitWait(err);
  if (wait !== undefined) {
    const retryAfterSeconds = Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, Math.ceil(wait)));
    return new ProviderThrottledError(`GitHub is rate limiting the broker's App; try again in ${retryAfterSeconds} s.`, { reason: 'github:rate_limited', retryAfterSeconds, cause: err });
  }
  const reason = `github:http_${err.status}`;
  if (err.status === 401) {
    return new ProviderError("GitHub refused the broker's App credentials (App id or private key); the broker's operators must fix providers.github.", { reason: 'github:app_credentials_rejected', cause: err });
  }
  if (err.status === 403) {
    return new ProviderError(`GitHub refused the ${step} to the broker's App (403); the App's owners must check its installation and permissions.`, { reason, cause: err });
  }
  if (err.status >= 500) return new ProviderError(`GitHub failed the ${step} (${err.status}); try again shortly.`, { reason, cause: err });
  return new ProviderError(`GitHub answered the ${step} with ${err.status}; the broker's operators should check providers.github.api_url.`, { reason, cause: err });
}

/** fetch with a size cap on the answer, since octokit reads whatever comes. */
async function cappedFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const response = await fetch(input, init);
  if (response.body === null) return response;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > MAX_RESPONSE_BYTES) {
      await response.body.cancel().catch(() => undefined);
      throw new Error(`the answer exceeds ${MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new Response(response.status === 204 || response.status === 205 ? null : Buffer.concat(chunks), { status: response.status, statusText: response.statusText, headers: response.headers });
}
