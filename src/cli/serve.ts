import type { Command } from 'commander';
import { ConfigError, loadConfig, resolveConfigPath } from '../config.js';
import { listen } from '../http/server.js';
import { createLogger } from '../logger.js';
import { createBroker, type Broker } from '../main.js';
import { PolicyLoadError } from '../policy/issues.js';
import { PolicyDirError } from '../policy/load.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('Start the HTTP server.')
    .option('-c, --config <file>', 'config file (default: $BROKER_CONFIG, else ./broker.yaml, else built-in development defaults)')
    .action(async (options: { config?: string }) => {
      const logger = createLogger();
      // SIGHUP re-reads the policy directory (the reloader logs the outcome; a failure keeps the last good set).
      // Installed before anything else and kept while shutting down: without a handler, SIGHUP kills the process.
      let broker: Broker | undefined;
      let sighupWhileStarting = false;
      let stopping = false;
      const onSighup = () => {
        const action = stopping ? 'ignored: shutting down' : broker ? 'reload policies' : 'reload policies once started';
        logger.info('signal received', { signal: 'SIGHUP', action });
        if (stopping) return;
        if (broker) void broker.reloadPolicies('sighup');
        else sighupWhileStarting = true;
      };
      process.on('SIGHUP', onSighup);
      let running;
      try {
        const config = await loadConfig(resolveConfigPath(options.config));
        logger.info('config loaded', { source: config.source });
        broker = await createBroker(config, { logger });
        if (sighupWhileStarting) void broker.reloadPolicies('sighup');
        running = await listen(broker, { host: config.server.host, port: config.server.port, logger });
      } catch (err) {
        process.off('SIGHUP', onSighup);
        if (err instanceof ConfigError || err instanceof PolicyLoadError || err instanceof PolicyDirError) {
          logger.error('cannot start', { error: err.message });
          process.stderr.write(`oidc-broker: cannot start:\n${err.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw err;
      }
      const server = running;
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          logger.info('signal received', { signal });
          stopping = true;
          server.shutdown().then(resolve, (err: unknown) => {
            logger.error('shutdown failed', { error: err instanceof Error ? err.message : String(err) });
            process.exitCode = 1;
            resolve();
          });
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });
}
