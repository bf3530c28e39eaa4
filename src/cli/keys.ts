import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { AuditToolConfig } from '../config.js';
import {
  generateSigningJwk,
  KeyChangeRefusedError,
  loadSigningKeySet,
  retireSigningKey,
  rotateSigningKey,
  SigningKeyFileError,
  SigningKeyMissingError,
  type SigningKeySet,
} from '../keys/signing-key.js';
import { KEY_RELOAD_INTERVAL_MS } from '../keys/reload.js';
import { CliExit, readConfig, type CliIo } from './io.js';

const CONFIG_HELP = 'config file (default: $BROKER_CONFIG, else ./broker.yaml, else built-in development defaults)';

/** `oidc-broker keys generate|rotate|retire|list` (README.md#cli); the key file is providers.jwt.signing_key_file (docs/configuration.md). */
export function registerKeysCommands(program: Command, io: CliIo): void {
  const keys = program.command('keys').description('Manage the broker signing keys (providers.jwt.signing_key_file).');
  keys
    .command('generate')
    .description("Generate a new ES256 signing key (a private JWK). Without --out, or with '--out -', it is printed to stdout.")
    .option('-o, --out <file>', "write it to this file (mode 0600; refuses to overwrite); '-' is stdout")
    .addHelpText(
      'after',
      `
On stdout the key is the only output (one line of JSON), so it can be piped
into a secret store; what is said about it goes to stderr.

Examples:
  oidc-broker keys generate --out /app/data/signing-key.jwk
  oidc-broker keys generate --out - | kubectl create secret generic broker-signing-key --from-file=signing-key.jwk=/dev/stdin`,
    )
    .action(async (options: { out?: string }) => {
      const jwk = await generateSigningJwk();
      const text = `${JSON.stringify(jwk)}\n`;
      if (!options.out || options.out === '-') {
        io.stdout.write(text);
        io.stderr.write(`generated signing key ${jwk.kid} on stdout: a private key, keep it out of logs and store it with mode 0600\n`);
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

  const RELOAD_NOTE = `Running brokers read the key file every ${KEY_RELOAD_INTERVAL_MS / 1000} s and on SIGHUP.`;
  keys
    .command('rotate')
    .description('Make a new active signing key; the active key becomes published (still in the JWKS, verification only).')
    .option('-c, --config <file>', CONFIG_HELP)
    .addHelpText(
      'after',
      `
The key file is replaced atomically (a temporary file in its directory, then a
rename), so the command needs write access to that directory. ${RELOAD_NOTE}
Retire the previous key with 'oidc-broker keys retire KID' once the tokens it
signed have expired.

Exit codes: 0 rotated; 1 error (config, key file missing, invalid or not writable).`,
    )
    .action(async (options: { config?: string }) => {
      const config = await readConfig(options.config);
      const { kid, previous } = await onKeyFile(config, (file) => rotateSigningKey(file));
      io.stdout.write(`new active key ${kid}; ${previous} is now published (served in the JWKS until retired). ${RELOAD_NOTE}\n`);
    });

  keys
    .command('retire')
    .description('Stop publishing a previous key in the JWKS; it still verifies the audit checkpoints it signed.')
    .argument('<kid>', "the key's kid ('oidc-broker keys list')")
    .option('-c, --config <file>', CONFIG_HELP)
    // A kid is a base64url thumbprint and may begin with '-': an unknown "option" is the kid.
    .allowUnknownOption()
    .addHelpText(
      'after',
      `
A kid that begins with '-' may be given as it is, or after '--'
('oidc-broker keys retire -c broker.yaml -- -W2rb...').

Tokens signed by a retired key no longer verify with the broker's JWKS. The
active key cannot be retired: rotate first. ${RELOAD_NOTE}

Exit codes: 0 retired (or retired already); 1 error (the active key, an
unknown kid, config, key file missing, invalid or not writable).`,
    )
    .action(async (kid: string, options: { config?: string }) => {
      const config = await readConfig(options.config);
      const changed = await onKeyFile(config, (file) => retireSigningKey(file, kid));
      io.stdout.write(changed ? `retired ${kid}: no longer in the JWKS; it still verifies audit checkpoints. ${RELOAD_NOTE}\n` : `${kid} was retired already; nothing changed\n`);
    });

  keys
    .command('list')
    .description('Show each key: kid, state (active, published, retired) and creation time.')
    .option('--jwks', 'print the public keys as a JWKS instead (the active and published keys, as /.well-known/jwks.json serves them)')
    .option('--include-retired', "with --jwks: add the retired keys, for 'oidc-broker audit verify --jwks' (checkpoints they signed)")
    .option('-c, --config <file>', CONFIG_HELP)
    .action(async (options: { jwks?: boolean; includeRetired?: boolean; config?: string }) => {
      if (options.includeRetired === true && options.jwks !== true) throw new CliExit(1, '--include-retired applies only with --jwks');
      const config = await readConfig(options.config);
      const set = await readKeySet(config);
      if (options.jwks === true) {
        const keys = options.includeRetired === true ? set.entries.map((e) => e.publicJwk) : set.jwks.keys;
        io.stdout.write(`${JSON.stringify({ keys })}\n`);
        return;
      }
      const rows = [['KID', 'STATE', 'CREATED'], ...set.entries.map((e) => [e.kid, e.state, e.createdAt ?? 'unknown'])];
      const width = Math.max(...rows.map((r) => r[0]!.length));
      io.stdout.write(rows.map(([kid, state, created]) => `${kid!.padEnd(width)}  ${state!.padEnd(9)}  ${created}`).join('\n') + '\n');
    });
}

/** Reads providers.jwt.signing_key_file read-only (never creates it), for the keys and audit commands. */
export function readKeySet(config: AuditToolConfig, why = ''): Promise<SigningKeySet> {
  return onKeyFile(config, loadSigningKeySet, why);
}

/** Runs `action` on the configured key file; its failures end the command with exit 1 and a message that names the file. */
async function onKeyFile<T>(config: AuditToolConfig, action: (file: string) => Promise<T>, why = ''): Promise<T> {
  const file = config.providers.jwt.signingKeyFile;
  try {
    return await action(file);
  } catch (err) {
    if (err instanceof SigningKeyMissingError) throw new CliExit(1, `the signing key ${file} does not exist (providers.jwt.signing_key_file of ${config.source})${why}`);
    if (err instanceof SigningKeyFileError || err instanceof KeyChangeRefusedError) throw new CliExit(1, err.message);
    throw err;
  }
}
