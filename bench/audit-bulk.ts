/**
 * Fast bulk loads for the read benchmark: rows go straight into each store's
 * tables, the way the store itself writes them, but without hashing (the
 * chain is not what a query reads) and in large transactions.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { toClaimIndex } from '../src/audit/record.js';
import { toStoredColumns } from '../src/audit/rows.js';
import type { AuditEntry } from '../src/audit/types.js';

export interface BulkRecord {
  seq: number;
  entry: AuditEntry;
}

const PLACEHOLDER_HASH = 'f'.repeat(64);

function columns(record: BulkRecord): Record<string, string | number | null> {
  return toStoredColumns({ ...record.entry, seq: record.seq, prev_hash: PLACEHOLDER_HASH, hash: PLACEHOLDER_HASH });
}

export function bulkLoadSqlite(db: Database.Database, records: Iterable<BulkRecord>): void {
  let insertEvent: Database.Statement | undefined;
  const insertClaim = db.prepare('INSERT INTO audit_claims (seq, name, value) VALUES (?, ?, ?)');
  const batch: BulkRecord[] = [];
  const flush = db.transaction(() => {
    for (const record of batch) {
      const row = columns(record);
      insertEvent ??= db.prepare(`INSERT INTO audit_events (${Object.keys(row).join(', ')}) VALUES (${Object.keys(row).map((c) => `@${c}`).join(', ')})`);
      insertEvent.run(row);
      for (const [name, value] of toClaimIndex(record.entry.claims)) insertClaim.run(record.seq, name, value);
    }
    batch.length = 0;
  });
  db.pragma('synchronous = OFF');
  for (const record of records) {
    batch.push(record);
    if (batch.length === 50_000) flush();
  }
  flush();
  db.exec('INSERT INTO audit_hours (hour, min_seq, max_seq) SELECT substr(time, 1, 13), min(seq), max(seq) FROM audit_events GROUP BY 1');
  db.exec('ANALYZE');
}

/**
 * The PostgreSQL store's tables, filled as its append path fills them: each
 * record, its claim index rows (with the record's time) and the per-hour seq
 * ranges time windows are looked up in; then VACUUM ANALYZE, as autovacuum
 * would have done on a live log (index-only scans need the visibility map).
 */
export async function bulkLoadPostgres(client: pg.Client, records: Iterable<BulkRecord>): Promise<void> {
  await client.query('SET synchronous_commit = off');
  let batch: BulkRecord[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const rows = batch.map(columns);
    const names = Object.keys(rows[0]!);
    const arrays = names.map((name) => rows.map((row) => row[name] ?? null));
    const types = names.map((name) => (name === 'seq' || name === 'duration_seconds' ? 'bigint' : 'text'));
    await client.query(`INSERT INTO audit_events (${names.join(', ')}) SELECT * FROM unnest(${types.map((type, i) => `$${i + 1}::${type}[]`).join(', ')})`, arrays);
    const claims = batch.flatMap((record) => toClaimIndex(record.entry.claims).map(([name, value]) => [record.seq, name, value, record.entry.time] as const));
    await client.query('INSERT INTO audit_claims (seq, name, value, time) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])', [
      claims.map((c) => c[0]),
      claims.map((c) => c[1]),
      claims.map((c) => c[2]),
      claims.map((c) => c[3]),
    ]);
    batch = [];
  };
  for (const record of records) {
    batch.push(record);
    if (batch.length === 5000) await flush();
  }
  await flush();
  await client.query(
    `INSERT INTO audit_hours AS h (hour, min_seq, max_seq) SELECT left(time, 13), min(seq), max(seq) FROM audit_events GROUP BY 1
     ON CONFLICT (hour) DO UPDATE SET min_seq = least(h.min_seq, excluded.min_seq), max_seq = greatest(h.max_seq, excluded.max_seq)`,
  );
  for (const table of ['audit_events', 'audit_claims', 'audit_hours']) await client.query(`VACUUM ANALYZE ${table}`);
}
