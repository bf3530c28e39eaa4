/**
 * One exchange at the broker's `POST /v1/exchange` (docs/api.md), retried
 * only when another attempt can succeed: network errors, 5xx and 429, each
 * with a fresh token from the source. A 4xx is the broker's answer and never
 * retried. Shared by `oidc-broker exchange` and the GitHub Action.
 */
import { BrokerRefusal, ClientError, describeCause } from './errors.js';
import { DEFAULT_RETRY, parseRetryAfter, retryDelayMs, type RetryOptions } from './retry.js';
import type { TokenSource } from './token-source.js';

/** The broker's answer formats (`?format=`); `json` is the exchange response. */
export type ExchangeFormat = 'json' | 'env' | 'credential_process';

export interface ExchangeRequest {
  /** The broker's base URL, checked by `toBrokerUrl`. */
  brokerUrl: string;
  policy: string;
  durationSeconds?: number | undefined;
  format: ExchangeFormat;
  token: TokenSource;
}

/** A successful answer: the body exactly as the broker sent it, and, for `json`, parsed. */
export interface ExchangeAnswer {
  body: string;
  response: ExchangeResponse | undefined;
}

/** The exchange response (openapi.yaml, ExchangeResponse). */
export interface ExchangeResponse {
  issuance_id: string;
  policy?: string;
  provider?: string;
  expires_at: string;
  credentials: Record<string, string>;
}

export interface RetryEvents {
  /** Called before each wait with the attempt that failed, why, and the wait. */
  onRetry?: (attempt: number, maxAttempts: number, error: ClientError, delayMs: number) => void;
}

const EXCHANGE_TIMEOUT_MS = 30_000;

/**
 * Exchanges until an attempt succeeds, one fails for good, or attempts run out.
 * @throws ClientError (a BrokerRefusal when the broker answered an error status)
 */
export async function exchangeWithRetry(request: ExchangeRequest, retry: RetryOptions = DEFAULT_RETRY, events: RetryEvents = {}): Promise<ExchangeAnswer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await exchangeOnce(request, await request.token());
    } catch (err) {
      const error = err instanceof ClientError ? err : new ClientError(`Unexpected error: ${describeCause(err)}`, false);
      if (!error.retryable || attempt >= retry.maxAttempts) throw error;
      const delayMs = retryDelayMs(attempt, error instanceof BrokerRefusal ? error.retryAfterSeconds : undefined, retry);
      events.onRetry?.(attempt, retry.maxAttempts, error, delayMs);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** One `POST /v1/exchange`. @throws ClientError */
export async function exchangeOnce(request: ExchangeRequest, token: string): Promise<ExchangeAnswer> {
  const body: Record<string, unknown> = { policy: request.policy };
  if (request.durationSeconds !== undefined) body.duration_seconds = request.durationSeconds;
  const query = request.format === 'json' ? '' : `?format=${request.format}`;
  let response: Response;
  let text: string;
  try {
    response = await fetch(`${request.brokerUrl}/v1/exchange${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: request.format === 'env' ? 'text/plain' : 'application/json' },
      body: JSON.stringify(body),
      redirect: 'manual',
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS),
    });
    text = await response.text();
  } catch (err) {
    throw new ClientError(`Could not reach the broker at ${request.brokerUrl}: ${describeCause(err)}.`, true);
  }
  if (response.status !== 200) throw toRefusal(response, text);
  if (request.format !== 'json') return { body: text, response: undefined };
  const json = parseObject(text);
  if (!json || typeof json.issuance_id !== 'string' || typeof json.expires_at !== 'string' || !isStringRecord(json.credentials)) {
    throw new ClientError(`The broker answered HTTP ${response.status} without an exchange response.`, false);
  }
  return { body: text, response: json as unknown as ExchangeResponse };
}

/**
 * The broker's error as data. A `?format=env` error is shell text,
 * `echo '<oidc-broker: code: description (request id)>' >&2` (docs/api.md),
 * read back here so both formats report the same way.
 */
function toRefusal(response: Response, text: string): BrokerRefusal {
  const retryAfter = parseRetryAfter(response.headers.get('retry-after'));
  const json = parseObject(text);
  if (json) {
    const str = (value: unknown) => (typeof value === 'string' ? value : undefined);
    return new BrokerRefusal(response.status, str(json.error), str(json.error_description) ?? '', str(json.request_id), retryAfter);
  }
  const shell = /^echo '((?:[^']|'\\'')*)' >&2\n/.exec(text);
  const line = shell?.[1]?.replace(/'\\''/g, "'");
  const parts = line === undefined ? undefined : /^oidc-broker: ([a-z_]+): (.*) \(request ([^)]*)\)$/s.exec(line);
  if (parts) return new BrokerRefusal(response.status, parts[1], parts[2]!, parts[3] === 'unknown' ? undefined : parts[3], retryAfter);
  return new BrokerRefusal(response.status, undefined, '', undefined, retryAfter);
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
}
