import { ClientError } from './errors.js';

const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', '[::1]', 'localhost']);

/** What {@link toBrokerUrl} accepts, for messages. */
export const ACCEPTED_URLS = 'an https:// URL (http:// only for 127.0.0.1, [::1] or localhost)';

/** Whether a token may be sent to `url`: https, or plain http that never leaves the machine. */
export function isSecureUrl(url: URL): boolean {
  return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
}

/**
 * The broker's base URL without a trailing slash. The CI token travels in a
 * header, so plain http is refused except on loopback (docs/ci/exchange.md).
 * @throws ClientError naming `what` (e.g. "The broker-url input", "--url")
 */
export function toBrokerUrl(value: string, what: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ClientError(`${what} ${JSON.stringify(value)} is not a URL; expected ${ACCEPTED_URLS}, e.g. https://broker.example.com.`, false);
  }
  if (!isSecureUrl(url)) throw new ClientError(`${what} ${JSON.stringify(value)} must be ${ACCEPTED_URLS}: the CI token is sent to it.`, false);
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new ClientError(`${what} ${JSON.stringify(value)} must be a plain base URL, e.g. https://broker.example.com.`, false);
  }
  return value.replace(/\/+$/, '');
}
