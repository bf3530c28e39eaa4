import type { z } from 'zod';
import { AccessDeniedError } from '../errors.js';
import type { SigningKey } from '../keys/signing-key.js';
import type { Logger } from '../logger.js';
import type { VerifiedToken } from '../oidc/types.js';
import type { KeyHints, Json, Report } from '../yaml/fields.js';
import { TemplateError } from '../claims/template.js';

/** What every compiled grant has; each provider's grant adds its own fields (docs/policies/reference.md). */
export interface GrantBase<N extends string = string> {
  readonly provider: N;
}

export interface IssueRequest<G extends GrantBase> {
  grant: G;
  token: VerifiedToken;
  /** What the caller asked for, if anything; providers clamp it to the grant's ceiling. */
  requestedDurationSeconds: number | undefined;
  /** The audit record's id; a provider may use it to name the session or token. */
  issuanceId: string;
  /** Aborted when the exchange's deadline passes (docs/configuration.md, `server.exchange_timeout_seconds`): nothing issued after it is delivered, so a provider may stop its call. */
  signal?: AbortSignal;
}

/** What a provider hands back. `credentials` is secret and never reaches a log or a record. */
export interface IssuedCredential {
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

export interface Provider<G extends GrantBase> {
  /** @throws ProviderError (upstream failure) or AccessDeniedError (the grant cannot be rendered for this token). */
  issue(request: IssueRequest<G>): Promise<IssuedCredential>;
}

/** RFC 8693 section 3 token type identifiers. */
export const TOKEN_TYPE = {
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  idToken: 'urn:ietf:params:oauth:token-type:id_token',
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
} as const;

/** How one token of a grant is answered by `POST /oauth2/token` (RFC 8693 section 2.2.1). */
export interface TokenExchangeForm {
  /** The `credentials` field that holds the token. */
  credential: string;
  issuedTokenType: string;
  /** `N_A` when the issued token is not an access token (RFC 8693 section 2.2.1). */
  tokenType: 'Bearer' | 'N_A';
}

/** What a provider's `create` may use besides its own config section. */
export interface ProviderContext {
  /** The broker's public URL: the issuer of broker-signed tokens. */
  publicUrl: string;
  /** The broker's active signing key, read at each use: it changes when the key file is reloaded. */
  signingKey: () => SigningKey;
  /** Where a provider says what its SDK would otherwise print on its own (docs/operations.md#logging). */
  logger: Logger;
}

/**
 * One credential provider, complete (docs/architecture.md, "Adding a
 * provider"): its config section, its grant compiler, and how the exchange
 * describes and delivers what it issues. Everything here is loaded by the
 * offline CLI too, so it must not import a cloud SDK: `create` loads the
 * issuing half (`./issuer.ts`) with a dynamic import.
 */
export interface ProviderModule<N extends string, G extends GrantBase<N>, Raw, C> {
  readonly name: N;
  /**
   * `providers.<name>` in the config file (docs/configuration.md). Optional
   * providers parse to undefined when absent; policies may grant a provider
   * only when its section is there.
   */
  readonly configSchema: z.ZodType<Raw>;
  /** The parsed section as the provider uses it; relative paths resolve against the config file's directory. */
  toConfig(raw: Raw, resolvePath: (file: string) => string): C;
  /** Every key a grant of this provider may have (for unknown-key errors and hints). */
  readonly grantKeys: readonly string[];
  /** Reads a policy's `grant` (its provider already checked); reports every problem and returns undefined if there was one. */
  compileGrant(grant: Json, report: Report, hints: KeyHints): G | undefined;
  /** The audit record's `target` when the grant fixes it (so a failed call's record says what was asked for); null when only issuing tells. */
  target(grant: G): string | null;
  /**
   * Whether this token's claims fill the grant: null, or the AccessDeniedError
   * (same reason and message) the issuing half would throw before any
   * upstream call. Pure, and runs the same rendering as `issue`, so explain
   * and `policy test` never say allow for a token the exchange refuses
   * (docs/policies/troubleshooting.md).
   */
  checkGrant(grant: G, claims: Readonly<Record<string, unknown>>): AccessDeniedError | null;
  /** Whether the credentials are the AWS CLI's `credential_process` fields. */
  readonly credentialProcess: boolean;
  /**
   * How `POST /oauth2/token` (RFC 8693) answers this grant: one token, whose
   * form for `requested` (or the default type) is undefined when this grant
   * cannot issue that type; or several values, which it refuses, naming them.
   */
  readonly tokenExchange:
    | { kind: 'token'; form(grant: G, requested: string | undefined): TokenExchangeForm | undefined }
    | { kind: 'multi_part'; credential: string };
  /** Builds the issuing half from the provider's config. */
  create(config: NonNullable<C>, context: ProviderContext): Promise<Provider<G>>;
}

/** The caller may ask for less than the ceiling, never more; and never less than the provider's floor. */
export function clampDurationSeconds(requested: number | undefined, floorSeconds: number, ceilingSeconds: number): number {
  const wanted = requested ?? ceilingSeconds;
  return Math.max(floorSeconds, Math.min(wanted, ceilingSeconds));
}

/** A provider's deadline covers its retries; each attempt gets a third of it (at least 1 s). */
export function callTimeouts(timeoutSeconds: number): { deadlineMs: number; attemptTimeoutMs: number } {
  return { deadlineMs: timeoutSeconds * 1000, attemptTimeoutMs: Math.max(1000, Math.floor((timeoutSeconds * 1000) / 3)) };
}

/**
 * Runs a grant's template rendering: a token whose claims cannot fill the
 * grant (absent, not a plain value, refused by a value check) is a denial.
 */
export function renderGrant<T>(provider: string, render: () => T): T {
  try {
    return render();
  } catch (err) {
    if (err instanceof TemplateError) {
      throw new AccessDeniedError(`The policy's ${provider} grant cannot be filled from this token: ${err.message}.`, { reason: 'template_claim_unusable', cause: err });
    }
    throw err;
  }
}

/** What `render` throws as AccessDeniedError (a grant this token cannot fill), or null when it renders: a module's `checkGrant`. */
export function renderRefusal(render: () => unknown): AccessDeniedError | null {
  try {
    render();
    return null;
  } catch (err) {
    if (err instanceof AccessDeniedError) return err;
    throw err;
  }
}
