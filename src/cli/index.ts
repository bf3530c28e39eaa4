import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerAuditCommands } from './audit.js';
import { registerDevCommands } from './dev.js';
import { registerExchangeCommand } from './exchange.js';
import { PROCESS_IO, type CliIo } from './io.js';
import { registerKeysCommands } from './keys.js';
import { registerPolicyCommands } from './policy.js';
import { runProgram } from './run.js';
import { addVersion } from './version.js';
import { registerServeCommand } from './serve.js';

/**
 * Runs the CLI (README.md#cli) and resolves to the process exit code.
 * `argv` is node-style (`[node, script, ...args]`); `io` is where commander and
 * every command read, write and hear signals (the process's by default).
 */
export async function runCli(argv: string[], io: CliIo = PROCESS_IO): Promise<number> {
  const program = new Command('oidc-broker')
    .description('Exchange CI OIDC tokens for short-lived, policy-scoped credentials.')
    .exitOverride()
    .configureOutput({ writeOut: (text) => io.stdout.write(text), writeErr: (text) => io.stderr.write(text) })
    .showHelpAfterError();
  registerServeCommand(program, io);
  registerPolicyCommands(program, io);
  registerKeysCommands(program, io);
  registerAuditCommands(program, io);
  registerDevCommands(program, io);
  registerExchangeCommand(program, io);
  addVersion(program, packageVersion());
  return runProgram(program, argv, io);
}

/** The `version` of the package.json beside src/ and dist/. */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
