import { renderGrant } from '../types.js';
import type { JwtGrant } from './grant.js';

/**
 * The audience and extra claims of the broker-signed token for one token.
 * Pure, so explain and `policy test` run the very rendering the exchange runs
 * (the module's `checkGrant`).
 *
 * @throws AccessDeniedError when a claim a template references is absent or not a plain value.
 */
export function renderJwtClaims(grant: JwtGrant, claims: Readonly<Record<string, unknown>>): { audience: string; extraClaims: Record<string, string> } {
  return renderGrant('jwt', () => ({
    audience: grant.audience.render(claims),
    extraClaims: Object.fromEntries(Object.entries(grant.claims).map(([name, template]) => [name, template.render(claims)])),
  }));
}
