import type { Request, RequestHandler } from 'express';
import type { Logger } from '../logger.js';

/** Probes a load balancer or Prometheus calls every few seconds: at `info` they would drown every other line (docs/operations.md#logging). */
const PROBE_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * One `request` line per answered (or abandoned) request, with the route
 * pattern and never the URL itself: the query string carries an auditor's
 * filters and the path is whatever a caller sends. Nor any header: the
 * Authorization header and the console cookie are credentials
 * (docs/operations.md#logging). Runs after `requestId()`, whose id it logs.
 */
export function accessLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const started = performance.now();
    res.once('close', () => {
      const route = routePattern(req);
      logger.log(route !== null && PROBE_ROUTES.has(route) ? 'debug' : 'info', 'request', {
        request_id: res.locals.requestId as string,
        method: req.method,
        route,
        // Null when the caller went away before any answer was written.
        status: res.headersSent ? res.statusCode : null,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
        client_ip: req.ip ?? null,
        ...(res.writableFinished ? {} : { completed: false }),
      });
    });
    next();
  };
}

/**
 * The path pattern of the route that answered (`/v1/audit/events`), or null when none matched (a 404).
 * Every router is mounted at the root (app.ts), so a route's own path is the whole pattern.
 */
function routePattern(req: Request): string | null {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  return typeof path === 'string' ? path : null;
}
