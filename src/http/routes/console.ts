import { fileURLToPath } from 'node:url';
import express, { Router, type Request, type RequestHandler } from 'express';
import { AccessDeniedError, InvalidRequestError, InvalidTokenError, NotFoundError } from '../../errors.js';
import type { SigningKey } from '../../keys/signing-key.js';
import type { Logger } from '../../logger.js';
import { isPlainObject } from '../../values.js';
import type { AuditorAuth } from '../auditor-auth.js';
import { consoleCookie, issueConsoleSession } from '../console-session.js';
import { requestContext } from '../request.js';

/**
 * Where `npm run build` writes the console (scripts/build-console.ts): the
 * package's `dist/console/`, two folders up from this file whether it runs
 * from `src/` (tests) or `dist/`.
 */
export const CONSOLE_ASSETS_DIR = fileURLToPath(new URL('../../../dist/console/', import.meta.url));

/** The console's files, by URL path; nothing else under /console is served from disk. */
const ASSETS: Readonly<Record<string, string>> = {
  '/console': 'index.html',
  '/console/': 'index.html',
  '/console/app.js': 'app.js',
  '/console/app.css': 'app.css',
};

/** docs/console.md, "Security model": no inline script or style, nothing from another origin, never framed. */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** A sign-in body is one auditor token. */
const signInBody = express.json({ limit: 4 * 1024, strict: true, inflate: false });

export interface ConsoleRouteDeps {
  publicUrl: string;
  activeSigningKey: () => SigningKey;
  now: () => Date;
  consoleSessionSeconds: number;
  auditorAuth: AuditorAuth;
  logger: Logger;
  /** Defaults to {@link CONSOLE_ASSETS_DIR}. */
  consoleAssetsDir?: string;
}

/**
 * The web console (docs/console.md): its static files, and its session
 * (`POST /console/session` signs in with an auditor token, `GET` says who is
 * signed in, `DELETE` signs out). The session cookie also opens the audit API
 * (`auditor-auth.ts`).
 */
export function consoleRoutes(deps: ConsoleRouteDeps): Router {
  const router = Router();
  const dir = deps.consoleAssetsDir ?? CONSOLE_ASSETS_DIR;
  const cookie = consoleCookie(deps.publicUrl);
  const cookieAttributes = `Path=/; HttpOnly; SameSite=Strict${cookie.secure ? '; Secure' : ''}`;
  const sameOrigin = sameOriginOnly(deps.publicUrl);

  router.use('/console', securityHeaders);

  for (const [route, file] of Object.entries(ASSETS)) {
    router.get(route, (_req, res, next) => {
      res.set('Cache-Control', 'no-cache');
      res.sendFile(file, { root: dir, dotfiles: 'deny', etag: false, lastModified: false }, (err) => {
        if (err) next(new NotFoundError('The console is not built; run `npm run build`.', { reason: 'console_not_built', cause: err }));
      });
    });
  }

  // The console asks on every load, signed in or not: a request with no credential at all is not a failed
  // authentication, so it is answered without counting against auditor_failures_per_ip.
  const signedInOnly: RequestHandler = (req, res, next) =>
    deps.auditorAuth.credentialOf(req).kind === 'none'
      ? next(new InvalidTokenError('Not signed in to the console.', { reason: 'not_signed_in' }))
      : deps.auditorAuth.middleware(req, res, next);

  router.get('/console/session', signedInOnly, (_req, res) => {
    res.set('Cache-Control', 'no-store');
    const expiresAt = res.locals.sessionExpiresAt as Date | null;
    res.json({ auditor: res.locals.auditor as string, expires_at: expiresAt?.toISOString() ?? null });
  });

  router.post('/console/session', sameOrigin, signInBody, async (req, res) => {
    const token = signInToken(req);
    const { auditor, tokenBinding } = await deps.auditorAuth.authenticate(req, res, token === undefined ? { kind: 'none' } : { kind: 'token', token });
    const expiresAt = new Date(deps.now().getTime() + deps.consoleSessionSeconds * 1000);
    const value = issueConsoleSession(deps.activeSigningKey(), { auditor, tokenBinding, expiresAt });
    const { requestId, clientIp } = requestContext(req, res);
    deps.logger.info('console sign-in', { request_id: requestId, client_ip: clientIp, auditor, expires_at: expiresAt.toISOString() });
    res.set('Cache-Control', 'no-store');
    res.set('Set-Cookie', `${cookie.name}=${value}; ${cookieAttributes}; Max-Age=${deps.consoleSessionSeconds}`);
    res.json({ auditor, expires_at: expiresAt.toISOString() });
  });

  router.delete('/console/session', sameOrigin, (_req, res) => {
    res.set('Cache-Control', 'no-store');
    res.set('Set-Cookie', `${cookie.name}=; ${cookieAttributes}; Max-Age=0`);
    res.status(204).end();
  });

  return router;
}

/** Headers on every /console answer, errors included (docs/console.md, "Security model"). */
const securityHeaders: RequestHandler = (_req, res, next) => {
  res.set({
    'Content-Security-Policy': CONSOLE_CSP,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    'Cross-Origin-Opener-Policy': 'same-origin',
  });
  next();
};

/**
 * Refuses a state-changing request that a browser did not send from the
 * console's own origin. Browsers send `Origin` on every POST and DELETE, so a
 * request without one is not the console's; the session cookie being
 * SameSite=Strict is the second line (docs/console.md, "CSRF").
 */
export function sameOriginOnly(publicUrl: string): RequestHandler {
  const publicOrigin = new URL(publicUrl).origin;
  return (req, _res, next) => {
    const origin = req.get('origin');
    const own = `${req.protocol}://${req.get('host') ?? ''}`;
    if (origin !== undefined && (origin === publicOrigin || origin === own)) return next();
    next(new AccessDeniedError('The console accepts this request only from its own origin.', { reason: 'cross_origin_request' }));
  };
}

/** The sign-in body's `token`: `{"token": "<auditor token>"}` as JSON, nothing else. @throws InvalidRequestError */
function signInToken(req: Request): string | undefined {
  const bad = (message: string, reason: string) => new InvalidRequestError(message, { reason });
  if (!req.is('application/json')) throw bad('Send the sign-in as JSON with "Content-Type: application/json".', 'unsupported_content_type');
  const body: unknown = req.body;
  if (!isPlainObject(body)) throw bad('The request body must be a JSON object.', 'malformed_body');
  const unknown = Object.keys(body).filter((key) => key !== 'token');
  if (unknown.length > 0) throw bad(`Unknown field ${JSON.stringify(unknown[0]!.slice(0, 64))} in the request body; expected token.`, 'unknown_field');
  if (body.token !== undefined && typeof body.token !== 'string') throw bad('The "token" field must be a string.', 'bad_token_field');
  return body.token === '' ? undefined : body.token;
}
