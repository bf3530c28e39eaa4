import { AccessDeniedError } from '../../errors.js';
import { TemplateError, type Template } from '../../claims/template.js';
import { renderGrant } from '../types.js';
import { renderFitting } from '../value-rules.js';
import { SESSION_NAME_RULE, SOURCE_IDENTITY_RULE, TAG_VALUE_RULE, type AwsGrant, type JsonTemplate } from './grant.js';

/** STS's limit on the plaintext session policy. */
const MAX_SESSION_POLICY_CHARS = 2048;
/** IAM wildcards and policy variables: a claim holding one could widen a session policy. */
const IAM_SPECIAL = /[*?$]/;

/** The parts of an AssumeRole request that come from the token's claims. */
export interface RenderedAwsSession {
  /** Undefined when the grant names no `session_name`: the issuer then names the session after the issuance. */
  sessionName: string | undefined;
  sourceIdentity: string | undefined;
  tags: { Key: string; Value: string }[];
  /** The session policy as the JSON text STS takes. */
  policy: string | undefined;
}

/**
 * Renders the grant's templates for one token. Claim values are inserted
 * literally, and a value outside what STS accepts for its field is refused,
 * never altered: IAM conditions decide on session names, source identities
 * and tags, so two different claims must never reach STS as the same value
 * (docs/providers.md, "Claim templates and how claim values are made safe").
 * Pure and free of the SDK, so explain and `policy test` run the very
 * rendering the exchange runs (the module's `checkGrant`).
 *
 * @throws AccessDeniedError when the grant cannot be rendered for this token.
 */
export function renderAwsSession(grant: AwsGrant, claims: Readonly<Record<string, unknown>>): RenderedAwsSession {
  return renderGrant('aws', () => {
    const sessionName = grant.sessionName && renderFitting(grant.sessionName, claims, SESSION_NAME_RULE, 'session_name', 'session_name_invalid');
    const sourceIdentity = grant.sourceIdentity && renderFitting(grant.sourceIdentity, claims, SOURCE_IDENTITY_RULE, 'source_identity', 'source_identity_invalid');
    const tags = grant.sessionTags.map(([Key, value]) => ({ Key, Value: renderFitting(value, claims, TAG_VALUE_RULE, `session tag '${Key}'`, 'session_tag_invalid') }));
    const policy = grant.sessionPolicy === undefined ? undefined : JSON.stringify(renderJson(grant.sessionPolicy, claims));
    if (policy !== undefined && policy.length > MAX_SESSION_POLICY_CHARS) {
      throw new AccessDeniedError(`The policy's session_policy renders to ${policy.length} characters for this token; AWS accepts at most ${MAX_SESSION_POLICY_CHARS}.`, {
        reason: 'session_policy_too_large',
      });
    }
    return { sessionName, sourceIdentity, tags, policy };
  });
}

function renderJson(value: JsonTemplate, claims: Readonly<Record<string, unknown>>): unknown {
  if (isTemplate(value)) return value.render(claims, refuseIamSpecials);
  if (Array.isArray(value)) return value.map((item: JsonTemplate) => renderJson(item, claims));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) Object.defineProperty(out, key, { value: renderJson(item, claims), enumerable: true });
    return out;
  }
  return value;
}

function refuseIamSpecials(value: string, claim: string): void {
  if (IAM_SPECIAL.test(value)) throw new TemplateError(claim, `claim '${claim}' holds an IAM wildcard or variable (*, ? or $), which a session policy must not take from a token`);
}

function isTemplate(value: JsonTemplate): value is Template {
  return typeof value === 'object' && value !== null && typeof (value as Partial<Template>).render === 'function';
}
