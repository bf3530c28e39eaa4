import { renderGrant } from '../types.js';
import type { GcpGrant } from './grant.js';

/**
 * The ID token audience for one token (undefined for an access token grant,
 * which takes nothing from the token). Pure, so explain and `policy test`
 * run the very rendering the exchange runs (the module's `checkGrant`).
 *
 * @throws AccessDeniedError when a claim the audience template references is absent or not a plain value.
 */
export function renderIdTokenAudience(grant: GcpGrant, claims: Readonly<Record<string, unknown>>): string | undefined {
  // The compiler requires id_token_audience for id tokens.
  return grant.tokenType === 'id_token' ? renderGrant('gcp', () => grant.idTokenAudience!.render(claims)) : undefined;
}
