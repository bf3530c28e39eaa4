import { createHash, timingSafeEqual } from 'node:crypto';
import { Router, type RequestHandler } from 'express';
import { InvalidRequestError, InvalidTokenError } from '../../errors.js';
import { toTimeBound } from '../../audit/query.js';
import type { AuditDecision, AuditQuery, AuditStore } from '../../audit/types.js';
import type { Logger } from '../../logger.js';
import { bearerToken } from './exchange.js';

export interface Auditor {
  name: string;
  /** Lowercase hex SHA-256 of the auditor's bearer token. */
  tokenSha256: string;
}

const DECISIONS: ReadonlySet<string> = new Set<AuditDecision>(['issued', 'denied', 'error', 'explain']);
const SCALAR_FILTERS = new Set(['since', 'until', 'decision', 'policy', 'issuer', 'subject', 'credential_id', 'limit', 'cursor']);

/** GET /v1/audit/events and /v1/audit/verify: auditors only (contract section 4). */
export function auditRoutes(deps: { audit: AuditStore; auditors: readonly Auditor[]; logger: Logger }): Router {
  const router = Router();
  const requireAuditor = auditorAuth(deps.auditors);

  router.get('/v1/audit/events', requireAuditor, async (req, res) => {
    const query = parseAuditQuery(req.query as Record<string, unknown>);
    deps.logger.info('audit query', { request_id: res.locals.requestId, auditor: res.locals.auditor, query });
    const page = await deps.audit.query(query);
    res.set('Cache-Control', 'no-store');
    res.json({ events: page.events, next_cursor: page.nextCursor });
  });

  router.get('/v1/audit/verify', requireAuditor, async (_req, res) => {
    deps.logger.info('audit verify', { request_id: res.locals.requestId, auditor: res.locals.auditor });
    res.set('Cache-Control', 'no-store');
    res.json(await deps.audit.verify());
  });

  return router;
}

/**
 * Bearer tokens are compared by SHA-256 in constant time, against every
 * auditor (no early exit), so timing says nothing about which hash is close.
 */
function auditorAuth(auditors: readonly Auditor[]): RequestHandler {
  const hashes = auditors.map((a) => ({ name: a.name, hash: Buffer.from(a.tokenSha256, 'hex') }));
  return (req, res, next) => {
    const token = bearerToken(req.get('authorization'));
    if (!token) return next(new InvalidTokenError('An auditor bearer token is required.', { reason: 'missing_auditor_token' }));
    const presented = createHash('sha256').update(token).digest();
    let matched: string | undefined;
    for (const { name, hash } of hashes) if (timingSafeEqual(presented, hash) && matched === undefined) matched = name;
    if (matched === undefined) return next(new InvalidTokenError('This token is not an auditor token.', { reason: 'not_an_auditor' }));
    res.locals.auditor = matched;
    next();
  };
}

/** Validates the query string; every problem names the parameter. */
export function parseAuditQuery(params: Record<string, unknown>): AuditQuery {
  // A null-prototype map, so `claim.__proto__=x` is a filter like any other instead of a silent no-op.
  const claims = Object.create(null) as Record<string, string>;
  const query: AuditQuery = { claims };
  for (const [name, raw] of Object.entries(params)) {
    if (typeof raw !== 'string') throw new InvalidRequestError(`Query parameter '${name}' must be given once.`, { reason: 'bad_query' });
    if (name.startsWith('claim.') && name.length > 'claim.'.length) {
      claims[name.slice('claim.'.length)] = raw;
      continue;
    }
    if (!SCALAR_FILTERS.has(name)) throw new InvalidRequestError(`Unknown query parameter '${name.slice(0, 64)}'.`, { reason: 'bad_query' });
    switch (name) {
      case 'since':
      case 'until':
        query[name] = toTimeBound(raw, name);
        break;
      case 'decision':
        if (!DECISIONS.has(raw)) throw new InvalidRequestError(`'decision' must be one of ${[...DECISIONS].join(', ')}.`, { reason: 'bad_query' });
        query.decision = raw as AuditDecision;
        break;
      case 'limit': {
        const limit = Number(raw);
        if (!/^\d+$/.test(raw) || limit < 1 || limit > 1000) throw new InvalidRequestError(`'limit' must be an integer from 1 to 1000.`, { reason: 'bad_query' });
        query.limit = limit;
        break;
      }
      case 'credential_id':
        query.credentialId = raw;
        break;
      case 'policy':
      case 'issuer':
      case 'subject':
      case 'cursor':
        query[name] = raw;
        break;
    }
  }
  return query;
}
