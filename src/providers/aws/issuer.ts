import { AssumeRoleCommand, STSClient, STSServiceException, type AssumeRoleCommandInput } from '@aws-sdk/client-sts';
import { AccessDeniedError, ProviderError } from '../../errors.js';
import { TemplateError, type Template } from '../../claims/template.js';
import { clampDurationSeconds, renderGrant, type IssuedCredential, type Provider } from '../types.js';
import { renderFitting } from '../value-rules.js';
import { SESSION_NAME_RULE, SOURCE_IDENTITY_RULE, TAG_VALUE_RULE, type AwsGrant, type JsonTemplate } from './grant.js';

export interface AwsProviderOptions {
  /** Default region when the grant names none; else the SDK's own (AWS_REGION), else us-east-1. */
  region?: string | undefined;
  /** STS endpoint override (loopback emulators, VPC endpoints); AWS_ENDPOINT_URL_STS also works through the SDK. */
  endpoint?: string | undefined;
  /** The whole call, retries included: a hung STS answers the caller within this. */
  deadlineMs?: number;
  /** One HTTP attempt. */
  attemptTimeoutMs?: number;
  /** Attempts, with the SDK's backoff; only throttling, 5xx and network errors are retried. */
  maxAttempts?: number;
}

/** STS floor for DurationSeconds. */
const MIN_DURATION_SECONDS = 900;
/** STS's limit on the plaintext session policy. */
const MAX_SESSION_POLICY_CHARS = 2048;
/** IAM wildcards and policy variables: a claim holding one could widen a session policy. */
const IAM_SPECIAL = /[*?$]/;

/**
 * AWS credentials through STS AssumeRole (docs/policies/reference.md, `aws`). The
 * broker's own identity is the SDK's default credential chain; each session is
 * scoped from verified claims (session name, source identity, tags, inline
 * session policy).
 */
export function createAwsProvider(options: AwsProviderOptions = {}): Provider<AwsGrant> {
  const deadlineMs = options.deadlineMs ?? 25_000;
  const clients = new Map<string, STSClient>();
  const clientFor = (region: string): STSClient => {
    let client = clients.get(region);
    if (!client) {
      client = new STSClient({
        region,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        maxAttempts: options.maxAttempts ?? 3,
        // requestTimeout alone only warns; throwOnRequestTimeout makes a hung attempt fail (and be retried).
        requestHandler: { requestTimeout: options.attemptTimeoutMs ?? 8_000, throwOnRequestTimeout: true },
      });
      clients.set(region, client);
    }
    return client;
  };

  return {
    async issue({ grant, token, requestedDurationSeconds, issuanceId, signal }): Promise<IssuedCredential> {
      const durationSeconds = clampDurationSeconds(requestedDurationSeconds, MIN_DURATION_SECONDS, grant.maxDurationSeconds);
      const input = toAssumeRoleInput(grant, token.claims, durationSeconds, issuanceId);
      const region = grant.region ?? options.region ?? process.env.AWS_REGION ?? 'us-east-1';
      let output;
      try {
        // The exchange's own end (its deadline, or shutdown abandoning it) stops the call and its retries too.
        const deadline = AbortSignal.timeout(deadlineMs);
        output = await clientFor(region).send(new AssumeRoleCommand(input), { abortSignal: signal ? AbortSignal.any([signal, deadline]) : deadline });
      } catch (err) {
        throw toProviderError(err);
      }
      const credentials = output.Credentials;
      if (!credentials?.AccessKeyId || !credentials.SecretAccessKey || !credentials.SessionToken || !credentials.Expiration) {
        throw new ProviderError('AWS STS answered without credentials; try again shortly.', { reason: 'aws:IncompleteResponse' });
      }
      const expiration = credentials.Expiration.toISOString();
      return {
        target: grant.roleArn,
        credentialId: credentials.AccessKeyId,
        expiresAt: credentials.Expiration,
        durationSeconds,
        credentials: {
          AccessKeyId: credentials.AccessKeyId,
          SecretAccessKey: credentials.SecretAccessKey,
          SessionToken: credentials.SessionToken,
          Expiration: expiration,
        },
        env: [
          ['AWS_ACCESS_KEY_ID', credentials.AccessKeyId],
          ['AWS_SECRET_ACCESS_KEY', credentials.SecretAccessKey],
          ['AWS_SESSION_TOKEN', credentials.SessionToken],
          ['AWS_REGION', region],
        ],
      };
    },
  };
}

/**
 * Renders the grant for one token. Claim values are inserted literally, and a
 * value outside what STS accepts for its field is refused, never altered: IAM
 * conditions decide on session names, source identities and tags, so two
 * different claims must never reach STS as the same value
 * (docs/providers.md, "Claim templates and how claim values are made safe").
 * @throws AccessDeniedError when the grant cannot be rendered for this token.
 */
function toAssumeRoleInput(grant: AwsGrant, claims: Readonly<Record<string, unknown>>, durationSeconds: number, issuanceId: string): AssumeRoleCommandInput {
  return renderGrant('aws', () => {
    const sessionName = grant.sessionName ? renderFitting(grant.sessionName, claims, SESSION_NAME_RULE, 'session_name', 'session_name_invalid') : `oidc-broker-${issuanceId}`;
    const sourceIdentity = grant.sourceIdentity && renderFitting(grant.sourceIdentity, claims, SOURCE_IDENTITY_RULE, 'source_identity', 'source_identity_invalid');
    const tags = grant.sessionTags.map(([Key, value]) => ({ Key, Value: renderFitting(value, claims, TAG_VALUE_RULE, `session tag '${Key}'`, 'session_tag_invalid') }));
    const policy = grant.sessionPolicy === undefined ? undefined : JSON.stringify(renderJson(grant.sessionPolicy, claims));
    if (policy !== undefined && policy.length > MAX_SESSION_POLICY_CHARS) {
      throw new AccessDeniedError(`The policy's session_policy renders to ${policy.length} characters for this token; AWS accepts at most ${MAX_SESSION_POLICY_CHARS}.`, {
        reason: 'session_policy_too_large',
      });
    }
    return {
      RoleArn: grant.roleArn,
      RoleSessionName: sessionName,
      DurationSeconds: durationSeconds,
      ...(sourceIdentity !== undefined ? { SourceIdentity: sourceIdentity } : {}),
      ...(tags.length > 0 ? { Tags: tags } : {}),
      ...(grant.transitiveTagKeys.length > 0 ? { TransitiveTagKeys: [...grant.transitiveTagKeys] } : {}),
      ...(policy !== undefined ? { Policy: policy } : {}),
      ...(grant.policyArns.length > 0 ? { PolicyArns: grant.policyArns.map((arn) => ({ arn })) } : {}),
      ...(grant.externalId ? { ExternalId: grant.externalId } : {}),
    };
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

const POLICY_PROBLEMS = new Set(['ValidationError', 'MalformedPolicyDocumentException', 'PackedPolicyTooLargeException', 'RegionDisabledException']);
const BROKER_IDENTITY_PROBLEMS = new Set(['ExpiredTokenException', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'IncompleteSignature', 'MissingAuthenticationToken', 'UnrecognizedClientException']);

/** Maps an SDK failure to a sentence a CI user can act on, by error type and status, never by message text. */
function toProviderError(err: unknown): ProviderError {
  const name = err instanceof Error ? err.name : 'Unknown';
  if (name === 'CredentialsProviderError') {
    return new ProviderError("The broker has no AWS credentials of its own (default credential chain); the broker's operators must configure them.", { reason: 'aws:NoCredentials', cause: err });
  }
  if (name === 'AbortError' || name === 'TimeoutError') {
    return new ProviderError('AWS STS did not answer in time; try again shortly.', { reason: 'aws:Timeout', cause: err });
  }
  if (err instanceof STSServiceException) {
    const code = err.name;
    const reason = `aws:${code}`;
    if (code === 'AccessDenied' || code === 'AccessDeniedException') {
      return new ProviderError("AWS refused to let the broker assume the role (AccessDenied): the role's trust policy must allow the broker.", { reason, cause: err });
    }
    if (POLICY_PROBLEMS.has(code)) {
      return new ProviderError(`AWS rejected the role request this policy produces (${code}); the policy's owners must fix its grant.`, { reason, cause: err });
    }
    if (BROKER_IDENTITY_PROBLEMS.has(code)) {
      return new ProviderError(`AWS refused the broker's own credentials (${code}); the broker's operators must fix them.`, { reason, cause: err });
    }
    return new ProviderError(`AWS STS is throttling or unavailable (${code}); try again shortly.`, { reason, cause: err });
  }
  return new ProviderError('AWS STS could not be reached or answered something unreadable; try again shortly.', { reason: 'aws:BadResponse', cause: err });
}
