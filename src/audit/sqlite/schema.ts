/**
 * The SQLite audit log's schema and its migrations (docs/audit.md).
 */
import type Database from 'better-sqlite3';

/** The schema version this code writes; `schema_version` holds the file's. */
export const SQLITE_SCHEMA_VERSION = 4;

/**
 * Schema migrations, applied in order inside one transaction at open; entry i
 * brings the file from version i to i + 1.
 *
 * Every AuditRecord field is a column (claims, audience and unverified as JSON
 * text). `audit_claims` indexes the scalar top-level claims for
 * `claim.<name>=<value>` queries; it is derived data, which verify() checks
 * against the records. Every filter index ends in seq, for keyset pagination.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL,
    decision TEXT NOT NULL,
    error TEXT,
    reason TEXT,
    request_id TEXT,
    issuer TEXT,
    subject TEXT,
    audience TEXT,
    jti TEXT,
    token_sha256 TEXT,
    claims TEXT,
    unverified TEXT,
    policy TEXT,
    policy_sha256 TEXT,
    provider TEXT,
    target TEXT,
    credential_id TEXT,
    expires_at TEXT,
    duration_seconds INTEGER,
    client_ip TEXT,
    user_agent TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
  ) STRICT;
  CREATE INDEX audit_events_time ON audit_events (time, seq);
  CREATE INDEX audit_events_decision ON audit_events (decision, seq);
  CREATE INDEX audit_events_policy ON audit_events (policy, seq);
  CREATE INDEX audit_events_issuer ON audit_events (issuer, seq);
  CREATE INDEX audit_events_subject ON audit_events (subject, seq);
  CREATE INDEX audit_events_credential_id ON audit_events (credential_id, seq);
  CREATE TABLE audit_claims (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, name)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX audit_claims_value ON audit_claims (name, value, seq);
  `,
  `
  CREATE TABLE audit_checkpoints (
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('periodic', 'prune')),
    kid TEXT NOT NULL,
    jws TEXT NOT NULL,
    PRIMARY KEY (seq, kind, time)
  ) STRICT;
  `,
  `
  CREATE TABLE audit_hours (
    hour TEXT PRIMARY KEY,
    min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  INSERT INTO audit_hours (hour, min_seq, max_seq) SELECT substr(time, 1, 13), min(seq), max(seq) FROM audit_events GROUP BY 1;
  `,
  // 3 -> 4: audit_matches (docs/audit.md), JSON text, NULL when the record
  // has none, as every record before it has; the partial index holds only
  // the records that have some, so an audit_match query walks those alone.
  `
  ALTER TABLE audit_events ADD COLUMN audit_matches TEXT;
  CREATE INDEX audit_events_audit_matches ON audit_events (seq) WHERE audit_matches IS NOT NULL;
  `,
];

/** Brings the file to SQLITE_SCHEMA_VERSION; only reads if it is there already. */
export function migrate(db: Database.Database): void {
  const current = schemaVersion(db);
  if (current === SQLITE_SCHEMA_VERSION) return; // no write at all: a read-only file still opens
  if (current > SQLITE_SCHEMA_VERSION) throw new Error(`the audit log has schema version ${current}; this version of the broker supports up to ${SQLITE_SCHEMA_VERSION}`);
  db.transaction(() => {
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version = schemaVersion(db);
    if (version === 0) {
      const tables = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").get();
      if ((tables?.n ?? 0) > 0) throw new Error('the file holds tables but no audit schema_version: not an audit log');
      db.exec('CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT');
      db.exec('INSERT INTO schema_version (id, version) VALUES (1, 0)');
    }
    for (; version < SQLITE_SCHEMA_VERSION; version += 1) {
      const step = MIGRATIONS[version];
      if (step === undefined) throw new Error(`no migration from schema version ${version}`);
      db.exec(step);
    }
    db.prepare('UPDATE schema_version SET version = ? WHERE id = 1').run(SQLITE_SCHEMA_VERSION);
  }).immediate();
}

function schemaVersion(db: Database.Database): number {
  const table = db.prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'").get();
  if (table === undefined) return 0;
  return db.prepare<[], { version: number }>('SELECT version FROM schema_version WHERE id = 1').get()?.version ?? 0;
}
