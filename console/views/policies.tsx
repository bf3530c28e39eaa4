import { useEffect, useState } from 'preact/hooks';
import { listPolicies, type PolicyList } from '../api.js';
import { viewUrl, type ViewState } from '../url-state.js';
import type { ViewProps } from './log.js';
import { Text } from './text.js';

type TestResult = PolicyList['tests']['results'][number];

/**
 * The loaded policy set for authors (`GET /v1/policies`): every policy with
 * its hash and its test cases' status, and one policy's source with its test
 * cases (`open=<name>`). Sources are shown as text, never markup.
 */
export function PoliciesView({ state, navigate, onError }: ViewProps) {
  const [result, setResult] = useState<{ list: PolicyList | null; error: string | null } | null>(null);
  useEffect(() => {
    let current = true;
    listPolicies().then(
      (list) => current && setResult({ list, error: null }),
      (err: unknown) => {
        onError(err);
        if (current) setResult({ list: null, error: err instanceof Error ? err.message : 'The broker did not answer.' });
      },
    );
    return () => {
      current = false;
    };
  }, [onError]);

  if (result === null) return <p class="loading">Loading…</p>;
  if (result.list === null) {
    return (
      <p role="alert" class="error">
        {result.error}
      </p>
    );
  }
  const { list } = result;
  const open = (name: string | null): ViewState => ({ ...state, open: name });
  const link = (target: ViewState, text: string) => (
    <a href={viewUrl(target)} onClick={(e) => (e.preventDefault(), navigate(target))}>
      <Text value={text} />
    </a>
  );
  const testsOf = (name: string) => list.tests.results.filter((r) => r.policy === name);
  const policy = state.open === null ? undefined : list.policies.find((p) => p.name === state.open);

  if (state.open !== null) {
    return (
      <article class="policy" aria-labelledby="policy-title">
        <p>{link(open(null), '← All policies')}</p>
        {policy === undefined ? (
          <p role="alert">The loaded set has no policy of this name.</p>
        ) : (
          <>
            <h2 id="policy-title">
              <Text value={policy.name} /> <span class={`effect ${policy.effect}`}>{policy.effect}</span>
              {policy.mode === 'audit' && <> <span class="effect audit">audit mode</span></>}
            </h2>
            <p class="help">
              Issuer <Text value={policy.issuer} />, file <Text value={policy.file} />, SHA-256 <code>{policy.sha256}</code>
            </p>
            <TestTable title="Test cases" results={testsOf(policy.name)} />
            <h3>Source</h3>
            {policy.source === null ? (
              <p role="alert" class="error">
                {policy.source_status === 'changed' ? 'The file changed on disk since this set was loaded; the loaded text is not shown.' : 'The file cannot be read any more.'}
              </p>
            ) : (
              <pre class="source">
                <Text value={policy.source} />
              </pre>
            )}
          </>
        )}
      </article>
    );
  }

  const failing = list.tests.results.filter((r) => !r.passed);
  const reload = list.set.last_reload;
  return (
    <section aria-labelledby="policies-title">
      <h2 id="policies-title">Policies</h2>
      <p class="set-status">
        {list.set.count} policies loaded at {list.set.loaded_at.slice(0, 19).replace('T', ' ')} UTC, set SHA-256 <code>{list.set.sha256.slice(0, 16)}…</code>
        {reload === null ? '; not reloaded since start.' : `; last reload ${reload.at.slice(0, 19).replace('T', ' ')} UTC (${reload.trigger}): ${reload.outcome}.`}
      </p>
      {reload !== null && !reload.ok && (
        <p role="alert" class="error">
          The last reload failed; the set above keeps serving. {reload.errors?.join('; ')}
        </p>
      )}
      <div class="table-wrap">
        <table class="policy-list">
          <caption>
            {list.tests.results.length - failing.length} of {list.tests.results.length} test cases pass ({list.tests.files.length} test file{list.tests.files.length === 1 ? '' : 's'})
          </caption>
          <thead>
            <tr>
              <th scope="col">Policy</th>
              <th scope="col">Effect</th>
              <th scope="col">Issuer</th>
              <th scope="col">File</th>
              <th scope="col">SHA-256</th>
              <th scope="col">Tests</th>
            </tr>
          </thead>
          <tbody>
            {list.policies.map((p) => {
              const tests = testsOf(p.name);
              const failed = tests.filter((t) => !t.passed).length;
              return (
                <tr data-policy={p.name}>
                  <td>{link(open(p.name), p.name)}</td>
                  <td>
                    <span class={`effect ${p.effect}`}>{p.effect}</span>
                    {p.mode === 'audit' && (
                      <>
                        {' '}
                        <span class="effect audit">audit mode</span>
                      </>
                    )}
                  </td>
                  <td>
                    <Text value={p.issuer} short />
                  </td>
                  <td>
                    <Text value={p.file} short />
                  </td>
                  <td>
                    <code>{p.sha256.slice(0, 12)}</code>
                  </td>
                  <td class={failed > 0 ? 'fails' : ''}>{tests.length === 0 ? 'none' : failed > 0 ? `${failed} of ${tests.length} fail` : `${tests.length} pass`}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {failing.length > 0 && <TestTable title="Failing test cases" results={failing} />}
      {list.tests.problems.length > 0 && (
        <>
          <h3>Problems in test files</h3>
          <ul class="problems">
            {list.tests.problems.map((problem) => (
              <li>
                <Text value={problem} />
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

function TestTable({ title, results }: { title: string; results: TestResult[] }) {
  return (
    <div class="table-wrap">
      <table class="tests">
        <caption>{results.length === 0 ? `${title}: none` : title}</caption>
        <thead>
          <tr>
            <th scope="col">Status</th>
            <th scope="col">Case</th>
            <th scope="col">Expected</th>
            <th scope="col">Got</th>
            <th scope="col">Why</th>
          </tr>
        </thead>
        <tbody>
          {results.map((r) => (
            <tr class={r.passed ? 'holds' : 'fails'}>
              <td>{r.passed ? '✓ pass' : '✗ FAIL'}</td>
              <td>
                <Text value={`${r.file}${r.line === null ? '' : `:${r.line}`}: ${r.name}`} />
              </td>
              <td>{r.expect}</td>
              <td>{r.decision}</td>
              <td>
                <Text value={r.message} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
