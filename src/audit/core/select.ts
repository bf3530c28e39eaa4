/**
 * The keyset query for one page of an audit query, in seq order, for either
 * dialect; fetches limit + 1 rows to know whether another page follows.
 *
 * Every plan walks an index in seq order and stops at the limit, so a page
 * costs about the same wherever it is in a long walk: with a claim filter the
 * claim index on name, value and seq (texts as the dialect indexes them,
 * see textEquals) drives (ordering by its seq is what lets the planner see
 * the index is already in order; further claims are point lookups);
 * otherwise the primary key or a `(column, seq)` index does (with an
 * `audit_match` filter, the partial index on the records that have audit
 * matches, which are few).
 * `upperSeq` and `q.afterSeq`, from the hour ranges, bound a time window's
 * walk to its seq range; the time bounds themselves are filters on the
 * dialect's time expression.
 */
import type { CompiledAuditQuery } from '../query.js';
import { RECORD_COLUMNS } from '../rows.js';

export interface SelectDialect {
  /** The placeholder of the n-th parameter, from 1. */
  placeholder(n: number): string;
  /** The expression the time window is checked on, with or without the claim index driving. */
  time(claimDriven: boolean): string;
  /**
   * The condition that text column `column` equals the parameter `placeholder`
   * exactly, written so that the dialect's index on that column serves it.
   */
  textEquals(column: string, placeholder: string): string;
  /**
   * The condition that JSON array text column `column` (NULL when empty)
   * holds the string parameter `placeholder`, written so that the dialect's
   * partial index on the rows where it is not NULL serves it.
   */
  arrayHolds(column: string, placeholder: string): string;
}

export function toKeysetSelect(q: CompiledAuditQuery, upperSeq: number | null, dialect: SelectDialect): { text: string; values: (string | number)[] } {
  const { from, seqColumn, where, values, param } = toFilter(q, upperSeq, dialect);
  const columns = RECORD_COLUMNS.map((c) => `e.${c}`).join(', ');
  return { text: `SELECT ${columns} FROM ${from} WHERE ${where.join(' AND ')} ORDER BY ${seqColumn} LIMIT ${param(q.limit + 1)}`, values };
}

/** The three aggregations of `GET /v1/audit/stats` (see AuditBackend.readStats), each over the same filter as a page. */
export interface StatsSelects {
  /** bucket, decision, policy, n: the matching records per bucket (the first `bucketChars` characters of `time`), decision and policy. */
  series: Statement;
  /** error, reason, n: the most frequent denials, most first. */
  reasons: Statement;
  /** subject, n, denied: the most frequent subjects, most first. */
  subjects: Statement;
}

export interface Statement {
  text: string;
  values: (string | number)[];
}

/**
 * The stats statements for a query's filter (its afterSeq and the seq range
 * from the hour ranges bound the scan like a page's; its limit is ignored).
 * Ties in the top lists are broken by value, so the answer is stable.
 */
export function toStatsSelects(q: CompiledAuditQuery, upperSeq: number | null, bucketChars: number, top: number, dialect: SelectDialect): StatsSelects {
  const select = (columns: string, extra: string | null, rest: (param: (value: string | number) => string) => string): Statement => {
    const { from, where, values, param } = toFilter(q, upperSeq, dialect);
    if (extra !== null) where.push(extra);
    return { text: `SELECT ${columns} FROM ${from} WHERE ${where.join(' AND ')} ${rest(param)}`, values };
  };
  return {
    series: select(`substr(e.time, 1, ${bucketChars}) AS bucket, e.decision AS decision, e.policy AS policy, count(*) AS n`, null, () => 'GROUP BY 1, 2, 3'),
    reasons: select("e.error AS error, e.reason AS reason, count(*) AS n", "e.decision = 'denied'", (param) => `GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ${param(top)}`),
    subjects: select(
      "e.subject AS subject, count(*) AS n, sum(CASE WHEN e.decision = 'denied' THEN 1 ELSE 0 END) AS denied",
      'e.subject IS NOT NULL',
      (param) => `GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ${param(top)}`,
    ),
  };
}

/** The FROM and WHERE of a query's filter, and its parameters so far. */
function toFilter(q: CompiledAuditQuery, upperSeq: number | null, dialect: SelectDialect) {
  const where: string[] = [];
  const values: (string | number)[] = [];
  const param = (value: string | number) => {
    values.push(value);
    return dialect.placeholder(values.length);
  };
  const [first, ...more] = q.claims;
  const from = first === undefined ? 'audit_events e' : 'audit_claims c JOIN audit_events e ON e.seq = c.seq';
  const seqColumn = first === undefined ? 'e.seq' : 'c.seq';
  const claimIs = (alias: string, [name, value]: readonly [string, string]) =>
    `${dialect.textEquals(`${alias}.name`, param(name))} AND ${dialect.textEquals(`${alias}.value`, param(value))}`;
  if (first !== undefined) where.push(claimIs('c', first));
  where.push(`${seqColumn} > ${param(q.afterSeq)}`);
  if (upperSeq !== null) where.push(`${seqColumn} <= ${param(upperSeq)}`);
  for (const claim of more) where.push(`EXISTS (SELECT 1 FROM audit_claims x WHERE x.seq = ${seqColumn} AND ${claimIs('x', claim)})`);
  const time = dialect.time(first !== undefined);
  if (q.since !== null) where.push(`${time} >= ${param(q.since)}`);
  if (q.until !== null) where.push(`${time} < ${param(q.until)}`);
  const eq = (column: string, value: string | null) => {
    if (value !== null) where.push(dialect.textEquals(`e.${column}`, param(value)));
  };
  if (q.decision !== null) where.push(`e.decision = ${param(q.decision)}`);
  eq('policy', q.policy);
  eq('issuer', q.issuer);
  eq('subject', q.subject);
  eq('credential_id', q.credentialId);
  if (q.auditMatch !== null) where.push(dialect.arrayHolds('e.audit_matches', param(q.auditMatch)));
  return { from, seqColumn, where, values, param };
}
