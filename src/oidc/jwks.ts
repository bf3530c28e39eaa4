import { createLocalJWKSet, errors, type CryptoKey, type JSONWebKeySet, type JWK } from 'jose';
import { IssuerUnavailableError } from '../errors.js';
import { errorSummary, type Logger } from '../logger.js';
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
  /** Remote keys older than this are refetched (in the background while they may still serve as stale keys). Default 10 min. */
  cacheMaxAgeMs?: number | undefined;
  /** Time budget of one fetch. Default 5 s. */
  timeoutMs?: number | undefined;
  /** Body size cap of one fetch; default that of `fetchJson` (512 KiB). */
  maxResponseBytes?: number | undefined;
  /** Metrics hook, called once per network fetch (discovery or JWKS) with its outcome. */
  onFetch?: OnJwksFetch | undefined;
  /** Clock for the cooldowns and the cache age; default `Date.now`. */
  nowMs?: (() => number) | undefined;
  /** Gets a warning for each failed JWKS fetch bridged by cached keys. Default: not logged. */
  logger?: Logger | undefined;
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
  if (issuer.jwksUri !== undefined) return createRemoteKeyResolver(issuer, issuer.jwksUri, options);
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
 * Keys fetched from `jwksUri` over {@link fetchJson} (timeout, no redirects,
 * size cap, URL policy) and matched with jose's local JWKS rules, with the
 * cache and cooldown jose's remote JWKS has, on the injected clock:
 *
 * - keys older than `cacheMaxAgeMs` are due for a refetch; until they are
 *   `cacheMaxAgeMs + staleIfErrorMs` old (the issuer's
 *   `jwksStaleIfErrorSeconds`) a token whose `kid` they hold verifies with them
 *   at once while the refetch runs in the background, so an outage adds no
 *   fetch timeout to an exchange. If that refetch fails, it counts as `stale`
 *   and is logged as a warning (stale-if-error); after the bound, tokens wait
 *   on the refetch and are refused with `jwks_unavailable` until one succeeds;
 * - an unknown `kid` refetches at most once per `cooldownMs` (measured from
 *   the last successful fetch); stale keys are no answer to an unknown `kid`,
 *   and a successful fetch replaces every cached key, so a key the issuer has
 *   withdrawn never verifies again;
 * - a failed fetch is remembered for `cooldownMs`: until then any further
 *   fetch fails at once without a request, so an unreachable issuer is not
 *   hammered;
 * - concurrent misses share one in-flight fetch.
 *
 * @throws TypeError if `jwksUri` is not an allowed outbound URL.
 */
export function createRemoteKeyResolver(
  issuer: Pick<IssuerConfig, 'name' | 'jwksStaleIfErrorSeconds'>,
  jwksUri: string,
  options: KeyResolverOptions = {},
): KeyResolver {
  if (!isAllowedOutboundUrl(jwksUri)) throw new TypeError('jwksUri must be an https URL, or http to a loopback host');
  const cooldownMs = options.cooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS;
  const cacheMaxAgeMs = options.cacheMaxAgeMs ?? DEFAULT_JWKS_CACHE_MAX_AGE_MS;
  const issuerName = issuer.name;
  const staleIfErrorMs = issuer.jwksStaleIfErrorSeconds * 1000;
  const timeoutMs = options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  const nowMs = options.nowMs ?? Date.now;
  let keys: CachedKeys | undefined;
  let pending: Promise<CachedKeys> | undefined;
  let lastFailure: { at: number; error: unknown } | undefined;

  const ageMs = (cached: CachedKeys) => nowMs() - cached.fetchedAt;
  /** The cached keys while past their max age but inside the stale-if-error bound. */
  const staleKeys = (): CachedKeys | undefined =>
    keys !== undefined && ageMs(keys) >= cacheMaxAgeMs && ageMs(keys) < cacheMaxAgeMs + staleIfErrorMs ? keys : undefined;

  const fetchKeys = async (): Promise<CachedKeys> => {
    if (lastFailure && nowMs() - lastFailure.at < cooldownMs) {
      throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: lastFailure.error });
    }
    let resolve: KeyResolver;
    try {
      resolve = createLocalJWKSet(toPublicJwks(await fetchJson(jwksUri, { timeoutMs, maxBytes: options.maxResponseBytes })));
    } catch (err) {
      lastFailure = { at: nowMs(), error: err };
      const stale = staleKeys();
      if (stale !== undefined) {
        options.onFetch?.(issuerName, 'stale');
        options.logger?.warn('issuer keys could not be refreshed; verifying with cached keys until the stale-if-error bound', {
          issuer: issuerName,
          jwks_uri: jwksUri,
          keys_fetched_at: new Date(stale.fetchedAt).toISOString(),
          stale_until: new Date(stale.fetchedAt + cacheMaxAgeMs + staleIfErrorMs).toISOString(),
          cause: errorSummary(err),
        });
      } else {
        options.onFetch?.(issuerName, 'error');
      }
      throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: err });
    }
    lastFailure = undefined;
    options.onFetch?.(issuerName, 'ok');
    keys = { resolve, fetchedAt: nowMs() };
    return keys;
  };
  const refresh = () =>
    (pending ??= fetchKeys().finally(() => {
      pending = undefined;
    }));

  const match: (from: CachedKeys, ...args: Parameters<KeyResolver>) => Promise<CryptoKey> = async (from, protectedHeader, token) => {
    try {
      return await from.resolve(protectedHeader, token);
    } catch (err) {
      // A published key jose cannot use as a public key means the issuer's JWKS is broken, not the token.
      if (err instanceof errors.JWKSInvalid) throw new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause: err });
      throw err;
    }
  };

  /**
   * Keys past their max age but inside the stale-if-error bound answer a kid
   * they hold at once, while the due refresh runs in the background: an outage
   * then costs no exchange a fetch timeout. Only a kid they lack waits on that
   * refresh, and stale keys never answer for it.
   */
  const matchStale = async (stale: CachedKeys, ...args: Parameters<KeyResolver>): Promise<CryptoKey> => {
    const refreshing = refresh();
    // Its failure is counted and logged by fetchKeys; a caller that needs its keys awaits it below.
    refreshing.catch(() => undefined);
    try {
      return await match(stale, ...args);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
    }
    return match(await refreshing, ...args);
  };

  return async (protectedHeader, token) => {
    const stale = staleKeys();
    if (stale !== undefined) return matchStale(stale, protectedHeader, token);
    // No keys yet, or past the stale-if-error bound: only a fetch can answer.
    const current = keys;
    if (current === undefined || ageMs(current) >= cacheMaxAgeMs) return match(await refresh(), protectedHeader, token);
    try {
      return await match(current, protectedHeader, token);
    } catch (err) {
      // An unknown kid may be a key rotation: refetch, at most once per cooldown.
      if (err instanceof errors.JWKSNoMatchingKey && ageMs(current) >= cooldownMs) return match(await refresh(), protectedHeader, token);
      throw err;
    }
  };
}

/** Remote keys as matched by jose, and when they were fetched (injected clock). */
interface CachedKeys {
  resolve: KeyResolver;
  fetchedAt: number;
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
    nowMs: options.nowMs,
  });
  let remote: KeyResolver | undefined;
  return async (protectedHeader, token) => {
    if (!remote) {
      const { jwksUri } = await discovery.discover();
      remote ??= createRemoteKeyResolver(issuer, jwksUri, options);
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
function toPublicJwks(json: unknown): JSONWebKeySet {
  if (typeof json !== 'object' || json === null || !Array.isArray((json as { keys?: unknown }).keys)) {
    throw new Error('the JWKS document is not a JWK Set ({"keys": [...]})');
  }
  const keys = (json as { keys: unknown[] }).keys;
  if (!keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
    throw new Error('the JWKS document has a member that is not a JWK object');
  }
  return { keys: (keys as JWK[]).filter((k) => k.kty !== 'oct') };
}
