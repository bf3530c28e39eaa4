import { Router, type Request, type Response } from 'express';
import { auditRefusedRequest, explain, type ExchangeDeps } from '../../exchange.js';
import { toBrokerError } from '../../errors.js';
import { toExplainOutput } from '../../policy/explain.js';
import { fromBodyParserError, sendError } from '../errors.js';
import { isPlainObject } from '../../values.js';
import { bearerToken, checkBodyShape, jsonBody, requestContext } from './exchange.js';

/**
 * POST /v1/explain (contract section 4): the exchange's input, answered with
 * the decision (200 whether it allows or denies) and every condition of the
 * named policy and of the issuer's deny policies. Issues nothing and leaves
 * the token unused; audited as `explain`. Every policy's expected values are
 * `(hidden)` (see toExplainOutput); the token's own claim values are shown.
 */
export function explainRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/v1/explain', jsonBody, async (req, res) => {
    const context = requestContext(req, res);
    const body: Record<string, unknown> = isPlainObject(req.body) ? req.body : {};
    const headerToken = bearerToken(req.get('authorization'));
    const bodyToken = body.token;

    const refusal = checkBodyShape(req, headerToken, bodyToken);
    const token = headerToken ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    if (refusal) {
      await auditRefusedRequest(deps, context, refusal, token, 'explain');
      return sendError(res, refusal);
    }

    const result = await explain(deps, { ...context, token, policy: body.policy, durationSeconds: body.duration_seconds });
    // The answer holds the caller's claims: never cached.
    res.set('Cache-Control', 'no-store');
    res.set('Pragma', 'no-cache');
    res.json(toExplainOutput(result.policy, result.decision, result.explainId, 'caller'));
  });

  // A body the parser refused is still a decision: audit it before answering.
  router.use('/v1/explain', async (err: unknown, req: Request, res: Response, next: (err?: unknown) => void) => {
    const refusal = fromBodyParserError(err);
    if (!refusal) return next(err);
    try {
      await auditRefusedRequest(deps, requestContext(req, res), refusal, bearerToken(req.get('authorization')) ?? undefined, 'explain');
      sendError(res, refusal);
    } catch (auditErr) {
      sendError(res, toBrokerError(auditErr));
    }
  });

  return router;
}
