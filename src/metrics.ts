import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The broker's Prometheus metrics, on a registry of its own (no global state at import). */
export interface BrokerMetrics {
  registry: Registry;
  exchanges: Counter<'policy' | 'provider' | 'decision'>;
  exchangeSeconds: Histogram<'decision'>;
  jwksFetches: Counter<'issuer' | 'outcome'>;
  auditAppendSeconds: Histogram;
  /** Policy directory reloads (SIGHUP or file change) by outcome: success, failure, unchanged. */
  policyReloads: Counter<'outcome'>;
  /** Unix time of the last load or reload that succeeded (including `unchanged`). */
  policySetLastSuccess: Gauge;
  /** Policies (allow and deny) in the set that is serving. */
  policiesLoaded: Gauge;
  /** Requests answered 429 by limit; `audited`: whether the request got a record of its own (else it is counted in a summary record or, on the audit routes, a log line). */
  rateLimited: Counter<'limit' | 'audited'>;
  /** Failed auditor authentications on /v1/audit/* by reason (missing_auditor_token, not_an_auditor). */
  auditorAuthFailures: Counter<'reason'>;
  /** Signing key file reloads (SIGHUP or poll) by outcome: success, failure, unchanged. */
  signingKeyReloads: Counter<'outcome'>;
  /** Recorded decisions an audit-mode deny policy would have denied, by that policy (docs/policies/reference.md, `mode`). */
  auditModeMatches: Counter<'policy'>;
}

/** The period of the event-loop delay timer behind `nodejs_eventloop_lag_*` (docs/operations.md#metrics). */
export const EVENT_LOOP_SAMPLE_MS = 2;

export function createMetrics(options: { defaultMetrics?: boolean } = {}): BrokerMetrics {
  const registry = new Registry();
  // prom-client samples event-loop delay with a timer of this period and reports the whole period as delay,
  // so at its default of 10 ms an idle broker shows a p99 of 10 ms. At 2 ms the lag metrics read within 2 ms of
  // the real lag, for about 5 ms of CPU a second more than at 10 ms (1 ms would cost 14).
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  const metrics: BrokerMetrics = {
    registry,
    // `policy` is only ever a configured policy name (or "unknown"), so a caller cannot blow up label cardinality.
    exchanges: new Counter({
      name: 'broker_exchanges_total',
      help: 'Exchange and explain decisions by policy, provider and decision (issued, denied, error, explain).',
      labelNames: ['policy', 'provider', 'decision'],
      registers: [registry],
    }),
    exchangeSeconds: new Histogram({
      name: 'broker_exchange_duration_seconds',
      help: 'Time from request to decision, including the audit commit.',
      labelNames: ['decision'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    jwksFetches: new Counter({
      name: 'broker_jwks_fetches_total',
      help: 'Remote JWKS and discovery fetches per issuer, by outcome (ok; stale: failed, cached keys keep verifying; error).',
      labelNames: ['issuer', 'outcome'],
      registers: [registry],
    }),
    auditAppendSeconds: new Histogram({
      name: 'broker_audit_append_duration_seconds',
      help: 'Commit latency of one audit batch (group commit).',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    policyReloads: new Counter({
      name: 'broker_policy_reloads_total',
      help: 'Policy directory reloads by outcome (success: a new set serves; failure: the last good set keeps serving; unchanged: same files).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    policySetLastSuccess: new Gauge({
      name: 'broker_policy_set_last_success_timestamp_seconds',
      help: 'Unix time of the last policy load or reload that succeeded (a reload finding the same files counts).',
      registers: [registry],
    }),
    policiesLoaded: new Gauge({
      name: 'broker_policies_loaded',
      help: 'Policies (allow and deny) in the set that is serving.',
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'broker_rate_limited_total',
      help: 'Requests answered 429 rate_limited by limit; audited="false": counted in a summary record (or a log line on the audit routes) instead of a record of their own.',
      labelNames: ['limit', 'audited'],
      registers: [registry],
    }),
    auditorAuthFailures: new Counter({
      name: 'broker_auditor_auth_failures_total',
      help: 'Requests to /v1/audit/* and console sign-ins whose auditor token or console session was missing, wrong or expired, by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    signingKeyReloads: new Counter({
      name: 'broker_signing_key_reloads_total',
      help: 'Signing key file reloads by outcome (success: a new key set serves; failure: the current keys keep serving; unchanged: same file).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    // `policy` is a configured deny policy's name, so the label set is bounded by the policy directory.
    auditModeMatches: new Counter({
      name: 'broker_audit_mode_matches_total',
      help: 'Decisions (exchanges and explains) that an audit-mode deny policy would have denied had it been enforced, by policy.',
      labelNames: ['policy'],
      registers: [registry],
    }),
  };
  // Every outcome is exported from the start, so `increase(...{outcome="failure"}[5m])` alerts work before the first failure.
  for (const outcome of ['success', 'failure', 'unchanged']) {
    metrics.policyReloads.labels({ outcome }).inc(0);
    metrics.signingKeyReloads.labels({ outcome }).inc(0);
  }
  for (const reason of ['missing_auditor_token', 'not_an_auditor', 'bad_session', 'session_expired']) metrics.auditorAuthFailures.labels({ reason }).inc(0);
  return metrics;
}

/**
 * Exports `broker_replay_entries`, read from `entries` at each scrape: the
 * memory replay store's size, which the tokens still valid bound
 * (docs/performance.md, "Memory under a soak").
 */
export function registerReplayEntries(metrics: BrokerMetrics, entries: () => number): void {
  new Gauge({
    name: 'broker_replay_entries',
    help: 'Replay claims held in this process (replay.url "memory:"), each kept until its token expires plus 5 minutes.',
    registers: [metrics.registry],
    collect() {
      this.set(entries());
    },
  });
}
