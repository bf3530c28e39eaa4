import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { generateSigningJwk } from '../keys/signing-key.js';
import { CliExit, type CliIo } from './io.js';

export function registerKeysCommands(program: Command, io: CliIo): void {
  const keys = program.command('keys').description('Manage the broker signing key.');
  keys
    .command('generate')
    .description('Generate a new ES256 signing key (a private JWK). Without --out it is printed to stdout.')
    .option('-o, --out <file>', 'write it to this file (mode 0600; refuses to overwrite)')
    .action(async (options: { out?: string }) => {
      const jwk = await generateSigningJwk();
      const text = `${JSON.stringify(jwk)}\n`;
      if (!options.out) {
        io.stdout.write(text);
        return;
      }
      try {
        await writeFile(options.out, text, { mode: 0o600, flag: 'wx' });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CliExit(1, `${options.out} already exists; move it away first (a key is never overwritten)`);
        throw err;
      }
      io.stderr.write(`wrote signing key ${jwk.kid} to ${options.out}\n`);
    });
}
