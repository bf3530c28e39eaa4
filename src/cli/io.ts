import type { Writable } from 'node:stream';
import { ConfigError, loadConfig, resolveConfigPath, type BrokerConfig } from '../config.js';

/** An output stream of the CLI: process.stdout/stderr, or a stream with the same TTY facts (tests). */
export type CliStream = Writable & { isTTY?: boolean; columns?: number };

/** Where a CLI run writes; commands that stream output take it so they can be run in-process. */
export interface CliIo {
  stdout: CliStream;
  stderr: CliStream;
}

export const PROCESS_IO: CliIo = { stdout: process.stdout, stderr: process.stderr };

/**
 * Ends a command with `exitCode`; runCli prints `message` (if any) to stderr
 * as `oidc-broker: <message>` and returns the code. For expected outcomes
 * (a broken chain, bad input) that are not bugs.
 */
export class CliExit extends Error {
  override name = 'CliExit';
  constructor(
    readonly exitCode: number,
    message = '',
  ) {
    super(message);
  }
}

/** The config a command runs against (`-c FILE`, $BROKER_CONFIG, ./broker.yaml or the dev defaults); a bad one ends the command with exit 1. */
export async function readConfig(file: string | undefined): Promise<BrokerConfig> {
  try {
    return await loadConfig(resolveConfigPath(file));
  } catch (err) {
    if (err instanceof ConfigError) throw new CliExit(1, `cannot load the config:\n${err.message}`);
    throw err;
  }
}
