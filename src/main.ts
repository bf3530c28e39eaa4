import path from 'node:path';
import type { Express } from 'express';
import { checkpointKeys, startCheckpointer } from './audit/checkpoints.js';
import { openAuditStore } from './audit/open.js';
import type { AuditStore } from './audit/types.js';
import type { BrokerConfig } from './config.js';
import type { ExchangeDeps } from './exchange.js';
import { createApp, type AppDeps } from './http/app.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics.js';
import { createTokenVerifier } from './oidc/verify.js';
import { compilePolicies } from './policy/compile.js';
import { loadPolicyDir } from './policy/load.js';
import type { CompileContext, PolicyIssue, PolicySet, ProviderName } from './policy/types.js';
import { createAwsProvider } from './providers/aws.js';
import { createGcpProvider } from './providers/gcp.js';
import { createJwtProvider } from './providers/jwt.js';
import { loadOrCreateSigningKey } from './providers/signing-key.js';
import { createMemoryReplayStore } from './replay/memory-store.js';

/** Policies that do not compile; the broker does not start on them (contract section 3). */
export class PolicyLoadError extends Error {
  override name = 'PolicyLoadError';
  constructor(readonly issues: PolicyIssue[]) {
    super(`${issues.length} problem${issues.length === 1 ? '' : 's'} in the policy directory:\n${issues.map(formatPolicyIssue).join('\n')}`);
  }
}

export function formatPolicyIssue(issue: PolicyIssue): string {
  const where = `${path.relative(process.cwd(), issue.file) || issue.file}${issue.line ? `:${issue.line}` : ''}`;
  return `${where}: ${issue.keyPath ? `${issue.keyPath}: ` : ''}${issue.message}${issue.hint ? ` (hint: ${issue.hint})` : ''}`;
}

export interface Broker {
  app: Express;
  deps: AppDeps;
  /** Stops taking requests (readyz 503) before the server closes. */
  stopAccepting(): void;
  /** Flushes and closes the stores. */
  close(): Promise<void>;
}

export interface BrokerOptions {
  logger: Logger;
  /** Injected clock for token checks (tests); defaults to the real time. */
  now?: () => Date;
  /** Defaults to the real SQLite store from config. */
  audit?: AuditStore;
}

/** What the compiler must know of the running config. */
export function compileContext(config: BrokerConfig): CompileContext {
  const providers = new Set<ProviderName>(['jwt']);
  if (config.providers.aws) providers.add('aws');
  if (config.providers.gcp) providers.add('gcp');
  return { issuers: new Map(config.issuers.map((i) => [i.name, { audiences: i.audiences }])), providers };
}

/** A provider's deadline covers its retries; each attempt gets a third of it (at least 1 s). */
function providerOptions<T extends { timeoutSeconds: number }>(config: T): T & { deadlineMs: number; attemptTimeoutMs: number } {
  return { ...config, deadlineMs: config.timeoutSeconds * 1000, attemptTimeoutMs: Math.max(1000, Math.floor((config.timeoutSeconds * 1000) / 3)) };
}

/** Loads and compiles the policy directory. @throws PolicyLoadError */
export async function loadPolicies(config: BrokerConfig): Promise<PolicySet> {
  const result = compilePolicies(await loadPolicyDir(config.policies.dir), compileContext(config));
  if (!result.ok) throw new PolicyLoadError(result.issues);
  return result.set;
}

/**
 * The composition root: builds every part from the config and wires them into
 * one deps object for the HTTP app (and the CLI). Everything is validated here,
 * before anything listens.
 */
export async function createBroker(config: BrokerConfig, options: BrokerOptions): Promise<Broker> {
  const { logger } = options;
  const metrics = createMetrics();
  const policySet = await loadPolicies(config);
  const signingKey = await loadOrCreateSigningKey(config.providers.jwt.signingKeyFile, logger);
  const audit = options.audit ?? (await openAuditStore(config.audit.url, { onAppendSeconds: (s) => metrics.auditAppendSeconds.observe(s) }));
  const checkpointer = startCheckpointer({ store: audit, key: signingKey, logger, intervalMs: config.audit.checkpointIntervalSeconds * 1000 });
  const verifier = createTokenVerifier(config.issuers, {
    ...(options.now ? { now: options.now } : {}),
    onJwksFetch: (issuer, outcome) => metrics.jwksFetches.inc({ issuer, outcome }),
  });
  const replay = createMemoryReplayStore();
  let accepting = true;

  const exchangeDeps: ExchangeDeps = {
    verifier,
    policies: () => policySet,
    replay,
    providers: {
      jwt: createJwtProvider({ issuerUrl: config.server.publicUrl, signingKey }),
      ...(config.providers.aws ? { aws: createAwsProvider(providerOptions(config.providers.aws)) } : {}),
      ...(config.providers.gcp ? { gcp: createGcpProvider(providerOptions(config.providers.gcp)) } : {}),
    },
    audit,
    metrics,
    logger,
  };
  const deps: AppDeps = {
    ...exchangeDeps,
    publicUrl: config.server.publicUrl,
    publicJwks: { keys: [signingKey.publicJwk] },
    checkpointKeys: await checkpointKeys([signingKey.publicJwk]),
    auditors: config.auditors,
    isAccepting: () => accepting,
  };
  logger.info('policies loaded', { dir: config.policies.dir, count: policySet.size });
  return {
    app: createApp(deps),
    deps,
    stopAccepting: () => {
      accepting = false;
    },
    close: async () => {
      await replay.close();
      await checkpointer.stop().catch((err: unknown) => logger.warn('final audit checkpoint failed', { error: err instanceof Error ? err.message : String(err) }));
      await audit.close();
    },
  };
}
