import express, { type Express, type RequestHandler } from 'express';
import type { CryptoKey, JWK } from 'jose';
import { NotFoundError } from '../errors.js';
import { newUlid } from '../ids.js';
import type { SigningKey } from '../keys/signing-key.js';
import type { ExchangeDeps } from '../pipeline/types.js';
import type { PolicySetStatus } from '../policy/reload.js';
import type { CompileContext } from '../policy/types.js';
import { accessLog } from './access-log.js';
import { createAuditorAuth, type Auditor } from './auditor-auth.js';
import { errorMiddleware } from './errors.js';
import { auditRoutes } from './routes/audit.js';
import { consoleRoutes, sameOriginOnly } from './routes/console.js';
import { exchangeRoutes } from './routes/exchange.js';
import { explainRoutes } from './routes/explain.js';
import { healthRoutes } from './routes/health.js';
import { oauthTokenRoutes } from './routes/oauth-token.js';
import { policyRoutes } from './routes/policies.js';
import { wellKnownRoutes } from './routes/well-known.js';

export interface AppDeps extends ExchangeDeps {
  /** The broker's public URL: issuer of broker-signed tokens. */
  publicUrl: string;
  /** Peers whose X-Forwarded-For is believed (docs/configuration.md, `server.trusted_proxies`). */
  trustedProxies: readonly string[];
  /** Public keys served at /.well-known/jwks.json, as of now (the key file is reloaded). */
  publicJwks: () => { keys: JWK[] };
  /** Keys that verify audit checkpoints, by kid, as of now. */
  checkpointKeys: () => ReadonlyMap<string, CryptoKey | Uint8Array>;
  auditors: readonly Auditor[];
  /** The key that signs now; console session cookies are authenticated with a key derived from it (http/console-session.ts). */
  activeSigningKey: () => SigningKey;
  /** How long a console sign-in lasts (docs/configuration.md, `console.session_seconds`). */
  consoleSessionSeconds: number;
  /** Where the built console is served from; defaults to the package's dist/console/ (tests point it elsewhere). */
  consoleAssetsDir?: string;
  /** The clock for console session expiry. */
  now: () => Date;
  /** The configured issuers and providers, for evaluating a claim set as `policy explain` does (POST /v1/policies/evaluate). */
  policyContext: CompileContext;
  /** `policies.dir`: the console's policy view reads the sources and test files from it (GET /v1/policies). */
  policyDir: string;
  /** The policy set serving and the last reload, for /readyz. */
  policyStatus: () => PolicySetStatus;
  /** False while starting or shutting down: /readyz answers 503 then. */
  isAccepting: () => boolean;
  /** Resolves if the signing key file can be read; /readyz answers 503 otherwise. */
  probeSigningKey: () => Promise<void>;
  /** True when `server.admin_port` is set: /metrics is then served only by the admin app. */
  metricsOnAdminPort: boolean;
}

/** Builds the express app; never listens (see `server.ts`), so tests drive it with supertest. */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // req.ip (audit records, limits) is the first address from the right of X-Forwarded-For that is not a trusted proxy, or the peer's own when it is not one.
  app.set('trust proxy', deps.trustedProxies.length > 0 ? [...deps.trustedProxies] : false);
  app.use(requestId());
  app.use(accessLog(deps.logger));
  app.use(exchangeRoutes(deps));
  app.use(explainRoutes(deps));
  app.use(oauthTokenRoutes(deps));
  app.use(wellKnownRoutes(deps));
  app.use(healthRoutes(deps, { admin: false, metrics: !deps.metricsOnAdminPort }));
  const auditorAuth = createAuditorAuth(deps);
  app.use(auditRoutes({ ...deps, auditorAuth }));
  app.use(consoleRoutes({ ...deps, auditorAuth }));
  app.use(policyRoutes({ ...deps, auditorAuth, sameOrigin: sameOriginOnly(deps.publicUrl) }));
  app.use((_req, _res, next) => next(new NotFoundError('No such route.', { reason: 'no_route' })));
  app.use(errorMiddleware(deps.logger));
  return app;
}

/**
 * The admin listener's app (`server.admin_port`, docs/configuration.md#server):
 * liveness, the detailed readiness and /metrics, nothing a CI job calls.
 */
export function createAdminApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestId());
  app.use(accessLog(deps.logger));
  app.use(healthRoutes(deps, { admin: true, metrics: true }));
  app.use((_req, _res, next) => next(new NotFoundError('No such route.', { reason: 'no_route' })));
  app.use(errorMiddleware(deps.logger));
  return app;
}

/**
 * Every response carries the broker's own X-Request-Id, the `request_id` of its
 * audit record. A caller's X-Request-Id is not trusted: one caller could reuse
 * another's id and muddle forensic correlation.
 */
function requestId(): RequestHandler {
  return (_req, res, next) => {
    const id = newUlid();
    res.locals.requestId = id;
    res.set('X-Request-Id', id);
    next();
  };
}
