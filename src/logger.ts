import { inspect } from 'node:util';
import winston from 'winston';

export type Logger = winston.Logger;

/** winston's levels, most severe first: a logger at one level writes it and those before it (docs/operations.md#logging). */
export const LOG_LEVELS = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A `LOG_LEVEL` that names no level: winston would silently write nothing at all. */
export class LogLevelError extends Error {
  override name = 'LogLevelError';
}

/**
 * `LOG_LEVEL` as an operator writes it, in any case (`DEBUG`, `Info`);
 * unset or empty is `info`.
 * @throws LogLevelError when it names no level.
 */
export function parseLogLevel(value: string | undefined): LogLevel {
  if (value === undefined || value === '') return 'info';
  const level = LOG_LEVELS.find((name) => name === value.toLowerCase());
  if (level === undefined) throw new LogLevelError(`environment LOG_LEVEL: expected one of ${LOG_LEVELS.join(', ')} (in any case), got '${value}'`);
  return level;
}

/**
 * JSON lines on stdout (or a silent logger for tests). Callers pass structured
 * fields, never a token or a credential: records hold `token_sha256` instead.
 * The level is `info` unless given: the CLI reads `LOG_LEVEL` (cli/log.ts).
 */
export function createLogger(options: { level?: LogLevel; silent?: boolean; stream?: NodeJS.WritableStream } = {}): Logger {
  return winston.createLogger({
    level: options.level ?? 'info',
    silent: options.silent ?? false,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), messageAsMsg(), winston.format.json()),
    transports: [options.stream ? new winston.transports.Stream({ stream: options.stream }) : new winston.transports.Console()],
  });
}

/** README.md#quick-start: the listening line is `"msg":"listening"`, so every line carries `msg`, not winston's `message`. */
const messageAsMsg = winston.format((info) => {
  const { message, ...rest } = info;
  return Object.assign(rest, { msg: message }) as unknown as winston.Logform.TransformableInfo;
});

/** How many causes deep errorSummary follows a chain: a driver error under a store error under a refusal. */
const MAX_CAUSE_DEPTH = 4;

/**
 * Name, message, code (SQLSTATE, SQLITE_*, errno) and reason of an error, and its
 * causes down to the root the same way (and the stack for bugs); upstream
 * bodies never reach the client, only this log. Messages are logged as
 * their errors hold them: whoever wraps a foreign error keeps secrets out of
 * it (the audit store's `sanitize`).
 */
export function errorSummary(err: unknown, withStack = false): Record<string, unknown> | undefined {
  if (err === undefined) return undefined;
  if (!(err instanceof Error)) return { value: inspect(err, { depth: 2, breakLength: Infinity }) };
  return summarize(err, withStack, 0);
}

function summarize(err: Error, withStack: boolean, depth: number): Record<string, unknown> {
  const code = (err as { code?: unknown }).code;
  // Only errors are followed: another value as a cause could be anything, a config object say.
  const cause = depth < MAX_CAUSE_DEPTH && err.cause instanceof Error ? summarize(err.cause, withStack, depth + 1) : undefined;
  const reason = (err as { reason?: unknown }).reason;
  return {
    name: err.name,
    message: err.message,
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    ...(typeof reason === 'string' ? { reason } : {}),
    ...(withStack ? { stack: err.stack } : {}),
    ...(cause === undefined ? {} : { cause }),
  };
}
