/**
 * The trusted head: the newest checkpoint the broker signed, kept as its
 * compact JWS in a file on the broker's own disk (`audit.head_file`), where
 * someone who can only write the audit database cannot roll it back
 * (docs/audit.md, "Trusted head"). The same text is what an auditor passes
 * to `oidc-broker audit verify --trusted-head`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { decodeProtectedHeader, type CryptoKey } from 'jose';
import { isCheckpointAuthentic } from './checkpoints.js';
import type { AuditCheckpoint } from './types.js';

/**
 * A checkpoint read from its compact JWS: authentic, or not, with what it
 * claims to be when it is shaped like a checkpoint at all (null when not).
 */
export type CheckpointReading = { authentic: true; checkpoint: AuditCheckpoint } | { authentic: false; claimed: AuditCheckpoint | null };

/**
 * Reads a checkpoint an auditor or the head file gives as its compact JWS,
 * and checks that one of `keys` signed it: a trusted head nobody signed
 * would prove nothing.
 */
export async function readAuthenticCheckpoint(jws: string, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<CheckpointReading> {
  const claimed = parseCheckpointJws(jws);
  if (claimed !== null && (await isCheckpointAuthentic(claimed, keys))) return { authentic: true, checkpoint: claimed };
  return { authentic: false, claimed };
}

/**
 * Reads a checkpoint from its compact JWS alone (a head file, or a JWS copied
 * from an `audit checkpoint` log line), without checking the signature:
 * readAuthenticCheckpoint does both. Null if it is not shaped like one.
 */
export function parseCheckpointJws(text: string): AuditCheckpoint | null {
  const jws = text.trim();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(jws)) return null;
  try {
    const { kid } = decodeProtectedHeader(jws);
    const payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const { seq, hash, time, kind } = payload;
    if (typeof kid !== 'string' || !Number.isSafeInteger(seq) || typeof hash !== 'string' || typeof time !== 'string' || (kind !== 'periodic' && kind !== 'prune')) return null;
    return { seq: seq as number, hash, time, kind, kid, jws };
  } catch {
    return null;
  }
}

/**
 * The checkpoint in the head file, or null if there is no file yet (nothing
 * was signed with this file configured).
 * @throws Error when the file cannot be read or does not hold a checkpoint JWS.
 */
export async function readTrustedHeadFile(file: string): Promise<AuditCheckpoint | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const head = parseCheckpointJws(text);
  if (head === null) throw new Error(`${file} does not hold a checkpoint JWS`);
  return head;
}

/**
 * Replaces the head file with `checkpoint`'s JWS: written to a temporary
 * file (0600) in the same directory, flushed, then renamed over it, so a
 * crash leaves the old head or the new one, never a torn file.
 */
export async function writeTrustedHeadFile(file: string, checkpoint: AuditCheckpoint): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(`${checkpoint.jws}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
