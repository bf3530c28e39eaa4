/**
 * oidc-broker GitHub Action: exchange the job's OIDC ID token for a
 * short-lived credential. Bundled to action/dist/index.js (`npm run build:action`).
 */
import { toBrokerUrl } from '../../src/client/broker-url.js';
import { ClientError } from '../../src/client/errors.js';
import type { ExchangeResponse } from '../../src/client/exchange.js';
import { exchangeForJob } from './exchange.js';
import { resolveGitHubApiUrl, STATE } from './revoke.js';
import { exportVariable, getInput, info, logError, logWarning, saveState, setOutput } from './runner.js';

/**
 * Credential outputs and exported variables for one exchange response, by
 * the shape of its credentials. A GitHub token is an output only: exported as
 * GH_TOKEN it would become what every later step's `gh` (third-party actions
 * included) acts as, silently swapping the job's own token for one scoped to
 * other repositories; a step names it where it needs it instead.
 */
export function toOutputs(response: ExchangeResponse): { outputs: [string, string][]; env: [string, string][] } {
  const c = response.credentials;
  const outputs: [string, string][] = [];
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
    throw new ClientError('The broker returned credentials this action does not know.', false);
  }
  return { outputs, env };
}

function readInputs() {
  const brokerUrlInput = getInput('broker-url');
  const policy = getInput('policy');
  if (!brokerUrlInput) throw new ClientError('The broker-url input is required.', false);
  if (!policy) throw new ClientError('The policy input is required.', false);
  const brokerUrl = toBrokerUrl(brokerUrlInput, 'The broker-url input');
  const duration = getInput('duration-seconds');
  if (duration !== '' && !/^[1-9][0-9]{0,8}$/.test(duration)) {
    throw new ClientError(`The duration-seconds input must be a positive whole number of seconds, not ${JSON.stringify(duration)}.`, false);
  }
  const maxAttempts = getInput('retry-max-attempts') || '3';
  if (!/^([1-9]|10)$/.test(maxAttempts)) throw new ClientError(`The retry-max-attempts input must be a whole number from 1 to 10, not ${JSON.stringify(maxAttempts)}.`, false);
  const awsRegion = getInput('aws-region');
  if (awsRegion !== '' && !/^[a-z]{2}(-[a-z]+)+-[0-9]+$/.test(awsRegion)) {
    throw new ClientError(`The aws-region input must be an AWS region such as eu-west-1, not ${JSON.stringify(awsRegion)}.`, false);
  }
  const revoke = readBooleanInput('revoke', true);
  return {
    brokerUrl,
    policy,
    // The broker's accepted audience is its URL as configured, so a trailing slash typed in broker-url must not end up in `aud`.
    audience: getInput('audience') || brokerUrl,
    durationSeconds: duration === '' ? undefined : Number(duration),
    maxAttempts: Number(maxAttempts),
    awsRegion,
    exportEnv: readBooleanInput('export-env', true),
    outputCredentials: readBooleanInput('output-credentials', false),
    revoke,
    // Checked before the exchange, so a bad URL fails the step before a token exists.
    githubApiUrl: revoke ? resolveGitHubApiUrl(getInput('github-api-url'), process.env) : undefined,
  };
}

/** A `true`/`false` input (any case), `fallback` when unset. */
function readBooleanInput(name: string, fallback: boolean): boolean {
  const value = getInput(name) || String(fallback);
  if (!/^(true|false)$/i.test(value)) throw new ClientError(`The ${name} input must be true or false, not ${JSON.stringify(value)}.`, false);
  return value.toLowerCase() === 'true';
}

async function run(): Promise<void> {
  const inputs = readInputs();
  // The region is not a secret and not the broker's: exported first, as configure-aws-credentials does, so it is set even when the exchange fails.
  if (inputs.awsRegion !== '') for (const name of ['AWS_REGION', 'AWS_DEFAULT_REGION']) exportVariable(name, inputs.awsRegion);
  const response = await exchangeForJob(inputs);
  const { outputs, env } = toOutputs(response);
  const githubToken = response.provider === 'github' ? response.credentials.token : undefined;
  // Saved first, so the post step revokes the token even if writing an output fails.
  if (githubToken !== undefined && inputs.githubApiUrl !== undefined) {
    saveState(STATE.token, githubToken);
    saveState(STATE.apiUrl, inputs.githubApiUrl);
    saveState(STATE.expiresAt, response.expires_at);
  }
  setOutput('issuance-id', response.issuance_id);
  setOutput('expires-at', response.expires_at);
  // A GitHub token is never exported, so its output is the only way to it.
  if (inputs.outputCredentials || githubToken !== undefined) for (const [name, value] of outputs) setOutput(name, value);
  if (inputs.exportEnv) for (const [name, value] of env) exportVariable(name, value);
  info(`Exchanged the job's ID token under policy ${JSON.stringify(inputs.policy)}: issuance ${response.issuance_id}, expires ${response.expires_at}; ${whatNext()}`);
  if (githubToken === undefined && !inputs.exportEnv && !inputs.outputCredentials) {
    logWarning('export-env and output-credentials are both false: the credential was issued but no later step can use it. Set one of them to true.');
  }

  function whatNext(): string {
    if (githubToken === undefined) {
      const exported = inputs.exportEnv ? `exported ${env.map(([name]) => name).join(', ')}` : 'exported nothing';
      return `${exported}; ${inputs.outputCredentials ? 'credential outputs set' : 'no credential outputs (output-credentials is false)'}.`;
    }
    const where = 'the github-token output holds the GitHub token (never exported: give it to the steps that need it, e.g. env: GH_TOKEN)';
    if (inputs.githubApiUrl === undefined) return `${where}; revoke is false, so it stays valid until it expires.`;
    return `${where}; this action's post step revokes it when the job ends.`;
  }
}

run().catch((err: unknown) => {
  logError(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
