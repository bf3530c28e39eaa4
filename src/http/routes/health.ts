import { Router } from 'express';
import { NotReadyError } from '../../errors.js';
import type { AuditStore } from '../../audit/types.js';
import type { BrokerMetrics } from '../../metrics.js';
import type { PolicySetStatus } from '../../policy/reload.js';
import type { PolicySet } from '../../policy/types.js';
import type { ReplayStore } from '../../replay/types.js';
import { sendError } from '../errors.js';

interface HealthDeps {
  audit: AuditStore;
  replay: ReplayStore;
  policies: () => PolicySet;
  metrics: BrokerMetrics;
  isAccepting: () => boolean;
  /** Resolves if the broker's signing key file can be read (main.ts). */
  probeSigningKey: () => Promise<void>;
  /**
   * The serving policy set and the last reload (main.ts puts it on the deps).
   * A failed reload does not gate readiness: the last good set still serves.
   */
  policyStatus: () => PolicySetStatus;
}

export interface HealthRouteOptions {
  /**
   * The admin listener (`server.admin_port`, docs/configuration.md#server):
   * /readyz there lists where each failed policy reload problem is
   * (`file:line: key`); the public listener leaves those out.
   */
  admin: boolean;
  /** Serve /metrics: on the admin listener when there is one, else on the API listener. */
  metrics: boolean;
}

/** Liveness, readiness (README.md#quick-start, openapi.yaml) and Prometheus metrics. */
export function healthRoutes(deps: HealthDeps, options: HealthRouteOptions): Router {
  const router = Router();

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const outcome = (probe: Promise<void>, ok: string, failed: string) => probe.then(() => ok, () => failed);
    const [audit, replay, signingKey] = await Promise.all([
      outcome(deps.audit.ping(), 'writable', 'unavailable'),
      outcome(deps.replay.ping(), 'reachable', 'unavailable'),
      outcome(deps.probeSigningKey(), 'readable', 'unreadable'),
    ]);
    const checks = { accepting: deps.isAccepting(), policies: deps.policies().size, audit, replay, signing_key: signingKey };
    const details = { policies: options.admin ? deps.policyStatus() : withoutReloadErrors(deps.policyStatus()) };
    const why = !checks.accepting
      ? 'The broker is shutting down.'
      : audit !== 'writable'
        ? 'The audit store cannot take writes.'
        : replay !== 'reachable'
          ? 'The replay store cannot be reached.'
          : signingKey !== 'readable'
            ? "The broker's signing key cannot be read."
            : undefined;
    if (why === undefined) return res.json({ status: 'ready', checks, ...details });
    sendError(res, new NotReadyError(why, { reason: 'not_ready' }), { checks, ...details });
  });

  if (options.metrics) {
    router.get('/metrics', async (_req, res) => {
      res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
    });
  }

  return router;
}

/** The status without the reload problems' locations, which name policy files. */
function withoutReloadErrors(status: PolicySetStatus): Omit<PolicySetStatus, 'last_reload'> & { last_reload: Omit<NonNullable<PolicySetStatus['last_reload']>, 'errors'> | null } {
  if (status.last_reload === null) return status;
  const { errors: _errors, ...lastReload } = status.last_reload;
  return { ...status, last_reload: lastReload };
}
