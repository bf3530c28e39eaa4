import type { Command } from 'commander';

/**
 * `--version` on the program and on every command under it (README.md#cli):
 * `oidc-broker policy validate --version` prints the version like
 * `oidc-broker --version`. Only the program has `-V` too: under a command it
 * could be the start of a value (`keys retire` takes a kid that may begin with `-`).
 */
export function addVersion(command: Command, version: string): void {
  command.version(version, command.parent === null ? '-V, --version' : '--version', 'print the oidc-broker version');
  for (const sub of command.commands) addVersion(sub, version);
}
