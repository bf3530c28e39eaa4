// Property-based fuzzing of the HTTP API against a running broker (issue 12):
// random requests never crash it or answer an undocumented error, no request
// that should be refused gets a credential, every decision leaves exactly one
// audit record, and the audit query parser refuses what it cannot read with a
// stable 400. Each property has a fixed seed, printed as a test diagnostic;
// to explore further, FUZZ_SEED=<n> replaces them all and FUZZ_SCALE=<k>
// multiplies the number of runs.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import querystring from 'node:querystring';
import fc from 'fast-check';
import { parse } from 'yaml';
import { queryAll, toCursor } from '../src/audit/query.js';
import type { AuditRecord } from '../src/audit/types.js';
import { startDevIssuer, type DevIssuer, type MintOptions } from '../src/dev/issuer.js';
import { postgresKind } from './helpers/audit-stores.js';
import { AUDIENCE, AUDITOR_TOKEN, startBrokerFixture, type BrokerFixture } from './helpers/broker-fixture.js';
import { localJwtPolicy, nowSeconds } from './helpers/oidc.js';

const POLICIES = {
  'deploy.yaml': localJwtPolicy('https://deploy.example.com'),
  'deploy-b.yaml': localJwtPolicy('https://deploy-b.example.com'),
};

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** The decision routes: every request they answer is one audit record. */
const DECISION_ROUTES = new Set(['/v1/exchange', '/v1/explain', '/oauth2/token']);

interface ErrorLists {
  broker: ReadonlySet<string>;
  oauth: ReadonlySet<string>;
  /** The codes a documented 503 carries. */
  unavailable: ReadonlySet<string>;
}

/** The error codes openapi.yaml documents: ErrorCode for the broker's routes, OAuthError's for /oauth2/token. */
async function readErrorLists(): Promise<ErrorLists> {
  const spec = parse(await readFile(new URL('../openapi.yaml', import.meta.url), 'utf8')) as {
    components: { schemas: { ErrorCode: { enum: string[]; description: string }; OAuthError: { properties: { error: { enum: string[] } } } } };
  };
  const { ErrorCode, OAuthError } = spec.components.schemas;
  const unavailable = ErrorCode.enum.filter((code) => new RegExp(`\\b${code} 503\\b`).test(ErrorCode.description));
  assert.ok(unavailable.length > 0, 'openapi.yaml names the codes answered with 503');
  return { broker: new Set(ErrorCode.enum), oauth: new Set(OAuthError.properties.error.enum), unavailable: new Set(unavailable) };
}

const RUN_SCALE = Number(process.env.FUZZ_SCALE ?? 1);

function seedFor(t: TestContext, seed: number): number {
  const chosen = process.env.FUZZ_SEED === undefined ? seed : Number(process.env.FUZZ_SEED);
  t.diagnostic(`fast-check seed ${chosen}`);
  return chosen;
}

interface ApiRequest {
  method: string;
  /** Path and query string, as sent. */
  path: string;
  headers: Record<string, string | string[]>;
  body?: string;
}

interface ApiResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** A broker listening on loopback with its audit log, plus what the checks need. */
interface Target {
  fx: BrokerFixture;
  errors: ErrorLists;
  send(request: ApiRequest): Promise<ApiResponse>;
  /** Records appended since the last call. */
  newRecords(): Promise<AuditRecord[]>;
  close(): Promise<void>;
}

async function startTarget(options: Parameters<typeof startBrokerFixture>[0]): Promise<Target> {
  const fx = await startBrokerFixture(options);
  const server = http.createServer(fx.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const agent = new http.Agent({ keepAlive: false });
  let lastSeq = 0;
  return {
    fx,
    errors: await readErrorLists(),
    send: (request) =>
      new Promise((resolve, reject) => {
        // Content-Length always: node's client frames a GET body with nothing, which the server then reads as the next request.
        const headers = request.body === undefined ? request.headers : { ...request.headers, 'content-length': String(Buffer.byteLength(request.body)) };
        const req = http.request({ host: '127.0.0.1', port, agent, method: request.method, path: request.path, headers }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(request.body);
      }),
    async newRecords() {
      const records: AuditRecord[] = [];
      for await (const record of queryAll(fx.broker.deps.audit, { cursor: toCursor(lastSeq) })) records.push(record);
      lastSeq = records.at(-1)?.seq ?? lastSeq;
      return records;
    },
    async close() {
      agent.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fx.close();
    },
  };
}

/** The route a path reaches: express matches case-insensitively and ignores one trailing slash. */
function routeOf(path: string): string {
  const pathname = path.split('?')[0]!.toLowerCase();
  return pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
}

function queryOf(path: string): querystring.ParsedUrlQuery {
  const at = path.indexOf('?');
  return at === -1 ? {} : querystring.parse(path.slice(at + 1));
}

function describeExchange(request: ApiRequest, response: ApiResponse): string {
  return `${request.method} ${request.path} ${JSON.stringify(request.headers)} ${JSON.stringify(request.body ?? '').slice(0, 300)} -> ${response.status} ${response.text.slice(0, 300)}`;
}

/**
 * Invariant 1: a request id on every response; no 5xx but a documented 503;
 * every error a JSON `{error, error_description, request_id}` with a code
 * openapi.yaml lists (`?format=env` errors are shell lines, by design).
 */
function assertWellFormed(target: Target, request: ApiRequest, response: ApiResponse): void {
  const where = describeExchange(request, response);
  const requestId = response.headers['x-request-id'];
  assert.match(String(requestId), /^[0-9A-HJKMNP-TV-Z]{26}$/, `X-Request-Id on ${where}`);
  if (response.status >= 500) assert.equal(response.status, 503, `no 5xx but 503: ${where}`);
  if (response.status < 400 || request.method === 'HEAD') return;
  const route = routeOf(request.path);
  if (request.method === 'POST' && route === '/v1/exchange' && queryOf(request.path).format === 'env') {
    assert.match(response.text, /^echo '[^\n]*' >&2\nfalse\n$/, `shell error: ${where}`);
    return;
  }
  assert.equal(String(response.headers['content-type']).split(';')[0], 'application/json', `JSON error: ${where}`);
  const body = JSON.parse(response.text) as Record<string, unknown>;
  const allowed = route === '/readyz' ? ['error', 'error_description', 'request_id', 'checks'] : ['error', 'error_description', 'request_id'];
  assert.deepEqual(Object.keys(body).filter((key) => !allowed.includes(key)), [], `error body fields: ${where}`);
  const codes = request.method === 'POST' && route === '/oauth2/token' ? target.errors.oauth : target.errors.broker;
  assert.ok(typeof body.error === 'string' && codes.has(body.error), `documented error code: ${where}`);
  if (response.status === 503 && codes === target.errors.broker) assert.ok(target.errors.unavailable.has(body.error), `a 503 code: ${where}`);
  assert.ok(typeof body.error_description === 'string' && body.error_description.length > 0, `error_description: ${where}`);
  assert.equal(body.request_id, requestId, `request_id: ${where}`);
}

/**
 * Invariant 3: a request to a decision route leaves exactly one audit record,
 * under its X-Request-Id, `issued` (explain: `explain`) iff answered 200;
 * any other request leaves none.
 */
async function assertAudited(target: Target, request: ApiRequest, response: ApiResponse): Promise<void> {
  const where = describeExchange(request, response);
  const records = await target.newRecords();
  const route = routeOf(request.path);
  if (request.method !== 'POST' || !DECISION_ROUTES.has(route)) {
    assert.deepEqual(records, [], `no record for a request that is not a decision: ${where}`);
    return;
  }
  assert.equal(records.length, 1, `one record per decision (${records.map((r) => r.decision).join(', ')}): ${where}`);
  const [record] = records as [AuditRecord];
  assert.equal(record.request_id, response.headers['x-request-id'], `the record's request_id: ${where}`);
  const granted = route === '/v1/explain' ? 'explain' : 'issued';
  assert.equal(record.decision === granted, response.status === 200, `decision ${record.decision} for status ${response.status}: ${where}`);
  if (response.status !== 200 && route !== '/oauth2/token' && String(response.headers['content-type']).startsWith('application/json')) {
    assert.equal(record.error, (JSON.parse(response.text) as { error: string }).error, `the record's error: ${where}`);
  }
}

async function exercise(target: Target, request: ApiRequest): Promise<ApiResponse> {
  const response = await target.send(request);
  assertWellFormed(target, request, response);
  await assertAudited(target, request, response);
  return response;
}

/** A token of the fixture's issuer that the test policies accept. */
function mintGood(fx: BrokerFixture, claims: Record<string, unknown> = {}, options?: MintOptions): Promise<string> {
  return fx.issuer.mint({ aud: AUDIENCE, repository: 'acme/api', ...claims }, options);
}

// ---------------------------------------------------------------------------
// Generators of raw requests (invariants 1 and 3).

const SAFE_PATH_SEGMENT = fc.stringMatching(/^[A-Za-z0-9._~%-]{0,12}$/);
const KNOWN_PATHS = [
  '/v1/exchange',
  '/v1/explain',
  '/oauth2/token',
  '/v1/audit/events',
  '/v1/audit/export',
  '/v1/audit/verify',
  '/.well-known/jwks.json',
  '/.well-known/openid-configuration',
  '/.well-known/oauth-authorization-server',
  '/healthz',
  '/readyz',
  '/metrics',
  '/',
  '/V1/EXCHANGE',
  '/v1/explain/',
  '/oauth2/token/x',
  '/v2/exchange',
];
const pathArb = fc.oneof(fc.constantFrom(...KNOWN_PATHS), fc.array(SAFE_PATH_SEGMENT, { minLength: 1, maxLength: 4 }).map((parts) => `/${parts.join('/')}`));
/** Printable ASCII, what an HTTP client may put in a header value. */
const headerText = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 });
const queryKey = fc.oneof(fc.constantFrom('format', 'policy', 'since', 'until', 'decision', 'limit', 'cursor', 'claim.repository', 'claim.', 'token'), SAFE_PATH_SEGMENT);
const queryValue = fc.oneof(fc.constantFrom('json', 'env', 'credential_process', 'issued', '10', '0', '2026-11-25T19:00:00Z', 'MQ', ''), headerText);
const queryArb = fc.oneof(
  fc.constant(''),
  fc.array(fc.tuple(queryKey, queryValue), { maxLength: 4 }).map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')}`)),
  fc.stringMatching(/^[A-Za-z0-9=&%._~+-]{0,40}$/).map((raw) => `?${raw}`),
);
const contentTypeArb = fc.constantFrom(
  undefined,
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=utf-16',
  'application/x-www-form-urlencoded',
  'text/plain',
  'multipart/form-data; boundary=x',
  'application/*',
);
type AuthorizationKind = 'none' | 'auditor' | 'valid_token' | 'random' | 'bearer_random' | 'repeated';
const authorizationArb = fc.constantFrom<AuthorizationKind>('none', 'auditor', 'valid_token', 'random', 'bearer_random', 'repeated');
/** Stands for a token the policies accept, minted when the request is sent: random requests then reach the policy and the provider too. */
const FRESH_TOKEN = 'FRESH_TOKEN_PLACEHOLDER';
const jsonBodyArb = fc.oneof(
  fc.json({ maxDepth: 2 }),
  fc
    .record(
      {
        policy: fc.oneof(fc.constantFrom('deploy', 'deploy-b', 'nope', ''), fc.jsonValue({ maxDepth: 1 })),
        duration_seconds: fc.oneof(fc.integer({ min: -10, max: 100_000 }), fc.jsonValue({ maxDepth: 1 })),
        token: fc.oneof(fc.constant(FRESH_TOKEN), headerText, fc.jsonValue({ maxDepth: 1 })),
        extra: fc.jsonValue({ maxDepth: 1 }),
      },
      { requiredKeys: [] },
    )
    .map((body) => JSON.stringify(body)),
);
const formBodyArb = fc
  .array(fc.tuple(fc.constantFrom('grant_type', 'subject_token', 'subject_token_type', 'scope', 'audience', 'resource', 'actor_token', 'requested_token_type', 'x'), fc.oneof(fc.constantFrom(TOKEN_EXCHANGE_GRANT, JWT_TOKEN_TYPE, 'urn:ietf:params:oauth:token-type:access_token', 'urn:ietf:params:oauth:token-type:id_token', 'deploy', FRESH_TOKEN, ''), headerText)), { maxLength: 8 })
  .map((pairs) => new URLSearchParams(pairs).toString());
const bodyArb = fc.oneof(fc.constant(undefined), jsonBodyArb, formBodyArb, headerText);

const rawRequestArb = fc.record({
  method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'),
  path: pathArb,
  query: queryArb,
  contentType: contentTypeArb,
  accept: fc.constantFrom(undefined, 'application/json', 'text/csv', 'application/x-ndjson', 'text/html', '*/*', 'application/xml;q=0.5'),
  forwardedFor: fc.option(fc.constantFrom('10.0.0.1', '::1, 10.0.0.1', 'junk', ''), { freq: 4 }),
  contentEncoding: fc.constantFrom(undefined, undefined, 'gzip', 'identity', 'br'),
  authorization: authorizationArb,
  authorizationText: headerText,
  body: bodyArb,
});

// ---------------------------------------------------------------------------
// The token oracle (invariant 2).

type ClaimsVariant = 'good' | 'no_jti' | 'aud_list' | 'long_exp' | 'infinite_exp' | 'minus_infinite_iat' | 'wrong_repo' | 'wrong_aud' | 'wrong_iss' | 'expired' | 'not_yet_valid' | 'issued_in_future';
/** Claims variants whose token verifies; of these, `wrong_repo` is then refused by the policy. */
// 'long_exp' (ten years) is past the issuer's max_token_lifetime_seconds (docs/configuration.md), so it is refused.
const VERIFYING_CLAIMS: ReadonlySet<ClaimsVariant> = new Set(['good', 'no_jti', 'aud_list', 'wrong_repo']);
type SigningVariant = 'issuer' | 'other_key' | 'alg_none' | 'hs256_confusion' | 'unknown_kid' | 'jku_header';

type Mutation =
  | { kind: 'none' }
  | { kind: 'signature_spare_bits' }
  | { kind: 'high_s' }
  | { kind: 'flip_bit'; segment: 0 | 1 | 2; byte: number; bit: number }
  | { kind: 'spare_bits'; segment: 0 | 1 }
  | { kind: 'extra_dot'; where: 'start' | 'end' | 'double' }
  | { kind: 'whitespace'; at: number; char: ' ' | '\t' }
  | { kind: 'percent_encode'; at: number }
  | { kind: 'truncate'; chars: number }
  | { kind: 'append'; text: string };

type Transport = 'bearer' | 'bearer_loose' | 'body' | 'header_and_body' | 'repeated_header' | 'repeated_header_junk';
type Route = 'exchange' | 'explain' | 'token_endpoint';

interface Step {
  mutation: Mutation;
  transport: Transport;
  route: Route;
  /** `deploy` and `deploy-b` grant a token of acme/api, once each; `nope` does not exist. */
  policy: 'deploy' | 'deploy-b' | 'nope';
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** The order of P-256 (FIPS 186-4 D.1.2.3): an ECDSA signature (r, s) also verifies as (r, n - s). */
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** The same bytes with other spare bits in the last character, or undefined when the segment has none. */
function withSpareBits(segment: string): string | undefined {
  const spareBits = (segment.length * 6) % 8;
  if (spareBits === 0) return undefined;
  const last = BASE64URL.indexOf(segment.at(-1)!);
  return segment.slice(0, -1) + BASE64URL[last ^ ((1 << spareBits) - 1)]!;
}

/** The (r, n - s) twin of an ES256 signature; any other signature as it is. */
function highS(signature: string): string {
  const bytes = Buffer.from(signature, 'base64url');
  if (bytes.length !== 64) return signature;
  const s = BigInt(`0x${bytes.subarray(32).toString('hex')}`);
  const twin = Buffer.from((P256_ORDER - s).toString(16).padStart(64, '0'), 'hex');
  return Buffer.concat([bytes.subarray(0, 32), twin]).toString('base64url');
}

function flipBit(segment: string, byte: number, bit: number): string {
  const bytes = Buffer.from(segment, 'base64url');
  bytes[byte % bytes.length]! ^= 1 << bit;
  return bytes.toString('base64url');
}

function mutate(token: string, mutation: Mutation): string {
  const segments = token.split('.') as [string, string, string];
  const inside = (at: number) => 1 + (at % (token.length - 1));
  switch (mutation.kind) {
    case 'none':
      return token;
    case 'signature_spare_bits':
      return `${segments[0]}.${segments[1]}.${withSpareBits(segments[2]) ?? segments[2]}`;
    case 'high_s':
      return `${segments[0]}.${segments[1]}.${highS(segments[2])}`;
    case 'flip_bit':
      segments[mutation.segment] = flipBit(segments[mutation.segment], mutation.byte, mutation.bit);
      return segments.join('.');
    case 'spare_bits':
      // A segment without spare bits gets a flipped byte instead: either way, another signing input.
      segments[mutation.segment] = withSpareBits(segments[mutation.segment]) ?? flipBit(segments[mutation.segment], 0, 0);
      return segments.join('.');
    case 'extra_dot':
      return mutation.where === 'start' ? `.${token}` : mutation.where === 'end' ? `${token}.` : token.replace('.', '..');
    case 'whitespace':
      return token.slice(0, inside(mutation.at)) + mutation.char + token.slice(inside(mutation.at));
    case 'percent_encode': {
      const at = mutation.at % token.length;
      return `${token.slice(0, at)}%${token.charCodeAt(at).toString(16).toUpperCase().padStart(2, '0')}${token.slice(at + 1)}`;
    }
    case 'truncate':
      return token.slice(0, token.length - mutation.chars);
    case 'append':
      return token + mutation.text;
  }
}

/**
 * The oracle's notion of "the same token": the signing input unchanged and
 * the signature's bytes, or their (r, n - s) twin (docs: the replay key is the
 * signing input, so re-encodings are one token, spent once). Anything else is
 * another token, and a forged one.
 */
function isSameToken(mutated: string, original: string): boolean {
  const [header, payload, signature, ...rest] = mutated.split('.');
  const [originalHeader, originalPayload, originalSignature] = original.split('.') as [string, string, string];
  if (rest.length > 0 || header !== originalHeader || payload !== originalPayload || signature === undefined || !/^[A-Za-z0-9_-]+$/.test(signature)) return false;
  const bytes = Buffer.from(signature, 'base64url');
  return bytes.equals(Buffer.from(originalSignature, 'base64url')) || bytes.equals(Buffer.from(highS(originalSignature), 'base64url'));
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 8, arbitrary: fc.constant({ kind: 'none' as const }) },
  fc.constant({ kind: 'signature_spare_bits' as const }),
  fc.constant({ kind: 'high_s' as const }),
  fc.record({ kind: fc.constant('flip_bit' as const), segment: fc.constantFrom(0 as const, 1 as const, 2 as const), byte: fc.nat(400), bit: fc.nat(7) }),
  fc.record({ kind: fc.constant('spare_bits' as const), segment: fc.constantFrom(0 as const, 1 as const) }),
  fc.record({ kind: fc.constant('extra_dot' as const), where: fc.constantFrom('start' as const, 'end' as const, 'double' as const) }),
  fc.record({ kind: fc.constant('whitespace' as const), at: fc.nat(2000), char: fc.constantFrom(' ' as const, '\t' as const) }),
  fc.record({ kind: fc.constant('percent_encode' as const), at: fc.nat(2000) }),
  fc.record({ kind: fc.constant('truncate' as const), chars: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('append' as const), text: fc.constantFrom('=', '==', 'A', '.', '%00', ' x') }),
);

const stepArb: fc.Arbitrary<Step> = fc.record({
  mutation: mutationArb,
  transport: fc.constantFrom<Transport>('bearer', 'bearer', 'bearer_loose', 'body', 'header_and_body', 'repeated_header', 'repeated_header_junk'),
  route: fc.constantFrom<Route>('exchange', 'exchange', 'explain', 'token_endpoint'),
  policy: fc.constantFrom<Step['policy']>('deploy', 'deploy', 'deploy-b', 'nope'),
});

interface CredentialCase {
  claims: ClaimsVariant;
  signing: SigningVariant;
  /** A claim the policies do not look at, with any name and value: the audit record must still be written. */
  extraClaim: [string, string] | null;
  steps: Step[];
}

/** Claims the verifier or the test policies read: an extra claim must not replace them. */
const CHECKED_CLAIMS = new Set(['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'repository', 'run']);
// Any text at all, NUL and lone surrogates included: the stores canonicalise it (docs/audit.md), so every decision keeps its record.
const claimTextArb = (maxLength: number) => fc.string({ unit: 'binary', maxLength });
const extraClaimArb: fc.Arbitrary<[string, string]> = fc.tuple(
  claimTextArb(12).filter((name) => name.length > 0 && !CHECKED_CLAIMS.has(name)),
  claimTextArb(30),
);

const caseArb: fc.Arbitrary<CredentialCase> = fc.record({
  // Half the cases start from a token the policies accept, so the replay and mutation checks have something to bite on.
  claims: fc.oneof(
    { weight: 9, arbitrary: fc.constant<ClaimsVariant>('good') },
    fc.constantFrom<ClaimsVariant>('no_jti', 'aud_list', 'long_exp', 'infinite_exp', 'minus_infinite_iat', 'wrong_repo', 'wrong_aud', 'wrong_iss', 'expired', 'not_yet_valid', 'issued_in_future'),
  ),
  signing: fc.oneof({ weight: 3, arbitrary: fc.constant<SigningVariant>('issuer') }, fc.constantFrom<SigningVariant>('other_key', 'alg_none', 'hs256_confusion', 'unknown_kid', 'jku_header')),
  extraClaim: fc.option(extraClaimArb, { freq: 3 }),
  // Often the first step again, unmutated: a replay.
  steps: fc
    .tuple(fc.array(stepArb, { minLength: 1, maxLength: 3 }), fc.boolean())
    .map(([steps, replay]) => (replay ? [...steps, { ...steps[0]!, mutation: { kind: 'none' as const }, transport: 'bearer' as const }] : steps)),
});

/** Mints the case's token: each run's claims differ (`run`), so no two runs share a replay key. */
async function mintCase(fx: BrokerFixture, otherIssuer: DevIssuer, testCase: CredentialCase, run: number): Promise<string> {
  const { claims, signing, extraClaim } = testCase;
  const now = nowSeconds();
  const claimSet: Record<string, unknown> = { ...(extraClaim ? { [extraClaim[0]]: extraClaim[1] } : {}), aud: AUDIENCE, repository: 'acme/api', run };
  const options: MintOptions = {};
  switch (claims) {
    case 'good':
      break;
    case 'no_jti':
      options.omit = ['jti'];
      break;
    case 'aud_list':
      claimSet.aud = ['https://other.example.com', AUDIENCE];
      break;
    case 'long_exp':
      options.expiresInSeconds = 10 * 365 * 24 * 3600;
      break;
    case 'infinite_exp':
      options.rawClaims = { exp: '1e400' };
      break;
    case 'minus_infinite_iat':
      options.rawClaims = { iat: '-1e400' };
      break;
    case 'wrong_repo':
      claimSet.repository = 'acme/other';
      break;
    case 'wrong_aud':
      claimSet.aud = 'https://other.example.com';
      break;
    case 'wrong_iss':
      claimSet.iss = 'https://token.actions.githubusercontent.com';
      break;
    case 'expired':
      options.issuedAt = now - 3600;
      break;
    case 'not_yet_valid':
      claimSet.nbf = now + 3600;
      break;
    case 'issued_in_future':
      options.issuedAt = now + 3600;
      break;
  }
  switch (signing) {
    case 'issuer':
      return fx.issuer.mint(claimSet, options);
    case 'other_key':
      // Same issuer and kid, another key: the changed claims re-signed by someone who does not hold the issuer's key.
      return otherIssuer.mint({ iss: fx.issuer.url, ...claimSet }, { ...options, kid: fx.issuer.kid });
    case 'alg_none':
      return fx.issuer.mint(claimSet, { ...options, alg: 'none' });
    case 'hs256_confusion':
      return fx.issuer.mint(claimSet, { ...options, alg: 'HS256' });
    case 'unknown_kid':
      return fx.issuer.mint(claimSet, { ...options, kid: 'not-a-published-key' });
    case 'jku_header':
      return fx.issuer.mint(claimSet, { ...options, header: { jku: `${fx.issuer.url}/.well-known/jwks.json` } });
  }
}

function tokenRequest(step: Step, token: string): ApiRequest {
  if (step.route === 'token_endpoint') {
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token: token, subject_token_type: JWT_TOKEN_TYPE, scope: step.policy });
    const headers: Record<string, string | string[]> = { 'content-type': 'application/x-www-form-urlencoded' };
    return { method: 'POST', path: '/oauth2/token', headers, body: form.toString() };
  }
  const headers: Record<string, string | string[]> = { 'content-type': 'application/json' };
  const body: Record<string, unknown> = { policy: step.policy };
  switch (step.transport) {
    case 'bearer':
      headers.authorization = `Bearer ${token}`;
      break;
    case 'bearer_loose':
      headers.authorization = `bearer   ${token}  `;
      break;
    case 'body':
      body.token = token;
      break;
    case 'header_and_body':
      headers.authorization = `Bearer ${token}`;
      body.token = token;
      break;
    case 'repeated_header':
      headers.authorization = [`Bearer ${token}`, `Bearer ${token}`];
      break;
    case 'repeated_header_junk':
      headers.authorization = [`Bearer ${token}`, 'Bearer junk'];
      break;
  }
  return { method: 'POST', path: step.route === 'explain' ? '/v1/explain' : '/v1/exchange', headers, body: JSON.stringify(body) };
}

/** Whether the step's transport hands the token to the pipeline as sent; the token endpoint always has it in the form. */
function deliversToken(step: Step): 'exactly' | 'equivalently' | 'refused' {
  if (step.route === 'token_endpoint') return 'exactly';
  switch (step.transport) {
    case 'bearer':
    case 'body':
      return 'exactly';
    case 'bearer_loose':
      return 'equivalently';
    case 'header_and_body':
    case 'repeated_header':
    case 'repeated_header_junk':
      return 'refused';
  }
}

/**
 * Runs one case: its steps use one minted token, mutated per step, and the
 * oracle says which answers may (and which must) be 200.
 */
async function runCredentialCase(target: Target, otherIssuer: DevIssuer, testCase: CredentialCase, run: number, seen: Map<string, number>): Promise<void> {
  const original = await mintCase(target.fx, otherIssuer, testCase, run);
  const verifies = testCase.signing === 'issuer' && VERIFYING_CLAIMS.has(testCase.claims);
  const entitled = verifies && testCase.claims !== 'wrong_repo';
  const spent = new Set<string>();
  for (const step of testCase.steps) {
    const token = mutate(original, step.mutation);
    const request = tokenRequest(step, token);
    const response = await exercise(target, request);
    const where = describeExchange(request, response);
    const delivery = deliversToken(step);
    const same = isSameToken(token, original);
    const knownPolicy = step.policy !== 'nope';
    const exact = delivery === 'exactly' && token === original;
    const mayAnswer = delivery !== 'refused' && same && knownPolicy;
    if (step.route === 'explain') {
      if (response.status === 200) {
        assert.ok(mayAnswer && verifies, `explain answered for a token that does not verify: ${where}`);
        assert.ok(!('credentials' in (JSON.parse(response.text) as object)), `explain issues nothing: ${where}`);
      } else {
        assert.ok(!(exact && verifies && knownPolicy), `explain refused a token that verifies: ${where}`);
      }
      continue;
    }
    const unspent = !spent.has(step.policy);
    const outcome = response.status === 200 ? 'issued' : exact && entitled && knownPolicy && !unspent ? 'replay refused' : 'refused';
    seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
    if (response.status === 200) {
      assert.ok(mayAnswer && entitled && unspent, `a credential for a request that should be refused: ${where}`);
      spent.add(step.policy);
    } else {
      assert.ok(!(exact && entitled && knownPolicy && unspent), `a valid, unspent token was refused: ${where}`);
      if (exact && entitled && knownPolicy && step.route === 'exchange') assert.equal(response.status, 409, `a spent token is a replay: ${where}`);
    }
  }
}

// ---------------------------------------------------------------------------
// The audit query parser (invariant 4).

const VALID_FILTER: fc.Arbitrary<[string, string]> = fc.oneof(
  fc.tuple(fc.constant('since'), fc.constantFrom('2026-11-25T19:00:00Z', '2026-11-25T19:00:00.123+01:00', '1970-01-01T00:00:00z')),
  fc.tuple(fc.constant('until'), fc.constantFrom('2999-12-31T23:59:59Z', '2026-02-28T00:00:00-05:30')),
  fc.tuple(fc.constant('decision'), fc.constantFrom('issued', 'denied', 'error', 'explain')),
  fc.tuple(fc.constantFrom('policy', 'issuer', 'subject', 'credential_id'), fc.string({ minLength: 1, maxLength: 20 })),
  fc.tuple(fc.constant('limit'), fc.integer({ min: 1, max: 1000 }).map(String)),
  fc.tuple(fc.constant('cursor'), fc.nat(10_000).map(toCursor)),
  fc.tuple(fc.stringMatching(/^claim\.[a-z_]{1,12}$/), fc.string({ maxLength: 20 })),
);
const INVALID_FILTER: fc.Arbitrary<[string, string]> = fc.oneof(
  fc.tuple(fc.constantFrom('since', 'until'), fc.constantFrom('yesterday', '2026-13-01T00:00:00Z', '2026-02-30T00:00:00Z', '2026-11-25 19:00:00', '2026-11-25T24:00:00Z', '1e9')),
  fc.tuple(fc.constant('decision'), fc.constantFrom('ISSUED', 'allow', 'issued ', 'denied,error')),
  fc.tuple(fc.constant('limit'), fc.constantFrom('0', '1001', '-1', '1.5', '01', '1e2', ' 5', '99999')),
  fc.tuple(fc.constant('cursor'), fc.constantFrom('x', '!!', 'MA==', 'LTE', toCursor(1).padEnd(30, 'A'))),
  fc.tuple(fc.constantFrom('since', 'until', 'decision', 'policy', 'issuer', 'subject', 'credential_id', 'limit', 'cursor'), fc.constant('')),
  fc.tuple(fc.constantFrom('claim.', 'request_id', 'sort', 'Policy', 'claim', '__proto__'), fc.constantFrom('x', '1')),
);

/** RFC 3339-shaped times with every field at and beyond its range: whether each is valid is the parser's to say, never a 5xx. */
const timeLikeArb = fc
  .tuple(
    fc.integer({ min: 0, max: 10_000 }),
    fc.integer({ min: 0, max: 13 }),
    fc.integer({ min: 0, max: 32 }),
    fc.integer({ min: 0, max: 24 }),
    fc.integer({ min: 0, max: 60 }),
    fc.integer({ min: 0, max: 61 }),
    fc.constantFrom('', '.0', '.999999999', '.1234567891'),
    fc.constantFrom('Z', 'z', '+00:00', '-23:59', '+23:59', '+24:00', '-00:60'),
  )
  .map(([year, month, day, hour, minute, second, fraction, offset]) => {
    const two = (n: number) => String(n).padStart(2, '0');
    return `${String(year).padStart(4, '0')}-${two(month)}-${two(day)}T${two(hour)}:${two(minute)}:${two(second)}${fraction}${offset}`;
  });

function toQueryString(pairs: readonly (readonly [string, string])[]): string {
  return pairs.map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(value)}`).join('&');
}

function auditEventsRequest(query: string): ApiRequest {
  return { method: 'GET', path: `/v1/audit/events${query === '' ? '' : `?${query}`}`, headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } };
}

// ---------------------------------------------------------------------------

/** The properties, against one broker; `runs` scales them (the PostgreSQL run is a smaller sample). */
function apiProperties(start: () => Promise<Target>, runs: { requests: number; credentials: number; queries: number }): void {
  let target: Target;
  let otherIssuer: DevIssuer;
  before(async () => {
    target = await start();
    otherIssuer = await startDevIssuer({ alg: 'ES256' });
  });
  after(async () => {
    await otherIssuer?.close();
    await target?.close();
  });

  test('random requests: no 5xx, documented JSON errors, a request id, one audit record per decision', async (t) => {
    await fc.assert(
      fc.asyncProperty(rawRequestArb, async (raw) => {
        const headers: Record<string, string | string[]> = {};
        if (raw.contentType !== undefined) headers['content-type'] = raw.contentType;
        if (raw.accept !== undefined) headers.accept = raw.accept;
        if (raw.contentEncoding !== undefined) headers['content-encoding'] = raw.contentEncoding;
        if (raw.forwardedFor !== null) headers['x-forwarded-for'] = raw.forwardedFor;
        switch (raw.authorization) {
          case 'none':
            break;
          case 'auditor':
            headers.authorization = `Bearer ${AUDITOR_TOKEN}`;
            break;
          case 'valid_token':
            headers.authorization = `Bearer ${await mintGood(target.fx)}`;
            break;
          case 'random':
            headers.authorization = raw.authorizationText;
            break;
          case 'bearer_random':
            headers.authorization = `Bearer ${raw.authorizationText}`;
            break;
          case 'repeated':
            headers.authorization = [`Bearer ${await mintGood(target.fx)}`, `Bearer ${raw.authorizationText}`];
            break;
        }
        const body = raw.body?.includes(FRESH_TOKEN) ? raw.body.replaceAll(FRESH_TOKEN, await mintGood(target.fx)) : raw.body;
        await exercise(target, { method: raw.method, path: raw.path + raw.query, headers, ...(body === undefined || raw.method === 'HEAD' ? {} : { body }) });
      }),
      { seed: seedFor(t, 1201), numRuns: Math.ceil(runs.requests * RUN_SCALE), includeErrorInReport: true },
    );
  });

  test('no credential for a request that should be refused; each valid token once per policy', async (t) => {
    let run = 0;
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(caseArb, async (testCase) => {
        run += 1;
        await runCredentialCase(target, otherIssuer, testCase, run, seen);
      }),
      { seed: seedFor(t, 1202), numRuns: Math.ceil(runs.credentials * RUN_SCALE), includeErrorInReport: true },
    );
    t.diagnostic(`outcomes: ${JSON.stringify(Object.fromEntries(seen))}`);
    // Not vacuous: some requests were granted, some refused, some refused as replays.
    for (const outcome of ['issued', 'refused', 'replay refused']) assert.ok(seen.has(outcome), `the cases reached '${outcome}'`);
  });

  test('/v1/audit/events: valid queries answer 200, invalid ones the same 400 each time, random ones never a 5xx', async (t) => {
    const queryArb = fc.oneof(
      fc.array(VALID_FILTER, { maxLength: 4 }).map((pairs) => ({ expect: 'valid' as const, pairs })),
      fc.tuple(fc.array(VALID_FILTER, { maxLength: 2 }), INVALID_FILTER).map(([pairs, bad]) => ({ expect: 'invalid' as const, pairs: [...pairs, bad] })),
      fc.tuple(VALID_FILTER, fc.constant(null)).map(([pair]) => ({ expect: 'invalid' as const, pairs: [pair, pair] })),
      fc.stringMatching(/^[A-Za-z0-9=&%._~+:\-[\]]{0,60}$/).map((raw) => ({ expect: 'unknown' as const, raw })),
      fc.tuple(fc.constantFrom('since', 'until'), timeLikeArb).map((pair) => ({ expect: 'unknown' as const, raw: toQueryString([pair]) })),
    );
    await fc.assert(
      fc.asyncProperty(queryArb, async (query) => {
        // A filter repeated (`policy=a&policy=b`) is invalid however valid each value is.
        const names = 'pairs' in query ? query.pairs.map(([name]) => name) : [];
        const expect = 'pairs' in query && query.expect === 'valid' && new Set(names).size !== names.length ? 'invalid' : query.expect;
        const queryString = 'pairs' in query ? toQueryString(query.pairs) : query.raw;
        const first = await exercise(target, auditEventsRequest(queryString));
        const where = describeExchange(auditEventsRequest(queryString), first);
        assert.ok(first.status === 200 || first.status === 400, `200 or 400: ${where}`);
        if (expect === 'valid') assert.equal(first.status, 200, `a valid query: ${where}`);
        if (expect === 'invalid') assert.equal(first.status, 400, `an invalid query: ${where}`);
        if (first.status === 200) {
          assert.ok(Array.isArray((JSON.parse(first.text) as { events: unknown }).events), `events: ${where}`);
          return;
        }
        const body = JSON.parse(first.text) as { error: string; error_description: string };
        assert.equal(body.error, 'invalid_request', where);
        const again = await exercise(target, auditEventsRequest(queryString));
        const repeated = JSON.parse(again.text) as { error: string; error_description: string };
        assert.deepEqual([again.status, repeated.error, repeated.error_description], [400, body.error, body.error_description], `a stable refusal: ${where}`);
      }),
      { seed: seedFor(t, 1204), numRuns: Math.ceil(runs.queries * RUN_SCALE), includeErrorInReport: true },
    );
  });

  test('the audit routes refuse without auditor credentials, and the log verifies after the fuzzing', async () => {
    for (const path of ['/v1/audit/events', '/v1/audit/verify']) {
      for (const authorization of [undefined, 'Bearer not-the-auditor-token', `Basic ${Buffer.from(`x:${AUDITOR_TOKEN}`).toString('base64')}`]) {
        const response = await exercise(target, { method: 'GET', path, headers: authorization === undefined ? {} : { authorization } });
        assert.equal(response.status, 401, `${path} without auditor credentials`);
      }
    }
    const verified = await exercise(target, { method: 'GET', path: '/v1/audit/verify', headers: { authorization: `Bearer ${AUDITOR_TOKEN}` } });
    assert.equal(verified.status, 200);
    const result = JSON.parse(verified.text) as { ok: boolean; events: number };
    assert.equal(result.ok, true, verified.text);
    assert.ok(result.events > 0, 'the properties left records to verify');
  });
}

// Regression cases the properties found, shrunk and named.
describe('regressions found by fuzzing', () => {
  let target: Target;
  before(async () => {
    target = await startTarget({ policies: POLICIES, issuerAlg: 'ES256' });
  });
  after(() => target.close());

  // Node keeps the first of repeated Authorization headers, so a valid token followed by junk was exchanged.
  for (const route of ['/v1/exchange', '/v1/explain']) {
    test(`${route}: the Authorization header sent twice is a 400, audited, and the token is not spent`, async () => {
      const token = await mintGood(target.fx);
      for (const second of [`Bearer ${token}`, 'Bearer junk']) {
        const response = await exercise(target, { method: 'POST', path: route, headers: { 'content-type': 'application/json', authorization: [`Bearer ${token}`, second] }, body: '{"policy":"deploy"}' });
        assert.equal(response.status, 400, response.text);
        const body = JSON.parse(response.text) as { error: string; error_description: string };
        assert.deepEqual(body.error, 'invalid_request');
        assert.match(body.error_description, /one Authorization header/);
      }
      const exchanged = await exercise(target, { method: 'POST', path: '/v1/exchange', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"policy":"deploy"}' });
      assert.equal(exchanged.status, 200, exchanged.text);
    });
  }
});

describe('HTTP API fuzzing, SQLite audit log', () => {
  apiProperties(() => startTarget({ policies: POLICIES, issuerAlg: 'ES256' }), { requests: 150, credentials: 60, queries: 80 });
});

describe('HTTP API fuzzing, PostgreSQL audit log', () => {
  const postgres = postgresKind();
  after(() => postgres.cleanup());
  apiProperties(
    async () => {
      const log = await postgres.newLog();
      return startTarget({ policies: POLICIES, issuerAlg: 'ES256', brokerOptions: { audit: await log.open() } });
    },
    { requests: 40, credentials: 30, queries: 20 },
  );
});
