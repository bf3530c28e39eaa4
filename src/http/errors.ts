import type { ErrorRequestHandler, Response } from 'express';
import {
  BrokerError,
  InvalidRequestError,
  ProviderThrottledError,
  RateLimitedError,
  RequestTooLargeError,
  toBrokerError,
  type ErrorCode,
} from '../errors.js';
import { errorSummary, type Logger } from '../logger.js';
import { shellQuote } from './shell.js';

/** The one place where an error code becomes an HTTP status (openapi.yaml). */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  invalid_request: 400,
  invalid_token: 401,
  access_denied: 403,
  unknown_policy: 404,
  not_found: 404,
  not_acceptable: 406,
  token_replayed: 409,
  request_too_large: 413,
  rate_limited: 429,
  server_error: 500,
  provider_error: 502,
  provider_throttled: 503,
  exchange_timeout: 504,
  issuer_unavailable: 503,
  audit_unavailable: 503,
  replay_unavailable: 503,
  not_ready: 503,
};

/** The RFC 6749 section 5.2 / RFC 8693 section 2.2.2 error codes `/oauth2/token` answers. */
export type OAuthErrorCode = 'invalid_request' | 'invalid_grant' | 'invalid_target' | 'unsupported_grant_type' | 'server_error' | 'temporarily_unavailable';

/**
 * The one place where a broker error code becomes an OAuth error on
 * `POST /oauth2/token` (RFC 6749 section 5.2, RFC 8693 section 2.2.2). The
 * audit record keeps the broker code; only the wire answer changes.
 *
 * - invalid_token: an invalid subject_token is `invalid_request` (RFC 8693 2.2.2), 400.
 * - access_denied (a policy or deny policy refuses) and token_replayed (the
 *   subject token was already spent): `invalid_grant`, 400 (the presented grant
 *   does not entitle the caller, like a used or unauthorized authorization code).
 * - unknown_policy: `invalid_target`, 400 (no such `scope`/`audience`).
 * - issuer_unavailable, audit_unavailable, replay_unavailable, not_ready, rate_limited,
 *   provider_throttled, exchange_timeout: `temporarily_unavailable`, their broker status kept (503, 429, 504).
 * - provider_error: `server_error`, 502 kept; server_error 500.
 * - request_too_large, not_acceptable, not_found: `invalid_request`, broker status kept.
 */
export const OAUTH_ERROR: Readonly<Record<ErrorCode, { error: OAuthErrorCode; status: number }>> = {
  invalid_request: { error: 'invalid_request', status: 400 },
  invalid_token: { error: 'invalid_request', status: 400 },
  access_denied: { error: 'invalid_grant', status: 400 },
  unknown_policy: { error: 'invalid_target', status: 400 },
  not_found: { error: 'invalid_request', status: 404 },
  not_acceptable: { error: 'invalid_request', status: 406 },
  token_replayed: { error: 'invalid_grant', status: 400 },
  request_too_large: { error: 'invalid_request', status: 413 },
  rate_limited: { error: 'temporarily_unavailable', status: 429 },
  server_error: { error: 'server_error', status: 500 },
  provider_error: { error: 'server_error', status: 502 },
  provider_throttled: { error: 'temporarily_unavailable', status: 503 },
  exchange_timeout: { error: 'temporarily_unavailable', status: 504 },
  issuer_unavailable: { error: 'temporarily_unavailable', status: 503 },
  audit_unavailable: { error: 'temporarily_unavailable', status: 503 },
  replay_unavailable: { error: 'temporarily_unavailable', status: 503 },
  not_ready: { error: 'temporarily_unavailable', status: 503 },
};

/**
 * A malformed token request whose OAuth code is more specific than
 * `invalid_request` (`unsupported_grant_type`, `invalid_target`); audited as
 * the broker's `invalid_request`.
 */
export class OAuthRequestError extends InvalidRequestError {
  constructor(
    readonly oauthError: 'invalid_request' | 'unsupported_grant_type' | 'invalid_target',
    message: string,
    reason: string,
  ) {
    super(message, { reason });
  }
}

/** 429 and 503 say when to retry (openapi.yaml): when the limit's window ends, when the provider's rate limit does, or in 5 s. */
export function retryAfterSeconds(error: BrokerError, status: number): number | undefined {
  if (error instanceof RateLimitedError) return error.limited.retryAfterSeconds;
  if (error instanceof ProviderThrottledError) return error.retryAfterSeconds;
  return status === 429 || status === 503 ? 5 : undefined;
}

function setRetryAfter(res: Response, error: BrokerError, status: number): void {
  const seconds = retryAfterSeconds(error, status);
  if (seconds !== undefined) res.set('Retry-After', String(seconds));
}

/** Writes an RFC 6749 section 5.2 error body `{error, error_description, request_id}` for `/oauth2/token`. */
export function sendOAuthError(res: Response, error: BrokerError): void {
  const mapped = OAUTH_ERROR[error.code];
  const status = mapped.status;
  setRetryAfter(res, error, status);
  res.set('Cache-Control', 'no-store');
  res.set('Pragma', 'no-cache');
  res.status(status).json({
    error: error instanceof OAuthRequestError ? error.oauthError : mapped.error,
    error_description: error.message,
    request_id: res.locals.requestId as string | undefined,
  });
}

/** Writes the documented error body (openapi.yaml): `{error, error_description, request_id}` (+ extra fields). */
export function sendError(res: Response, error: BrokerError, extra: Record<string, unknown> = {}): void {
  const status = HTTP_STATUS[error.code];
  if (status === 401) res.set('WWW-Authenticate', `Bearer error="invalid_token", error_description="${error.message.replace(/[^\x20-\x7e]/g, '').replace(/["\\]/g, "'")}"`);
  setRetryAfter(res, error, status);
  res.set('Cache-Control', 'no-store');
  const requestId = res.locals.requestId as string | undefined;
  if (res.locals.shellErrors === true) {
    // `?format=env` callers may eval the body: an error is a quoted echo to stderr and a failing command, never JSON holding claim values.
    const line = `oidc-broker: ${error.code}: ${error.message} (request ${requestId ?? 'unknown'})`;
    res.status(status).type('text/plain').send(`echo ${shellQuote(line)} >&2\nfalse\n`);
    return;
  }
  res.status(status).json({ error: error.code, error_description: error.message, request_id: requestId, ...extra });
}

/** Body-parser failures arrive as http-errors with a `type`; translate them by type, never by message. */
export function fromBodyParserError(err: unknown): BrokerError | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.too.large') return new RequestTooLargeError('The request body is too large.', { reason: 'body_too_large', cause: err });
  if (type === 'entity.parse.failed') return new InvalidRequestError('The request body is not valid JSON.', { reason: 'malformed_body', cause: err });
  if (type === 'encoding.unsupported' || type === 'charset.unsupported' || type === 'entity.verify.failed' || type === 'request.aborted' || type === 'request.size.invalid') {
    return new InvalidRequestError('The request body could not be read.', { reason: 'unreadable_body', cause: err });
  }
  return undefined;
}

/** The single error middleware: BrokerErrors answer their status; anything else is a bug and answers a generic 500. */
export function errorMiddleware(logger: Logger): ErrorRequestHandler {
  return (err, _req, res, next) => {
    if (res.headersSent) return next(err);
    const error = fromBodyParserError(err) ?? toBrokerError(err);
    if (error.code === 'server_error') logger.error('unhandled error', { request_id: res.locals.requestId as string, cause: errorSummary(error.cause, true) });
    sendError(res, error);
  };
}
