import { inspect } from 'node:util';
import winston from 'winston';

export type Logger = winston.Logger;

/**
 * JSON lines on stdout (or a silent logger for tests). Callers pass structured
 * fields, never a token or a credential: records hold `token_sha256` instead.
 */
export function createLogger(options: { level?: string; silent?: boolean; stream?: NodeJS.WritableStream } = {}): Logger {
  return winston.createLogger({
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
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

/** Name and message (and stack for bugs) of a cause; upstream bodies never reach the client, only this log. */
export function errorSummary(err: unknown, withStack = false): Record<string, unknown> | undefined {
  if (err === undefined) return undefined;
  if (!(err instanceof Error)) return { value: inspect(err, { depth: 2, breakLength: Infinity }) };
  return { name: err.name, message: err.message, ...(withStack ? { stack: err.stack } : {}) };
}
