import { toBrokerError } from '../errors.js';
import { withGrantRendered } from '../policy/explain.js';
import { settle, startDecision } from './record.js';
import { limitSubject, lookUpAndEvaluate, validateInput } from './steps.js';
import type { ExchangeDeps, Explained, ExplainInput, ExplainResult, Facts, Refused } from './types.js';

/**
 * Explain (openapi.yaml, `POST /v1/explain`): the first half of the
 * exchange pipeline (verify, look up, evaluate, and render the grant of an
 * allowed policy, which calls no upstream), then the decision is answered
 * whatever it is. Never claims the token against replay and never issues, so
 * an explained token can still be exchanged. One audit record: decision
 * `explain` with the outcome in `reason`; a refusal before evaluation (bad
 * body, bad token, unknown policy) is a `denied` record like an exchange's,
 * its reason prefixed `explain: `.
 *
 * @throws BrokerError: the refusal, already audited; or AuditUnavailableError.
 */
export function explain(deps: ExchangeDeps, input: ExplainInput): Promise<ExplainResult> {
  // Shutdown waits for it: its record is written before the audit store closes.
  return deps.decisions.track(decideAndRecord(deps, input));
}

async function decideAndRecord(deps: ExchangeDeps, input: ExplainInput): Promise<ExplainResult> {
  const start = startDecision();
  const { facts, decision } = await settle(deps, start, 'explain', input, await decideExplain(deps, input));
  return { explainId: start.id, policy: facts.policy.name, decision };
}

async function decideExplain(deps: ExchangeDeps, input: ExplainInput): Promise<Explained | Refused> {
  let facts: Facts = {};
  try {
    const request = validateInput(input);
    const token = await deps.verifier.verify(request.token);
    facts = { token };
    await limitSubject(deps.limits.explains_per_subject, token);
    // Only the deny index's candidates, as the exchange evaluates: the cost of an explain must not grow with the policies.
    const { policy, decision } = lookUpAndEvaluate(deps.policies(), request.policyName, token);
    // The exchange would render the grant next: a token it would refuse there is not "allow".
    return { kind: 'explained', facts: { token, policy, auditMatches: decision.auditMatches }, decision: withGrantRendered(policy, decision, token.claims) };
  } catch (err) {
    return { kind: 'refused', facts, error: toBrokerError(err) };
  }
}
