import { Router } from 'express';
import { explain } from '../../pipeline/explain.js';
import { refuse } from '../../pipeline/record.js';
import type { ExchangeDeps } from '../../pipeline/types.js';
import { toExplainOutput } from '../../policy/explain.js';
import { isPlainObject } from '../../values.js';
import { fromBodyParserError, sendError } from '../errors.js';
import { auditBodyRefusals, limitRefusedClients, bearerToken, checkBodyShape, jsonBody, requestContext } from '../request.js';

/**
 * POST /v1/explain (openapi.yaml): the exchange's input, answered with
 * the decision (200 whether it allows or denies) and every condition of the
 * named policy and of the deny policies that deny the token, bounded in size
 * (see toExplainOutput). Issues nothing and leaves
 * the token unused; audited as `explain`. Every policy's expected values are
 * `(hidden)` (see toExplainOutput); the token's own claim values are shown.
 */
export function explainRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/v1/explain', limitRefusedClients(deps, 'explain', { send: sendError, withToken: true }), jsonBody, async (req, res) => {
    const context = requestContext(req, res);
    const body: Record<string, unknown> = isPlainObject(req.body) ? req.body : {};
    const headerToken = bearerToken(req.get('authorization'));
    const bodyToken = body.token;

    const refusal = checkBodyShape(req, headerToken, bodyToken);
    const token = headerToken ?? (typeof bodyToken === 'string' ? bodyToken : undefined);
    if (refusal) return refuse(deps, 'explain', { ...context, token }, refusal);

    const result = await explain(deps, { ...context, token, policy: body.policy, durationSeconds: body.duration_seconds });
    // The answer holds the caller's claims: never cached.
    res.set('Cache-Control', 'no-store');
    res.set('Pragma', 'no-cache');
    res.json(toExplainOutput(result.policy, result.decision, result.explainId, 'caller'));
  });

  router.use('/v1/explain', auditBodyRefusals(deps, 'explain', { toRefusal: fromBodyParserError, send: sendError, withToken: true }));

  return router;
}
