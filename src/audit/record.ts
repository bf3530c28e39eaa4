/**
 * The audit hash chain (docs/audit.md), pure and store-independent: both
 * backends (SQLite, PostgreSQL) share exactly these bytes.
 *
 * Each record commits to its predecessor:
 *
 *     hash = hex(SHA-256(prev_hash || JCS({...entry, seq})))
 *
 * where JCS is the RFC 8785 JSON Canonicalization Scheme, every AuditEntry
 * field is present (null when absent) except `audit_matches`, which is
 * present only when it names a policy (so the records written before the
 * field existed keep their hashes), and the first record's prev_hash is
 * GENESIS_HASH. A changed field breaks that record's hash; a deleted or
 * reordered record breaks the next record's seq or prev_hash. Deleting the
 * newest records leaves a shorter chain that still verifies: only a head kept
 * elsewhere (a checkpoint) can reveal that.
 */
import { createHash } from 'node:crypto';
import canonicalizeModule from 'canonicalize';
import type { AuditDecision, AuditEntry, AuditRecord, ChainBreak, ChainProblem, ChainVerification, ChainVerifyOptions } from './types.js';
import { newUlid } from '../ids.js';
import { isPlainObject, toStringForm } from '../values.js';

type Canonicalize = (input: unknown) => string | undefined;
// canonicalize is CommonJS (`module.exports = fn`) while its types declare an
// ES default export, so under nodenext the types see `{ default: fn }` and the
// runtime gives `fn`; accept either shape.
const canonicalize: Canonicalize =
  typeof canonicalizeModule === 'function' ? (canonicalizeModule) : (canonicalizeModule).default;

/** prev_hash of the first record: 64 zeros. */
export const GENESIS_HASH = '0'.repeat(64);

/** Every AuditEntry field, in a fixed order (the order of the store's columns and of returned records). */
export const AUDIT_ENTRY_FIELDS = [
  'id',
  'time',
  'decision',
  'error',
  'reason',
  'request_id',
  'issuer',
  'subject',
  'audience',
  'jti',
  'token_sha256',
  'claims',
  'unverified',
  'policy',
  'policy_sha256',
  'provider',
  'target',
  'credential_id',
  'expires_at',
  'duration_seconds',
  'client_ip',
  'user_agent',
  'audit_matches',
] as const satisfies readonly (keyof AuditEntry)[];

// Compile-time check that the list above names every field: adding a field to
// AuditEntry without adding it here (and so to the hash) fails to compile.
type MissingEntryField = Exclude<keyof AuditEntry, (typeof AUDIT_ENTRY_FIELDS)[number]>;
const everyFieldListed: [MissingEntryField] extends [never] ? true : MissingEntryField = true;
void everyFieldListed;

export const AUDIT_DECISIONS: readonly AuditDecision[] = ['issued', 'denied', 'error', 'explain'];

const HEX_SHA256 = /^[0-9a-f]{64}$/;
/** `Date.prototype.toISOString()` output: the one time format the store compares as text. */
const ISO_UTC_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const STRING_FIELDS = [
  'error',
  'reason',
  'request_id',
  'issuer',
  'subject',
  'jti',
  'token_sha256',
  'policy',
  'policy_sha256',
  'provider',
  'target',
  'credential_id',
  'expires_at',
  'client_ip',
  'user_agent',
] as const satisfies readonly (keyof AuditEntry)[];

/**
 * A new audit record id: a ULID from a monotonic factory, so ids made in the
 * same millisecond still sort in creation order.
 *
 * @example newAuditId() // '01JDQ8R3W6T8Z2B4V9K1M5N7PX'
 */
export function newAuditId(): string {
  return newUlid();
}

/**
 * Validates an entry and returns the exact value the store keeps: every field
 * present in AUDIT_ENTRY_FIELDS order, absent fields as null, JSON fields
 * (`audience`, `claims`, `unverified`) passed through a JSON round trip so that
 * what is hashed is what a later read returns. Unknown properties are dropped,
 * never stored.
 *
 * Every string, and every key at any depth of the JSON fields, is made
 * storable (see toStorableText), because each backend stores text as UTF-8
 * and PostgreSQL's cannot hold U+0000: a string either store would alter
 * would no longer match its hash. Two keys of one object that become equal
 * are kept apart by toStorableObject's rule (docs/audit.md, "What a record
 * holds"), so a claim name is never lost and never collides in the claim index.
 *
 * @throws TypeError when a field has the wrong type (a caller bug), or `time`
 *   is not `toISOString()` output (UTC with milliseconds), which the store's
 *   `since`/`until` filters compare as text.
 */
export function toCanonicalEntry(entry: AuditEntry): AuditEntry {
  if (typeof entry !== 'object' || entry === null) throw new TypeError('audit entry must be an object');
  const { id, time, decision, audience, claims, unverified, duration_seconds } = entry;
  if (typeof id !== 'string' || id.length === 0) throw new TypeError('audit entry id must be a non-empty string');
  if (typeof time !== 'string' || !ISO_UTC_MS.test(time) || !isRealTime(time)) {
    throw new TypeError('audit entry time must be UTC with milliseconds, as Date.prototype.toISOString() writes it');
  }
  if (!AUDIT_DECISIONS.includes(decision)) throw new TypeError(`audit entry decision must be one of ${AUDIT_DECISIONS.join(', ')}`);
  for (const field of STRING_FIELDS) {
    const value: unknown = entry[field];
    if (value !== undefined && value !== null && typeof value !== 'string') throw new TypeError(`audit entry ${field} must be a string or null`);
  }
  if (audience != null && (!Array.isArray(audience) || !audience.every((a) => typeof a === 'string'))) {
    throw new TypeError('audit entry audience must be an array of strings or null');
  }
  if (claims != null && !isPlainObject(claims)) throw new TypeError('audit entry claims must be an object or null');
  if (unverified != null) {
    if (!isPlainObject(unverified)) throw new TypeError('audit entry unverified must be an object or null');
    for (const [key, value] of Object.entries(unverified)) {
      if ((key !== 'iss' && key !== 'sub') || (value !== undefined && typeof value !== 'string')) {
        throw new TypeError('audit entry unverified may only hold the strings iss and sub');
      }
    }
  }
  if (duration_seconds != null && !Number.isSafeInteger(duration_seconds)) {
    throw new TypeError('audit entry duration_seconds must be an integer or null');
  }
  const auditMatches: unknown = entry.audit_matches;
  if (auditMatches != null && (!Array.isArray(auditMatches) || !auditMatches.every((name) => typeof name === 'string'))) {
    throw new TypeError('audit entry audit_matches must be an array of strings');
  }
  const text = (value: string | null | undefined): string | null => (value == null ? null : toStorableText(value));
  return {
    id,
    time,
    decision,
    error: text(entry.error),
    reason: text(entry.reason),
    request_id: text(entry.request_id),
    issuer: text(entry.issuer),
    subject: text(entry.subject),
    audience: audience == null ? null : jsonRoundTrip(audience),
    jti: text(entry.jti),
    token_sha256: text(entry.token_sha256),
    claims: claims == null ? null : jsonRoundTrip(claims),
    unverified: unverified == null ? null : jsonRoundTrip(unverified),
    policy: text(entry.policy),
    policy_sha256: text(entry.policy_sha256),
    provider: text(entry.provider),
    target: text(entry.target),
    credential_id: text(entry.credential_id),
    expires_at: text(entry.expires_at),
    duration_seconds: duration_seconds ?? null,
    client_ip: text(entry.client_ip),
    user_agent: text(entry.user_agent),
    audit_matches: (entry.audit_matches ?? []).map(toStorableText),
  };
}

/**
 * The record's hash: lowercase hex SHA-256 over `prevHash` (64 hex characters,
 * as ASCII) followed by the RFC 8785 canonical JSON of the entry's
 * AUDIT_ENTRY_FIELDS (absent ones as null, except an absent or empty
 * `audit_matches`, which is left out; any other property, such as a record's
 * own `hash`, ignored) plus `seq`.
 *
 * @param prevHash hash of the record at `seq - 1`, or GENESIS_HASH for seq 1.
 * @param seq position in the chain, from 1.
 * @throws TypeError for a malformed prevHash or seq, or a value JSON cannot hold (NaN, Infinity).
 */
export function hashRecord(prevHash: string, seq: number, entry: AuditEntry): string {
  if (!HEX_SHA256.test(prevHash)) throw new TypeError('prevHash must be 64 lowercase hex characters');
  if (!Number.isSafeInteger(seq) || seq < 1) throw new TypeError('seq must be a positive integer');
  const body: Record<string, unknown> = {};
  for (const field of AUDIT_ENTRY_FIELDS) body[field] = entry[field] ?? null;
  // Records from before audit-mode policies have no such field in their hashed form; a record without matches hashes the same way, so theirs still verify.
  // Only an empty array: any other stored value (an edited row) stays in, so it cannot match a hash made without it.
  const matches: unknown = entry.audit_matches;
  if (matches == null || (Array.isArray(matches) && matches.length === 0)) delete body.audit_matches;
  body.seq = seq;
  let canonical: string | undefined;
  try {
    canonical = canonicalize(body);
  } catch (err) {
    throw new TypeError('audit entry cannot be canonicalized', { cause: err });
  }
  if (canonical === undefined) throw new TypeError('audit entry cannot be canonicalized');
  return createHash('sha256').update(prevHash, 'utf8').update(canonical, 'utf8').digest('hex');
}

/**
 * The claim values a `claim.<name>=<value>` query can find: each top-level
 * claim whose value is a string, number or boolean, as [name, string form].
 * The string form is the policy scalar rule (docs/policies/reference.md): strings as
 * they are, numbers by `String()`, booleans as "true"/"false". Objects, arrays
 * and null are not indexed, so they never equal a scalar.
 */
export function toClaimIndex(claims: Record<string, unknown> | null): [name: string, value: string][] {
  if (claims === null) return [];
  const out: [string, string][] = [];
  for (const [name, value] of Object.entries(claims)) {
    const text = toStringForm(value);
    if (text !== undefined) out.push([name, text]);
  }
  return out;
}

/**
 * Incremental chain verification, fed one stored record at a time in seq
 * order, so a store can stream millions of records in batches.
 */
export interface ChainVerifier {
  /**
   * Checks that `record` extends the chain verified so far: seq is the next
   * one, prev_hash is the previous record's hash and hash recomputes. If it
   * does and `extraProblem` is null, the record becomes the new head and this
   * returns true. Otherwise the break is recorded at this record (a chain
   * problem takes precedence over `extraProblem`, a store-specific finding)
   * and this and every later call return false.
   */
  next(record: AuditRecord, extraProblem?: ChainProblem | null): boolean;
  /** Records a break at a row that could not even be read as a record. */
  fail(at: { seq: number; id: string | null }, problem: ChainProblem): void;
  /**
   * The outcome so far. `events` counts the records that verified (before the
   * break, if any); `head` is the hash of the last of them, GENESIS_HASH for none.
   */
  result(): ChainVerification;
}

/** @see ChainVerifier */
export function createChainVerifier(options: ChainVerifyOptions = {}): ChainVerifier {
  let events = 0;
  let head = options.from?.hash ?? GENESIS_HASH;
  let lastSeq = options.from?.seq ?? 0;
  let broken: ChainBreak | null = null;
  const expected = options.expected;

  return {
    next(record, extraProblem = null) {
      if (broken !== null) return false;
      const vouched = expected?.get(record.seq);
      const problem = linkProblem(record) ?? extraProblem ?? (vouched !== undefined && vouched !== record.hash ? 'checkpoint_mismatch' : null);
      if (problem !== null) {
        broken = { seq: record.seq, id: typeof record.id === 'string' ? record.id : null, problem };
        return false;
      }
      events += 1;
      head = record.hash;
      lastSeq = record.seq;
      return true;
    },
    fail(at, problem) {
      broken ??= { seq: at.seq, id: at.id, problem };
    },
    result() {
      return broken === null ? { ok: true, events, head, last_seq: lastSeq } : { ok: false, events, head, last_seq: lastSeq, broken };
    },
  };

  function linkProblem(record: AuditRecord): ChainProblem | null {
    if (record.seq !== lastSeq + 1) return 'seq_gap';
    if (record.prev_hash !== head) return 'prev_hash_mismatch';
    let expected: string;
    try {
      expected = hashRecord(head, record.seq, record);
    } catch {
      // A stored value JSON cannot hold (only reachable by editing the store)
      // cannot have produced the stored hash.
      return 'hash_mismatch';
    }
    return expected === record.hash ? null : 'hash_mismatch';
  }
}

/**
 * Verifies records given in seq order, from `options.from` (default seq 1), and reports the first
 * broken link. Never throws for a broken chain: that is the result.
 */
export function verifyChain(records: Iterable<AuditRecord>, options: ChainVerifyOptions = {}): ChainVerification {
  const verifier = createChainVerifier(options);
  for (const record of records) if (!verifier.next(record)) break;
  return verifier.result();
}

/**
 * JSON.stringify writes U+0000 and lone surrogates as `\u` escapes (every other
 * character of those ranges as itself), so JSON text without such an escape
 * parses back to text both stores keep exactly; a `\\u0000` that is an escaped
 * backslash merely takes the slow path.
 */
const UNSTORABLE_ESCAPE = /\\u(?:0000|d[89a-f])/i;

function jsonRoundTrip<T>(value: T): T {
  // Throws TypeError for a cycle or a BigInt, which is what we want.
  const json = JSON.stringify(value);
  const parsed: unknown = JSON.parse(json);
  return (UNSTORABLE_ESCAPE.test(json) ? toStorableJson(parsed) : parsed) as T;
}

/**
 * The text both stores keep exactly: lone UTF-16 surrogates (UTF-8 cannot
 * encode them; a token's claims can hold them as JSON escapes) and U+0000
 * (PostgreSQL text cannot hold it) become U+FFFD.
 */
function toStorableText(text: string): string {
  return text.toWellFormed().replaceAll('\u0000', '\uFFFD');
}

/** A parsed JSON value with every string and key storable. */
function toStorableJson(value: unknown): unknown {
  if (typeof value === 'string') return toStorableText(value);
  if (Array.isArray(value)) return value.map(toStorableJson);
  if (isPlainObject(value)) return toStorableObject(value);
  return value;
}

/**
 * Keys already storable stay as they are. A key that toStorableText changes
 * takes its storable form, or, if that name is taken in the object (by a key
 * that was storable, or by an earlier changed one, in the object's key
 * order), the first of `<form>#2`, `<form>#3`, … that is free: distinct keys
 * stay distinct, and the same object always gets the same names.
 */
function toStorableObject(object: Record<string, unknown>): Record<string, unknown> {
  const entries = Object.entries(object).map(([key, value]) => ({ key, storable: toStorableText(key), value }));
  const taken = new Set(entries.filter((e) => e.storable === e.key).map((e) => e.key));
  // Object.fromEntries defines own properties, so a `__proto__` claim stays a claim.
  return Object.fromEntries(
    entries.map(({ key, storable, value }) => {
      let name = storable;
      if (storable !== key) {
        for (let n = 2; taken.has(name); n += 1) name = `${storable}#${n}`;
        taken.add(name);
      }
      return [name, toStorableJson(value)];
    }),
  );
}


function isRealTime(time: string): boolean {
  const ms = Date.parse(time);
  return !Number.isNaN(ms) && new Date(ms).toISOString() === time;
}
