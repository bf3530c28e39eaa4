export interface ReplayStore {
  /**
   * Records `key` until `expiresAtMs`. Resolves true if this is the first claim
   * of the key, false if it was already claimed and has not expired.
   * @throws ReplayUnavailableError when the store cannot be reached.
   */
  claim(key: string, expiresAtMs: number): Promise<boolean>;
  /** Forgets a claim, so a token whose exchange failed upstream can be retried. */
  release(key: string): Promise<void>;
  /** Resolves if claims can be made now; for /readyz. @throws ReplayUnavailableError */
  ping(): Promise<void>;
  close(): Promise<void>;
  /** Claims held in this process's memory, for the broker_replay_entries gauge; only the memory store has any (Redis expires its own keys). */
  entries?(): number;
}
