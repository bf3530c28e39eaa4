import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { parseConfig, type BrokerConfig } from '../../src/config.js';
import { startDevIssuer, type DevIssuer, type DevIssuerAlgorithm } from '../../src/dev/issuer.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { createBroker, type Broker, type BrokerOptions } from '../../src/main.js';

/** A winston logger whose JSON lines are kept in memory, so tests can assert what was (not) logged. */
export function createCapturingLogger(): { logger: Logger; lines: () => string[] } {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString('utf8')));
  const logger = createLogger({ level: 'debug', stream });
  return { logger, lines: () => chunks.join('').split('\n').filter(Boolean) };
}

export const AUDIENCE = 'http://127.0.0.1:8080';
export const AUDITOR_TOKEN = 'auditor-secret-token-for-tests-only';

export interface BrokerFixture {
  dir: string;
  issuer: DevIssuer;
  config: BrokerConfig;
  broker: Broker;
  logLines: () => string[];
  close(): Promise<void>;
}

/**
 * A real broker on a temp directory: a dev issuer on loopback, the given
 * policy files, SQLite audit, a fresh signing key.
 */
export async function startBrokerFixture(options: {
  policies: Record<string, string>;
  /** The `local` issuer's accepted audiences (default: AUDIENCE). */
  audiences?: string[];
  /** YAML lines under `providers:` (indented two spaces), e.g. an aws or gcp block. */
  providerConfig?: string;
  extraConfig?: string;
  /** YAML list items appended under `issuers:` (indented two spaces), after the fixture's own `local` issuer. */
  extraIssuers?: string;
  /** The `limits:` section; defaults to limits no test of another feature reaches (test/http-limits.test.ts sets its own). */
  limits?: Partial<Record<'refused_per_ip' | 'exchanges_per_subject' | 'explains_per_subject' | 'auditor_failures_per_ip', number>>;
  /** `server.trusted_proxies`. */
  trustedProxies?: string[];
  /** `server.exchange_timeout_seconds` (the config's default when absent). */
  exchangeTimeoutSeconds?: number;
  /** Passed to createBroker (e.g. limits counted in a Redis shared by two brokers, or a PostgreSQL audit store). */
  brokerOptions?: Pick<BrokerOptions, 'limits' | 'audit'>;
  now?: () => Date;
  /** The dev issuer's signing algorithm (default RS256). */
  issuerAlg?: DevIssuerAlgorithm;
  keyReloadSchedule?: BrokerOptions['keyReloadSchedule'];
}): Promise<BrokerFixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-test-'));
  const issuer = await startDevIssuer({ port: 0, ...(options.issuerAlg ? { alg: options.issuerAlg } : {}) });
  await mkdir(path.join(dir, 'policies'));
  for (const [name, text] of Object.entries(options.policies)) await writeFile(path.join(dir, 'policies', name), text);
  const { createHash } = await import('node:crypto');
  const configText = `
server:
  host: 127.0.0.1
  port: 0
  public_url: http://127.0.0.1:8080
  trusted_proxies: ${JSON.stringify(options.trustedProxies ?? [])}
${options.exchangeTimeoutSeconds === undefined ? '' : `  exchange_timeout_seconds: ${options.exchangeTimeoutSeconds}\n`}issuers:
  - name: local
    issuer: ${issuer.url}
    audiences: ${JSON.stringify(options.audiences ?? [AUDIENCE])}
    clock_skew_seconds: 30
${options.extraIssuers ?? ''}
policies:
  dir: ./policies
audit:
  url: sqlite:./data/audit.db
providers:
  jwt:
    signing_key_file: ./data/signing-key.jwk
${options.providerConfig ?? ''}
auditors:
  - name: secops
    token_sha256: ${createHash('sha256').update(AUDITOR_TOKEN).digest('hex')}
limits: ${JSON.stringify({ refused_per_ip: 1_000_000, exchanges_per_subject: 1_000_000, explains_per_subject: 1_000_000, auditor_failures_per_ip: 1_000_000, ...options.limits })}
${options.extraConfig ?? ''}`;
  const configPath = path.join(dir, 'broker.yaml');
  await writeFile(configPath, configText);
  const { logger, lines } = createCapturingLogger();
  let config: BrokerConfig;
  let broker: Broker;
  try {
    config = await parseConfig(configText, configPath, {});
    broker = await createBroker(config, {
      logger,
      ...options.brokerOptions,
      ...(options.now ? { now: options.now } : {}),
      ...(options.keyReloadSchedule ? { keyReloadSchedule: options.keyReloadSchedule } : {}),
    });
  } catch (err) {
    await issuer.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    issuer,
    config,
    broker,
    logLines: lines,
    async close() {
      await broker.close();
      await issuer.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
