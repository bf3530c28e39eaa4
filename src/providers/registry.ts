import { z } from 'zod';
import type { AccessDeniedError } from '../errors.js';
import { awsProvider } from './aws/index.js';
import { gcpProvider } from './gcp/index.js';
import { githubProvider } from './github/index.js';
import { jwtProvider } from './jwt/index.js';
import type { Provider, ProviderContext, ProviderModule } from './types.js';

/**
 * Every credential provider the broker knows, one line each (docs/architecture.md,
 * "Adding a provider"). The config's `providers:` section, the policy grant
 * union and the exchange's dispatch all derive from this list.
 *
 * Each name appears once, so a module (or a created provider) looked up by a
 * grant's `provider` takes exactly that grant: the casts below rest on this,
 * since TypeScript cannot follow a lookup by a union key.
 */
export const PROVIDERS = [jwtProvider, awsProvider, gcpProvider, githubProvider] as const;

type AnyProviderModule = (typeof PROVIDERS)[number];
export type ProviderName = AnyProviderModule['name'];
type ModuleOf<N extends ProviderName> = Extract<AnyProviderModule, { name: N }>;
type GrantOf<M> = M extends ProviderModule<string, infer G, unknown, unknown> ? G : never;

/** Grants are a tagged union on `provider`, one member per registered provider. */
export type Grant = GrantOf<AnyProviderModule>;

/** Each provider's config as it uses it; undefined for an optional provider that is not configured. */
export type ProviderConfigs = { [N in ProviderName]: ReturnType<ModuleOf<N>['toConfig']> };

/** The module of a grant's provider, typed for that grant. */
export function providerOf<G extends Grant>(grant: G): ProviderModule<G['provider'], G, unknown, unknown> {
  return PROVIDERS.find((p) => p.name === grant.provider) as unknown as ProviderModule<G['provider'], G, unknown, unknown>;
}

/** The issuing halves of the configured providers, by name. */
export type ProviderSet = { readonly [N in ProviderName]?: Provider<Extract<Grant, { provider: N }>> };

/** Builds every configured provider's issuing half (loading its SDK only now). */
export async function createProviders(configs: ProviderConfigs, context: ProviderContext): Promise<ProviderSet> {
  const created: [ProviderName, unknown][] = [];
  for (const module of PROVIDERS) {
    const config = configs[module.name];
    if (config !== undefined) created.push([module.name, await (module.create as (config: unknown, context: ProviderContext) => Promise<unknown>)(config, context)]);
  }
  return Object.fromEntries(created);
}

/** The configured provider that issues this grant, if any. */
export function issuerFor<G extends Grant>(providers: ProviderSet, grant: G): Provider<G> | undefined {
  return providers[grant.provider] as Provider<G> | undefined;
}

/** Null when this token's claims fill the grant; else the refusal the exchange's issue step would make, with no upstream call (the module's `checkGrant`). */
export function grantRenderRefusal(grant: Grant, claims: Readonly<Record<string, unknown>>): AccessDeniedError | null {
  return providerOf(grant).checkGrant(grant, claims);
}

/** The module registered under `name`, if any. */
export function findProvider(name: string): AnyProviderModule | undefined {
  return PROVIDERS.find((p) => p.name === name);
}

/** The config file's `providers:` section (docs/configuration.md): one key per registered provider. */
const providersSection = z.strictObject(Object.fromEntries(PROVIDERS.map((p) => [p.name, p.configSchema])) as { [M in AnyProviderModule as M['name']]: M['configSchema'] });
// Absent, it parses as `{}`: every section takes its own default (optional providers stay unconfigured).
export const providersConfigSchema = providersSection.prefault({} as z.input<typeof providersSection>);

/** The parsed `providers:` section as each provider uses it. */
export function toProviderConfigs(raw: z.output<typeof providersConfigSchema>, resolvePath: (file: string) => string): ProviderConfigs {
  return Object.fromEntries(PROVIDERS.map((p) => [p.name, (p.toConfig as (raw: unknown, resolve: (file: string) => string) => unknown)(raw[p.name], resolvePath)])) as ProviderConfigs;
}
