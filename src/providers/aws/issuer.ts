import { AssumeRoleCommand, STSClient, STSServiceException, type AssumeRoleCommandInput } from '@aws-sdk/client-sts';
import { ProviderError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { clampDurationSeconds, type IssuedCredential, type Provider } from '../types.js';
import type { AwsGrant } from './grant.js';
import { renderAwsSession } from './render.js';

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

/** The AWS SDK's own switch for its Node.js version notice (documented by the SDK's maintainers with the notice). */
const SDK_NODE_NOTICE_SWITCH = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
/** The first Node.js major that AWS SDK releases after the first week of January 2027 run on. */
const SDK_MIN_NODE_MAJOR = 22;

/**
 * On Node.js 20 the SDK's first client prints a notice (process.emitWarning)
 * as nine lines of plain text on stderr: at the first AssumeRole, in the
 * middle of the JSON log. The broker says it instead, once, as one log line at
 * start, and turns the SDK's own print off with the SDK's switch
 * (docs/operations.md#logging). An operator who set the switch decides alone.
 */
export function logSdkNodeNotice(logger: Logger): void {
  if (process.env[SDK_NODE_NOTICE_SWITCH] !== undefined) return;
  process.env[SDK_NODE_NOTICE_SWITCH] = 'true';
  if (Number(process.versions.node.split('.')[0]) >= SDK_MIN_NODE_MAJOR) return;
  logger.warn('the AWS SDK will require Node.js 22', {
    node_version: process.version,
    notice: `AWS SDK for JavaScript releases after the first week of January 2027 require Node.js >= ${SDK_MIN_NODE_MAJOR}: upgrade Node.js to keep receiving SDK fixes`,
  });
}

/** STS floor for DurationSeconds. */
const MIN_DURATION_SECONDS = 900;

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

/** The AssumeRole request for one token: the claim-filled parts rendered by `renderAwsSession`, the rest from the grant. @throws AccessDeniedError */
function toAssumeRoleInput(grant: AwsGrant, claims: Readonly<Record<string, unknown>>, durationSeconds: number, issuanceId: string): AssumeRoleCommandInput {
  const { sessionName, sourceIdentity, tags, policy } = renderAwsSession(grant, claims);
  return {
    RoleArn: grant.roleArn,
    RoleSessionName: sessionName ?? `oidc-broker-${issuanceId}`,
    DurationSeconds: durationSeconds,
    ...(sourceIdentity !== undefined ? { SourceIdentity: sourceIdentity } : {}),
    ...(tags.length > 0 ? { Tags: tags } : {}),
    ...(grant.transitiveTagKeys.length > 0 ? { TransitiveTagKeys: [...grant.transitiveTagKeys] } : {}),
    ...(policy !== undefined ? { Policy: policy } : {}),
    ...(grant.policyArns.length > 0 ? { PolicyArns: grant.policyArns.map((arn) => ({ arn })) } : {}),
    ...(grant.externalId ? { ExternalId: grant.externalId } : {}),
  };
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
