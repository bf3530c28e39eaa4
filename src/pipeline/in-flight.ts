/**
 * The decisions in flight, so shutdown closes the audit store only once each
 * has its record (docs/architecture.md, "Shutdown"): a decision that started
 * is either recorded by its own path or, when shutdown stops waiting, ended as
 * abandoned and recorded so.
 */
import { setMaxListeners } from 'node:events';

/** Past the exchange deadline, time for a decision's record to commit and its answer to be written. */
const SHUTDOWN_MARGIN_MS = 5_000;

/** How long shutdown waits for requests and decisions in flight: every exchange ends by its deadline, then it is recorded and answered. */
export function shutdownWaitMs(exchangeTimeoutMs: number): number {
  return exchangeTimeoutMs + SHUTDOWN_MARGIN_MS;
}

export interface InFlightDecisions {
  /** Aborted when shutdown stops waiting: an exchange still deciding then ends as abandoned and is recorded. */
  readonly abandoned: AbortSignal;
  /** Holds shutdown until `decision` settles. */
  track<T>(decision: Promise<T>): Promise<T>;
  /** How many are in flight now. */
  count(): number;
  /**
   * Waits up to `timeoutMs` for every decision in flight (including ones
   * that start meanwhile); then abandons the rest and waits for their records.
   */
  drain(timeoutMs: number): Promise<void>;
}

export function createInFlightDecisions(): InFlightDecisions {
  const pending = new Set<Promise<unknown>>();
  const abandon = new AbortController();
  // Every exchange in flight listens on this one signal (and removes its listener when it ends): many at once is normal load, not a leak.
  setMaxListeners(0, abandon.signal);
  const allSettled = () => Promise.allSettled([...pending]);
  return {
    abandoned: abandon.signal,
    track<T>(decision: Promise<T>): Promise<T> {
      pending.add(decision);
      const forget = () => pending.delete(decision);
      decision.then(forget, forget);
      return decision;
    },
    count: () => pending.size,
    async drain(timeoutMs: number): Promise<void> {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(resolve, timeoutMs, 'timeout')));
      try {
        while (pending.size > 0) if ((await Promise.race([allSettled(), timedOut])) === 'timeout') break;
      } finally {
        clearTimeout(timer);
      }
      if (pending.size === 0) return;
      abandon.abort();
      // An abandoned exchange stops deciding at once and only commits its record, bounded by the audit store's own waits.
      while (pending.size > 0) await allSettled();
    },
  };
}
