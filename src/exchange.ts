import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { newAuditId } from './audit/record.js';
import type { AuditDecision, AuditEntry, AuditStore } from './audit/types.js';
import {
  AuditUnavailableError,
  BrokerError,
  InvalidRequestError,
  InvalidTokenError,
  TokenReplayedError,
  AccessDeniedError,
  ProviderError,
  toBrokerError,
  type ErrorCode,
} from './errors.js';
import type { Logger } from './logger.js';
import type { BrokerMetrics } from './metrics.js';
import { readUnverifiedIdentity } from './oidc/verify.js';
import type { TokenVerifier, VerifiedToken } from './oidc/types.js';
import { evaluate, lookupPolicy, type EvaluateOptions } from './policy/evaluate.js';
import type { CompiledPolicy, Decision, Grant, PolicySet, ProviderName } from './policy/types.js';
import type { IssuedCredential, Provider } from './providers/types.js';
import type { ReplayStore } from './replay/types.js';

/** One provider per grant kind; a kind without a provider here cannot be granted. */
export type ProviderRegistry = { [P in ProviderName]?: Provider<Extract<Grant, { provider: P }>> };

export interface ExchangeDeps {
  verifier: TokenVerifier;
  /** The current policy set; read once per request so a reload never splits one decision. */
  policies: () => PolicySet;
  replay: ReplayStore;
  providers: ProviderRegistry;
  audit: AuditStore;
  metrics: BrokerMetrics;
  logger: Logger;
}

/** Where a request came from; goes to the audit record and the log. */
export interface RequestContext {
  requestId: string;
  clientIp: string | null;
  userAgent: string | null;
}

/** The caller's input, as loosely typed as it arrived: the pipeline validates it so refusals are audited. */
export interface DecisionInput extends RequestContext {
  token: string | undefined;
  policy: unknown;
  /** Validated the same way for exchange and explain; explain then ignores it. */
  durationSeconds: unknown;
}

export interface ExchangeInput extends DecisionInput {
  /** How the credential will be delivered; checked against the grant before anything is issued. */
  format: ResponseFormat;
  /**
   * A route-specific check of the grant (e.g. /oauth2/token answers single
   * tokens only): run once the policy is allowed and its grant known, before
   * the token is claimed and before anything is issued, so a credential the
   * route could not deliver is never minted. The refusal it returns is
   * audited like any other.
   */
  checkGrant?: (grant: Grant, policy: CompiledPolicy) => BrokerError | undefined;
}

/** Explain takes exactly what an exchange takes, and issues nothing. */
export type ExplainInput = DecisionInput;

/** `credential_process` is the AWS CLI's format, so it only fits AWS grants. */
export type ResponseFormat = 'json' | 'env' | 'credential_process';

export interface ExchangeResult {
  issuanceId: string;
  policy: string;
  provider: ProviderName;
  expiresAt: Date;
  credentials: Record<string, string>;
  env: [name: string, value: string][];
}

export interface ExplainResult {
  /** Id of the explain's audit record. */
  explainId: string;
  policy: string;
  /** The decision an exchange of this token would get from evaluation (deny policies' expected values hidden). */
  decision: Decision;
}

/** Which route a decision was asked by: named in the log, and in the reason of a refused explain's record. */
type Operation = 'exchange' | 'explain';

const MAX_REQUESTED_DURATION_SECONDS = 43_200;
// Kept past `exp` so a token still inside the verifier's clock skew cannot be replayed.
const REPLAY_MARGIN_MS = 5 * 60_000;

/**
 * The exchange pipeline (contract sections 3-5): verify the token, look up the
 * named policy, evaluate it (deny policies first to last), claim the token
 * against replay, issue, and commit exactly one audit record. Nothing is
 * returned unless that record is durable.
 *
 * @throws BrokerError: the refusal, already audited; or AuditUnavailableError
 *   when the record could not be committed (no credential leaves then).
 */
export async function exchange(deps: ExchangeDeps, input: ExchangeInput): Promise<ExchangeResult> {
  return decideAndRecord(deps, input, 'exchange', (entry, claimed) => authorizeAndIssue(deps, input, entry, claimed));
}

/**
 * Explain (contract section 4, `POST /v1/explain`): the first half of the
 * exchange pipeline (verify, look up, evaluate), then the decision is answered
 * whatever it is. Never claims the token against replay and never issues, so
 * an explained token can still be exchanged. One audit record: decision
 * `explain` with the outcome in `reason`; a refusal before evaluation (bad
 * body, bad token, unknown policy) is a `denied` record like an exchange's,
 * its reason prefixed `explain: `.
 *
 * @throws BrokerError: the refusal, already audited; or AuditUnavailableError.
 */
export async function explain(deps: ExchangeDeps, input: ExplainInput): Promise<ExplainResult> {
  return decideAndRecord(deps, input, 'explain', async (entry) => {
    // Every deny policy of the issuer, not just the index's candidates: explain shows them all.
    const { policy, decision } = await verifyAndEvaluate(deps, input, entry, { allDenyPolicies: true });
    entry.reason = `${decision.allowed ? 'allow' : 'deny'}: ${decision.reason}: ${decision.message}`;
    return { explainId: entry.id, policy: policy.name, decision };
  });
}

/**
 * Runs one decision and commits its one audit record before anything is
 * answered; a refusal is recorded, then rethrown. A replay claim the decision
 * made is released when the decision was a refusal (nothing was minted).
 */
async function decideAndRecord<T>(
  deps: ExchangeDeps,
  input: DecisionInput,
  operation: Operation,
  decide: (entry: AuditEntry, claimed: { key?: string }) => Promise<T>,
): Promise<T> {
  const startedMs = performance.now();
  const entry = newAuditEntry(input, operation === 'explain' ? 'explain' : 'issued');
  const claimedReplayKey: { key?: string } = {};
  let outcome: T | BrokerError;
  try {
    outcome = await decide(entry, claimedReplayKey);
  } catch (err) {
    outcome = toBrokerError(err);
    recordRefusal(entry, outcome, input.token, operation);
  }

  try {
    await commitRecord(deps, entry);
  } catch (err) {
    // The credential (if any) is dropped undelivered. The token stays spent when one was minted:
    // the record may have committed all the same (a database that timed out after COMMIT), and a
    // second `issued` record for a single-use token would read as a replay. Retries use a fresh token.
    if (claimedReplayKey.key && outcome instanceof BrokerError) await deps.replay.release(claimedReplayKey.key).catch(() => undefined);
    observe(deps, entry, metricDecision(operation, 'error'), startedMs);
    throw err;
  }
  observe(deps, entry, metricDecision(operation, entry.decision), startedMs);
  logDecision(deps.logger, entry, outcome instanceof BrokerError ? outcome : undefined, operation);
  if (outcome instanceof BrokerError) {
    if (claimedReplayKey.key) await deps.replay.release(claimedReplayKey.key).catch(() => undefined);
    throw outcome;
  }
  return outcome;
}

/**
 * What exchange and explain share: validate the input, verify the token, look
 * up the named policy and evaluate it, recording token and policy on the
 * audit entry as they become known.
 *
 * @throws BrokerError (invalid_request, invalid_token, issuer_unavailable, unknown_policy).
 */
async function verifyAndEvaluate(
  deps: ExchangeDeps,
  input: DecisionInput,
  entry: AuditEntry,
  options: EvaluateOptions = {},
): Promise<{ token: VerifiedToken; policy: CompiledPolicy; decision: Decision; durationSeconds: number | undefined }> {
  const { policyName, durationSeconds, token: rawToken } = validateInput(input);

  const token = await deps.verifier.verify(rawToken);
  recordToken(entry, token);

  const policies = deps.policies();
  const policy = lookupPolicy(policies, policyName);
  entry.policy = policy.name;
  entry.policy_sha256 = policy.sha256;

  return { token, policy, decision: evaluate(policies, policy, token, options), durationSeconds };
}

async function authorizeAndIssue(deps: ExchangeDeps, input: ExchangeInput, entry: AuditEntry, claimed: { key?: string }): Promise<ExchangeResult> {
  const { token, policy, decision, durationSeconds } = await verifyAndEvaluate(deps, input, entry);
  if (!decision.allowed) throw new AccessDeniedError(decision.message, { reason: decision.reason });
  const grant = policy.grant;
  if (!grant) throw new AccessDeniedError(`Policy '${policy.name}' grants nothing.`, { reason: 'not_an_allow_policy' });
  entry.provider = grant.provider;
  // Cloud targets are literal in the grant, so a failed call's record still says what was asked for.
  entry.target = grant.provider === 'aws' ? grant.roleArn : grant.provider === 'gcp' ? grant.serviceAccount : null;
  if (input.format === 'credential_process' && grant.provider !== 'aws') {
    throw new InvalidRequestError(`format=credential_process is for AWS grants; policy '${policy.name}' grants ${grant.provider}.`, { reason: 'format_not_supported' });
  }
  const grantRefusal = input.checkGrant?.(grant, policy);
  if (grantRefusal) throw grantRefusal;

  if (!policy.allowTokenReuse) {
    const key = replayKey(policy, token);
    if (!(await deps.replay.claim(key, token.expiresAt * 1000 + REPLAY_MARGIN_MS))) {
      throw new TokenReplayedError(`This token was already exchanged for policy '${policy.name}'; request a fresh ID token.`, { reason: 'token_replayed' });
    }
    claimed.key = key;
  }

  const issued = await issueWith(deps.providers, grant, policy, token, durationSeconds, entry.id);
  recordIssued(entry, issued);
  return {
    issuanceId: entry.id,
    policy: policy.name,
    provider: issued.provider,
    expiresAt: issued.expiresAt,
    credentials: issued.credentials,
    env: issued.env,
  };
}

function validateInput(input: DecisionInput): { token: string; policyName: string; durationSeconds: number | undefined } {
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

async function issueWith(
  providers: ProviderRegistry,
  grant: Grant,
  policy: CompiledPolicy,
  token: VerifiedToken,
  requestedDurationSeconds: number | undefined,
  issuanceId: string,
): Promise<IssuedCredential> {
  const request = { policy, token, requestedDurationSeconds, issuanceId };
  switch (grant.provider) {
    case 'jwt':
      return (providers.jwt ?? notConfigured('jwt')).issue({ ...request, grant });
    case 'aws':
      return (providers.aws ?? notConfigured('aws')).issue({ ...request, grant });
    case 'gcp':
      return (providers.gcp ?? notConfigured('gcp')).issue({ ...request, grant });
  }
}

/** The compiler refuses grants for unconfigured providers, so this is only reached if the two disagree. */
function notConfigured(provider: ProviderName): never {
  throw new ProviderError(`The '${provider}' provider is not configured on this broker.`, { reason: 'provider_not_configured' });
}

/** A token is exchanged at most once per policy (contract section 3); keyed by jti, else by the token's hash. */
function replayKey(policy: CompiledPolicy, token: VerifiedToken): string {
  return `${policy.name}\n${token.issuer}\n${token.jti === undefined ? `sha256:${token.tokenSha256}` : `jti:${token.jti}`}`;
}

/**
 * Records a refusal that happened before the exchange (or explain) could
 * start (a body that is not JSON, too large): it is a decision too, and gets
 * its record.
 * @throws AuditUnavailableError when it cannot be committed.
 */
export async function auditRefusedRequest(
  deps: Pick<ExchangeDeps, 'audit' | 'metrics' | 'logger'>,
  context: RequestContext,
  error: BrokerError,
  token?: string,
  operation: Operation = 'exchange',
): Promise<void> {
  const entry = newAuditEntry({ ...context, token }, 'denied');
  recordRefusal(entry, error, token, operation);
  await commitRecord(deps, entry);
  observe(deps, entry, metricDecision(operation, entry.decision), performance.now());
  logDecision(deps.logger, entry, error, operation);
}

function newAuditEntry(context: RequestContext & { token?: string | undefined }, decision: AuditDecision): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date().toISOString(),
    decision,
    error: null,
    reason: null,
    request_id: context.requestId,
    issuer: null,
    subject: null,
    audience: null,
    jti: null,
    token_sha256: context.token ? sha256Hex(context.token) : null,
    claims: null,
    unverified: null,
    policy: null,
    policy_sha256: null,
    provider: null,
    target: null,
    credential_id: null,
    expires_at: null,
    duration_seconds: null,
    client_ip: context.clientIp,
    user_agent: context.userAgent,
  };
}

function recordToken(entry: AuditEntry, token: VerifiedToken): void {
  entry.issuer = token.issuerName;
  entry.subject = token.subject;
  entry.audience = token.audiences;
  entry.jti = token.jti ?? null;
  entry.token_sha256 = token.tokenSha256;
  entry.claims = { ...token.claims };
}

function recordIssued(entry: AuditEntry, issued: IssuedCredential): void {
  entry.decision = 'issued';
  entry.provider = issued.provider;
  entry.target = issued.target;
  entry.credential_id = issued.credentialId;
  entry.expires_at = issued.expiresAt.toISOString();
  entry.duration_seconds = issued.durationSeconds;
}

const DENIALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'invalid_request',
  'invalid_token',
  'access_denied',
  'unknown_policy',
  'not_found',
  'token_replayed',
  'request_too_large',
  'rate_limited',
]);

function recordRefusal(entry: AuditEntry, error: BrokerError, rawToken: string | undefined, operation: Operation): void {
  entry.decision = DENIALS.has(error.code) ? 'denied' : 'error';
  entry.error = error.code;
  // A refused explain is a refusal like any other (alerts on `denied` see it); the prefix tells it from an exchange's.
  entry.reason = `${operation === 'explain' ? 'explain: ' : ''}${error.reason ? `${error.reason}: ${error.message}` : error.message}`;
  // A token that failed verification is untrusted: what it claims goes under `unverified`, never `claims`.
  if (entry.claims === null && rawToken) {
    const identity = readUnverifiedIdentity(rawToken);
    if (identity.iss !== undefined || identity.sub !== undefined) entry.unverified = identity;
  }
}

async function commitRecord(deps: Pick<ExchangeDeps, 'audit' | 'logger'>, entry: AuditEntry): Promise<void> {
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

/** Name and message (and stack for bugs) of a cause; upstream bodies never reach the client, only this log. */
export function errorSummary(err: unknown, withStack = false): Record<string, unknown> | undefined {
  if (err === undefined) return undefined;
  if (!(err instanceof Error)) return { value: String(err) };
  return { name: err.name, message: err.message, ...(withStack ? { stack: err.stack } : {}) };
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}
