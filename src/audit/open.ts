import type { AuditStoreOptions } from './core/store.js';
import type { AuditStore } from './types.js';

export type { AuditStoreOptions };

/**
 * Opens the store an `audit.url` names: `sqlite:<path>` or `postgres://...`
 * (also `postgresql://`). Only the backend named is loaded, so a broker on
 * SQLite never loads the PostgreSQL driver and the other way round.
 * @throws AuditUnavailableError when it cannot be opened.
 */
export async function openAuditStore(url: string, options: AuditStoreOptions = {}): Promise<AuditStore> {
  if (url.startsWith('sqlite:')) return (await import('./sqlite/store.js')).openSqliteAuditStore(url.slice('sqlite:'.length), options);
  if (/^postgres(ql)?:\/\//.test(url)) return (await import('./postgres/store.js')).openPostgresAuditStore(url, options);
  throw new Error(`unsupported audit.url scheme: ${url.split(':')[0]}`);
}
