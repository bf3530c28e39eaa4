import { useEffect, useState } from 'preact/hooks';
import { ApiError, evaluatePolicy, listPolicies, type EvaluateInput, type Evaluation } from '../api.js';
import { Text } from './text.js';

/**
 * The policy playground (docs/console.md): a claim set or a token, evaluated
 * by the broker against its loaded policies (`POST /v1/policies/evaluate`),
 * answered condition by condition as `oidc-broker policy explain` shows it.
 * The token lives in this component's state only: never in the URL, never in
 * storage, gone when the view is left.
 */
export function PlaygroundView({ onError }: { onError: (err: unknown) => void }) {
  const [kind, setKind] = useState<'claims' | 'token'>('claims');
  const [policy, setPolicy] = useState('');
  const [issuer, setIssuer] = useState('');
  const [input, setInput] = useState('');
  const [result, setResult] = useState<Evaluation | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [names, setNames] = useState<string[]>([]);
  // Suggestions only: without them the name is typed, and the evaluation names a missing policy.
  useEffect(() => {
    listPolicies().then(
      (list) => setNames(list.policies.filter((p) => p.effect === 'allow').map((p) => p.name)),
      () => undefined,
    );
  }, []);
  const value = (e: Event) => (e.currentTarget as HTMLInputElement).value;

  const submit = async (e: Event) => {
    e.preventDefault();
    setResult(null);
    setError(null);
    let body: EvaluateInput;
    if (kind === 'token') {
      body = { policy, token: input.trim() };
    } else {
      let claims: unknown;
      try {
        claims = JSON.parse(input);
      } catch (err) {
        setError(`The claim set is not JSON: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
        setError('The claim set must be a JSON object, such as {"repository": "acme/api"}.');
        return;
      }
      body = { policy, claims: claims as Record<string, unknown>, ...(issuer === '' ? {} : { issuer }) };
    }
    setBusy(true);
    try {
      setResult(await evaluatePolicy(body));
    } catch (err) {
      onError(err);
      setError(err instanceof ApiError ? err.message : 'The broker did not answer.');
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="playground" aria-labelledby="playground-title">
      <h2 id="playground-title">Policy playground</h2>
      <p class="help">What the loaded policies decide for a claim set or a token. Nothing is issued or recorded; a token is verified, never stored.</p>
      <form onSubmit={(e) => void submit(e)}>
        <div class="field">
          <label for="p-policy">Policy</label>
          <input id="p-policy" type="text" required list="p-policies" autocomplete="off" value={policy} onInput={(e) => setPolicy(value(e))} />
          <datalist id="p-policies">
            {names.map((name) => (
              <option value={name} />
            ))}
          </datalist>
        </div>
        <fieldset class="kind">
          <legend>Evaluate</legend>
          <label>
            <input type="radio" name="kind" checked={kind === 'claims'} onChange={() => setKind('claims')} /> a claim set (JSON)
          </label>
          <label>
            <input type="radio" name="kind" checked={kind === 'token'} onChange={() => setKind('token')} /> a token
          </label>
        </fieldset>
        {kind === 'claims' && (
          <div class="field">
            <label for="p-issuer">Issuer (config name; default the policy's)</label>
            <input id="p-issuer" type="text" value={issuer} onInput={(e) => setIssuer(value(e))} />
          </div>
        )}
        <div class="field">
          <label for="p-input">{kind === 'claims' ? 'Claim set (JSON)' : 'Token (compact JWT)'}</label>
          <textarea id="p-input" rows={kind === 'claims' ? 8 : 4} required autocomplete="off" spellcheck={false} value={input} onInput={(e) => setInput(value(e))} />
        </div>
        <div class="actions">
          <button type="submit" disabled={busy}>
            Evaluate
          </button>
        </div>
      </form>
      {error !== null && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {result !== null && <EvaluationResult result={result} />}
    </section>
  );
}

function EvaluationResult({ result }: { result: Evaluation }) {
  return (
    <div class="evaluation" aria-live="polite">
      <p class={`verdict ${result.decision}`} id="verdict">
        <strong>{result.decision}</strong> ({result.reason}): <Text value={result.message} />
      </p>
      <p class="help">
        Issuer <bdi>{result.issuer}</bdi>
        {result.notes.map((note) => (
          <>
            {'. '}
            <Text value={note} />
          </>
        ))}
      </p>
      {result.evaluations.map((evaluation) => (
        <div class="table-wrap">
          <table class="conditions" data-policy={evaluation.policy}>
            <caption>
              <Text value={evaluation.policy} /> ({evaluation.effect} policy): {evaluation.effect === 'deny' ? (evaluation.matched ? (evaluation.mode === 'audit' ? 'would deny (audit mode: recorded, not denied)' : 'denies') : 'does not match') : evaluation.matched ? 'every condition holds' : 'not every condition holds'}
              {evaluation.error !== undefined && <> — <Text value={evaluation.error} /></>}
            </caption>
            <thead>
              <tr>
                <th scope="col">Holds</th>
                <th scope="col">Key</th>
                <th scope="col">Operator</th>
                <th scope="col">Expected</th>
                <th scope="col">Value</th>
              </tr>
            </thead>
            <tbody>
              {evaluation.conditions.map((c) => (
                <tr class={c.matched ? 'holds' : 'fails'}>
                  <td>{c.matched ? '✓ yes' : '✗ no'}</td>
                  <td>
                    <Text value={c.key} />
                  </td>
                  <td>{c.operator}</td>
                  <td>
                    <Text value={c.expected} />
                  </td>
                  <td>{c.error !== undefined ? <Text value={`could not be evaluated: ${c.error}`} /> : <Text value={'actual' in c ? c.actual : '(absent)'} />}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
    </div>
  );
}
