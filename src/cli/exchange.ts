import { CommanderError, Option, type Command } from 'commander';
import { toBrokerUrl } from '../client/broker-url.js';
import { ClientError } from '../client/errors.js';
import { exchangeWithRetry, type ExchangeFormat } from '../client/exchange.js';
import { DEFAULT_RETRY, type RetryOptions } from '../client/retry.js';
import { tokenFromCommand, tokenFromEnv, tokenFromFile, tokenFromGitHubActions, type TokenSource } from '../client/token-source.js';
import { CliExit, type CliIo } from './process-io.js';

interface ExchangeOptions {
  url?: string;
  policy?: string;
  duration?: string;
  tokenFile?: string;
  tokenEnv?: string;
  tokenCommand?: string;
  githubActions?: boolean;
  audience?: string;
  format: string;
  maxAttempts: string;
  retryBaseDelay: string;
  maxRetryDelay: string;
}

const FORMATS: Readonly<Record<string, ExchangeFormat>> = { json: 'json', env: 'env', 'credential-process': 'credential_process', credential_process: 'credential_process' };
const TOKEN_SOURCES = ['tokenFile', 'tokenEnv', 'tokenCommand', 'githubActions'] as const;
const EXIT_USAGE = 2;

/**
 * `oidc-broker exchange` (docs/ci/exchange.md): the client for any CI. Also
 * the whole of the single-file bundle (client/src/main.ts), so it imports
 * nothing of the server.
 */
export function registerExchangeCommand(program: Command, io: CliIo): void {
  program
    .command('exchange')
    .description("Exchange this CI job's OIDC token at a broker and print the credential (stdout only).")
    .addOption(new Option('--url <url>', "the broker's base URL").env('OIDC_BROKER_URL'))
    .addOption(new Option('--policy <name>', 'the policy to exchange under').env('OIDC_BROKER_POLICY'))
    .option('--duration <seconds>', "requested lifetime (the policy's maximum caps it)")
    .option('--token-file <file>', 'read the CI token from this file (again on every attempt)')
    .option('--token-env <var>', 'read the CI token from this environment variable')
    .option('--token-command <command>', 'run this shell command for a fresh CI token on every attempt (e.g. buildkite-agent oidc request-token --audience URL)')
    .option('--github-actions', "request a fresh token from GitHub Actions' ID-token service on every attempt (needs permissions: id-token: write)")
    .option('--audience <aud>', 'with --github-actions: the audience to request (default: --url without a trailing slash)')
    .option('--format <format>', 'json | env (shell export lines) | credential-process (AWS CLI, Version 1)', 'json')
    .option('--max-attempts <n>', 'attempts in all; only network errors, 5xx and 429 are retried', String(DEFAULT_RETRY.maxAttempts))
    .option('--retry-base-delay <seconds>', 'wait before the second attempt, doubled for each later one (with jitter)', String(DEFAULT_RETRY.baseDelayMs / 1000))
    .option('--max-retry-delay <seconds>', "longest wait between attempts, the broker's Retry-After included", String(DEFAULT_RETRY.maxDelayMs / 1000))
    .addHelpText(
      'after',
      `
Exactly one of --token-file, --token-env, --token-command, --github-actions.
The credential goes to stdout only; stderr gets retries and refusals, never a
credential or token.

Exit codes: 0 exchanged; 1 refused or failed (the broker's error code and
reason on stderr); 2 usage error.`,
    )
    .exitOverride((err) => {
      // Bad flags are usage errors (2), like the checks below; help and the like keep their code.
      throw err.exitCode === 0 ? err : new CommanderError(EXIT_USAGE, err.code, err.message);
    })
    .action(async (options: ExchangeOptions) => {
      const { request, retry } = toRequest(options, process.env);
      try {
        const answer = await exchangeWithRetry(request, retry, {
          onRetry: (attempt, maxAttempts, error, delayMs) =>
            io.stderr.write(`oidc-broker: attempt ${attempt} of ${maxAttempts} failed: ${error.message} Retrying in ${delayMs} ms.\n`),
        });
        io.stdout.write(answer.body.endsWith('\n') ? answer.body : `${answer.body}\n`);
      } catch (err) {
        if (err instanceof ClientError) throw new CliExit(1, err.message);
        throw err;
      }
    });
}

/** The checked request and retry settings; every mistake is a usage error (exit 2). */
function toRequest(options: ExchangeOptions, env: NodeJS.ProcessEnv) {
  const usage = (message: string) => new CliExit(EXIT_USAGE, `exchange: ${message}`);
  if (!options.url) throw usage('--url (or OIDC_BROKER_URL) is required.');
  if (!options.policy) throw usage('--policy (or OIDC_BROKER_POLICY) is required.');
  let brokerUrl: string;
  try {
    brokerUrl = toBrokerUrl(options.url, '--url');
  } catch (err) {
    throw usage((err as Error).message);
  }
  const sources = TOKEN_SOURCES.filter((name) => options[name] !== undefined);
  if (sources.length !== 1) throw usage(`give exactly one of --token-file, --token-env, --token-command, --github-actions (got ${sources.length}).`);
  if (options.audience !== undefined && !options.githubActions) throw usage('--audience is for --github-actions; other sources carry the audience their CI minted.');
  const format = FORMATS[options.format];
  if (format === undefined) throw usage(`--format must be json, env or credential-process, not ${JSON.stringify(options.format)}.`);
  const retry: RetryOptions = {
    maxAttempts: wholeNumber(options.maxAttempts, '--max-attempts', 1, 10),
    baseDelayMs: seconds(options.retryBaseDelay, '--retry-base-delay') * 1000,
    maxDelayMs: seconds(options.maxRetryDelay, '--max-retry-delay') * 1000,
  };
  const token: TokenSource = options.tokenFile
    ? tokenFromFile(options.tokenFile)
    : options.tokenEnv
      ? tokenFromEnv(options.tokenEnv, env)
      : options.tokenCommand
        ? tokenFromCommand(options.tokenCommand, env)
        : tokenFromGitHubActions(options.audience ?? brokerUrl, env);
  const durationSeconds = options.duration === undefined ? undefined : wholeNumber(options.duration, '--duration', 1, 999_999_999);
  return { request: { brokerUrl, policy: options.policy, durationSeconds, format, token }, retry };

  function wholeNumber(value: string, flag: string, min: number, max: number): number {
    const n = /^[0-9]{1,9}$/.test(value) ? Number(value) : NaN;
    if (!(n >= min && n <= max)) throw usage(`${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}.`);
    return n;
  }
  function seconds(value: string, flag: string): number {
    const n = /^[0-9]{1,6}(\.[0-9]{1,3})?$/.test(value) ? Number(value) : NaN;
    if (!(n >= 0 && n <= 3600)) throw usage(`${flag} must be a number of seconds from 0 to 3600, not ${JSON.stringify(value)}.`);
    return n;
  }
}
