/**
 * Which URLs the broker may fetch (docs/configuration.md): https anywhere, plain
 * http only to a loopback host (tests, local emulators, the dev issuer).
 *
 * Config validation and every outbound fetch of `oidc/` call this same
 * function, so a URL that could not be configured can never be fetched either
 * (for instance a `jwks_uri` taken from a discovery document).
 */

/**
 * True if `url` is an absolute `https:` URL, or an `http:` URL whose host is a
 * loopback address (127.0.0.0/8, ::1 or `localhost`). URLs with embedded
 * credentials (`https://user:pass@host`) are refused: they would end up in
 * logs and are never needed for OIDC metadata. Never throws.
 *
 * @example
 * isAllowedOutboundUrl('https://token.actions.githubusercontent.com'); // true
 * isAllowedOutboundUrl('http://127.0.0.1:8081');                         // true
 * isAllowedOutboundUrl('http://issuer.example.com');                     // false
 */
export function isAllowedOutboundUrl(url: string): boolean {
  if (typeof url !== 'string') return false;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.username !== '' || parsed.password !== '') return false;
  if (parsed.hostname === '') return false;
  if (parsed.protocol === 'https:') return true;
  if (parsed.protocol === 'http:') return isLoopbackHostname(parsed.hostname);
  return false;
}

/**
 * True for a WHATWG-normalised hostname that names the loopback interface:
 * `localhost`, an IPv4 address in 127.0.0.0/8, or `[::1]`. The URL parser has
 * already turned `127.1`, `0x7f.1` and `2130706433` into dotted quads and
 * `[0:0:0:0:0:0:0:1]` into `[::1]`, so only canonical forms need checking.
 * IPv4-mapped IPv6 (`[::ffff:127.0.0.1]`) is not accepted.
 */
export function isLoopbackHostname(hostname: string): boolean {
  const host = hostname.toLowerCase();
  if (host === 'localhost' || host === '[::1]' || host === '::1') return true;
  const octets = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!octets) return false;
  const values = octets.slice(1).map(Number);
  return values.every((v) => v <= 255) && values[0] === 127;
}
