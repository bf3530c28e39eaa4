import { CommanderError, type Command } from 'commander';
import { CliExit, type CliIo } from './process-io.js';

/**
 * Parses `argv` with `program` (which must use `exitOverride`) and resolves to
 * the exit code: a {@link CliExit}'s, commander's, or 1 for anything else,
 * with the message on stderr as `oidc-broker: <message>`. Shared by the CLI
 * and the single-file exchange bundle (client/src/main.ts).
 */
export async function runProgram(program: Command, argv: string[], io: CliIo): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof CliExit) {
      if (err.message !== '') io.stderr.write(`oidc-broker: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr.write(`oidc-broker: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
