/**
 * A local OpenID Connect issuer for development and tests.
 *
 * **Never expose it.** Anyone who can reach `POST /token` can mint a token
 * with any claims, signed by a key the broker may be configured to trust. It
 * binds to loopback only, and refuses any other host. It also answers only
 * requests addressed to a loopback name with its own port (the `Host` header),
 * and mints only for `Content-Type: application/json`, so a web page in the
 * developer's browser can mint nothing: not through DNS rebinding (its `Host`
 * is the page's name) and not with a form or a CORS-simple request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID, createPublicKey, type JsonWebKey as NodeJsonWebKey } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import { isLoopbackHostname } from '../oidc/url-policy.js';

export type DevIssuerAlgorithm = 'RS256' | 'ES256';

/** How the discovery and JWKS endpoints misbehave (for tests of an unavailable issuer). */
export type DevIssuerFailure = 'none' | '500' | 'hang' | 'garbage' | 'redirect';

export interface DevIssuerOptions {
  /** Loopback address to bind; default 127.0.0.1. Anything but loopback is refused. */
  host?: string;
  /** Port; 0 (the default) picks a free one. */
  port?: number;
  /** Signing algorithm; default RS256. */
  alg?: DevIssuerAlgorithm;
  /**
   * Where to keep the private JWK (mode 0600) so a restart keeps the key and
   * tokens stay verifiable. Created if missing; rewritten by `rotateKey()`.
   */
  keyFile?: string;
  /** Default `aud` of minted tokens; default `http://127.0.0.1:8080` (the broker's development URL). */
  audience?: string;
}

export interface MintOptions {
  /** `kid` header to put in the token (the token is still signed with the current key). */
  kid?: string;
  /**
   * `alg` to sign with. An asymmetric alg compatible with the current key
   * (RS*, PS* for RSA) signs with that key; `none` produces an unsecured
   * token; `HS256`/`HS384`/`HS512` sign with `secret`, by default the bytes of
   * the current public key in PEM form (the classic algorithm-confusion forgery).
   */
  alg?: string;
  /** HMAC secret for an HS* `alg`. */
  secret?: Uint8Array;
  /** Extra protected-header parameters (`jku`, `x5u`, `jwk`, `crit`, ...); they override `alg`, `typ` and `kid`, and an `undefined` value removes one (`{ kid: undefined }`). */
  header?: Record<string, unknown>;
  /** `exp` = `iat` + this; default 300. */
  expiresInSeconds?: number;
  /** `iat` in unix seconds; default now. */
  issuedAt?: number;
  /** Claim names to leave out (`['aud']`). */
  omit?: string[];
  /**
   * Claims written into the payload as this JSON text, verbatim, replacing any
   * value of the same name: `{ exp: '1e400' }` gives a payload that JSON.parse
   * reads as Infinity, which JSON.stringify cannot write. For tests of
   * hostile tokens only; `POST /token` has no way to reach it.
   */
  rawClaims?: Record<string, string>;
}

export interface DevIssuer {
  /** The issuer URL (`iss` of minted tokens), without a trailing slash. */
  readonly url: string;
  /** `kid` of the current signing key. */
  readonly kid: string;
  /** Signing algorithm of the current key. */
  readonly alg: DevIssuerAlgorithm;
  /** The JWK Set served at `/.well-known/jwks.json` (current key, and the previous one after a rotation). */
  jwks(): { keys: JWK[] };
  /**
   * A signed token. Defaults: `iss` = url, `aud` = the default audience, `sub`
   * = `repo:<repository>:ref:<ref>` of the claims given (`local/dev`,
   * `refs/heads/main` if absent), `iat` = now, `exp` = iat + 300, random
   * `jti`; `claims` override them.
   */
  mint(claims?: Record<string, unknown>, options?: MintOptions): Promise<string>;
  /** New signing key; the previous key stays published (one generation) so tokens already minted still verify. Returns the new `kid`. */
  rotateKey(): Promise<string>;
  /** How many requests reached `path` (e.g. `/.well-known/jwks.json`) since start. */
  requestCount(path: string): number;
  /** Makes discovery and JWKS fail in the given way until set back to `none`. */
  setFailure(mode: DevIssuerFailure): void;
  /** Replaces fields of the discovery document (e.g. a wrong `issuer`); `undefined` restores the real one. */
  setDiscoveryOverride(fields: Record<string, unknown> | undefined): void;
  /** Stops the server and drops every open connection (including hung ones). */
  close(): Promise<void>;
}

interface SigningKey {
  kid: string;
  alg: DevIssuerAlgorithm;
  privateJwk: JWK;
  publicJwk: JWK;
  privateKey: CryptoKey;
}

const DISCOVERY_PATH = '/.well-known/openid-configuration';
const JWKS_PATH = '/.well-known/jwks.json';
const TOKEN_PATH = '/token';
const REDIRECT_PREFIX = '/redirected';
const MAX_TOKEN_REQUEST_BYTES = 64 * 1024;
/** The names, besides its own URL's host, under which the dev issuer is reached (with its port). */
const LOOPBACK_NAMES = ['127.0.0.1', '[::1]', 'localhost'];

/**
 * Starts a local OIDC issuer serving `GET /.well-known/openid-configuration`,
 * `GET /.well-known/jwks.json` and `POST /token` (JSON body: the claims, sent
 * as `Content-Type: application/json`, else 415; answers `{"token": "..."}`).
 * A request whose `Host` is not `127.0.0.1`, `[::1]` or `localhost` with the
 * issuer's port (or the host of its URL) gets 421 `misdirected_request`.
 *
 * For local development and tests only: it signs whatever it is asked to.
 *
 * @throws TypeError if `host` is not a loopback address.
 * @example
 * const issuer = await startDevIssuer({ port: 8081, keyFile: './data/dev-issuer.jwk' });
 * // curl -s -X POST 'http://127.0.0.1:8081/token?format=raw' -H 'content-type: application/json' -d '{"repository":"acme/api","ref":"refs/heads/main"}'
 * const token = await issuer.mint({ repository: 'acme/api', ref: 'refs/heads/main' });
 * await issuer.close();
 */
export async function startDevIssuer(options: DevIssuerOptions = {}): Promise<DevIssuer> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopbackHostname(host.includes(':') && !host.startsWith('[') ? `[${host}]` : host)) {
    throw new TypeError(`the dev issuer binds to loopback only (127.0.0.0/8, ::1, localhost), not ${JSON.stringify(host)}`);
  }
  const defaultAudience = options.audience ?? 'http://127.0.0.1:8080';
  let current = options.keyFile ? await loadOrCreateKey(options.keyFile, options.alg ?? 'RS256') : await generateSigningKey(options.alg ?? 'RS256');
  let previous: SigningKey | undefined;
  let failure: DevIssuerFailure = 'none';
  let discoveryOverride: Record<string, unknown> | undefined;
  const counts = new Map<string, number>();
  let url = '';
  // Filled once listening, when the port is known.
  let servedHosts: ReadonlySet<string> = new Set();

  const jwks = (): { keys: JWK[] } => ({ keys: [current.publicJwk, ...(previous ? [previous.publicJwk] : [])].map((k) => ({ ...k })) });

  const mint = async (claims: Record<string, unknown> = {}, mintOptions: MintOptions = {}): Promise<string> => {
    const iat = mintOptions.issuedAt ?? Math.floor(Date.now() / 1000);
    const payload: Record<string, unknown> = {
      iss: url,
      aud: defaultAudience,
      sub: defaultSubject(claims),
      iat,
      exp: iat + (mintOptions.expiresInSeconds ?? 300),
      jti: randomUUID(),
      ...claims,
    };
    for (const name of mintOptions.omit ?? []) delete payload[name];
    const alg = mintOptions.alg ?? current.alg;
    const header: Record<string, unknown> = { alg, typ: 'JWT', kid: mintOptions.kid ?? current.kid, ...mintOptions.header };
    for (const [name, value] of Object.entries(header)) if (value === undefined) delete header[name];
    const payloadBytes = new TextEncoder().encode(toPayloadJson(payload, mintOptions.rawClaims ?? {}));

    const signingInput = `${b64u(JSON.stringify(header))}.${b64u(payloadBytes)}`;
    if (alg === 'none') return `${signingInput}.`;
    let key: CryptoKey;
    const hmac = /^HS(256|384|512)$/.exec(alg);
    if (hmac) {
      const secret = mintOptions.secret ?? new TextEncoder().encode(toPublicPem(current.publicJwk));
      key = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: `SHA-${hmac[1]}` }, false, ['sign']);
    } else if (alg === current.alg) {
      key = current.privateKey;
    } else {
      // Same key material under another algorithm (RS256 key as PS256, ...); jose refuses incompatible pairs.
      key = (await importJWK({ ...current.privateJwk, alg }, alg)) as CryptoKey;
    }
    // Signed by hand rather than with jose's CompactSign so tests can put any
    // header in (unknown `crit` extensions, `b64`), which jose rightly refuses to produce.
    const signature = await crypto.subtle.sign(signParams(alg, key), key, new TextEncoder().encode(signingInput));
    return `${signingInput}.${b64u(new Uint8Array(signature))}`;
  };

  const rotateKey = async (): Promise<string> => {
    const next = await generateSigningKey(current.alg);
    if (options.keyFile) await writeKeyFile(options.keyFile, next);
    previous = current;
    current = next;
    return next.kid;
  };

  const discoveryDocument = (): Record<string, unknown> => ({
    issuer: url,
    jwks_uri: `${url}${JWKS_PATH}`,
    token_endpoint: `${url}${TOKEN_PATH}`,
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: [current.alg],
    claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'],
    ...discoveryOverride,
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    counts.set(pathname, (counts.get(pathname) ?? 0) + 1);

    if (!servedHosts.has((req.headers.host ?? '').toLowerCase())) {
      return sendJson(res, 421, {
        error: 'misdirected_request',
        error_description: `the dev issuer answers only requests addressed to ${[...servedHosts].join(', ')} (Host header)`,
      });
    }

    if (req.method === 'POST' && pathname === TOKEN_PATH) {
      if (!isJsonMediaType(req.headers['content-type'])) {
        return sendJson(res, 415, { error: 'unsupported_media_type', error_description: 'POST /token takes Content-Type: application/json' });
      }
      const body = await readBody(req, MAX_TOKEN_REQUEST_BYTES);
      if (body === undefined) return sendJson(res, 413, { error: 'request_too_large' });
      let claims: unknown;
      try {
        claims = body.length === 0 ? {} : JSON.parse(body);
      } catch {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'the body must be a JSON object of claims' });
      }
      if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
        return sendJson(res, 400, { error: 'invalid_request', error_description: 'the body must be a JSON object of claims' });
      }
      const token = await mint(claims as Record<string, unknown>);
      // `?format=raw` answers the bare token, so a shell can use it without a JSON tool.
      if (new URL(req.url ?? '/', 'http://localhost').searchParams.get('format') === 'raw') {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        return void res.end(token);
      }
      return sendJson(res, 200, { token });
    }

    const served = pathname.startsWith(REDIRECT_PREFIX) ? pathname.slice(REDIRECT_PREFIX.length) : pathname;
    if (req.method !== 'GET' || (served !== DISCOVERY_PATH && served !== JWKS_PATH)) {
      return sendJson(res, 404, { error: 'not_found' });
    }
    // Failures apply to the metadata endpoints; the redirect target itself always answers.
    if (!pathname.startsWith(REDIRECT_PREFIX)) {
      switch (failure) {
        case 'none':
          break;
        case '500':
          return sendJson(res, 500, { error: 'server_error' });
        case 'hang':
          return; // never answer; close() drops the connection
        case 'garbage':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"keys": [ this is not json');
          return;
        case 'redirect':
          res.writeHead(302, { location: `${url}${REDIRECT_PREFIX}${pathname}` });
          res.end();
          return;
      }
    }
    return sendJson(res, 200, served === DISCOVERY_PATH ? discoveryDocument() : jwks());
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  url = `http://${host === 'localhost' ? 'localhost' : urlHost}:${address.port}`;
  servedHosts = new Set([new URL(url).host, ...LOOPBACK_NAMES.map((name) => `${name}:${address.port}`)]);

  return {
    url,
    get kid() {
      return current.kid;
    },
    get alg() {
      return current.alg;
    },
    jwks,
    mint,
    rotateKey,
    requestCount: (p: string) => counts.get(p) ?? 0,
    setFailure(mode: DevIssuerFailure) {
      failure = mode;
    },
    setDiscoveryOverride(fields: Record<string, unknown> | undefined) {
      discoveryOverride = fields === undefined ? undefined : { ...fields };
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

async function generateSigningKey(alg: DevIssuerAlgorithm): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  return toSigningKey({ ...privateJwk, alg, kid: await calculateJwkThumbprint(privateJwk) }, alg);
}

async function toSigningKey(privateJwk: JWK, alg: DevIssuerAlgorithm): Promise<SigningKey> {
  const kid = privateJwk.kid ?? (await calculateJwkThumbprint(privateJwk));
  const privateKey = (await importJWK({ ...privateJwk, alg }, alg)) as CryptoKey;
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, oth: _oth, key_ops: _ops, ext: _ext, ...publicPart } = privateJwk;
  return { kid, alg, privateJwk: { ...privateJwk, kid, alg }, publicJwk: { ...publicPart, kid, alg, use: 'sig' }, privateKey };
}

async function loadOrCreateKey(file: string, alg: DevIssuerAlgorithm): Promise<SigningKey> {
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text === undefined) {
    const key = await generateSigningKey(alg);
    await writeKeyFile(file, key);
    return key;
  }
  const jwk = JSON.parse(text) as JWK;
  const storedAlg: DevIssuerAlgorithm = jwk.alg === 'ES256' ? 'ES256' : jwk.alg === 'RS256' ? 'RS256' : alg;
  return toSigningKey(jwk, storedAlg);
}

async function writeKeyFile(file: string, key: SigningKey): Promise<void> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFile(file, `${JSON.stringify(key.privateJwk, null, 2)}\n`, { mode: 0o600 });
  // writeFile's mode applies only when it creates the file.
  await chmod(file, 0o600);
}

/** `payload` as JSON, with each of `rawClaims` in place of its value: its name, then its JSON text as given. */
function toPayloadJson(payload: Record<string, unknown>, rawClaims: Record<string, string>): string {
  const cooked = JSON.stringify(Object.fromEntries(Object.entries(payload).filter(([name]) => !Object.hasOwn(rawClaims, name))));
  const raw = Object.entries(rawClaims).map(([name, text]) => `${JSON.stringify(name)}:${text}`);
  if (raw.length === 0) return cooked;
  return `${cooked.slice(0, -1)}${cooked === '{}' ? '' : ','}${raw.join(',')}}`;
}

function toPublicPem(publicJwk: JWK): string {
  return createPublicKey({ key: publicJwk as NodeJsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
}

/** WebCrypto parameters of a JWS algorithm (RFC 7518 section 3). */
function signParams(alg: string, key: CryptoKey): Parameters<typeof crypto.subtle.sign>[0] {
  const bits = alg.slice(2);
  if (alg.startsWith('PS')) return { name: 'RSA-PSS', saltLength: Number(bits) / 8 };
  if (alg.startsWith('ES')) return { name: 'ECDSA', hash: `SHA-${bits}` };
  return key.algorithm.name === 'HMAC' ? { name: 'HMAC' } : { name: 'RSASSA-PKCS1-v1_5' };
}

/**
 * GitHub's `sub` for a push (`repo:OWNER/NAME:ref:REF`), from the token's own
 * `repository` and `ref` (`local/dev` and `refs/heads/main` when it has none),
 * so a token minted with only those claims does not name another repository.
 */
function defaultSubject(claims: Record<string, unknown>): string {
  const repository = typeof claims.repository === 'string' ? claims.repository : 'local/dev';
  const ref = typeof claims.ref === 'string' ? claims.ref : 'refs/heads/main';
  return `repo:${repository}:ref:${ref}`;
}

function b64u(input: string | Uint8Array): string {
  return Buffer.from(input).toString('base64url');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** `application/json`, with or without parameters (`; charset=utf-8`), in any case. */
function isJsonMediaType(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === 'application/json';
}

/** The body as text, or undefined if it is larger than `maxBytes`. */
async function readBody(req: IncomingMessage, maxBytes: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
