import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import { InvalidTokenError, type BrokerError } from '../errors.js';
import type { SigningKey } from '../keys/signing-key.js';
import type { Limits } from '../limits/rate-limit.js';
import type { Logger } from '../logger.js';
import type { BrokerMetrics } from '../metrics.js';
import { consoleCookie, readCookie, sessionTokenBinding, verifyConsoleSession } from './console-session.js';
import { bearerToken, requestContext } from './request.js';

export interface Auditor {
  name: string;
  /** Lowercase hex SHA-256 of the auditor's bearer token. */
  tokenSha256: string;
}

export interface AuditorAuthDeps {
  auditors: readonly Auditor[];
  publicUrl: string;
  activeSigningKey: () => SigningKey;
  now: () => Date;
  limits: Limits;
  metrics: BrokerMetrics;
  logger: Logger;
}

/** What a request presents as an auditor: a bearer token, a console session cookie, or nothing. */
export type AuditorCredential = { kind: 'token'; token: string } | { kind: 'session'; value: string } | { kind: 'none' };

/** `expiresAt`: the session's end when a session cookie signed the request in, else null. */
export interface AuthenticatedAuditor {
  auditor: string;
  /** What a console session made from this sign-in is bound to (ConsoleSession.tokenBinding). */
  tokenBinding: string;
  expiresAt: Date | null;
}

export interface AuditorAuth {
  /**
   * The auditor's name for `credential`. A client address over
   * `auditor_failures_per_ip` (docs/configuration.md) is refused before the
   * credential is looked at; a failure is logged (never the credential),
   * counted, and counted against the address.
   * @throws RateLimitedError, InvalidTokenError
   */
  authenticate(req: Request, res: Response, credential: AuditorCredential): Promise<AuthenticatedAuditor>;
  /** What the request presents: a Bearer token, else the console's session cookie, else nothing. */
  credentialOf(req: Request): AuditorCredential;
  /**
   * Middleware for the audit routes: a Bearer token, else the console's
   * session cookie; sets `res.locals.auditor` and `res.locals.sessionExpiresAt`.
   */
  middleware: RequestHandler;
}

export function createAuditorAuth(deps: AuditorAuthDeps): AuditorAuth {
  const hashes = deps.auditors.map((a) => ({ name: a.name, hash: Buffer.from(a.tokenSha256, 'hex') }));
  const bindings = new Map(deps.auditors.map((a) => [a.name, sessionTokenBinding(a.tokenSha256)]));
  const limit = deps.limits.auditor_failures_per_ip;
  const cookie = consoleCookie(deps.publicUrl);

  /** Tokens are compared by SHA-256 in constant time, against every auditor (no early exit), so timing says nothing about which hash is close. */
  const matchToken = (token: string): string | undefined => {
    const presented = createHash('sha256').update(token).digest();
    let matched: string | undefined;
    for (const { name, hash } of hashes) if (timingSafeEqual(presented, hash) && matched === undefined) matched = name;
    return matched;
  };

  const check = (credential: AuditorCredential): AuthenticatedAuditor => {
    switch (credential.kind) {
      case 'token': {
        const matched = matchToken(credential.token);
        if (matched === undefined) throw new InvalidTokenError('This token is not an auditor token.', { reason: 'not_an_auditor' });
        return { auditor: matched, tokenBinding: bindings.get(matched)!, expiresAt: null };
      }
      case 'session': {
        const { auditor, tokenBinding, expiresAt } = verifyConsoleSession(deps.activeSigningKey(), credential.value, deps.now());
        // An auditor removed from the config, or given another token, loses its sessions with its old token.
        if (bindings.get(auditor) !== tokenBinding) throw new InvalidTokenError('The console session is not valid; sign in again.', { reason: 'bad_session' });
        return { auditor, tokenBinding, expiresAt };
      }
      case 'none':
        throw new InvalidTokenError('An auditor bearer token is required.', { reason: 'missing_auditor_token' });
    }
  };

  const authenticate = async (req: Request, res: Response, credential: AuditorCredential): Promise<AuthenticatedAuditor> => {
    const { requestId, clientIp, userAgent } = requestContext(req, res);
    const fields = { request_id: requestId, client_ip: clientIp, user_agent: userAgent };
    const limited = clientIp === null ? undefined : await limit.check(clientIp);
    if (limited) {
      deps.metrics.rateLimited.inc({ limit: limit.name, audited: 'false' });
      // One line per client address and window: a flood of guesses cannot flood the log either.
      if (!limited.limited.dropped) deps.logger.warn('auditor authentication rate limited', { ...fields, limit: limit.name });
      throw limited;
    }
    try {
      return check(credential);
    } catch (err) {
      const failure = err as BrokerError;
      deps.metrics.auditorAuthFailures.inc({ reason: failure.reason });
      deps.logger.warn('auditor authentication failed', { ...fields, reason: failure.reason });
      if (clientIp !== null) await limit.count(clientIp);
      throw failure;
    }
  };

  const credentialOf = (req: Request): AuditorCredential => {
    const token = bearerToken(req.get('authorization'));
    const session = readCookie(req.get('cookie'), cookie.name);
    // A Bearer header wins over a cookie: scripts and the CLI never send one, a browser tab may send both.
    return typeof token === 'string' ? { kind: 'token', token } : token === undefined && session !== undefined ? { kind: 'session', value: session } : { kind: 'none' };
  };

  const middleware: RequestHandler = (req, res, next) => {
    authenticate(req, res, credentialOf(req)).then(({ auditor, expiresAt }) => {
      res.locals.auditor = auditor;
      res.locals.sessionExpiresAt = expiresAt;
      next();
    }, next);
  };

  return { authenticate, credentialOf, middleware };
}
