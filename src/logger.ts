import winston from 'winston';

export type Logger = winston.Logger;

/**
 * JSON lines on stdout (or a silent logger for tests). Callers pass structured
 * fields, never a token or a credential: records hold `token_sha256` instead.
 */
export function createLogger(options: { level?: string; silent?: boolean } = {}): Logger {
  return winston.createLogger({
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    silent: options.silent ?? false,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}

/** A logger that drops everything; for tests and offline CLI commands. */
export function createSilentLogger(): Logger {
  return createLogger({ silent: true });
}
