/**
 * Fetches the job's ID token and exchanges it at the broker, retrying only
 * what can succeed on retry (network errors, 5xx, 429) with a fresh ID token
 * for each attempt.
 */
import { addMask, info } from './runner.js';

export interface ExchangeInputs {
  brokerUrl: string;
  policy: string;
  audience: string;
  durationSeconds: number | undefined;
}

export interface ExchangeResponse {
  issuance_id: string;
  policy?: string;
  provider?: string;
  expires_at: string;
  credentials: Record<string, string>;
}

/** A failure with a message the user can act on; `retryable` says whether another attempt could succeed. */
export class ActionError extends Error {
  constructor(message: string, readonly retryable: boolean) {
    super(message);
  }
}

export const MAX_ATTEMPTS = 3;

/** Delay before attempt n+1 (1 s, 2 s, ...); `OIDC_BROKER_ACTION_RETRY_BASE_MS` overrides the base (tests). */
function backoffMs(attempt: number, env: NodeJS.ProcessEnv): number {
  const base = Number(env.OIDC_BROKER_ACTION_RETRY_BASE_MS ?? '1000');
  return (Number.isFinite(base) && base >= 0 ? base : 1000) * 2 ** (attempt - 1);
}

export async function exchangeWithRetry(inputs: ExchangeInputs, env: NodeJS.ProcessEnv = process.env): Promise<ExchangeResponse> {
  for (let attempt = 1; ; attempt++) {
    try {
      const idToken = await fetchIdToken(inputs.audience, env);
      return await exchange(inputs, idToken);
    } catch (err) {
      const error = err instanceof ActionError ? err : new ActionError(`Unexpected error: ${String(err)}`, false);
      if (!error.retryable || attempt >= MAX_ATTEMPTS) throw error;
      const delayMs = backoffMs(attempt, env);
      info(`Attempt ${attempt} of ${MAX_ATTEMPTS} failed: ${error.message} Retrying in ${delayMs} ms with a fresh ID token.`);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** The job's OIDC ID token for `audience`, masked as soon as it is read. */
export async function fetchIdToken(audience: string, env: NodeJS.ProcessEnv): Promise<string> {
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ActionError(
      'The job has no ID token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): this job needs `permissions: id-token: write`. Add it to the job or the workflow. Pull requests from forks never get one.',
      false,
    );
  }
  addMask(requestToken);
  let response: Response;
  try {
    response = await fetch(`${requestUrl}&audience=${encodeURIComponent(audience)}`, {
      headers: { authorization: `Bearer ${requestToken}`, accept: 'application/json' },
    });
  } catch (err) {
    throw new ActionError(`Could not reach the runner's ID token service: ${describeCause(err)}.`, true);
  }
  const text = await response.text().catch(() => '');
  if (!response.ok) {
    throw new ActionError(`The runner's ID token service answered HTTP ${response.status}.`, isRetryableStatus(response.status));
  }
  const value = parseJson(text)?.value;
  if (typeof value !== 'string' || value === '') throw new ActionError("The runner's ID token service returned no token.", true);
  addMask(value);
  return value;
}

async function exchange(inputs: ExchangeInputs, idToken: string): Promise<ExchangeResponse> {
  const body: Record<string, unknown> = { policy: inputs.policy };
  if (inputs.durationSeconds !== undefined) body.duration_seconds = inputs.durationSeconds;
  let response: Response;
  try {
    response = await fetch(`${inputs.brokerUrl.replace(/\/+$/, '')}/v1/exchange`, {
      method: 'POST',
      headers: { authorization: `Bearer ${idToken}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new ActionError(`Could not reach the broker at ${inputs.brokerUrl}: ${describeCause(err)}.`, true);
  }
  const text = await response.text().catch(() => '');
  const json = parseJson(text);
  if (response.ok) {
    const credentials = json?.credentials;
    if (!json || typeof json.issuance_id !== 'string' || typeof json.expires_at !== 'string' || !isStringRecord(credentials)) {
      // Mask whatever came back before anything can print it.
      if (isStringRecord(credentials)) maskSecrets(credentials);
      throw new ActionError(`The broker answered HTTP ${response.status} without an exchange response.`, false);
    }
    // Mask every secret before anything else can print one.
    maskSecrets(credentials);
    return json as unknown as ExchangeResponse;
  }
  throw toActionError(response.status, json, inputs);
}

/**
 * Fields of `credentials` that describe the credential rather than being it.
 * Masking them would blank every "token" or "Bearer" in the job's log; any
 * other field, known or not, is masked.
 */
const NOT_SECRET = new Set(['token_type', 'expires_at', 'Expiration']);

function maskSecrets(credentials: Record<string, string>): void {
  for (const [name, value] of Object.entries(credentials)) if (!NOT_SECRET.has(name)) addMask(value);
}

/** A broker error as a sentence naming what to change. */
export function toActionError(status: number, json: Record<string, unknown> | undefined, inputs: ExchangeInputs): ActionError {
  const code = typeof json?.error === 'string' ? json.error : undefined;
  const description = typeof json?.error_description === 'string' ? json.error_description : '';
  const requestId = typeof json?.request_id === 'string' ? ` (broker request id ${json.request_id})` : '';
  const said = description ? `: ${description}` : '.';
  const policy = JSON.stringify(inputs.policy);
  if (status === 429 || status >= 500) {
    return new ActionError(`The broker answered HTTP ${status}${code ? ` ${code}` : ''}${said}${requestId}`, true);
  }
  if (status === 401 || code === 'invalid_token') {
    if (/audience/i.test(description)) {
      return new ActionError(
        `The broker does not accept the ID token's audience ${JSON.stringify(inputs.audience)}: the audience input must be one of the broker's accepted audiences (default: broker-url)${said}${requestId}`,
        false,
      );
    }
    return new ActionError(`The broker refused the job's ID token${said}${requestId}`, false);
  }
  if (status === 403 || code === 'access_denied') {
    return new ActionError(`Policy ${policy} denied this job${said}${requestId}`, false);
  }
  if (status === 404 || code === 'unknown_policy') {
    return new ActionError(`The broker has no policy ${policy}: check the policy input${said}${requestId}`, false);
  }
  if (status === 409 || code === 'token_replayed') {
    return new ActionError(
      `The broker had already seen this ID token (token_replayed): each exchange needs a fresh ID token; re-run the step${said}${requestId}`,
      false,
    );
  }
  if (code === 'invalid_request') {
    return new ActionError(`The broker refused the request (check the duration-seconds and policy inputs)${said}${requestId}`, false);
  }
  return new ActionError(`The broker answered HTTP ${status}${code ? ` ${code}` : ''}${said}${requestId}`, false);
}

function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
}

function describeCause(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}
