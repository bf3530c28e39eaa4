import type { AuditRecord } from '../api.js';
import { usePage, type ViewProps } from './log.js';
import { Text } from './text.js';

/** Fields shown in their own sections, not in the general list. */
const SECTIONED = new Set(['claims', 'prev_hash', 'hash', 'policy_sha256', 'seq']);

/**
 * One record, found on the page the URL names (the API pages by cursor, and
 * the record's link carries its page): every field, its claims, and its
 * place in the hash chain.
 */
export function RecordView({ state, navigate, onError }: ViewProps) {
  const { page, error } = usePage(state, onError);
  const back = () => navigate({ ...state, record: null });
  const record = page?.events.find((r) => r.id === state.record);

  return (
    <article class="record" aria-labelledby="record-title">
      <button type="button" class="back" onClick={back}>
        ← Back to the log
      </button>
      {error !== null && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {page === null && error === null && <p class="loading">Loading…</p>}
      {page !== null && record === undefined && <p role="alert">This record is not on the page this link names.</p>}
      {record !== undefined && <RecordDetails record={record} />}
    </article>
  );
}

function RecordDetails({ record }: { record: AuditRecord }) {
  const fields = Object.entries(record).filter(([name]) => !SECTIONED.has(name));
  return (
    <>
      <h2 id="record-title">
        Record {record.seq} <span class={`decision ${record.decision}`}>{record.decision}</span>
      </h2>
      <dl class="fields">
        {fields.map(([name, value]) => (
          <div key={name}>
            <dt>{name}</dt>
            <dd>
              <Text value={value} />
            </dd>
          </div>
        ))}
      </dl>
      <h3>Claims</h3>
      {record.claims === null ? (
        <p class="none">No verified claims (the token did not verify).</p>
      ) : (
        <div class="table-wrap">
          <table class="claims-table">
            <thead>
              <tr>
                <th scope="col">Claim</th>
                <th scope="col">Value</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(record.claims).map(([name, value]) => (
                <tr key={name}>
                  <th scope="row">
                    <Text value={name} />
                  </th>
                  <td>
                    <Text value={value} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>Policy and chain</h3>
      <dl class="fields chain">
        <div>
          <dt>policy_sha256</dt>
          <dd>
            <Text value={record.policy_sha256} />
          </dd>
        </div>
        <div>
          <dt>seq</dt>
          <dd>{record.seq}</dd>
        </div>
        <div>
          <dt>prev_hash (record {record.seq - 1})</dt>
          <dd>
            <Text value={record.prev_hash} />
          </dd>
        </div>
        <div>
          <dt>hash</dt>
          <dd>
            <Text value={record.hash} />
          </dd>
        </div>
      </dl>
    </>
  );
}
