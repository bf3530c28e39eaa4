import { toBrokerError } from '../errors.js';
import { settle, startDecision } from './record.js';
import { allowedGrant, claimReplay, issue, limitSubject, lookUpAndEvaluate, validateInput } from './steps.js';
import type { ExchangeDeps, ExchangeInput, ExchangeResult, Facts, Issued, Refused } from './types.js';

/**
 * The exchange pipeline (docs/policies/reference.md, openapi.yaml, docs/audit.md): verify the token, look up the
 * named policy, evaluate it (deny policies first to last), claim the token
 * against replay, issue, and commit exactly one audit record. Nothing is
 * returned unless that record is durable.
 *
 * @throws BrokerError: the refusal, already audited; or AuditUnavailableError
 *   when the record could not be committed (no credential leaves then).
 */
export async function exchange(deps: ExchangeDeps, input: ExchangeInput): Promise<ExchangeResult> {
  const start = startDecision();
  const { facts, issued } = await settle(deps, start, 'exchange', input, await decideExchange(deps, input, start.id));
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

/** verify → look up → evaluate → check the grant → claim → issue; the first refusal ends it with what was learned so far. */
async function decideExchange(deps: ExchangeDeps, input: ExchangeInput, issuanceId: string): Promise<Issued | Refused> {
  let facts: Facts = {};
  try {
    const request = validateInput(input);
    const token = await deps.verifier.verify(request.token);
    facts = { token };
    await limitSubject(deps.limits.exchanges_per_subject, token);
    const { policy, decision } = lookUpAndEvaluate(deps.policies(), request.policyName, token);
    facts = { token, policy };
    const grant = allowedGrant(policy, decision);
    facts = { token, policy, grant };
    const grantRefusal = input.checkGrant?.(grant, policy);
    if (grantRefusal) throw grantRefusal;
    const replayKey = await claimReplay(deps.replay, policy, token);
    const claimed = { token, policy, grant, ...(replayKey === undefined ? {} : { replayKey }) };
    facts = claimed;
    const issued = await issue(deps.providers, grant, token, request.durationSeconds, issuanceId);
    return { kind: 'issued', facts: claimed, issued };
  } catch (err) {
    return { kind: 'refused', facts, error: toBrokerError(err) };
  }
}
