import { Router, type Request, type Response } from 'express';
import type { CryptoKey } from 'jose';
import { verifyAuditLog } from '../../audit/checkpoints.js';
import { createFormatter, writeRecords } from '../../audit/export.js';
import { compileAuditQuery, MAX_QUERY_LIMIT, queryAll, toTimeBound } from '../../audit/query.js';
import { AUDIT_DECISIONS } from '../../audit/record.js';
import { readAuthenticCheckpoint } from '../../audit/trusted-head.js';
import { MAX_STATS_TOP } from '../../audit/stats.js';
import type { AuditCheckpoint, AuditDecision, AuditQuery, AuditRecord, AuditStatsQuery, AuditStore } from '../../audit/types.js';
import { InvalidRequestError, NotAcceptableError } from '../../errors.js';
import { errorSummary, type Logger } from '../../logger.js';
import type { AuditorAuth } from '../auditor-auth.js';

const FILTERS = ['since', 'until', 'decision', 'policy', 'issuer', 'subject', 'credential_id', 'audit_match'];
const EVENTS_PARAMETERS = new Set([...FILTERS, 'limit', 'cursor']);
const STATS_PARAMETERS = new Set([...FILTERS, 'bucket', 'top']);

/** What `GET /v1/audit/events` can answer, in order of preference when the client has none. */
const EVENT_MEDIA_TYPES = {
  'application/json': 'json',
  'application/x-ndjson': 'ndjson',
  'text/csv': 'csv',
} as const;
type EventMediaType = keyof typeof EVENT_MEDIA_TYPES;

const CONTENT_TYPES: Record<'ndjson' | 'csv', string> = {
  ndjson: 'application/x-ndjson; charset=utf-8',
  csv: 'text/csv; charset=utf-8; header=present',
};

/**
 * GET /v1/audit/events, /v1/audit/stats and /v1/audit/verify: auditors only (openapi.yaml), by
 * Bearer token or the console's session cookie (`auditorAuth`).
 *
 * `/v1/audit/events` negotiates on `Accept`: `application/json` (the default,
 * one page), or `application/x-ndjson` / `text/csv`, which stream every match
 * (pages of `limit` walked internally from `cursor`). A streamed export that
 * the store fails in the middle of is cut off by destroying the connection:
 * the chunked response then lacks its final chunk, so no HTTP/1.1 client can
 * take it for a complete export.
 */
export function auditRoutes(deps: {
  audit: AuditStore;
  checkpointKeys: () => ReadonlyMap<string, CryptoKey | Uint8Array>;
  logger: Logger;
  auditorAuth: AuditorAuth;
}): Router {
  const router = Router();
  const requireAuditor = deps.auditorAuth.middleware;

  router.get('/v1/audit/events', requireAuditor, async (req, res) => {
    res.set('Vary', 'Accept');
    const { format: formatParam, ...params } = req.query;
    const format = formatParam === undefined ? negotiateEvents(req) : parseFormatParam(formatParam);
    const query = parseAuditQuery(params, EVENTS_PARAMETERS);
    // Every problem with the query (the cursor included) is a 400 now, before anything is streamed.
    compileAuditQuery(query);
    const context = { request_id: res.locals.requestId as string, auditor: res.locals.auditor as string, filters: describeQuery(query) };
    if (format === 'json') {
      const page = await deps.audit.query(query).catch((err: unknown) => {
        deps.logger.warn('audit query failed', { ...context, format, cause: errorSummary(err) });
        throw err;
      });
      deps.logger.info('audit query', { ...context, format, count: page.events.length, more: page.nextCursor !== null });
      res.set('Cache-Control', 'no-store');
      res.json({ events: page.events, next_cursor: page.nextCursor });
      return;
    }
    await streamEvents(req, res, deps, query, format, context);
  });

  router.get('/v1/audit/stats', requireAuditor, async (req, res) => {
    const query = parseAuditQuery(req.query, STATS_PARAMETERS);
    const context = { request_id: res.locals.requestId as string, auditor: res.locals.auditor as string, filters: describeQuery(query) };
    const stats = await deps.audit.stats(query).catch((err: unknown) => {
      deps.logger.warn('audit stats failed', { ...context, cause: errorSummary(err) });
      throw err;
    });
    deps.logger.info('audit stats', { ...context, total: stats.total });
    res.set('Cache-Control', 'no-store');
    res.json(stats);
  });

  router.get('/v1/audit/verify', requireAuditor, async (req, res) => {
    const keys = deps.checkpointKeys();
    const trustedHead = await parseTrustedHeadParam(req.query, keys);
    deps.logger.info('audit verify', { request_id: res.locals.requestId as string, auditor: res.locals.auditor as string, trusted_head_seq: trustedHead?.seq ?? null });
    res.set('Cache-Control', 'no-store');
    res.json(await verifyAuditLog(deps.audit, keys, { trustedHead }));
  });

  return router;
}

/**
 * `format=json|ndjson|csv`: a link cannot set `Accept`, so the console's
 * export links (docs/console.md) name the format in the query; it wins over
 * `Accept`. NDJSON is then an attachment too.
 * @throws InvalidRequestError
 */
function parseFormatParam(raw: unknown): 'json' | 'ndjson' | 'csv' {
  if (raw === 'json' || raw === 'ndjson' || raw === 'csv') return raw;
  throw new InvalidRequestError(typeof raw === 'string' ? "'format' must be one of json, ndjson, csv." : "Query parameter 'format' must be given once.", { reason: 'bad_query' });
}

/** The format `Accept` asks for; no header (or an empty one) means JSON. @throws NotAcceptableError */
function negotiateEvents(req: Request): 'json' | 'ndjson' | 'csv' {
  if ((req.get('accept') ?? '').trim() === '') return 'json';
  const type = req.accepts(Object.keys(EVENT_MEDIA_TYPES));
  if (type === false) {
    throw new NotAcceptableError(`This route answers ${Object.keys(EVENT_MEDIA_TYPES).join(', ')}; the Accept header allows none of them.`, {
      reason: 'not_acceptable',
    });
  }
  return EVENT_MEDIA_TYPES[type as EventMediaType];
}

/**
 * Streams every match as NDJSON or CSV with backpressure. The first page is
 * read before anything is sent, so a store that is down answers a plain 503.
 */
async function streamEvents(
  req: Request,
  res: Response,
  deps: { audit: AuditStore; logger: Logger },
  query: AuditQuery,
  format: 'ndjson' | 'csv',
  context: Record<string, unknown>,
): Promise<void> {
  const iterator = queryAll(deps.audit, query)[Symbol.asyncIterator]();
  const first = await iterator.next().catch((err: unknown) => {
    deps.logger.warn('audit export failed', { ...context, format, count: 0, outcome: 'store_failed', cause: errorSummary(err) });
    throw err;
  });
  const records = (async function* (): AsyncGenerator<AuditRecord, void, undefined> {
    if (first.done === true) return;
    yield first.value;
    yield* { [Symbol.asyncIterator]: () => iterator };
  })();

  res.status(200);
  res.set({ 'Content-Type': CONTENT_TYPES[format], 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
  if (format === 'csv' || req.query.format !== undefined) res.set('Content-Disposition', `attachment; filename="audit-${fileTime(new Date())}.${format}"`);
  if (req.method === 'HEAD') {
    // Headers only: do not walk the log for a body nobody receives.
    await iterator.return?.();
    res.end();
    return;
  }

  let written = 0;
  try {
    const formatter = createFormatter(format, { claimColumns: Object.keys(query.claims ?? {}) });
    const result = await writeRecords(res, records, formatter, { onProgress: (count) => (written = count) });
    if (result.complete) res.end();
    deps.logger.info('audit export', { ...context, format, count: result.count, outcome: result.complete ? 'complete' : 'client_closed' });
  } catch (err) {
    // Headers and part of the body are out: the only honest signal left is to cut the connection.
    deps.logger.error('audit export failed', { ...context, format, count: written, outcome: 'store_failed', cause: errorSummary(err) });
    res.destroy();
  }
}

/** `2026-11-25T19:00:00.000Z` as `20261125T190000Z`, for file names. */
function fileTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}/, '').replace(/[-:]/g, '');
}

/** The query as logged: filters and paging, never anything secret. */
function describeQuery(query: AuditQuery): Record<string, unknown> {
  const { claims, credentialId, auditMatch, ...rest } = query;
  return {
    ...rest,
    ...(credentialId !== undefined ? { credential_id: credentialId } : {}),
    ...(auditMatch !== undefined ? { audit_match: auditMatch } : {}),
    ...(claims !== undefined && Object.keys(claims).length > 0 ? { claims: Object.fromEntries(Object.entries(claims)) } : {}),
  };
}

/**
 * Validates the query string of events (parameters `EVENTS_PARAMETERS`) or
 * stats (`STATS_PARAMETERS`); every problem is an InvalidRequestError whose
 * message names the parameter. Each parameter may be given once; unknown
 * parameters and empty values are refused, except that a claim filter may
 * match an empty claim (`claim.head_ref=`).
 */
function parseAuditQuery(params: Record<string, unknown>, allowed: ReadonlySet<string>): AuditQuery & AuditStatsQuery {
  // A null-prototype map, so `claim.__proto__=x` is a filter like any other instead of a silent no-op.
  const claims = Object.create(null) as Record<string, string>;
  const query: AuditQuery & AuditStatsQuery = { claims };
  const bad = (message: string) => new InvalidRequestError(message, { reason: 'bad_query' });
  for (const [name, raw] of Object.entries(params)) {
    const shown = printable(name);
    if (typeof raw !== 'string') throw bad(`Query parameter '${shown}' must be given once.`);
    if (name.startsWith('claim.')) {
      if (name.length === 'claim.'.length) throw bad("Query parameter 'claim.' needs a claim name: claim.<name>=<value>.");
      claims[name.slice('claim.'.length)] = raw;
      continue;
    }
    if (!allowed.has(name)) throw bad(`Unknown query parameter '${shown}'.`);
    if (raw === '') throw bad(`Query parameter '${name}' must not be empty.`);
    switch (name) {
      case 'since':
      case 'until':
        query[name] = toTimeBound(raw, name);
        break;
      case 'decision':
        if (!(AUDIT_DECISIONS as readonly string[]).includes(raw)) throw bad(`'decision' must be one of ${AUDIT_DECISIONS.join(', ')}.`);
        query.decision = raw as AuditDecision;
        break;
      case 'limit':
        if (!/^[1-9][0-9]{0,3}$/.test(raw) || Number(raw) > MAX_QUERY_LIMIT) throw bad(`'limit' must be an integer from 1 to ${MAX_QUERY_LIMIT}.`);
        query.limit = Number(raw);
        break;
      case 'top':
        if (!/^[1-9][0-9]?$/.test(raw) || Number(raw) > MAX_STATS_TOP) throw bad(`'top' must be an integer from 1 to ${MAX_STATS_TOP}.`);
        query.top = Number(raw);
        break;
      case 'bucket':
        if (raw !== 'hour' && raw !== 'day') throw bad("'bucket' must be hour or day.");
        query.bucket = raw;
        break;
      case 'credential_id':
        query.credentialId = raw;
        break;
      case 'audit_match':
        query.auditMatch = raw;
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

/**
 * `GET /v1/audit/verify`'s only parameter, `trusted_head`: a checkpoint JWS
 * the auditor kept (openapi.yaml). It must verify with the broker's keys.
 * @throws InvalidRequestError for another parameter, a repeated one, or a JWS that is not an authentic checkpoint.
 */
async function parseTrustedHeadParam(params: Record<string, unknown>, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<AuditCheckpoint | undefined> {
  const bad = (message: string) => new InvalidRequestError(message, { reason: 'bad_query' });
  for (const name of Object.keys(params)) if (name !== 'trusted_head') throw bad(`Unknown query parameter '${printable(name)}'.`);
  const raw = params.trusted_head;
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw bad("Query parameter 'trusted_head' must be given once.");
  const reading = await readAuthenticCheckpoint(raw, keys);
  if (reading.authentic) return reading.checkpoint;
  throw bad(reading.claimed === null ? "'trusted_head' must be a checkpoint's compact JWS." : "'trusted_head' is not a checkpoint signed by the broker's keys.");
}

/** A parameter name fit for a message: at most 64 characters, control characters as `?`. */
function printable(name: string): string {
  return name.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}
