import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { generateSigningJwk } from '../keys/signing-key.js';

export function registerKeysCommands(program: Command): void {
  const keys = program.command('keys').description('Manage the broker signing key.');
  keys
    .command('generate')
    .description('Generate a new ES256 signing key (a private JWK). Without --out it is printed to stdout.')
    .option('-o, --out <file>', 'write it to this file (mode 0600; refuses to overwrite)')
    .action(async (options: { out?: string }) => {
      const jwk = await generateSigningJwk();
      const text = `${JSON.stringify(jwk)}\n`;
      if (!options.out) {
        process.stdout.write(text);
        return;
      }
      try {
        await writeFile(options.out, text, { mode: 0o600, flag: 'wx' });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${options.out} already exists; move it away first (a key is never overwritten)`);
        throw err;
      }
      process.stderr.write(`wrote signing key ${jwk.kid} to ${options.out}\n`);
    });
}
