import { Router } from 'express';
import type { JWK } from 'jose';

/**
 * Discovery for broker-signed tokens (docs/policies/reference.md, `jwt`), so relying parties can verify them.
 * The JWKS is the active and published keys of the key set serving now (docs/configuration.md, `providers.jwt`).
 */
export function wellKnownRoutes(deps: { publicUrl: string; publicJwks: () => { keys: JWK[] } }): Router {
  const router = Router();
  router.get('/.well-known/jwks.json', (_req, res) => {
    res.set('Cache-Control', 'public, max-age=300');
    res.json(deps.publicJwks());
  });
  router.get('/.well-known/openid-configuration', (_req, res) => {
    res.set('Cache-Control', 'public, max-age=300');
    res.json({
      issuer: deps.publicUrl,
      jwks_uri: `${deps.publicUrl}/.well-known/jwks.json`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: [...new Set(deps.publicJwks().keys.map((k) => k.alg).filter(Boolean))],
      // RFC 8414 fields, so OAuth clients find the RFC 8693 endpoint; it takes no client authentication.
      token_endpoint: `${deps.publicUrl}/oauth2/token`,
      grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      token_endpoint_auth_methods_supported: ['none'],
    });
  });
  return router;
}
