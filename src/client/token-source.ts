/**
 * Where the job's CI token comes from (docs/ci/exchange.md#token-sources). A
 * source is called once per attempt, so a source that can mint (GitHub
 * Actions' ID-token service, a command) sends a fresh token each time: the
 * broker accepts a token once per policy, and a failed attempt may have spent
 * it.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { ClientError, describeCause, isRetryableStatus } from './errors.js';

export type TokenSource = () => Promise<string>;

/** A token larger than this is not a CI token; the broker refuses anything past 16 KiB too. */
const MAX_TOKEN_BYTES = 16 * 1024;
const ID_TOKEN_TIMEOUT_MS = 10_000;

/** A token file (GitLab `id_tokens` written to a file, a mounted Kubernetes token), read again on every attempt since CIs refresh such files. */
export function tokenFromFile(file: string): TokenSource {
  return async () => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new ClientError(`Cannot read the token file ${file}: ${(err as NodeJS.ErrnoException).code ?? describeCause(err)}.`, false);
    }
    return checkToken(text.trim(), `The token file ${file}`);
  };
}

/** An environment variable (GitLab `id_tokens:`, CircleCI `CIRCLE_OIDC_TOKEN_V2`). */
export function tokenFromEnv(name: string, env: NodeJS.ProcessEnv): TokenSource {
  return async () => checkToken((env[name] ?? '').trim(), `The environment variable ${name}`);
}

/**
 * A command's stdout, run with `sh -c` for every attempt: CIs that mint with a
 * CLI (`buildkite-agent oidc request-token`, `circleci run oidc get`) give a
 * fresh token each time. Its stderr goes to ours; its stdout is never shown.
 */
export function tokenFromCommand(command: string, env: NodeJS.ProcessEnv): TokenSource {
  return async () => {
    const stdout = await new Promise<string>((resolve, reject) => {
      const child = execFile('/bin/sh', ['-c', command], { env, maxBuffer: MAX_TOKEN_BYTES, timeout: ID_TOKEN_TIMEOUT_MS }, (err, out) => {
        if (!err) return resolve(out);
        const code = (err as { code?: unknown }).code;
        reject(new ClientError(`The token command failed (${typeof code === 'number' ? `exit ${code}` : describeCause(err)}); see its output above.`, false));
      });
      child.stderr?.pipe(process.stderr);
    });
    return checkToken(stdout.trim(), 'The token command');
  };
}

/**
 * GitHub Actions' ID-token service: `ACTIONS_ID_TOKEN_REQUEST_URL` with the
 * bearer `ACTIONS_ID_TOKEN_REQUEST_TOKEN` and `&audience=`. The runner sets
 * both only for jobs with `permissions: id-token: write`.
 */
export function tokenFromGitHubActions(audience: string, env: NodeJS.ProcessEnv): TokenSource {
  return async () => {
    const { requestUrl, requestToken } = gitHubIdTokenRequest(env);
    let response: Response;
    try {
      response = await fetch(`${requestUrl}&audience=${encodeURIComponent(audience)}`, {
        headers: { authorization: `Bearer ${requestToken}`, accept: 'application/json' },
        signal: AbortSignal.timeout(ID_TOKEN_TIMEOUT_MS),
      });
    } catch (err) {
      throw new ClientError(`Could not reach the runner's ID token service: ${describeCause(err)}.`, true);
    }
    const text = await response.text().catch(() => '');
    if (!response.ok) throw new ClientError(`The runner's ID token service answered HTTP ${response.status}.`, isRetryableStatus(response.status));
    let value: unknown;
    try {
      value = (JSON.parse(text) as { value?: unknown } | null)?.value;
    } catch {
      value = undefined;
    }
    if (typeof value !== 'string' || value === '') throw new ClientError("The runner's ID token service returned no token.", true);
    return value;
  };
}

/**
 * The runner's request URL and token.
 * @throws ClientError naming the missing permission
 */
export function gitHubIdTokenRequest(env: NodeJS.ProcessEnv): { requestUrl: string; requestToken: string } {
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ClientError(
      'The job has no ID token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): this job needs `permissions: id-token: write`. Add it to the job or the workflow. Pull requests from forks never get one.',
      false,
    );
  }
  return { requestUrl, requestToken };
}

function checkToken(token: string, where: string): string {
  if (token === '') throw new ClientError(`${where} is empty: no CI token to exchange.`, false);
  if (Buffer.byteLength(token) > MAX_TOKEN_BYTES || /\s/.test(token)) throw new ClientError(`${where} does not hold a CI token (one JWT, at most 16 KiB).`, false);
  return token;
}
