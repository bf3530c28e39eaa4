/**
 * What can go wrong on the client side of an exchange (docs/ci/exchange.md):
 * the CLI and the GitHub Action phrase these for their users.
 */

/** A failure with a message safe to print (never a token); `retryable` says whether another attempt could succeed. */
export class ClientError extends Error {
  override name = 'ClientError';
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** The broker answered with an error status: its documented error body (docs/api.md), as far as it sent one. */
export class BrokerRefusal extends ClientError {
  override name = 'BrokerRefusal';
  constructor(
    readonly status: number,
    /** The broker's stable `error` code, when the body had one. */
    readonly code: string | undefined,
    /** The broker's `error_description`, `''` when absent. */
    readonly description: string,
    readonly requestId: string | undefined,
    /** The `Retry-After` header in seconds, when the broker sent one. */
    readonly retryAfterSeconds: number | undefined,
  ) {
    super(
      `The broker answered HTTP ${status}${code ? ` ${code}` : ''}${description ? `: ${description}` : '.'}${requestId ? ` (broker request id ${requestId})` : ''}`,
      isRetryableStatus(status),
    );
  }
}

/** Only these can succeed on a retry: everything else in 4xx is the broker's answer (docs/api.md). */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

/** The innermost message of a fetch failure (`fetch failed` alone says nothing). */
export function describeCause(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}
