import { AccessDeniedError, InvalidRequestError, InvalidTokenError, ProviderError, TokenReplayedError } from '../errors.js';
import type { RateLimit } from '../limits/rate-limit.js';
import type { VerifiedToken } from '../oidc/types.js';
import { evaluate, lookupPolicy, type EvaluateOptions } from '../policy/evaluate.js';
import type { CompiledPolicy, Decision, PolicySet } from '../policy/types.js';
import { issuerFor, type Grant, type ProviderSet } from '../providers/registry.js';
import type { IssuedCredential } from '../providers/types.js';
import type { ReplayStore } from '../replay/types.js';
import type { DecisionInput } from './types.js';

/**
 * The pipeline's steps (docs/policies/reference.md, openapi.yaml), each a small function that
 * returns what it found or throws one typed refusal.
 */

const MAX_REQUESTED_DURATION_SECONDS = 43_200;
// Kept past `exp` so a token still inside the verifier's clock skew cannot be replayed.
const REPLAY_MARGIN_MS = 5 * 60_000;

export interface ValidRequest {
  token: string;
  policyName: string;
  durationSeconds: number | undefined;
}

/**
 * Counts the request against its subject's limit (docs/configuration.md,
 * `limits`): once the token is verified, so the subject is real, and before
 * anything is looked up or issued.
 *
 * @throws RateLimitedError
 */
export async function limitSubject(limit: RateLimit, token: VerifiedToken): Promise<void> {
  // Issuer names hold no spaces (config.ts), so the key names one (issuer, sub) pair.
  const refusal = await limit.consume(`${token.issuerName} ${token.subject}`);
  if (refusal) throw refusal;
}

/** @throws InvalidTokenError (no token) or InvalidRequestError (no policy, a bad duration). */
export function validateInput(input: DecisionInput): ValidRequest {
  if (input.token === undefined || input.token === '') {
    throw new InvalidTokenError('A CI OIDC token is required: send it as "Authorization: Bearer <token>".', { reason: 'missing_token' });
  }
  if (typeof input.policy !== 'string' || input.policy === '') {
    throw new InvalidRequestError('The request body must name a policy: {"policy": "<name>"}.', { reason: 'missing_policy' });
  }
  const duration = input.durationSeconds;
  if (duration !== undefined && duration !== null) {
    if (typeof duration !== 'number' || !Number.isInteger(duration) || duration < 1 || duration > MAX_REQUESTED_DURATION_SECONDS) {
      throw new InvalidRequestError(`duration_seconds must be an integer from 1 to ${MAX_REQUESTED_DURATION_SECONDS}.`, { reason: 'bad_duration' });
    }
  }
  return { token: input.token, policyName: input.policy, durationSeconds: typeof duration === 'number' ? duration : undefined };
}

/** The named policy and its evaluation against one whole policy set (deny policies first to last). @throws UnknownPolicyError */
export function lookUpAndEvaluate(policies: PolicySet, policyName: string, token: VerifiedToken, options: EvaluateOptions = {}): { policy: CompiledPolicy; decision: Decision } {
  const policy = lookupPolicy(policies, policyName);
  return { policy, decision: evaluate(policies, policy, token, options) };
}

/** The grant of an allowed policy. @throws AccessDeniedError */
export function allowedGrant(policy: CompiledPolicy, decision: Decision): Grant {
  if (!decision.allowed) throw new AccessDeniedError(decision.message, { reason: decision.reason });
  if (!policy.grant) throw new AccessDeniedError(`Policy '${policy.name}' grants nothing.`, { reason: 'not_an_allow_policy' });
  return policy.grant;
}

/**
 * Spends the token for this policy (docs/policies/reference.md: at most once per
 * policy while valid, keyed by jti, else by the hash of its signing input). Returns the
 * claimed key, or undefined when the policy allows reuse.
 * @throws TokenReplayedError
 */
export async function claimReplay(replay: ReplayStore, policy: CompiledPolicy, token: VerifiedToken): Promise<string | undefined> {
  if (policy.allowTokenReuse) return undefined;
  const key = `${policy.name}\n${token.issuer}\n${token.jti === undefined ? `sha256:${token.signingInputSha256}` : `jti:${token.jti}`}`;
  if (!(await replay.claim(key, token.expiresAt * 1000 + REPLAY_MARGIN_MS))) {
    throw new TokenReplayedError(`This token was already exchanged for policy '${policy.name}'; request a fresh ID token.`, { reason: 'token_replayed' });
  }
  return key;
}

/** @throws ProviderError or AccessDeniedError (the grant cannot be rendered for this token). */
export function issue(
  providers: ProviderSet,
  grant: Grant,
  token: VerifiedToken,
  request: { requestedDurationSeconds: number | undefined; issuanceId: string; signal: AbortSignal },
): Promise<IssuedCredential> {
  const provider = issuerFor(providers, grant);
  // The compiler refuses grants for unconfigured providers, so this is only reached if the two disagree.
  if (!provider) throw new ProviderError(`The '${grant.provider}' provider is not configured on this broker.`, { reason: 'provider_not_configured' });
  return provider.issue({ grant, token, ...request });
}
