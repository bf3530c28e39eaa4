import { ConfigError, loadConfig, resolveConfigPath, type BrokerConfig } from '../config.js';
import { CliExit } from './process-io.js';

export { CliExit, PROCESS_IO, type CliIo, type CliSignals, type CliStream } from './process-io.js';

/** The config a command runs against (`-c FILE`, $BROKER_CONFIG, ./broker.yaml or the dev defaults); a bad one ends the command with exit 1. */
export async function readConfig(file: string | undefined): Promise<BrokerConfig> {
  try {
    return await loadConfig(resolveConfigPath(file));
  } catch (err) {
    if (err instanceof ConfigError) throw new CliExit(1, `cannot load the config:\n${err.message}`);
    throw err;
  }
}
