import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { IAMCredentialsClient } from '@google-cloud/iam-credentials';
import { decodeJwt } from 'jose';
import { AccessDeniedError, ProviderError } from '../errors.js';
import { TemplateError, type GcpGrant } from '../policy/types.js';
import { clampDurationSeconds, type IssuedCredential, type Provider } from './types.js';

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
 * generateIdToken (contract section 3, `gcp`). The broker's own identity is
 * Application Default Credentials. The REST transport is used (plain HTTP/1),
 * and it never retries by itself: 429 and 5xx are retried here, within the
 * deadline.
 */
export function createGcpProvider(options: GcpProviderOptions): Provider<GcpGrant> {
  const deadlineMs = options.deadlineMs ?? 25_000;
  const maxAttempts = options.maxAttempts ?? 3;
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
        clientOptions: { transporterOptions: { timeout: options.attemptTimeoutMs ?? 8_000 } },
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

  return {
    name: 'gcp',
    async issue({ grant, token, requestedDurationSeconds }): Promise<IssuedCredential> {
      const name = `projects/-/serviceAccounts/${grant.serviceAccount}`;
      const delegates = grant.delegates.map((email) => `projects/-/serviceAccounts/${email}`);
      const ceilingSeconds = Math.min(grant.maxDurationSeconds, options.maxLifetimeSeconds);
      const iam = await client();

      if (grant.tokenType === 'id_token') {
        const audience = renderAudience(grant, token.claims);
        const [response] = await withRetries(() => iam.generateIdToken({ name, delegates, audience, includeEmail: grant.includeEmail }), deadlineMs, maxAttempts);
        const idToken = response.token;
        if (!idToken) throw new ProviderError('Google answered without a token; try again shortly.', { reason: 'gcp:INCOMPLETE_RESPONSE' });
        const expiresAt = new Date((decodeJwt(idToken).exp ?? 0) * 1000);
        return {
          provider: 'gcp',
          target: grant.serviceAccount,
          credentialId: fingerprint(idToken),
          expiresAt,
          durationSeconds: Math.max(0, Math.round((expiresAt.getTime() - Date.now()) / 1000)),
          credentials: { id_token: idToken },
          env: [['GOOGLE_ID_TOKEN', idToken]],
        };
      }

      const durationSeconds = clampDurationSeconds(requestedDurationSeconds, MIN_LIFETIME_SECONDS, ceilingSeconds);
      const [response] = await withRetries(
        () => iam.generateAccessToken({ name, delegates, scope: [...grant.scopes], lifetime: { seconds: durationSeconds } }),
        deadlineMs,
        maxAttempts,
      );
      const accessToken = response.accessToken;
      const expireSeconds = Number(response.expireTime?.seconds ?? 0);
      if (!accessToken || !expireSeconds) throw new ProviderError('Google answered without a token; try again shortly.', { reason: 'gcp:INCOMPLETE_RESPONSE' });
      return {
        provider: 'gcp',
        target: grant.serviceAccount,
        credentialId: fingerprint(accessToken),
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

function renderAudience(grant: GcpGrant, claims: Readonly<Record<string, unknown>>): string {
  try {
    return grant.idTokenAudience!.render(claims);
  } catch (err) {
    if (err instanceof TemplateError) {
      throw new AccessDeniedError(`The policy's GCP grant cannot be rendered for this token: ${err.message}.`, { reason: 'template_claim_unusable', cause: err });
    }
    throw err;
  }
}

/** Tokens are recorded by fingerprint, never in full. */
function fingerprint(token: string): string {
  return `sha256:${createHash('sha256').update(token).digest('hex')}`;
}

async function withRetries<T>(call: () => Promise<T>, deadlineMs: number, maxAttempts: number): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const backoffMs = 200 * 2 ** (attempt - 1) * (0.5 + Math.random() / 2);
      if (attempt >= maxAttempts || !isRetryable(err) || Date.now() + backoffMs >= deadline) throw toProviderError(err);
      await sleep(backoffMs);
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
