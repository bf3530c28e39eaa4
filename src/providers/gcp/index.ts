import { z } from 'zod';
import { outboundUrl, providerTimeout } from '../../config-fields.js';
import { callTimeouts, TOKEN_TYPE, renderRefusal, type ProviderModule } from '../types.js';
import { compileGcpGrant, GCP_GRANT_KEYS, type GcpGrant } from './grant.js';
import { renderIdTokenAudience } from './render.js';

export interface GcpProviderConfig {
  endpoint: string | undefined;
  maxLifetimeSeconds: number;
  timeoutSeconds: number;
}

const configSchema = z
  .strictObject({
    endpoint: outboundUrl.optional(),
    max_lifetime_seconds: z.number().int().min(60).max(43_200).default(3600),
    timeout_seconds: providerTimeout,
  })
  .optional();

/**
 * Google Cloud tokens through IAM Credentials (docs/policies/reference.md, `gcp`); the
 * broker's own identity is Application Default Credentials. The client
 * library is loaded by `create` only, so the offline CLI never loads it.
 */
export const gcpProvider: ProviderModule<'gcp', GcpGrant, z.output<typeof configSchema>, GcpProviderConfig | undefined> = {
  name: 'gcp',
  configSchema,
  toConfig: (raw) => raw && { endpoint: raw.endpoint, maxLifetimeSeconds: raw.max_lifetime_seconds, timeoutSeconds: raw.timeout_seconds },
  grantKeys: GCP_GRANT_KEYS,
  compileGrant: compileGcpGrant,
  // The service account is literal in the grant, so a failed call's record still says what was asked for.
  target: (grant) => grant.serviceAccount,
  checkGrant: (grant, claims) => renderRefusal(() => renderIdTokenAudience(grant, claims)),
  credentialProcess: false,
  // An access token is opaque (access_token only); an ID token is a JWT but no access token.
  tokenExchange: {
    kind: 'token',
    form: (grant, requested) => {
      if (grant.tokenType === 'access_token') {
        return requested === undefined || requested === TOKEN_TYPE.accessToken ? { credential: 'access_token', issuedTokenType: TOKEN_TYPE.accessToken, tokenType: 'Bearer' } : undefined;
      }
      if (requested !== undefined && requested !== TOKEN_TYPE.jwt) return undefined;
      return { credential: 'id_token', issuedTokenType: requested ?? TOKEN_TYPE.idToken, tokenType: 'N_A' };
    },
  },
  async create(config) {
    const { createGcpProvider } = await import('./issuer.js');
    return createGcpProvider({ endpoint: config.endpoint, maxLifetimeSeconds: config.maxLifetimeSeconds, ...callTimeouts(config.timeoutSeconds) });
  },
};
