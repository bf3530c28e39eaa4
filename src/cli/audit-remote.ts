import { readFile } from 'node:fs/promises';
import type { AuditVerification } from '../audit/checkpoints.js';
import { parseCheckpointJws, readTrustedHeadFile } from '../audit/trusted-head.js';
import type { AuditQuery, AuditRecord } from '../audit/types.js';
import { isSecureUrl } from '../client/broker-url.js';
import { parseRetryAfter } from '../client/retry.js';
import { CliExit, type CliIo } from './io.js';

/** Where the audit commands read the auditor token when there is no --token-file (docs/audit.md, "Over HTTP"). */
export const AUDITOR_TOKEN_ENV = 'OIDC_BROKER_AUDITOR_TOKEN';
/** Exit code when the broker refuses the auditor token (401, 403): a new token is needed, retrying will not help. */
export const EXIT_NOT_AUDITOR = 4;
/** Exit code when the broker cannot answer now (unreachable, a timeout, 429, 5xx): the same command may work later. */
export const EXIT_UNAVAILABLE = 5;

/** One page is at most 1000 records of at most ~64 KiB each; an answer larger than this is not a page of the audit API. */
const MAX_ANSWER_BYTES = 128 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 60_000;

/** A broker's audit API and the auditor token for it. */
export interface AuditBroker {
  /** The broker's base URL, ending in `/`. */
  base: URL;
  token: string;
}

/**
 * The broker `--url` names and the auditor token, from `--token-file` or
 * else $OIDC_BROKER_AUDITOR_TOKEN; never from a flag's value, which shell
 * history and process lists would show. The URL must be https, or http to a
 * loopback address: the token must not cross a network in clear text.
 */
export async function connectBroker(url: string, tokenFile: string | undefined, io: CliIo): Promise<AuditBroker> {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new CliExit(1, `--url: expected the broker's URL, such as https://broker.example.com, got '${url}'`);
  }
  // The rule `oidc-broker exchange` applies to the broker it sends a CI token to.
  if (!isSecureUrl(base)) {
    throw new CliExit(1, `--url: expected an https:// URL (http:// only to localhost, 127.0.0.1 or [::1]), got '${base.protocol}//${base.host}': the auditor token must not travel in clear text`);
  }
  if (base.username !== '' || base.password !== '' || base.search !== '' || base.hash !== '') {
    throw new CliExit(1, '--url: expected the broker URL without user, password, query or fragment (the auditor token comes from --token-file or $OIDC_BROKER_AUDITOR_TOKEN)');
  }
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return { base, token: await readAuditorToken(tokenFile, io) };
}

async function readAuditorToken(tokenFile: string | undefined, io: CliIo): Promise<string> {
  let token: string;
  let source: string;
  if (tokenFile !== undefined) {
    try {
      token = await readFile(tokenFile, 'utf8');
    } catch (err) {
      throw new CliExit(1, `--token-file: cannot read ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    source = `--token-file ${tokenFile}`;
  } else {
    const value = io.env[AUDITOR_TOKEN_ENV];
    if (value === undefined || value === '') throw new CliExit(1, `--url needs the auditor token: give --token-file FILE or set ${AUDITOR_TOKEN_ENV}`);
    token = value;
    source = AUDITOR_TOKEN_ENV;
  }
  // A file ends with a newline; the token itself never holds white space.
  token = token.trim();
  if (token === '' || /[\s\u0000-\u001f\u007f]/.test(token)) throw new CliExit(1, `the auditor token from ${source} must be one line without spaces or control characters`);
  return token;
}

/**
 * Every record that matches `query`, page after page of `GET /v1/audit/events`
 * along `next_cursor`. The first page is read before this resolves, so a
 * refused token or a bad filter ends the command before anything is printed.
 * @throws CliExit with the broker's status and error code.
 */
export async function openRemoteRecords(broker: AuditBroker, query: AuditQuery): Promise<AsyncIterable<AuditRecord>> {
  const params = toSearchParams(query);
  const fetchPage = async (cursor: string | null): Promise<{ events: AuditRecord[]; next_cursor: string | null }> => {
    if (cursor !== null) params.set('cursor', cursor);
    const page = (await getJson(broker, 'v1/audit/events', params)) as { events?: unknown; next_cursor?: unknown };
    if (!Array.isArray(page.events) || !(typeof page.next_cursor === 'string' || page.next_cursor === null)) throw new CliExit(1, 'GET /v1/audit/events: the answer is not a page of audit records');
    return { events: page.events as AuditRecord[], next_cursor: page.next_cursor };
  };
  let page = await fetchPage(null);
  return (async function* () {
    for (;;) {
      yield* page.events;
      if (page.next_cursor === null) return;
      page = await fetchPage(page.next_cursor);
    }
  })();
}

/** The query as `GET /v1/audit/events` parameters (docs/audit.md). */
function toSearchParams(query: AuditQuery): URLSearchParams {
  const params = new URLSearchParams();
  const scalar: [string, string | number | undefined][] = [
    ['since', query.since],
    ['until', query.until],
    ['decision', query.decision],
    ['policy', query.policy],
    ['issuer', query.issuer],
    ['subject', query.subject],
    ['credential_id', query.credentialId],
    ['audit_match', query.auditMatch],
    ['limit', query.limit],
  ];
  for (const [name, value] of scalar) if (value !== undefined) params.set(name, String(value));
  for (const [name, value] of Object.entries(query.claims ?? {})) params.set(`claim.${name}`, value);
  return params;
}

/**
 * `GET /v1/audit/verify`: the broker walks the chain with its own keys;
 * `trustedHead` is a checkpoint JWS it must still hold.
 */
export async function remoteVerification(broker: AuditBroker, trustedHead: string | undefined): Promise<AuditVerification> {
  const params = new URLSearchParams(trustedHead === undefined ? {} : { trusted_head: trustedHead });
  const result = (await getJson(broker, 'v1/audit/verify', params)) as Partial<AuditVerification>;
  if (typeof result.ok !== 'boolean' || typeof result.events !== 'number') throw new CliExit(1, 'GET /v1/audit/verify: the answer is not a verification result');
  return result as AuditVerification;
}

/** `--trusted-head` for the broker: the JWS itself, or the file holding one (it is checked by the broker, against its keys). */
export async function readTrustedHeadJws(value: string): Promise<string> {
  const checkpoint = parseCheckpointJws(value);
  if (checkpoint !== null) return checkpoint.jws;
  let head;
  try {
    head = await readTrustedHeadFile(value);
  } catch (err) {
    throw new CliExit(1, `--trusted-head: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (head === null) throw new CliExit(1, `--trusted-head: '${value}' is neither a checkpoint JWS nor an existing file`);
  return head.jws;
}

/**
 * One GET with the auditor token; redirects are refused (the token is for
 * this URL only), the wait and the answer's size are bounded.
 * @throws CliExit naming the route, the status and the broker's error code.
 */
async function getJson(broker: AuditBroker, route: string, params: URLSearchParams): Promise<unknown> {
  const url = new URL(route, broker.base);
  url.search = params.toString();
  const where = `GET /${route}`;
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, {
      headers: { authorization: `Bearer ${broker.token}`, accept: 'application/json' },
      redirect: 'error',
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    text = await readCapped(response);
  } catch (err) {
    if (err instanceof CliExit) throw err;
    throw new CliExit(EXIT_UNAVAILABLE, `${where}: cannot reach the broker at ${broker.base.origin}: ${networkCause(err)}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (response.ok) {
    if (body === undefined) throw new CliExit(1, `${where}: the broker's answer is not JSON`);
    return body;
  }
  const { error, error_description: description, request_id: requestId } = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const code = typeof error === 'string' ? ` ${error}` : '';
  const sentence = typeof description === 'string' ? `: ${description}` : '';
  const retryAfter = response.status === 429 ? parseRetryAfter(response.headers.get('retry-after')) : undefined;
  const retry = retryAfter === undefined ? '' : ` (retry after ${retryAfter} s)`;
  const id = typeof requestId === 'string' ? ` (request_id ${requestId})` : '';
  throw new CliExit(exitCodeFor(response.status), `${where}: the broker answered ${response.status}${code}${sentence}${retry}${id}`);
}

function exitCodeFor(status: number): number {
  if (status === 401 || status === 403) return EXIT_NOT_AUDITOR;
  if (status === 429 || status >= 500) return EXIT_UNAVAILABLE;
  return 1;
}

async function readCapped(response: Response): Promise<string> {
  if (response.body === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > MAX_ANSWER_BYTES) throw new CliExit(1, `the broker's answer is larger than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB; is --url a broker?`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Why a request failed before an answer: the timeout, the system error code (ECONNREFUSED, ENOTFOUND) or the message. */
function networkCause(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  const cause = err instanceof Error ? (err.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}
