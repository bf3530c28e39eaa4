import { useEffect, useState } from 'preact/hooks';
import { auditStats, type Stats } from '../api.js';
import { filterQuery, viewUrl, type Filters, type ViewState } from '../url-state.js';
import { BarChart, type Series } from './bar-chart.js';
import { FilterForm } from './filter-form.js';
import type { ViewProps } from './log.js';
import { Text } from './text.js';

const DECISIONS = ['issued', 'denied', 'error', 'explain'] as const;
/** Colour classes for the policies, in app.css; more policies than this reuse them in turn. */
const POLICY_TONES = 8;

/**
 * Pictures of the records the filters match (`GET /v1/audit/stats`): per
 * bucket by decision and by policy, the top denial reasons and subjects, each
 * linking into the log with its filter applied.
 */
export function DashboardView({ state, navigate, onError }: ViewProps) {
  const [result, setResult] = useState<{ key: string; stats: Stats | null; error: string | null } | null>(null);
  const query = filterQuery(state.filters);
  query.set('bucket', state.bucket);
  const key = query.toString();
  useEffect(() => {
    let current = true;
    auditStats(new URLSearchParams(key)).then(
      (stats) => current && setResult({ key, stats, error: null }),
      (err: unknown) => {
        onError(err);
        if (current) setResult({ key, stats: null, error: err instanceof Error ? err.message : 'The query failed.' });
      },
    );
    return () => {
      current = false;
    };
  }, [key, onError]);
  const { stats, error } = result?.key === key ? result : { stats: null, error: null };

  /** A link into the log with these filters on top of the dashboard's. */
  const logLink = (extra: Partial<Filters['scalars']>, text: string, label: string) => {
    const target: ViewState = { ...state, view: 'log', cursor: null, record: null, filters: { ...state.filters, scalars: { ...state.filters.scalars, ...extra } } };
    return (
      <a href={viewUrl(target)} aria-label={label} onClick={(e) => (e.preventDefault(), navigate(target))}>
        {text}
      </a>
    );
  };

  return (
    <>
      <FilterForm filters={state.filters} paging={false} onApply={(filters) => navigate({ ...state, filters, cursor: null, record: null })} />
      <div class="field bucket">
        <label for="f-bucket">Bars per</label>
        <select id="f-bucket" value={state.bucket} onChange={(e) => navigate({ ...state, bucket: e.currentTarget.value === 'day' ? 'day' : 'hour' })}>
          <option value="hour">hour</option>
          <option value="day">day</option>
        </select>
      </div>
      {error !== null && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {stats === null && error === null && <p class="loading">Loading…</p>}
      {stats !== null && (
        <>
          <p class="window">
            {stats.total} records from {shortTime(stats.since)} to {shortTime(stats.until)} (UTC)
            {state.filters.scalars.since === undefined && ` (the last ${stats.bucket === 'hour' ? '24 hours' : '30 days'}; set Since and Until for another window)`}
          </p>
          <div class="charts">
            <BarChart
              id="by-decision"
              title="Records by decision"
              bucket={stats.bucket}
              buckets={stats.buckets}
              series={DECISIONS.map((d): Series => ({ label: d, tone: `s-${d}`, counts: stats.by_decision[d] }))}
            />
            <BarChart
              id="by-policy"
              title="Records by policy"
              bucket={stats.bucket}
              buckets={stats.buckets}
              series={stats.by_policy.map((p, i): Series => ({ label: p.policy ?? '(no policy)', tone: p.policy === null ? 's-none' : `s-p${i % POLICY_TONES}`, counts: p.counts }))}
            />
          </div>
          <div class="tops">
            <section aria-labelledby="top-reasons">
              <h2 id="top-reasons">Top denial reasons</h2>
              <table class="top-list" id="top-denial-reasons">
                <thead>
                  <tr>
                    <th scope="col">Error</th>
                    <th scope="col">Reason</th>
                    <th scope="col">Denials</th>
                  </tr>
                </thead>
                <tbody>
                  {stats.top_denial_reasons.length === 0 && (
                    <tr>
                      <td colSpan={3}>No denials.</td>
                    </tr>
                  )}
                  {stats.top_denial_reasons.map((r) => (
                    <tr>
                      <td>
                        <Text value={r.error} short />
                      </td>
                      <td>
                        <Text value={r.reason} short />
                      </td>
                      <td>{r.count}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              {stats.top_denial_reasons.length > 0 && <p class="help">{logLink({ decision: 'denied' }, 'Show these denials in the log', 'Show these denials in the log')}</p>}
            </section>
            <section aria-labelledby="top-subjects">
              <h2 id="top-subjects">Top subjects</h2>
              <table class="top-list" id="top-subjects-list">
                <thead>
                  <tr>
                    <th scope="col">Subject</th>
                    <th scope="col">Records</th>
                    <th scope="col">Denied</th>
                  </tr>
                </thead>
                <tbody>
                  {stats.top_subjects.length === 0 && (
                    <tr>
                      <td colSpan={3}>No records.</td>
                    </tr>
                  )}
                  {stats.top_subjects.map((s) => (
                    <tr>
                      <td>
                        <Text value={s.subject} short />
                      </td>
                      <td>{logLink({ subject: s.subject }, String(s.count), `Show the ${s.count} records of this subject in the log`)}</td>
                      <td>{s.denied === 0 ? '0' : logLink({ subject: s.subject, decision: 'denied' }, String(s.denied), `Show the ${s.denied} denials of this subject in the log`)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          </div>
        </>
      )}
    </>
  );
}

/** `2026-11-25T19:00:00.000Z` as `2026-11-25 19:00:00`. */
function shortTime(time: string): string {
  return time.slice(0, 19).replace('T', ' ');
}
