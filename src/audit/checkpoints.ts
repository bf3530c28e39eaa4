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
import { createHash } from 'node:crypto';
import { CompactSign, compactVerify, type CryptoKey } from 'jose';
import { errorSummary, type Logger } from '../logger.js';
import type { SigningKey, SigningKeySet } from '../keys/signing-key.js';
import { toCursor } from './query.js';
import { GENESIS_HASH } from './record.js';
import { readTrustedHeadFile, writeTrustedHeadFile } from './trusted-head.js';
import type { AuditCheckpoint, AuditStore, ChainBreak, ChainPoint, ChainProblem, ChainVerification } from './types.js';

/** JWS `typ` of a checkpoint, so a checkpoint can never pass for a broker-issued token or vice versa. */
export const CHECKPOINT_TYPE = 'oidc-broker-audit-checkpoint';

/** The outcome of verifying the whole log: the chain walk plus what the checkpoints add. */
export type AuditVerification = ChainVerification & {
  /** The first seq the walk expected: 1, or after a prune the first kept record. */
  first_seq: number;
  /** Checkpoints stored, periodic and prune. */
  checkpoints: number;
  /**
   * The newest checkpoint: the log is proven complete up to its seq. Its
   * `jws` is what an auditor keeps as the trusted head for the next
   * verification (docs/audit.md, "Trusted head").
   */
  latest_checkpoint: { seq: number; time: string; jws: string } | null;
};

/**
 * The checkpoint a newer one was signed after: its seq and the SHA-256 (hex)
 * of its compact JWS. Deleting a checkpoint that a newer one links to is
 * then caught (docs/audit.md, "Signed checkpoints").
 */
export interface CheckpointLink {
  seq: number;
  jws_sha256: string;
}

/** What a checkpoint's JWS says; `prev` is undefined for a checkpoint signed before checkpoints were chained. */
interface CheckpointStatement {
  seq: number;
  hash: string;
  time: string;
  kind: AuditCheckpoint['kind'];
  prev: CheckpointLink | null | undefined;
}

/** The link to `checkpoint`, as the next checkpoint's `prev` carries it. */
export function toCheckpointLink(checkpoint: Pick<AuditCheckpoint, 'seq' | 'jws'>): CheckpointLink {
  return { seq: checkpoint.seq, jws_sha256: createHash('sha256').update(checkpoint.jws).digest('hex') };
}

/**
 * The checkpoint a new one links to: the one signed last (by time, then
 * seq). That is not always the highest seq: a prune anchor vouches for an
 * old record but is signed after the periodic checkpoints before it.
 */
export function lastSignedCheckpoint(checkpoints: readonly AuditCheckpoint[]): AuditCheckpoint | null {
  let last: AuditCheckpoint | null = null;
  for (const c of checkpoints) if (last === null || c.time > last.time || (c.time === last.time && c.seq > last.seq)) last = c;
  return last;
}

/**
 * Signs `point` with the broker key, linked to `prev` (null when the store
 * holds no checkpoint yet).
 */
export async function signCheckpoint(key: SigningKey, point: ChainPoint, kind: AuditCheckpoint['kind'], time: Date, prev: CheckpointLink | null = null): Promise<AuditCheckpoint> {
  const statement = { seq: point.seq, hash: point.hash, time: time.toISOString(), kind, prev };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(statement)))
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: CHECKPOINT_TYPE })
    .sign(key.privateKey);
  return { seq: statement.seq, hash: statement.hash, time: statement.time, kind, kid: key.kid, jws };
}

/**
 * True if the checkpoint's JWS verifies with one of `keys` (by kid, ES256,
 * the checkpoint `typ`) and its payload says exactly what the stored fields say.
 */
export async function isCheckpointAuthentic(checkpoint: AuditCheckpoint, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<boolean> {
  return (await readAuthenticStatement(checkpoint, keys)) !== null;
}

/** The checkpoint's signed statement if it is authentic (see isCheckpointAuthentic), else null. */
async function readAuthenticStatement(checkpoint: AuditCheckpoint, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<CheckpointStatement | null> {
  const key = keys.get(checkpoint.kid);
  if (key === undefined) return null;
  try {
    const { payload, protectedHeader } = await compactVerify(checkpoint.jws, key, { algorithms: ['ES256'] });
    if (protectedHeader.typ !== CHECKPOINT_TYPE || protectedHeader.kid !== checkpoint.kid) return null;
    const statement = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    const matches = statement.seq === checkpoint.seq && statement.hash === checkpoint.hash && statement.time === checkpoint.time && statement.kind === checkpoint.kind;
    if (!matches) return null;
    const prev = statement.prev;
    if (prev !== undefined && prev !== null && !isCheckpointLink(prev)) return null;
    return { seq: checkpoint.seq, hash: checkpoint.hash, time: checkpoint.time, kind: checkpoint.kind, prev };
  } catch {
    return null;
  }
}

function isCheckpointLink(value: unknown): value is CheckpointLink {
  if (typeof value !== 'object' || value === null) return false;
  const { seq, jws_sha256: sha256 } = value as Record<string, unknown>;
  return Number.isSafeInteger(seq) && typeof sha256 === 'string' && /^[0-9a-f]{64}$/.test(sha256);
}

/**
 * The first problem with how the stored checkpoints link up, or null:
 * every link must name a stored checkpoint (`missing_checkpoint`), and a
 * checkpoint without a link (signed before checkpoints were chained) is
 * accepted only if it was signed before the first linked one
 * (`unlinked_checkpoint`).
 */
function findLinkProblem(checkpoints: readonly { checkpoint: AuditCheckpoint; statement: CheckpointStatement }[]): { seq: number; problem: ChainProblem } | null {
  const stored = new Set(checkpoints.map(({ checkpoint }) => linkKey(toCheckpointLink(checkpoint))));
  let firstLinkedTime: string | undefined;
  for (const { statement } of checkpoints) if (statement.prev !== undefined && (firstLinkedTime === undefined || statement.time < firstLinkedTime)) firstLinkedTime = statement.time;
  for (const { statement } of checkpoints) {
    if (statement.prev === undefined) {
      if (firstLinkedTime !== undefined && statement.time > firstLinkedTime) return { seq: statement.seq, problem: 'unlinked_checkpoint' };
    } else if (statement.prev !== null && !stored.has(linkKey(statement.prev))) {
      return { seq: statement.prev.seq, problem: 'missing_checkpoint' };
    }
  }
  return null;
}

function linkKey(link: CheckpointLink): string {
  return `${link.seq}:${link.jws_sha256}`;
}

/** True if the store holds exactly this checkpoint (same seq, same JWS). */
function holdsCheckpoint(stored: readonly AuditCheckpoint[], checkpoint: AuditCheckpoint): boolean {
  return stored.some((c) => c.seq === checkpoint.seq && c.jws === checkpoint.jws);
}

/**
 * Verifies the whole log: every checkpoint's signature and link, that the
 * store still holds `trustedHead` (an authentic checkpoint the caller kept
 * from an earlier verification, a log line or the broker's head file; the
 * caller checks its signature), then the chain from the latest prune
 * checkpoint (or the first record) to the head, checking on the way the
 * hashes periodic checkpoints vouch for, and finally that the chain reaches
 * the newest checkpoint.
 * @throws AuditUnavailableError when the store cannot be read.
 */
export async function verifyAuditLog(
  store: AuditStore,
  keys: ReadonlyMap<string, CryptoKey | Uint8Array>,
  options: { trustedHead?: AuditCheckpoint | undefined } = {},
): Promise<AuditVerification> {
  const checkpoints = await store.checkpoints();
  // The store lists them in seq order, then time: the last is the newest.
  const latest = checkpoints.at(-1) ?? null;
  const summary = { checkpoints: checkpoints.length, latest_checkpoint: latest === null ? null : { seq: latest.seq, time: latest.time, jws: latest.jws } };

  let anchor: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  const brokenAt = (seq: number, problem: ChainProblem): AuditVerification => {
    const broken: ChainBreak = { seq, id: null, problem };
    return { ok: false, events: 0, head: anchor.hash, last_seq: anchor.seq, broken, first_seq: anchor.seq + 1, ...summary };
  };
  const statements: { checkpoint: AuditCheckpoint; statement: CheckpointStatement }[] = [];
  for (const checkpoint of checkpoints) {
    const statement = await readAuthenticStatement(checkpoint, keys);
    if (statement === null) return brokenAt(checkpoint.seq, 'bad_checkpoint');
    statements.push({ checkpoint, statement });
    if (checkpoint.kind === 'prune' && checkpoint.seq > anchor.seq) anchor = { seq: checkpoint.seq, hash: checkpoint.hash };
  }
  const linkProblem = findLinkProblem(statements);
  if (linkProblem !== null) return brokenAt(linkProblem.seq, linkProblem.problem);
  if (options.trustedHead !== undefined && !holdsCheckpoint(checkpoints, options.trustedHead)) return brokenAt(options.trustedHead.seq, 'rolled_back');
  const expected = new Map(checkpoints.filter((c) => c.kind === 'periodic' && c.seq > anchor.seq).map((c) => [c.seq, c.hash]));

  const walk = await store.verify({ from: anchor, expected });
  const result = { ...walk, first_seq: anchor.seq + 1, ...summary };
  if (walk.ok && latest !== null && walk.last_seq < latest.seq) {
    return { ...result, ok: false, broken: { seq: walk.last_seq + 1, id: null, problem: 'truncated' } };
  }
  return result;
}

export interface Checkpointer {
  /**
   * The store to append through: the checkpointer only signs records it saw
   * this process write. Its `ping` fails once the log was found rolled back
   * behind the checkpoint the checkpointer trusts, or while the head file
   * holds a checkpoint the broker's keys do not verify, so /readyz reports
   * the audit log unavailable.
   */
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
 * links to the one signed before it, is also logged (seq, hash, kid, jws):
 * log shipping then holds a copy of it outside the store, and is written to
 * `headFile`, the trusted head (docs/audit.md, "Trusted head").
 *
 * A checkpoint must never vouch for records someone changed in the store, so
 * it is made only for a record this process appended itself, with the hash
 * its own append computed: anyone who rewrote that record, or any before it,
 * changed that hash, and the walk from the newest authentic checkpoint to it
 * (which checks it) fails. A newest stored checkpoint that is not authentic
 * also stops checkpointing with an error.
 *
 * The checkpointer holds the newest checkpoint it trusts: the head file's,
 * read once at start, then each newer authentic one it finds in the store or
 * signs. Someone who can write the store but not read the key can delete
 * every checkpoint after an older one and rewrite the records after it; the
 * held checkpoint catches it: at start and before every checkpoint the store
 * must still hold it, and the record at its seq must still have its hash.
 * Once it does not, this process signs nothing more and its store's `ping`
 * fails. A head file that cannot be read, or that holds a checkpoint the keys
 * do not verify, is not a rollback: nothing is signed until it is read and
 * verified, which is tried again at every checkpoint.
 */
export function startCheckpointer(deps: {
  store: AuditStore;
  /** The keys serving now (they change when the key file is reloaded): the active one signs, any the broker holds verifies (docs/audit.md). */
  keys: () => Pick<SigningKeySet, 'active' | 'verificationKeys'>;
  logger: Logger;
  intervalMs: number;
  /** `audit.head_file`: where the newest checkpoint this broker signed is kept; none to keep no trusted head. */
  headFile?: string | undefined;
  now?: () => Date;
}): Checkpointer {
  const now = deps.now ?? (() => new Date());
  /** The newest checkpoint this process trusts; the store must keep holding it. */
  let held: AuditCheckpoint | null = null;
  /** Whether the head file was read and its checkpoint verified (or there is none to read). */
  let headRead = deps.headFile === undefined;
  /** Why the head file's checkpoint does not verify, while it does not. */
  let unverifiedHead: string | undefined;
  let written: ChainPoint | undefined;
  let running: Promise<AuditCheckpoint | null> | undefined;
  /** Why the log is behind the held checkpoint; once set, nothing is signed again. */
  let rolledBack: string | undefined;

  const store: AuditStore = {
    ...deps.store,
    async append(entry) {
      const record = await deps.store.append(entry);
      if (written === undefined || record.seq > written.seq) written = { seq: record.seq, hash: record.hash };
      return record;
    },
    async ping() {
      // Not ready before the start-up check of the trusted head has run.
      await headChecked;
      if (rolledBack !== undefined) throw new Error(`the audit log is behind the trusted head: ${rolledBack}`);
      if (unverifiedHead !== undefined) throw new Error(unverifiedHead);
      await deps.store.ping();
    },
  };

  const refuse = (message: string, details: Record<string, unknown>): null => {
    deps.logger.error(`audit checkpoint refused: ${message}`, details);
    return null;
  };

  /** Reads and verifies the head file until that succeeds once; false (and logged) while it does not. */
  const readHead = async (): Promise<boolean> => {
    if (headRead || deps.headFile === undefined) return true;
    const file = deps.headFile;
    let head: AuditCheckpoint | null;
    try {
      head = await readTrustedHeadFile(file);
    } catch (err) {
      refuse('the trusted head file cannot be read; it is read again at the next checkpoint', { head_file: file, cause: errorSummary(err) });
      return false;
    }
    const keys = deps.keys().verificationKeys;
    if (head !== null && !(await isCheckpointAuthentic(head, keys))) {
      unverifiedHead = keys.has(head.kid)
        ? `the trusted head is not a checkpoint signed by the broker's keys: the head file was changed`
        : `the trusted head is not a checkpoint signed by the broker's keys: its key ${head.kid} is not in the signing key file; put that key back (the file is reloaded), or verify the log against the head and move the head file aside (docs/audit.md, "Trusted head")`;
      refuse(unverifiedHead, { head_file: file, seq: head.seq, kid: head.kid });
      return false;
    }
    unverifiedHead = undefined;
    headRead = true;
    if (head !== null && (held === null || head.seq > held.seq)) held = head;
    return true;
  };

  /** Why the store no longer reaches the held checkpoint, or null if it does. */
  const findRollback = async (stored: readonly AuditCheckpoint[]): Promise<{ message: string; details: Record<string, unknown> } | null> => {
    const head = held;
    if (head === null) return null; // nothing signed or seen yet
    const details = { trusted_seq: head.seq, trusted_hash: head.hash, newest_stored: stored.at(-1)?.seq ?? 0 };
    if (!holdsCheckpoint(stored, head)) return { message: 'the store no longer holds the trusted head checkpoint: checkpoints were deleted, the log was rolled back', details };
    // A pruned record is vouched for by the prune anchor at or after it; otherwise the record must still be there, unchanged.
    if (stored.some((c) => c.kind === 'prune' && c.seq >= head.seq)) return null;
    const record = (await deps.store.query({ limit: 1, ...(head.seq > 1 ? { cursor: toCursor(head.seq - 1) } : {}) })).events[0];
    if (record?.seq !== head.seq || record.hash !== head.hash) {
      return { message: 'the chain no longer reaches the trusted head with its hash: the log was rolled back or rewritten', details: { ...details, stored_hash: record?.seq === head.seq ? record.hash : null } };
    }
    return null;
  };

  /** True once the log was found behind the held checkpoint (logged the first time; it stays so). */
  const isRolledBack = async (stored: readonly AuditCheckpoint[]): Promise<boolean> => {
    if (rolledBack !== undefined) return true;
    const problem = await findRollback(stored);
    if (problem === null) return false;
    rolledBack = problem.message;
    refuse(problem.message, { ...(deps.headFile === undefined ? {} : { head_file: deps.headFile }), ...problem.details });
    return true;
  };

  const checkpoint = async (): Promise<AuditCheckpoint | null> => {
    if (!(await readHead())) return null;
    const target = written;
    if (target === undefined || target.seq <= (held?.seq ?? 0)) return null;
    const stored = await deps.store.checkpoints();
    if (await isRolledBack(stored)) return refuse('the audit log is behind the trusted head', { seq: target.seq });
    const newest = stored.at(-1) ?? null;
    const keys = deps.keys();
    if (newest !== null && !(await isCheckpointAuthentic(newest, keys.verificationKeys))) return refuse('the newest stored checkpoint is not authentic', { seq: newest.seq });
    if (newest !== null && newest.seq > (held?.seq ?? 0)) held = newest;
    const from: ChainPoint = newest === null ? { seq: 0, hash: GENESIS_HASH } : { seq: newest.seq, hash: newest.hash };
    if (target.seq <= from.seq) return null;
    const walk = await deps.store.verify({ from, partial: true, expected: new Map([[target.seq, target.hash]]) });
    if (!walk.ok && walk.broken.seq <= target.seq) return refuse('the records since the newest checkpoint do not verify', { from_seq: from.seq, broken: walk.broken });
    if (walk.last_seq < target.seq) return refuse('the chain ends before a record this broker wrote: records were deleted', { seq: target.seq, head_seq: walk.last_seq });
    const previous = lastSignedCheckpoint(stored);
    const made = await signCheckpoint(keys.active, target, 'periodic', now(), previous === null ? null : toCheckpointLink(previous));
    await deps.store.saveCheckpoint(made);
    held = made;
    deps.logger.info('audit checkpoint', { seq: made.seq, hash: made.hash, kid: made.kid, jws: made.jws });
    if (deps.headFile !== undefined) {
      // The checkpoint is stored, logged and held; a head that cannot be written weakens only rollback detection after a restart, so say so loudly and go on.
      await writeTrustedHeadFile(deps.headFile, made).catch((err: unknown) =>
        deps.logger.error('audit trusted head not written', { head_file: deps.headFile, seq: made.seq, cause: errorSummary(err) }),
      );
    }
    return made;
  };
  // One at a time: the timer and a shutdown must not sign the same head twice.
  const enqueue = (job: () => Promise<AuditCheckpoint | null>): Promise<AuditCheckpoint | null> => {
    running = (running ?? Promise.resolve(null)).catch(() => null).then(job);
    return running;
  };
  const checkpointNow = (): Promise<AuditCheckpoint | null> => enqueue(checkpoint);

  // At start, before any checkpoint: a broker restarted on a rolled-back log must say so now, not at its first checkpoint.
  const headChecked = enqueue(async () => {
    if (await readHead()) await isRolledBack(await deps.store.checkpoints());
    return null;
  }).catch((err: unknown) => {
    deps.logger.warn('audit trusted head check failed', { cause: errorSummary(err) });
    return null;
  });

  const timer = setInterval(() => {
    checkpointNow().catch((err: unknown) => deps.logger.warn('audit checkpoint failed', { cause: errorSummary(err) }));
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
 * for the last deleted one, linked to the last checkpoint signed, from which
 * the chain is verified from then on. Returns null if nothing is old enough.
 * @throws AuditUnavailableError when the store cannot be written.
 */
export async function pruneAuditLog(store: AuditStore, key: SigningKey, before: Date, now: Date = new Date()): Promise<{ deleted: number; anchor: AuditCheckpoint } | null> {
  const boundary = await store.pruneBoundary(before.toISOString());
  if (boundary === null) return null;
  const previous = lastSignedCheckpoint(await store.checkpoints());
  const anchor = await signCheckpoint(key, boundary, 'prune', now, previous === null ? null : toCheckpointLink(previous));
  return { deleted: await store.prune(anchor), anchor };
}
