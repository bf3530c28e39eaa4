import { createHash } from 'node:crypto';
import { statSync, watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../logger.js';
import type { BrokerMetrics } from '../metrics.js';
import { logPolicyWarnings } from './issues.js';
import { loadPolicyDir, PolicyDirError } from './load.js';
import type { CompileResult, PolicyFile, PolicyIssue, PolicySet } from './types.js';

/** What asked for a reload: the SIGHUP handler (or a test), or the directory watcher. */
export type ReloadTrigger = 'sighup' | 'watch';
/** `unchanged`: the directory holds the same files (names and SHA-256s) as the set serving; nothing was compiled. */
export type ReloadOutcome = 'success' | 'failure' | 'unchanged';

/** One fully compiled policy set and what identifies it. Immutable: a reload replaces the whole snapshot. */
export interface PolicySnapshot {
  readonly set: PolicySet;
  /** See `policySetDigest`. */
  readonly sha256: string;
  /** When this set started serving. */
  readonly loadedAt: Date;
}

export interface ReloadResult {
  outcome: ReloadOutcome;
  trigger: ReloadTrigger;
  /** When the reload started. */
  at: Date;
  durationMs: number;
  /** Every problem as `file:line: key: message`, for the log; empty unless `outcome` is `failure`. */
  errors: string[];
  /**
   * Where each problem is, as `file:line: key` without the message: /readyz is
   * unauthenticated, and a compiler message can quote a value from the file.
   */
  locations: string[];
  /** The snapshot serving once this reload finished (the previous one after a failure). */
  serving: PolicySnapshot;
}

/** The `policies` object of the /readyz body (openapi.yaml `PolicySetStatus`). */
export interface PolicySetStatus {
  count: number;
  loaded_at: string;
  sha256: string;
  /** Null until the first reload after start. */
  last_reload: {
    at: string;
    ok: boolean;
    outcome: ReloadOutcome;
    trigger: ReloadTrigger;
    errors: string[];
  } | null;
}

export interface PolicyReloaderOptions {
  dir: string;
  /** The set loaded at start. */
  initial: PolicySnapshot;
  /** The server's compiler with the running config's compile context. */
  compile: (files: readonly PolicyFile[]) => CompileResult | Promise<CompileResult>;
  /** `file:line: key: message`, the same wording as at start and in `policy validate`. */
  formatIssue: (issue: PolicyIssue) => string;
  logger: Logger;
  metrics?: Pick<BrokerMetrics, 'policyReloads' | 'policySetLastSuccess' | 'policiesLoaded'>;
  /** Called after each swap, with the snapshot now serving. */
  onSwap?: (snapshot: PolicySnapshot) => void;
  /** Quiet time after the last change before reloading. */
  debounceMs?: number;
  /** A burst of changes that never goes quiet still reloads this long after its first change. */
  maxDelayMs?: number;
  /** How often the directory's identity is checked, to re-watch it after it was removed, recreated or swapped. */
  pollIntervalMs?: number;
}

export interface PolicyReloader {
  /** The snapshot serving now. Read it once per request: the whole set is swapped with one assignment. */
  current(): PolicySnapshot;
  status(): PolicySetStatus;
  /**
   * Re-reads and recompiles the whole directory; swaps the set in only if
   * every file compiles. Never rejects. Reloads never overlap: a call made
   * while one runs resolves with the result of one more reload that starts
   * after it (calls made meanwhile share it).
   */
  reload(trigger: ReloadTrigger): Promise<ReloadResult>;
  /** Watches the directory (debounced reloads with trigger `watch`). */
  start(): void;
  /** Stops watching and waits for a reload in flight. */
  close(): Promise<void>;
}

const DEFAULT_DEBOUNCE_MS = 250;
const DEFAULT_MAX_DELAY_MS = 2_000;
const DEFAULT_POLL_INTERVAL_MS = 1_000;
/** Re-reads after a file vanished mid-read, before calling it a failure. */
const TRANSIENT_RETRIES = 2;
/** Reads of the directory until two in a row agree (see `readPolicyDirConsistent`). */
const MAX_READS = 6;
/** /readyz shows at most this many problems; the log has all of them. */
const STATUS_ERROR_LIMIT = 50;

/**
 * Identity of a policy directory's content: SHA-256 over the sorted lines
 * `<file name> <file SHA-256>`. File names count because a policy's default
 * name is its file name, so a rename is a change.
 */
export function policySetDigest(files: readonly PolicyFile[]): string {
  const lines = files
    .map((file) => `${path.basename(file.path)} ${createHash('sha256').update(file.bytes ?? Buffer.from(file.text, 'utf8')).digest('hex')}\n`)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(lines.join('')).digest('hex');
}

/**
 * Reads a policy directory (`loadPolicyDir`) until two reads in a row agree.
 * Files are read one by one, so a read that overlaps a change (a ConfigMap
 * `..data` swap, a deploy tool copying files) can hold old and new files
 * together; such a torn read does not match the read after it, and is never
 * returned. A read matching `known` (the digest of a set already serving,
 * complete by construction) is returned at once. A file that vanishes between
 * listing and reading (a rename-save in progress) is retried after
 * `retryDelayMs`.
 *
 * @throws PolicyDirError (see `loadPolicyDir`), also when the reads keep disagreeing.
 */
export async function readPolicyDirConsistent(
  dir: string,
  options: { known?: string; retryDelayMs?: number } = {},
): Promise<{ files: PolicyFile[]; sha256: string }> {
  let previous: string | undefined;
  let vanished = 0;
  for (let reads = 0; reads < MAX_READS; reads++) {
    let files: PolicyFile[];
    try {
      files = await loadPolicyDir(dir);
    } catch (err) {
      const fileVanished = (err as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT' && (await exists(dir));
      if (!fileVanished || ++vanished > TRANSIENT_RETRIES) throw err;
      previous = undefined;
      await sleep(options.retryDelayMs ?? DEFAULT_DEBOUNCE_MS);
      continue;
    }
    const sha256 = policySetDigest(files);
    if (sha256 === previous || (previous === undefined && sha256 === options.known)) return { files, sha256 };
    previous = sha256;
  }
  throw new PolicyDirError(`Policy directory '${dir}' kept changing while it was read (${MAX_READS} reads disagreed); the next change or SIGHUP retries.`);
}

/**
 * Hot reload of the policy directory (docs/policies/reference.md: a directory that
 * fails to load keeps the last good set serving). The reloader owns the
 * serving snapshot; the exchange reads it through `current()`.
 *
 * Watching: `fs.watch` on the directory itself, so editors that save by
 * writing a temp file and renaming it over, and Kubernetes ConfigMap mounts
 * (whose `..data` symlink is swapped) are seen as changes of the directory.
 * Each reload re-arms the watcher before reading, so nothing changed after the
 * read is missed. A poll of the directory's identity (device and inode)
 * re-arms the watcher when the directory was removed and came back, or was
 * replaced. Watcher errors are logged and never stop the server; SIGHUP always
 * works.
 */
export function createPolicyReloader(options: PolicyReloaderOptions): PolicyReloader {
  const { dir, logger, metrics } = options;
  const debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
  const maxDelayMs = options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  const pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;

  let serving = options.initial;
  let lastReload: ReloadResult | undefined;
  let inFlight: Promise<ReloadResult> | undefined;
  let queuedTrigger: ReloadTrigger | undefined;
  let queuedPromise: Promise<ReloadResult> | undefined;

  let started = false;
  let closed = false;
  let watcher: FSWatcher | undefined;
  let watchedId: string | undefined;
  /** Set when a reload or the poll found the directory gone; the poll reloads once it is back. */
  let dirMissing = false;
  let lastWatchWarning: string | undefined;
  let debounceTimer: NodeJS.Timeout | undefined;
  let burstStartedAt: number | undefined;
  /** Watch events seen so far: a reload that saw one arrive while it read the directory does not swap. */
  let changeEvents = 0;
  let pollTimer: NodeJS.Timeout | undefined;
  let polling = false;

  publish(serving);

  function publish(snapshot: PolicySnapshot): void {
    metrics?.policiesLoaded.set(snapshot.set.size);
    metrics?.policySetLastSuccess.set(snapshot.loadedAt.getTime() / 1000);
  }

  function reload(trigger: ReloadTrigger): Promise<ReloadResult> {
    if (inFlight === undefined) {
      inFlight = run(trigger).finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    }
    if (queuedPromise === undefined) {
      queuedTrigger = trigger;
      // `inFlight` has been cleared when this runs: the finally above comes first.
      queuedPromise = inFlight.then(() => {
        const next = queuedTrigger ?? trigger;
        queuedTrigger = undefined;
        queuedPromise = undefined;
        return reload(next);
      });
    } else if (trigger === 'sighup') {
      // An operator's explicit reload is what the log should name.
      queuedTrigger = trigger;
    }
    return queuedPromise;
  }

  async function run(trigger: ReloadTrigger): Promise<ReloadResult> {
    const at = new Date();
    const startedMs = performance.now();
    if (started && !closed) arm();
    const changesAtStart = changeEvents;

    let issues: PolicyIssue[] = [];
    let outcome: ReloadOutcome = 'failure';
    const read = await readDir();
    if (!read.ok) {
      issues = read.issues;
    } else if (read.digest === serving.sha256) {
      outcome = 'unchanged';
    } else if (changeEvents !== changesAtStart) {
      // Files still arriving (a deploy copying one by one): a set read now may lack a deny policy
      // that lands next. Keep serving; the change already scheduled the next reload.
      issues = [{ file: dir, keyPath: '', message: 'the directory changed while it was read; the next reload will pick it up' }];
    } else {
      try {
        const result = await options.compile(read.files);
        if (result.ok) {
          // The one swap: requests that already read the old snapshot finish on it, every later read gets the new one.
          serving = { set: result.set, sha256: read.digest, loadedAt: new Date() };
          outcome = 'success';
          logPolicyWarnings(logger, result.warnings);
        } else {
          issues = result.issues;
        }
      } catch (err) {
        issues = [{ file: dir, keyPath: '', message: `the policy compiler failed: ${err instanceof Error ? err.message : String(err)}` }];
      }
    }

    const durationMs = Math.round((performance.now() - startedMs) * 10) / 10;
    const errors = outcome === 'failure' ? issues.map(options.formatIssue) : [];
    const locations = outcome === 'failure' ? issues.map(issueLocation) : [];
    const result: ReloadResult = { outcome, trigger, at, durationMs, errors, locations, serving };
    lastReload = result;
    metrics?.policyReloads.inc({ outcome });
    if (outcome === 'success') {
      publish(serving);
      options.onSwap?.(serving);
      logger.info('policies reloaded', { dir, count: serving.set.size, sha256: serving.sha256, trigger, duration_ms: durationMs });
    } else if (outcome === 'unchanged') {
      metrics?.policySetLastSuccess.set(Date.now() / 1000);
      logger.debug('policies unchanged', { dir, count: serving.set.size, sha256: serving.sha256, trigger, duration_ms: durationMs });
    } else {
      logger.error('policy reload failed', {
        dir,
        trigger,
        duration_ms: durationMs,
        errors,
        serving: { count: serving.set.size, sha256: serving.sha256, loaded_at: serving.loadedAt.toISOString() },
      });
    }
    return result;
  }

  async function readDir(): Promise<{ ok: true; files: PolicyFile[]; digest: string } | { ok: false; issues: PolicyIssue[] }> {
    try {
      const { files, sha256 } = await readPolicyDirConsistent(dir, { known: serving.sha256, retryDelayMs: debounceMs });
      dirMissing = false;
      return { ok: true, files, digest: sha256 };
    } catch (err) {
      if (!(await exists(dir))) {
        dirMissing = true;
        disarm();
      }
      // PolicyDirError names the path and the cause (missing directory, unreadable or non-UTF-8 file).
      return { ok: false, issues: [{ file: dir, keyPath: '', message: err instanceof Error ? err.message : String(err) }] };
    }
  }

  // --- watching -------------------------------------------------------------

  function schedule(): void {
    if (closed) return;
    const now = Date.now();
    burstStartedAt ??= now;
    if (debounceTimer !== undefined) clearTimeout(debounceTimer);
    const wait = Math.max(0, Math.min(debounceMs, burstStartedAt + maxDelayMs - now));
    debounceTimer = setTimeout(() => {
      debounceTimer = undefined;
      burstStartedAt = undefined;
      void reload('watch');
    }, wait);
    debounceTimer.unref();
  }

  function arm(): void {
    disarm();
    let w: FSWatcher;
    try {
      const s = statSync(dir);
      // Recursive watching is not needed: only files directly in the directory are policies.
      w = watch(dir, { persistent: false });
      watchedId = `${s.dev}:${s.ino}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A missing directory is reported by the reload; the poll re-arms once it is back.
      if (code !== 'ENOENT') warnWatch(err);
      return;
    }
    w.on('change', () => {
      changeEvents += 1;
      schedule();
    });
    w.on('error', (err) => {
      warnWatch(err);
      if (watcher === w) disarm();
      schedule();
    });
    watcher = w;
    lastWatchWarning = undefined;
  }

  function disarm(): void {
    const w = watcher;
    watcher = undefined;
    watchedId = undefined;
    if (w === undefined) return;
    try {
      w.close();
    } catch {
      // Already closed by an error: nothing to release.
    }
  }

  function warnWatch(err: unknown): void {
    const message = err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim() : String(err);
    if (message === lastWatchWarning) return;
    lastWatchWarning = message;
    logger.warn('cannot watch the policy directory; changes are picked up on SIGHUP (retrying)', { dir, error: message });
  }

  /** Re-arms the watcher when the directory came back or was replaced; records a disappearance the watcher missed. */
  async function poll(): Promise<void> {
    if (polling || closed) return;
    polling = true;
    try {
      let id: string | undefined;
      try {
        const s = await stat(dir);
        if (s.isDirectory()) id = `${s.dev}:${s.ino}`;
      } catch {
        id = undefined;
      }
      if (closed) return;
      if (id === undefined) {
        disarm();
        if (!dirMissing) {
          dirMissing = true;
          schedule();
        }
        return;
      }
      const blind = watcher === undefined;
      const replaced = !blind && id !== watchedId;
      const cameBack = dirMissing;
      if (!blind && !replaced && !cameBack) return;
      dirMissing = false;
      arm();
      // Reload what may have changed unseen; a watcher that still cannot be armed does not cause a reload every poll.
      if (cameBack || replaced || watcher !== undefined) schedule();
    } finally {
      polling = false;
    }
  }

  return {
    current: () => serving,
    status: () => {
      const last = lastReload;
      return {
        count: serving.set.size,
        loaded_at: serving.loadedAt.toISOString(),
        sha256: serving.sha256,
        last_reload:
          last === undefined
            ? null
            : {
                at: last.at.toISOString(),
                ok: last.outcome !== 'failure',
                outcome: last.outcome,
                trigger: last.trigger,
                errors:
                  last.locations.length > STATUS_ERROR_LIMIT
                    ? [...last.locations.slice(0, STATUS_ERROR_LIMIT - 1), `... and ${last.locations.length - STATUS_ERROR_LIMIT + 1} more (see the log)`]
                    : last.locations,
              },
      };
    },
    reload,
    start: () => {
      if (started || closed) return;
      started = true;
      arm();
      pollTimer = setInterval(() => void poll(), pollIntervalMs);
      pollTimer.unref();
      // A change between the start-up read and arming the watcher would go unseen: look once more, quietly.
      void readPolicyDirConsistent(dir, { known: serving.sha256, retryDelayMs: debounceMs }).then(
        ({ sha256 }) => {
          if (sha256 !== serving.sha256) schedule();
        },
        () => schedule(),
      );
    },
    close: async () => {
      closed = true;
      if (debounceTimer !== undefined) clearTimeout(debounceTimer);
      if (pollTimer !== undefined) clearInterval(pollTimer);
      disarm();
      await queuedPromise;
      await inFlight;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** `file:line: key` of an issue, with the file's name only (the log has the full path and the message). */
function issueLocation(issue: PolicyIssue): string {
  const where = issue.line === undefined ? path.basename(issue.file) : `${path.basename(issue.file)}:${issue.line}`;
  return issue.keyPath === '' ? where : `${where}: ${issue.keyPath}`;
}
