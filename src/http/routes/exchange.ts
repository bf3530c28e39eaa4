import { Router, type Request, type RequestHandler } from 'express';
import { InvalidRequestError } from '../../errors.js';
import { exchange } from '../../pipeline/exchange.js';
import { refuse } from '../../pipeline/record.js';
import type { ExchangeDeps, ExchangeResult } from '../../pipeline/types.js';
import type { CompiledPolicy } from '../../policy/types.js';
import { providerOf, type Grant } from '../../providers/registry.js';
import { isPlainObject } from '../../values.js';
import { fromBodyParserError, sendError } from '../errors.js';
import { auditBodyRefusals, limitRefusedClients, bearerToken, checkBodyShape, jsonBody, requestContext } from '../request.js';
import { shellQuote } from '../shell.js';

type ResponseFormat = 'json' | 'env' | 'credential_process';
const FORMATS: ReadonlySet<string> = new Set<ResponseFormat>(['json', 'env', 'credential_process']);

/** POST /v1/exchange (openapi.yaml). */
export function exchangeRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/v1/exchange', markFormat, limitRefusedClients(deps, 'exchange', { send: sendError, withToken: true }), jsonBody, async (req, res) => {
    const context = requestContext(req, res);
    const format = requestedFormat(req);
    const body: Record<string, unknown> = isPlainObject(req.body) ? req.body : {};
    const headerToken = bearerToken(req.get('authorization'));
    const bodyToken = body.token;

    const refusal = checkRequestShape(req, format, headerToken, bodyToken);
    const token = headerToken ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    if (refusal) return refuse(deps, 'exchange', { ...context, token }, refusal);

    const result = await exchange(deps, {
      ...context,
      token,
      policy: body.policy,
      durationSeconds: body.duration_seconds,
      checkGrant: (grant, policy) => checkFormat(format as ResponseFormat, grant, policy),
    });
    res.set('Cache-Control', 'no-store');
    res.set('Pragma', 'no-cache');
    if (format === 'env') return res.type('text/plain').send(toShellExports(result));
    if (format === 'credential_process') return res.json(toCredentialProcess(result));
    res.json(toExchangeResponse(result));
  });

  router.use('/v1/exchange', auditBodyRefusals(deps, 'exchange', { toRefusal: fromBodyParserError, send: sendError, withToken: true }));

  return router;
}

function requestedFormat(req: Request): string | undefined {
  return typeof req.query.format === 'string' ? req.query.format : req.query.format === undefined ? 'json' : undefined;
}

/** A caller that asked for shell lines may `eval` whatever comes back, so errors must be shell-inert too (see sendError). */
const markFormat: RequestHandler = (req, res, next) => {
  if (requestedFormat(req) === 'env') res.locals.shellErrors = true;
  next();
};

/** Refuses a request whose shape is wrong before anything is verified. */
function checkRequestShape(req: Request, format: string | undefined, headerToken: string | null | undefined, bodyToken: unknown): InvalidRequestError | undefined {
  if (!format || !FORMATS.has(format)) return new InvalidRequestError('format must be json, env or credential_process.', { reason: 'bad_format' });
  return checkBodyShape(req, headerToken, bodyToken);
}

/** `credential_process` is the AWS CLI's format: only credentials of its fields fit it. Checked before anything is minted. */
function checkFormat(format: ResponseFormat, grant: Grant, policy: CompiledPolicy): InvalidRequestError | undefined {
  if (format !== 'credential_process' || providerOf(grant).credentialProcess) return undefined;
  return new InvalidRequestError(`format=credential_process is for AWS grants; policy '${policy.name}' grants ${grant.provider}.`, { reason: 'format_not_supported' });
}

function toExchangeResponse(result: ExchangeResult): Record<string, unknown> {
  return {
    issuance_id: result.issuanceId,
    policy: result.policy,
    provider: result.provider,
    expires_at: result.expiresAt.toISOString(),
    credentials: result.credentials,
  };
}

/** The AWS CLI's `credential_process` output (Version 1). */
function toCredentialProcess(result: ExchangeResult): Record<string, unknown> {
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration } = result.credentials;
  return { Version: 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration };
}

/** `export NAME='value'` lines; single quotes make every value inert to the shell. */
function toShellExports(result: ExchangeResult): string {
  return result.env.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('');
}
