import { z } from 'zod';
import { TOKEN_TYPE, renderRefusal, type ProviderModule } from '../types.js';
import { compileJwtGrant, JWT_GRANT_KEYS, type JwtGrant } from './grant.js';
import { renderJwtClaims } from './render.js';

export interface JwtProviderConfig {
  signingKeyFile: string;
}

const DEFAULT_SIGNING_KEY_FILE = './data/signing-key.jwk';

/**
 * Broker-signed tokens (docs/policies/reference.md, `jwt`): always on, signed with the
 * active key of the broker's key file (`providers.jwt.signing_key_file`, which
 * the audit checkpoints use too; rotation: docs/configuration.md).
 */
export const jwtProvider: ProviderModule<'jwt', JwtGrant, { signing_key_file: string }, JwtProviderConfig> = {
  name: 'jwt',
  configSchema: z
    .strictObject({ signing_key_file: z.string().min(1).default(DEFAULT_SIGNING_KEY_FILE) })
    .default({ signing_key_file: DEFAULT_SIGNING_KEY_FILE }),
  toConfig: (raw, resolvePath) => ({ signingKeyFile: resolvePath(raw.signing_key_file) }),
  grantKeys: JWT_GRANT_KEYS,
  compileGrant: compileJwtGrant,
  // The audience is a template: only the issued token says which it was.
  target: () => null,
  checkGrant: (grant, claims) => renderRefusal(() => renderJwtClaims(grant, claims)),
  credentialProcess: false,
  // A broker-signed token is a JWT access token: either type, as requested (access_token by default).
  tokenExchange: {
    kind: 'token',
    form: (_grant, requested) => ({ credential: 'access_token', issuedTokenType: requested ?? TOKEN_TYPE.accessToken, tokenType: 'Bearer' }),
  },
  async create(_config, context) {
    const { createJwtProvider } = await import('./issuer.js');
    return createJwtProvider({ issuerUrl: context.publicUrl, signingKey: context.signingKey });
  },
};
