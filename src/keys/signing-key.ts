import { createHash, createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { Logger } from '../logger.js';

export const SIGNING_ALGORITHM = 'ES256';

export interface SigningKey {
  alg: typeof SIGNING_ALGORITHM;
  kid: string;
  privateKey: CryptoKey;
  /**
   * The same private key as a node:crypto KeyObject, made once when the key
   * file is read: {@link signJws} signs with it, without WebCrypto's
   * per-call overhead on the event loop (docs/performance.md).
   */
  privateKeyObject: KeyObject;
  /** Public half only, with kid, alg and use, as served at /.well-known/jwks.json. */
  publicJwk: JWK;
}

/**
 * A key's place in its life (docs/configuration.md, `providers.jwt`):
 * `active` signs; `published` is served in the JWKS so what it signed keeps
 * verifying; `retired` is no longer served and only verifies audit checkpoints.
 */
export type KeyState = 'active' | 'published' | 'retired';
export const KEY_STATES: readonly KeyState[] = ['active', 'published', 'retired'];

export interface KeyEntry {
  kid: string;
  state: KeyState;
  /** Null for a key file written before rotation existed (a bare JWK). */
  createdAt: string | null;
  publicJwk: JWK;
}

/** One read of the key file: immutable, swapped whole on reload. */
export interface SigningKeySet {
  /** Signs broker tokens and audit checkpoints. */
  active: SigningKey;
  /** Every key in the file, in file order (the active key first once rotated). */
  entries: readonly KeyEntry[];
  /** What /.well-known/jwks.json serves: the active and published keys, never retired ones. */
  jwks: { keys: JWK[] };
  /** Every key held (active, published, retired) by kid: checkpoints signed by any of them verify. */
  verificationKeys: ReadonlyMap<string, CryptoKey | Uint8Array>;
  /** SHA-256 of the file's bytes: a reload that reads the same bytes changes nothing. */
  sha256: string;
}

/**
 * A compact JWS (RFC 7515) of `payload`, signed by `key`: ES256, the
 * signature as the raw r || s pair JWS requires. The protected header is the
 * key's `alg` and `kid`, then `header`'s other parameters. The signature is
 * computed on libuv's thread pool (node:crypto's callback form), not on the
 * event loop, which only serialises and encodes (docs/performance.md,
 * "Signatures and verifications on the thread pool").
 *
 * @throws TypeError if `payload` or `header` cannot be serialised as JSON.
 */
export async function signJws(key: SigningKey, header: Record<string, unknown> & { alg?: never; kid?: never }, payload: Record<string, unknown>): Promise<string> {
  const signingInput = `${base64urlJson({ alg: key.alg, kid: key.kid, ...header })}.${base64urlJson(payload)}`;
  const signature = await new Promise<Buffer>((resolve, reject) =>
    sign('sha256', Buffer.from(signingInput), { key: key.privateKeyObject, dsaEncoding: 'ieee-p1363' }, (err, signed) => (err ? reject(err) : resolve(signed))),
  );
  return `${signingInput}.${signature.toString('base64url')}`;
}

function base64urlJson(value: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** Generates a new ES256 private JWK whose kid is its RFC 7638 thumbprint. */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = await generateKeyPair(SIGNING_ALGORITHM, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: SIGNING_ALGORITHM, use: 'sig' };
}

/** The signing key file does not exist (loadSigningKeySet never creates one). */
export class SigningKeyMissingError extends Error {
  override name = 'SigningKeyMissingError';
  constructor(readonly file: string) {
    super(`the signing key ${file} does not exist`);
  }
}

/** The key file cannot be read or written, or is not a valid key file. Messages never quote key material. */
export class SigningKeyFileError extends Error {
  override name = 'SigningKeyFileError';
}

/** A `keys rotate` or `keys retire` that the key set refuses (retiring the active key, an unknown kid). */
export class KeyChangeRefusedError extends Error {
  override name = 'KeyChangeRefusedError';
}

/** Public keys by kid, from JWKs such as the broker's /.well-known/jwks.json. */
export async function importPublicKeys(jwks: readonly JWK[]): Promise<Map<string, CryptoKey | Uint8Array>> {
  const keys = new Map<string, CryptoKey | Uint8Array>();
  for (const jwk of jwks) if (jwk.kid !== undefined) keys.set(jwk.kid, await importJWK(jwk, SIGNING_ALGORITHM));
  return keys;
}

/**
 * Reads the broker's signing keys from `file`, read-only: never creates or
 * changes it (the serving broker, and offline tools such as `audit verify`).
 * The file is a private JWK (one active key, as `keys generate` writes it) or
 * the key set `keys rotate` writes. Refuses a file that other users can read
 * or write.
 * @throws SigningKeyMissingError if the file does not exist; SigningKeyFileError if it cannot be read or is invalid.
 */
export async function loadSigningKeySet(file: string): Promise<SigningKeySet> {
  return toKeySet(await readKeyFile(file), file);
}

async function toKeySet(text: string, file: string): Promise<SigningKeySet> {
  const stored = parseKeyFile(text, file);
  const entries: KeyEntry[] = [];
  let active: SigningKey | undefined;
  for (const key of await withKids(stored)) {
    const publicJwk = publicPart(key);
    entries.push({ kid: key.kid, state: key.state, createdAt: key.created_at ?? null, publicJwk });
    if (key.state === 'active') {
      let privateKey: CryptoKey;
      try {
        privateKey = (await importJWK({ ...key, alg: SIGNING_ALGORITHM }, SIGNING_ALGORITHM)) as CryptoKey;
      } catch {
        throw new SigningKeyFileError(`${file}: the active key ${key.kid} is not a valid ES256 (P-256) private key`);
      }
      // Made from the JWK, not from the CryptoKey: jose imports private keys non-extractable, and
      // KeyObject.from() on one is deprecated (DEP0204, a warning on stderr at every start on Node.js 24).
      const privateKeyObject = createPrivateKey({ key: { kty: key.kty, crv: key.crv, x: key.x, y: key.y, d: key.d }, format: 'jwk' });
      active = { alg: SIGNING_ALGORITHM, kid: key.kid, privateKey, privateKeyObject, publicJwk };
    }
  }
  // parseKeyFile checked that exactly one key is active.
  if (active === undefined) throw new SigningKeyFileError(`${file} has no active key`);
  let verificationKeys: Map<string, CryptoKey | Uint8Array>;
  try {
    verificationKeys = await importPublicKeys(entries.map((e) => e.publicJwk));
  } catch {
    throw new SigningKeyFileError(`${file} holds a key that is not a valid ES256 (P-256) public key`);
  }
  return {
    active,
    entries,
    jwks: { keys: entries.filter((e) => e.state !== 'retired').map((e) => e.publicJwk) },
    verificationKeys,
    sha256: createHash('sha256').update(text).digest('hex'),
  };
}

/** The active key of the key file, read-only (see loadSigningKeySet). */
export async function loadSigningKey(file: string): Promise<SigningKey> {
  return (await loadSigningKeySet(file)).active;
}

/**
 * Loads the broker's signing keys, creating a key set with one active key
 * (mode 0600, exclusively, so two starting replicas cannot both write) if the
 * file does not exist: the development defaults start with no key.
 */
export async function loadOrCreateSigningKeySet(file: string, logger: Logger): Promise<SigningKeySet> {
  try {
    return await loadSigningKeySet(file);
  } catch (err) {
    if (!(err instanceof SigningKeyMissingError)) throw err;
  }
  await createKeyFile(file, logger);
  return loadSigningKeySet(file);
}

/** The active key, created if missing (see loadOrCreateSigningKeySet). */
export async function loadOrCreateSigningKey(file: string, logger: Logger): Promise<SigningKey> {
  return (await loadOrCreateSigningKeySet(file, logger)).active;
}

/**
 * Makes a new active key; the active key becomes `published` (served, and
 * its private half is dropped: only the active key can sign). Replaces the
 * file atomically, so a broker reading it sees the old set or the new one.
 * @returns the new and the previous active kid.
 * @throws SigningKeyMissingError, SigningKeyFileError (also when the directory is not writable).
 */
export function rotateSigningKey(file: string, now: Date = new Date()): Promise<{ kid: string; previous: string }> {
  return whileLocked(file, async () => {
    const keys = await readStoredKeys(file);
    const previous = keys.find((k) => k.state === 'active')!;
    const jwk = await generateSigningJwk();
    const next: StoredKey = { ...(jwk as StoredKey), state: 'active', created_at: now.toISOString() };
    await writeKeyFile(file, [next, ...keys.map((k) => (k.state === 'active' ? { ...publicMembers(k), state: 'published' as const } : k))]);
    return { kid: next.kid, previous: previous.kid };
  });
}

/**
 * Marks a published key `retired`: no longer served in the JWKS (tokens it
 * signed stop verifying), kept so the audit checkpoints it signed still do.
 * @returns false if it was retired already (nothing is written).
 * @throws KeyChangeRefusedError for the active key or a kid the file does not hold; SigningKeyMissingError, SigningKeyFileError.
 */
export function retireSigningKey(file: string, kid: string): Promise<boolean> {
  return whileLocked(file, async () => {
    const keys = await readStoredKeys(file);
    const key = keys.find((k) => k.kid === kid);
    if (key === undefined) throw new KeyChangeRefusedError(`no key ${kid} in ${file}; 'oidc-broker keys list' shows the kids`);
    if (key.state === 'active') throw new KeyChangeRefusedError(`${kid} is the active key and cannot be retired; run 'oidc-broker keys rotate' first, then retire it once tokens it signed have expired`);
    if (key.state === 'retired') return false;
    await writeKeyFile(
      file,
      keys.map((k) => (k.kid === kid ? { ...publicMembers(k), state: 'retired' as const } : k)),
    );
    return true;
  });
}

/**
 * Runs a read-change-write of the key file holding `<file>.lock` (created
 * exclusively), so two `keys` commands at once cannot both write and lose
 * the other's key.
 */
async function whileLocked<T>(file: string, change: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  try {
    await writeFile(lock, `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    if (code === 'EEXIST') throw new SigningKeyFileError(`${lock} exists: another 'oidc-broker keys' command is changing ${file}, or one was interrupted; remove the lock file if none is running`);
    if (code === 'ENOENT') throw new SigningKeyMissingError(file);
    throw cannotWrite(file, code);
  }
  try {
    return await change();
  } finally {
    await unlink(lock);
  }
}

function cannotWrite(file: string, code: string): SigningKeyFileError {
  return new SigningKeyFileError(`cannot write the signing key ${file} (${code}): the keys commands need write access to its directory ${path.dirname(file)}`);
}

/** A key as stored in the key set file: a JWK with the broker's two members. */
type StoredKey = JWK & { kid: string; state: KeyState; created_at?: string };

/** The file's keys as stored, once the whole file loads as a key set: a change never builds on a broken file. */
async function readStoredKeys(file: string): Promise<StoredKey[]> {
  const text = await readKeyFile(file);
  await toKeySet(text, file);
  return withKids(parseKeyFile(text, file));
}

async function readKeyFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new SigningKeyMissingError(file);
    throw new SigningKeyFileError(`cannot read the signing key ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const mode = (await stat(file)).mode & 0o077;
  if (mode !== 0) throw new SigningKeyFileError(`the signing key ${file} is readable or writable by other users; run chmod 600 on it`);
  return text;
}

/** The file's keys, checked: a bare private JWK is one active key. */
function parseKeyFile(text: string, file: string): (JWK & { state: KeyState; created_at?: string })[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the input, which is private key material.
    throw new SigningKeyFileError(`${file} is not a JSON private JWK or key set`);
  }
  if (typeof parsed !== 'object' || parsed === null) throw new SigningKeyFileError(`${file} is not a JSON private JWK or key set`);
  const set = parsed as { keys?: unknown };
  const keys: unknown[] = Array.isArray(set.keys) ? set.keys : 'keys' in set ? [] : [{ ...(parsed as JWK), state: 'active' }];
  if (keys.length === 0) throw new SigningKeyFileError(`${file}: "keys" must be a non-empty array`);
  const kids = new Set<string>();
  const checked = keys.map((key, i) => {
    const where = Array.isArray(set.keys) ? `${file}: keys[${i}]` : file;
    if (typeof key !== 'object' || key === null) throw new SigningKeyFileError(`${where} is not a JWK`);
    const k = key as Record<string, unknown>;
    if (k.kty !== 'EC' || k.crv !== 'P-256' || typeof k.x !== 'string' || typeof k.y !== 'string') throw new SigningKeyFileError(`${where} is not an ES256 (P-256) JWK`);
    if (!KEY_STATES.includes(k.state as KeyState)) throw new SigningKeyFileError(`${where}: state must be one of ${KEY_STATES.join(', ')}`);
    if (k.created_at !== undefined && (typeof k.created_at !== 'string' || Number.isNaN(Date.parse(k.created_at)))) throw new SigningKeyFileError(`${where}: created_at must be an RFC 3339 time`);
    if (k.state === 'active' && typeof k.d !== 'string') throw new SigningKeyFileError(`${where} is the active key but not a private JWK`);
    if (k.kid !== undefined) {
      if (typeof k.kid !== 'string' || k.kid === '') throw new SigningKeyFileError(`${where}: kid must be a non-empty string`);
      if (kids.has(k.kid)) throw new SigningKeyFileError(`${where}: kid ${k.kid} appears twice`);
      kids.add(k.kid);
    }
    return key as JWK & { state: KeyState; created_at?: string };
  });
  const active = checked.filter((k) => k.state === 'active').length;
  if (active !== 1) throw new SigningKeyFileError(`${file} must have exactly one active key, has ${active}`);
  return checked;
}

/** Keys without a kid (a bare JWK) are named by their RFC 7638 thumbprint. */
async function withKids(keys: (JWK & { state: KeyState; created_at?: string })[]): Promise<StoredKey[]> {
  return Promise.all(keys.map(async (k) => ({ ...k, kid: k.kid ?? (await calculateJwkThumbprint(k)) })));
}

function publicPart(key: StoredKey): JWK {
  const { kty, crv, x, y, kid } = key;
  return { kty, crv, x, y, kid, alg: SIGNING_ALGORITHM, use: 'sig' };
}

/** A stored key without its private half, keeping the broker's members. */
function publicMembers(key: StoredKey): StoredKey {
  return { ...publicPart(key), kid: key.kid, state: key.state, ...(key.created_at === undefined ? {} : { created_at: key.created_at }) };
}

/** The key set file's text: a JWK Set whose keys carry `state` and `created_at`. */
function serialize(keys: StoredKey[]): string {
  return `${JSON.stringify({ keys })}\n`;
}

/**
 * Replaces the key file: the new content goes to a private temporary file in
 * the same directory, then rename() puts it in place in one step, so a reader
 * never sees half a file.
 */
async function writeKeyFile(file: string, keys: StoredKey[]): Promise<void> {
  const temp = `${file}.${process.pid}.${randomUUID()}.tmp`;
  try {
    await writeFile(temp, serialize(keys), { mode: 0o600, flag: 'wx' });
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw cannotWrite(file, (err as NodeJS.ErrnoException).code ?? 'error');
  }
}

/**
 * Writes a new key set to a private temporary file, then links it into place:
 * link() fails if the name exists, so two replicas starting together never
 * read a half-written key, and the loser simply uses the winner's.
 */
async function createKeyFile(file: string, logger: Logger): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const jwk = await generateSigningJwk();
  const temp = `${file}.${process.pid}.${randomUUID()}.tmp`;
  const keys: StoredKey[] = [{ ...(jwk as StoredKey), state: 'active', created_at: new Date().toISOString() }];
  await writeFile(temp, serialize(keys), { mode: 0o600, flag: 'wx' });
  try {
    await link(temp, file);
    logger.info('created a new broker signing key', { file, kid: jwk.kid, alg: SIGNING_ALGORITHM });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(temp);
  }
}
