import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { RateLimitedError, type ErrorCode } from '../errors.js';

/** The rate limits (docs/configuration.md, `limits`); each counts per key per minute. */
export const LIMIT_NAMES = ['refused_per_ip', 'exchanges_per_subject', 'explains_per_subject', 'auditor_failures_per_ip'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** Requests allowed per key per minute, by limit. */
export type LimitsConfig = Record<LimitName, number>;

/** Every limit counts in fixed windows of this length, from the first request of a key. */
export const WINDOW_SECONDS = 60;

/**
 * The refusals `refused_per_ip` counts (docs/configuration.md): the caller's
 * own mistakes (400, 401, 403, 404, 409, 413), not the broker's failures, and
 * not the 429s themselves.
 */
export const COUNTED_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['invalid_request', 'invalid_token', 'access_denied', 'unknown_policy', 'token_replayed', 'request_too_large']);

/**
 * Where the counts live: this process's memory (one broker process), or Redis
 * shared by every replica, so a limit holds across them.
 */
export interface LimitsStore {
  redis: Redis;
  /** Prefix of every key the limits write. */
  keyPrefix: string;
}

/**
 * One rate limit. Two counters per key: the requests (or refusals) it
 * limits, and the limited requests themselves, whose first per window is
 * audited on its own while the rest are summarised (docs/audit.md).
 */
export class RateLimit {
  private readonly counter: RateLimiterAbstract;
  private readonly limited: RateLimiterAbstract;

  constructor(
    readonly name: LimitName,
    readonly perMinute: number,
    store?: LimitsStore,
  ) {
    this.counter = createLimiter(name, perMinute, store);
    this.limited = createLimiter(`${name}:limited`, 1, store);
  }

  /** Counts one request for key; over the limit it is refused, with the error to answer. */
  async consume(key: string): Promise<RateLimitedError | undefined> {
    try {
      await this.counter.consume(key);
      return undefined;
    } catch (err) {
      return this.refusal(key, rejection(err));
    }
  }

  /** Whether key is already at the limit (nothing is counted against it but the refusal). */
  async check(key: string): Promise<RateLimitedError | undefined> {
    const res = await this.counter.get(key);
    return res !== null && res.consumedPoints >= this.perMinute ? this.refusal(key, res) : undefined;
  }

  /** Counts one event (a refusal) for key without refusing anything. */
  async count(key: string): Promise<void> {
    // consume, not penalty: consume is the call that falls back to memory when Redis fails.
    await this.counter.consume(key).catch((err: unknown) => void rejection(err));
  }

  private async refusal(key: string, res: RateLimiterRes): Promise<RateLimitedError> {
    const retryAfterSeconds = Math.max(1, Math.ceil(res.msBeforeNext / 1000));
    let dropped: { windowEnd: Date } | undefined;
    try {
      await this.limited.consume(key);
    } catch (err) {
      dropped = { windowEnd: new Date(Date.now() + rejection(err).msBeforeNext) };
    }
    const message = `Too many requests (limit ${this.name}: ${this.perMinute} a minute); retry in ${retryAfterSeconds} s.`;
    return new RateLimitedError(message, { limit: this.name, key, retryAfterSeconds, ...(dropped ? { dropped } : {}) });
  }
}

/** A limiter's refusal is a RateLimiterRes; anything else is a store failure the insurance limiter did not absorb. */
function rejection(err: unknown): RateLimiterRes {
  if (err instanceof RateLimiterRes) return err;
  throw err;
}

function createLimiter(name: string, points: number, store: LimitsStore | undefined): RateLimiterAbstract {
  const options = { points, duration: WINDOW_SECONDS, keyPrefix: name };
  if (!store) return new RateLimiterMemory(options);
  return new RateLimiterRedis({
    ...options,
    keyPrefix: `${store.keyPrefix}:${name}`,
    storeClient: store.redis,
    // Redis unreachable: count in this process's memory meanwhile rather than wait on a queued command or refuse everyone.
    rejectIfRedisNotReady: true,
    insuranceLimiter: new RateLimiterMemory(options),
  });
}

/** The broker's limits, one per name. */
export type Limits = Record<LimitName, RateLimit>;

export function createLimits(config: LimitsConfig, store?: LimitsStore): Limits {
  return Object.fromEntries(LIMIT_NAMES.map((name) => [name, new RateLimit(name, config[name], store)])) as Limits;
}
