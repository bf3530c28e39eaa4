import { AccessDeniedError } from '../errors.js';
import type { VerifiedToken } from '../oidc/types.js';
import { TemplateError, type CompiledPolicy, type Grant, type ProviderName } from '../policy/types.js';

export interface IssueRequest<G extends Grant = Grant> {
  grant: G;
  policy: CompiledPolicy;
  token: VerifiedToken;
  /** What the caller asked for, if anything; providers clamp it to the grant's ceiling. */
  requestedDurationSeconds: number | undefined;
  /** The audit record's id; a provider may use it to name the session or token. */
  issuanceId: string;
}

/** What a provider hands back. `credentials` is secret and never reaches a log or a record. */
export interface IssuedCredential {
  provider: ProviderName;
  /** Role ARN, service account, or audience: goes to the audit record. */
  target: string;
  /** AccessKeyId, token fingerprint or jti: goes to the audit record. */
  credentialId: string;
  expiresAt: Date;
  durationSeconds: number;
  /** The response's `credentials` object. */
  credentials: Record<string, string>;
  /** Shell variables for `?format=env`, in output order. */
  env: [name: string, value: string][];
}

export interface Provider<G extends Grant = Grant> {
  readonly name: G['provider'];
  /** @throws ProviderError (upstream failure) or AccessDeniedError (the grant cannot be rendered for this token). */
  issue(request: IssueRequest<G>): Promise<IssuedCredential>;
}

/** The caller may ask for less than the ceiling, never more; and never less than the provider's floor. */
export function clampDurationSeconds(requested: number | undefined, floorSeconds: number, ceilingSeconds: number): number {
  const wanted = requested ?? ceilingSeconds;
  return Math.max(floorSeconds, Math.min(wanted, ceilingSeconds));
}

/**
 * Runs a grant's template rendering: a token whose claims cannot fill the
 * grant (absent, not a plain value, refused by a value check) is a denial.
 */
export function renderGrant<T>(provider: ProviderName, render: () => T): T {
  try {
    return render();
  } catch (err) {
    if (err instanceof TemplateError) {
      throw new AccessDeniedError(`The policy's ${provider} grant cannot be filled from this token: ${err.message}.`, { reason: 'template_claim_unusable', cause: err });
    }
    throw err;
  }
}
