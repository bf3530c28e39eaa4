import { useEffect, useState } from 'preact/hooks';
import { queryEvents, type EventsPage } from '../api.js';
import { apiQuery, exportUrl, viewUrl, type ViewState } from '../url-state.js';
import { FilterForm } from './filter-form.js';
import { Text } from './text.js';

/** The page before each page reached with "Next", so "Previous" can go back (the API pages forward only). */
const previousCursor = new Map<string, string | null>();

export interface ViewProps {
  state: ViewState;
  navigate: (state: ViewState) => void;
  onError: (err: unknown) => void;
}

/** Fetches the page of records the state names; `error` holds the broker's sentence when it refuses. */
export function usePage(state: ViewState, onError: (err: unknown) => void): { page: EventsPage | null; error: string | null } {
  const [result, setResult] = useState<{ key: string; page: EventsPage | null; error: string | null } | null>(null);
  const key = apiQuery(state.filters, state.cursor).toString();
  useEffect(() => {
    let current = true;
    queryEvents(new URLSearchParams(key)).then(
      (page) => current && setResult({ key, page, error: null }),
      (err: unknown) => {
        onError(err);
        if (current) setResult({ key, page: null, error: err instanceof Error ? err.message : 'The query failed.' });
      },
    );
    return () => {
      current = false;
    };
  }, [key, onError]);
  return result?.key === key ? result : { page: null, error: null };
}

export function LogView({ state, navigate, onError }: ViewProps) {
  const { page, error } = usePage(state, onError);
  const go = (cursor: string | null) => navigate({ ...state, cursor, record: null });

  return (
    <>
      <FilterForm filters={state.filters} onApply={(filters) => navigate({ ...state, filters, cursor: null, record: null })} />
      <nav class="exports" aria-label="Export">
        Export every match:{' '}
        <a href={exportUrl(state.filters, 'csv')} download>
          CSV
        </a>{' '}
        <a href={exportUrl(state.filters, 'ndjson')} download="audit.ndjson">
          NDJSON
        </a>
      </nav>
      {error !== null && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {page === null && error === null && <p class="loading">Loading…</p>}
      {page !== null && (
        <>
          <div class="table-wrap">
            <table class="records">
              <caption>{page.events.length === 0 ? 'No records match these filters.' : `${page.events.length} records`}</caption>
              <thead>
                <tr>
                  <th scope="col">Seq</th>
                  <th scope="col">Time (UTC)</th>
                  <th scope="col">Decision</th>
                  <th scope="col">Policy</th>
                  <th scope="col">Subject</th>
                  <th scope="col">Error / reason</th>
                </tr>
              </thead>
              <tbody>
                {page.events.map((record) => {
                  const open = { ...state, record: record.id };
                  return (
                    <tr key={record.id} data-decision={record.decision}>
                      <td>
                        <a href={viewUrl(open)} onClick={(e) => (e.preventDefault(), navigate(open))} aria-label={`Open record ${record.seq}`}>
                          {record.seq}
                        </a>
                      </td>
                      <td>{record.time.replace('T', ' ').replace('Z', '')}</td>
                      <td>
                        <span class={`decision ${record.decision}`}>{record.decision}</span>
                      </td>
                      <td>
                        <Text value={record.policy} short />
                      </td>
                      <td>
                        <Text value={record.subject} short />
                      </td>
                      <td>
                        <Text value={record.error === null ? null : `${record.error}: ${record.reason ?? ''}`} short />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <nav class="paging" aria-label="Pages">
            <button type="button" disabled={state.cursor === null} onClick={() => go(state.cursor === null ? null : (previousCursor.get(state.cursor) ?? null))}>
              Previous
            </button>
            <button
              type="button"
              disabled={page.next_cursor === null}
              onClick={() => {
                if (page.next_cursor === null) return;
                previousCursor.set(page.next_cursor, state.cursor);
                go(page.next_cursor);
              }}
            >
              Next
            </button>
          </nav>
        </>
      )}
    </>
  );
}
