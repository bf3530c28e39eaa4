import type { Command } from 'commander';
import { startDevIssuer } from '../dev/issuer.js';
import type { CliIo } from './io.js';
import { commandLogger } from './log.js';

/** The claims `policies/local-dev.yaml` requires, for the start-up hint; `sub` follows from them (dev/issuer.ts). */
const EXAMPLE_CLAIMS = { repository: 'acme/api', ref: 'refs/heads/main' };

export function registerDevCommands(program: Command, io: CliIo): void {
  const dev = program.command('dev').description('Development helpers. Never expose them beyond loopback.');
  dev
    .command('issuer')
    .description('Run a local OIDC issuer (discovery, JWKS, and POST /token with a JSON body to mint test tokens) on loopback; it answers only Host 127.0.0.1, [::1] or localhost with its port.')
    .option('-p, --port <port>', 'port', '8081')
    .option('--key-file <file>', 'keep the issuer key here across restarts', './data/dev-issuer-key.jwk')
    .action(async (options: { port: string; keyFile: string }) => {
      const logger = commandLogger(io);
      // Listened for before the "listening" line: a process without a handler is killed outright by the signal.
      const stopped = new Promise<void>((resolve) => {
        io.signals.once('SIGTERM', () => resolve());
        io.signals.once('SIGINT', () => resolve());
      });
      const issuer = await startDevIssuer({ host: '127.0.0.1', port: Number(options.port), keyFile: options.keyFile });
      // `?format=raw` answers the bare token, so the hint works in `TOKEN=$(...)` with no JSON tool (README.md#your-first-exchange).
      logger.info('dev issuer listening', {
        url: issuer.url,
        mint: `curl -s -X POST '${issuer.url}/token?format=raw' -H 'content-type: application/json' -d '${JSON.stringify(EXAMPLE_CLAIMS)}'`,
      });
      await stopped;
      await issuer.close();
    });
}
