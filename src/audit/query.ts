/**
 * Audit query validation and keyset pagination, shared by every store
 * (openapi.yaml, `GET /v1/audit/events`).
 *
 * Pages are ordered by seq and a cursor is the last seq of a page, so a walk
 * returns every match exactly once even while records are appended: new
 * records only ever get a larger seq.
 */
import { InvalidRequestError } from '../errors.js';
import { AUDIT_DECISIONS } from './record.js';
import type { AuditDecision, AuditQuery, AuditRecord, AuditStore } from './types.js';

export const DEFAULT_QUERY_LIMIT = 100;
export const MAX_QUERY_LIMIT = 1000;
/** More `claim.<name>=<value>` filters than this in one query is refused. */
export const MAX_CLAIM_FILTERS = 20;

/** A validated query, ready for a store to turn into SQL. */
export interface CompiledAuditQuery {
  /** Return records with seq greater than this (0: from the start). */
  afterSeq: number;
  /** 1..MAX_QUERY_LIMIT. */
  limit: number;
  /** Inclusive lower bound on `time`, as `toISOString()` text (compare as text). */
  since: string | null;
  /** Exclusive upper bound on `time`, as `toISOString()` text. */
  until: string | null;
  decision: AuditDecision | null;
  policy: string | null;
  issuer: string | null;
  subject: string | null;
  credentialId: string | null;
  /** A policy name `audit_matches` must hold. */
  auditMatch: string | null;
  /** [name, value] pairs, all of which must hold. */
  claims: [name: string, value: string][];
}

/**
 * Validates a query.
 *
 * `since` is inclusive and `until` exclusive (a half-open window, so
 * consecutive windows never overlap). Both accept any RFC 3339 time (offset or
 * Z, any fraction); stored times have millisecond precision, so a bound with
 * a finer fraction is rounded up to the next millisecond, which selects
 * exactly the same records.
 *
 * @throws InvalidRequestError with reason `bad_limit`, `bad_time`,
 *   `bad_decision`, `bad_filter` or `bad_cursor`.
 */
export function compileAuditQuery(query: AuditQuery): CompiledAuditQuery {
  const limit = query.limit ?? DEFAULT_QUERY_LIMIT;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT) {
    throw new InvalidRequestError(`'limit' must be an integer from 1 to ${MAX_QUERY_LIMIT}.`, { reason: 'bad_limit' });
  }
  const decision = query.decision ?? null;
  if (decision !== null && !AUDIT_DECISIONS.includes(decision)) {
    throw new InvalidRequestError(`'decision' must be one of ${AUDIT_DECISIONS.join(', ')}.`, { reason: 'bad_decision' });
  }
  const claims: [string, string][] = [];
  for (const [name, value] of Object.entries(query.claims ?? {})) {
    if (name.length === 0 || typeof value !== 'string') {
      throw new InvalidRequestError('Each claim filter must be claim.<name>=<value>.', { reason: 'bad_filter' });
    }
    claims.push([name, value]);
  }
  if (claims.length > MAX_CLAIM_FILTERS) {
    throw new InvalidRequestError(`At most ${MAX_CLAIM_FILTERS} claim filters are allowed.`, { reason: 'bad_filter' });
  }
  return {
    afterSeq: query.cursor === undefined ? 0 : parseCursor(query.cursor),
    limit,
    since: query.since === undefined ? null : toTimeBound(query.since, 'since'),
    until: query.until === undefined ? null : toTimeBound(query.until, 'until'),
    decision,
    policy: optionalString(query.policy, 'policy'),
    issuer: optionalString(query.issuer, 'issuer'),
    subject: optionalString(query.subject, 'subject'),
    credentialId: optionalString(query.credentialId, 'credential_id'),
    auditMatch: optionalString(query.auditMatch, 'audit_match'),
    claims,
  };
}

/**
 * The hour bucket of a stored time (`YYYY-MM-DDTHH`, the first 13 characters
 * of its toISOString text): stores keep each hour's lowest and highest seq so
 * a time window maps to a seq range.
 */
export function hourOf(time: string): string {
  return time.slice(0, 13);
}

/** The opaque cursor that continues after `seq`: base64url of its decimal form. */
export function toCursor(seq: number): string {
  return Buffer.from(String(seq), 'utf8').toString('base64url');
}

/**
 * The seq a cursor continues after. Only a cursor `toCursor` could have
 * written is accepted (Node's base64 decoder silently skips junk, so the
 * round trip is checked).
 *
 * @throws InvalidRequestError with reason `bad_cursor`.
 */
export function parseCursor(cursor: string): number {
  const bad = () => new InvalidRequestError("'cursor' is not a cursor this server returned.", { reason: 'bad_cursor' });
  if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]{1,24}$/.test(cursor)) throw bad();
  const decimal = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(decimal)) throw bad();
  const seq = Number(decimal);
  if (!Number.isSafeInteger(seq) || toCursor(seq) !== cursor) throw bad();
  return seq;
}

/**
 * Every record matching `query` (its `limit` is the page size, its `cursor`
 * the starting point), page by page, in seq order; for exports. Records
 * appended during the walk are included if they match.
 *
 * @throws what `store.query` throws.
 */
export async function* queryAll(store: Pick<AuditStore, 'query'>, query: AuditQuery): AsyncGenerator<AuditRecord, void, undefined> {
  let cursor = query.cursor;
  for (;;) {
    const page = await store.query({ ...query, cursor });
    yield* page.events;
    if (page.nextCursor === null) return;
    cursor = page.nextCursor;
  }
}

function optionalString(value: unknown, name: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new InvalidRequestError(`'${name}' must be a string.`, { reason: 'bad_filter' });
  return value;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

/**
 * An RFC 3339 time as `toISOString()` text, rounded up to the millisecond.
 * @throws InvalidRequestError with reason `bad_time`.
 */
export function toTimeBound(value: string, name: string): string {
  const bad = () => new InvalidRequestError(`'${name}' must be an RFC 3339 time such as 2026-11-25T19:00:00Z.`, { reason: 'bad_time' });
  const m = typeof value === 'string' ? RFC3339.exec(value) : null;
  if (m === null) throw bad();
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  const fraction = m[7] ?? '';
  const [sign, offsetHour, offsetMinute] = [m[8], Number(m[9] ?? 0), Number(m[10] ?? 0)];
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 60 || offsetHour > 23 || offsetMinute > 59) throw bad();
  // setUTCFullYear, unlike Date.UTC, does not map years 0..99 to 1900..1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) throw bad();
  // A leap second (:60) is the instant just before the next minute begins; it sorts there.
  let ms = date.getTime() + ((hour * 60 + minute) * 60 + second) * 1000;
  const millis = fraction.padEnd(3, '0').slice(0, 3);
  ms += Number(millis);
  if (/[1-9]/.test(fraction.slice(3))) ms += 1;
  if (sign !== undefined) ms -= (sign === '+' ? 1 : -1) * (offsetHour * 60 + offsetMinute) * 60_000;
  const bound = new Date(ms);
  if (bound.getUTCFullYear() < 0 || bound.getUTCFullYear() > 9999) throw bad();
  return bound.toISOString();
}
