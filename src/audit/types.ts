/**
 * The audit record (contract section 5). Field names are the wire names, so a
 * record reads the same in the store, the API and an export.
 */
export type AuditDecision = 'issued' | 'denied' | 'error' | 'explain';

export interface AuditEntry {
  /** Sortable unique id (ULID); the exchange response's `issuance_id`. */
  id: string;
  /** RFC 3339 UTC with milliseconds. */
  time: string;
  decision: AuditDecision;
  /** Error code for denied/error records. */
  error: string | null;
  /** Sentence (denied/error) or machine reason; never a secret. */
  reason: string | null;
  request_id: string | null;
  issuer: string | null;
  subject: string | null;
  audience: string[] | null;
  jti: string | null;
  token_sha256: string | null;
  /** The verified claim set; never unverified data. */
  claims: Record<string, unknown> | null;
  /** `iss`/`sub` read from a token that failed verification. */
  unverified: { iss?: string; sub?: string } | null;
  policy: string | null;
  policy_sha256: string | null;
  provider: string | null;
  /** Role ARN, service account, or audience. */
  target: string | null;
  /** AccessKeyId, a SHA-256 fingerprint, or a broker-signed token's jti. */
  credential_id: string | null;
  expires_at: string | null;
  duration_seconds: number | null;
  client_ip: string | null;
  user_agent: string | null;
}

export interface AuditRecord extends AuditEntry {
  /** Position in the chain, from 1. */
  seq: number;
  /** `hash` of the previous record; 64 zeros for the first. */
  prev_hash: string;
  /** Hex SHA-256 over prev_hash and the canonical (RFC 8785) serialisation of the entry and seq. */
  hash: string;
}

export interface AuditQuery {
  since?: string | undefined;
  until?: string | undefined;
  decision?: AuditDecision | undefined;
  policy?: string | undefined;
  issuer?: string | undefined;
  subject?: string | undefined;
  credentialId?: string | undefined;
  /** `claim.<name>=<value>`: the claim's string form equals value (same rule as policy scalars). */
  claims?: Record<string, string> | undefined;
  /** 1..1000, default 100. */
  limit?: number | undefined;
  /** Opaque cursor from a previous page. */
  cursor?: string | undefined;
}

export interface AuditPage {
  events: AuditRecord[];
  nextCursor: string | null;
}

/**
 * Why verification stopped at a record:
 * - `seq_gap`: seq is not the previous seq + 1 (a record was deleted or moved);
 * - `prev_hash_mismatch`: prev_hash is not the previous record's hash (deleted, reordered or forged);
 * - `hash_mismatch`: the record's content no longer matches its hash (a field was changed);
 * - `unreadable`: the stored row cannot be read as a record (a JSON column was corrupted);
 * - `claim_index_mismatch`: the store's claim index disagrees with the record (queries by claim would lie).
 */
export type ChainProblem = 'seq_gap' | 'prev_hash_mismatch' | 'hash_mismatch' | 'unreadable' | 'claim_index_mismatch';

/** The first record at which the chain breaks. */
export interface ChainBreak {
  seq: number;
  id: string | null;
  problem: ChainProblem;
}

/**
 * `events` counts the records that verified (before the break, if any) and
 * `head` is the hash of the last of them (64 zeros for none).
 */
export type ChainVerification =
  | { ok: true; events: number; head: string }
  | { ok: false; events: number; head: string; broken: ChainBreak };

export interface AuditStore {
  /**
   * Appends one record to the chain. Resolves only once the record is durable.
   * @throws AuditUnavailableError when it cannot be committed.
   */
  append(entry: AuditEntry): Promise<AuditRecord>;
  /** @throws InvalidRequestError for a bad cursor. */
  query(query: AuditQuery): Promise<AuditPage>;
  /** Walks the whole chain from the first record. */
  verify(): Promise<ChainVerification>;
  /** Resolves if the store can take writes now; for /readyz. */
  ping(): Promise<void>;
  /** Flushes pending appends and closes. */
  close(): Promise<void>;
}
