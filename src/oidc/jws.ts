import { constants, KeyObject, verify as verifySignature } from 'node:crypto';
import { createLocalJWKSet, errors, type CryptoKey, type JWSHeaderParameters, type JWTPayload } from 'jose';
import { isPlainObject } from '../values.js';
import { BrokerError, InvalidTokenError, IssuerUnavailableError } from '../errors.js';
import type { InvalidTokenReason, KeyResolver } from './types.js';

/**
 * The signature layer of token verification: format and size checks, the
 * algorithm policy, the refusal of token-supplied keys, the signature itself
 * ({@link verifyCompactSignature}, on `node:crypto`), and the translation of
 * jose errors into the broker's taxonomy. `verify.ts` runs exactly these steps
 * before its claim checks (jose's rules, `claims.ts`); {@link verifyJwsSignature} runs them alone so
 * they can be tested on their own (Wycheproof vectors).
 */

/**
 * Asymmetric JWS algorithms the broker can ever accept (RFC 7518 section 3.1,
 * RFC 8037, RFC 9864). `none` and the HMAC family are absent on purpose: with a
 * public-key issuer, HS256 "signed" with the public key is the classic
 * algorithm-confusion forgery.
 */
export const ASYMMETRIC_JWS_ALGORITHMS: readonly string[] = Object.freeze([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
]);

/** Longest compact token we read, in characters (16 KiB). Real CI tokens are 1 to 3 KiB. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

/**
 * Header parameters through which a token names its own key (RFC 7515 section
 * 4.1.2 to 4.1.6). The broker only trusts keys from its configuration, so a
 * token carrying any of them is refused outright, and nothing they point to is
 * ever fetched (docs/configuration.md). `x5c` is included: jose ignores it, but
 * refusing it closes the door on any future code path that might not.
 */
export const UNTRUSTED_KEY_HEADERS: readonly string[] = Object.freeze(['jku', 'x5u', 'jwk', 'x5c']);

// Three base64url segments; the payload may be empty (detached or empty JWS)
// and so may the signature (`alg: none`, refused by the algorithm check with a
// precise reason rather than as "malformed").
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/;

const ASYMMETRIC = new Set(ASYMMETRIC_JWS_ALGORITHMS);

/** Claim names that may appear in a client message (fixed set: never text from the token). */
const NAMEABLE_CLAIMS = new Set(['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti']);

/**
 * What exactly is wrong with a claim refused as `invalid_claim`, when more is
 * known than "wrong type": it picks the message, the reason stays `invalid_claim`.
 */
export type InvalidClaimProblem = 'unusable_time' | 'non_finite_number';

/** The client message of each reason, and of each precise `invalid_claim` problem. */
const INVALID_TOKEN_MESSAGES: Record<InvalidTokenReason | InvalidClaimProblem, string> = {
  malformed: 'The token is not a well-formed signed JWT.',
  token_too_large: `The token is larger than the ${MAX_TOKEN_LENGTH} characters the broker accepts.`,
  untrusted_key_reference: 'The token names its own verification key (jku, x5u, x5c or jwk header); the broker only uses keys it is configured with.',
  unknown_issuer: "The token's issuer is not trusted by this broker.",
  unsupported_algorithm: "The token's signing algorithm is not accepted for its issuer.",
  unknown_key: 'The token was signed with a key its issuer does not publish.',
  ambiguous_key: 'The token has no key id (kid) and its issuer publishes several keys that could match.',
  bad_signature: "The token's signature is invalid.",
  expired: 'The token has expired.',
  not_yet_valid: 'The token is not valid yet (nbf is in the future).',
  issued_in_future: "The token's issue time (iat) is in the future.",
  token_too_old: 'The token was issued longer ago than this issuer allows (max_token_age_seconds).',
  lifetime_too_long: 'The token\'s "exp" claim is further in the future than this issuer allows (max_token_lifetime_seconds).',
  audience_mismatch: "The token's audience (aud) is not accepted by this broker.",
  missing_claim: 'The token lacks a required claim.',
  invalid_claim: 'The token has a claim of the wrong type.',
  unusable_time: 'A time claim of the token is not a usable time: it must be a finite, non-negative number of seconds since 1970.',
  non_finite_number:
    'A claim of the token holds a number beyond what JSON numbers can carry (such as 1e400): the broker refuses it rather than decide on, or record, a different value.',
};

/** The same messages naming the offending claim, for those that can (the claim is one of {@link NAMEABLE_CLAIMS}). */
const CLAIM_NAMING_MESSAGES: Partial<Record<InvalidTokenReason | InvalidClaimProblem, (claim: string) => string>> = {
  missing_claim: (claim) => `The token lacks the required "${claim}" claim.`,
  invalid_claim: (claim) => `The token's "${claim}" claim has the wrong type.`,
  unusable_time: (claim) => `The token's "${claim}" claim is not a usable time: it must be a finite, non-negative number of seconds since 1970.`,
};

/**
 * An `InvalidTokenError` with a fixed, client-safe message for `reason`
 * (with `invalid_claim`, `problem` picks a more precise one). `claim` is named
 * in the message only if it is one of the registered claims the broker checks,
 * so no token-controlled text reaches a client.
 */
export function toInvalidTokenError(
  reason: InvalidTokenReason,
  options: { claim?: string; problem?: InvalidClaimProblem; cause?: unknown } = {},
): InvalidTokenError {
  const key = reason === 'invalid_claim' && options.problem !== undefined ? options.problem : reason;
  const naming = options.claim !== undefined && NAMEABLE_CLAIMS.has(options.claim) ? CLAIM_NAMING_MESSAGES[key]?.(options.claim) : undefined;
  return new InvalidTokenError(naming ?? INVALID_TOKEN_MESSAGES[key], { reason, cause: options.cause });
}

/** True for an algorithm in {@link ASYMMETRIC_JWS_ALGORITHMS}. Never throws. */
export function isAsymmetricJwsAlgorithm(alg: unknown): alg is string {
  return typeof alg === 'string' && ASYMMETRIC.has(alg);
}

/**
 * The compact-serialisation and header checks that come before any key is
 * looked up: type and size cap, three base64url segments, a JSON-object
 * protected header, no `crit` (the broker understands no header extension,
 * RFC 7515 section 4.1.11, so it must refuse any token that lists one; this
 * also rules out `b64: false`, RFC 7797), and no token-supplied key reference.
 *
 * @returns the decoded (unverified) protected header.
 * @throws InvalidTokenError with reason `malformed`, `token_too_large` or `untrusted_key_reference`.
 */
export function decodeCompactJwsHeader(compact: unknown): JWSHeaderParameters {
  if (typeof compact !== 'string' || compact.length === 0) throw toInvalidTokenError('malformed');
  if (compact.length > MAX_TOKEN_LENGTH) throw toInvalidTokenError('token_too_large');
  if (!COMPACT_JWS.test(compact)) throw toInvalidTokenError('malformed');
  const header: JWSHeaderParameters = decodeJsonSegment(compact.slice(0, compact.indexOf('.')));
  for (const name of UNTRUSTED_KEY_HEADERS) {
    if (Object.hasOwn(header, name)) throw toInvalidTokenError('untrusted_key_reference');
  }
  if (Object.hasOwn(header, 'crit')) throw toInvalidTokenError('malformed');
  return header;
}

/**
 * Refuses `alg` unless it is asymmetric and in `allowed`. `none` and HS* are
 * refused even if `allowed` lists them.
 *
 * @throws InvalidTokenError with reason `unsupported_algorithm`.
 */
export function assertAllowedAlgorithm(alg: unknown, allowed: ReadonlySet<string>): asserts alg is string {
  if (!isAsymmetricJwsAlgorithm(alg) || !allowed.has(alg)) throw toInvalidTokenError('unsupported_algorithm');
}

/**
 * Translates an error thrown while verifying (by jose or by a key resolver)
 * into the broker's taxonomy, by error class and `code`, never by message text
 *. A `BrokerError` passes through; an error that is neither a
 * `BrokerError` nor a jose error is a bug and is returned unchanged (it becomes
 * a logged 500, failing closed).
 */
export function translateVerificationError(err: unknown): unknown {
  if (err instanceof BrokerError) return err;
  if (!(err instanceof errors.JOSEError)) return err;
  const cause = err;
  switch (err.code) {
    case errors.JWTExpired.code: {
      // jose reports both "exp passed" and "iat older than maxTokenAge" as JWTExpired; the claim tells them apart.
      const claim = (err as errors.JWTExpired).claim;
      return toInvalidTokenError(claim === 'iat' ? 'token_too_old' : 'expired', { cause });
    }
    case errors.JWTClaimValidationFailed.code: {
      const { claim, reason } = err as errors.JWTClaimValidationFailed;
      if (reason === 'missing') return toInvalidTokenError('missing_claim', { claim, cause });
      if (reason === 'invalid') return toInvalidTokenError('invalid_claim', { claim, cause });
      switch (claim) {
        case 'nbf':
          return toInvalidTokenError('not_yet_valid', { cause });
        case 'iat':
          return toInvalidTokenError('issued_in_future', { cause });
        case 'aud':
          return toInvalidTokenError('audience_mismatch', { cause });
        case 'iss':
          return toInvalidTokenError('unknown_issuer', { cause });
        default:
          return toInvalidTokenError('invalid_claim', { claim, cause });
      }
    }
    case errors.JWSSignatureVerificationFailed.code:
      return toInvalidTokenError('bad_signature', { cause });
    case errors.JOSEAlgNotAllowed.code:
      return toInvalidTokenError('unsupported_algorithm', { cause });
    case errors.JWKSNoMatchingKey.code:
    case errors.JWKInvalid.code:
    case errors.JWKSInvalid.code:
      return toInvalidTokenError('unknown_key', { cause });
    case errors.JWKSMultipleMatchingKeys.code:
      return toInvalidTokenError('ambiguous_key', { cause });
    case errors.JWKSTimeout.code:
      return new IssuerUnavailableError(ISSUER_UNAVAILABLE_MESSAGE, { reason: 'jwks_unavailable', cause });
    // JOSENotSupported: the algorithm and `crit` were checked before jose ran,
    // so what is left here is a key jose cannot use: the token is not one we
    // can process.
    case errors.JOSENotSupported.code:
    case errors.JWSInvalid.code:
    case errors.JWTInvalid.code:
    default:
      return toInvalidTokenError('malformed', { cause });
  }
}

/** Client-safe sentence for an unreachable issuer. */
export const ISSUER_UNAVAILABLE_MESSAGE = "The token's issuer could not be reached for its signing keys; try again later.";

/** A single JWK, a JWK Set, or a key resolver. */
export type VerificationKeyInput = Record<string, unknown> | { keys: Record<string, unknown>[] } | KeyResolver;

/**
 * Turns a JWK or JWK Set into a resolver with jose's local JWKS matching
 * rules: `kty`/`crv` must fit the algorithm, `kid` must match when the token
 * has one, a JWK `alg` must equal the token's, `use` must be `sig` and
 * `key_ops` must include `verify` when present. A private or symmetric JWK is
 * never used to verify.
 *
 * @throws TypeError if `key` is not a JWK, a JWK Set or a function (caller misuse).
 */
export function toKeyResolver(key: VerificationKeyInput): KeyResolver {
  if (typeof key === 'function') return key;
  if (typeof key !== 'object' || key === null) throw new TypeError('key must be a JWK, a JWK Set or a key resolver');
  const keys = Array.isArray((key as { keys?: unknown }).keys) ? (key as { keys: unknown[] }).keys : [key];
  for (const jwk of keys) {
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new TypeError('every JWK must be an object');
  }
  // Symmetric keys can only serve HMAC, which is never accepted; drop them so
  // no code path can ever select one.
  const usable = (keys as Record<string, unknown>[]).filter((jwk) => jwk.kty !== 'oct');
  try {
    return createLocalJWKSet({ keys: usable });
  } catch (cause) {
    throw new TypeError('key is not a valid JWK Set', { cause });
  }
}

/**
 * How each accepted algorithm is checked with `node:crypto`, with what jose
 * and WebCrypto use (RFC 7518 section 3): the digest, PSS with a salt as long
 * as the hash, ECDSA signatures as r || s of the curve's exact length, and the
 * WebCrypto key algorithm the resolved key must have been imported for.
 */
interface SignatureScheme {
  digest: 'sha256' | 'sha384' | 'sha512' | null;
  keyAlgorithm: { name: string; hash?: string; namedCurve?: string };
  pssSaltLength?: number;
  /** r || s, both the curve's size (RFC 7518 section 3.4); a DER signature never has this length. */
  ecdsaSignatureBytes?: number;
  /** RFC 7518 section 3.3 and 3.5: 2048 bits at least, as jose requires. */
  minRsaBits?: number;
}

const rsa = (bits: 256 | 384 | 512, pss: boolean): SignatureScheme => ({
  digest: `sha${bits}`,
  keyAlgorithm: { name: pss ? 'RSA-PSS' : 'RSASSA-PKCS1-v1_5', hash: `SHA-${bits}` },
  ...(pss ? { pssSaltLength: bits / 8 } : {}),
  minRsaBits: 2048,
});
const ecdsa = (bits: 256 | 384 | 512, namedCurve: string, signatureBytes: number): SignatureScheme => ({
  digest: `sha${bits}`,
  keyAlgorithm: { name: 'ECDSA', namedCurve },
  ecdsaSignatureBytes: signatureBytes,
});
const ed25519: SignatureScheme = { digest: null, keyAlgorithm: { name: 'Ed25519' } };

const SIGNATURE_SCHEMES: Readonly<Record<string, SignatureScheme>> = Object.freeze({
  RS256: rsa(256, false),
  RS384: rsa(384, false),
  RS512: rsa(512, false),
  PS256: rsa(256, true),
  PS384: rsa(384, true),
  PS512: rsa(512, true),
  ES256: ecdsa(256, 'P-256', 64),
  ES384: ecdsa(384, 'P-384', 96),
  ES512: ecdsa(512, 'P-521', 132),
  EdDSA: ed25519,
  Ed25519: ed25519,
});

/**
 * The `node:crypto` form of each resolved key, made once: jose's JWK Sets
 * import a key once per algorithm and keep it while the set lives, and a
 * remote refetch replaces the set (docs/performance.md), so an entry goes
 * with the CryptoKey it was made from, withdrawn keys included.
 */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

/**
 * The checks jose makes on a resolved key before verifying, then its cached
 * `KeyObject`. A key of the wrong type or algorithm can only come from a
 * resolver that is not jose's JWK Set (whose matching rules exclude it): a bug,
 * thrown as a TypeError. A short RSA modulus comes from the issuer's JWKS.
 *
 * @throws InvalidTokenError `unknown_key` for an RSA key under 2048 bits.
 */
function toVerificationKey(key: CryptoKey, alg: string, scheme: SignatureScheme): KeyObject {
  const algorithm = key.algorithm as { name: string; hash?: { name: string }; namedCurve?: string; modulusLength?: number };
  const expected = scheme.keyAlgorithm;
  if (
    key.type !== 'public' ||
    !key.usages.includes('verify') ||
    algorithm.name !== expected.name ||
    (expected.hash !== undefined && algorithm.hash?.name !== expected.hash) ||
    (expected.namedCurve !== undefined && algorithm.namedCurve !== expected.namedCurve)
  ) {
    throw new TypeError(`the resolved key is not a public ${expected.name} verification key for ${alg}`);
  }
  if (scheme.minRsaBits !== undefined && !((algorithm.modulusLength ?? 0) >= scheme.minRsaBits)) {
    throw toInvalidTokenError('unknown_key');
  }
  let keyObject = keyObjects.get(key);
  if (keyObject === undefined) {
    keyObject = KeyObject.from(key);
    keyObjects.set(key, keyObject);
  }
  return keyObject;
}

/**
 * Decodes one base64url segment (its alphabet already checked by
 * {@link decodeCompactJwsHeader}) as jose does: a length that leaves one
 * dangling character is refused, where Buffer would silently drop it and let
 * `signature + "A"` pass for the signature.
 */
function decodeSegment(segment: string): Buffer | undefined {
  return segment.length % 4 === 1 ? undefined : Buffer.from(segment, 'base64url');
}

/**
 * jose's strict UTF-8 reading of a header or payload: invalid UTF-8 is
 * refused rather than replaced, a leading byte-order mark is dropped.
 */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A header or payload segment as jose's `decodeProtectedHeader` and
 * `decodeJwt` read it (strict UTF-8, then JSON that must be an object), its
 * base64url decoded by Buffer: jose's portable decoder costs several times as
 * much, and the segments are read on every exchange (docs/performance.md).
 * The payload read here is the one the claim checks run on, so it must refuse
 * what jose would (docs/performance.md, "Claim checks on the decoded payload").
 *
 * @throws InvalidTokenError `malformed`.
 */
function decodeJsonSegment(segment: string): Record<string, unknown> {
  const bytes = decodeSegment(segment);
  if (bytes === undefined) throw toInvalidTokenError('malformed');
  let value: unknown;
  try {
    value = JSON.parse(strictUtf8.decode(bytes));
  } catch (cause) {
    throw toInvalidTokenError('malformed', { cause });
  }
  if (!isPlainObject(value)) throw toInvalidTokenError('malformed');
  return value;
}

/**
 * The claims of a compact JWS whose shape {@link decodeCompactJwsHeader}
 * has checked, unverified.
 *
 * @throws InvalidTokenError `malformed` if the payload is not a JSON object.
 */
export function decodeCompactJwsPayload(compact: string): JWTPayload {
  const start = compact.indexOf('.') + 1;
  return decodeJsonSegment(compact.slice(start, compact.indexOf('.', start)));
}

/**
 * Verifies the signature of a compact JWS whose header has passed
 * {@link decodeCompactJwsHeader} and the algorithm policy: the key comes from
 * `resolveKey` (jose's JWK Set rules), the check from `node:crypto` on
 * libuv's thread pool, with the checks jose makes on the key.
 *
 * @throws InvalidTokenError `bad_signature`, `malformed` (a signature that is not base64url) or `unknown_key` (RSA key under 2048 bits)
 * @throws whatever `resolveKey` throws (jose errors, IssuerUnavailableError), for {@link translateVerificationError}
 */
export async function verifyCompactSignature(compact: string, header: JWSHeaderParameters, resolveKey: KeyResolver): Promise<void> {
  const { alg } = header;
  const scheme = typeof alg === 'string' && Object.hasOwn(SIGNATURE_SCHEMES, alg) ? SIGNATURE_SCHEMES[alg] : undefined;
  if (alg === undefined || scheme === undefined) throw toInvalidTokenError('unsupported_algorithm');
  const [protectedHeader = '', payload = '', encodedSignature = ''] = compact.split('.');
  const key = toVerificationKey(await resolveKey(header, { protected: protectedHeader, payload, signature: encodedSignature }), alg, scheme);
  const signature = decodeSegment(encodedSignature);
  if (signature === undefined) throw toInvalidTokenError('malformed');
  if (scheme.ecdsaSignatureBytes !== undefined && signature.length !== scheme.ecdsaSignatureBytes) throw toInvalidTokenError('bad_signature');
  const keyInput =
    scheme.pssSaltLength !== undefined
      ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: scheme.pssSaltLength }
      : scheme.ecdsaSignatureBytes !== undefined
        ? { key, dsaEncoding: 'ieee-p1363' as const }
        : key;
  // The callback form runs the check on libuv's thread pool, off the event loop (docs/performance.md).
  const valid = await new Promise<boolean>((resolve, reject) => {
    try {
      verifySignature(scheme.digest, Buffer.from(`${protectedHeader}.${payload}`, 'latin1'), keyInput, signature, (err, result) => (err ? reject(err) : resolve(result)));
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  }).catch((cause: unknown) => {
    // OpenSSL refuses some malformed signatures outright rather than answering false; jose reports both as a bad signature.
    throw toInvalidTokenError('bad_signature', { cause });
  });
  if (!valid) throw toInvalidTokenError('bad_signature');
}

/** What {@link verifyJwsSignature} returns: the verified payload bytes and protected header. */
export interface VerifiedJws {
  payload: Uint8Array;
  protectedHeader: JWSHeaderParameters;
}

/**
 * Checks a compact JWS's signature exactly as the token verifier does, minus
 * the JWT claim checks: header checks ({@link decodeCompactJwsHeader}), the
 * algorithm policy ({@link assertAllowedAlgorithm}, asymmetric only), key
 * selection with jose's JWKS rules, then the signature
 * ({@link verifyCompactSignature}).
 *
 * @param compact the compact serialisation (`header.payload.signature`)
 * @param key a public JWK, a JWK Set, or a key resolver
 * @param allowedAlgorithms accepted `alg` values; anything symmetric or `none` is ignored
 * @throws InvalidTokenError with a machine reason (`bad_signature`, `unsupported_algorithm`, `unknown_key`, ...)
 * @throws IssuerUnavailableError if a remote key resolver cannot reach its issuer
 * @example
 * const { payload } = await verifyJwsSignature(jws, publicJwk, ['ES256']);
 */
export async function verifyJwsSignature(compact: string, key: VerificationKeyInput, allowedAlgorithms: readonly string[]): Promise<VerifiedJws> {
  const allowed = new Set(allowedAlgorithms.filter(isAsymmetricJwsAlgorithm));
  const resolver = toKeyResolver(key);
  const header = decodeCompactJwsHeader(compact);
  assertAllowedAlgorithm(header.alg, allowed);
  try {
    await verifyCompactSignature(compact, header, resolver);
  } catch (err) {
    throw translateVerificationError(err);
  }
  const payload = decodeSegment(compact.split('.')[1] ?? '');
  if (payload === undefined) throw toInvalidTokenError('malformed');
  return { payload: new Uint8Array(payload), protectedHeader: header };
}
