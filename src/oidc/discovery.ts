import { IssuerUnavailableError } from '../errors.js';
import { fetchJson } from './safe-fetch.js';
import { isAllowedOutboundUrl } from './url-policy.js';
import type { JwksFetchOutcome } from './types.js';

/** What the broker uses from an issuer's OpenID Provider Metadata. */
export interface DiscoveryDocument {
  /** The metadata's `issuer`, equal to the configured issuer. */
  issuer: string;
  /** Where the issuer publishes its signing keys. */
  jwksUri: string;
}

export interface IssuerDiscoveryOptions {
  /** After a failed discovery, the next attempt waits at least this long (ms). */
  cooldownMs: number;
  /** Time budget of one fetch (ms). */
  timeoutMs: number;
  /** Body size cap (bytes); default that of `fetchJson`. */
  maxResponseBytes?: number | undefined;
  /** Called once per network fetch with its outcome (metrics). */
  onFetch?: ((outcome: JwksFetchOutcome) => void) | undefined;
  /** Clock for the cooldown; default `Date.now`. */
  nowMs?: (() => number) | undefined;
}

/** One issuer's discovery, cached. */
export interface IssuerDiscovery {
  /**
   * The issuer's metadata: fetched on first use, then cached for the life of
   * this object. A failure is remembered for `cooldownMs`; calls within that
   * window fail at once, without a request, so a flood of tokens cannot turn
   * into a flood of requests to a failing issuer. Concurrent calls share one fetch.
   *
   * @throws IssuerUnavailableError with reason `discovery_failed`.
   */
  discover(): Promise<DiscoveryDocument>;
}

const DISCOVERY_FAILED_MESSAGE = "The token's issuer could not be reached for its OpenID configuration; try again later.";

/**
 * The discovery URL of an issuer (OpenID Connect Discovery 1.0 section 4.1):
 * any terminating `/` is removed before appending
 * `/.well-known/openid-configuration`.
 */
export function toDiscoveryUrl(issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
}

/**
 * Validates an issuer's metadata (OpenID Connect Discovery 1.0 section 4.3):
 * `issuer` must equal the configured issuer exactly (no normalisation: a
 * mismatch means the document speaks for someone else), and `jwks_uri` must be
 * a URL the broker may fetch. An `http://` `jwks_uri` is accepted only from an
 * issuer that is itself on `http://` loopback: a remote issuer cannot point the
 * broker at a local plain-http service.
 *
 * @throws Error describing the problem (for the log; wrapped by the caller).
 */
export function parseDiscoveryDocument(json: unknown, expectedIssuer: string): DiscoveryDocument {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error('the OpenID configuration is not a JSON object');
  }
  const doc = json as Record<string, unknown>;
  if (doc.issuer !== expectedIssuer) {
    throw new Error(
      `the OpenID configuration names issuer ${JSON.stringify(String(doc.issuer).slice(0, 200))}, not the configured ${JSON.stringify(expectedIssuer)}`,
    );
  }
  const jwksUri = doc.jwks_uri;
  if (typeof jwksUri !== 'string' || !isAllowedOutboundUrl(jwksUri)) {
    throw new Error('the OpenID configuration has no jwks_uri the broker may fetch (https, or http to a loopback host)');
  }
  if (new URL(jwksUri).protocol === 'http:' && new URL(expectedIssuer).protocol !== 'http:') {
    throw new Error('the OpenID configuration of an https issuer points jwks_uri at plain http');
  }
  return { issuer: expectedIssuer, jwksUri };
}

/**
 * Creates the cached discovery of one configured issuer. Does no I/O until
 * {@link IssuerDiscovery.discover} is called.
 *
 * @throws TypeError if `issuer` is not an allowed outbound URL (caller misuse).
 */
export function createIssuerDiscovery(issuer: string, options: IssuerDiscoveryOptions): IssuerDiscovery {
  if (!isAllowedOutboundUrl(issuer)) throw new TypeError('issuer must be an https URL, or http to a loopback host');
  const url = toDiscoveryUrl(issuer);
  const nowMs = options.nowMs ?? Date.now;
  let cached: DiscoveryDocument | undefined;
  let pending: Promise<DiscoveryDocument> | undefined;
  let lastFailure: { at: number; error: unknown } | undefined;

  const fetchOnce = async (): Promise<DiscoveryDocument> => {
    try {
      const json = await fetchJson(url, { timeoutMs: options.timeoutMs, maxBytes: options.maxResponseBytes });
      const doc = parseDiscoveryDocument(json, issuer);
      options.onFetch?.('ok');
      return doc;
    } catch (err) {
      options.onFetch?.('error');
      lastFailure = { at: nowMs(), error: err };
      throw new IssuerUnavailableError(DISCOVERY_FAILED_MESSAGE, { reason: 'discovery_failed', cause: err });
    }
  };

  return {
    async discover() {
      if (cached) return cached;
      if (pending) return pending;
      if (lastFailure && nowMs() - lastFailure.at < options.cooldownMs) {
        // Fail fast inside the cooldown; the cause is the failure being waited out.
        throw new IssuerUnavailableError(DISCOVERY_FAILED_MESSAGE, { reason: 'discovery_failed', cause: lastFailure.error });
      }
      pending = fetchOnce()
        .then((doc) => {
          cached = doc;
          lastFailure = undefined;
          return doc;
        })
        .finally(() => {
          pending = undefined;
        });
      return pending;
    },
  };
}
