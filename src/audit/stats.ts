/**
 * `GET /v1/audit/stats` (docs/audit.md#stats): the window and bounds of a
 * stats query, and the answer shaped from the rows a backend aggregates in
 * SQL. Bounded so one request cannot ask for an unbounded answer: at most
 * MAX_STATS_BUCKETS buckets and MAX_STATS_TOP entries per top list.
 */
import { InvalidRequestError } from '../errors.js';
import { AUDIT_DECISIONS } from './record.js';
import type { AuditDecision, AuditQuery, AuditStats, AuditStatsQuery, AuditStatsRows } from './types.js';

export const MAX_STATS_BUCKETS = 1000;
export const MAX_STATS_TOP = 20;
export const DEFAULT_STATS_TOP = 10;

const BUCKETS = {
  hour: { ms: 3_600_000, chars: 13, defaultWindowMs: 24 * 3_600_000 },
  day: { ms: 86_400_000, chars: 10, defaultWindowMs: 30 * 86_400_000 },
} as const;

/** A validated stats query: the audit query over its window, and how to group it. */
export interface CompiledStatsQuery {
  query: AuditQuery & { since: string; until: string };
  bucket: 'hour' | 'day';
  /** How many leading characters of a stored `time` name its bucket. */
  bucketChars: number;
  top: number;
  /** Bucket starts, oldest first. */
  buckets: string[];
}

/**
 * Validates a stats query. Without `until` the window ends `now`; without
 * `since` it is the last 24 hours (bucket `hour`) or 30 days (`day`).
 *
 * @throws InvalidRequestError with reason `bad_bucket`, `bad_limit`, `bad_time` or `too_many_buckets`.
 */
export function compileStatsQuery(query: AuditStatsQuery, now: Date): CompiledStatsQuery {
  const { bucket = 'hour', top = DEFAULT_STATS_TOP, ...filters } = query;
  if (bucket !== 'hour' && bucket !== 'day') throw new InvalidRequestError("'bucket' must be hour or day.", { reason: 'bad_bucket' });
  if (!Number.isInteger(top) || top < 1 || top > MAX_STATS_TOP) throw new InvalidRequestError(`'top' must be an integer from 1 to ${MAX_STATS_TOP}.`, { reason: 'bad_limit' });
  const size = BUCKETS[bucket];
  const until = filters.until ?? now.toISOString();
  const since = filters.since ?? new Date(Date.parse(until) - size.defaultWindowMs).toISOString();
  if (since >= until) throw new InvalidRequestError("'since' must be before 'until'.", { reason: 'bad_time' });
  const first = Math.floor(Date.parse(since) / size.ms) * size.ms;
  const count = Math.ceil((Date.parse(until) - first) / size.ms);
  if (count > MAX_STATS_BUCKETS) {
    throw new InvalidRequestError(`The window from 'since' to 'until' spans ${count} ${bucket} buckets; at most ${MAX_STATS_BUCKETS} are allowed.`, { reason: 'too_many_buckets' });
  }
  const buckets = Array.from({ length: count }, (_, i) => new Date(first + i * size.ms).toISOString());
  return { query: { ...filters, since, until }, bucket, bucketChars: size.chars, top, buckets };
}

/** The answer for `stats` from the backend's rows (null: nothing can match). */
export function shapeStats(stats: CompiledStatsQuery, rows: AuditStatsRows | null): AuditStats {
  const index = new Map(stats.buckets.map((start, i) => [start.slice(0, stats.bucketChars), i]));
  const zeros = () => stats.buckets.map(() => 0);
  const byDecision = Object.fromEntries(AUDIT_DECISIONS.map((d) => [d, zeros()])) as Record<AuditDecision, number[]>;
  const byPolicy = new Map<string | null, { policy: string | null; total: number; counts: number[] }>();
  let total = 0;
  for (const row of rows?.series ?? []) {
    const i = index.get(row.bucket);
    const series = byDecision[row.decision as AuditDecision] as number[] | undefined;
    // The window's own bounds select the rows, so every bucket is known; a stored decision no longer known is an edited store, which verify names.
    if (i === undefined || series === undefined) throw new Error(`a stats row falls outside the window: ${row.bucket} ${row.decision}`);
    const n = Number(row.n);
    total += n;
    series[i]! += n;
    let policy = byPolicy.get(row.policy);
    if (policy === undefined) byPolicy.set(row.policy, (policy = { policy: row.policy, total: 0, counts: zeros() }));
    policy.total += n;
    policy.counts[i]! += n;
  }
  const policies = [...byPolicy.values()].sort((a, b) => b.total - a.total || compareNullable(a.policy, b.policy)).slice(0, stats.top);
  return {
    since: stats.query.since,
    until: stats.query.until,
    bucket: stats.bucket,
    buckets: stats.buckets,
    total,
    by_decision: byDecision,
    by_policy: policies,
    top_denial_reasons: (rows?.reasons ?? []).map((r) => ({ error: r.error, reason: r.reason, count: Number(r.n) })),
    top_subjects: (rows?.subjects ?? []).map((r) => ({ subject: r.subject, count: Number(r.n), denied: Number(r.denied) })),
  };
}

/** null (no policy) sorts last. */
function compareNullable(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return a < b ? -1 : 1;
}
