/**
 * oidc-broker GitHub Action: exchange the job's OIDC ID token for a
 * short-lived credential. Bundled to action/dist/index.js (`npm run build:action`).
 */
import { ActionError, exchangeWithRetry, type ExchangeResponse } from './exchange.js';
import { resolveGitHubApiUrl, STATE } from './revoke.js';
import { exportVariable, getInput, info, logError, saveState, setOutput } from './runner.js';

/**
 * Outputs and exported variables for one exchange response, by the shape of
 * its credentials. A GitHub token is an output only: exported as GH_TOKEN it
 * would become what every later step's `gh` (third-party actions included)
 * acts as, silently swapping the job's own token for one scoped to other
 * repositories; a step names it where it needs it instead.
 */
export function toOutputs(response: ExchangeResponse): { outputs: [string, string][]; env: [string, string][] } {
  const c = response.credentials;
  const outputs: [string, string][] = [
    ['issuance-id', response.issuance_id],
    ['expires-at', response.expires_at],
  ];
  const env: [string, string][] = [];
  if (response.provider === 'github' && c.token !== undefined) {
    outputs.push(['github-token', c.token]);
  } else if (c.AccessKeyId !== undefined && c.SecretAccessKey !== undefined && c.SessionToken !== undefined) {
    outputs.push(['aws-access-key-id', c.AccessKeyId], ['aws-secret-access-key', c.SecretAccessKey], ['aws-session-token', c.SessionToken]);
    env.push(['AWS_ACCESS_KEY_ID', c.AccessKeyId], ['AWS_SECRET_ACCESS_KEY', c.SecretAccessKey], ['AWS_SESSION_TOKEN', c.SessionToken]);
  } else if (c.access_token !== undefined) {
    outputs.push(['access-token', c.access_token]);
    if (response.provider === 'gcp') env.push(['CLOUDSDK_AUTH_ACCESS_TOKEN', c.access_token], ['GOOGLE_OAUTH_ACCESS_TOKEN', c.access_token]);
    else env.push(['OIDC_BROKER_TOKEN', c.access_token]);
  } else if (c.id_token !== undefined) {
    outputs.push(['access-token', c.id_token], ['id-token', c.id_token]);
    env.push(['GOOGLE_ID_TOKEN', c.id_token]);
  } else {
    throw new ActionError('The broker returned credentials this action does not know.', false);
  }
  return { outputs, env };
}

function readInputs() {
  const brokerUrl = getInput('broker-url');
  const policy = getInput('policy');
  if (!brokerUrl) throw new ActionError('The broker-url input is required.', false);
  if (!policy) throw new ActionError('The policy input is required.', false);
  let url: URL;
  try {
    url = new URL(brokerUrl);
  } catch {
    throw new ActionError(`The broker-url input ${JSON.stringify(brokerUrl)} is not a URL.`, false);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ActionError('The broker-url input must be an https URL.', false);
  const duration = getInput('duration-seconds');
  if (duration !== '' && !/^[1-9][0-9]{0,8}$/.test(duration)) {
    throw new ActionError(`The duration-seconds input must be a positive whole number of seconds, not ${JSON.stringify(duration)}.`, false);
  }
  const revoke = readBooleanInput('revoke');
  return {
    brokerUrl,
    policy,
    audience: getInput('audience') || brokerUrl,
    durationSeconds: duration === '' ? undefined : Number(duration),
    exportEnv: readBooleanInput('export-env'),
    revoke,
    // Checked before the exchange, so a bad URL fails the step before a token exists.
    githubApiUrl: revoke ? resolveGitHubApiUrl(getInput('github-api-url'), process.env) : undefined,
  };
}

/** A `true`/`false` input (any case), `true` when unset. */
function readBooleanInput(name: string): boolean {
  const value = getInput(name) || 'true';
  if (!/^(true|false)$/i.test(value)) throw new ActionError(`The ${name} input must be true or false, not ${JSON.stringify(value)}.`, false);
  return value.toLowerCase() === 'true';
}

async function run(): Promise<void> {
  const inputs = readInputs();
  const response = await exchangeWithRetry(inputs);
  const { outputs, env } = toOutputs(response);
  const githubToken = response.provider === 'github' ? response.credentials.token : undefined;
  // Saved first, so the post step revokes the token even if writing an output fails.
  if (githubToken !== undefined && inputs.githubApiUrl !== undefined) {
    saveState(STATE.token, githubToken);
    saveState(STATE.apiUrl, inputs.githubApiUrl);
    saveState(STATE.expiresAt, response.expires_at);
  }
  for (const [name, value] of outputs) setOutput(name, value);
  if (inputs.exportEnv) for (const [name, value] of env) exportVariable(name, value);
  info(`Exchanged the job's ID token under policy ${JSON.stringify(inputs.policy)}: issuance ${response.issuance_id}, expires ${response.expires_at}; ${whatNext()}`);

  function whatNext(): string {
    if (githubToken === undefined) return inputs.exportEnv ? `exported ${env.map(([name]) => name).join(', ')}.` : 'outputs only.';
    const where = 'the github-token output holds the GitHub token (never exported: give it to the steps that need it, e.g. env: GH_TOKEN)';
    if (inputs.githubApiUrl === undefined) return `${where}; revoke is false, so it stays valid until it expires.`;
    return `${where}; this action's post step revokes it when the job ends.`;
  }
}

run().catch((err: unknown) => {
  logError(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
