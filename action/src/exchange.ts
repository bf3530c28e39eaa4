/**
 * The Action's exchange: the shared client (src/client/, docs/ci/exchange.md)
 * with the job's ID token from the runner's ID-token service, a fresh one per
 * attempt. Every token is masked as soon as it is read and every secret of the
 * answer before anything can print it; failures are phrased for the inputs.
 */
import { BrokerRefusal, ClientError } from '../../src/client/errors.js';
import { exchangeWithRetry, type ExchangeResponse } from '../../src/client/exchange.js';
import { DEFAULT_RETRY } from '../../src/client/retry.js';
import { gitHubIdTokenRequest, tokenFromGitHubActions } from '../../src/client/token-source.js';
import { addMask, info } from './runner.js';

export interface ExchangeInputs {
  /** Checked by toBrokerUrl: no trailing slash. */
  brokerUrl: string;
  policy: string;
  audience: string;
  durationSeconds: number | undefined;
  maxAttempts: number;
}

/** `OIDC_BROKER_ACTION_RETRY_BASE_MS` shortens the backoff, for the Action's own tests only. */
function baseDelayMs(env: NodeJS.ProcessEnv): number {
  const base = Number(env.OIDC_BROKER_ACTION_RETRY_BASE_MS ?? DEFAULT_RETRY.baseDelayMs);
  return Number.isFinite(base) && base >= 0 ? base : DEFAULT_RETRY.baseDelayMs;
}

/**
 * The job's exchange response, its secrets masked.
 * @throws ClientError with a message naming what to change
 */
export async function exchangeForJob(inputs: ExchangeInputs, env: NodeJS.ProcessEnv = process.env): Promise<ExchangeResponse> {
  addMask(gitHubIdTokenRequest(env).requestToken);
  const idToken = tokenFromGitHubActions(inputs.audience, env);
  try {
    const { response } = await exchangeWithRetry(
      {
        brokerUrl: inputs.brokerUrl,
        policy: inputs.policy,
        durationSeconds: inputs.durationSeconds,
        format: 'json',
        token: async () => {
          const token = await idToken();
          addMask(token);
          return token;
        },
      },
      { ...DEFAULT_RETRY, maxAttempts: inputs.maxAttempts, baseDelayMs: baseDelayMs(env) },
      { onRetry: (attempt, maxAttempts, error, delayMs) => info(`Attempt ${attempt} of ${maxAttempts} failed: ${error.message} Retrying in ${delayMs} ms with a fresh ID token.`) },
    );
    // A json exchange always answers a parsed response.
    maskSecrets(response!.credentials);
    return response!;
  } catch (err) {
    throw err instanceof BrokerRefusal ? toInputError(err, inputs) : err;
  }
}

/**
 * Fields of `credentials` that describe the credential rather than being it.
 * Masking them would blank every "token" or "Bearer" in the job's log; any
 * other field, known or not, is masked.
 */
const NOT_SECRET: ReadonlySet<string> = new Set(['token_type', 'expires_at', 'Expiration']);

function maskSecrets(credentials: Record<string, string>): void {
  for (const [name, value] of Object.entries(credentials)) if (!NOT_SECRET.has(name)) addMask(value);
}

/** A broker refusal as a sentence naming the input to change; retryable ones keep the client's wording. */
export function toInputError(refusal: BrokerRefusal, inputs: Pick<ExchangeInputs, 'policy' | 'audience'>): ClientError {
  const { status, code, description } = refusal;
  if (refusal.retryable) return refusal;
  const said = description ? `: ${description}` : '.';
  const requestId = refusal.requestId ? ` (broker request id ${refusal.requestId})` : '';
  const policy = JSON.stringify(inputs.policy);
  const error = (message: string) => new ClientError(`${message}${said}${requestId}`, false);
  if (status === 401 || code === 'invalid_token') {
    if (/audience/i.test(description)) {
      return error(
        `The broker does not accept the ID token's audience ${JSON.stringify(inputs.audience)}: the audience input must be one of the broker's accepted audiences (default: broker-url without a trailing slash)`,
      );
    }
    return error("The broker refused the job's ID token");
  }
  if (status === 403 || code === 'access_denied') return error(`Policy ${policy} denied this job`);
  if (status === 404 || code === 'unknown_policy') return error(`The broker has no policy ${policy}: check the policy input`);
  if (status === 409 || code === 'token_replayed') {
    return error('The broker had already seen this ID token (token_replayed): each exchange needs a fresh ID token; re-run the step');
  }
  if (code === 'invalid_request') return error('The broker refused the request (check the duration-seconds and policy inputs)');
  return refusal;
}
