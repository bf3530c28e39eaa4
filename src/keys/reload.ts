import type { Logger } from '../logger.js';
import type { BrokerMetrics } from '../metrics.js';
import { loadSigningKeySet, type SigningKeySet } from './signing-key.js';

/** What asked for a key reload: SIGHUP (or a test), or the poll timer. */
export type KeyReloadTrigger = 'sighup' | 'timer';
/** `unchanged`: the file holds the same bytes as the set serving. */
export type KeyReloadOutcome = 'success' | 'failure' | 'unchanged';

/**
 * How often a running broker re-reads its key file: `keys rotate` takes
 * effect on every replica within this time, or at once on SIGHUP
 * (docs/configuration.md, `providers.jwt`).
 */
export const KEY_RELOAD_INTERVAL_MS = 30_000;

/** Calls `tick` every `intervalMs` until the returned function is called; tests pass one they drive by hand. */
export type KeySchedule = (tick: () => Promise<unknown>, intervalMs: number) => () => void;

const intervalSchedule: KeySchedule = (tick, intervalMs) => {
  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
};

export interface KeyRing {
  /** The key set serving now; read it once per use, it is swapped whole. */
  current(): SigningKeySet;
  /** Re-reads the key file. Never rejects: an unreadable or invalid file keeps the current keys (logged and counted). Reloads never overlap. */
  reload(trigger: KeyReloadTrigger): Promise<KeyReloadOutcome>;
  /** Stops polling and waits for a reload in flight. */
  close(): Promise<void>;
}

/** Serves `initial` and polls `file` for a new key set (see KEY_RELOAD_INTERVAL_MS). */
export function startKeyRing(options: {
  file: string;
  initial: SigningKeySet;
  logger: Logger;
  metrics?: Pick<BrokerMetrics, 'signingKeyReloads'>;
  schedule?: KeySchedule;
}): KeyRing {
  const { file, logger } = options;
  let current = options.initial;
  let running: Promise<KeyReloadOutcome> = Promise.resolve('unchanged');

  const load = async (trigger: KeyReloadTrigger): Promise<KeyReloadOutcome> => {
    let next: SigningKeySet;
    try {
      next = await loadSigningKeySet(file);
    } catch (err) {
      // The messages of loadSigningKeySet never quote key material.
      logger.error('signing key reload failed; the current keys keep serving', { trigger, file, error: err instanceof Error ? err.message : String(err), active_kid: current.active.kid });
      return 'failure';
    }
    if (next.sha256 === current.sha256) return 'unchanged';
    const previous = current;
    current = next;
    logger.info('signing keys reloaded', {
      trigger,
      file,
      active_kid: next.active.kid,
      previous_active_kid: previous.active.kid,
      keys: next.entries.map((e) => ({ kid: e.kid, state: e.state })),
    });
    return 'success';
  };

  const reload = (trigger: KeyReloadTrigger): Promise<KeyReloadOutcome> => {
    running = running.then(() => load(trigger)).then((outcome) => {
      options.metrics?.signingKeyReloads.inc({ outcome });
      return outcome;
    });
    return running;
  };

  const stop = (options.schedule ?? intervalSchedule)(() => reload('timer'), KEY_RELOAD_INTERVAL_MS);
  return {
    current: () => current,
    reload,
    async close() {
      stop();
      await running;
    },
  };
}
