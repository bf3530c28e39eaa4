import type { Readable, Writable } from 'node:stream';
import { ConfigError, loadAuditToolConfig, loadConfig, resolveConfigPath, type AuditToolConfig, type BrokerConfig } from '../config.js';

/** An output stream of the CLI: process.stdout/stderr, or a stream with the same TTY facts (tests). */
export type CliStream = Writable & { isTTY?: boolean; columns?: number };

/** Where the long-running commands (serve, dev issuer) hear SIGTERM, SIGINT and SIGHUP: the process, or an emitter a test raises them on. */
export interface CliSignals {
  on(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
  once(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
  off(signal: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
}

/**
 * The streams and signals of a CLI run. Every command reads and writes through
 * it and ends through {@link CliExit} (never `process.exitCode`), so any
 * command can run in-process with streams and signals a test controls.
 */
export interface CliIo {
  stdout: CliStream;
  stderr: CliStream;
  /** What `-` arguments read (`policy explain --claims -`). */
  stdin: Readable;
  signals: CliSignals;
  /** The environment the command reads (`NO_COLOR`, `OIDC_BROKER_AUDITOR_TOKEN`). */
  env: NodeJS.ProcessEnv;
}

export const PROCESS_IO: CliIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, signals: process, env: process.env };

/**
 * True when output must be plain ASCII text without colour or glyphs (✓ ✗ —):
 * `NO_COLOR` is set to anything but the empty string, or stdout is not a
 * terminal (a pipe, a file, a CI log), where glyphs end up in tools that may
 * not expect them (README.md#cli).
 */
export function isPlainOutput(io: CliIo): boolean {
  return (io.env.NO_COLOR ?? '') !== '' || io.stdout.isTTY !== true;
}

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
