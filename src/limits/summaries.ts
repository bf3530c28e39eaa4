/** The limited requests of one key and window that got no record of their own. */
export interface DroppedWindow<T> {
  limit: string;
  /** The first dropped request, as its record would have read. */
  first: T;
  /** How many requests were dropped, the first included. */
  count: number;
  windowEnd: Date;
}

interface Pending<T> extends DroppedWindow<T> {
  timer: NodeJS.Timeout;
}

/**
 * Counts the requests a rate limit drops (docs/audit.md): one summary per
 * limit, key and window, handed to `write` when the window ends (or at the
 * next dropped request after it, or at close). Counts are this process's own;
 * with several replicas each writes its own summary.
 */
export class DropSummaries<T> {
  private readonly pending = new Map<string, Pending<T>>();
  private readonly writes = new Set<Promise<void>>();

  /** `write` must not reject: a summary it cannot keep is its to report. */
  constructor(private readonly write: (window: DroppedWindow<T>) => Promise<void>) {}

  add(limit: string, key: string, windowEnd: Date, request: T): void {
    const id = `${limit} ${key}`;
    const current = this.pending.get(id);
    if (current && Date.now() < current.windowEnd.getTime()) {
      current.count += 1;
      return;
    }
    if (current) this.flush(id);
    const timer = setTimeout(() => this.flush(id), Math.max(0, windowEnd.getTime() - Date.now()));
    // A pending summary never keeps the process alive: close() writes what is left.
    timer.unref();
    this.pending.set(id, { limit, first: request, count: 1, windowEnd, timer });
  }

  /** Writes every pending summary now and waits for all writes. */
  async close(): Promise<void> {
    for (const id of [...this.pending.keys()]) this.flush(id);
    await Promise.all(this.writes);
  }

  private flush(id: string): void {
    const window = this.pending.get(id);
    if (!window) return;
    this.pending.delete(id);
    clearTimeout(window.timer);
    const { timer: _timer, ...summary } = window;
    const writing = this.write(summary).finally(() => this.writes.delete(writing));
    this.writes.add(writing);
  }
}
