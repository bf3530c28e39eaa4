/**
 * Transactions and bounded statements on a pooled PostgreSQL client, shared
 * by the migrations and the backend.
 */
import type pg from 'pg';

/**
 * Runs `fn` inside BEGIN/COMMIT (or BEGIN/ROLLBACK for `end: 'rollback'`).
 * If anything fails there is no ROLLBACK (on a stalled connection it would
 * only wait again): the caller discards the client, and the server rolls back
 * a transaction whose connection closed.
 */
export async function inTransaction<T>(client: pg.PoolClient, fn: () => Promise<T>, end: 'commit' | 'rollback' = 'commit'): Promise<T> {
  // Fixed here, not left to database or role defaults: under REPEATABLE READ the snapshot would
  // predate the append lock (a stale head), and synchronous_commit = off would make COMMIT
  // return before the record is durable.
  await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
  await client.query('SET LOCAL synchronous_commit = on');
  const result = await fn();
  await client.query(end === 'commit' ? 'COMMIT' : 'ROLLBACK');
  return result;
}

/** A query with its own client-side reply timeout (pg reads `query_timeout` from the query config; its types omit it). */
export function queryWithin<R extends pg.QueryResultRow = pg.QueryResultRow>(client: pg.PoolClient, timeoutMs: number, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  return client.query<R>({ text, values, query_timeout: timeoutMs } as pg.QueryConfig);
}
