import { z } from 'zod';
import { outboundUrl, providerTimeout } from '../../config-fields.js';
import { callTimeouts, renderRefusal, TOKEN_TYPE, type ProviderModule } from '../types.js';
import { compileGithubGrant, GITHUB_GRANT_KEYS, type GithubGrant } from './grant.js';
import { githubTarget, renderGithubRepositories } from './render.js';

export interface GithubProviderConfig {
  appId: string;
  privateKeyFile: string;
  apiUrl: string;
  timeoutSeconds: number;
}

const configSchema = z
  .strictObject({
    // GitHub shows the App id as a number; YAML may give either form.
    app_id: z.union([z.number().int().positive(), z.string().regex(/^[1-9]\d{0,18}$/, 'expected the App id, a positive integer')]).transform(String),
    private_key_file: z.string().min(1),
    api_url: outboundUrl.default('https://api.github.com'),
    timeout_seconds: providerTimeout,
  })
  .optional();

/**
 * GitHub App installation tokens (docs/policies/reference.md, `github`): the
 * broker is a GitHub App (`providers.github`), and each exchange creates a
 * token for the grant's repositories and permissions. octokit is loaded by
 * `create` only, so the offline CLI never loads it.
 */
export const githubProvider: ProviderModule<'github', GithubGrant, z.output<typeof configSchema>, GithubProviderConfig | undefined> = {
  name: 'github',
  configSchema,
  toConfig: (raw, resolvePath) =>
    raw && { appId: raw.app_id, privateKeyFile: resolvePath(raw.private_key_file), apiUrl: raw.api_url, timeoutSeconds: raw.timeout_seconds },
  grantKeys: GITHUB_GRANT_KEYS,
  compileGrant: compileGithubGrant,
  // Literal repositories fix the target, so a refused call's record still says what was asked for; templates need the token.
  target: (grant) => (grant.repositories.every((r) => r.claimRefs.length === 0) ? githubTarget(renderGithubRepositories(grant, {}), grant) : null),
  checkGrant: (grant, claims) => renderRefusal(() => renderGithubRepositories(grant, claims)),
  credentialProcess: false,
  // An installation token is an opaque access token.
  tokenExchange: {
    kind: 'token',
    form: (_grant, requested) =>
      requested === undefined || requested === TOKEN_TYPE.accessToken ? { credential: 'token', issuedTokenType: TOKEN_TYPE.accessToken, tokenType: 'Bearer' } : undefined,
  },
  async create(config) {
    const { createGithubProvider, loadGithubAppKey } = await import('./issuer.js');
    return createGithubProvider({ appId: config.appId, privateKey: await loadGithubAppKey(config.privateKeyFile), apiUrl: config.apiUrl, ...callTimeouts(config.timeoutSeconds) });
  },
};
