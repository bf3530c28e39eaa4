import { createLogger, LogLevelError, parseLogLevel, type Logger } from '../logger.js';
import { CliExit, type CliIo } from './io.js';

/**
 * The JSON logger of a command that logs (serve, dev issuer), at `LOG_LEVEL`
 * (docs/configuration.md). A level that names none ends the command before
 * it starts, as a bad config does (docs/configuration.md#errors-at-start): a
 * `cannot start` line (from a logger at the default level) and exit code 1.
 */
export function commandLogger(io: CliIo): Logger {
  let level;
  try {
    level = parseLogLevel(process.env.LOG_LEVEL);
  } catch (err) {
    if (!(err instanceof LogLevelError)) throw err;
    createLogger({ stream: io.stdout }).error('cannot start', { error: err.message });
    throw new CliExit(1, `cannot start:\n${err.message}`);
  }
  return createLogger({ stream: io.stdout, level });
}
