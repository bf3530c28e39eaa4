import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import type { Express } from 'express';
import { startCheckpointer } from './audit/checkpoints.js';
import { openAuditStore } from './audit/open.js';
import type { AuditStore } from './audit/types.js';
import { compileContext, type BrokerConfig } from './config.js';
import { createAdminApp, createApp, type AppDeps } from './http/app.js';
import type { ServedBroker } from './http/server.js';
import { openLimits } from './limits/open.js';
import { LIMIT_NAMES, type Limits } from './limits/rate-limit.js';
import { DropSummaries } from './limits/summaries.js';
import { errorSummary, type Logger } from './logger.js';
import { createMetrics, registerReplayEntries, type BrokerMetrics } from './metrics.js';
import { createTokenVerifier } from './oidc/verify.js';
import { createInFlightDecisions, shutdownWaitMs } from './pipeline/in-flight.js';
import { recordDropped } from './pipeline/record.js';
import type { DroppedRequest, ExchangeDeps } from './pipeline/types.js';
import { compilePolicies } from './policy/compile.js';
import { formatPolicyIssue, logPolicyWarnings, PolicyLoadError } from './policy/issues.js';
import { createPolicyReloader, readPolicyDirConsistent, type PolicyReloader, type PolicySetStatus, type ReloadResult, type ReloadTrigger } from './policy/reload.js';
import type { PolicySet } from './policy/types.js';
import { createProviders } from './providers/registry.js';
import { startKeyRing, type KeyReloadOutcome, type KeyReloadTrigger, type KeySchedule } from './keys/reload.js';
import { loadOrCreateSigningKeySet } from './keys/signing-key.js';
import { openReplayStore } from './replay/open.js';

export interface Broker extends ServedBroker {
  app: Express;
  /** /healthz, the detailed /readyz and /metrics, for `server.admin_port` (docs/configuration.md#server). */
  adminApp: Express;
  deps: AppDeps;
  /**
   * Re-reads and recompiles the policy directory; the new set serves only if
   * every file compiles (docs/policies/reference.md). Never rejects; the result says
   * what happened. SIGHUP calls it; file changes do too, on their own.
   */
  reloadPolicies(trigger?: ReloadTrigger): Promise<ReloadResult>;
  /** The serving set and the last reload, as /readyz shows them. */
  policyStatus(): PolicySetStatus;
  /** Re-reads the signing key file (docs/configuration.md, `providers.jwt`); a bad file keeps the current keys. Never rejects. SIGHUP calls it; the poll timer does too. */
  reloadKeys(trigger?: KeyReloadTrigger): Promise<KeyReloadOutcome>;
}

export interface BrokerOptions {
  logger: Logger;
  /** Injected clock for token checks (tests); defaults to the real time. */
  now?: () => Date;
  /** Defaults to the real SQLite store from config. */
  audit?: AuditStore;
  /** Defaults to limits from config counted in this process's memory; replicas share limits counted in Redis. */
  limits?: Limits;
  /** Drives the key file poll (tests tick it by hand); defaults to a timer. */
  keyReloadSchedule?: KeySchedule;
}

/** The start-up load: the set and its digest (see `policySetDigest` in policy/reload.ts). @throws PolicyLoadError, PolicyDirError */
async function loadPolicySnapshot(config: BrokerConfig, logger: Logger): Promise<{ set: PolicySet; sha256: string; loadedAt: Date }> {
  const { files, sha256 } = await readPolicyDirConsistent(config.policies.dir);
  const result = compilePolicies(files, compileContext(config));
  if (!result.ok) throw new PolicyLoadError(result.issues);
  logPolicyWarnings(logger, result.warnings);
  return { set: result.set, sha256, loadedAt: new Date() };
}

/**
 * The composition root: builds every part from the config and wires them into
 * one deps object for the HTTP app (and the CLI). Everything is validated here,
 * before anything listens.
 */
export async function createBroker(config: BrokerConfig, options: BrokerOptions): Promise<Broker> {
  const { logger } = options;
  const metrics = createMetrics();
  const initialPolicies = await loadPolicySnapshot(config, logger);
  const ctx = compileContext(config);
  // Watching starts right after the first read, so a change made while the rest starts up is not missed.
  const reloader = createPolicyReloader({
    dir: config.policies.dir,
    initial: initialPolicies,
    compile: (files) => compilePolicies(files, ctx),
    formatIssue: formatPolicyIssue,
    logger,
    metrics,
  });
  reloader.start();
  try {
    return await assemble(config, options, metrics, reloader);
  } catch (err) {
    await reloader.close();
    throw err;
  }
}

async function assemble(config: BrokerConfig, options: BrokerOptions, metrics: BrokerMetrics, reloader: PolicyReloader): Promise<Broker> {
  const { logger } = options;
  const keyFile = config.providers.jwt.signingKeyFile;
  const initialKeys = await loadOrCreateSigningKeySet(keyFile, logger);
  const auditStore = options.audit ?? (await openAuditStore(config.audit.url, { onAppendSeconds: (s) => metrics.auditAppendSeconds.observe(s) }));
  const keys = startKeyRing({ file: keyFile, initial: initialKeys, logger, metrics, ...(options.keyReloadSchedule ? { schedule: options.keyReloadSchedule } : {}) });
  const checkpointer = startCheckpointer({
    store: auditStore,
    keys: () => keys.current(),
    logger,
    intervalMs: config.audit.checkpointIntervalSeconds * 1000,
    headFile: config.audit.headFile,
  });
  const audit = checkpointer.store;
  const verifier = createTokenVerifier(config.issuers, {
    ...(options.now ? { now: options.now } : {}),
    onJwksFetch: (issuer, outcome) => metrics.jwksFetches.inc({ issuer, outcome }),
    logger,
  });
  const providers = await createProviders(config.providers, { publicUrl: config.server.publicUrl, signingKey: () => keys.current().active, logger });
  const summaries = new DropSummaries<DroppedRequest>((window) => recordDropped({ audit, logger }, window));
  for (const limit of LIMIT_NAMES) for (const audited of ['true', 'false']) metrics.rateLimited.labels({ limit, audited }).inc(0);
  // Opened after the last step that can fail: a Redis client keeps reconnecting, and would hold the process open.
  const replay = openReplayStore(config.replay.url, logger);
  if (replay.entries) registerReplayEntries(metrics, () => replay.entries?.() ?? 0);
  const limits = options.limits ? { limits: options.limits, close: async () => undefined } : openLimits(config.limits, config.replay.url);
  let accepting = true;
  const decisions = createInFlightDecisions();
  const exchangeTimeoutMs = config.server.exchangeTimeoutSeconds * 1000;

  const exchangeDeps: ExchangeDeps = {
    verifier,
    // One read per request (pipeline/exchange.ts): a request decides on one whole set, old or new, never a mix.
    policies: () => reloader.current().set,
    replay,
    providers,
    audit,
    limits: limits.limits,
    summaries,
    metrics,
    logger,
    exchangeTimeoutMs,
    decisions,
  };
  const deps: AppDeps = {
    ...exchangeDeps,
    publicUrl: config.server.publicUrl,
    trustedProxies: config.server.trustedProxies,
    publicJwks: () => keys.current().jwks,
    checkpointKeys: () => keys.current().verificationKeys,
    auditors: config.auditors,
    activeSigningKey: () => keys.current().active,
    consoleSessionSeconds: config.console.sessionSeconds,
    now: options.now ?? (() => new Date()),
    isAccepting: () => accepting,
    // The key is in memory, but a broker whose key file cannot be read would not start again (docs/configuration.md).
    probeSigningKey: () => access(config.providers.jwt.signingKeyFile, constants.R_OK),
    metricsOnAdminPort: config.server.adminPort !== undefined,
    policyStatus: () => reloader.status(),
    policyContext: compileContext(config),
    policyDir: config.policies.dir,
  };
  const initial = reloader.current();
  logger.info('policies loaded', { dir: config.policies.dir, count: initial.set.size, sha256: initial.sha256 });
  return {
    app: createApp(deps),
    adminApp: createAdminApp(deps),
    deps,
    stopAccepting: () => {
      accepting = false;
    },
    graceMs: shutdownWaitMs(exchangeTimeoutMs),
    reloadPolicies: (trigger = 'sighup') => reloader.reload(trigger),
    policyStatus: () => reloader.status(),
    reloadKeys: (trigger = 'sighup') => keys.reload(trigger),
    close: async (waitMs = shutdownWaitMs(exchangeTimeoutMs)) => {
      // Every decision in flight gets its record before the audit store closes (docs/architecture.md, "Shutdown").
      await decisions.drain(waitMs);
      await reloader.close();
      await keys.close();
      await replay.close();
      await limits.close();
      // Summaries of windows still open are written now, while the audit log is.
      await summaries.close();
      await checkpointer.stop().catch((err: unknown) => logger.warn('final audit checkpoint failed', { cause: errorSummary(err) }));
      await audit.close();
    },
  };
}
