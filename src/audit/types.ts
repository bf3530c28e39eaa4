/**
 * The audit record (docs/audit.md). Field names are the wire names, so a
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
  /**
   * Names of the audit-mode deny policies that would have denied this token
   * (docs/policies/reference.md, `mode`); they denied nothing. Empty when none.
   */
  audit_matches: string[];
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
  /** `audit_match=<policy>`: records on which this audit-mode deny policy matched. */
  auditMatch?: string | undefined;
  /** `claim.<name>=<value>`: the claim's string form equals value (same rule as policy scalars). */
  claims?: Record<string, string> | undefined;
  /** 1..1000, default 100. */
  limit?: number | undefined;
  /** Opaque cursor from a previous page. */
  cursor?: string | undefined;
}

/** `GET /v1/audit/stats` (docs/audit.md#stats): the filters of AuditQuery, a bucket size and the length of the top lists. */
export interface AuditStatsQuery extends Omit<AuditQuery, 'limit' | 'cursor'> {
  /** Default `hour`. */
  bucket?: 'hour' | 'day' | undefined;
  /** 1..20, default 10. */
  top?: number | undefined;
}

/** The aggregations a backend reads for stats (core/select.ts toStatsSelects); counts as the driver gives them. */
export interface AuditStatsRows {
  series: { bucket: string; decision: string; policy: string | null; n: number | string }[];
  reasons: { error: string | null; reason: string | null; n: number | string }[];
  subjects: { subject: string; n: number | string; denied: number | string }[];
}

/** The answer of `GET /v1/audit/stats`; every `counts` array has one number per entry of `buckets`. */
export interface AuditStats {
  since: string;
  until: string;
  bucket: 'hour' | 'day';
  /** The start of each bucket, oldest first; the first starts at `since` rounded down to the bucket. */
  buckets: string[];
  total: number;
  by_decision: Record<AuditDecision, number[]>;
  /** The `top` policies with the most records, most first; `policy` null for records no policy was chosen for. */
  by_policy: { policy: string | null; total: number; counts: number[] }[];
  top_denial_reasons: { error: string | null; reason: string | null; count: number }[];
  top_subjects: { subject: string; count: number; denied: number }[];
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
 * - `claim_index_mismatch`: the store's derived query indexes (claim rows, hour ranges) disagree with
 *   the record (queries by claim or time window would miss it);
 * - `checkpoint_mismatch`: the record's hash differs from the one a signed checkpoint vouches for
 *   (the chain was rewritten consistently from here on);
 * - `truncated`: the chain ends before the seq of a signed checkpoint (records at the end were deleted);
 * - `bad_checkpoint`: a stored checkpoint's signature does not verify with the broker's key (forged or altered);
 * - `unexpected_record`: a record at or before the chain's start (the prune anchor), where records were
 *   pruned: inserted afterwards, it would be served by queries without ever being verified;
 * - `missing_checkpoint`: a checkpoint links to an earlier one (at `seq`) that the store no longer holds
 *   (deleted from the middle of the checkpoint chain);
 * - `unlinked_checkpoint`: a checkpoint without a link (as signed before checkpoints were chained) that was
 *   signed after the first linked one;
 * - `rolled_back`: the store does not hold the trusted head the verification was given (the checkpoint at
 *   `seq`): the log was rolled back to an older state.
 */
export type ChainProblem =
  | 'seq_gap'
  | 'prev_hash_mismatch'
  | 'hash_mismatch'
  | 'unreadable'
  | 'claim_index_mismatch'
  | 'checkpoint_mismatch'
  | 'truncated'
  | 'bad_checkpoint'
  | 'unexpected_record'
  | 'missing_checkpoint'
  | 'unlinked_checkpoint'
  | 'rolled_back';

/** The first record at which the chain breaks. */
export interface ChainBreak {
  seq: number;
  id: string | null;
  problem: ChainProblem;
}

/** A point in the chain: the record with this seq has this hash. Seq 0 with GENESIS_HASH is the start. */
export interface ChainPoint {
  seq: number;
  hash: string;
}

/**
 * `events` counts the records that verified (before the break, if any),
 * `head` is the hash of the last of them (the start's hash for none) and
 * `last_seq` its seq.
 */
export type ChainVerification =
  | { ok: true; events: number; head: string; last_seq: number }
  | { ok: false; events: number; head: string; last_seq: number; broken: ChainBreak };

export interface ChainVerifyOptions {
  /** Where the walk starts (after a prune: the prune checkpoint); default seq 0, GENESIS_HASH. */
  from?: ChainPoint | undefined;
  /** Hashes signed checkpoints vouch for, by seq; a record that differs is `checkpoint_mismatch`. */
  expected?: ReadonlyMap<number, string> | undefined;
  /**
   * Walk on from `from` without checking what lies before it (the checkpointer
   * resuming from its last checkpoint). By default `from` is the start of the
   * chain, and any record at or before it is `unexpected_record`.
   */
  partial?: boolean | undefined;
}

/**
 * A signed statement about the chain: "the record with `seq` has `hash`",
 * made by the broker at `time`. `periodic` checkpoints let an auditor prove a
 * copy complete up to a point; a `prune` checkpoint is the anchor the chain
 * is verified from once records up to `seq` were pruned.
 */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
  /** RFC 3339 UTC with milliseconds. */
  time: string;
  kind: 'periodic' | 'prune';
  /** The broker signing key's kid. */
  kid: string;
  /**
   * Compact JWS (ES256) whose payload is {seq, hash, time, kind, prev}: `prev` links to the checkpoint
   * signed before (its seq and jws_sha256), null for the first; checkpoints signed before they were
   * chained have no `prev`.
   */
  jws: string;
}

export interface AuditStore {
  /**
   * Appends one record to the chain. Resolves only once the record is durable.
   * @throws AuditUnavailableError when it cannot be committed.
   */
  append(entry: AuditEntry): Promise<AuditRecord>;
  /** @throws InvalidRequestError for a bad query or cursor; AuditUnavailableError when the store cannot be read. */
  query(query: AuditQuery): Promise<AuditPage>;
  /**
   * Walks the chain from `options.from` (default the very first record) to the
   * head as it was when the walk began. Never throws for a broken chain: that
   * is the result. @throws AuditUnavailableError when the store cannot be read.
   */
  verify(options?: ChainVerifyOptions): Promise<ChainVerification>;
  /** @throws InvalidRequestError for a bad query or window; AuditUnavailableError when the store cannot be read. */
  stats(query: AuditStatsQuery): Promise<AuditStats>;
  /** The last record's seq and hash; seq 0 and GENESIS_HASH for an empty log. */
  head(): Promise<ChainPoint>;
  /**
   * The last record of the longest run of records, from the oldest kept one,
   * whose `time` is before `before` (toISOString text); null if there is none.
   * Pruning stops at the first record that is not older, so the chain that
   * remains is contiguous.
   */
  pruneBoundary(before: string): Promise<ChainPoint | null>;
  /** Stores a checkpoint (idempotent for an identical one). */
  saveCheckpoint(checkpoint: AuditCheckpoint): Promise<void>;
  /** Every stored checkpoint, in seq order (then time). */
  checkpoints(): Promise<AuditCheckpoint[]>;
  /**
   * In one transaction: deletes every record with seq <= anchor.seq (and its
   * claim index rows) and stores `anchor`, a `prune` checkpoint whose hash is
   * that of the record at anchor.seq. Returns the number of records deleted.
   * @throws Error if the record at anchor.seq does not have anchor.hash.
   */
  prune(anchor: AuditCheckpoint): Promise<number>;
  /** Resolves if the store can take writes now; for /readyz. */
  ping(): Promise<void>;
  /** Flushes pending appends and closes. */
  close(): Promise<void>;
}
