import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { InvalidTokenError } from '../errors.js';
import type { SigningKey } from '../keys/signing-key.js';

/** What a console session cookie vouches for (docs/console.md, "Security model"). */
export interface ConsoleSession {
  auditor: string;
  /**
   * The first 16 hex digits of the SHA-256 of the token the auditor signed in
   * with: a session ends when the auditor's token is replaced in the config,
   * not only when the auditor is removed.
   */
  tokenBinding: string;
  expiresAt: Date;
}

/** The part of an auditor's token hash a session carries (ConsoleSession.tokenBinding). */
export function sessionTokenBinding(tokenSha256: string): string {
  return tokenSha256.slice(0, 16);
}

/** Longer values are refused before any parsing: a cookie is a few hundred bytes. */
const MAX_VALUE_LENGTH = 1024;
const HKDF_INFO = 'oidc-broker console session v1';

/**
 * The HMAC key for session cookies, derived (HKDF-SHA256) from the active
 * signing key's private scalar: every replica reads the same key file, so a
 * cookie one replica issued verifies on another with no shared store, and the
 * signing key itself never signs anything but tokens and checkpoints. A key
 * rotation ends every session (docs/console.md).
 */
const derivedKeys = new WeakMap<SigningKey, Buffer>();
function sessionKey(key: SigningKey): Buffer {
  let derived = derivedKeys.get(key);
  if (derived === undefined) {
    const d = key.privateKeyObject.export({ format: 'jwk' }).d;
    if (d === undefined) throw new TypeError('the active signing key has no private part');
    derived = Buffer.from(hkdfSync('sha256', Buffer.from(d, 'base64url'), Buffer.alloc(0), HKDF_INFO, 32));
    derivedKeys.set(key, derived);
  }
  return derived;
}

function mac(key: SigningKey, payload: string): Buffer {
  return createHmac('sha256', sessionKey(key)).update(payload).digest();
}

/**
 * The cookie value for `auditor`: `<base64url JSON {a, t, exp}>.<base64url HMAC>`.
 * It holds the auditor's name, the token binding and the expiry, never the auditor's token.
 */
export function issueConsoleSession(key: SigningKey, session: ConsoleSession): string {
  const payload = Buffer.from(JSON.stringify({ a: session.auditor, t: session.tokenBinding, exp: Math.floor(session.expiresAt.getTime() / 1000) })).toString('base64url');
  return `${payload}.${mac(key, payload).toString('base64url')}`;
}

/**
 * The session a cookie value vouches for.
 * @throws InvalidTokenError `bad_session` for a value this broker's key did not sign, `session_expired` past its expiry.
 */
export function verifyConsoleSession(key: SigningKey, value: string, now: Date): ConsoleSession {
  const bad = () => new InvalidTokenError('The console session is not valid; sign in again.', { reason: 'bad_session' });
  const [payload, signature, ...rest] = value.length > MAX_VALUE_LENGTH ? [] : value.split('.');
  if (payload === undefined || signature === undefined || rest.length > 0) throw bad();
  const presented = Buffer.from(signature, 'base64url');
  const expected = mac(key, payload);
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) throw bad();
  // Signed by this broker's key, so the payload is the one issueConsoleSession wrote.
  const { a, t, exp } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { a: string; t?: string; exp: number };
  if (exp * 1000 <= now.getTime()) throw new InvalidTokenError('The console session has expired; sign in again.', { reason: 'session_expired' });
  // A cookie from before sessions carried a binding has none: it is refused like any other stale one.
  if (typeof t !== 'string') throw bad();
  return { auditor: a, tokenBinding: t, expiresAt: new Date(exp * 1000) };
}

/**
 * The session cookie's name and Secure flag. An `https` public URL gets a
 * Secure cookie with the `__Host-` prefix (the browser then refuses it from
 * plain http, from a subdomain or with another Path); a broker served over
 * `http`, which the config allows only on loopback, gets neither, or the
 * browser would never send it back.
 */
export function consoleCookie(publicUrl: string): { name: string; secure: boolean } {
  const secure = new URL(publicUrl).protocol === 'https:';
  return { name: secure ? '__Host-oidc-broker-console' : 'oidc-broker-console', secure };
}

/** The value of cookie `name` in a Cookie header; undefined when absent or sent more than once. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  const values = (header ?? '')
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part.startsWith(`${name}=`))
    .map((part) => part.slice(name.length + 1));
  return values.length === 1 ? values[0] : undefined;
}
