import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { IssuerUnavailableError, InvalidTokenError } from '../../src/errors.js';
import type { DevIssuer } from '../../src/dev/issuer.js';
import { DEFAULT_ISSUER_BOUNDS } from '../../src/oidc/issuer-defaults.js';
import type { IssuerConfig } from '../../src/oidc/types.js';

export const DEV_AUDIENCE = 'http://127.0.0.1:8080';

export const JWKS_PATH = '/.well-known/jwks.json';
export const DISCOVERY_PATH = '/.well-known/openid-configuration';

/** An issuer config for a dev issuer: discovery by default; override anything. */
export function issuerConfigFor(issuer: DevIssuer, overrides: Partial<IssuerConfig> = {}): IssuerConfig {
  return {
    name: 'local',
    issuer: issuer.url,
    audiences: [DEV_AUDIENCE],
    algorithms: [issuer.alg],
    clockSkewSeconds: 60,
    ...DEFAULT_ISSUER_BOUNDS,
    ...overrides,
  };
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** A clock a test moves by hand, for the verifier's `now` option: cooldowns and cache ages pass without waiting. */
export interface ManualClock {
  now: () => Date;
  /** Unix seconds, for minting tokens that are current on this clock. */
  seconds(): number;
  advance(ms: number): void;
}

export function manualClock(startMs = Date.now()): ManualClock {
  let ms = startMs;
  return {
    now: () => new Date(ms),
    seconds: () => Math.floor(ms / 1000),
    advance: (by) => {
      ms += by;
    },
  };
}

/** Awaits `promise` and asserts it rejects with an InvalidTokenError of this reason whose message does not leak `token`. */
export async function assertInvalidToken(promise: Promise<unknown>, reason: string, token?: string): Promise<InvalidTokenError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof InvalidTokenError, `expected InvalidTokenError(${reason}), got ${caught instanceof Error ? `${caught.name}(${(caught as { reason?: string }).reason}): ${caught.message}` : String(caught)}`);
  assert.equal(caught.code, 'invalid_token');
  assert.equal(caught.reason, reason, `reason: ${caught.message}`);
  if (token !== undefined && token.trim().length > 8) {
    assert.ok(!caught.message.includes(token), 'the message must not contain the token');
    for (const segment of token.split('.')) {
      if (segment.length > 8) assert.ok(!caught.message.includes(segment), 'the message must not contain a token segment');
    }
  }
  return caught;
}

export async function assertIssuerUnavailable(promise: Promise<unknown>, reason: 'jwks_unavailable' | 'discovery_failed'): Promise<IssuerUnavailableError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof IssuerUnavailableError, `expected IssuerUnavailableError(${reason}), got ${caught instanceof Error ? `${caught.name}(${(caught as { reason?: string }).reason}): ${caught.message}` : String(caught)}`);
  assert.equal(caught.code, 'issuer_unavailable');
  assert.equal(caught.reason, reason);
  return caught;
}

export interface CountingServer {
  url: string;
  /** Requests received so far (any method, any path). */
  count(): number;
  paths(): string[];
  close(): Promise<void>;
}

/**
 * A loopback server that records every request and answers with `respond`
 * (default: a JWK Set holding `jwks`, or 404). Used as the target of
 * token-supplied URLs (`jku`, `x5u`) to prove nothing was fetched.
 */
export async function startCountingServer(respond?: (req: IncomingMessage, res: ServerResponse) => void): Promise<CountingServer> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(req.url ?? '');
    if (respond) return respond(req, res);
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    count: () => seen.length,
    paths: () => [...seen],
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Replaces the payload of a compact JWS, keeping header and signature. */
export function withPayload(token: string, payload: Record<string, unknown>): string {
  const [header, , signature] = token.split('.');
  return `${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${signature}`;
}

export function decodePayload(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

/**
 * A policy of the fixture's `local` issuer for `repository: acme/api` that
 * grants a broker-signed token for `audience`; `extra` lines go before
 * `claims:` (e.g. `allow_token_reuse: true\n`).
 */
export function localJwtPolicy(audience: string, extra = ''): string {
  return `issuer: local\n${extra}claims:\n  repository: acme/api\ngrant:\n  provider: jwt\n  audience: ${audience}\n`;
}
