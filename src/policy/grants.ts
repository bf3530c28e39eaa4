import { findProvider, PROVIDERS, type Grant, type ProviderName } from '../providers/registry.js';
import { isPlainObject } from '../values.js';
import type { CompileContext, Effect } from './types.js';
import { describeValue, has, suggest, type Json, type KeyHints, type Report } from '../yaml/fields.js';

/** Provider names as messages list them: alphabetically. */
const PROVIDER_NAMES: readonly ProviderName[] = PROVIDERS.map((p) => p.name).sort();

/**
 * Reads a policy's `grant` for its provider (docs/policies/reference.md); the
 * provider's own module compiles the rest.
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
  if (!isPlainObject(grant)) {
    report(['grant'], 'grant must be a map with a provider');
    return undefined;
  }
  const provider = grant.provider;
  if (!has(grant, 'provider')) {
    report(['grant', 'provider'], 'grant.provider is required', `one of ${PROVIDER_NAMES.join(', ')}`);
    return undefined;
  }
  const module = typeof provider === 'string' ? findProvider(provider) : undefined;
  if (module === undefined) {
    report(['grant', 'provider'], `unknown provider ${describeValue(provider)}`, (typeof provider === 'string' ? suggest(provider, PROVIDER_NAMES) : undefined) ?? `one of ${PROVIDER_NAMES.join(', ')}`);
    return undefined;
  }
  if (!ctx.providers.has(module.name)) {
    report(['grant', 'provider'], `provider '${module.name}' is not configured/supported`, `configured providers: ${[...ctx.providers].join(', ') || '(none)'}`);
    return undefined;
  }
  return module.compileGrant(grant, report, grantKeyHints(module.name, module.grantKeys, policyKeys));
}

/** Every grant key of every provider, with the providers that have it (for hints outside `grant:`). */
export function grantKeyProviders(): ReadonlyMap<string, readonly ProviderName[]> {
  const out = new Map<string, ProviderName[]>();
  for (const name of PROVIDER_NAMES) for (const key of findProvider(name)!.grantKeys) out.set(key, [...(out.get(key) ?? []), name]);
  return out;
}

/** For a `provider` grant: keys of the top level or of other providers say where they belong. */
function grantKeyHints(provider: ProviderName, own: readonly string[], policyKeys: readonly string[]): KeyHints {
  const elsewhere = new Map<string, string>();
  for (const key of policyKeys) if (!own.includes(key)) elsewhere.set(key, 'at the top level of the policy, not under `grant:`');
  for (const [key, providers] of grantKeyProviders()) {
    if (own.includes(key)) continue;
    const top = elsewhere.has(key) ? 'at the top level of the policy or ' : '';
    elsewhere.set(key, `${top}in ${providers.join(' and ')} grants; this grant's provider is ${provider}`);
  }
  return { elsewhere };
}
