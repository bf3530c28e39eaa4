import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { exchange, auditRefusedRequest, type ExchangeDeps, type ExchangeResult, type RequestContext, type ResponseFormat } from '../../exchange.js';
import { InvalidRequestError, toBrokerError } from '../../errors.js';
import { fromBodyParserError, sendError } from '../errors.js';
import { shellQuote } from '../shell.js';
import { isPlainObject } from '../../values.js';

const FORMATS: ReadonlySet<string> = new Set<ResponseFormat>(['json', 'env', 'credential_process']);

/** An exchange request is a policy name, a duration and perhaps a token: a few KiB at most. */
export const MAX_BODY_BYTES = 64 * 1024;

// inflate: false, so a compressed body is refused as unsupported (and audited) instead of reaching zlib.
export const jsonBody = express.json({ limit: MAX_BODY_BYTES, strict: true, inflate: false });

/** POST /v1/exchange (contract section 4). */
export function exchangeRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/v1/exchange', markFormat, jsonBody, async (req, res) => {
    const context = requestContext(req, res);
    const format = requestedFormat(req);
    const body: Record<string, unknown> = isPlainObject(req.body) ? req.body : {};
    const headerToken = bearerToken(req.get('authorization'));
    const bodyToken = body.token;

    const refusal = checkRequestShape(req, format, headerToken, bodyToken);
    const token = headerToken ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    if (refusal) {
      await auditRefusedRequest(deps, context, refusal, token);
      return sendError(res, refusal);
    }

    const result = await exchange(deps, { ...context, token, policy: body.policy, durationSeconds: body.duration_seconds, format: format as ResponseFormat });
    res.set('Cache-Control', 'no-store');
    res.set('Pragma', 'no-cache');
    if (format === 'env') return res.type('text/plain').send(toShellExports(result));
    if (format === 'credential_process') return res.json(toCredentialProcess(result));
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

const BODY_FIELDS = new Set(['policy', 'duration_seconds', 'token']);

function requestedFormat(req: Request): string | undefined {
  return typeof req.query.format === 'string' ? req.query.format : req.query.format === undefined ? 'json' : undefined;
}

/** A caller that asked for shell lines may `eval` whatever comes back, so errors must be shell-inert too (see sendError). */
const markFormat: RequestHandler = (req, res, next) => {
  if (requestedFormat(req) === 'env') res.locals.shellErrors = true;
  next();
};

/** Refuses a request whose shape is wrong before anything is verified; unknown fields are refused so a typo cannot silently change a duration. */
function checkRequestShape(req: Request, format: string | undefined, headerToken: string | null | undefined, bodyToken: unknown): InvalidRequestError | undefined {
  if (!format || !FORMATS.has(format)) return new InvalidRequestError('format must be json, env or credential_process.', { reason: 'bad_format' });
  return checkBodyShape(req, headerToken, bodyToken);
}

/** The body and token checks shared by exchange and explain. */
export function checkBodyShape(req: Request, headerToken: string | null | undefined, bodyToken: unknown): InvalidRequestError | undefined {
  const refuse = (message: string, reason: string) => new InvalidRequestError(message, { reason });
  if (req.body === undefined && (Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined)) {
    return refuse('Send the body as JSON with "Content-Type: application/json".', 'unsupported_content_type');
  }
  if (req.body !== undefined && !isPlainObject(req.body)) return refuse('The request body must be a JSON object.', 'malformed_body');
  const unknown = Object.keys(req.body ?? {}).filter((key) => !BODY_FIELDS.has(key));
  if (unknown.length > 0) return refuse(`Unknown field ${JSON.stringify(unknown[0]!.slice(0, 64))} in the request body; expected policy, duration_seconds or token.`, 'unknown_field');
  if (headerToken === null) return refuse('The Authorization header must be "Bearer <token>".', 'bad_authorization_header');
  if (bodyToken !== undefined && typeof bodyToken !== 'string') return refuse('The "token" field must be a string.', 'bad_token_field');
  if (headerToken !== undefined && bodyToken !== undefined) return refuse('Send the token either in the Authorization header or in the body, not both.', 'token_sent_twice');
  return undefined;
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

/** The AWS CLI's `credential_process` output (Version 1). */
export function toCredentialProcess(result: ExchangeResult): Record<string, unknown> {
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration } = result.credentials;
  return { Version: 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration };
}

/** `export NAME='value'` lines; single quotes make every value inert to the shell. */
export function toShellExports(result: ExchangeResult): string {
  return result.env.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('');
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

