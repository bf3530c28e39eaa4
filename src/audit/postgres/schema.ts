/**
 * The PostgreSQL audit schema, its migrations and the advisory lock keys
 * (docs/audit.md, "PostgreSQL").
 */
import type pg from 'pg';
import { inTransaction, queryWithin } from './session.js';

/** The schema version this code writes; `audit_schema_migrations` lists the versions applied. */
export const POSTGRES_SCHEMA_VERSION = 3;

/**
 * Advisory lock keys (the two-int form, so they cannot collide with a
 * single-bigint lock of another application): class, then one key per use.
 * Locks are per database, so stores in different schemas of one database
 * also take turns; that is slower, never wrong.
 * @internal exported for tests
 */
export const ADVISORY_LOCK = { class: 0x6f696462 /* 'oidb' */, append: 1, migrate: 2 } as const;

/**
 * Schema migrations, applied in order at open under an advisory lock; entry i
 * brings the schema from version i to i + 1. Tables are created in the
 * connection's current schema (the first of `search_path`).
 *
 * Every AuditRecord field is a column. `claims`, `audience` and `unverified`
 * are JSON kept as `text`, not `jsonb`: jsonb reorders keys and normalises
 * numbers, and a record must read back exactly as it was hashed. Times are
 * `toISOString()` text compared in the "C" collation, which is their
 * chronological order whatever the database's default collation.
 *
 * Derived data, all of which verify() checks against the records:
 * - `audit_claims` indexes the scalar top-level claims for
 *   `claim.<name>=<value>` queries, with the record's time so that a time
 *   window is checked before the record is read;
 * - `audit_hours` holds, for each hour (the first 13 characters of `time`),
 *   the lowest and highest seq of a record in that hour, so a time window
 *   maps to a seq range without reading the window's records; records are
 *   appended nearly in time order, so that range is about the window.
 *
 * Every filter index ends in seq, for keyset pagination in seq order. Since
 * version 2, text a token or a request fills is indexed by its SHA-256 (see
 * that migration).
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE audit_events (
    seq bigint PRIMARY KEY,
    id text NOT NULL UNIQUE,
    time text COLLATE "C" NOT NULL,
    decision text COLLATE "C" NOT NULL,
    error text,
    reason text,
    request_id text,
    issuer text COLLATE "C",
    subject text COLLATE "C",
    audience text,
    jti text,
    token_sha256 text,
    claims text,
    unverified text,
    policy text COLLATE "C",
    policy_sha256 text,
    provider text,
    target text,
    credential_id text COLLATE "C",
    expires_at text,
    duration_seconds bigint,
    client_ip text,
    user_agent text,
    prev_hash text NOT NULL,
    hash text NOT NULL
  );
  CREATE INDEX audit_events_time ON audit_events (time, seq);
  CREATE INDEX audit_events_decision ON audit_events (decision, seq);
  CREATE INDEX audit_events_policy ON audit_events (policy, seq);
  CREATE INDEX audit_events_issuer ON audit_events (issuer, seq);
  CREATE INDEX audit_events_subject ON audit_events (subject, seq);
  CREATE INDEX audit_events_credential_id ON audit_events (credential_id, seq);
  CREATE TABLE audit_claims (
    seq bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    time text COLLATE "C" NOT NULL,
    PRIMARY KEY (seq, name)
  );
  CREATE INDEX audit_claims_value ON audit_claims (name, value, seq) INCLUDE (time);
  CREATE TABLE audit_hours (
    hour text COLLATE "C" PRIMARY KEY,
    min_seq bigint NOT NULL,
    max_seq bigint NOT NULL
  );
  CREATE TABLE audit_checkpoints (
    seq bigint NOT NULL,
    hash text NOT NULL,
    time text COLLATE "C" NOT NULL,
    kind text NOT NULL CHECK (kind IN ('periodic', 'prune')),
    kid text NOT NULL,
    jws text NOT NULL,
    PRIMARY KEY (seq, kind, time)
  );
  `,
  // 1 -> 2: a B-tree entry holds at most about 2.7 kB, and a token (up to
  // 16 kB) can carry a longer `sub`, claim name or claim value, which the
  // version 1 indexes refused (so its record, and the request, failed). Every
  // index on text a record can carry from a token or a request now holds the
  // SHA-256 of the text (32 bytes, whatever its length); queries compare the
  // full text as well, so a match stays exact.
  // - audit_sha256 hashes the UTF-8 bytes: decode(..., 'escape') reads them
  //   as they are once each backslash is doubled, and, unlike convert_to(),
  //   is immutable, which an index expression must be.
  // - A unique index on the hash of the name replaces the primary key
  //   (seq, name): a SHA-256 collision is as far out of reach here as in the
  //   hash chain itself.
  // - The claim index no longer includes the time: its rows are read anyway
  //   to compare the full text, and the time with them.
  // - ANALYZE, because autovacuum analyzes a table only after enough of it
  //   changed, and until then the new index expressions have no statistics.
  `
  CREATE FUNCTION audit_sha256(text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT pg_catalog.sha256(pg_catalog.decode(pg_catalog.replace($1, pg_catalog.chr(92), pg_catalog.repeat(pg_catalog.chr(92), 2)), 'escape')) $$;
  DROP INDEX audit_events_policy, audit_events_issuer, audit_events_subject, audit_events_credential_id, audit_claims_value;
  ALTER TABLE audit_claims DROP CONSTRAINT audit_claims_pkey;
  CREATE INDEX audit_events_policy ON audit_events (audit_sha256(policy), seq);
  CREATE INDEX audit_events_issuer ON audit_events (audit_sha256(issuer), seq);
  CREATE INDEX audit_events_subject ON audit_events (audit_sha256(subject), seq);
  CREATE INDEX audit_events_credential_id ON audit_events (audit_sha256(credential_id), seq);
  CREATE UNIQUE INDEX audit_claims_name ON audit_claims (seq, audit_sha256(name));
  CREATE INDEX audit_claims_value ON audit_claims (audit_sha256(name), audit_sha256(value), seq);
  ANALYZE audit_events, audit_claims;
  `,
  // 2 -> 3: audit_matches (docs/audit.md), JSON text like the other JSON
  // columns, NULL when the record has none, as every record before it has;
  // the partial index holds only the records that have some, so an
  // audit_match query walks those alone. Adding a nullable column without a
  // default rewrites nothing.
  `
  ALTER TABLE audit_events ADD COLUMN audit_matches text;
  CREATE INDEX audit_events_audit_matches ON audit_events (seq) WHERE audit_matches IS NOT NULL;
  `,
];

/**
 * Brings the schema to `targetVersion`: POSTGRES_SCHEMA_VERSION, or an
 * earlier one in tests that build a log as an older broker left it. The
 * common case (already current) only reads. Otherwise everything happens in
 * one transaction under a transaction-scoped advisory lock, re-reading the
 * version under it, so replicas starting together migrate once and the
 * others find it done (and a connection pooler in transaction mode cannot
 * strand the lock).
 */
export async function migrate(pool: pg.Pool, timeoutMs: number, targetVersion = POSTGRES_SCHEMA_VERSION): Promise<void> {
  const client = await pool.connect();
  try {
    // Records must read back exactly as they were hashed; a database in
    // another encoding would refuse (or alter) some characters.
    const [encoding] = (await client.query<{ name: string }>("SELECT current_setting('server_encoding') AS name")).rows;
    if (encoding?.name !== 'UTF8') throw new Error(`the database encoding is ${encoding?.name ?? 'unknown'}; the audit log needs UTF8`);
    const current = await schemaVersion(client);
    if (current > POSTGRES_SCHEMA_VERSION) throw newerSchema(current);
    if (current < targetVersion) {
      const bounded = (text: string, values: unknown[] = []) => queryWithin(client, timeoutMs + 1000, text, values);
      await inTransaction(client, async () => {
        await bounded(`SET LOCAL lock_timeout = ${timeoutMs}`);
        await bounded(`SET LOCAL statement_timeout = ${timeoutMs}`);
        await bounded('SELECT pg_advisory_xact_lock($1, $2)', [ADVISORY_LOCK.class, ADVISORY_LOCK.migrate]);
        let version = await schemaVersion(client);
        if (version > POSTGRES_SCHEMA_VERSION) throw newerSchema(version);
        if (version === 0) {
          if (await tableExists(client, 'audit_events')) throw new Error('audit_events exists but audit_schema_migrations does not: not a schema this broker created');
          await bounded('CREATE TABLE audit_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
        }
        for (; version < targetVersion; version += 1) {
          const step = MIGRATIONS[version];
          if (step === undefined) throw new Error(`no migration from schema version ${version}`);
          await bounded(step);
          await bounded('INSERT INTO audit_schema_migrations (version) VALUES ($1)', [version + 1]);
        }
      });
    }
    client.release();
  } catch (err) {
    client.release(err instanceof Error ? err : new Error('migration failed'));
    throw err;
  }
}

/** The highest applied migration, 0 if there is no migrations table. */
async function schemaVersion(client: pg.PoolClient): Promise<number> {
  if (!(await tableExists(client, 'audit_schema_migrations'))) return 0;
  const [row] = (await client.query<{ version: number | null }>('SELECT max(version) AS version FROM audit_schema_migrations')).rows;
  return row?.version ?? 0;
}

/**
 * Whether the current schema has table `name`, read from pg_class with the
 * statement's snapshot. (A name lookup such as to_regclass() goes through the
 * session's catalog cache, which can still say "no such table" for one
 * another session created while this one waited for the migration lock.)
 */
async function tableExists(client: pg.PoolClient, name: string): Promise<boolean> {
  const { rows } = await client.query<{ found: boolean }>(
    `SELECT EXISTS (
       SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = current_schema() AND c.relname = $1
     ) AS found`,
    [name],
  );
  return rows[0]?.found === true;
}

function newerSchema(version: number): Error {
  return new Error(`the audit schema has version ${version}; this version of the broker supports up to ${POSTGRES_SCHEMA_VERSION}`);
}
