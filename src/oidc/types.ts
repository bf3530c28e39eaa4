/** One trusted OIDC issuer, as validated by `src/config.ts` (contract section 2, `issuers[]`). */
export interface IssuerConfig {
  /** Name that policies refer to (`issuer: github`). */
  name: string;
  /** Exact `iss` value; https, or http only for loopback hosts. */
  issuer: string;
  /** Accepted `aud` values; a token must carry at least one. */
  audiences: string[];
  /** Skip discovery and fetch keys from here. */
  jwksUri?: string | undefined;
  /** Static keys: no network at all (air-gapped, pinned). Already read and parsed. */
  jwks?: { keys: Record<string, unknown>[] } | undefined;
  /** Allowlist of JWS algorithms; never `none` or HS*. */
  algorithms: string[];
  clockSkewSeconds: number;
  /** Reject tokens whose `iat` is older than this. */
  maxTokenAgeSeconds?: number | undefined;
}

/** A token whose signature, issuer, audience and lifetime have been checked. */
export interface VerifiedToken {
  /** Config name of the issuer (`github`). */
  issuerName: string;
  /** The `iss` claim. */
  issuer: string;
  subject: string;
  audiences: string[];
  jti: string | undefined;
  /** Unix seconds. */
  expiresAt: number;
  /** Unix seconds. */
  issuedAt: number;
  /** The whole verified payload. */
  claims: Readonly<Record<string, unknown>>;
  /** Hex SHA-256 of the compact token: what we log and store instead of the token. */
  tokenSha256: string;
}

/** What can be read from a token that failed verification; goes under `unverified` in the audit record. */
export interface UnverifiedIdentity {
  iss?: string;
  sub?: string;
}

export interface TokenVerifier {
  /**
   * @throws InvalidTokenError (bad token: reason says why) or IssuerUnavailableError (keys unreachable).
   */
  verify(token: string): Promise<VerifiedToken>;
}
