/** The broker's HTTP API as the console uses it (openapi.yaml); the session cookie authenticates every call. */

/** One audit record (openapi.yaml, AuditRecord). */
export interface AuditRecord {
  seq: number;
  id: string;
  time: string;
  decision: string;
  error: string | null;
  reason: string | null;
  issuer: string | null;
  subject: string | null;
  policy: string | null;
  policy_sha256: string | null;
  credential_id: string | null;
  claims: Record<string, unknown> | null;
  prev_hash: string;
  hash: string;
  [field: string]: unknown;
}

export interface EventsPage {
  events: AuditRecord[];
  next_cursor: string | null;
}

export interface Verification {
  ok: boolean;
  events: number;
  last_seq: number;
  broken?: { seq: number; id: string | null; problem: string };
  latest_checkpoint: { seq: number; time: string } | null;
}

/** `GET /v1/audit/stats` (openapi.yaml, AuditStats). */
export interface Stats {
  since: string;
  until: string;
  bucket: 'hour' | 'day';
  buckets: string[];
  total: number;
  by_decision: Record<'issued' | 'denied' | 'error' | 'explain', number[]>;
  by_policy: { policy: string | null; total: number; counts: number[] }[];
  top_denial_reasons: { error: string | null; reason: string | null; count: number }[];
  top_subjects: { subject: string; count: number; denied: number }[];
}

/** `POST /v1/policies/evaluate` (openapi.yaml, PolicyEvaluateResponse). */
export interface Evaluation {
  policy: string;
  decision: 'allow' | 'deny';
  reason: string;
  message: string;
  issuer: string;
  notes: string[];
  evaluations: {
    policy: string;
    effect: 'allow' | 'deny';
    mode: 'enforce' | 'audit';
    matched: boolean;
    error?: string;
    conditions: { key: string; operator: string; expected: string; actual?: unknown; matched: boolean; error?: string }[];
  }[];
}

/** `GET /v1/policies` (openapi.yaml, PolicyList). */
export interface PolicyList {
  set: { count: number; loaded_at: string; sha256: string; last_reload: { at: string; ok: boolean; outcome: string; trigger: string; errors?: string[] } | null };
  policies: { name: string; description: string | null; issuer: string; effect: 'allow' | 'deny'; mode: 'enforce' | 'audit'; file: string; sha256: string; source_status: 'loaded' | 'changed' | 'unreadable'; source: string | null }[];
  tests: {
    files: string[];
    results: { file: string; line: number | null; name: string; policy: string; expect: 'allow' | 'deny'; decision: 'allow' | 'deny'; passed: boolean; reason: string; message: string }[];
    problems: string[];
  };
}

export type EvaluateInput = { policy: string; claims: Record<string, unknown>; issuer?: string } | { policy: string; token: string };

export interface Session {
  auditor: string;
  expires_at: string | null;
}

/** An answer other than 2xx: its status and the broker's `error_description`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (res.status === 204) return undefined as T;
  const answer = (await res.json().catch(() => ({}))) as { error_description?: string };
  if (!res.ok) throw new ApiError(res.status, answer.error_description ?? `The broker answered ${res.status}.`);
  return answer as T;
}

export const getSession = () => call<Session>('GET', '/console/session');
export const signIn = (token: string) => call<Session>('POST', '/console/session', { token });
export const signOut = () => call<undefined>('DELETE', '/console/session');
export const queryEvents = (query: URLSearchParams) => call<EventsPage>('GET', `/v1/audit/events?${query.toString()}`);
export const auditStats = (query: URLSearchParams) => call<Stats>('GET', `/v1/audit/stats?${query.toString()}`);
/** The token, if any, goes in the body of a POST: never in a URL, never stored. */
export const evaluatePolicy = (input: EvaluateInput) => call<Evaluation>('POST', '/v1/policies/evaluate', input);
export const listPolicies = () => call<PolicyList>('GET', '/v1/policies');
export const verifyChain = () => call<Verification>('GET', '/v1/audit/verify');
