import { performance } from 'node:perf_hooks';
import { newAuditId } from '../audit/record.js';
import type { AuditDecision, AuditEntry } from '../audit/types.js';
import { AuditUnavailableError, RateLimitedError, type BrokerError } from '../errors.js';
import { COUNTED_REFUSALS } from '../limits/rate-limit.js';
import type { DroppedWindow } from '../limits/summaries.js';
import { errorSummary, type Logger } from '../logger.js';
import { toAuditEntry, toSummaryEntry } from './audit-entry.js';
import type { DroppedRequest, ExchangeDeps, Operation, Outcome, Refused, RequestFacts } from './types.js';

type RecordDeps = Pick<ExchangeDeps, 'audit' | 'metrics' | 'logger' | 'replay' | 'limits' | 'summaries' | 'decisions'>;

/** The audit record's id and time, fixed when the decision starts (the id names the issued session or token). */
export interface DecisionStart {
  id: string;
  time: Date;
  startedMs: number;
}

export function startDecision(): DecisionStart {
  return { id: newAuditId(), time: new Date(), startedMs: performance.now() };
}

/**
 * The one place a decision is recorded (docs/audit.md): its audit record
 * is committed before anything is answered. A refusal is then thrown; a
 * replay claim the decision made is released when it was refused (nothing
 * was minted).
 *
 * @throws AuditUnavailableError when the record cannot be committed (no credential leaves then); else the refusal.
 */
export async function settle<O extends Outcome>(
  deps: RecordDeps,
  start: DecisionStart,
  operation: Operation,
  request: RequestFacts,
  outcome: O,
): Promise<Exclude<O, Refused>> {
  const entry = toAuditEntry({ id: start.id, time: start.time, operation, request, outcome });
  const refusal = outcome.kind === 'refused' ? outcome.error : undefined;
  if (refusal instanceof RateLimitedError) {
    const { limit, key, dropped } = refusal.limited;
    deps.metrics.rateLimited.inc({ limit, audited: String(dropped === undefined) });
    // All but the first limited request of a window are counted in the window's summary record, so a flood cannot grow the log faster than its keys (docs/audit.md).
    if (dropped) {
      deps.summaries.add(limit, key, dropped.windowEnd, { operation, entry });
      throw refusal;
    }
  }
  const releaseClaim = async () => {
    // A release that fails only leaves the token spent until it expires (the caller then uses a
    // fresh one); the decision's answer stays the same, so the failure is not the caller's.
    if (refusal && outcome.facts.replayKey !== undefined) await deps.replay.release(outcome.facts.replayKey).catch(() => undefined);
  };
  try {
    await commit(deps, entry);
  } catch (err) {
    // The credential (if any) is dropped undelivered. The token stays spent when one was minted:
    // the record may have committed all the same (a database that timed out after COMMIT), and a
    // second `issued` record for a single-use token would read as a replay. Retries use a fresh token.
    await releaseClaim();
    observe(deps, entry, metricDecision(operation, 'error'), start.startedMs);
    throw err;
  }
  observe(deps, entry, metricDecision(operation, entry.decision), start.startedMs);
  logDecision(deps.logger, entry, refusal, operation);
  if (refusal) {
    await releaseClaim();
    if (COUNTED_REFUSALS.has(refusal.code) && request.clientIp !== null) await deps.limits.refused_per_ip.count(request.clientIp);
    throw refusal;
  }
  return outcome as Exclude<O, Refused>;
}

/**
 * Records a refusal made before the pipeline could run (a body that is not
 * JSON or too large, a bad format, the token sent twice): it is a decision
 * too, and gets the same record.
 *
 * @throws always: the refusal once recorded, or AuditUnavailableError.
 */
export async function refuse(deps: RecordDeps, operation: Operation, request: RequestFacts, error: BrokerError): Promise<void> {
  const refused: Refused = { kind: 'refused', facts: {}, error };
  // Shutdown waits for it, like any decision: its record is written before the audit store closes.
  await deps.decisions.track(settle(deps, startDecision(), operation, request, refused));
}

/**
 * Commits the summary record of a window's dropped requests (docs/audit.md).
 * Nothing waits on it to answer, so a summary that cannot be committed is
 * logged with its count instead.
 */
export async function recordDropped(deps: Pick<ExchangeDeps, 'audit' | 'logger'>, window: DroppedWindow<DroppedRequest>): Promise<void> {
  const entry = toSummaryEntry({ id: newAuditId(), time: new Date(), window });
  const fields = { issuance_id: entry.id, limit: window.limit, dropped: window.count, client_ip: entry.client_ip, issuer: entry.issuer, subject: entry.subject };
  try {
    await commit(deps, entry);
    deps.logger.warn('rate limit summary', fields);
  } catch (err) {
    deps.logger.error('rate limit summary not recorded', { ...fields, cause: errorSummary(err) });
  }
}

async function commit(deps: Pick<ExchangeDeps, 'audit' | 'logger'>, entry: AuditEntry): Promise<void> {
  try {
    await deps.audit.append(entry);
  } catch (err) {
    deps.logger.error('audit append failed: refusing to answer', { request_id: entry.request_id, issuance_id: entry.id, decision: entry.decision, cause: errorSummary(err) });
    throw err instanceof AuditUnavailableError
      ? err
      : new AuditUnavailableError('The audit log is unavailable, so the broker refuses to decide; try again shortly.', { reason: 'audit_write_failed', cause: err });
  }
}

/** Explains are counted under decision `explain` whatever their outcome, so exchange denials stay exchange denials. */
function metricDecision(operation: Operation, decision: AuditDecision): AuditDecision {
  return operation === 'explain' ? 'explain' : decision;
}

function observe(deps: Pick<ExchangeDeps, 'metrics'>, entry: AuditEntry, decision: AuditDecision, startedMs: number): void {
  deps.metrics.exchanges.inc({ policy: entry.policy ?? 'unknown', provider: entry.provider ?? 'none', decision });
  for (const policy of entry.audit_matches) deps.metrics.auditModeMatches.inc({ policy });
  deps.metrics.exchangeSeconds.observe({ decision }, (performance.now() - startedMs) / 1000);
}

function logDecision(logger: Logger, entry: AuditEntry, refusal: BrokerError | undefined, operation: Operation): void {
  const fields = {
    request_id: entry.request_id,
    issuance_id: entry.id,
    decision: entry.decision,
    policy: entry.policy,
    issuer: entry.issuer,
    subject: entry.subject,
    token_sha256: entry.token_sha256,
    error: entry.error,
    reason: entry.reason,
    credential_id: entry.credential_id,
  };
  if (refusal === undefined) logger.info(operation, fields);
  else if (refusal.code === 'server_error') logger.error(`${operation} failed: bug`, { ...fields, cause: errorSummary(refusal.cause, true) });
  else if (entry.decision === 'error') logger.warn(`${operation} failed`, { ...fields, cause: errorSummary(refusal.cause) });
  else logger.info(operation, fields);
}
