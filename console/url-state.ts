/**
 * The console's state lives in its URL, so a view can be shared and the back
 * button works: the audit API's own query parameters (filters, `limit`,
 * `cursor`) as they are, plus `record=<id>` for the record view, `view=`
 * for the other pages and `bucket=` for the dashboard's charts.
 */

/** The scalar filters of `GET /v1/audit/events` (openapi.yaml), in form order. */
export const SCALAR_FILTERS = ['since', 'until', 'decision', 'policy', 'issuer', 'subject', 'credential_id', 'audit_match'] as const;
export type ScalarFilter = (typeof SCALAR_FILTERS)[number];

export interface Filters {
  scalars: Partial<Record<ScalarFilter, string>>;
  /** `claim.<name>=<value>` filters, in order. */
  claims: [name: string, value: string][];
  limit: string;
}

/** The pages besides the log (the default) and a record. */
export const VIEWS = ['log', 'dashboard', 'policies', 'playground'] as const;
export type View = (typeof VIEWS)[number];

export interface ViewState {
  view: View;
  /** The dashboard's bucket (`GET /v1/audit/stats`). */
  bucket: 'hour' | 'day';
  filters: Filters;
  /** The policy open in the policy view (`open=<name>`). */
  open: string | null;
  cursor: string | null;
  record: string | null;
}

export const DEFAULT_LIMIT = '50';

export function readState(search: string): ViewState {
  const params = new URLSearchParams(search);
  const scalars: Filters['scalars'] = {};
  for (const name of SCALAR_FILTERS) {
    const value = params.get(name);
    if (value !== null && value !== '') scalars[name] = value;
  }
  const claims: Filters['claims'] = [];
  for (const [name, value] of params) if (name.startsWith('claim.') && name.length > 'claim.'.length) claims.push([name.slice('claim.'.length), value]);
  const view = VIEWS.find((v) => v === params.get('view')) ?? 'log';
  const bucket = params.get('bucket') === 'day' ? 'day' : 'hour';
  return { view, bucket, open: view === 'policies' ? params.get('open') : null, filters: { scalars, claims, limit: params.get('limit') ?? DEFAULT_LIMIT }, cursor: params.get('cursor'), record: params.get('record') };
}

/** The audit API's query for the filters (and a page, when `cursor` is given). */
export function apiQuery(filters: Filters, cursor: string | null): URLSearchParams {
  const params = new URLSearchParams();
  for (const name of SCALAR_FILTERS) {
    const value = filters.scalars[name];
    if (value !== undefined && value !== '') params.set(name, value);
  }
  for (const [name, value] of filters.claims) if (name !== '') params.set(`claim.${name}`, value);
  params.set('limit', filters.limit);
  if (cursor !== null) params.set('cursor', cursor);
  return params;
}

/** The console URL of a view. */
export function viewUrl(state: ViewState): string {
  const params = apiQuery(state.filters, state.cursor);
  if (state.record !== null) params.set('record', state.record);
  if (state.view !== 'log') params.set('view', state.view);
  if (state.view === 'dashboard' && state.bucket !== 'hour') params.set('bucket', state.bucket);
  if (state.view === 'policies' && state.open !== null) params.set('open', state.open);
  return `/console/?${params.toString()}`;
}

/** The filters alone, without paging: for exports and `GET /v1/audit/stats`. */
export function filterQuery(filters: Filters): URLSearchParams {
  const params = apiQuery(filters, null);
  params.delete('limit');
  return params;
}

/** A download of every record the filters match (openapi.yaml: `format` instead of `Accept`, for links). */
export function exportUrl(filters: Filters, format: 'csv' | 'ndjson'): string {
  const params = filterQuery(filters);
  params.set('format', format);
  return `/v1/audit/events?${params.toString()}`;
}

/** `2026-12-01T10:00` (a datetime-local input, read as UTC) as RFC 3339, and back. */
export function fromLocalInput(value: string): string | undefined {
  return value === '' ? undefined : `${value.length === 16 ? `${value}:00` : value}Z`;
}
export function toLocalInput(value: string | undefined): string {
  return value === undefined ? '' : value.replace(/Z$/, '').slice(0, 19);
}
