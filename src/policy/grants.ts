import type { KeyPath } from './parse.js';
import type { AwsGrant, CompileContext, Effect, GcpGrant, Grant, JsonTemplate, JwtGrant, ProviderName, Template } from './types.js';
import { checkKnownKeys, describeValue, echo, has, isJsonObject, readTemplate, suggest, type Json, type KeyHints, type Report } from './yaml-values.js';

const PROVIDERS: readonly ProviderName[] = ['aws', 'gcp', 'jwt'];
const JWT_GRANT_KEYS = ['provider', 'audience', 'claims', 'max_duration_seconds'] as const;
/** RFC 7519 section 4.1 claims the broker sets itself; a policy overriding them could forge identity or lifetime. */
const REGISTERED_CLAIMS: ReadonlySet<string> = new Set(['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti']);
const JWT_DURATION = { min: 60, max: 43_200, default: 900 } as const;

/**
 * Reads a policy's `grant` for its provider (contract section 3).
 * `policyKeys` are the top-level keys, so a grant key that belongs there says so.
 */
export function readGrant(root: Json, effect: Effect | undefined, ctx: CompileContext, report: Report, policyKeys: readonly string[] = []): Grant | undefined {
  if (effect === 'deny') {
    if (has(root, 'grant')) report(['grant'], 'a deny policy cannot have a grant', 'remove `grant`, or set effect: allow');
    return undefined;
  }
  if (!has(root, 'grant')) {
    if (effect === 'allow') report(['grant'], 'an allow policy needs a grant', 'add grant: with a provider (jwt)');
    return undefined;
  }
  const grant = root.grant;
  if (!isJsonObject(grant)) {
    report(['grant'], 'grant must be a map with a provider');
    return undefined;
  }
  const provider = grant.provider;
  if (!has(grant, 'provider')) {
    report(['grant', 'provider'], 'grant.provider is required', `one of ${PROVIDERS.join(', ')}`);
    return undefined;
  }
  if (typeof provider !== 'string' || !(PROVIDERS as readonly string[]).includes(provider)) {
    report(['grant', 'provider'], `unknown provider ${describeValue(provider)}`, (typeof provider === 'string' ? suggest(provider, PROVIDERS) : undefined) ?? `one of ${PROVIDERS.join(', ')}`);
    return undefined;
  }
  const name = provider as ProviderName;
  if (!ctx.providers.has(name)) {
    report(['grant', 'provider'], `provider '${name}' is not configured/supported`, `configured providers: ${[...ctx.providers].join(', ') || '(none)'}`);
    return undefined;
  }
  const hints = grantKeyHints(name, policyKeys);
  switch (name) {
    case 'jwt':
      return readJwtGrant(grant, report, hints);
    case 'aws':
      return readAwsGrant(grant, report, hints);
    case 'gcp':
      return readGcpGrant(grant, report, hints);
    default: {
      const unreachable: never = name;
      return unreachable;
    }
  }
}

function readJwtGrant(grant: Json, report: Report, hints: KeyHints): JwtGrant | undefined {
  checkKnownKeys(grant, JWT_GRANT_KEYS, ['grant'], report, hints);
  let failures = 0;
  const failing: Report = (...args) => {
    failures++;
    report(...args);
  };

  let audience: Template | undefined;
  if (!has(grant, 'audience')) failing(['grant', 'audience'], 'grant.audience is required for provider jwt', 'the service that will verify the broker-signed token');
  else audience = readTemplate(grant.audience, ['grant', 'audience'], failing);
  if (audience !== undefined && audience.source === '') failing(['grant', 'audience'], 'grant.audience cannot be empty');

  const claims: Record<string, Template> = {};
  if (has(grant, 'claims')) {
    if (!isJsonObject(grant.claims)) {
      failing(['grant', 'claims'], 'grant.claims must be a map of claim name to template');
    } else {
      for (const [key, raw] of Object.entries(grant.claims)) {
        if (REGISTERED_CLAIMS.has(key)) {
          failing(['grant', 'claims', key], `claim '${key}' is set by the broker and cannot be overridden`, `registered claims ${[...REGISTERED_CLAIMS].join(', ')} are reserved`);
          continue;
        }
        const template = readTemplate(raw, ['grant', 'claims', key], failing);
        // defineProperty, so a claim named `__proto__` stays an own key instead of a prototype.
        if (template) Object.defineProperty(claims, key, { value: template, enumerable: true });
      }
    }
  }

  let maxDurationSeconds: number = JWT_DURATION.default;
  if (has(grant, 'max_duration_seconds')) {
    const value = grant.max_duration_seconds;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < JWT_DURATION.min || value > JWT_DURATION.max) {
      failing(['grant', 'max_duration_seconds'], `max_duration_seconds must be an integer from ${JWT_DURATION.min} to ${JWT_DURATION.max}, not ${describeValue(value)}`);
    } else {
      maxDurationSeconds = value;
    }
  }
  if (failures > 0 || audience === undefined) return undefined;
  return Object.freeze({ provider: 'jwt', maxDurationSeconds, audience, claims: Object.freeze(claims) });
}

const AWS_GRANT_KEYS = [
  'provider', 'role_arn', 'session_name', 'source_identity', 'session_tags', 'transitive_tag_keys',
  'session_policy', 'policy_arns', 'external_id', 'region', 'max_duration_seconds',
] as const;
/** STS AssumeRole limits (AWS API reference). */
const AWS_DURATION = { min: 900, max: 43_200, default: 3600 } as const;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const POLICY_ARN = /^arn:aws[a-z-]*:iam::(\d{12}|aws):policy\/[\w+=,.@/-]{1,512}$/;
const TAG_KEY = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$/u;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;

function readAwsGrant(grant: Json, report: Report, hints: KeyHints): AwsGrant | undefined {
  checkKnownKeys(grant, AWS_GRANT_KEYS, ['grant'], report, hints);
  const { failing, failed } = countFailures(report);

  const roleArn = readLiteral(grant, 'role_arn', ROLE_ARN, 'an IAM role ARN such as arn:aws:iam::123456789012:role/deploy', failing, true);
  const sessionName = has(grant, 'session_name') ? readTemplate(grant.session_name, ['grant', 'session_name'], failing) : undefined;
  const sourceIdentity = has(grant, 'source_identity') ? readTemplate(grant.source_identity, ['grant', 'source_identity'], failing) : undefined;

  const sessionTags: (readonly [string, Template])[] = [];
  if (has(grant, 'session_tags')) {
    const tags = grant.session_tags;
    if (!isJsonObject(tags)) failing(['grant', 'session_tags'], 'session_tags must be a map of tag key to template');
    else {
      const seen = new Set<string>();
      for (const [key, raw] of Object.entries(tags)) {
        const at = ['grant', 'session_tags', key];
        if (!TAG_KEY.test(key) || /^aws:/i.test(key)) failing(at, `tag key '${echo(key)}' must be 1-128 letters, digits, spaces or _.:/=+-@ and not start with aws:`);
        else if (seen.has(key.toLowerCase())) failing(at, `tag key '${echo(key)}' repeats another key (tag keys are case-insensitive)`);
        seen.add(key.toLowerCase());
        const template = readTemplate(raw, at, failing);
        if (template) sessionTags.push(Object.freeze([key, template] as const));
      }
      if (sessionTags.length > 50) failing(['grant', 'session_tags'], `at most 50 session tags, not ${sessionTags.length}`);
    }
  }
  const transitiveTagKeys = readStringList(grant, 'transitive_tag_keys', failing) ?? [];
  for (const [index, key] of transitiveTagKeys.entries()) {
    if (!sessionTags.some(([tag]) => tag === key)) failing(['grant', 'transitive_tag_keys', index], `'${echo(key)}' is not one of session_tags`);
  }

  let sessionPolicy: JsonTemplate | undefined;
  if (has(grant, 'session_policy')) {
    const raw = grant.session_policy;
    if (!isJsonObject(raw) || !has(raw, 'Version') || !has(raw, 'Statement')) {
      failing(['grant', 'session_policy'], 'session_policy must be an IAM policy document with Version and Statement');
    } else sessionPolicy = readJsonTemplate(raw, ['grant', 'session_policy'], failing);
  }
  const policyArns = readStringList(grant, 'policy_arns', failing) ?? [];
  if (policyArns.length > 10) failing(['grant', 'policy_arns'], `at most 10 managed policy ARNs, not ${policyArns.length}`);
  for (const [index, arn] of policyArns.entries()) {
    if (!POLICY_ARN.test(arn)) failing(['grant', 'policy_arns', index], `'${echo(arn)}' is not an IAM managed policy ARN`);
  }
  const externalId = readLiteral(grant, 'external_id', EXTERNAL_ID, '2-1224 characters of letters, digits and _+=,.@:/-', failing, false);
  const region = readLiteral(grant, 'region', REGION, 'an AWS region such as eu-west-1', failing, false);
  const maxDurationSeconds = readDuration(grant, AWS_DURATION, failing);

  if (failed() || roleArn === undefined) return undefined;
  return Object.freeze({
    provider: 'aws',
    maxDurationSeconds,
    roleArn,
    sessionName,
    sourceIdentity,
    sessionTags: Object.freeze(sessionTags),
    transitiveTagKeys: Object.freeze(transitiveTagKeys),
    sessionPolicy,
    policyArns: Object.freeze(policyArns),
    externalId,
    region,
  });
}

const GCP_GRANT_KEYS = ['provider', 'service_account', 'scopes', 'delegates', 'token_type', 'id_token_audience', 'include_email', 'max_duration_seconds'] as const;
/** generateAccessToken accepts up to 3600 s, or 43200 s with the extended-lifetime org policy; the provider's ceiling decides. */
const GCP_DURATION = { min: 60, max: 43_200, default: 3600 } as const;
/** generateIdToken has no lifetime parameter. */
const GOOGLE_ID_TOKEN_SECONDS = 3600;
const SERVICE_ACCOUNT = /^[a-z0-9][a-z0-9.-]{0,62}@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com$/;
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';

function readGcpGrant(grant: Json, report: Report, hints: KeyHints): GcpGrant | undefined {
  checkKnownKeys(grant, GCP_GRANT_KEYS, ['grant'], report, hints);
  const { failing, failed } = countFailures(report);
  const serviceAccount = readLiteral(grant, 'service_account', SERVICE_ACCOUNT, 'a service account email such as deploy@my-project.iam.gserviceaccount.com', failing, true);
  const scopes = readStringList(grant, 'scopes', failing) ?? [CLOUD_PLATFORM];
  if (scopes.length === 0) failing(['grant', 'scopes'], 'scopes cannot be empty');
  for (const [index, scope] of scopes.entries()) {
    if (!/^https:\/\/www\.googleapis\.com\/auth\/[\w.-]+$/.test(scope)) failing(['grant', 'scopes', index], `'${echo(scope)}' is not an OAuth scope URL such as ${CLOUD_PLATFORM}`);
  }
  const delegates = readStringList(grant, 'delegates', failing) ?? [];
  for (const [index, delegate] of delegates.entries()) {
    if (!SERVICE_ACCOUNT.test(delegate)) failing(['grant', 'delegates', index], `'${echo(delegate)}' is not a service account email`);
  }
  let tokenType: GcpGrant['tokenType'] = 'access_token';
  if (has(grant, 'token_type')) {
    if (grant.token_type === 'access_token' || grant.token_type === 'id_token') tokenType = grant.token_type;
    else failing(['grant', 'token_type'], `token_type must be access_token or id_token, not ${describeValue(grant.token_type)}`);
  }
  let idTokenAudience: Template | undefined;
  if (has(grant, 'id_token_audience')) {
    if (tokenType !== 'id_token') failing(['grant', 'id_token_audience'], 'id_token_audience goes with token_type: id_token');
    else idTokenAudience = readTemplate(grant.id_token_audience, ['grant', 'id_token_audience'], failing);
  } else if (tokenType === 'id_token') failing(['grant', 'id_token_audience'], 'id_token_audience is required for token_type: id_token');
  let includeEmail = true;
  if (has(grant, 'include_email')) {
    if (typeof grant.include_email === 'boolean') includeEmail = grant.include_email;
    else failing(['grant', 'include_email'], 'include_email must be true or false');
  }
  const maxDurationSeconds = readDuration(grant, GCP_DURATION, failing);
  if (tokenType === 'id_token' && has(grant, 'max_duration_seconds') && maxDurationSeconds !== GOOGLE_ID_TOKEN_SECONDS) {
    failing(['grant', 'max_duration_seconds'], `Google ID tokens always last ${GOOGLE_ID_TOKEN_SECONDS} s; drop max_duration_seconds for token_type: id_token`);
  }
  if (failed() || serviceAccount === undefined) return undefined;
  return Object.freeze({
    provider: 'gcp',
    maxDurationSeconds,
    serviceAccount,
    scopes: Object.freeze(scopes),
    delegates: Object.freeze(delegates),
    tokenType,
    idTokenAudience,
    includeEmail,
  });
}

/** Wraps a reporter so a grant reader can tell whether anything it read failed. */
function countFailures(report: Report): { failing: Report; failed: () => boolean } {
  let failures = 0;
  return {
    failing: (...args) => {
      failures++;
      report(...args);
    },
    failed: () => failures > 0,
  };
}

function readDuration(grant: Json, bounds: { min: number; max: number; default: number }, report: Report): number {
  if (!has(grant, 'max_duration_seconds')) return bounds.default;
  const value = grant.max_duration_seconds;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < bounds.min || value > bounds.max) {
    report(['grant', 'max_duration_seconds'], `max_duration_seconds must be an integer from ${bounds.min} to ${bounds.max}, not ${describeValue(value)}`);
    return bounds.default;
  }
  return value;
}

function readLiteral(grant: Json, key: string, pattern: RegExp, expected: string, report: Report, required: boolean): string | undefined {
  if (!has(grant, key)) {
    if (required) report(['grant', key], `grant.${key} is required`, expected);
    return undefined;
  }
  const value = grant[key];
  if (typeof value !== 'string' || !pattern.test(value)) {
    report(['grant', key], `${key} must be ${expected}, not ${describeValue(value)}`, typeof value === 'string' && value.includes('${') ? `${key} cannot use claim templates` : undefined);
    return undefined;
  }
  return value;
}

/** Each provider's grant keys. */
function keysOf(provider: ProviderName): readonly string[] {
  switch (provider) {
    case 'jwt':
      return JWT_GRANT_KEYS;
    case 'aws':
      return AWS_GRANT_KEYS;
    case 'gcp':
      return GCP_GRANT_KEYS;
    default: {
      const unreachable: never = provider;
      return unreachable;
    }
  }
}

/** Every grant key of every provider, with the providers that have it (for hints outside `grant:`). */
export function grantKeyProviders(): ReadonlyMap<string, readonly ProviderName[]> {
  const out = new Map<string, ProviderName[]>();
  for (const provider of PROVIDERS) for (const key of keysOf(provider)) out.set(key, [...(out.get(key) ?? []), provider]);
  return out;
}

/** For a `provider` grant: keys of the top level or of other providers say where they belong. */
function grantKeyHints(provider: ProviderName, policyKeys: readonly string[]): KeyHints {
  const own = keysOf(provider);
  const elsewhere = new Map<string, string>();
  for (const key of policyKeys) if (!own.includes(key)) elsewhere.set(key, 'at the top level of the policy, not under `grant:`');
  for (const [key, providers] of grantKeyProviders()) {
    if (own.includes(key)) continue;
    const top = elsewhere.has(key) ? 'at the top level of the policy or ' : '';
    elsewhere.set(key, `${top}in ${providers.join(' and ')} grants; this grant's provider is ${provider}`);
  }
  return { elsewhere };
}

function readStringList(grant: Json, key: string, report: Report): string[] | undefined {
  if (!has(grant, key)) return undefined;
  const value = grant[key];
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string')) {
    report(['grant', key], `${key} must be a list of strings`);
    return undefined;
  }
  return [...value];
}

/** Every string of a JSON document becomes a template; keys stay literal. */
function readJsonTemplate(value: unknown, at: KeyPath, report: Report): JsonTemplate | undefined {
  if (typeof value === 'string') return readTemplate(value, at, report);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return value;
  if (Array.isArray(value)) {
    const items = value.map((item, index) => readJsonTemplate(item, [...at, index], report));
    return items.every((item) => item !== undefined) ? Object.freeze(items as JsonTemplate[]) : undefined;
  }
  if (isJsonObject(value)) {
    const out: Record<string, JsonTemplate> = {};
    for (const [key, item] of Object.entries(value)) {
      const compiled = readJsonTemplate(item, [...at, key], report);
      if (compiled === undefined) return undefined;
      Object.defineProperty(out, key, { value: compiled, enumerable: true });
    }
    return Object.freeze(out);
  }
  report(at, `unsupported value ${describeValue(value)}`);
  return undefined;
}
