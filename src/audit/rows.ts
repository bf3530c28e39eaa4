/**
 * A record as both stores keep it: one column per field, the JSON fields
 * (`audience`, `claims`, `unverified`, `audit_matches`) as JSON text, so that
 * what is read back is byte for byte what was hashed. `audit_matches` is NULL
 * when it names no policy, as it is in every row written before the column
 * existed.
 */
import { AUDIT_ENTRY_FIELDS } from './record.js';
import type { AuditDecision, AuditRecord } from './types.js';

/** Every column of the events table, in order: the entry fields, then the chain. */
export const RECORD_COLUMNS = [...AUDIT_ENTRY_FIELDS, 'seq', 'prev_hash', 'hash'] as const;
export type RecordColumn = (typeof RECORD_COLUMNS)[number];

/** A row as a driver returns it (PostgreSQL gives bigints as strings). */
export type StoredRow = {
  [K in (typeof AUDIT_ENTRY_FIELDS)[number]]: K extends 'id' | 'time' ? string : K extends 'duration_seconds' ? number | string | null : string | null;
} & { seq: number | string; prev_hash: string; hash: string };

/** The column values of a record. */
export function toStoredColumns(record: AuditRecord): Record<RecordColumn, string | number | null> {
  return {
    ...record,
    audience: record.audience === null ? null : JSON.stringify(record.audience),
    claims: record.claims === null ? null : JSON.stringify(record.claims),
    unverified: record.unverified === null ? null : JSON.stringify(record.unverified),
    audit_matches: record.audit_matches.length === 0 ? null : JSON.stringify(record.audit_matches),
  };
}

/** A stored row as an AuditRecord; throws if a JSON column does not parse (an edited store). */
export function fromStoredRow(row: StoredRow): AuditRecord {
  return {
    id: row.id,
    time: row.time,
    decision: row.decision as AuditDecision,
    error: row.error,
    reason: row.reason,
    request_id: row.request_id,
    issuer: row.issuer,
    subject: row.subject,
    audience: row.audience === null ? null : (JSON.parse(row.audience) as string[]),
    jti: row.jti,
    token_sha256: row.token_sha256,
    claims: row.claims === null ? null : (JSON.parse(row.claims) as Record<string, unknown>),
    unverified: row.unverified === null ? null : (JSON.parse(row.unverified) as AuditRecord['unverified']),
    policy: row.policy,
    policy_sha256: row.policy_sha256,
    provider: row.provider,
    target: row.target,
    credential_id: row.credential_id,
    expires_at: row.expires_at,
    duration_seconds: row.duration_seconds === null ? null : Number(row.duration_seconds),
    client_ip: row.client_ip,
    user_agent: row.user_agent,
    audit_matches: row.audit_matches === null ? [] : (JSON.parse(row.audit_matches) as string[]),
    seq: Number(row.seq),
    prev_hash: row.prev_hash,
    hash: row.hash,
  };
}
