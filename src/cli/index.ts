import { Command, CommanderError } from 'commander';
import { registerDevCommands } from './dev.js';
import { registerKeysCommands } from './keys.js';
import { registerPolicyCommands } from './policy.js';
import { registerServeCommand } from './serve.js';

/** Runs the CLI (contract section 6) and resolves to the process exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = new Command('oidc-broker')
    .description('Exchange CI OIDC tokens for short-lived, policy-scoped credentials.')
    .exitOverride()
    .showHelpAfterError();
  registerServeCommand(program);
  registerPolicyCommands(program);
  registerKeysCommands(program);
  registerDevCommands(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`oidc-broker: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
