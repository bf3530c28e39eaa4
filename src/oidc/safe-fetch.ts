import { isAllowedOutboundUrl } from './url-policy.js';

/** Default time budget of one fetch, headers and body included. */
export const DEFAULT_FETCH_TIMEOUT_MS = 5_000;
/** Default cap on a response body; real JWKS and discovery documents are a few KiB. */
export const DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024;

export interface FetchJsonOptions {
  /** Abort after this many milliseconds (headers and body). Default 5000. */
  timeoutMs?: number;
  /** Refuse bodies larger than this many bytes; reading stops as soon as it is exceeded. Default 512 KiB. */
  maxBytes?: number;
}

/** Why a fetch failed; for logs, metrics and tests. */
export type FetchFailureKind =
  | 'url_not_allowed'
  | 'timeout'
  | 'network'
  | 'redirect'
  | 'http_status'
  | 'too_large'
  | 'content_type'
  | 'bad_json';

/**
 * A failed outbound fetch. The message names the URL and the kind of failure,
 * never the response body (an upstream body is not ours to log).
 */
export class FetchFailedError extends Error {
  override name = 'FetchFailedError';
  readonly kind: FetchFailureKind;
  /** HTTP status when the server answered. */
  readonly status: number | undefined;

  constructor(kind: FetchFailureKind, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.status = options.status;
  }
}

/**
 * GETs a JSON document: the only outbound HTTP of `oidc/`.
 *
 * - only URLs that pass {@link isAllowedOutboundUrl};
 * - `redirect: 'manual'`: a 3xx is a failure, never followed (its target was not checked);
 * - anything but 200 is a failure;
 * - the content type must be JSON (`application/json` or `application/<x>+json`);
 * - a time budget covering headers and body, and a body size cap (reading stops past it).
 *
 * @throws FetchFailedError with a `kind` saying why.
 * @example
 * const doc = await fetchJson('https://token.actions.githubusercontent.com/.well-known/openid-configuration');
 */
export async function fetchJson(url: string, options: FetchJsonOptions = {}): Promise<unknown> {
  if (!isAllowedOutboundUrl(url)) {
    throw new FetchFailedError('url_not_allowed', `refusing to fetch ${describeUrl(url)}: only https, or http to a loopback host, is allowed`);
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const signal = AbortSignal.timeout(timeoutMs);

  let response: Response;
  try {
    response = await fetch(url, {
      method: 'GET',
      redirect: 'manual',
      signal,
      headers: { accept: 'application/json, application/jwk-set+json', 'user-agent': 'oidc-broker' },
    });
  } catch (err) {
    throw toFetchError(err, url, timeoutMs);
  }

  try {
    if (response.status >= 300 && response.status < 400) {
      throw new FetchFailedError('redirect', `${describeUrl(url)} answered a redirect (${response.status}); redirects are not followed`, {
        status: response.status,
      });
    }
    if (response.status !== 200) {
      throw new FetchFailedError('http_status', `${describeUrl(url)} answered HTTP ${response.status}`, { status: response.status });
    }
    if (!isJsonContentType(response.headers.get('content-type'))) {
      throw new FetchFailedError('content_type', `${describeUrl(url)} did not answer JSON (content-type ${JSON.stringify(response.headers.get('content-type'))})`, {
        status: response.status,
      });
    }
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      throw new FetchFailedError('too_large', `${describeUrl(url)} declared a body of ${declared} bytes, over the ${maxBytes}-byte cap`, {
        status: response.status,
      });
    }
    const bytes = await readCapped(response, maxBytes, url);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (cause) {
      throw new FetchFailedError('bad_json', `${describeUrl(url)} answered a body that is not UTF-8`, { status: response.status, cause });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new FetchFailedError('bad_json', `${describeUrl(url)} answered a body that is not JSON`, { status: response.status, cause });
    }
  } catch (err) {
    // Release the connection whatever happened; the body is of no further use.
    response.body?.cancel().catch(() => {
      /* the stream may already be closed or errored: nothing left to release */
    });
    if (err instanceof FetchFailedError) throw err;
    throw toFetchError(err, url, timeoutMs);
  }
}

async function readCapped(response: Response, maxBytes: number, url: string): Promise<Uint8Array> {
  if (!response.body) return new Uint8Array();
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {
        /* cancelling an errored stream rejects; we are failing anyway */
      });
      throw new FetchFailedError('too_large', `${describeUrl(url)} answered more than ${maxBytes} bytes`, { status: response.status });
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

function isJsonContentType(value: string | null): boolean {
  if (value === null) return false;
  const mediaType = value.split(';')[0]?.trim().toLowerCase() ?? '';
  return mediaType === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(mediaType);
}

function toFetchError(err: unknown, url: string, timeoutMs: number): FetchFailedError {
  // AbortSignal.timeout() aborts with a DOMException named TimeoutError, which
  // may surface as an AbortError. Match on the error's type name, never on
  // message text.
  const name = err instanceof Error || err instanceof DOMException ? err.name : undefined;
  if (name === 'TimeoutError' || name === 'AbortError') {
    return new FetchFailedError('timeout', `${describeUrl(url)} did not answer within ${timeoutMs} ms`, { cause: err });
  }
  return new FetchFailedError('network', `${describeUrl(url)} could not be fetched`, { cause: err });
}

/** The URL without query or fragment, for messages (a query could hold something sensitive). */
function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return 'an invalid URL';
  }
}
