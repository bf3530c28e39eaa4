import { createHash } from 'node:crypto';
import type { AuditDecision, AuditEntry } from '../audit/types.js';
import type { ErrorCode } from '../errors.js';
import { readUnverifiedIdentity } from '../oidc/verify.js';
import { providerOf } from '../providers/registry.js';
import type { DroppedWindow } from '../limits/summaries.js';
import type { DroppedRequest, Operation, Outcome, RequestFacts } from './types.js';

/** Refusals recorded as `denied`; every other code is an `error` record. */
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

/**
 * The one audit record of a decision (docs/audit.md), from the request,
 * what the pipeline learned, and how it ended. Pure: the same inputs give the
 * same record.
 */
export function toAuditEntry(record: { id: string; time: Date; operation: Operation; request: RequestFacts; outcome: Outcome }): AuditEntry {
  const { id, time, operation, request, outcome } = record;
  const { token, policy, grant } = outcome.facts;
  const issued = outcome.kind === 'issued' ? outcome.issued : undefined;
  const refusal = outcome.kind === 'refused' ? outcome.error : undefined;
  return {
    id,
    time: time.toISOString(),
    decision: decisionOf(outcome),
    error: refusal?.code ?? null,
    reason: reasonOf(outcome, operation),
    request_id: request.requestId,
    issuer: token?.issuerName ?? null,
    subject: token?.subject ?? null,
    audience: token?.audiences ?? null,
    jti: token?.jti ?? null,
    token_sha256: token?.tokenSha256 ?? (request.token ? sha256Hex(request.token) : null),
    claims: token ? { ...token.claims } : null,
    // A token that failed verification is untrusted: what it claims goes under `unverified`, never `claims`.
    unverified: refusal && !token && request.token ? unverifiedIdentity(request.token) : null,
    policy: policy?.name ?? null,
    policy_sha256: policy?.sha256 ?? null,
    provider: grant?.provider ?? null,
    target: issued?.target ?? (grant ? providerOf(grant).target(grant) : null),
    credential_id: issued?.credentialId ?? null,
    expires_at: issued?.expiresAt.toISOString() ?? null,
    duration_seconds: issued?.durationSeconds ?? null,
    client_ip: request.clientIp,
    user_agent: request.userAgent,
    audit_matches: [...(outcome.facts.auditMatches ?? [])],
  };
}

/**
 * The summary record of a rate limit's dropped requests (docs/audit.md): the
 * record the first of them would have had (its request, token and client),
 * with its own id and time, and a reason that says how many were dropped and
 * over which span.
 */
export function toSummaryEntry(record: { id: string; time: Date; window: DroppedWindow<DroppedRequest> }): AuditEntry {
  const { id, time, window } = record;
  const { operation, entry } = window.first;
  return {
    ...entry,
    id,
    time: time.toISOString(),
    reason: `${operation === 'explain' ? 'explain: ' : ''}${window.limit}: ${window.count} dropped from ${entry.time} to ${window.windowEnd.toISOString()}: answered 429 without records of their own; this record shows the first of them.`,
  };
}

function decisionOf(outcome: Outcome): AuditDecision {
  switch (outcome.kind) {
    case 'issued':
      return 'issued';
    case 'explained':
      return 'explain';
    case 'refused':
      return DENIALS.has(outcome.error.code) ? 'denied' : 'error';
  }
}

function reasonOf(outcome: Outcome, operation: Operation): string | null {
  switch (outcome.kind) {
    case 'issued':
      return null;
    case 'explained': {
      const { decision } = outcome;
      return `${decision.allowed ? 'allow' : 'deny'}: ${decision.reason}: ${decision.message}`;
    }
    case 'refused': {
      const { error } = outcome;
      // A refused explain is a refusal like any other (alerts on `denied` see it); the prefix tells it from an exchange's.
      return `${operation === 'explain' ? 'explain: ' : ''}${error.reason ? `${error.reason}: ${error.message}` : error.message}`;
    }
  }
}

function unverifiedIdentity(rawToken: string): AuditEntry['unverified'] {
  const identity = readUnverifiedIdentity(rawToken);
  return identity.iss !== undefined || identity.sub !== undefined ? identity : null;
}

function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}
