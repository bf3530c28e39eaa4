import type { Command } from 'commander';
import { ConfigError, loadConfig, resolveConfigPath } from '../config.js';
import { errorSummary } from '../logger.js';
import type { Broker } from '../main.js';
import { PolicyLoadError } from '../policy/issues.js';
import { PolicyDirError } from '../policy/load.js';
import { CliExit, type CliIo } from './io.js';
import { commandLogger } from './log.js';

export function registerServeCommand(program: Command, io: CliIo): void {
  program
    .command('serve')
    .description('Start the HTTP server.')
    .option('-c, --config <file>', 'config file (default: $BROKER_CONFIG, else ./broker.yaml, else built-in development defaults)')
    .action(async (options: { config?: string }) => {
      const logger = commandLogger(io);
      // SIGHUP re-reads the policy directory and the signing key file (each reloader logs its outcome; a failure keeps the last good set or keys).
      // Installed before anything else and kept while shutting down: without a handler, SIGHUP kills the process.
      let broker: Broker | undefined;
      let sighupWhileStarting = false;
      let stopping = false;
      const onSighup = () => {
        const action = stopping ? 'ignored: shutting down' : broker ? 'reload policies and signing keys' : 'reload policies and signing keys once started';
        logger.info('signal received', { signal: 'SIGHUP', action });
        if (stopping) return;
        if (broker) reloadAll(broker);
        else sighupWhileStarting = true;
      };
      io.signals.on('SIGHUP', onSighup);
      // SIGTERM and SIGINT too, before anything else: a process without a handler is killed outright by the
      // signal, so one sent just after the "listening" line, before a later handler exists, would skip the
      // graceful shutdown. A signal while starting stops the broker as soon as it has started.
      let onStop = (signal: NodeJS.Signals) => {
        if (stopWhenStarted !== undefined) return logger.info('signal received', { signal, action: 'ignored: already stopping once started' });
        logger.info('signal received', { signal, action: 'stop once started' });
        stopWhenStarted = signal;
      };
      let stopWhenStarted: NodeJS.Signals | undefined;
      const stopSignal = (signal: NodeJS.Signals) => onStop(signal);
      io.signals.on('SIGTERM', stopSignal);
      io.signals.on('SIGINT', stopSignal);
      let running;
      try {
        const config = await loadConfig(resolveConfigPath(options.config));
        logger.info('config loaded', { source: config.source });
        // Loaded here, not at import: the offline commands (policy validate, keys) never load the server.
        const [{ createBroker }, { listen }] = await Promise.all([import('../main.js'), import('../http/server.js')]);
        broker = await createBroker(config, { logger });
        if (sighupWhileStarting) reloadAll(broker);
        running = await listen(broker, { host: config.server.host, port: config.server.port, adminPort: config.server.adminPort, logger });
      } catch (err) {
        io.signals.off('SIGHUP', onSighup);
        io.signals.off('SIGTERM', stopSignal);
        io.signals.off('SIGINT', stopSignal);
        if (err instanceof ConfigError || err instanceof PolicyLoadError || err instanceof PolicyDirError) {
          logger.error('cannot start', { error: err.message });
          throw new CliExit(1, `cannot start:\n${err.message}`);
        }
        // `error` is the sentence callers see; the rest of the summary (the error's name, code and reason, and under `cause`
        // its whole chain down to a driver's code and message, say) is only in the log.
        const { message, value, ...summary } = errorSummary(err) ?? {};
        logger.error('cannot start', { error: message ?? value, ...summary });
        throw err;
      }
      const server = running;
      const stopped = await new Promise<boolean>((resolve) => {
        // Kept for every later SIGTERM or SIGINT too: without a handler the next one would kill the process
        // before the exchanges in flight are recorded (docs/architecture.md, "Shutdown").
        const stop = (signal: NodeJS.Signals, announced = false) => {
          if (stopping) return logger.info('signal received', { signal, action: 'ignored: already shutting down' });
          if (!announced) logger.info('signal received', { signal });
          stopping = true;
          server.shutdown().then(
            () => resolve(true),
            (err: unknown) => {
              logger.error('shutdown failed', { cause: errorSummary(err) });
              resolve(false);
            },
          );
        };
        onStop = stop;
        if (stopWhenStarted !== undefined) stop(stopWhenStarted, true);
      });
      if (!stopped) throw new CliExit(1);
    });
}

function reloadAll(broker: Broker): void {
  void broker.reloadPolicies('sighup');
  void broker.reloadKeys('sighup');
}
