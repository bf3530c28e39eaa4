/**
 * Audit record formatting shared by `GET /v1/audit/events` and
 * `oidc-broker audit query`: NDJSON, CSV, a JSON array and a terminal table,
 * plus a writer that streams records to any Writable with backpressure.
 *
 * - **NDJSON**: one record per line, exactly the JSON the JSON API returns
 *   for it (U+007F..U+009F, U+2028 and U+2029 are written as `\uXXXX`
 *   escapes, which parse back to the same value but cannot act as terminal
 *   control codes or line breaks).
 * - **CSV** (RFC 4180, CRLF line ends, header row): the record columns of
 *   CSV_RECORD_COLUMNS, then one `claim.<name>` column per default CI claim
 *   (DEFAULT_CSV_CLAIMS) and per claim named in a `claim.<name>` filter, then
 *   `claims`, the full claim set as JSON, so nothing is lost. A claim cell
 *   holds the claim's string form (strings as they are, numbers and booleans
 *   as their JSON text, objects and arrays as JSON; empty when absent).
 *   **Formula injection:** a cell that starts with `=`, `+`, `-`, `@`, tab or
 *   carriage return gets a leading `'`, so spreadsheets show it as text
 *   instead of evaluating it. The `claims` JSON cell always starts with `{`
 *   and keeps the exact values; NDJSON is the exact export. Written to a
 *   terminal (the CLI on a TTY), control characters other than tab, CR and
 *   LF are shown as `?`.
 * - **table**: time, decision, policy, subject, credential_id, reason, one
 *   line per record, cut to a width; control characters are shown as `?` so
 *   a record cannot drive the terminal.
 */
import type { Writable } from 'node:stream';
import type { AuditRecord } from './types.js';

export type ExportFormat = 'ndjson' | 'csv' | 'json' | 'table';

/** The record columns of a CSV export, in order (before the claim columns and `claims`). */
export const CSV_RECORD_COLUMNS = [
  'seq',
  'id',
  'time',
  'decision',
  'error',
  'reason',
  'request_id',
  'issuer',
  'subject',
  'audience',
  'jti',
  'token_sha256',
  'unverified.iss',
  'unverified.sub',
  'policy',
  'policy_sha256',
  'provider',
  'target',
  'credential_id',
  'expires_at',
  'duration_seconds',
  'client_ip',
  'user_agent',
  'audit_matches',
  'prev_hash',
  'hash',
] as const;

/** Claims of the common CI issuers that get their own `claim.<name>` CSV column. */
export const DEFAULT_CSV_CLAIMS: readonly string[] = [
  // GitHub Actions
  'repository',
  'repository_owner',
  'ref',
  'sha',
  'workflow',
  'job_workflow_ref',
  'environment',
  'actor',
  'event_name',
  'runner_environment',
  // GitLab CI (also uses ref, sha, environment)
  'project_path',
  'ref_protected',
  'pipeline_source',
  // CircleCI
  'oidc.circleci.com/project-id',
  'oidc.circleci.com/vcs-origin',
  'oidc.circleci.com/vcs-ref',
  // Buildkite
  'organization_slug',
  'pipeline_slug',
  'build_branch',
  'build_commit',
];

/** The full CSV header: record columns, `claim.<name>` for each claim column, `claims`. */
export function csvColumns(extraClaims: Iterable<string> = []): string[] {
  return [...CSV_RECORD_COLUMNS, ...csvClaimNames(extraClaims).map((name) => `claim.${name}`), 'claims'];
}

/** DEFAULT_CSV_CLAIMS, then each of `extraClaims` not already there, in order. */
export function csvClaimNames(extraClaims: Iterable<string> = []): string[] {
  const names = [...DEFAULT_CSV_CLAIMS];
  const seen = new Set(names);
  for (const name of extraClaims) {
    if (!seen.has(name)) {
      seen.add(name);
      names.push(name);
    }
  }
  return names;
}

/**
 * A claim value's string form: strings as they are, numbers and booleans as
 * their JSON text (the form `claim.<name>=<value>` filters match), null,
 * objects and arrays as JSON; undefined (absent) as the empty string.
 */
export function claimString(value: unknown): string {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  return JSON.stringify(value) ?? '';
}

/**
 * Where a spreadsheet may start a formula: at the start of the cell, and after
 * a `;` (spreadsheets in locales whose list separator is `;` split on it,
 * quotes or not, and evaluate what follows).
 */
const FORMULA_START = /(^|;)([=+\-@\t\r])/g;

/**
 * One CSV cell: a `'` inserted before `=`, `+`, `-`, `@`, tab or CR at the
 * start or after a `;` (formula injection; NDJSON is the exact export), then
 * quoted per RFC 4180 if it holds a comma, a double quote, CR or LF (double
 * quotes doubled).
 */
export function csvCell(text: string): string {
  const safe = text.replace(FORMULA_START, "$1'$2");
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** Control characters a terminal acts on, other than tab, CR and LF (which CSV quotes). */
const CSV_TERMINAL_UNSAFE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g;

/** One CSV line (cells joined by commas, CRLF); for a terminal, control characters other than tab, CR and LF as `?`. */
export function csvLine(cells: readonly string[], terminal = false): string {
  const line = cells.map(csvCell).join(',');
  return `${terminal ? line.replace(CSV_TERMINAL_UNSAFE, '?') : line}\r\n`;
}

/** The cells of one record, for the columns of csvColumns(claimNames). */
export function csvRecordCells(record: AuditRecord, claimNames: readonly string[]): string[] {
  const text = (value: string | number | null | undefined): string => (value === null || value === undefined ? '' : String(value));
  const claims = record.claims ?? {};
  const cells: string[] = [];
  for (const column of CSV_RECORD_COLUMNS) {
    switch (column) {
      case 'audience':
        cells.push(record.audience === null ? '' : record.audience.join(' '));
        break;
      case 'audit_matches':
        // Policy names hold no spaces (docs/policies/reference.md), so a space separates them as it does audiences.
        cells.push(record.audit_matches.join(' '));
        break;
      case 'unverified.iss':
        cells.push(text(record.unverified?.iss));
        break;
      case 'unverified.sub':
        cells.push(text(record.unverified?.sub));
        break;
      default:
        cells.push(text(record[column]));
    }
  }
  for (const name of claimNames) cells.push(Object.hasOwn(claims, name) ? claimString(claims[name]) : '');
  cells.push(record.claims === null ? '' : JSON.stringify(record.claims));
  return cells;
}

/** Escapes that JSON.stringify leaves raw: DEL and C1 controls, and the JavaScript line separators. */
const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029]/g;

/** The record as the JSON API writes it, with terminal-unsafe characters escaped (same value). */
export function recordJson(record: AuditRecord): string {
  return JSON.stringify(record).replace(JSON_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One NDJSON line. */
export function ndjsonLine(record: AuditRecord): string {
  return `${recordJson(record)}\n`;
}

export const TABLE_COLUMNS = ['time', 'decision', 'policy', 'subject', 'credential_id', 'reason'] as const;
type TableColumn = (typeof TABLE_COLUMNS)[number];

/** Column widths; `reason` may be Infinity (never cut). */
export type TableLayout = Record<TableColumn, number>;

const TABLE_GAP = 2;
const TABLE_MIN: TableLayout = { time: 24, decision: 7, policy: 8, subject: 10, credential_id: 10, reason: 10 };
const TABLE_PREFERRED: Omit<TableLayout, 'reason'> = { time: 24, decision: 8, policy: 20, subject: 40, credential_id: 28 };

/**
 * Widths for a table `width` characters wide (the terminal's columns), or no
 * limit on the last column when width is undefined. When the terminal is
 * narrow, subject, credential_id and policy shrink first (to a floor), and
 * a line may then be longer than `width`.
 */
export function tableLayout(width?: number): TableLayout {
  const layout: TableLayout = { ...TABLE_PREFERRED, reason: Infinity };
  if (width === undefined || !Number.isFinite(width)) return layout;
  const gaps = TABLE_GAP * (TABLE_COLUMNS.length - 1);
  const used = () => layout.time + layout.decision + layout.policy + layout.subject + layout.credential_id + gaps;
  for (const column of ['subject', 'credential_id', 'policy'] as const) {
    const over = used() + TABLE_MIN.reason - width;
    if (over > 0) layout[column] = Math.max(TABLE_MIN[column], layout[column] - over);
  }
  layout.reason = Math.max(TABLE_MIN.reason, width - used());
  return layout;
}

/** Control characters (C0, DEL, C1) and the Unicode line separators, shown as `?` in a table. */
const TERMINAL_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

function tableCell(value: string, width: number, last: boolean): string {
  const chars = [...value.replace(TERMINAL_UNSAFE, '?')];
  const cut = chars.length > width ? [...chars.slice(0, Math.max(0, width - 1)), '…'] : chars;
  return last ? cut.join('') : cut.join('') + ' '.repeat(width + TABLE_GAP - cut.length);
}

function tableLine(values: Record<TableColumn, string>, layout: TableLayout): string {
  return `${TABLE_COLUMNS.map((c, i) => tableCell(values[c], layout[c], i === TABLE_COLUMNS.length - 1)).join('').trimEnd()}\n`;
}

/** The table's header line. */
export function tableHeader(layout: TableLayout): string {
  return tableLine(
    { time: 'TIME', decision: 'DECISION', policy: 'POLICY', subject: 'SUBJECT', credential_id: 'CREDENTIAL_ID', reason: 'REASON' },
    layout,
  );
}

/** One record as a table line; a missing subject shows the unverified one in brackets, a missing value `-`. */
export function tableRow(record: AuditRecord, layout: TableLayout): string {
  const subject = record.subject ?? (record.unverified?.sub !== undefined ? `[${record.unverified.sub}]` : '-');
  return tableLine(
    {
      time: record.time,
      decision: record.decision,
      policy: record.policy ?? '-',
      subject,
      credential_id: record.credential_id ?? '-',
      reason: record.reason ?? '-',
    },
    layout,
  );
}

/** Turns records into the text of one export format: `head()`, then `row()` per record, then `tail()`. */
export interface RecordFormatter {
  head(): string;
  row(record: AuditRecord): string;
  tail(): string;
}

export interface FormatterOptions {
  /** CSV: claims named in `claim.<name>` filters, which get a column too. */
  claimColumns?: Iterable<string>;
  /** Table: the terminal's width; undefined: the last column is never cut. */
  width?: number | undefined;
  /**
   * CSV: the output is a terminal, so control characters (other than tab,
   * CR and LF) are written as `?` rather than acted on. Never for files or HTTP.
   */
  terminal?: boolean;
}

export function createFormatter(format: ExportFormat, options: FormatterOptions = {}): RecordFormatter {
  switch (format) {
    case 'ndjson':
      return { head: () => '', row: ndjsonLine, tail: () => '' };
    case 'csv': {
      const claimNames = csvClaimNames(options.claimColumns);
      const header = [...CSV_RECORD_COLUMNS, ...claimNames.map((name) => `claim.${name}`), 'claims'];
      const terminal = options.terminal === true;
      return { head: () => csvLine(header, terminal), row: (record) => csvLine(csvRecordCells(record, claimNames), terminal), tail: () => '' };
    }
    case 'json': {
      let first = true;
      return {
        head: () => '[',
        row: (record) => {
          const prefix = first ? '\n' : ',\n';
          first = false;
          return prefix + recordJson(record);
        },
        tail: () => (first ? ']\n' : '\n]\n'),
      };
    }
    case 'table': {
      const layout = tableLayout(options.width);
      return { head: () => tableHeader(layout), row: (record) => tableRow(record, layout), tail: () => '' };
    }
  }
}

export interface WriteRecordsOptions {
  /** Stop after this many records (default: all). */
  limit?: number;
  /** Called with the running count each time a chunk is handed to the stream. */
  onProgress?: (count: number) => void;
}

export interface WriteRecordsResult {
  /** Records written. */
  count: number;
  /** True if `limit` stopped the export while more records matched. */
  more: boolean;
  /**
   * False if the destination closed or failed before everything was written
   * (the client went away, a closed pipe); the tail was then not written.
   */
  complete: boolean;
}

/** Flush to the stream once this much text is pending. */
const CHUNK_CHARS = 64 * 1024;

/**
 * Writes `head`, a row per record and `tail` to `out`, in chunks, waiting for
 * `drain` whenever `out` asks to, and stops early (complete: false) if `out`
 * closes or errors. Does not end `out`.
 * @throws what iterating `records` throws (the store failed mid-export); the
 *   text written so far is then an incomplete export and the caller must make
 *   that visible (destroy the connection, exit non-zero).
 */
export async function writeRecords(out: Writable, records: AsyncIterable<AuditRecord>, formatter: RecordFormatter, options: WriteRecordsOptions = {}): Promise<WriteRecordsResult> {
  const limit = options.limit ?? Infinity;
  let closed = out.destroyed || out.writableEnded;
  const onClose = () => {
    closed = true;
  };
  out.on('close', onClose);
  out.on('error', onClose);
  let count = 0;
  let more = false;
  let pending = formatter.head();

  const flush = async (): Promise<void> => {
    if (pending.length === 0 || closed) return;
    const chunk = pending;
    pending = '';
    if (!out.write(chunk) && !closed) await drained(out);
    options.onProgress?.(count);
  };

  try {
    const iterator = records[Symbol.asyncIterator]();
    try {
      for (;;) {
        if (closed) break;
        const next = await iterator.next();
        if (next.done === true) break;
        if (count >= limit) {
          more = true;
          break;
        }
        pending += formatter.row(next.value);
        count += 1;
        if (pending.length >= CHUNK_CHARS) await flush();
      }
    } finally {
      // Ends a store walk that stopped early (limit, closed destination).
      await iterator.return?.();
    }
    if (!closed) {
      pending += formatter.tail();
      await flush();
    }
    return { count, more, complete: !closed };
  } finally {
    out.off('close', onClose);
    out.off('error', onClose);
  }
}

/** Resolves on `drain`, or when the stream closes or errors (the caller then sees it closed). */
function drained(out: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      out.off('error', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
    out.on('error', done);
  });
}
