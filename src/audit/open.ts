import { openPostgresAuditStore } from './postgres/store.js';
import { openSqliteAuditStore } from './sqlite/store.js';
import type { AuditStoreOptions } from './core/store.js';
import type { AuditStore } from './types.js';

export type { AuditStoreOptions };

/**
 * Opens the store an `audit.url` names: `sqlite:<path>` or `postgres://...`
 * (also `postgresql://`).
 * @throws AuditUnavailableError when it cannot be opened.
 */
export async function openAuditStore(url: string, options: AuditStoreOptions = {}): Promise<AuditStore> {
  if (url.startsWith('sqlite:')) return openSqliteAuditStore(url.slice('sqlite:'.length), options);
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgresAuditStore(url, options);
  throw new Error(`unsupported audit.url scheme: ${url.split(':')[0]}`);
}
