import { setTimeout as sleep } from 'node:timers/promises';
import { IAMCredentialsClient } from '@google-cloud/iam-credentials';
import { decodeJwt } from 'jose';
import { ProviderError } from '../../errors.js';
import { toCredentialFingerprint } from '../fingerprint.js';
import { clampDurationSeconds, type IssuedCredential, type Provider } from '../types.js';
import type { GcpGrant } from './grant.js';
import { renderIdTokenAudience } from './render.js';

export interface GcpProviderOptions {
  /** IAM Credentials REST endpoint override (`http://` only on loopback); default iamcredentials.googleapis.com. */
  endpoint?: string | undefined;
  /** Provider ceiling on token lifetime: 3600 unless the organisation allows extended lifetimes. */
  maxLifetimeSeconds: number;
  /** The whole call, retries included. */
  deadlineMs?: number;
  /** One HTTP attempt (the REST transport ignores per-call timeouts, so it is set on the transporter). */
  attemptTimeoutMs?: number;
  maxAttempts?: number;
}

const MIN_LIFETIME_SECONDS = 60;
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
/** HTTP statuses of the REST transport, named as Google's API errors name them. */
const STATUS_NAMES: Readonly<Record<number, string>> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};
const RETRYABLE_STATUSES = new Set([429, 500, 502, 503, 504]);
const RETRYABLE_NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

/**
 * Google Cloud credentials through IAM Credentials generateAccessToken and
 * generateIdToken (docs/policies/reference.md, `gcp`). The broker's own identity is
 * Application Default Credentials. The REST transport is used (plain HTTP/1),
 * and it never retries by itself: 429 and 5xx are retried here, within the
 * deadline.
 */
export function createGcpProvider(options: GcpProviderOptions): Provider<GcpGrant> {
  const deadlineMs = options.deadlineMs ?? 25_000;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? 8_000;
  const maxAttempts = options.maxAttempts ?? 3;
  const retryPolicy = { deadlineMs, attemptTimeoutMs, maxAttempts };
  let ready: Promise<IAMCredentialsClient> | undefined;

  // A client whose start-up failed keeps failing (and rejects later calls unhandled): build it once,
  // initialise it explicitly, and forget it on failure so the next request starts afresh.
  const client = (): Promise<IAMCredentialsClient> =>
    (ready ??= (async () => {
      const endpoint = options.endpoint ? new URL(options.endpoint) : undefined;
      const created = new IAMCredentialsClient({
        fallback: true,
        ...(endpoint
          ? { apiEndpoint: endpoint.hostname, port: Number(endpoint.port || (endpoint.protocol === 'https:' ? 443 : 80)), protocol: endpoint.protocol.replace(':', '') }
          : {}),
        scopes: [CLOUD_PLATFORM],
        clientOptions: { transporterOptions: { timeout: attemptTimeoutMs } },
      });
      await created.initialize();
      return created;
    })().catch((err: unknown) => {
      ready = undefined;
      throw new ProviderError("The broker could not obtain its own Google credentials; the broker's operators must fix its Application Default Credentials.", {
        reason: 'gcp:ADC_FAILED',
        cause: err,
      });
    }));

  // A 401 means Google no longer accepts the broker's cached ADC token: drop the client so the
  // next request builds a fresh one instead of failing until restart.
  const call = async <T>(request: (iam: IAMCredentialsClient) => Promise<T>, signal: AbortSignal | undefined): Promise<T> => {
    const iam = await client();
    try {
      return await withRetries(() => request(iam), retryPolicy, signal);
    } catch (err) {
      if (err instanceof ProviderError && err.reason === 'gcp:UNAUTHENTICATED' && ready) {
        const stale = ready;
        ready = undefined;
        void stale.then((c) => c.close()).catch(() => undefined);
      }
      throw err;
    }
  };

  return {
    async issue({ grant, token, requestedDurationSeconds, signal }): Promise<IssuedCredential> {
      const name = `projects/-/serviceAccounts/${grant.serviceAccount}`;
      const delegates = grant.delegates.map((email) => `projects/-/serviceAccounts/${email}`);
      const ceilingSeconds = Math.min(grant.maxDurationSeconds, options.maxLifetimeSeconds);
      if (grant.tokenType === 'id_token') {
        const audience = renderIdTokenAudience(grant, token.claims)!;
        const [response] = await call((iam) => iam.generateIdToken({ name, delegates, audience, includeEmail: grant.includeEmail }), signal);
        const idToken = response.token;
        if (!idToken) throw new ProviderError('Google answered without a token; try again shortly.', { reason: 'gcp:INCOMPLETE_RESPONSE' });
        const expiresAt = idTokenExpiry(idToken);
        return {
          target: grant.serviceAccount,
          credentialId: toCredentialFingerprint(idToken),
          expiresAt,
          durationSeconds: Math.max(0, Math.round((expiresAt.getTime() - Date.now()) / 1000)),
          credentials: { id_token: idToken },
          env: [['GOOGLE_ID_TOKEN', idToken]],
        };
      }

      const durationSeconds = clampDurationSeconds(requestedDurationSeconds, MIN_LIFETIME_SECONDS, ceilingSeconds);
      const [response] = await call((iam) => iam.generateAccessToken({ name, delegates, scope: [...grant.scopes], lifetime: { seconds: durationSeconds } }), signal);
      const accessToken = response.accessToken;
      const expireSeconds = Number(response.expireTime?.seconds ?? 0);
      if (!accessToken || !expireSeconds) throw new ProviderError('Google answered without a token; try again shortly.', { reason: 'gcp:INCOMPLETE_RESPONSE' });
      return {
        target: grant.serviceAccount,
        credentialId: toCredentialFingerprint(accessToken),
        expiresAt: new Date(expireSeconds * 1000),
        durationSeconds,
        credentials: { access_token: accessToken, token_type: 'Bearer' },
        // The gcloud CLI and Terraform's google provider read these.
        env: [
          ['CLOUDSDK_AUTH_ACCESS_TOKEN', accessToken],
          ['GOOGLE_OAUTH_ACCESS_TOKEN', accessToken],
        ],
      };
    },
  };
}


/** The expiry Google put in the ID token; a token we cannot read is a bad answer, not a server fault. */
function idTokenExpiry(idToken: string): Date {
  let exp: number | undefined;
  try {
    exp = decodeJwt(idToken).exp;
  } catch (err) {
    throw new ProviderError('Google answered with an unreadable ID token; try again shortly.', { reason: 'gcp:BAD_RESPONSE', cause: err });
  }
  if (typeof exp !== 'number') throw new ProviderError('Google answered with an ID token without an expiry; try again shortly.', { reason: 'gcp:INCOMPLETE_RESPONSE' });
  return new Date(exp * 1000);
}

interface RetryPolicy {
  deadlineMs: number;
  attemptTimeoutMs: number;
  maxAttempts: number;
}

/**
 * Another attempt is only started if it can run to its own timeout before the
 * deadline, and never once the exchange has ended (`signal`: its deadline, or
 * shutdown abandoning it). The client library takes no signal, so an attempt
 * already sent runs to its own timeout.
 */
async function withRetries<T>(attempt: () => Promise<T>, policy: RetryPolicy, signal: AbortSignal | undefined): Promise<T> {
  const deadline = Date.now() + policy.deadlineMs;
  for (let attemptNumber = 1; ; attemptNumber++) {
    try {
      return await attempt();
    } catch (err) {
      const backoffMs = 200 * 2 ** (attemptNumber - 1) * (0.5 + Math.random() / 2);
      const outOfTime = Date.now() + backoffMs + policy.attemptTimeoutMs > deadline;
      if (attemptNumber >= policy.maxAttempts || !isRetryable(err) || outOfTime || signal?.aborted) throw toProviderError(err);
      await sleep(backoffMs, undefined, signal ? { signal } : undefined).catch(() => undefined);
      if (signal?.aborted) throw toProviderError(err);
    }
  }
}

function httpStatus(err: unknown): number | undefined {
  const status = (err as { status?: unknown; code?: unknown } | null)?.status ?? (err as { code?: unknown } | null)?.code;
  return typeof status === 'number' ? status : undefined;
}

function isRetryable(err: unknown): boolean {
  const status = httpStatus(err);
  if (status !== undefined) return RETRYABLE_STATUSES.has(status);
  const code = (err as { code?: unknown } | null)?.code;
  return (typeof code === 'string' && RETRYABLE_NETWORK_CODES.has(code)) || isTimeout(err);
}

function isTimeout(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || (err.cause instanceof Error && err.cause.name === 'AbortError'));
}

/** By HTTP status and error type, never by message text. */
function toProviderError(err: unknown): ProviderError {
  if (err instanceof ProviderError) return err;
  const status = httpStatus(err);
  if (status === undefined) {
    if (isTimeout(err)) return new ProviderError('Google IAM Credentials did not answer in time; try again shortly.', { reason: 'gcp:TIMEOUT', cause: err });
    return new ProviderError('Google IAM Credentials could not be reached or answered something unreadable; try again shortly.', { reason: 'gcp:BAD_RESPONSE', cause: err });
  }
  const code = STATUS_NAMES[status] ?? `HTTP_${status}`;
  const reason = `gcp:${code}`;
  switch (status) {
    case 400:
      return new ProviderError(`Google rejected the request this policy produces (${code}); the policy's owners must fix its grant.`, { reason, cause: err });
    case 401:
      return new ProviderError(`Google refused the broker's own credentials (${code}); the broker's operators must fix them.`, { reason, cause: err });
    case 403:
      return new ProviderError(`Google refused to let the broker act as the service account (${code}): it needs roles/iam.serviceAccountTokenCreator on it.`, { reason, cause: err });
    case 404:
      return new ProviderError(`The policy's service account does not exist (${code}); the policy's owners must fix its grant.`, { reason, cause: err });
    default:
      return new ProviderError(`Google IAM Credentials is throttling or unavailable (${code}); try again shortly.`, { reason, cause: err });
  }
}
