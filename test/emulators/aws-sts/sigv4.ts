/**
 * Server-side AWS Signature Version 4 verification for the STS emulator.
 *
 * Written from the AWS docs, independently of `@smithy/signature-v4`, so a test that passes
 * proves the SDK's signature is acceptable to a second implementation:
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
 * (step 1 canonical request, step 2 hash it, step 3 string to sign, step 4 signing key,
 * step 5 signature). Only the `Authorization` header form is supported (no presigned URLs,
 * no chunked/streaming payloads), which is all the SDK uses for STS.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** What the verifier needs from one HTTP request, exactly as it arrived. */
export interface RawSignedRequest {
  method: string;
  /** `req.url`: the path and query as sent on the wire (still percent-encoded). */
  url: string;
  /** `req.rawHeaders`: alternating names and values, original order. */
  rawHeaders: string[];
  body: Buffer;
}

export interface SigV4Expectation {
  accessKeyId: string;
  secretAccessKey: string;
  /** When set, `x-amz-security-token` must equal it; when unset, the header must be absent. */
  sessionToken?: string;
  region: string;
  service: string;
  now: Date;
  /** AWS rejects a request whose `x-amz-date` is more than 5 minutes off. */
  maxSkewMs?: number;
}

/** An STS error answer: HTTP status, `<Type>`, `<Code>`, `<Message>`. */
export interface StsErrorAnswer {
  status: number;
  type: 'Sender' | 'Receiver';
  code: string;
  message: string;
}

export type SigV4Result =
  | { ok: true; accessKeyId: string; region: string; signedHeaders: Record<string, string> }
  | { ok: false; error: StsErrorAnswer };

const ALGORITHM = 'AWS4-HMAC-SHA256';
const FIVE_MINUTES_MS = 5 * 60 * 1000;

function deny(status: number, code: string, message: string): SigV4Result {
  return { ok: false, error: { status, type: 'Sender', code, message } };
}

/** RFC 3986 unreserved characters stay, everything else is %XX (upper-case hex), as SigV4 requires. */
export function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** `YYYYMMDDTHHMMSSZ` (ISO 8601 basic, UTC) to a Date, or undefined. */
function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return Number.isNaN(date.getTime()) ? undefined : date;
}

function toAmzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

/** Lower-cased header name to value; repeated headers are joined with "," (SigV4 step 1, CanonicalHeaders). */
function headerMap(rawHeaders: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    const previous = map.get(name);
    map.set(name, previous === undefined ? value : `${previous},${value}`);
  }
  return map;
}

/** Step 1, CanonicalURI: normalise `.`/`..` and URI-encode the wire path once more (i.e. twice in total; every service but S3). */
function canonicalUri(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const normalised = `/${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return uriEncode(normalised).replace(/%2F/g, '/');
}

/** Step 1, CanonicalQueryString: decode each pair, re-encode strictly, sort by name then value. */
function canonicalQuery(query: string): string {
  if (query === '') return '';
  const pairs = query.split('&').filter((p) => p !== '').map((pair) => {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    const decode = (s: string): string => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        return s;
      }
    };
    return [uriEncode(decode(name)), uriEncode(decode(value))] as const;
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join('&');
}

/** Step 4: kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
function signingKey(secretAccessKey: string, shortDate: string, region: string, service: string): Buffer {
  const kDate = hmac(`AWS4${secretAccessKey}`, shortDate);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, 'aws4_request');
}

/**
 * Verifies the SigV4 `Authorization` header of `request` against the one key pair the emulator knows.
 * Checks, in the order AWS reports them: header syntax (IncompleteSignature), access key id
 * (InvalidClientTokenId), session token (InvalidClientTokenId), `x-amz-date` within 5 minutes
 * (SignatureDoesNotMatch "Signature expired"), credential scope date/region/service, that `host`
 * and `x-amz-date` are signed, `x-amz-content-sha256` against the body, then the signature itself.
 */
export function verifySigV4(request: RawSignedRequest, expect: SigV4Expectation): SigV4Result {
  const headers = headerMap(request.rawHeaders);
  const authorization = headers.get('authorization');
  if (authorization === undefined) return deny(403, 'MissingAuthenticationToken', 'Request is missing Authentication Token');
  if (!authorization.startsWith(`${ALGORITHM} `)) {
    return deny(400, 'IncompleteSignature', `Unsupported authorization type; only ${ALGORITHM} is accepted`);
  }
  const fields = new Map<string, string>();
  for (const part of authorization.slice(ALGORITHM.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaderList = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaderList === undefined || signature === undefined) {
    return deny(400, 'IncompleteSignature', "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.");
  }
  const scopeParts = credential.split('/');
  if (scopeParts.length !== 5) {
    return deny(400, 'IncompleteSignature', `Credential should be <access key>/<date>/<region>/<service>/aws4_request; got '${credential}'.`);
  }
  const [accessKeyId, shortDate, region, service, terminator] = scopeParts as [string, string, string, string, string];

  if (accessKeyId !== expect.accessKeyId) {
    return deny(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
  }
  const token = headers.get('x-amz-security-token');
  if (token !== expect.sessionToken) {
    return deny(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
  }

  const amzDateHeader = headers.get('x-amz-date');
  const amzDate = amzDateHeader === undefined ? undefined : parseAmzDate(amzDateHeader);
  if (amzDateHeader === undefined || amzDate === undefined) {
    return deny(400, 'IncompleteSignature', "Authorization header requires existence of a valid 'X-Amz-Date' header.");
  }
  const maxSkewMs = expect.maxSkewMs ?? FIVE_MINUTES_MS;
  const skewMs = amzDate.getTime() - expect.now.getTime();
  if (skewMs < -maxSkewMs) {
    return deny(403, 'SignatureDoesNotMatch', `Signature expired: ${amzDateHeader} is now earlier than ${toAmzDate(new Date(expect.now.getTime() - maxSkewMs))} (${toAmzDate(expect.now)} - 5 min.)`);
  }
  if (skewMs > maxSkewMs) {
    return deny(403, 'SignatureDoesNotMatch', `Signature not yet current: ${amzDateHeader} is still later than ${toAmzDate(new Date(expect.now.getTime() + maxSkewMs))} (${toAmzDate(expect.now)} + 5 min.)`);
  }
  if (shortDate !== amzDateHeader.slice(0, 8)) {
    return deny(403, 'SignatureDoesNotMatch', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${shortDate}' != '${amzDateHeader.slice(0, 8)}'`);
  }
  if (region !== expect.region) {
    return deny(403, 'SignatureDoesNotMatch', `Credential should be scoped to a valid region. Expected '${expect.region}', got '${region}'.`);
  }
  if (service !== expect.service || terminator !== 'aws4_request') {
    return deny(403, 'SignatureDoesNotMatch', `Credential should be scoped to correct service: '${expect.service}'.`);
  }

  const signedNames = signedHeaderList.split(';');
  const sortedUnique = [...new Set(signedNames)].sort();
  if (signedNames.join(';') !== sortedUnique.join(';') || signedNames.some((n) => n === '' || n !== n.toLowerCase())) {
    return deny(400, 'IncompleteSignature', 'SignedHeaders must be lower-case, sorted and unique.');
  }
  for (const required of ['host', 'x-amz-date']) {
    if (!signedNames.includes(required)) {
      return deny(403, 'SignatureDoesNotMatch', `'${required}' must be a signed header.`);
    }
  }
  const signedHeaders: Record<string, string> = {};
  for (const name of signedNames) {
    const value = headers.get(name);
    if (value === undefined) return deny(403, 'SignatureDoesNotMatch', `Signed header '${name}' is missing from the request.`);
    // Step 1, CanonicalHeaders: trim, and collapse runs of whitespace to one space.
    signedHeaders[name] = value.replace(/[\r\n]/g, ' ').trim().replace(/\s+/g, ' ');
  }

  // Step 1, HashedPayload: always the hash of the bytes actually received.
  const payloadHash = sha256Hex(request.body);
  const declaredHash = headers.get('x-amz-content-sha256');
  if (declaredHash !== undefined && declaredHash !== payloadHash) {
    return deny(403, 'SignatureDoesNotMatch', 'The provided x-amz-content-sha256 header does not match what was computed.');
  }

  const queryStart = request.url.indexOf('?');
  const path = queryStart < 0 ? request.url : request.url.slice(0, queryStart);
  const query = queryStart < 0 ? '' : request.url.slice(queryStart + 1);
  const canonicalRequest = [
    request.method.toUpperCase(),
    canonicalUri(path),
    canonicalQuery(query),
    signedNames.map((n) => `${n}:${signedHeaders[n]}\n`).join(''),
    signedNames.join(';'),
    payloadHash,
  ].join('\n');
  // Steps 2 and 3: hash the canonical request into the string to sign.
  const scope = `${shortDate}/${region}/${service}/aws4_request`;
  const stringToSign = `${ALGORITHM}\n${amzDateHeader}\n${scope}\n${sha256Hex(canonicalRequest)}`;
  // Steps 4 and 5: derive the key and compare signatures in constant time.
  const expected = createHmac('sha256', signingKey(expect.secretAccessKey, shortDate, region, service)).update(stringToSign, 'utf8').digest();
  const received = /^[0-9a-f]{64}$/.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
  if (received.length !== expected.length || !timingSafeEqual(received, expected)) {
    return deny(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.');
  }
  return { ok: true, accessKeyId, region, signedHeaders };
}
