/**
 * The broker's error taxonomy. Every refusal the broker makes is one of these
 * classes; `src/http/errors.ts` maps each `code` to exactly one HTTP status.
 *
 * - `code` is the stable wire code (openapi.yaml).
 * - `reason` is a short machine reason (`expired`, `audience_mismatch`) kept in
 *   the audit record and shown by explain.
 * - `message` is a sentence that is safe to show to the caller: it never holds a
 *   token, a credential or an upstream error body.
 * - `cause` is for the operator's log only.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'invalid_token'
  | 'access_denied'
  | 'unknown_policy'
  | 'not_found'
  | 'not_acceptable'
  | 'token_replayed'
  | 'request_too_large'
  | 'rate_limited'
  | 'server_error'
  | 'provider_error'
  | 'provider_throttled'
  | 'exchange_timeout'
  | 'issuer_unavailable'
  | 'audit_unavailable'
  | 'replay_unavailable'
  | 'not_ready';

export interface BrokerErrorOptions {
  /** Machine reason, snake_case; defaults to the code. */
  reason?: string;
  cause?: unknown;
}

export abstract class BrokerError extends Error {
  abstract readonly code: ErrorCode;
  readonly reason: string | undefined;

  constructor(message: string, options: BrokerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.reason = options.reason;
  }
}

/** Malformed input: a missing field, a bad parameter, both token forms at once. */
export class InvalidRequestError extends BrokerError {
  readonly code = 'invalid_request' as const;
}

/** The presented token is not a valid token of a configured issuer (or not an auditor's token). */
export class InvalidTokenError extends BrokerError {
  readonly code = 'invalid_token' as const;
}

/** The token is valid but a trust policy does not allow the request. */
export class AccessDeniedError extends BrokerError {
  readonly code = 'access_denied' as const;
}

export class UnknownPolicyError extends BrokerError {
  readonly code = 'unknown_policy' as const;
}

/** No such route. */
export class NotFoundError extends BrokerError {
  readonly code = 'not_found' as const;
}

/** The `Accept` header allows none of the media types the route can answer. */
export class NotAcceptableError extends BrokerError {
  readonly code = 'not_acceptable' as const;
}

export class TokenReplayedError extends BrokerError {
  readonly code = 'token_replayed' as const;
}

export class RequestTooLargeError extends BrokerError {
  readonly code = 'request_too_large' as const;
}

/**
 * Too many requests for one key of a rate limit (docs/configuration.md,
 * `limits`). `dropped` is set for every limited request of a window but the
 * first: such a request gets no audit record of its own and is counted in the
 * window's summary record instead (docs/audit.md).
 */
export class RateLimitedError extends BrokerError {
  readonly code = 'rate_limited' as const;

  constructor(
    message: string,
    readonly limited: {
      /** The limit's name, as in the config. */
      limit: string;
      /** What the limit counts by: a client address, or an issuer and subject. */
      key: string;
      /** Whole seconds until the key is allowed again: the answer's Retry-After. */
      retryAfterSeconds: number;
      /** When the window whose summary counts this request ends. */
      dropped?: { windowEnd: Date };
    },
  ) {
    super(message, { reason: limited.limit });
  }
}

/** A bug in the broker; the client sees only a generic sentence. */
export class ServerError extends BrokerError {
  readonly code = 'server_error' as const;
}

/** A credential provider (STS, IAM Credentials, the signer) failed. */
export class ProviderError extends BrokerError {
  readonly code = 'provider_error' as const;
}

/**
 * A credential provider is rate limiting the broker (GitHub's primary or
 * secondary rate limit): nothing was issued, and the caller may retry after
 * `retryAfterSeconds`, the answer's Retry-After.
 */
export class ProviderThrottledError extends BrokerError {
  readonly code = 'provider_throttled' as const;
  readonly retryAfterSeconds: number;

  constructor(message: string, options: BrokerErrorOptions & { retryAfterSeconds: number }) {
    super(message, options);
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/**
 * The exchange did not finish within `server.exchange_timeout_seconds`
 * (docs/configuration.md): the broker's own deadline, whatever a provider's
 * SDK or an issuer does. Its `reason` names the step that was running; a
 * credential that arrives after it is discarded, never delivered.
 */
export class ExchangeTimeoutError extends BrokerError {
  readonly code = 'exchange_timeout' as const;
}

/** The token's issuer could not be reached for its keys (discovery or JWKS). */
export class IssuerUnavailableError extends BrokerError {
  readonly code = 'issuer_unavailable' as const;
}

/** The audit store could not durably record the decision: fail closed. */
export class AuditUnavailableError extends BrokerError {
  readonly code = 'audit_unavailable' as const;
}

/** The replay store (Redis) could not be reached, so a single-use token cannot be checked: fail closed. */
export class ReplayUnavailableError extends BrokerError {
  readonly code = 'replay_unavailable' as const;
}

export class NotReadyError extends BrokerError {
  readonly code = 'not_ready' as const;
}

/** Turns anything thrown into a BrokerError; an unknown error is a bug and becomes a ServerError. */
export function toBrokerError(err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  return new ServerError('The broker failed to handle this request.', { reason: 'internal_error', cause: err });
}
