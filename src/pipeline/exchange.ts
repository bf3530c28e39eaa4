import { ExchangeTimeoutError, NotReadyError, toBrokerError, type BrokerError } from '../errors.js';
import { errorSummary } from '../logger.js';
import { settle, startDecision } from './record.js';
import { allowedGrant, claimReplay, issue, limitSubject, lookUpAndEvaluate, validateInput } from './steps.js';
import type { ExchangeDeps, ExchangeInput, ExchangeResult, Facts, Issued, Refused } from './types.js';

/**
 * The exchange pipeline (docs/policies/reference.md, openapi.yaml, docs/audit.md): verify the token, look up the
 * named policy, evaluate it (deny policies first to last), claim the token
 * against replay, issue, and commit exactly one audit record. Nothing is
 * returned unless that record is durable. The whole decision is bounded by
 * `server.exchange_timeout_seconds` (docs/configuration.md), and shutdown
 * waits for it (docs/architecture.md, "Shutdown").
 *
 * @throws BrokerError: the refusal, already audited (ExchangeTimeoutError past
 *   the deadline); or AuditUnavailableError when the record could not be
 *   committed (no credential leaves then).
 */
export function exchange(deps: ExchangeDeps, input: ExchangeInput): Promise<ExchangeResult> {
  return deps.decisions.track(decideAndRecord(deps, input));
}

async function decideAndRecord(deps: ExchangeDeps, input: ExchangeInput): Promise<ExchangeResult> {
  const start = startDecision();
  const { facts, issued } = await settle(deps, start, 'exchange', input, await decideWithinDeadline(deps, input, start.id));
  return {
    issuanceId: start.id,
    policy: facts.policy.name,
    provider: facts.grant.provider,
    grant: facts.grant,
    expiresAt: issued.expiresAt,
    credentials: issued.credentials,
    env: issued.env,
  };
}

/** The step a decision is waiting on, named in the reason of a timeout. */
type Step = 'verify' | 'limit' | 'replay' | 'provider';

/** What a decision has learned so far, read when the deadline ends it. */
interface Progress {
  facts: Facts;
  step: Step;
}

/**
 * Races the decision against the broker's own deadline and against shutdown
 * abandoning it, whatever the SDKs and stores below do with their own
 * timeouts (the provider also gets the signal). The first to end decides the
 * record; a credential issued after the deadline is discarded undelivered.
 */
async function decideWithinDeadline(deps: ExchangeDeps, input: ExchangeInput, issuanceId: string): Promise<Issued | Refused> {
  const progress: Progress = { facts: {}, step: 'verify' };
  const stop = new AbortController();
  const stopped = new Promise<BrokerError>((resolve) => stop.signal.addEventListener('abort', () => resolve(stop.signal.reason as BrokerError), { once: true }));
  const timeoutSeconds = deps.exchangeTimeoutMs / 1000;
  const timer = setTimeout(() => {
    const message = `The exchange did not finish within the broker's ${timeoutSeconds} s deadline (${progress.step} step); anything issued after it is discarded. Try again.`;
    stop.abort(new ExchangeTimeoutError(message, { reason: `${progress.step}_timeout` }));
  }, deps.exchangeTimeoutMs);
  const onAbandoned = () => stop.abort(new NotReadyError('The broker shut down before this exchange finished; try again.', { reason: 'abandoned_at_shutdown' }));
  if (deps.decisions.abandoned.aborted) onAbandoned();
  else deps.decisions.abandoned.addEventListener('abort', onAbandoned, { once: true });
  try {
    if (stop.signal.aborted) return { kind: 'refused', facts: progress.facts, error: stop.signal.reason as BrokerError };
    const decided = decideExchange(deps, input, issuanceId, progress, stop.signal);
    const first = await Promise.race([decided, stopped]);
    if (!(first instanceof Error)) return first;
    const recorded = progress.facts;
    void decided.then(async (late) => {
      if (late.kind === 'issued') {
        deps.logger.warn('credential discarded: arrived after its exchange ended', {
          request_id: input.requestId,
          issuance_id: issuanceId,
          target: late.issued.target,
          credential_id: late.issued.credentialId,
        });
      } else if (late.facts.replayKey !== undefined && recorded.replayKey === undefined) {
        // A claim that landed after the end issued nothing, and the refusal's record could not release it:
        // release it here, or the token stays spent though nothing was minted. If that fails too, only the log
        // can tell the caller's operator why the token is refused as replayed.
        await deps.replay.release(late.facts.replayKey).catch((err: unknown) =>
          deps.logger.warn('replay claim not released: the token stays spent though nothing was issued', {
            request_id: input.requestId,
            issuance_id: issuanceId,
            cause: errorSummary(err),
          }),
        );
      }
    });
    return { kind: 'refused', facts: recorded, error: first };
  } finally {
    clearTimeout(timer);
    deps.decisions.abandoned.removeEventListener('abort', onAbandoned);
  }
}

/** verify → look up → evaluate → check the grant → claim → issue; the first refusal ends it with what was learned so far. */
async function decideExchange(deps: ExchangeDeps, input: ExchangeInput, issuanceId: string, progress: Progress, signal: AbortSignal): Promise<Issued | Refused> {
  try {
    const request = validateInput(input);
    const token = await deps.verifier.verify(request.token);
    progress.facts = { token };
    progress.step = 'limit';
    await limitSubject(deps.limits.exchanges_per_subject, token);
    const { policy, decision } = lookUpAndEvaluate(deps.policies(), request.policyName, token);
    const { auditMatches } = decision;
    progress.facts = { token, policy, auditMatches };
    const grant = allowedGrant(policy, decision);
    progress.facts = { token, policy, auditMatches, grant };
    const grantRefusal = input.checkGrant?.(grant, policy);
    if (grantRefusal) throw grantRefusal;
    // A decision already ended by its deadline or by shutdown spends no token and mints nothing more.
    signal.throwIfAborted();
    progress.step = 'replay';
    const replayKey = await claimReplay(deps.replay, policy, token);
    const claimed = { token, policy, auditMatches, grant, ...(replayKey === undefined ? {} : { replayKey }) };
    progress.facts = claimed;
    signal.throwIfAborted();
    progress.step = 'provider';
    const issued = await issue(deps.providers, grant, token, { requestedDurationSeconds: request.durationSeconds, issuanceId, signal });
    return { kind: 'issued', facts: claimed, issued };
  } catch (err) {
    return { kind: 'refused', facts: progress.facts, error: toBrokerError(err) };
  }
}
