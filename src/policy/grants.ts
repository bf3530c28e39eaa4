import type { CompileContext, Effect, Grant, JwtGrant, ProviderName, Template } from './types.js';
import { checkKnownKeys, describeValue, has, isJsonObject, readTemplate, suggest, type Json, type Report } from './yaml-values.js';

const PROVIDERS: readonly ProviderName[] = ['aws', 'gcp', 'jwt'];
const JWT_GRANT_KEYS = ['provider', 'audience', 'claims', 'max_duration_seconds'] as const;
/** RFC 7519 section 4.1 claims the broker sets itself; a policy overriding them could forge identity or lifetime. */
const REGISTERED_CLAIMS: ReadonlySet<string> = new Set(['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti']);
const JWT_DURATION = { min: 60, max: 43_200, default: 900 } as const;

/** Reads a policy's `grant` for its provider (contract section 3). */
export function readGrant(root: Json, effect: Effect | undefined, ctx: CompileContext, report: Report): Grant | undefined {
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
  switch (name) {
    case 'jwt':
      return readJwtGrant(grant, report);
    case 'aws':
    case 'gcp':
      report(['grant', 'provider'], `grants for provider '${name}' are not supported by this version`);
      return undefined;
    default: {
      const unreachable: never = name;
      return unreachable;
    }
  }
}

function readJwtGrant(grant: Json, report: Report): JwtGrant | undefined {
  checkKnownKeys(grant, JWT_GRANT_KEYS, ['grant'], report);
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
