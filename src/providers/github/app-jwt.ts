import type { KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

/** GitHub refuses App JWTs that live longer than ten minutes. */
const LIFETIME_SECONDS = 600;
/** `iat` this far in the past, so a GitHub clock slightly behind ours still takes it (GitHub's own advice is 60 s). */
const DRIFT_SECONDS = 60;
/** A JWT is reused while it has at least this long left: longer than any exchange's GitHub calls (`timeout_seconds` is at most 60). */
const MIN_REMAINING_SECONDS = 300;

/**
 * The App JWT as GitHub requires it (RS256, `iss` the App id, `iat`
 * back-dated for clock drift, `exp` ten minutes after `iat`), for
 * `@octokit/auth-app`'s `createJwt`. One JWT is reused for about five minutes
 * instead of signing one per request: an RSA-2048 signature was about half
 * of the CPU of an exchange (docs/performance.md, "GitHub provider"). When
 * auth-app retries after GitHub reported clock skew (`timeDifference`), a JWT
 * on GitHub's clock is signed and not kept.
 */
export function createAppJwtSigner(appId: string, privateKey: KeyObject, now: () => number): (appIdOrClientId: string | number, timeDifference?: number) => Promise<{ jwt: string; expiresAt: string }> {
  let cached: { jwt: string; expiresAtSeconds: number } | undefined;
  const sign = async (nowSeconds: number) => {
    const issuedAt = nowSeconds - DRIFT_SECONDS;
    const expiresAtSeconds = issuedAt + LIFETIME_SECONDS;
    const jwt = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', typ: 'JWT' }).setIssuer(appId).setIssuedAt(issuedAt).setExpirationTime(expiresAtSeconds).sign(privateKey);
    return { jwt, expiresAtSeconds };
  };
  return async (_appId, timeDifference) => {
    const nowSeconds = Math.floor(now() / 1000);
    if (timeDifference) {
      const skewed = await sign(nowSeconds + timeDifference);
      return { jwt: skewed.jwt, expiresAt: new Date(skewed.expiresAtSeconds * 1000).toISOString() };
    }
    if (!cached || cached.expiresAtSeconds - nowSeconds < MIN_REMAINING_SECONDS) cached = await sign(nowSeconds);
    return { jwt: cached.jwt, expiresAt: new Date(cached.expiresAtSeconds * 1000).toISOString() };
  };
}
