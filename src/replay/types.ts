export interface ReplayStore {
  /**
   * Records `key` until `expiresAtMs`. Resolves true if this is the first claim
   * of the key, false if it was already claimed and has not expired.
   */
  claim(key: string, expiresAtMs: number): Promise<boolean>;
  /** Forgets a claim, so a token whose exchange failed upstream can be retried. */
  release(key: string): Promise<void>;
  close(): Promise<void>;
}
