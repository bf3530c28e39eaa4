import express, { Router, type Request, type Response } from 'express';
import { exchange, auditRefusedRequest, type ExchangeDeps, type ExchangeResult, type RequestContext } from '../../exchange.js';
import { InvalidRequestError, toBrokerError } from '../../errors.js';
import { fromBodyParserError, sendError } from '../errors.js';

const FORMATS = new Set(['json', 'env']);

/** An exchange request is a policy name, a duration and perhaps a token: a few KiB at most. */
export const MAX_BODY_BYTES = 64 * 1024;

export const jsonBody = express.json({ limit: MAX_BODY_BYTES, strict: true });

/** POST /v1/exchange (contract section 4). */
export function exchangeRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/v1/exchange', jsonBody, async (req, res) => {
    const context = requestContext(req, res);
    const format = typeof req.query.format === 'string' ? req.query.format : req.query.format === undefined ? 'json' : undefined;
    const body: Record<string, unknown> = isPlainObject(req.body) ? req.body : {};
    const headerToken = bearerToken(req.get('authorization'));
    const bodyToken = body.token;

    const refusal = !format || !FORMATS.has(format)
      ? new InvalidRequestError('format must be json or env.', { reason: 'bad_format' })
      : req.body !== undefined && !isPlainObject(req.body)
        ? new InvalidRequestError('The request body must be a JSON object.', { reason: 'malformed_body' })
        : headerToken === null
          ? new InvalidRequestError('The Authorization header must be "Bearer <token>".', { reason: 'bad_authorization_header' })
          : bodyToken !== undefined && typeof bodyToken !== 'string'
            ? new InvalidRequestError('The "token" field must be a string.', { reason: 'bad_token_field' })
            : headerToken !== undefined && bodyToken !== undefined
              ? new InvalidRequestError('Send the token either in the Authorization header or in the body, not both.', { reason: 'token_sent_twice' })
              : undefined;
    const token = headerToken ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    if (refusal) {
      await auditRefusedRequest(deps, context, refusal, token);
      return sendError(res, refusal);
    }

    const result = await exchange(deps, { ...context, token, policy: body.policy, durationSeconds: body.duration_seconds });
    res.set('Cache-Control', 'no-store');
    res.set('Pragma', 'no-cache');
    if (format === 'env') return res.type('text/plain').send(toShellExports(result));
    res.json(toExchangeResponse(result));
  });

  // A body the parser refused is still a decision on the exchange route: audit it before answering.
  router.use('/v1/exchange', async (err: unknown, req: Request, res: Response, next: (err?: unknown) => void) => {
    const refusal = fromBodyParserError(err);
    if (!refusal) return next(err);
    try {
      await auditRefusedRequest(deps, requestContext(req, res), refusal, bearerToken(req.get('authorization')) ?? undefined);
      sendError(res, refusal);
    } catch (auditErr) {
      sendError(res, toBrokerError(auditErr));
    }
  });

  return router;
}

export function toExchangeResponse(result: ExchangeResult): Record<string, unknown> {
  return {
    issuance_id: result.issuanceId,
    policy: result.policy,
    provider: result.provider,
    expires_at: result.expiresAt.toISOString(),
    credentials: result.credentials,
  };
}

/** `export NAME='value'` lines; single quotes make every value inert to the shell. */
export function toShellExports(result: ExchangeResult): string {
  return result.env.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('');
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** undefined: no header; null: a header that is not a Bearer token. */
export function bearerToken(header: string | undefined): string | undefined | null {
  if (header === undefined) return undefined;
  const match = /^Bearer +([^\s]+) *$/i.exec(header);
  return match ? match[1]! : null;
}

export function requestContext(req: Request, res: Response): RequestContext {
  return {
    requestId: res.locals.requestId as string,
    clientIp: req.ip ?? null,
    userAgent: req.get('user-agent')?.slice(0, 512) ?? null,
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
