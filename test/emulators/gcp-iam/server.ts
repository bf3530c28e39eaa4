/**
 * Loopback GCP emulators for the broker's tests: a GCE metadata server (what
 * google-auth-library's Application Default Credentials call on GCE) and the
 * IAM Credentials v1 REST API (what `IAMCredentialsClient` sends with
 * `fallback: true`). Both speak the real wire protocol, check what they
 * receive the way Google does, and record what they hand out.
 *
 * Wire facts this emulator was built from (google-auth-library 10.5.0,
 * gcp-metadata 8.1.4, google-gax 5.0.8, @google-cloud/iam-credentials 4.2.2):
 * - ADC detection: `GET /computeMetadata/v1/instance` with `Metadata-Flavor: Google`;
 *   then `GET /computeMetadata/v1/project/project-id` (unless a project id is known)
 *   and `GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b`.
 * - IAM: `POST /v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com:generateAccessToken?$alt=json%3Benum-encoding=int`
 *   with `Authorization: Bearer <metadata token>` and a proto3-JSON body
 *   (`{"scope":[...],"lifetime":"900s"}`; empty `delegates` are omitted).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { closeEmulatorServer, createEmulatorServer, listenOnLoopback } from '../loopback.js';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';

export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const IAM_SCOPE = 'https://www.googleapis.com/auth/iam';
const GOOGLE_ISSUER = 'https://accounts.google.com';
const MAX_BODY_BYTES = 1024 * 1024;

/** Google's canonical status strings and the HTTP status each one is served with. */
export const GOOGLE_HTTP_STATUS = {
  INVALID_ARGUMENT: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  RESOURCE_EXHAUSTED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
} as const;
export type GoogleStatus = keyof typeof GOOGLE_HTTP_STATUS;

export type GcpFault =
  | { kind: 'none' }
  | { kind: 'PERMISSION_DENIED' | 'UNAVAILABLE' | 'RESOURCE_EXHAUSTED' | 'INTERNAL'; times?: number }
  | { kind: 'hang' | 'garbage'; times?: number };

export interface GcpEmulatorOptions {
  /** Target service accounts that exist and that the broker may impersonate. Default: `deployer@emulator-project.iam.gserviceaccount.com`. */
  serviceAccounts?: string[];
  /** Service accounts that exist but on which the broker lacks `roles/iam.serviceAccountTokenCreator` (403). */
  forbiddenServiceAccounts?: string[];
  /** Allow `lifetime` up to 43200s (the `iam.allowServiceAccountCredentialLifetimeExtension` org policy). */
  allowExtendedLifetime?: boolean;
  /** The VM's own service account (metadata `email`). Default: `broker@emulator-project.iam.gserviceaccount.com`. */
  brokerServiceAccount?: string;
  /** Default: `emulator-project`. */
  projectId?: string;
  /** `expires_in` of metadata tokens. Default 3599, as on GCE; keep it above 300 or google-auth-library refreshes before every call. */
  brokerTokenLifetimeSeconds?: number;
  /** The VM's scopes: granted when the token request names none. Default: cloud-platform. */
  instanceScopes?: string[];
}

export type IamMethod = 'generateAccessToken' | 'generateIdToken';

/** An IAM call the emulator accepted. */
export interface IamRequestRecord {
  method: IamMethod;
  /** The target service account, decoded from the path. */
  email: string;
  /** The JSON body exactly as received. */
  body: Record<string, unknown>;
  /** The bearer token presented (a metadata token). */
  bearer: string;
  /** Raw request target, e.g. `/v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com:generateAccessToken?...`. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

/** An IAM call the emulator refused (validation, auth or injected fault). */
export interface IamRefusalRecord {
  method: IamMethod | undefined;
  email: string | undefined;
  httpStatus: number;
  /** Google status string, or `hang` / `garbage` for those faults. */
  status: GoogleStatus | 'hang' | 'garbage';
  message: string;
}

export interface MetadataRequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  /** Whether `Metadata-Flavor: Google` was present. */
  flavor: boolean;
  httpStatus: number;
}

export interface BrokerTokenRecord {
  token: string;
  serviceAccount: string;
  scopes: string[];
  expiresInSeconds: number;
  expiresAt: Date;
}

export type IssuedGcpCredential =
  | {
      kind: 'access_token';
      serviceAccount: string;
      accessToken: string;
      expireTime: string;
      scope: string[];
      lifetimeSeconds: number;
      delegates: string[];
      /** The metadata token that authorised the call. */
      bearer: string;
    }
  | {
      kind: 'id_token';
      serviceAccount: string;
      token: string;
      audience: string;
      includeEmail: boolean;
      delegates: string[];
      bearer: string;
    };

export interface GcpEmulator {
  /** `127.0.0.1:<port>`: the value for `GCE_METADATA_HOST`. */
  metadataHost: string;
  /** `http://127.0.0.1:<port>`: the IAM Credentials REST endpoint. */
  iamUrl: string;
  brokerServiceAccount: string;
  projectId: string;
  /** Accepted IAM calls, in order. */
  requests(): IamRequestRecord[];
  /** Refused IAM calls, in order. */
  refusals(): IamRefusalRecord[];
  /** Every metadata request, including refused ones. */
  metadataRequests(): MetadataRequestRecord[];
  /** Tokens the metadata server handed out. */
  issuedBrokerTokens(): BrokerTokenRecord[];
  /** Credentials the IAM API handed out. */
  issuedCredentials(): IssuedGcpCredential[];
  /** Public keys that verify the emulator's ID tokens (Google's own live at https://www.googleapis.com/oauth2/v3/certs; here also `GET <iamUrl>/oauth2/v3/certs`). */
  idTokenJwks(): { keys: JWK[] };
  /** Injects a fault into the next `times` IAM calls (all of them if `times` is absent); `{ kind: 'none' }` clears it. */
  setFault(fault: GcpFault): void;
  /** Every HTTP request that reached the IAM API, including refused, faulted and hung ones. */
  callCount(): number;
  /** Makes every metadata token issued so far expired, so IAM answers 401 for it. */
  expireBrokerTokens(): void;
  /** Closes both servers, destroying open (including hung) connections. */
  close(): Promise<void>;
}

// Service account ids and project ids: 6 to 30 characters, lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen.
const ACCOUNT_ID = '[a-z](?:[a-z0-9-]{4,28})[a-z0-9]';
const SERVICE_ACCOUNT_EMAIL = new RegExp(`^${ACCOUNT_ID}@${ACCOUNT_ID}\\.iam\\.gserviceaccount\\.com$`);
const DELEGATE_PREFIX = 'projects/-/serviceAccounts/';
const IAM_PATH = /^\/v1\/projects\/([^/]+)\/serviceAccounts\/([^/:]+):(generateAccessToken|generateIdToken)$/;
const DURATION = /^(\d+)(?:\.(\d{1,9}))?s$/;
/** System parameters Google accepts on any REST call. */
const SYSTEM_QUERY_PARAMS = new Set(['$alt', 'alt', '$prettyPrint', 'prettyPrint', '$fields', 'fields', '$callback', 'key', 'quotaUser', '$.xgafv']);

const ALLOWED_FIELDS: Record<IamMethod, Record<string, string>> = {
  // JSON name (or proto field name) -> canonical JSON name
  generateAccessToken: { name: 'name', delegates: 'delegates', scope: 'scope', lifetime: 'lifetime' },
  generateIdToken: { name: 'name', delegates: 'delegates', audience: 'audience', includeEmail: 'includeEmail', include_email: 'includeEmail' },
};

class GoogleApiError extends Error {
  constructor(
    readonly status: GoogleStatus,
    message: string,
    readonly details: Record<string, unknown>[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function errorInfo(reason: string, method: IamMethod | undefined, extra: Record<string, string> = {}): Record<string, unknown> {
  return {
    '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
    reason,
    domain: reason.startsWith('IAM_') ? 'iam.googleapis.com' : 'googleapis.com',
    metadata: { service: 'iamcredentials.googleapis.com', ...(method ? { method: `google.iam.credentials.v1.IAMCredentials.${method[0]!.toUpperCase()}${method.slice(1)}` } : {}), ...extra },
  };
}

function badRequest(message: string, field?: string): GoogleApiError {
  return new GoogleApiError('INVALID_ARGUMENT', message, [
    { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ ...(field ? { field } : {}), description: message }] },
  ]);
}

function randomToken(prefix: string): string {
  return `${prefix}${randomBytes(48).toString('base64url')}`;
}

/** A stable 21-digit "unique id" per service account, like Google's numeric `sub`. */
function uniqueIdFor(email: string): string {
  const digits = BigInt(`0x${createHash('sha256').update(email).digest('hex').slice(0, 16)}`).toString().padStart(20, '0').slice(0, 20);
  return `1${digits}`;
}

function rfc3339Seconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new GoogleApiError('INVALID_ARGUMENT', 'Request payload size exceeds the limit.'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}


export async function startGcpEmulator(options: GcpEmulatorOptions = {}): Promise<GcpEmulator> {
  const projectId = options.projectId ?? 'emulator-project';
  const brokerServiceAccount = options.brokerServiceAccount ?? `broker@${projectId}.iam.gserviceaccount.com`;
  const serviceAccounts = new Set(options.serviceAccounts ?? [`deployer@${projectId}.iam.gserviceaccount.com`]);
  const forbiddenServiceAccounts = new Set(options.forbiddenServiceAccounts ?? []);
  for (const email of [...serviceAccounts, ...forbiddenServiceAccounts, brokerServiceAccount]) {
    if (!SERVICE_ACCOUNT_EMAIL.test(email)) throw new TypeError(`not a service account email: ${email}`);
  }
  const maxLifetimeSeconds = options.allowExtendedLifetime ? 43200 : 3600;
  const brokerTokenLifetimeSeconds = options.brokerTokenLifetimeSeconds ?? 3599;
  const instanceScopes = options.instanceScopes ?? [CLOUD_PLATFORM_SCOPE];

  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomBytes(20).toString('hex');
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };

  const requestLog: IamRequestRecord[] = [];
  const refusalLog: IamRefusalRecord[] = [];
  const metadataLog: MetadataRequestRecord[] = [];
  const brokerTokens = new Map<string, BrokerTokenRecord>();
  const issued: IssuedGcpCredential[] = [];
  let fault: GcpFault = { kind: 'none' };
  let faultRemaining = Infinity;
  let iamCalls = 0;

  async function signIdToken(email: string, audience: string, includeEmail: boolean): Promise<string> {
    const sub = uniqueIdFor(email);
    return new SignJWT({ azp: sub, ...(includeEmail ? { email, email_verified: true } : {}) })
      .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
      .setIssuer(GOOGLE_ISSUER)
      .setAudience(audience)
      .setSubject(sub)
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);
  }

  // ---- GCE metadata server -------------------------------------------------

  async function handleMetadata(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://metadata.google.internal');
    const query = Object.fromEntries(url.searchParams);
    const flavor = req.headers['metadata-flavor'] === 'Google';
    const record: MetadataRequestRecord = { method: req.method ?? '', path: url.pathname, query, flavor, httpStatus: 0 };
    metadataLog.push(record);
    await readBody(req).catch(() => '');

    const send = (httpStatus: number, body: string, contentType = 'application/text'): void => {
      record.httpStatus = httpStatus;
      res.writeHead(httpStatus, { 'Metadata-Flavor': 'Google', 'Content-Type': contentType, Server: 'Metadata Server for VM' });
      res.end(body);
    };
    if (req.headers['x-forwarded-for'] !== undefined) {
      send(403, 'Request denied: X-Forwarded-For header is not allowed.\n', 'text/html; charset=UTF-8');
      return;
    }
    if (!flavor) {
      send(403, 'Missing required header: Metadata-Flavor\n', 'text/html; charset=UTF-8');
      return;
    }
    if (req.method !== 'GET') {
      send(405, 'Method not allowed\n', 'text/html; charset=UTF-8');
      return;
    }

    const path = url.pathname.replace(/\/+$/, '') || '/';
    const saMatch = /^\/computeMetadata\/v1\/instance\/service-accounts\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    if (saMatch) {
      const who = decodeURIComponent(saMatch[1]!);
      if (who !== 'default' && who !== brokerServiceAccount) {
        send(404, 'Not Found\n', 'text/html; charset=UTF-8');
        return;
      }
      switch (saMatch[2]) {
        case undefined:
          send(200, 'aliases\nemail\nidentity\nscopes\ntoken\n');
          return;
        case 'email':
          send(200, brokerServiceAccount);
          return;
        case 'aliases':
          send(200, 'default\n');
          return;
        case 'scopes':
          send(200, `${instanceScopes.join('\n')}\n`);
          return;
        case 'token': {
          const scopes = query['scopes'] ? query['scopes'].split(',').map((s) => s.trim()).filter(Boolean) : [...instanceScopes];
          const token = randomToken('ya29.emu-metadata.');
          brokerTokens.set(token, {
            token,
            serviceAccount: brokerServiceAccount,
            scopes,
            expiresInSeconds: brokerTokenLifetimeSeconds,
            expiresAt: new Date(Date.now() + brokerTokenLifetimeSeconds * 1000),
          });
          send(200, JSON.stringify({ access_token: token, expires_in: brokerTokenLifetimeSeconds, token_type: 'Bearer' }), 'application/json');
          return;
        }
        case 'identity': {
          const audience = query['audience'];
          if (!audience) {
            send(400, 'non-empty audience parameter required\n', 'text/html; charset=UTF-8');
            return;
          }
          send(200, await signIdToken(brokerServiceAccount, audience, query['format'] === 'full'));
          return;
        }
        default:
          send(404, 'Not Found\n', 'text/html; charset=UTF-8');
          return;
      }
    }
    switch (path) {
      case '/':
        send(200, 'computeMetadata/\n');
        return;
      case '/computeMetadata/v1':
        send(200, 'instance/\noauth/\nproject/\nuniverse/\n');
        return;
      case '/computeMetadata/v1/instance':
        send(200, 'attributes/\nhostname\nid\nservice-accounts/\nzone\n');
        return;
      case '/computeMetadata/v1/instance/service-accounts':
        send(200, `default/\n${brokerServiceAccount}/\n`);
        return;
      case '/computeMetadata/v1/instance/zone':
        send(200, `projects/${uniqueIdFor(projectId).slice(0, 12)}/zones/us-central1-a`);
        return;
      case '/computeMetadata/v1/project':
        send(200, 'attributes/\nnumeric-project-id\nproject-id\n');
        return;
      case '/computeMetadata/v1/project/project-id':
        send(200, projectId);
        return;
      case '/computeMetadata/v1/project/numeric-project-id':
        send(200, uniqueIdFor(projectId).slice(0, 12));
        return;
      case '/computeMetadata/v1/universe/universe-domain':
        send(200, 'googleapis.com');
        return;
      default:
        send(404, 'Not Found\n', 'text/html; charset=UTF-8');
    }
  }

  // ---- IAM Credentials v1 REST --------------------------------------------

  function sendGoogleError(res: ServerResponse, err: GoogleApiError): void {
    const httpStatus = GOOGLE_HTTP_STATUS[err.status];
    res.writeHead(httpStatus, { 'Content-Type': 'application/json; charset=UTF-8', Vary: 'Origin, X-Origin, Referer', ...err.headers });
    res.end(
      `${JSON.stringify({ error: { code: httpStatus, message: err.message, status: err.status, ...(err.details.length ? { details: err.details } : {}) } }, null, 2)}\n`,
    );
  }

  /** Returns the fault for this call and consumes one of its `times`. */
  function takeFault(): Exclude<GcpFault, { kind: 'none' }> | undefined {
    if (fault.kind === 'none' || faultRemaining <= 0) return undefined;
    const current = fault;
    faultRemaining -= 1;
    if (faultRemaining <= 0) fault = { kind: 'none' };
    return current;
  }

  function checkBearer(req: IncomingMessage, method: IamMethod): string {
    const header = req.headers.authorization;
    const unauthenticated = (message: string, reason: string): GoogleApiError =>
      new GoogleApiError('UNAUTHENTICATED', message, [errorInfo(reason, method)], { 'WWW-Authenticate': 'Bearer realm="https://accounts.google.com/"' });
    if (header === undefined) {
      throw unauthenticated(
        'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        'CREDENTIALS_MISSING',
      );
    }
    const match = /^Bearer ([^\s]+)$/i.exec(header);
    const record = match ? brokerTokens.get(match[1]!) : undefined;
    if (!match || !record) {
      throw unauthenticated(
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        'ACCESS_TOKEN_TYPE_UNSUPPORTED',
      );
    }
    if (record.expiresAt.getTime() <= Date.now()) {
      throw unauthenticated(
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        'ACCESS_TOKEN_EXPIRED',
      );
    }
    if (!record.scopes.includes(CLOUD_PLATFORM_SCOPE) && !record.scopes.includes(IAM_SCOPE)) {
      throw new GoogleApiError('PERMISSION_DENIED', 'Request had insufficient authentication scopes.', [errorInfo('ACCESS_TOKEN_SCOPE_INSUFFICIENT', method)]);
    }
    return record.token;
  }

  function checkServiceAccount(email: string, method: IamMethod, field: string): void {
    if (!SERVICE_ACCOUNT_EMAIL.test(email)) {
      throw badRequest(`Invalid form of account ID ${email}. Should be [Gaia ID |Email |Unique ID |] of the account`, field);
    }
    if (forbiddenServiceAccounts.has(email)) {
      const permission = method === 'generateAccessToken' ? 'iam.serviceAccounts.getAccessToken' : 'iam.serviceAccounts.getOpenIdToken';
      throw new GoogleApiError('PERMISSION_DENIED', `Permission '${permission}' denied on resource (or it may not exist).`, [
        errorInfo('IAM_PERMISSION_DENIED', method, { permission }),
      ]);
    }
    if (!serviceAccounts.has(email)) {
      throw new GoogleApiError('NOT_FOUND', `Not found; Gaia id not found for email ${email}`);
    }
  }

  /** Validates the proto3-JSON body as Google's ESF does: known fields only, right JSON types. */
  function parseFields(method: IamMethod, body: Record<string, unknown>, resourceName: string): Record<string, unknown> {
    const allowed = ALLOWED_FIELDS[method];
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(body)) {
      const canonical = allowed[key];
      if (canonical === undefined) throw badRequest(`Invalid JSON payload received. Unknown name "${key}": Cannot find field.`);
      if (canonical in fields) throw badRequest(`Invalid JSON payload received. Field "${canonical}" is set twice.`, canonical);
      if (value === null) continue; // proto3 JSON: null means the default value
      fields[canonical] = value;
    }
    const requestType = method === 'generateAccessToken' ? 'GenerateAccessTokenRequest' : 'GenerateIdTokenRequest';
    const invalidValue = (field: string, value: unknown): GoogleApiError =>
      badRequest(`Invalid value at '${field}' (type.googleapis.com/google.iam.credentials.v1.${requestType}), ${JSON.stringify(value)}`, field);
    for (const field of ['scope', 'delegates'] as const) {
      const value = fields[field];
      if (value === undefined) continue;
      if (!Array.isArray(value)) throw invalidValue(field, value);
      value.forEach((item, index) => {
        if (typeof item !== 'string') throw invalidValue(`${field}[${index}]`, item);
      });
    }
    for (const field of ['name', 'lifetime', 'audience'] as const) {
      if (fields[field] !== undefined && typeof fields[field] !== 'string') throw invalidValue(field, fields[field]);
    }
    if (fields['includeEmail'] !== undefined && typeof fields['includeEmail'] !== 'boolean') throw invalidValue('include_email', fields['includeEmail']);
    if (fields['name'] !== undefined && fields['name'] !== resourceName) {
      throw badRequest(`Invalid JSON payload received. "name" in the body (${JSON.stringify(fields['name'])}) does not match the URL.`, 'name');
    }
    return fields;
  }

  function parseDelegates(method: IamMethod, value: unknown): string[] {
    const delegates = (value as string[] | undefined) ?? [];
    for (const [index, delegate] of delegates.entries()) {
      if (!delegate.startsWith(DELEGATE_PREFIX)) {
        throw badRequest(`Invalid delegate format: ${delegate}. Expected projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.`, `delegates[${index}]`);
      }
      checkServiceAccount(delegate.slice(DELEGATE_PREFIX.length), method, `delegates[${index}]`);
    }
    return delegates.map((d) => d.slice(DELEGATE_PREFIX.length));
  }

  function parseLifetimeSeconds(value: unknown): number {
    if (value === undefined) return 3600;
    const match = DURATION.exec(value as string);
    if (!match) throw badRequest(`Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(value)}`, 'lifetime');
    const seconds = Number(match[1]) + Number(`0.${match[2] ?? '0'}`);
    if (seconds < 1 || seconds > maxLifetimeSeconds) {
      throw badRequest(`The lifetime must be between 1s and ${maxLifetimeSeconds}s.`, 'lifetime');
    }
    return seconds;
  }

  async function handleIam(req: IncomingMessage, res: ServerResponse): Promise<void> {
    iamCalls += 1;
    const url = new URL(req.url ?? '/', 'http://iamcredentials.googleapis.com');
    let method: IamMethod | undefined;
    let email: string | undefined;
    try {
      if (req.method === 'GET' && url.pathname === '/oauth2/v3/certs') {
        res.writeHead(200, { 'Content-Type': 'application/json; charset=UTF-8' });
        res.end(JSON.stringify({ keys: [publicJwk] }));
        return;
      }
      const route = IAM_PATH.exec(url.pathname);
      if (req.method !== 'POST' || !route) throw new GoogleApiError('NOT_FOUND', `The requested URL ${url.pathname} was not found on this server.`);
      method = route[3] as IamMethod;
      let project: string;
      try {
        project = decodeURIComponent(route[1]!);
        email = decodeURIComponent(route[2]!);
      } catch {
        throw badRequest('Invalid resource name: malformed percent-encoding.', 'name');
      }
      const bodyText = await readBody(req);

      const injected = takeFault();
      if (injected) {
        switch (injected.kind) {
          case 'hang':
            refusalLog.push({ method, email, httpStatus: 0, status: 'hang', message: 'never answered' });
            return; // close() destroys the socket
          case 'garbage':
            refusalLog.push({ method, email, httpStatus: 200, status: 'garbage', message: 'non-JSON 200' });
            res.writeHead(200, { 'Content-Type': 'text/html; charset=UTF-8' });
            res.end('<!DOCTYPE html><html><body>502 Bad Gateway (emulated garbage)</body></html>');
            return;
          case 'PERMISSION_DENIED': {
            const permission = method === 'generateAccessToken' ? 'iam.serviceAccounts.getAccessToken' : 'iam.serviceAccounts.getOpenIdToken';
            throw new GoogleApiError('PERMISSION_DENIED', `Permission '${permission}' denied on resource (or it may not exist).`, [
              errorInfo('IAM_PERMISSION_DENIED', method, { permission }),
            ]);
          }
          case 'UNAVAILABLE':
            throw new GoogleApiError('UNAVAILABLE', 'The service is currently unavailable.');
          case 'RESOURCE_EXHAUSTED':
            throw new GoogleApiError('RESOURCE_EXHAUSTED', "Quota exceeded for quota metric 'Generate credentials requests' and limit 'Generate credentials requests per minute'.", [
              errorInfo('RATE_LIMIT_EXCEEDED', method),
            ]);
          case 'INTERNAL':
            throw new GoogleApiError('INTERNAL', 'Internal error encountered.');
          default: {
            const unreachable: never = injected;
            throw new Error(`unknown fault ${JSON.stringify(unreachable)}`);
          }
        }
      }

      const bearer = checkBearer(req, method);
      for (const key of url.searchParams.keys()) {
        if (!SYSTEM_QUERY_PARAMS.has(key)) throw badRequest(`Invalid JSON payload received. Unknown name "${key}": Cannot bind query parameter.`);
      }
      let parsed: unknown;
      try {
        parsed = bodyText === '' ? {} : JSON.parse(bodyText);
      } catch {
        throw badRequest(`Invalid JSON payload received. Unexpected token.\n${bodyText.slice(0, 40)}`);
      }
      if (!isPlainObject(parsed)) throw badRequest('Invalid JSON payload received. Expected an object.');
      const resourceName = `projects/${project}/serviceAccounts/${email}`;
      const fields = parseFields(method, parsed, resourceName);
      if (project !== '-') {
        throw badRequest(`Invalid resource name ${resourceName}: the project must be the wildcard "-".`, 'name');
      }
      checkServiceAccount(email, method, 'name');
      const delegates = parseDelegates(method, fields['delegates']);

      if (method === 'generateAccessToken') {
        const scope = (fields['scope'] as string[] | undefined) ?? [];
        if (scope.length === 0) throw badRequest('Scope required.', 'scope');
        const lifetimeSeconds = parseLifetimeSeconds(fields['lifetime']);
        const accessToken = randomToken('ya29.emu-iam.');
        const expireTime = rfc3339Seconds(new Date(Date.now() + Math.floor(lifetimeSeconds) * 1000));
        requestLog.push({ method, email, body: parsed, bearer, url: req.url ?? '', headers: { ...req.headers } });
        issued.push({ kind: 'access_token', serviceAccount: email, accessToken, expireTime, scope, lifetimeSeconds, delegates, bearer });
        res.writeHead(200, { 'Content-Type': 'application/json; charset=UTF-8' });
        res.end(`${JSON.stringify({ accessToken, expireTime }, null, 2)}\n`);
        return;
      }
      const audience = fields['audience'] as string | undefined;
      if (!audience) throw badRequest('Invalid audience: audience is required.', 'audience');
      const includeEmail = (fields['includeEmail'] as boolean | undefined) ?? false;
      const token = await signIdToken(email, audience, includeEmail);
      requestLog.push({ method, email, body: parsed, bearer, url: req.url ?? '', headers: { ...req.headers } });
      issued.push({ kind: 'id_token', serviceAccount: email, token, audience, includeEmail, delegates, bearer });
      res.writeHead(200, { 'Content-Type': 'application/json; charset=UTF-8' });
      res.end(`${JSON.stringify({ token }, null, 2)}\n`);
    } catch (err) {
      const apiError = err instanceof GoogleApiError ? err : new GoogleApiError('INTERNAL', 'Internal error encountered.');
      refusalLog.push({ method, email, httpStatus: GOOGLE_HTTP_STATUS[apiError.status], status: apiError.status, message: apiError.message });
      if (!res.headersSent && !res.destroyed) sendGoogleError(res, apiError);
    }
  }

  const metadataServer = createEmulatorServer(handleMetadata, (res) => res.writeHead(500, { 'Metadata-Flavor': 'Google' }).end());
  const iamServer = createServer((req, res) => {
    void handleIam(req, res);
  });
  const metadataUrl = new URL(await listenOnLoopback(metadataServer));
  const iamUrl = await listenOnLoopback(iamServer);

  return {
    metadataHost: metadataUrl.host,
    iamUrl,
    brokerServiceAccount,
    projectId,
    requests: () => requestLog.map((r) => ({ ...r })),
    refusals: () => refusalLog.map((r) => ({ ...r })),
    metadataRequests: () => metadataLog.map((r) => ({ ...r })),
    issuedBrokerTokens: () => [...brokerTokens.values()].map((t) => ({ ...t })),
    issuedCredentials: () => issued.map((c) => ({ ...c })),
    idTokenJwks: () => ({ keys: [{ ...publicJwk }] }),
    setFault(next: GcpFault): void {
      fault = next;
      faultRemaining = next.kind === 'none' ? 0 : (next.times ?? Infinity);
    },
    callCount: () => iamCalls,
    expireBrokerTokens(): void {
      const past = new Date(Date.now() - 1000);
      for (const record of brokerTokens.values()) record.expiresAt = past;
    },
    async close(): Promise<void> {
      await Promise.all([closeEmulatorServer(metadataServer), closeEmulatorServer(iamServer)]);
    },
  };
}
