import { createRemoteJWKSet, customFetch, errors, type FetchImplementation } from 'jose';
import { BrokerError, IssuerUnavailableError } from '../errors.js';
import { createIssuerDiscovery } from './discovery.js';
import { ISSUER_UNAVAILABLE_MESSAGE, toKeyResolver } from './jws.js';
import { fetchJson, DEFAULT_FETCH_TIMEOUT_MS } from './safe-fetch.js';
import { isAllowedOutboundUrl } from './url-policy.js';
import type { IssuerConfig, KeyResolver, OnJwksFetch } from './types.js';

/** Default wait after a successful fetch before an unknown `kid` may trigger another (jose's default). */
export const DEFAULT_JWKS_COOLDOWN_MS = 30_000;
/** Default lifetime of cached remote keys (jose's default). */
export const DEFAULT_JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;

export interface KeyResolverOptions {
  /**
   * Minimum time between two remote fetches for one issuer when a `kid` is
   * unknown (after a success), and between a failed fetch and the next attempt
   * (discovery and JWKS). Default 30 s.
   */
  cooldownMs?: number | undefined;
  /** Remote keys older than this are refetched before use. Default 10 min. */
  cacheMaxAgeMs?: number | undefined;
  /** Time budget of one fetch. Default 5 s. */
  timeoutMs?: number | undefined;
  /** Body size cap of one fetch; default that of `fetchJson` (512 KiB). */
  maxResponseBytes?: number | undefined;
  /** Metrics hook, called once per network fetch (discovery or JWKS) with its outcome. */
  onFetch?: OnJwksFetch | undefined;
}

/**
 * The key resolver of one configured issuer, in order of preference:
 *
 * 1. static `jwks` (from `jwks_file`): no network, ever;
 * 2. `jwksUri`: keys fetched from there;
 * 3. otherwise OpenID discovery of the issuer, then its `jwks_uri`.
 *
 * Creating it does no I/O; the first token triggers the first fetch.
 *
 * @throws TypeError on an unusable configuration (bad static JWKS, disallowed URL).
 * @example
 * const resolve = createIssuerKeyResolver(githubIssuer, { onFetch: (name, outcome) => metrics.jwksFetches.inc({ issuer: name, outcome }) });
 * await jwtVerify(token, resolve, options);
 */
export function createIssuerKeyResolver(issuer: IssuerConfig, options: KeyResolverOptions = {}): KeyResolver {
  if (issuer.jwks !== undefined) return createStaticKeyResolver(issuer.jwks);
  if (issuer.jwksUri !== undefined) return createRemoteKeyResolver(issuer.name, issuer.jwksUri, options);
  return createDiscoveredKeyResolver(issuer, options);
}

/**
 * Keys from configuration only. Private and symmetric key material is refused:
 * a JWKS file must hold the issuer's public keys.
 *
 * @throws TypeError if `jwks` is not a JWK Set of public asymmetric keys.
 */
export function createStaticKeyResolver(jwks: { keys: Record<string, unknown>[] }): KeyResolver {
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray(jwks.keys)) throw new TypeError('jwks must be a JWK Set ({"keys": [...]})');
  for (const jwk of jwks.keys) {
    if (typeof jwk !== 'object' || jwk === null) throw new TypeError('every member of jwks.keys must be a JWK object');
    if (jwk.kty === 'oct' || PRIVATE_MEMBERS.some((m) => Object.hasOwn(jwk, m))) {
      throw new TypeError('jwks must hold public keys only (no symmetric or private key material)');
    }
  }
  return toKeyResolver(structuredClone(jwks));
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'];

/**
 * Keys fetched from `jwksUri` with jose's remote JWKS (cache, cooldown, and one
 * shared in-flight fetch for concurrent misses), over {@link fetchJson}
 * (timeout, no redirects, size cap, URL policy). On top of jose, a failed
 * fetch is remembered for `cooldownMs`: until then any further fetch fails at
 * once without a request, so an unreachable issuer is not hammered.
 *
 * Unknown `kid`: at most one refetch per `cooldownMs` per issuer (jose measures
 * the window from the last successful fetch).
 *
 * @throws TypeError if `jwksUri` is not an allowed outbound URL.
 */
export function createRemoteKeyResolver(issuerName: string, jwksUri: string, options: KeyResolverOptions = {}): KeyResolver {
  if (!isAllowedOutboundUrl(jwksUri)) throw new TypeError('jwksUri must be an https URL, or http to a loopback host');
  const cooldownMs = options.cooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS;
  const timeoutMs = options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  let lastFailure: { at: number; error: unknown } | undefined;

  const fetchKeys: FetchImplementation = async (url, init) => {
    if (lastFailure && Date.now() - lastFailure.at < cooldownMs) {
      throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: lastFailure.error });
    }
    let body: { keys: unknown[] };
    try {
      const json = await fetchJson(url, { timeoutMs, maxBytes: options.maxResponseBytes, signal: init.signal });
      body = toPublicJwks(json);
    } catch (err) {
      lastFailure = { at: Date.now(), error: err };
      options.onFetch?.(issuerName, 'error');
      throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: err });
    }
    lastFailure = undefined;
    options.onFetch?.(issuerName, 'ok');
    // jose wants a Response; hand it the already validated and size-capped document.
    return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
  };

  const remote = createRemoteJWKSet(new URL(jwksUri), {
    cooldownDuration: cooldownMs,
    cacheMaxAge: options.cacheMaxAgeMs ?? DEFAULT_JWKS_CACHE_MAX_AGE_MS,
    timeoutDuration: timeoutMs,
    [customFetch]: fetchKeys,
  });

  return async (protectedHeader, token) => {
    try {
      return await remote(protectedHeader, token);
    } catch (err) {
      if (err instanceof BrokerError) throw err;
      // Errors of the fetch itself (timeout, a JWKS jose cannot load) mean the
      // issuer is unavailable, not that the token is bad. Key-matching errors
      // (no or several matching keys) go on to the verifier's mapping.
      if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || (err instanceof errors.JOSEError && err.code === errors.JOSEError.code)) {
        throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: err });
      }
      throw err;
    }
  };
}

/**
 * Keys found through OpenID discovery: the discovery document is fetched once
 * (a failure is retried on a later token, at most once per cooldown), then its
 * `jwks_uri` is used as in {@link createRemoteKeyResolver}.
 */
export function createDiscoveredKeyResolver(issuer: IssuerConfig, options: KeyResolverOptions = {}): KeyResolver {
  const discovery = createIssuerDiscovery(issuer.issuer, {
    cooldownMs: options.cooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS,
    timeoutMs: options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS,
    maxResponseBytes: options.maxResponseBytes,
    onFetch: options.onFetch ? (outcome) => options.onFetch?.(issuer.name, outcome) : undefined,
  });
  let remote: KeyResolver | undefined;
  return async (protectedHeader, token) => {
    if (!remote) {
      const { jwksUri } = await discovery.discover();
      remote ??= createRemoteKeyResolver(issuer.name, jwksUri, options);
    }
    return remote(protectedHeader, token);
  };
}

/**
 * Checks a fetched document is a JWK Set and drops symmetric (`oct`) members,
 * which could only ever serve HMAC.
 *
 * @throws Error if it is not `{"keys": [object, ...]}`.
 */
function toPublicJwks(json: unknown): { keys: unknown[] } {
  if (typeof json !== 'object' || json === null || !Array.isArray((json as { keys?: unknown }).keys)) {
    throw new Error('the JWKS document is not a JWK Set ({"keys": [...]})');
  }
  const keys = (json as { keys: unknown[] }).keys;
  if (!keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
    throw new Error('the JWKS document has a member that is not a JWK object');
  }
  return { keys: keys.filter((k) => (k as { kty?: unknown }).kty !== 'oct') };
}
