// The streams, signals and exit of a CLI run, apart from the config (io.ts) so the single-file exchange bundle (client/src/main.ts) loads nothing of the server.
import type { Readable, Writable } from 'node:stream';

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
