import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response } from 'express';
import { InvalidRequestError, toBrokerError, type BrokerError } from '../errors.js';
import { refuse } from '../pipeline/record.js';
import type { ExchangeDeps, Operation, RequestContext } from '../pipeline/types.js';
import { isPlainObject } from '../values.js';

/** An exchange request is a policy name, a duration and perhaps a token: a few KiB at most. */
export const MAX_BODY_BYTES = 64 * 1024;

// inflate: false, so a compressed body is refused as unsupported (and audited) instead of reaching zlib.
export const jsonBody = express.json({ limit: MAX_BODY_BYTES, strict: true, inflate: false });

const BODY_FIELDS = new Set(['policy', 'duration_seconds', 'token']);

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

/** The body and token checks shared by exchange and explain; unknown fields are refused so a typo cannot silently change a duration. */
export function checkBodyShape(req: Request, headerToken: string | null | undefined, bodyToken: unknown): InvalidRequestError | undefined {
  const refuse = (message: string, reason: string) => new InvalidRequestError(message, { reason });
  if (req.body === undefined && (Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined)) {
    return refuse('Send the body as JSON with "Content-Type: application/json".', 'unsupported_content_type');
  }
  if (req.body !== undefined && !isPlainObject(req.body)) return refuse('The request body must be a JSON object.', 'malformed_body');
  const unknown = Object.keys((req.body as Record<string, unknown> | undefined) ?? {}).filter((key) => !BODY_FIELDS.has(key));
  if (unknown.length > 0) return refuse(`Unknown field ${JSON.stringify(unknown[0]!.slice(0, 64))} in the request body; expected policy, duration_seconds or token.`, 'unknown_field');
  // Node keeps only the first of repeated Authorization headers; a proxy in front may have read another, so which token is meant is unclear.
  if (isRepeatedHeader(req, 'authorization')) return refuse('Send one Authorization header, not several.', 'repeated_authorization_header');
  if (headerToken === null) return refuse('The Authorization header must be "Bearer <token>".', 'bad_authorization_header');
  if (bodyToken !== undefined && typeof bodyToken !== 'string') return refuse('The "token" field must be a string.', 'bad_token_field');
  if (headerToken !== undefined && bodyToken !== undefined) return refuse('Send the token either in the Authorization header or in the body, not both.', 'token_sent_twice');
  return undefined;
}

/** True when the request carries header `name` (lowercase) more than once. */
function isRepeatedHeader(req: Request, name: string): boolean {
  let seen = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === name) seen += 1;
  return seen > 1;
}

type RefusalOptions = { send: (res: Response, error: BrokerError) => void; withToken: boolean };

/**
 * Refuses a request from a client address over `refused_per_ip`
 * (docs/configuration.md) before its body is read or any token verified: a
 * decision like any other, audited, except that a flood's are summarised
 * (docs/audit.md).
 */
export function limitRefusedClients(deps: ExchangeDeps, operation: Operation, options: RefusalOptions): RequestHandler {
  return async (req, res, next) => {
    const limited = req.ip === undefined ? undefined : await deps.limits.refused_per_ip.check(req.ip);
    if (!limited) return next();
    await answerRefusal(deps, operation, req, res, limited, options);
  };
}

/**
 * A body the parser refused is still a decision on a decision route: it is
 * audited (the pipeline's `refuse`) before it is answered with `send`.
 * `toRefusal` translates the parser's error, undefined for errors that are not
 * the body's (they go on to the error middleware).
 */
export function auditBodyRefusals(
  deps: ExchangeDeps,
  operation: Operation,
  options: RefusalOptions & { toRefusal: (err: unknown) => BrokerError | undefined },
): ErrorRequestHandler {
  return async (err: unknown, req, res, next) => {
    const refusal = options.toRefusal(err);
    if (!refusal) return next(err);
    await answerRefusal(deps, operation, req, res, refusal, options);
  };
}

/**
 * Records a request Node's HTTP parser refused before express saw it (headers
 * over the cap, bytes that are not HTTP) like any refusal made before the
 * pipeline: counted against `refused_per_ip`, so a flood of them is answered
 * 429 and summarised (docs/audit.md) instead of growing the log one record
 * each. Resolves to what to answer: the refusal once recorded, the rate limit,
 * or the audit failure.
 */
export function refuseUnparsed(deps: ExchangeDeps, request: RequestContext, refusal: BrokerError): Promise<BrokerError> {
  const limited = request.clientIp === null ? Promise.resolve(undefined) : deps.limits.refused_per_ip.check(request.clientIp);
  return limited.then((limit) => refuse(deps, 'exchange', { ...request, token: undefined }, limit ?? refusal)).then(() => refusal, toBrokerError);
}

/** Audits a refusal made before the pipeline ran (with the header's token, if asked) and answers it. */
async function answerRefusal(deps: ExchangeDeps, operation: Operation, req: Request, res: Response, refusal: BrokerError, options: RefusalOptions): Promise<void> {
  const token = options.withToken ? (bearerToken(req.get('authorization')) ?? undefined) : undefined;
  try {
    await refuse(deps, operation, { ...requestContext(req, res), token }, refusal);
  } catch (recorded) {
    // `refuse` throws the refusal once it is recorded, or the audit failure that stopped it.
    options.send(res, toBrokerError(recorded));
  }
}
