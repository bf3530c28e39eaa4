/**
 * A loopback AWS STS emulator that speaks the wire protocol `@aws-sdk/client-sts` uses (awsQuery:
 * `POST /`, `application/x-www-form-urlencoded`, `Action=AssumeRole&Version=2011-06-15&...`, XML
 * answers), verifies the SigV4 signature of every request, validates AssumeRole as STS documents
 * it, issues random credentials it records, and injects faults on demand.
 *
 * Only `AssumeRole` is implemented; any other action answers `InvalidAction`.
 *
 * @example
 * ```ts
 * const sts = await startStsEmulator({ accessKeyId: 'AKIAEMULATOR', secretAccessKey: 'secret' });
 * const client = new STSClient({ endpoint: sts.url, region: 'us-east-1', credentials: { accessKeyId: 'AKIAEMULATOR', secretAccessKey: 'secret' } });
 * const out = await client.send(new AssumeRoleCommand({ RoleArn: 'arn:aws:iam::123456789012:role/deploy', RoleSessionName: 'ci' }));
 * assert.equal(out.Credentials?.AccessKeyId, sts.requests[0]?.credentials?.AccessKeyId);
 * await sts.close();
 * ```
 */
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { closeEmulatorServer, createEmulatorServer, listenOnLoopback, readBody } from '../loopback.js';
import { parseAssumeRoleForm, STS_API_VERSION, validateAssumeRole, type AssumeRoleParams } from './assume-role.js';
import { verifySigV4, type StsErrorAnswer } from './sigv4.js';

export type { AssumeRoleParams, SessionTag } from './assume-role.js';
export type { StsErrorAnswer } from './sigv4.js';

export interface StsEmulatorOptions {
  /** The one access key id the emulator accepts (anything else: 403 InvalidClientTokenId). */
  accessKeyId: string;
  secretAccessKey: string;
  /** When set, requests must carry exactly this `x-amz-security-token`; when unset, none. */
  sessionToken?: string;
  /** The region the credential scope must name. Default `us-east-1`. */
  region?: string;
  /** The caller's account, used in AccessDenied messages. Default `123456789012`. */
  accountId?: string;
  /** Every role's MaxSessionDuration, in seconds. Default 3600 (IAM's default). */
  roleMaxSessionSeconds?: number;
  /** Clock for signature skew and credential expiry. Default `() => new Date()`. */
  now?: () => Date;
}

/** One issued credential set, exactly as written into the response XML. */
export interface IssuedCredentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  SessionToken: string;
  Expiration: Date;
  AssumedRoleId: string;
  Arn: string;
  /** Percentage; present when a session policy, policy ARNs or tags were sent. */
  PackedPolicySize?: number;
  SourceIdentity?: string;
}

/** An AssumeRole call whose signature verified, whatever its outcome. */
export interface ReceivedAssumeRole extends AssumeRoleParams {
  /** The raw `application/x-www-form-urlencoded` body. */
  body: string;
  /** Signed header names (lower case) to their canonical values. */
  signedHeaders: Record<string, string>;
  receivedAt: Date;
  /** HTTP status answered (undefined for a `hang` fault, which never answers). */
  status: number | undefined;
  /** Error code answered, or the fault injected; undefined on success. */
  errorCode?: string;
  /** Set when the call succeeded. */
  credentials?: IssuedCredentials;
  /** True once the client closed the connection before the answer was written (it aborted the call). */
  abandoned: boolean;
}

export type StsFault =
  | { kind: 'none' }
  | { kind: 'AccessDenied' | 'Throttling' | 'InternalFailure' | 'ServiceUnavailable' | 'ValidationError' | 'MalformedPolicyDocument'; times?: number }
  | { kind: 'hang' | 'garbage'; times?: number }
  /** Answers as usual once `until` settles: a test holds STS mid-call while it does something (a signal to the broker). */
  | { kind: 'delay'; until: Promise<unknown>; times?: number };

export interface StsEmulator {
  /** `http://127.0.0.1:<port>`; pass as the STSClient `endpoint`. */
  url: string;
  /** Every AssumeRole call that passed signature verification, in arrival order. */
  requests: ReceivedAssumeRole[];
  /**
   * Makes the next `times` calls (default: every call) fail. A call consumes the fault only once
   * its signature verified and its Action/Version are right, so a fault never hides a signing bug.
   */
  setFault(fault: StsFault): void;
  /** Every HTTP request received, including ones rejected before parsing (so retries count). */
  callCount(): number;
  /** Closes the server and destroys every open connection, including hung ones. */
  close(): Promise<void>;
}

const XMLNS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const MAX_BODY_BYTES = 256 * 1024;
const ALNUM_UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

function xmlEscape(value: string): string {
  return value.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

function randomUpper(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += ALNUM_UPPER[randomInt(ALNUM_UPPER.length)];
  return out;
}

/** STS timestamps have second precision: `2026-01-02T03:04:05Z`. */
function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function faultAnswer(kind: Exclude<StsFault['kind'], 'none' | 'hang' | 'garbage' | 'delay'>, roleArn: string, callerArn: string): StsErrorAnswer {
  switch (kind) {
    case 'AccessDenied':
      return { status: 403, type: 'Sender', code: 'AccessDenied', message: `User: ${callerArn} is not authorized to perform: sts:AssumeRole on resource: ${roleArn}` };
    case 'Throttling':
      return { status: 400, type: 'Sender', code: 'Throttling', message: 'Rate exceeded' };
    case 'InternalFailure':
      return { status: 500, type: 'Receiver', code: 'InternalFailure', message: 'An internal error occurred. Try again.' };
    case 'ServiceUnavailable':
      return { status: 503, type: 'Receiver', code: 'ServiceUnavailable', message: 'Service is unavailable. Try again.' };
    case 'ValidationError':
      return { status: 400, type: 'Sender', code: 'ValidationError', message: 'Injected validation error.' };
    case 'MalformedPolicyDocument':
      return { status: 400, type: 'Sender', code: 'MalformedPolicyDocument', message: 'Injected: the policy is not in the valid JSON format.' };
  }
}


/**
 * Starts the emulator on 127.0.0.1 and an ephemeral port.
 *
 * @throws if the server cannot listen.
 */
export async function startStsEmulator(options: StsEmulatorOptions): Promise<StsEmulator> {
  const region = options.region ?? 'us-east-1';
  const accountId = options.accountId ?? '123456789012';
  const roleMaxSessionSeconds = options.roleMaxSessionSeconds ?? 3600;
  const now = options.now ?? (() => new Date());
  const callerArn = `arn:aws:iam::${accountId}:user/oidc-broker`;
  const requests: ReceivedAssumeRole[] = [];
  /** Role ids are stable per role, as in IAM. */
  const roleIds = new Map<string, string>();
  let fault: { fault: Exclude<StsFault, { kind: 'none' }>; remaining: number } | undefined;
  let calls = 0;

  const send = (res: ServerResponse, status: number, body: string, contentType = 'text/xml'): void => {
    const requestId = randomUUID();
    res.writeHead(status, { 'content-type': contentType, 'x-amzn-RequestId': requestId, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const sendError = (res: ServerResponse, error: StsErrorAnswer): void => {
    const requestId = randomUUID();
    const body = `<ErrorResponse xmlns="${XMLNS}">\n  <Error>\n    <Type>${error.type}</Type>\n    <Code>${xmlEscape(error.code)}</Code>\n    <Message>${xmlEscape(error.message)}</Message>\n  </Error>\n  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`;
    res.writeHead(error.status, { 'content-type': 'text/xml', 'x-amzn-RequestId': requestId, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const issue = (params: AssumeRoleParams, packedPolicySize: number | undefined): { xml: string; credentials: IssuedCredentials } => {
    const roleArn = params.RoleArn!;
    const sessionName = params.RoleSessionName!;
    // arn:<partition>:iam::<account>:role/<path/><name>; validated already, and a path may hold ':'.
    const arnParts = roleArn.split(':');
    const roleAccount = arnParts[4] ?? accountId;
    const roleName = roleArn.slice(roleArn.lastIndexOf('/') + 1);
    let roleId = roleIds.get(roleArn);
    if (roleId === undefined) {
      roleId = `AROA${randomUpper(17)}`;
      roleIds.set(roleArn, roleId);
    }
    const partition = arnParts[1] ?? 'aws';
    const credentials: IssuedCredentials = {
      AccessKeyId: `ASIA${randomUpper(16)}`,
      SecretAccessKey: randomBytes(30).toString('base64'),
      SessionToken: `IQoJb3JpZ2luX2VjE${randomBytes(600).toString('base64')}`,
      Expiration: new Date(Math.floor(now().getTime() / 1000) * 1000 + (params.DurationSeconds ?? 3600) * 1000),
      AssumedRoleId: `${roleId}:${sessionName}`,
      Arn: `arn:${partition}:sts::${roleAccount}:assumed-role/${roleName}/${sessionName}`,
    };
    if (packedPolicySize !== undefined) credentials.PackedPolicySize = packedPolicySize;
    if (params.SourceIdentity !== undefined) credentials.SourceIdentity = params.SourceIdentity;
    const xml = `<AssumeRoleResponse xmlns="${XMLNS}">
  <AssumeRoleResult>
${credentials.SourceIdentity !== undefined ? `    <SourceIdentity>${xmlEscape(credentials.SourceIdentity)}</SourceIdentity>\n` : ''}    <AssumedRoleUser>
      <AssumedRoleId>${xmlEscape(credentials.AssumedRoleId)}</AssumedRoleId>
      <Arn>${xmlEscape(credentials.Arn)}</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>${credentials.AccessKeyId}</AccessKeyId>
      <SecretAccessKey>${credentials.SecretAccessKey}</SecretAccessKey>
      <SessionToken>${credentials.SessionToken}</SessionToken>
      <Expiration>${isoSeconds(credentials.Expiration)}</Expiration>
    </Credentials>
${packedPolicySize !== undefined ? `    <PackedPolicySize>${packedPolicySize}</PackedPolicySize>\n` : ''}  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>${randomUUID()}</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>
`;
    return { xml, credentials };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    calls++;
    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === undefined) {
      sendError(res, { status: 413, type: 'Sender', code: 'RequestEntityTooLarge', message: `Request body exceeds ${MAX_BODY_BYTES} bytes.` });
      return;
    }
    const signed = verifySigV4(
      { method: req.method ?? 'GET', url: req.url ?? '/', rawHeaders: req.rawHeaders, body },
      { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey, sessionToken: options.sessionToken, region, service: 'sts', now: now() },
    );
    if (!signed.ok) {
      sendError(res, signed.error);
      return;
    }
    // awsQuery: the SDK always POSTs a form to `/` (STS also accepts GET with a query string; the SDK never uses it).
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (req.method !== 'POST' || contentType !== 'application/x-www-form-urlencoded') {
      sendError(res, { status: 400, type: 'Sender', code: 'MissingAction', message: 'Missing Action: expected POST with an application/x-www-form-urlencoded body.' });
      return;
    }
    const rawBody = body.toString('utf8');
    const form = parseAssumeRoleForm(rawBody);
    if (form.action === undefined) {
      sendError(res, { status: 400, type: 'Sender', code: 'MissingAction', message: 'Missing Action' });
      return;
    }
    if (form.action !== 'AssumeRole' || form.version !== STS_API_VERSION) {
      sendError(res, { status: 400, type: 'Sender', code: 'InvalidAction', message: `Could not find operation ${form.action} for version ${form.version ?? 'NO_VERSION_SPECIFIED'}` });
      return;
    }

    const record: ReceivedAssumeRole = { ...form.params, body: rawBody, signedHeaders: signed.signedHeaders, receivedAt: now(), status: undefined, abandoned: false };
    requests.push(record);
    res.once('close', () => {
      if (!res.writableFinished) record.abandoned = true;
    });

    const injected = fault?.fault;
    if (fault !== undefined && --fault.remaining <= 0) fault = undefined;
    if (injected?.kind === 'delay') await injected.until.catch(() => undefined);
    else if (injected !== undefined) {
      const { kind } = injected;
      record.errorCode = kind;
      switch (kind) {
        case 'hang':
          // Never answer; close() destroys the socket.
          return;
        case 'garbage':
          record.status = 200;
          send(res, 200, '}{ this is not XML \u0000\u0001 <<<', 'text/xml');
          return;
        default: {
          const error = faultAnswer(kind, form.params.RoleArn ?? '', callerArn);
          record.status = error.status;
          sendError(res, error);
          return;
        }
      }
    }

    const verdict = validateAssumeRole(form, { roleMaxSessionSeconds });
    if (!verdict.ok) {
      record.status = verdict.error.status;
      record.errorCode = verdict.error.code;
      sendError(res, verdict.error);
      return;
    }
    const { xml, credentials } = issue(form.params, verdict.packedPolicySize);
    record.status = 200;
    record.credentials = credentials;
    send(res, 200, xml);
  };

  const server = createEmulatorServer(handle, (res, message) => sendError(res, { status: 500, type: 'Receiver', code: 'InternalFailure', message }));
  const url = await listenOnLoopback(server);

  return {
    url,
    requests,
    setFault(next: StsFault): void {
      const times = next.kind === 'none' ? 0 : next.times ?? Number.POSITIVE_INFINITY;
      fault = next.kind === 'none' || times <= 0 ? undefined : { fault: next, remaining: times };
    },
    callCount: () => calls,
    close: () => closeEmulatorServer(server),
  };
}
