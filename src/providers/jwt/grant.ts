import { readTemplate, checkKnownKeys, has, type Json, type KeyHints, type Report } from '../../yaml/fields.js';
import { isPlainObject } from '../../values.js';
import type { Template } from '../../claims/template.js';
import { countFailures, readDuration } from '../grant-fields.js';

export interface JwtGrant {
  provider: 'jwt';
  maxDurationSeconds: number;
  audience: Template;
  /** Extra claims of the broker-signed token; registered claims (iss, sub, aud, exp, nbf, iat, jti) are refused at load. */
  claims: Record<string, Template>;
}

export const JWT_GRANT_KEYS = ['provider', 'audience', 'claims', 'max_duration_seconds'] as const;
/** RFC 7519 section 4.1 claims the broker sets itself; a policy overriding them could forge identity or lifetime. */
const REGISTERED_CLAIMS: ReadonlySet<string> = new Set(['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti']);
const JWT_DURATION = { min: 60, max: 43_200, default: 900 } as const;

/** A `jwt` grant (docs/policies/reference.md): `audience` (required), `claims` (templates), `max_duration_seconds`. */
export function compileJwtGrant(grant: Json, report: Report, hints: KeyHints): JwtGrant | undefined {
  checkKnownKeys(grant, JWT_GRANT_KEYS, ['grant'], report, hints);
  const { failing, failed } = countFailures(report);

  let audience: Template | undefined;
  if (!has(grant, 'audience')) failing(['grant', 'audience'], 'grant.audience is required for provider jwt', 'the service that will verify the broker-signed token');
  else audience = readTemplate(grant.audience, ['grant', 'audience'], failing);
  if (audience !== undefined && audience.source === '') failing(['grant', 'audience'], 'grant.audience cannot be empty');

  const claims: Record<string, Template> = {};
  if (has(grant, 'claims')) {
    if (!isPlainObject(grant.claims)) {
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

  const maxDurationSeconds = readDuration(grant, JWT_DURATION, failing);
  if (failed() || audience === undefined) return undefined;
  return Object.freeze({ provider: 'jwt', maxDurationSeconds, audience, claims: Object.freeze(claims) });
}
