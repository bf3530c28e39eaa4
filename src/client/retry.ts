/**
 * How long to wait before the next attempt (docs/ci/exchange.md#retries):
 * exponential backoff with jitter, or the broker's `Retry-After` when it sent
 * one, both capped so a job never sleeps longer than `maxDelayMs`.
 */
export interface RetryOptions {
  /** Attempts in all, the first included (1 = no retry). */
  maxAttempts: number;
  /** The delay before the second attempt, doubled for each later one, before jitter. */
  baseDelayMs: number;
  /** No wait is longer, whatever `Retry-After` says. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 30_000 };

/**
 * The wait after failed attempt `attempt` (1-based). Jitter takes the delay
 * anywhere from half to all of the backoff, so jobs that failed together do
 * not all come back at once; `random` is in [0, 1).
 */
export function retryDelayMs(attempt: number, retryAfterSeconds: number | undefined, options: RetryOptions, random: () => number = Math.random): number {
  if (retryAfterSeconds !== undefined) return Math.min(retryAfterSeconds * 1000, options.maxDelayMs);
  const backoff = Math.min(options.baseDelayMs * 2 ** (attempt - 1), options.maxDelayMs);
  return Math.round(backoff / 2 + (backoff / 2) * random());
}

/** An HTTP date (`Sun, 06 Dec 2026 10:00:30 GMT`); Date.parse alone would read "-1" or "1.5" as dates. */
const HTTP_DATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** `Retry-After` in seconds: the delta-seconds form, or an HTTP date; `undefined` when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  const text = value?.trim() ?? '';
  if (/^\d{1,9}$/.test(text)) return Number(text);
  const date = HTTP_DATE.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}
