import { useEffect, useState } from 'preact/hooks';
import { fromLocalInput, toLocalInput, type Filters, type ScalarFilter } from '../url-state.js';

const DECISIONS = ['issued', 'denied', 'error', 'explain'];
const TEXT_FILTERS: [ScalarFilter, string][] = [
  ['policy', 'Policy'],
  ['issuer', 'Issuer'],
  ['subject', 'Subject'],
  ['credential_id', 'Credential id'],
  ['audit_match', 'Audit-mode match (policy)'],
];

/** Every filter of `GET /v1/audit/events`; applying it starts again from the first page. `paging` false leaves out the page size (the dashboard). */
export function FilterForm({ filters, onApply, paging = true }: { filters: Filters; onApply: (filters: Filters) => void; paging?: boolean }) {
  const [draft, setDraft] = useState<Filters>(filters);
  // Back and forward change the filters under the form.
  useEffect(() => setDraft(filters), [filters]);

  const setScalar = (name: ScalarFilter, value: string | undefined) => setDraft((d) => ({ ...d, scalars: { ...d.scalars, [name]: value === '' ? undefined : value } }));
  const setClaim = (index: number, part: 0 | 1, value: string) =>
    setDraft((d) => ({ ...d, claims: d.claims.map((claim, i) => (i === index ? (part === 0 ? [value, claim[1]] : [claim[0], value]) : claim)) }));
  const input = (e: Event) => (e.currentTarget as HTMLInputElement).value;

  return (
    <form
      class="filters"
      aria-label="Filters"
      onSubmit={(e) => {
        e.preventDefault();
        onApply(draft);
      }}
    >
      <div class="field">
        <label for="f-since">Since (UTC)</label>
        <input id="f-since" type="datetime-local" step="1" value={toLocalInput(draft.scalars.since)} onChange={(e) => setScalar('since', fromLocalInput(input(e)))} />
      </div>
      <div class="field">
        <label for="f-until">Until (UTC)</label>
        <input id="f-until" type="datetime-local" step="1" value={toLocalInput(draft.scalars.until)} onChange={(e) => setScalar('until', fromLocalInput(input(e)))} />
      </div>
      <div class="field">
        <label for="f-decision">Decision</label>
        <select id="f-decision" value={draft.scalars.decision ?? ''} onChange={(e) => setScalar('decision', (e.currentTarget).value)}>
          <option value="">any</option>
          {DECISIONS.map((d) => (
            <option value={d}>{d}</option>
          ))}
        </select>
      </div>
      {TEXT_FILTERS.map(([name, label]) => (
        <div class="field">
          <label for={`f-${name}`}>{label}</label>
          <input id={`f-${name}`} type="text" value={draft.scalars[name] ?? ''} onInput={(e) => setScalar(name, input(e))} />
        </div>
      ))}
      {paging && (
        <div class="field">
          <label for="f-limit">Per page</label>
          <select id="f-limit" value={draft.limit} onChange={(e) => setDraft((d) => ({ ...d, limit: (e.currentTarget).value }))}>
            {['10', '25', '50', '100', '250'].map((n) => (
              <option value={n}>{n}</option>
            ))}
          </select>
        </div>
      )}
      <fieldset class="claims">
        <legend>Claims (exact value)</legend>
        {draft.claims.map(([name, value], i) => (
          <div class="claim-row">
            <label for={`f-claim-name-${i}`}>Claim name</label>
            <input id={`f-claim-name-${i}`} type="text" value={name} onInput={(e) => setClaim(i, 0, input(e))} />
            <label for={`f-claim-value-${i}`}>Value</label>
            <input id={`f-claim-value-${i}`} type="text" value={value} onInput={(e) => setClaim(i, 1, input(e))} />
            <button type="button" onClick={() => setDraft((d) => ({ ...d, claims: d.claims.filter((_, j) => j !== i) }))}>
              Remove
            </button>
          </div>
        ))}
        <button type="button" onClick={() => setDraft((d) => ({ ...d, claims: [...d.claims, ['', '']] }))}>
          Add a claim filter
        </button>
      </fieldset>
      <div class="actions">
        <button type="submit">Apply filters</button>
      </div>
    </form>
  );
}
