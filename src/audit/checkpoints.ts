/**
 * Signed checkpoints, full-log verification and pruning.
 *
 * The hash chain proves that records between two points were not changed,
 * removed or reordered, but not that the tail is complete: anyone who can
 * write the store can delete the last records, or rewrite every record from
 * some point on and recompute the hashes. A checkpoint closes that gap: the
 * broker signs "the record with seq N has hash H" with its own key, stores it
 * and logs it, so a chain that ends before N, or differs at N, is caught by
 * anyone holding the broker's public key (or a copy of the log line).
 */
import { CompactSign, compactVerify, type CryptoKey } from 'jose';
import type { Logger } from '../logger.js';
import type { SigningKey, SigningKeySet } from '../keys/signing-key.js';
import { GENESIS_HASH } from './record.js';
import type { AuditCheckpoint, AuditStore, ChainBreak, ChainPoint, ChainVerification } from './types.js';

/** JWS `typ` of a checkpoint, so a checkpoint can never pass for a broker-issued token or vice versa. */
export const CHECKPOINT_TYPE = 'oidc-broker-audit-checkpoint';

/** The outcome of verifying the whole log: the chain walk plus what the checkpoints add. */
export type AuditVerification = ChainVerification & {
  /** The first seq the walk expected: 1, or after a prune the first kept record. */
  first_seq: number;
  /** Checkpoints stored, periodic and prune. */
  checkpoints: number;
  /** The newest checkpoint: the log is proven complete up to its seq. */
  latest_checkpoint: { seq: number; time: string } | null;
};

/** Signs `point` with the broker key. */
export async function signCheckpoint(key: SigningKey, point: ChainPoint, kind: AuditCheckpoint['kind'], time: Date): Promise<AuditCheckpoint> {
  const statement = { seq: point.seq, hash: point.hash, time: time.toISOString(), kind };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(statement)))
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: CHECKPOINT_TYPE })
    .sign(key.privateKey);
  return { ...statement, kid: key.kid, jws };
}

/**
 * True if the checkpoint's JWS verifies with one of `keys` (by kid, ES256,
 * the checkpoint `typ`) and its payload says exactly what the stored fields say.
 */
export async function isCheckpointAuthentic(checkpoint: AuditCheckpoint, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<boolean> {
  const key = keys.get(checkpoint.kid);
  if (key === undefined) return false;
  try {
    const { payload, protectedHeader } = await compactVerify(checkpoint.jws, key, { algorithms: ['ES256'] });
    if (protectedHeader.typ !== CHECKPOINT_TYPE || protectedHeader.kid !== checkpoint.kid) return false;
    const statement = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    return statement.seq === checkpoint.seq && statement.hash === checkpoint.hash && statement.time === checkpoint.time && statement.kind === checkpoint.kind;
  } catch {
    return false;
  }
}

/**
 * Verifies the whole log: every checkpoint's signature, then the chain from
 * the latest prune checkpoint (or the first record) to the head, checking on
 * the way the hashes periodic checkpoints vouch for, and finally that the
 * chain reaches the newest checkpoint.
 * @throws AuditUnavailableError when the store cannot be read.
 */
export async function verifyAuditLog(store: AuditStore, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<AuditVerification> {
  const checkpoints = await store.checkpoints();
  // The store lists them in seq order, then time: the last is the newest.
  const latest = checkpoints.at(-1) ?? null;
  const summary = { checkpoints: checkpoints.length, latest_checkpoint: latest === null ? null : { seq: latest.seq, time: latest.time } };

  let anchor: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  for (const checkpoint of checkpoints) {
    if (!(await isCheckpointAuthentic(checkpoint, keys))) {
      const broken: ChainBreak = { seq: checkpoint.seq, id: null, problem: 'bad_checkpoint' };
      return { ok: false, events: 0, head: anchor.hash, last_seq: anchor.seq, broken, first_seq: anchor.seq + 1, ...summary };
    }
    if (checkpoint.kind === 'prune' && checkpoint.seq > anchor.seq) anchor = { seq: checkpoint.seq, hash: checkpoint.hash };
  }
  const expected = new Map(checkpoints.filter((c) => c.kind === 'periodic' && c.seq > anchor.seq).map((c) => [c.seq, c.hash]));

  const walk = await store.verify({ from: anchor, expected });
  const result = { ...walk, first_seq: anchor.seq + 1, ...summary };
  if (walk.ok && latest !== null && walk.last_seq < latest.seq) {
    return { ...result, ok: false, broken: { seq: walk.last_seq + 1, id: null, problem: 'truncated' } };
  }
  return result;
}

export interface Checkpointer {
  /** The store to append through: the checkpointer only signs records it saw this process write. */
  store: AuditStore;
  /**
   * Signs and stores a checkpoint for the newest record this process wrote,
   * after verifying the records since the newest stored checkpoint; returns
   * it, or null when there is nothing new or something is wrong (then
   * nothing is signed and an error is logged).
   */
  checkpointNow(): Promise<AuditCheckpoint | null>;
  /** Stops the timer and makes a last checkpoint, so a clean shutdown leaves the whole log vouched for. */
  stop(): Promise<void>;
}

/**
 * Checkpoints every `intervalMs` while records are written. Each checkpoint
 * is also logged (seq, hash, kid, jws): log shipping then holds a copy of it
 * outside the store.
 *
 * A checkpoint must never vouch for records someone changed in the store, so
 * it is made only for a record this process appended itself, with the hash
 * its own append computed: anyone who rewrote that record, or any before it,
 * changed that hash, and the walk from the newest authentic checkpoint to it
 * (which checks it) fails. A newest stored checkpoint that is not authentic,
 * or that went missing since this process last saw it, also stops
 * checkpointing with an error.
 */
export function startCheckpointer(deps: {
  store: AuditStore;
  /** The keys serving now (they change when the key file is reloaded): the active one signs, any the broker holds verifies (docs/audit.md). */
  keys: () => Pick<SigningKeySet, 'active' | 'verificationKeys'>;
  logger: Logger;
  intervalMs: number;
  now?: () => Date;
}): Checkpointer {
  const now = deps.now ?? (() => new Date());
  let newestSeen = 0;
  let written: ChainPoint | undefined;
  let running: Promise<AuditCheckpoint | null> | undefined;

  const store: AuditStore = {
    ...deps.store,
    async append(entry) {
      const record = await deps.store.append(entry);
      if (written === undefined || record.seq > written.seq) written = { seq: record.seq, hash: record.hash };
      return record;
    },
  };

  const refuse = (message: string, details: Record<string, unknown>): null => {
    deps.logger.error(`audit checkpoint refused: ${message}`, details);
    return null;
  };

  const checkpoint = async (): Promise<AuditCheckpoint | null> => {
    const target = written;
    if (target === undefined || target.seq <= newestSeen) return null;
    const stored = await deps.store.checkpoints();
    const newest = stored.at(-1) ?? null;
    if ((newest?.seq ?? 0) < newestSeen) return refuse('checkpoints were deleted from the store', { newest_seen: newestSeen, newest_stored: newest?.seq ?? 0 });
    const keys = deps.keys();
    if (newest !== null && !(await isCheckpointAuthentic(newest, keys.verificationKeys))) return refuse('the newest stored checkpoint is not authentic', { seq: newest.seq });
    const from: ChainPoint = newest === null ? { seq: 0, hash: GENESIS_HASH } : { seq: newest.seq, hash: newest.hash };
    newestSeen = from.seq;
    if (target.seq <= from.seq) return null;
    const walk = await deps.store.verify({ from, partial: true, expected: new Map([[target.seq, target.hash]]) });
    if (!walk.ok && walk.broken.seq <= target.seq) return refuse('the records since the newest checkpoint do not verify', { from_seq: from.seq, broken: walk.broken });
    if (walk.last_seq < target.seq) return refuse('the chain ends before a record this broker wrote: records were deleted', { seq: target.seq, head_seq: walk.last_seq });
    const made = await signCheckpoint(keys.active, target, 'periodic', now());
    await deps.store.saveCheckpoint(made);
    newestSeen = made.seq;
    deps.logger.info('audit checkpoint', { seq: made.seq, hash: made.hash, kid: made.kid, jws: made.jws });
    return made;
  };
  // One at a time: the timer and a shutdown must not sign the same head twice.
  const checkpointNow = (): Promise<AuditCheckpoint | null> => {
    running = (running ?? Promise.resolve(null)).catch(() => null).then(checkpoint);
    return running;
  };

  const timer = setInterval(() => {
    checkpointNow().catch((err: unknown) => deps.logger.warn('audit checkpoint failed', { error: err instanceof Error ? err.message : String(err) }));
  }, deps.intervalMs);
  timer.unref();

  return {
    store,
    checkpointNow,
    async stop() {
      clearInterval(timer);
      await checkpointNow();
    },
  };
}

/**
 * Deletes the records older than `before` (up to the first record that is
 * not, so what remains is contiguous) and stores a signed prune checkpoint
 * for the last deleted one, from which the chain is verified from then on.
 * Returns null if nothing is old enough.
 * @throws AuditUnavailableError when the store cannot be written.
 */
export async function pruneAuditLog(store: AuditStore, key: SigningKey, before: Date, now: Date = new Date()): Promise<{ deleted: number; anchor: AuditCheckpoint } | null> {
  const boundary = await store.pruneBoundary(before.toISOString());
  if (boundary === null) return null;
  const anchor = await signCheckpoint(key, boundary, 'prune', now);
  return { deleted: await store.prune(anchor), anchor };
}
