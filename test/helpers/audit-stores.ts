/**
 * The audit stores under test, behind one interface, so the same tests run
 * against each: a fresh log per call, direct SQL access to it (as an attacker
 * or an operator's shell would have), and another session holding its write
 * lock.
 *
 * PostgreSQL logs live in one database created for the test run (dropped by
 * `cleanup`), one schema per log, selected by `search_path` in the URL.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { ADVISORY_LOCK } from '../../src/audit/postgres/schema.js';
import { openPostgresAuditStore, type PostgresAuditStoreOptions } from '../../src/audit/postgres/store.js';
import { openSqliteAuditStore } from '../../src/audit/sqlite/store.js';
import type { AuditStore } from '../../src/audit/types.js';

export interface OpenOptions {
  onAppendSeconds?: (seconds: number) => void;
  /** How long a write waits for another session's lock before failing. */
  lockTimeoutMs?: number;
}

/** Another session holding the log's write lock. */
export interface HeldLock {
  /** A query on the locking session itself (others would wait for the lock). */
  scalar(sql: string): Promise<unknown>;
  release(): Promise<void>;
}

export interface StoreLog {
  /** Opens a store on this log; each call is another instance (a restart, or another replica). */
  open(options?: OpenOptions): Promise<AuditStore>;
  /** Runs SQL (one or more statements) directly against the log's tables. */
  exec(sql: string): Promise<void>;
  /** The first column of the first row of `sql`. */
  scalar(sql: string): Promise<unknown>;
  /** Takes the lock appends need, from another session, as another writer would. */
  holdWriteLock(): Promise<HeldLock>;
  /** Everything the log keeps, as text: to check what is (not) stored. */
  dump(): Promise<string>;
  /** Makes the database itself refuse (a trigger) to insert any record whose user_agent is `userAgent`. */
  refuseRecords(userAgent: string): Promise<void>;
}

export interface StoreKind {
  name: 'sqlite' | 'postgres';
  newLog(): Promise<StoreLog>;
  /** The `cause.code` of an append that waited out another session's lock. */
  lockTimeoutCode: RegExp;
  /** The `cause.code` of an append refused by refuseRecords' trigger. */
  refusalCode: RegExp;
  /** Drops whatever the logs left behind. */
  cleanup(): Promise<void>;
}

export const PG_ADMIN_URL = process.env.AUDIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export function sqliteKind(): StoreKind {
  const dirs: string[] = [];
  return {
    name: 'sqlite',
    lockTimeoutCode: /^SQLITE_BUSY/,
    refusalCode: /^SQLITE_CONSTRAINT_TRIGGER$/,
    async newLog() {
      const dir = mkdtempSync(join(tmpdir(), 'oidc-broker-audit-'));
      dirs.push(dir);
      const path = join(dir, 'data', 'audit.db');
      const raw = <T>(fn: (db: Database.Database) => T): T => {
        const db = new Database(path, { timeout: 200 });
        try {
          return fn(db);
        } finally {
          db.close();
        }
      };
      return {
        async open(options = {}) {
          return openSqliteAuditStore(path, { busyTimeoutMs: options.lockTimeoutMs ?? 200, onAppendSeconds: options.onAppendSeconds });
        },
        async exec(sql) {
          raw((db) => db.exec(sql));
        },
        async scalar(sql) {
          return raw((db) => db.prepare(sql).pluck().get());
        },
        async holdWriteLock() {
          const db = new Database(path, { timeout: 200 });
          db.exec('BEGIN EXCLUSIVE');
          return {
            scalar: async (sql) => db.prepare(sql).pluck().get(),
            release: async () => {
              db.exec('ROLLBACK');
              db.close();
            },
          };
        },
        async refuseRecords(userAgent) {
          raw((db) => db.exec(`CREATE TRIGGER refuse_records BEFORE INSERT ON audit_events WHEN NEW.user_agent = ${sqlText(userAgent)} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`));
        },
        async dump() {
          const folder = join(path, '..');
          return readdirSync(folder)
            .map((file) => readFileSync(join(folder, file)).toString('latin1'))
            .join('\n');
        },
      };
    },
    async cleanup() {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A database for this test run, created on first use. */
export class PostgresTestDatabase {
  readonly name = `oidc_broker_test_${process.pid}_${Date.now()}`;
  private created: Promise<pg.Client> | null = null;
  private schemas = 0;

  /** The URL of this database, with `search_path` set to `schema` if given. */
  url(schema?: string, base = PG_ADMIN_URL): string {
    const url = new URL(base);
    url.pathname = `/${this.name}`;
    if (schema !== undefined) url.searchParams.set('options', `-c search_path=${schema}`);
    return url.toString();
  }

  /** A client on this database (created if needed), for tests' own SQL. */
  admin(): Promise<pg.Client> {
    this.created ??= (async () => {
      const server = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
      await server.connect();
      try {
        await server.query(`CREATE DATABASE ${this.name}`);
      } finally {
        await server.end();
      }
      const client = new pg.Client({ connectionString: this.url(), connectionTimeoutMillis: 5000 });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    })();
    return this.created;
  }

  /** A fresh, empty schema in this database. */
  async newSchema(): Promise<string> {
    const admin = await this.admin();
    this.schemas += 1;
    const schema = `log_${this.schemas}`;
    await admin.query(`CREATE SCHEMA ${schema}`);
    return schema;
  }

  /** A separate session on `schema` (ended by the caller). */
  async session(schema: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.url(schema), connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    await client.connect();
    return client;
  }

  async drop(): Promise<void> {
    if (this.created === null) return;
    const admin = await this.created.catch(() => null);
    await admin?.end().catch(() => undefined);
    const server = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
    await server.connect();
    try {
      await server.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
    } finally {
      await server.end();
    }
  }
}

export function postgresKind(db = new PostgresTestDatabase()): StoreKind {
  return {
    name: 'postgres',
    // 55P03: lock_not_available (lock_timeout); 57014: query_canceled (statement_timeout).
    lockTimeoutCode: /^(55P03|57014)$/,
    // P0001: raise_exception, from refuseRecords' trigger.
    refusalCode: /^P0001$/,
    async newLog() {
      const schema = await db.newSchema();
      /** Each call on its own short session: tests' SQL never shares a connection with anything. */
      const inSchema = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
        const session = await db.session(schema);
        try {
          return await fn(session);
        } finally {
          await session.end();
        }
      };
      return {
        async open(options = {}) {
          const pgOptions: PostgresAuditStoreOptions = {
            onAppendSeconds: options.onAppendSeconds,
            connectTimeoutMs: 2000,
            statementTimeoutMs: options.lockTimeoutMs ?? 5000,
          };
          return openPostgresAuditStore(db.url(schema), pgOptions);
        },
        async exec(sql) {
          await inSchema((c) => c.query(sql));
        },
        async scalar(sql) {
          return inSchema((c) => firstValue(c, sql));
        },
        async holdWriteLock() {
          const session = await db.session(schema);
          await session.query('SELECT pg_advisory_lock($1, $2)', [ADVISORY_LOCK.class, ADVISORY_LOCK.append]);
          return {
            scalar: (sql) => firstValue(session, sql),
            release: async () => {
              await session.query('SELECT pg_advisory_unlock_all()');
              await session.end();
            },
          };
        },
        async refuseRecords(userAgent) {
          await inSchema((c) =>
            c.query(`
              CREATE FUNCTION refuse_records() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
              CREATE TRIGGER refuse_records BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.user_agent = ${sqlText(userAgent)}) EXECUTE FUNCTION refuse_records();`),
          );
        },
        async dump() {
          return inSchema(async (c) => {
            const tables = ['audit_events', 'audit_claims', 'audit_hours', 'audit_checkpoints'];
            const parts = await Promise.all(tables.map(async (t) => (await c.query(`SELECT coalesce(string_agg(t::text, E'\\n'), '') AS s FROM ${t} t`)).rows[0].s as string));
            return parts.join('\n');
          });
        },
      };
    },
    cleanup: () => db.drop(),
  };
}

/** The first column of the first row; a bigint (a count) as a number. */
async function firstValue(client: pg.Client, sql: string): Promise<unknown> {
  const result = await client.query({ text: sql, rowMode: 'array' });
  const value: unknown = (result.rows[0] as unknown[] | undefined)?.[0];
  return typeof value === 'string' && result.fields[0]?.dataTypeID === 20 ? Number(value) : value;
}

/** `text` as an SQL string literal (both dialects). */
function sqlText(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
