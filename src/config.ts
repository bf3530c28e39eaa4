import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { exchangeTimeout, outboundUrl } from './config-fields.js';
import type { LimitsConfig } from './limits/rate-limit.js';
import { DEFAULT_JWKS_STALE_IF_ERROR_SECONDS, DEFAULT_MAX_TOKEN_LIFETIME_SECONDS, defaultTenantClaims, sharedIssuerKind } from './oidc/issuer-defaults.js';
import type { IssuerConfig } from './oidc/types.js';
import type { CompileContext } from './policy/types.js';
import { jwtProvider } from './providers/jwt/index.js';
import { PROVIDERS, providersConfigSchema, toProviderConfigs, type ProviderConfigs } from './providers/registry.js';
import { formatKeyPath, isPlainObject } from './values.js';
import type { YamlDocument } from './yaml/document.js';
import { parseYaml } from './yaml/parse.js';

/** The validated, normalised configuration (docs/configuration.md). */
export interface BrokerConfig {
  /** Where the config came from: a file path, or `built-in defaults`. */
  source: string;
  /** `trustedProxies`: addresses and CIDR ranges whose X-Forwarded-For is believed; `adminPort`: the separate listener for /metrics and the detailed /readyz (docs/configuration.md#server). */
  server: { host: string; port: number; publicUrl: string; trustedProxies: string[]; adminPort: number | undefined; exchangeTimeoutSeconds: number };
  issuers: ConfiguredIssuer[];
  policies: { dir: string };
  /** `url`: `sqlite:<absolute path>` or `postgres://...`; `headFile`: the trusted head, an absolute path (docs/audit.md, "Trusted head"). */
  audit: { url: string; checkpointIntervalSeconds: number; headFile: string };
  /** `memory:`, or a `redis://` / `rediss://` URL (docs/configuration.md#replay). */
  replay: { url: string };
  /** One entry per registered provider (providers/registry.ts); an optional provider is undefined unless configured. */
  providers: ProviderConfigs;
  auditors: { name: string; tokenSha256: string }[];
  /** The web console (docs/console.md): how long a sign-in lasts. */
  console: { sessionSeconds: number };
  /** Requests allowed per key per minute, by limit. */
  limits: LimitsConfig;
}

/** An issuer as the verifier needs it, and what the policy compiler needs of it. */
export interface ConfiguredIssuer extends IssuerConfig {
  /**
   * Claims that tell one tenant of a shared issuer from another; every allow
   * policy of the issuer must pin one of them to exact values (docs/configuration.md,
   * `tenant_claims`). Empty for an issuer of one tenant.
   */
  tenantClaims: readonly string[];
}

/** A config that cannot be used; the message names the file, the key path and what was expected. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const DEFAULT_ALGORITHMS = ['RS256', 'ES256'];
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

/** The largest `max_token_lifetime_seconds`: 31 days, above any CI job timeout (docs/configuration.md). */
const MAX_TOKEN_LIFETIME_LIMIT_SECONDS = 31 * 86_400;

const issuerSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'expected a name of letters, digits, ".", "_" or "-"'),
    issuer: outboundUrl,
    audiences: z.array(z.string().min(1)).min(1, 'expected at least one audience').optional(),
    jwks_uri: outboundUrl.optional(),
    jwks_file: z.string().min(1).optional(),
    algorithms: z
      .array(z.enum(ASYMMETRIC_ALGORITHMS, { message: `expected asymmetric algorithms among ${ASYMMETRIC_ALGORITHMS.join(', ')} (none and HMAC are never accepted)` }))
      .min(1)
      .optional(),
    clock_skew_seconds: z.number().int().min(0).max(300).default(60),
    max_token_age_seconds: z.number().int().positive().optional(),
    max_token_lifetime_seconds: z.number().int().positive().max(MAX_TOKEN_LIFETIME_LIMIT_SECONDS).default(DEFAULT_MAX_TOKEN_LIFETIME_SECONDS),
    jwks_stale_if_error_seconds: z.number().int().min(0).max(7 * 86_400).optional(),
    tenant_claims: z
      .array(z.string().regex(/^[^/]/, 'expected a top-level claim name (not empty, not a JSON Pointer)'))
      .refine((names) => new Set(names).size === names.length, 'expected each claim name once')
      .optional(),
  })
  .refine((i) => !(i.jwks_uri && i.jwks_file), { message: 'set jwks_uri or jwks_file, not both' })
  .refine((i) => !(i.jwks_file && i.jwks_stale_if_error_seconds !== undefined), {
    message: 'jwks_stale_if_error_seconds applies to fetched keys only; a jwks_file is never fetched',
    path: ['jwks_stale_if_error_seconds'],
  });

/** docs/configuration.md, `limits`: what a demanding operator expects when the section is absent. */
const DEFAULT_LIMITS: LimitsConfig = { refused_per_ip: 120, exchanges_per_subject: 60, explains_per_subject: 20, auditor_failures_per_ip: 10 };

// A limit is never off: 0 would refuse everyone, so it is refused at start like any other bad value.
const perMinute = z
  .number()
  .int()
  .min(1, { message: 'expected a whole number of requests a minute, 1 to 1000000 (a limit cannot be 0, negative or turned off)' })
  .max(1_000_000, { message: 'expected a whole number of requests a minute, 1 to 1000000' });

/** An IPv4 or IPv6 address, or a CIDR range of one (`10.0.0.0/8`, `fd00::/8`), as express's `trust proxy` takes them. */
function isAddressOrRange(value: string): boolean {
  const [address = '', prefix, ...rest] = value.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  return prefix === undefined || (/^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
}

const fileSchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(8080),
      public_url: outboundUrl.optional(),
      trusted_proxies: z.array(z.string().refine(isAddressOrRange, 'expected an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8')).default([]),
      admin_port: z.number().int().min(0).max(65535).optional(),
      exchange_timeout_seconds: exchangeTimeout,
    })
    .default({ host: '127.0.0.1', port: 8080, trusted_proxies: [], exchange_timeout_seconds: exchangeTimeout.parse(undefined) }),
  issuers: z
    .array(issuerSchema)
    .default([])
    .superRefine((issuers, ctx) => {
      for (const field of ['name', 'issuer'] as const) {
        const seen = new Set<string>();
        issuers.forEach((issuer, index) => {
          if (seen.has(issuer[field])) ctx.addIssue({ code: 'custom', path: [index, field], message: `duplicate issuer ${field} '${issuer[field]}'` });
          seen.add(issuer[field]);
        });
      }
    }),
  policies: z.strictObject({ dir: z.string().min(1).default('./policies') }).default({ dir: './policies' }),
  audit: z
    .strictObject({
      url: z
        .string()
        .refine((u) => u.startsWith('sqlite:') || /^postgres(ql)?:\/\//.test(u), 'expected sqlite:<path> or postgres://user:password@host:port/database')
        .default('sqlite:./data/audit.db'),
      checkpoint_interval_seconds: z.number().int().min(10).max(86_400).default(300),
      head_file: z.string().min(1).optional(),
    })
    .default({ url: 'sqlite:./data/audit.db', checkpoint_interval_seconds: 300 }),
  replay: z
    .strictObject({
      url: z
        .string()
        .refine((u) => u === 'memory:' || isRedisUrl(u), 'expected memory:, or redis://[user:password@]host:port/db with db 0-15 (rediss:// for TLS)')
        .default('memory:'),
    })
    .default({ url: 'memory:' }),
  providers: providersConfigSchema,
  auditors: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        token_sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected the lowercase hex SHA-256 of the bearer token (64 characters)'),
      }),
    )
    .default([]),
  console: z.strictObject({ session_seconds: z.number().int().min(60).max(3600).default(900) }).default({ session_seconds: 900 }),
  limits: z
    .strictObject({
      refused_per_ip: perMinute.default(DEFAULT_LIMITS.refused_per_ip),
      exchanges_per_subject: perMinute.default(DEFAULT_LIMITS.exchanges_per_subject),
      explains_per_subject: perMinute.default(DEFAULT_LIMITS.explains_per_subject),
      auditor_failures_per_ip: perMinute.default(DEFAULT_LIMITS.auditor_failures_per_ip),
    })
    .default(DEFAULT_LIMITS),
});

type FileConfig = z.infer<typeof fileSchema>;

/** `redis://` or `rediss://`, a host, an explicit port and a database 0-15, nothing after it. */
function isRedisUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '' && url.port !== '' && /^\/(?:[0-9]|1[0-5])$/.test(url.pathname) && url.search === '' && url.hash === '';
}

/**
 * The all-zero organisation id in the development default `circleci` issuer.
 * CircleCI's issuer is per organisation (`https://oidc.circleci.com/org/<org id>`),
 * so no real token carries this one: a real config names its own organisation.
 */
const CIRCLECI_PLACEHOLDER_ORG_ID = '00000000-0000-0000-0000-000000000000';

/**
 * Built-in development defaults (README.md#quick-start): loopback only, a local
 * dev issuer (see `oidc-broker dev issuer`) and the hosted CI providers the
 * example policies in `policies/` name, all with the broker's own URL as
 * audience. Keys are fetched only when a token of that issuer arrives.
 */
export const DEVELOPMENT_DEFAULTS = {
  server: { host: '127.0.0.1', port: 8080 },
  issuers: [
    { name: 'local', issuer: 'http://127.0.0.1:8081' },
    { name: 'github', issuer: 'https://token.actions.githubusercontent.com' },
    { name: 'gitlab', issuer: 'https://gitlab.com' },
    { name: 'circleci', issuer: `https://oidc.circleci.com/org/${CIRCLECI_PLACEHOLDER_ORG_ID}` },
    { name: 'buildkite', issuer: 'https://agent.buildkite.com' },
  ],
};

/** What the policy compiler must know of the running config: its issuers, and the providers it configures. */
export function compileContext(config: BrokerConfig): CompileContext {
  return {
    issuers: new Map(config.issuers.map((i) => [i.name, { audiences: i.audiences, tenantClaims: i.tenantClaims, kind: sharedIssuerKind(i.issuer) }])),
    providers: new Set(PROVIDERS.filter((p) => config.providers[p.name] !== undefined).map((p) => p.name)),
  };
}

/**
 * Finds the config file (README.md#quick-start): `--config`, else `BROKER_CONFIG`,
 * else `./broker.yaml`, else none (built-in defaults).
 */
export function resolveConfigPath(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (explicit) return explicit;
  if (env.BROKER_CONFIG) return env.BROKER_CONFIG;
  if (existsSync('broker.yaml')) return 'broker.yaml';
  return undefined;
}

/**
 * Reads, substitutes `${ENV}` and validates the config.
 * @throws ConfigError naming the file, the key path, the line and what was expected.
 */
export async function loadConfig(configPath: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<BrokerConfig> {
  if (!configPath) return normalise(fileSchema.parse(DEVELOPMENT_DEFAULTS), 'built-in defaults', process.cwd(), env);
  return parseConfig(await readConfigText(configPath), configPath, env);
}

/** Validates config text; relative paths in it resolve against the file's directory. */
export async function parseConfig(text: string, configPath: string, env: NodeJS.ProcessEnv = process.env): Promise<BrokerConfig> {
  const doc = parseConfigYaml(text, configPath);
  const raw = substituteEnv(doc.value ?? {}, [], configPath, env, doc);
  return normalise(validate(fileSchema, raw, configPath, doc), configPath, path.dirname(path.resolve(configPath)), env);
}

/** What the audit commands read of a config (docs/audit.md, "From the command line"): a subset of BrokerConfig. */
export interface AuditToolConfig {
  source: string;
  audit: { url: string };
  providers: { jwt: { signingKeyFile: string } };
}

// Not strict: the keys of the config these commands do not read are left to `serve` to check.
const auditToolSchema = z.object({
  audit: fileSchema.shape.audit,
  providers: z.object({ jwt: jwtProvider.configSchema }).prefault({ jwt: undefined }),
});

/**
 * Reads only `audit` and `providers.jwt` of the config: a `${VAR}` or a
 * mistake elsewhere (a provider's credentials, an issuer) does not stop
 * `audit query` or `audit verify` from reading the log.
 * @throws ConfigError for those keys, as loadConfig words it.
 */
export async function loadAuditToolConfig(configPath: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<AuditToolConfig> {
  if (!configPath) return toAuditToolConfig(auditToolSchema.parse({}), 'built-in defaults', process.cwd());
  const doc = parseConfigYaml(await readConfigText(configPath), configPath);
  const value = doc.value ?? {};
  let raw = value;
  if (isPlainObject(value)) {
    const { audit, providers } = value;
    const only = (sub: unknown, keyPath: string[]) => substituteEnv(sub, keyPath, configPath, env, doc);
    raw = { audit: only(audit, ['audit']), providers: isPlainObject(providers) ? { jwt: only(providers.jwt, ['providers', 'jwt']) } : providers };
  }
  return toAuditToolConfig(validate(auditToolSchema, raw, configPath, doc), configPath, path.dirname(path.resolve(configPath)));
}

function toAuditToolConfig(file: z.output<typeof auditToolSchema>, source: string, baseDir: string): AuditToolConfig {
  return { source, audit: { url: resolveAuditUrl(file.audit.url, baseDir) }, providers: { jwt: jwtProvider.toConfig(file.providers.jwt, (f) => path.resolve(baseDir, f)) } };
}

async function readConfigText(configPath: string): Promise<string> {
  try {
    return await readFile(configPath, 'utf8');
  } catch (err) {
    throw new ConfigError(`${configPath}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function parseConfigYaml(text: string, configPath: string): YamlDocument {
  const yaml = parseYaml(text);
  if (!yaml.ok) {
    throw new ConfigError(yaml.problems.map((p) => `${configPath}${atLine(p.line)}: invalid YAML: ${p.message.split('\n')[0]}`).join('\n'));
  }
  return yaml.doc;
}

/** `raw` validated by `schema`; every problem names the file, its line and the key path. */
function validate<S extends z.ZodType>(schema: S, raw: unknown, configPath: string, doc: YamlDocument): z.output<S> {
  const parsed = schema.safeParse(raw, { reportInput: true });
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    // An unknown key is reported at its own line, not its parent's.
    const at = issue.code === 'unrecognized_keys' && issue.keys.length === 1 ? [...issue.path, issue.keys[0]!] : issue.path;
    const keyPath = formatKeyPath(issue.path);
    return `${configPath}${atLine(doc.lineOf(at))}: ${keyPath || '(top level)'}: ${describeIssue(issue)}`;
  });
  throw new ConfigError(problems.join('\n'));
}

/** `sqlite:<path>` with the path made absolute against `baseDir`; other URLs as they are. */
function resolveAuditUrl(url: string, baseDir: string): string {
  return url.startsWith('sqlite:') ? `sqlite:${path.resolve(baseDir, url.slice('sqlite:'.length))}` : url;
}

async function normalise(file: FileConfig, source: string, baseDir: string, env: NodeJS.ProcessEnv): Promise<BrokerConfig> {
  const port = env.PORT !== undefined ? parsePort(env.PORT) : file.server.port;
  const adminPort = file.server.admin_port;
  if (adminPort !== undefined && adminPort !== 0 && adminPort === port) {
    throw new ConfigError(`${source}: server.admin_port: expected a port other than the API port (${port}): /metrics and the detailed readiness must not share the public listener`);
  }
  const publicUrl = (file.server.public_url ?? `http://${hostForUrl(file.server.host)}:${port}`).replace(/\/+$/, '');
  const issuers: ConfiguredIssuer[] = [];
  for (const [index, issuer] of file.issuers.entries()) {
    // The broker signs its own tokens as public_url: trusting that issuer would let one broker-signed token buy every other grant.
    if (issuer.issuer.replace(/\/+$/, '') === publicUrl) {
      throw new ConfigError(`${source}: issuers[${index}].issuer: '${issuer.issuer}' is this broker's own server.public_url, the issuer of the tokens it signs; a broker must not accept its own tokens as CI tokens`);
    }
    issuers.push({
      name: issuer.name,
      issuer: issuer.issuer,
      // docs/configuration.md: the public URL is the default audience.
      audiences: issuer.audiences ?? [publicUrl],
      jwksUri: issuer.jwks_uri,
      jwks: issuer.jwks_file ? await readJwksFile(path.resolve(baseDir, issuer.jwks_file), `${source}: issuers[${index}].jwks_file`) : undefined,
      algorithms: issuer.algorithms ?? DEFAULT_ALGORITHMS,
      clockSkewSeconds: issuer.clock_skew_seconds,
      maxTokenAgeSeconds: issuer.max_token_age_seconds,
      maxTokenLifetimeSeconds: issuer.max_token_lifetime_seconds,
      // Defaulted here, not in the schema: the schema refuses it next to a jwks_file only when it was written.
      jwksStaleIfErrorSeconds: issuer.jwks_stale_if_error_seconds ?? DEFAULT_JWKS_STALE_IF_ERROR_SECONDS,
      tenantClaims: issuer.tenant_claims ?? defaultTenantClaims(issuer.issuer),
    });
  }
  const auditUrl = resolveAuditUrl(file.audit.url, baseDir);
  const providers = toProviderConfigs(file.providers, (file) => path.resolve(baseDir, file));
  // By default on the broker's own disk: beside the SQLite file, else beside the signing key (docs/audit.md, "Trusted head").
  const auditHeadFile =
    file.audit.head_file !== undefined
      ? path.resolve(baseDir, file.audit.head_file)
      : path.join(path.dirname(auditUrl.startsWith('sqlite:') ? auditUrl.slice('sqlite:'.length) : providers.jwt.signingKeyFile), 'audit-head.jws');
  return {
    source,
    server: { host: file.server.host, port, publicUrl, trustedProxies: file.server.trusted_proxies, adminPort, exchangeTimeoutSeconds: file.server.exchange_timeout_seconds },
    issuers,
    policies: { dir: path.resolve(baseDir, file.policies.dir) },
    audit: { url: auditUrl, checkpointIntervalSeconds: file.audit.checkpoint_interval_seconds, headFile: auditHeadFile },
    replay: { url: file.replay.url },
    providers,
    auditors: file.auditors.map((a) => ({ name: a.name, tokenSha256: a.token_sha256 })),
    console: { sessionSeconds: file.console.session_seconds },
    limits: file.limits,
  };
}

async function readJwksFile(file: string, where: string): Promise<{ keys: Record<string, unknown>[] }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${where}: cannot read a JSON Web Key Set from ${file} (${err instanceof SyntaxError ? 'not JSON' : ((err as NodeJS.ErrnoException).code ?? 'error')})`);
  }
  const keys: unknown = (parsed as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k): k is Record<string, unknown> => typeof k === 'object' && k !== null)) {
    throw new ConfigError(`${where}: ${file} must be a JWKS: {"keys": [ ...at least one key... ]}`);
  }
  if (keys.some((k) => 'd' in k || k.kty === 'oct')) {
    throw new ConfigError(`${where}: ${file} holds private or symmetric key material; give only the issuer's public keys`);
  }
  return { keys };
}

function parsePort(value: string): number {
  const port = Number(value);
  if (value.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`environment PORT: expected an integer 0..65535, got '${value}'`);
  return port;
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

/** Replaces `${NAME}` in every string value; a missing variable is an error naming the key. */
function substituteEnv(value: unknown, keyPath: (string | number)[], file: string, env: NodeJS.ProcessEnv, doc: YamlDocument): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_match, name: string) => {
      const replacement = env[name];
      if (replacement === undefined) {
        throw new ConfigError(`${file}${atLine(doc.lineOf(keyPath))}: ${formatKeyPath(keyPath)}: environment variable ${name} is not set`);
      }
      return replacement;
    });
  }
  if (Array.isArray(value)) return value.map((item, i) => substituteEnv(item, [...keyPath, i], file, env, doc));
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, [...keyPath, k], file, env, doc)]));
  }
  return value;
}

/** `:<line>` after the file name in a message, or nothing when the problem has no line. */
function atLine(line: number | undefined): string {
  return line === undefined ? '' : `:${line}`;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  if (issue.code === 'invalid_type') return issue.input === undefined ? `required: expected ${issue.expected}` : `expected ${issue.expected}, got ${describeValue(issue.input)}`;
  return issue.message;
}

function describeValue(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${JSON.stringify(value)}`.slice(0, 80);
}

