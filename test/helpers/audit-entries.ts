import { randomBytes } from 'node:crypto';
import { newAuditId } from '../../src/audit/record.js';
import type { AuditEntry, AuditRecord, AuditStore } from '../../src/audit/types.js';

/** The time of every test entry unless overridden: 2026-11-25T19:00:00Z. */
export const T0 = Date.UTC(2026, 10, 25, 19, 0, 0);

/** A complete, valid audit entry of an AWS issuance, with a fresh id. */
export function makeEntry(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: newAuditId(),
    time: new Date(T0).toISOString(),
    decision: 'issued',
    error: null,
    reason: null,
    request_id: 'req-1',
    issuer: 'https://token.actions.githubusercontent.com',
    subject: 'repo:acme/api:ref:refs/heads/main',
    audience: ['https://broker.example.com'],
    jti: 'jti-1',
    token_sha256: 'a'.repeat(64),
    claims: { repository: 'acme/api', run_number: 6, ref_protected: true },
    unverified: null,
    policy: 'api-deploy-prod',
    policy_sha256: 'b'.repeat(64),
    provider: 'aws',
    target: 'arn:aws:iam::123456789012:role/deploy',
    credential_id: 'ASIAEXAMPLE',
    expires_at: new Date(T0 + 900_000).toISOString(),
    duration_seconds: 900,
    client_ip: '127.0.0.1',
    user_agent: 'test',
    audit_matches: [],
    ...overrides,
  };
}

/**
 * Most appends a bulk load keeps in flight: the store fails an entry that
 * waited in its queue longer than its deadline (docs/audit.md), and 20,000
 * queued at once would on a busy machine.
 */
const MAX_IN_FLIGHT = 1000;

/** `n` appends, in flight together (up to {@link MAX_IN_FLIGHT} at a time), in order. */
export async function appendMany(store: AuditStore, n: number, overrides: (i: number) => Partial<AuditEntry> = () => ({})): Promise<AuditRecord[]> {
  const records: AuditRecord[] = [];
  for (let start = 0; start < n; start += MAX_IN_FLIGHT) {
    const count = Math.min(MAX_IN_FLIGHT, n - start);
    records.push(...(await Promise.all(Array.from({ length: count }, (_, i) => store.append(makeEntry(overrides(start + i)))))));
  }
  return records;
}

/**
 * `length` random characters (printable ASCII, backslashes and quotes
 * included, and some multi-byte ones): text no index can shrink by
 * compression, unlike a repeated character.
 */
export function randomText(length: number): string {
  const alphabet = [...Array.from({ length: 94 }, (_, i) => String.fromCharCode(0x21 + i)), 'é', '€', '\u{1F600}'];
  return Array.from(randomBytes(length), (byte) => alphabet[byte % alphabet.length]).join('');
}
