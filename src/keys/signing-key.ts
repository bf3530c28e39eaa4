import { randomUUID } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { Logger } from '../logger.js';

export const SIGNING_ALGORITHM = 'ES256';

export interface SigningKey {
  alg: typeof SIGNING_ALGORITHM;
  kid: string;
  privateKey: CryptoKey;
  /** Public half only, with kid, alg and use, as served at /.well-known/jwks.json. */
  publicJwk: JWK;
}

/** Generates a new ES256 private JWK whose kid is its RFC 7638 thumbprint. */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = await generateKeyPair(SIGNING_ALGORITHM, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: SIGNING_ALGORITHM, use: 'sig' };
}

/** The signing key file does not exist (loadSigningKey never creates one). */
export class SigningKeyMissingError extends Error {
  override name = 'SigningKeyMissingError';
  constructor(readonly file: string) {
    super(`the signing key ${file} does not exist`);
  }
}

/**
 * Loads the broker's signing key from `file`, read-only: never creates one
 * (for offline tools such as `oidc-broker audit verify`). Refuses a file that
 * other users can read or write.
 * @throws SigningKeyMissingError if the file does not exist; Error if it cannot be read or is not an ES256 private JWK.
 */
export async function loadSigningKey(file: string): Promise<SigningKey> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new SigningKeyMissingError(file);
    throw new Error(`cannot read the signing key ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const mode = (await stat(file)).mode & 0o077;
  if (mode !== 0) throw new Error(`the signing key ${file} is readable or writable by other users; run chmod 600 on it`);
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch {
    // JSON.parse's message quotes the input, which is private key material.
    throw new Error(`${file} is not a JSON private JWK`);
  }
  return toSigningKey(jwk, file);
}

/**
 * Loads the broker's signing key, creating it (mode 0600, exclusively, so two
 * starting replicas cannot both write) if the file does not exist.
 */
export async function loadOrCreateSigningKey(file: string, logger: Logger): Promise<SigningKey> {
  try {
    return await loadSigningKey(file);
  } catch (err) {
    if (!(err instanceof SigningKeyMissingError)) throw err;
  }
  await createKeyFile(file, logger);
  return loadSigningKey(file);
}

/**
 * Writes a new key to a private temporary file, then links it into place:
 * link() fails if the name exists, so two replicas starting together never
 * read a half-written key, and the loser simply uses the winner's.
 */
async function createKeyFile(file: string, logger: Logger): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const jwk = await generateSigningJwk();
  const temp = `${file}.${process.pid}.${randomUUID()}.tmp`;
  await writeFile(temp, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
  try {
    await link(temp, file);
    logger.info('created a new broker signing key', { file, kid: jwk.kid, alg: SIGNING_ALGORITHM });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(temp);
  }
}

async function toSigningKey(jwk: JWK, file: string): Promise<SigningKey> {
  if (typeof jwk !== 'object' || jwk === null || jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.d) throw new Error(`${file} is not an ES256 (P-256) private JWK`);
  const kid = jwk.kid ?? (await calculateJwkThumbprint(jwk));
  const privateKey = (await importJWK({ ...jwk, alg: SIGNING_ALGORITHM }, SIGNING_ALGORITHM)) as CryptoKey;
  const { kty, crv, x, y } = jwk;
  return { alg: SIGNING_ALGORITHM, kid, privateKey, publicJwk: { kty, crv, x, y, kid, alg: SIGNING_ALGORITHM, use: 'sig' } };
}
