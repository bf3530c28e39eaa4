import { ConfigError, loadAuditToolConfig, loadConfig, resolveConfigPath, type AuditToolConfig, type BrokerConfig } from '../config.js';
import { CliExit, type CliIo } from './process-io.js';

export { CliExit, PROCESS_IO, type CliIo, type CliSignals, type CliStream } from './process-io.js';

/**
 * True when output must be plain ASCII text without colour or glyphs (✓ ✗ —):
 * `NO_COLOR` is set to anything but the empty string, or stdout is not a
 * terminal (a pipe, a file, a CI log), where glyphs end up in tools that may
 * not expect them (README.md#cli).
 */
export function isPlainOutput(io: CliIo): boolean {
  return (io.env.NO_COLOR ?? '') !== '' || io.stdout.isTTY !== true;
}

/** The config a command runs against (`-c FILE`, $BROKER_CONFIG, ./broker.yaml or the dev defaults); a bad one ends the command with exit 1. */
export function readConfig(file: string | undefined): Promise<BrokerConfig> {
  return configOrExit(loadConfig, file);
}

/** Only the keys of that config the audit commands read (loadAuditToolConfig); a bad one ends the command with exit 1. */
export function readAuditToolConfig(file: string | undefined): Promise<AuditToolConfig> {
  return configOrExit(loadAuditToolConfig, file);
}

async function configOrExit<T>(load: (configPath: string | undefined) => Promise<T>, file: string | undefined): Promise<T> {
  try {
    return await load(resolveConfigPath(file));
  } catch (err) {
    if (err instanceof ConfigError) throw new CliExit(1, `cannot load the config:\n${err.message}`);
    throw err;
  }
}
