import type { Template } from '../../claims/template.js';
import { checkKnownKeys, describeValue, echo, has, readTemplate, type Json, type KeyHints, type Report } from '../../yaml/fields.js';
import { countFailures, readDuration, readLiteral, readStringList } from '../grant-fields.js';

export interface GcpGrant {
  provider: 'gcp';
  /** Ceiling of the token's lifetime; the provider also caps it at its configured maximum. */
  maxDurationSeconds: number;
  /** Literal service account email, checked at load. */
  serviceAccount: string;
  scopes: readonly string[];
  delegates: readonly string[];
  tokenType: 'access_token' | 'id_token';
  /** Required for id tokens. */
  idTokenAudience: Template | undefined;
  includeEmail: boolean;
}

export const GCP_GRANT_KEYS = ['provider', 'service_account', 'scopes', 'delegates', 'token_type', 'id_token_audience', 'include_email', 'max_duration_seconds'] as const;
/** generateAccessToken accepts up to 3600 s, or 43200 s with the extended-lifetime org policy; the provider's ceiling decides. */
const GCP_DURATION = { min: 60, max: 43_200, default: 3600 } as const;
/** generateIdToken has no lifetime parameter. */
const GOOGLE_ID_TOKEN_SECONDS = 3600;
const SERVICE_ACCOUNT = /^[a-z0-9][a-z0-9.-]{0,62}@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com$/;
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';

/** A `gcp` grant (docs/policies/reference.md): IAM Credentials parameters, every literal checked at load. */
export function compileGcpGrant(grant: Json, report: Report, hints: KeyHints): GcpGrant | undefined {
  checkKnownKeys(grant, GCP_GRANT_KEYS, ['grant'], report, hints);
  const { failing, failed } = countFailures(report);
  const serviceAccount = readLiteral(grant, 'service_account', SERVICE_ACCOUNT, 'a service account email such as deploy@my-project.iam.gserviceaccount.com', failing, true);
  const scopes = readStringList(grant, 'scopes', failing) ?? [CLOUD_PLATFORM];
  if (scopes.length === 0) failing(['grant', 'scopes'], 'scopes cannot be empty');
  for (const [index, scope] of scopes.entries()) {
    if (!/^https:\/\/www\.googleapis\.com\/auth\/[\w.-]+$/.test(scope)) failing(['grant', 'scopes', index], `'${echo(scope)}' is not an OAuth scope URL such as ${CLOUD_PLATFORM}`);
  }
  const delegates = readStringList(grant, 'delegates', failing) ?? [];
  for (const [index, delegate] of delegates.entries()) {
    if (!SERVICE_ACCOUNT.test(delegate)) failing(['grant', 'delegates', index], `'${echo(delegate)}' is not a service account email`);
  }
  let tokenType: GcpGrant['tokenType'] = 'access_token';
  if (has(grant, 'token_type')) {
    if (grant.token_type === 'access_token' || grant.token_type === 'id_token') tokenType = grant.token_type;
    else failing(['grant', 'token_type'], `token_type must be access_token or id_token, not ${describeValue(grant.token_type)}`);
  }
  let idTokenAudience: Template | undefined;
  if (has(grant, 'id_token_audience')) {
    if (tokenType !== 'id_token') failing(['grant', 'id_token_audience'], 'id_token_audience goes with token_type: id_token');
    else idTokenAudience = readTemplate(grant.id_token_audience, ['grant', 'id_token_audience'], failing);
  } else if (tokenType === 'id_token') failing(['grant', 'id_token_audience'], 'id_token_audience is required for token_type: id_token');
  let includeEmail = true;
  if (has(grant, 'include_email')) {
    if (typeof grant.include_email === 'boolean') includeEmail = grant.include_email;
    else failing(['grant', 'include_email'], 'include_email must be true or false');
  }
  const maxDurationSeconds = readDuration(grant, GCP_DURATION, failing);
  if (tokenType === 'id_token' && has(grant, 'max_duration_seconds') && maxDurationSeconds !== GOOGLE_ID_TOKEN_SECONDS) {
    failing(['grant', 'max_duration_seconds'], `Google ID tokens always last ${GOOGLE_ID_TOKEN_SECONDS} s; drop max_duration_seconds for token_type: id_token`);
  }
  if (failed() || serviceAccount === undefined) return undefined;
  return Object.freeze({
    provider: 'gcp',
    maxDurationSeconds,
    serviceAccount,
    scopes: Object.freeze(scopes),
    delegates: Object.freeze(delegates),
    tokenType,
    idTokenAudience,
    includeEmail,
  });
}

