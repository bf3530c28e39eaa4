import type { AuditEntry, AuditStore } from '../audit/types.js';
import type { BrokerError } from '../errors.js';
import type { Limits } from '../limits/rate-limit.js';
import type { DropSummaries } from '../limits/summaries.js';
import type { Logger } from '../logger.js';
import type { BrokerMetrics } from '../metrics.js';
import type { InFlightDecisions } from './in-flight.js';
import type { TokenVerifier, VerifiedToken } from '../oidc/types.js';
import type { CompiledPolicy, Decision, PolicySet } from '../policy/types.js';
import type { Grant, ProviderName, ProviderSet } from '../providers/registry.js';
import type { IssuedCredential } from '../providers/types.js';
import type { ReplayStore } from '../replay/types.js';

export interface ExchangeDeps {
  verifier: TokenVerifier;
  /** The current policy set; read once per request so a reload never splits one decision. */
  policies: () => PolicySet;
  replay: ReplayStore;
  /** The configured providers' issuing halves; a grant of a provider not here cannot be issued. */
  providers: ProviderSet;
  audit: AuditStore;
  /** The rate limits (docs/configuration.md, `limits`). */
  limits: Limits;
  /** The summaries of rate-limited requests that get no record of their own (docs/audit.md). */
  summaries: DropSummaries<DroppedRequest>;
  metrics: BrokerMetrics;
  logger: Logger;
  /** The broker's own deadline on a whole exchange (docs/configuration.md, `server.exchange_timeout_seconds`). */
  exchangeTimeoutMs: number;
  /** What shutdown waits for before the audit store closes. */
  decisions: InFlightDecisions;
}

/** A rate-limited request counted in a summary: the record it would have had, and its route. */
export interface DroppedRequest {
  operation: Operation;
  entry: AuditEntry;
}

/** Where a request came from; goes to the audit record and the log. */
export interface RequestContext {
  requestId: string;
  clientIp: string | null;
  userAgent: string | null;
}

/** A request as far as the audit record knows it before anything is verified. */
export interface RequestFacts extends RequestContext {
  /** The raw token, when one was sent; only its SHA-256 (and, if it fails verification, its unverified iss/sub) is recorded. */
  token: string | undefined;
}

/** The caller's input, as loosely typed as it arrived: the pipeline validates it so refusals are audited. */
export interface DecisionInput extends RequestFacts {
  policy: unknown;
  /** Validated the same way for exchange and explain; explain then ignores it. */
  durationSeconds: unknown;
}

export interface ExchangeInput extends DecisionInput {
  /**
   * A route-specific check of the grant (a delivery format, or /oauth2/token
   * answering single tokens only): run once the policy is allowed and its
   * grant known, before the token is claimed and before anything is issued,
   * so a credential the route could not deliver is never minted. The refusal
   * it returns is audited like any other.
   */
  checkGrant?: (grant: Grant, policy: CompiledPolicy) => BrokerError | undefined;
}

/** Explain takes exactly what an exchange takes, and issues nothing. */
export type ExplainInput = DecisionInput;

export interface ExchangeResult {
  issuanceId: string;
  policy: string;
  provider: ProviderName;
  /** The grant issued from, so a route can describe the credential (e.g. its RFC 8693 token type). */
  grant: Grant;
  expiresAt: Date;
  credentials: Record<string, string>;
  env: [name: string, value: string][];
}

export interface ExplainResult {
  /** Id of the explain's audit record. */
  explainId: string;
  policy: string;
  /** The decision an exchange of this token would get: evaluation, then the allowed grant rendered for its claims (deny policies' expected values hidden). */
  decision: Decision;
}

/** Which route a decision was asked by: named in the log, and in the reason of a refused explain's record. */
export type Operation = 'exchange' | 'explain';

/** What the pipeline learned before it stopped; each step adds one fact. */
export interface Facts {
  token?: VerifiedToken;
  policy?: CompiledPolicy;
  grant?: Grant;
  /** The audit-mode deny policies that would have denied the token (`Decision.auditMatches`), once it is evaluated. */
  auditMatches?: readonly string[];
  /** Set once the token is claimed against replay; a refusal after that releases it. */
  replayKey?: string;
}

/** How a decision ended; the audit record is made from this and the request (see audit-entry.ts). */
export type Outcome = Issued | Explained | Refused;
export interface Issued {
  kind: 'issued';
  facts: Facts & { token: VerifiedToken; policy: CompiledPolicy; grant: Grant };
  issued: IssuedCredential;
}
export interface Explained {
  kind: 'explained';
  facts: Facts & { token: VerifiedToken; policy: CompiledPolicy };
  decision: Decision;
}
export interface Refused {
  kind: 'refused';
  facts: Facts;
  error: BrokerError;
}
