import { Router } from 'express';
import { NotReadyError } from '../../errors.js';
import type { AuditStore } from '../../audit/types.js';
import type { BrokerMetrics } from '../../metrics.js';
import type { PolicySetStatus } from '../../policy/reload.js';
import type { PolicySet } from '../../policy/types.js';
import { sendError } from '../errors.js';

interface HealthDeps {
  audit: AuditStore;
  policies: () => PolicySet;
  metrics: BrokerMetrics;
  isAccepting: () => boolean;
  /**
   * The serving policy set and the last reload (main.ts puts it on the deps).
   * A failed reload does not gate readiness: the last good set still serves.
   */
  policyStatus: () => PolicySetStatus;
}

/** Liveness, readiness (README.md#quick-start) and Prometheus metrics. */
export function healthRoutes(deps: HealthDeps): Router {
  const router = Router();

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const checks = {
      accepting: deps.isAccepting(),
      policies: deps.policies().size,
      audit: await deps.audit.ping().then(
        () => 'writable',
        () => 'unavailable',
      ),
    };
    const details = { policies: deps.policyStatus() };
    if (checks.accepting && checks.audit === 'writable') return res.json({ status: 'ready', checks, ...details });
    const why = !checks.accepting ? 'The broker is shutting down.' : 'The audit store cannot take writes.';
    sendError(res, new NotReadyError(why, { reason: 'not_ready' }), { checks, ...details });
  });

  router.get('/metrics', async (_req, res) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  return router;
}
