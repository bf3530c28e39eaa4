import { ProviderError } from '../../errors.js';
import { signJws, type SigningKey } from '../../keys/signing-key.js';
import { clampDurationSeconds, type IssuedCredential, type Provider } from '../types.js';
import type { JwtGrant } from './grant.js';
import { renderJwtClaims } from './render.js';

const MIN_DURATION_SECONDS = 60;

/**
 * Broker-signed tokens (docs/policies/reference.md, `jwt`): the broker's active ES256 key, its
 * public half at /.well-known/jwks.json. `jti` is the issuance id, so a token
 * leads straight to its audit record.
 */
export function createJwtProvider(options: { issuerUrl: string; signingKey: () => SigningKey; now?: () => number }): Provider<JwtGrant> {
  const now = options.now ?? Date.now;
  return {
    async issue({ grant, token, requestedDurationSeconds, issuanceId }): Promise<IssuedCredential> {
      const { audience, extraClaims } = renderJwtClaims(grant, token.claims);
      const durationSeconds = clampDurationSeconds(requestedDurationSeconds, MIN_DURATION_SECONDS, grant.maxDurationSeconds);
      const issuedAt = Math.floor(now() / 1000);
      const expiresAt = issuedAt + durationSeconds;
      // The active key of the moment: after a rotation is reloaded, new tokens carry the new kid.
      const signingKey = options.signingKey();
      let jwt: string;
      try {
        // The grant's claims first, then the registered ones (which a grant cannot name, docs/policies/reference.md).
        jwt = await signJws(
          signingKey,
          { typ: 'JWT' },
          { ...extraClaims, iss: options.issuerUrl, sub: token.subject, aud: audience, iat: issuedAt, nbf: issuedAt, exp: expiresAt, jti: issuanceId },
        );
      } catch (err) {
        throw new ProviderError('The broker could not sign the token.', { reason: 'signing_failed', cause: err });
      }
      return {
        target: audience,
        credentialId: issuanceId,
        expiresAt: new Date(expiresAt * 1000),
        durationSeconds,
        credentials: { access_token: jwt, token_type: 'Bearer' },
        env: [['OIDC_BROKER_TOKEN', jwt]],
      };
    },
  };
}
