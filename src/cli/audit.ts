import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import type { CryptoKey, JWK } from 'jose';
import { pruneAuditLog, verifyAuditLog, type AuditVerification } from '../audit/checkpoints.js';
import { createFormatter, writeRecords, type ExportFormat } from '../audit/export.js';
import { urlSecrets } from '../audit/core/errors.js';
import { openAuditStore } from '../audit/open.js';
import { compileAuditQuery, MAX_QUERY_LIMIT, queryAll, toCursor, toTimeBound } from '../audit/query.js';
import { AUDIT_DECISIONS } from '../audit/record.js';
import { readAuthenticCheckpoint, readTrustedHeadFile } from '../audit/trusted-head.js';
import type { AuditCheckpoint, AuditDecision, AuditQuery, AuditRecord, AuditStore, ChainProblem } from '../audit/types.js';
import type { AuditToolConfig } from '../config.js';
import { importPublicKeys } from '../keys/signing-key.js';
import { errorSummary } from '../logger.js';
import { AUDITOR_TOKEN_ENV, connectBroker, EXIT_NOT_AUDITOR, EXIT_UNAVAILABLE, openRemoteRecords, readTrustedHeadJws, remoteVerification, type AuditBroker } from './audit-remote.js';
import { CliExit, readAuditToolConfig, type CliIo } from './io.js';
import { readKeySet } from './keys.js';

const FORMATS: readonly ExportFormat[] = ['table', 'json', 'ndjson', 'csv'];
/** Records printed by default: everything for the export formats, a screenful for the others. */
const DEFAULT_LIMIT: Record<ExportFormat, number> = { table: 100, json: 100, ndjson: Infinity, csv: Infinity };
const PROGRESS_INTERVAL_MS = 250;

const CONFIG_HELP = 'config file (default: $BROKER_CONFIG, else ./broker.yaml, else built-in development defaults); only audit and providers.jwt are read';
const URL_HELP = "read the log through this broker's audit API instead of the store (https://, or http:// to localhost)";
const TOKEN_FILE_HELP = `with --url: a file holding the auditor token (default: $${AUDITOR_TOKEN_ENV})`;
const REMOTE_HELP = `Over HTTP (--url), the auditor token comes from --token-file or from
$${AUDITOR_TOKEN_ENV}, never from an option's value (shell history and
process lists would show it). No config is read then.`;
const KEY_NEEDED = '; it is needed to check and sign checkpoints';

/** What each chain problem means, in plain words (see ChainProblem in src/audit/types.ts). */
export const CHAIN_PROBLEM_TEXT: Record<ChainProblem, string> = {
  seq_gap: 'its sequence number does not follow the previous record: a record was deleted or moved',
  prev_hash_mismatch: "it does not link to the previous record's hash: a record was deleted, reordered or forged",
  hash_mismatch: 'its content no longer matches its hash: a field was changed',
  unreadable: 'the stored row cannot be read as a record: a column was corrupted',
  claim_index_mismatch: 'the query indexes (claim rows, hour ranges) disagree with the record: queries by claim or time would miss it',
  checkpoint_mismatch: 'its hash differs from the one a signed checkpoint vouches for: the chain was rewritten from here on',
  truncated: 'the chain ends before the newest signed checkpoint: records at the end were deleted',
  bad_checkpoint: "a stored checkpoint's signature does not verify with the broker's key: it was forged or altered",
  unexpected_record: 'it sits at or before the start of the chain, where records were pruned: it was inserted afterwards',
  missing_checkpoint: 'a signed checkpoint links to the checkpoint at this seq, which the store no longer holds: checkpoints were deleted',
  unlinked_checkpoint: 'a checkpoint without a link to the previous one was signed after checkpoints were chained: it does not belong to this log',
  rolled_back: 'the store does not hold the trusted head checkpoint at this seq: the log was rolled back to an older state',
};

interface QueryOptions {
  since?: string;
  until?: string;
  decision?: AuditDecision;
  policy?: string;
  issuer?: string;
  subject?: string;
  credentialId?: string;
  auditMatch?: string;
  claim?: string[];
  limit?: string;
  format: ExportFormat;
  config?: string;
  url?: string;
  tokenFile?: string;
}

interface VerifyOptions {
  json?: boolean;
  jwks?: string;
  trustedHead?: string;
  config?: string;
  url?: string;
  tokenFile?: string;
}

/** `oidc-broker audit query|verify|prune` (README.md#cli), against the configured audit store. */
export function registerAuditCommands(program: Command, io: CliIo): void {
  const audit = program.command('audit').description("Query, verify and prune the audit log named by audit.url in the config, or query and verify it through a broker's audit API (--url).");

  audit
    .command('query')
    .description('Print the audit records that match every given filter, oldest first.')
    .option('--since <time>', 'records at or after this time: a duration back from now (90m, 24h, 7d), RFC 3339, or YYYY-MM-DD for midnight UTC')
    .option('--until <time>', 'records before this time (same forms as --since)')
    .addOption(new Option('--decision <decision>', 'only this decision').choices(AUDIT_DECISIONS))
    .option('--policy <name>', 'exact policy name')
    .option('--issuer <name>', 'exact issuer config name (e.g. github)')
    .option('--subject <sub>', 'exact verified subject')
    .option('--credential-id <id>', 'exact credential id (AccessKeyId, sha256:<hex>, or jti)')
    .option('--audit-match <policy>', 'records on which this audit-mode deny policy matched (would have denied)')
    .option('--claim <name=value>', "verified claim 'name' has this string form; repeatable, all must hold", (value: string, all: string[] | undefined) => [...(all ?? []), value])
    .option('--limit <n>', "print at most n records, or 'all' (default: 100 for table and json, all for ndjson and csv)")
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--url <broker>', URL_HELP)
    .option('--token-file <file>', TOKEN_FILE_HELP)
    .addHelpText(
      'after',
      `
Formats:
  table   time, decision, policy, subject, credential id and reason; cut to the terminal's width
  json    one JSON array of records, as GET /v1/audit/events returns them
  ndjson  one JSON record per line
  csv     RFC 4180 with a header row; cells starting with = + - @ tab or CR get a leading '
          (spreadsheet formula injection); the claims column keeps the exact claim set as JSON

Output is streamed. When stdout is not a terminal but stderr is, a count of the
records written is shown on stderr. When --limit stops the output while more
records match, stderr says so.

${REMOTE_HELP}

Exit codes: 0 done; 1 bad arguments, config or store error (a store failure
mid-way leaves the output incomplete); with --url also ${EXIT_NOT_AUDITOR} the broker refused
the auditor token (401, 403) and ${EXIT_UNAVAILABLE} the broker cannot answer now (unreachable,
429, 5xx); the broker's error code is on stderr.

Examples:
  oidc-broker audit query --decision denied --since 2026-11-01
  oidc-broker audit query --url https://broker.example.com --token-file auditor.token --since 24h --decision denied
  oidc-broker audit query --claim repository=acme/api --format csv > audit.csv
  oidc-broker audit query --audit-match deny-github-self-hosted-runners --since 2026-11-01`,
    )
    .action(async (options: QueryOptions) => runQuery(options, io));

  audit
    .command('verify')
    .description("Verify the audit log's hash chain and signed checkpoints, and print a summary.")
    .option('--json', 'print the result as JSON (the body of GET /v1/audit/verify)')
    .option('--jwks <file>', "verify checkpoints with the public keys in this JWKS file (such as 'oidc-broker keys list --jwks --include-retired') instead of the signing key file")
    .option('--trusted-head <file-or-jws>', "a checkpoint known to be genuine: the broker's audit.head_file, a file holding a checkpoint JWS, or the JWS itself (from an 'audit checkpoint' log line or an earlier verify)")
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--url <broker>', URL_HELP)
    .option('--token-file <file>', TOKEN_FILE_HELP)
    .addHelpText(
      'after',
      `
Checkpoint signatures are checked with every key in providers.jwt.signing_key_file
(active, published and retired; read only, it is never created), or with
--jwks. The broker's /.well-known/jwks.json lacks retired keys: for a JWKS
that verifies checkpoints they signed, use 'oidc-broker keys list --jwks
--include-retired'.

Without --trusted-head, a log rolled back to an older signed state (records
and the checkpoints after some point deleted, the rest renumbered) verifies.
With it, the store must still hold that checkpoint, else the problem is
rolled_back. Keep the newest checkpoint JWS this command prints as the
trusted head for the next run (docs/audit.md, "Trusted head").

With --url, the broker verifies its log with its own keys (GET
/v1/audit/verify); --trusted-head is sent to it, --jwks does not apply.
${REMOTE_HELP}

Exit codes: 0 the log verifies; 2 the chain is broken or rolled back (the
first broken record and the problem are printed); 1 error (config, keys,
store, a trusted head that is not a checkpoint the keys verify); with --url
also ${EXIT_NOT_AUDITOR} the auditor token was refused and ${EXIT_UNAVAILABLE} the broker cannot answer now.

Examples:
  oidc-broker audit verify --trusted-head /app/data/audit-head.jws
  OIDC_BROKER_AUDITOR_TOKEN=$(cat auditor.token) oidc-broker audit verify --url https://broker.example.com
  oidc-broker audit verify --json --trusted-head eyJhbGciOiJFUzI1NiIs...`,
    )
    .action(async (options: VerifyOptions) => runVerify(options, io));

  audit
    .command('prune')
    .description('Delete the records older than a date, leaving a signed prune checkpoint the chain is verified from.')
    .requiredOption('--before <date>', 'delete records before this time: a duration back from now (400d), RFC 3339, or YYYY-MM-DD for midnight UTC')
    .option('--yes', 'really delete; without it, only print what would be deleted')
    .option('-c, --config <file>', CONFIG_HELP)
    .addHelpText(
      'after',
      `
Records are deleted oldest first, up to the first record that is not older
than --before, so what remains is a contiguous chain. The log is verified first
and nothing is pruned if it does not verify: a prune checkpoint must never
vouch for a tampered record. Needs the signing key file (read only).

Exit codes: 0 pruned, nothing to prune, or dry run; 2 the log does not verify
(nothing deleted); 1 error (bad date, config, key, store).`,
    )
    .action(async (options: { before: string; yes?: boolean; config?: string }) => runPrune(options, io));
}

async function runQuery(options: QueryOptions, io: CliIo): Promise<void> {
  const limit = parseLimit(options.limit, options.format);
  const query = toQuery(options, limit);
  const broker = await remoteBroker(options, io);
  if (broker !== null) {
    await printRecords(await openRemoteRecords(broker, query), query, limit, options.format, io);
    return;
  }
  const store = await openStore(await readAuditToolConfig(options.config));
  try {
    await printRecords(queryAll(store, query), query, limit, options.format, io);
  } finally {
    await store.close();
  }
}

/** The broker of --url with its auditor token, or null for the database mode; --config and --token-file each belong to one mode. */
async function remoteBroker(options: { url?: string; tokenFile?: string; config?: string }, io: CliIo): Promise<AuditBroker | null> {
  if (options.url === undefined) {
    if (options.tokenFile !== undefined) throw new CliExit(1, '--token-file applies only with --url');
    return null;
  }
  if (options.config !== undefined) throw new CliExit(1, '--url and --config exclude each other: over HTTP the broker reads its own config');
  return connectBroker(options.url, options.tokenFile, io);
}

/** Writes `records` to stdout in `format`, up to `limit`, with the progress count and the "more match" note on stderr. */
async function printRecords(records: AsyncIterable<AuditRecord>, query: AuditQuery, limit: number, format: ExportFormat, io: CliIo): Promise<void> {
  const progress = startProgress(io);
  // A closed pipe (`| head`) is the reader's choice: stop quietly, never crash on EPIPE.
  const ignore = () => {};
  io.stdout.on('error', ignore);
  try {
    const formatter = createFormatter(format, {
      claimColumns: Object.keys(query.claims ?? {}),
      width: io.stdout.isTTY === true ? io.stdout.columns : undefined,
      terminal: io.stdout.isTTY === true,
    });
    let result;
    try {
      result = await writeRecords(io.stdout, records, formatter, { limit, onProgress: progress.update });
    } catch (err) {
      progress.stop();
      const cause = err instanceof CliExit ? err.message : describeError(err);
      throw new CliExit(err instanceof CliExit ? err.exitCode : 1, `reading the audit log failed after ${progress.count()} records; the output is incomplete: ${cause}`);
    }
    progress.stop(result.count);
    if (result.more) {
      io.stderr.write(`oidc-broker: showing the first ${result.count} matching records; more match (use --limit N or --limit all)\n`);
    }
  } finally {
    progress.stop();
    io.stdout.off('error', ignore);
  }
}

async function runVerify(options: VerifyOptions, io: CliIo): Promise<void> {
  const broker = await remoteBroker(options, io);
  let result: AuditVerification;
  let where: string;
  if (broker !== null) {
    if (options.jwks !== undefined) throw new CliExit(1, '--jwks does not apply with --url: the broker verifies with its own keys');
    result = await remoteVerification(broker, options.trustedHead === undefined ? undefined : await readTrustedHeadJws(options.trustedHead));
    where = broker.base.href;
  } else {
    const config = await readAuditToolConfig(options.config);
    const keys = options.jwks !== undefined ? await readJwksKeys(options.jwks) : (await readKeySet(config, KEY_NEEDED)).verificationKeys;
    const trustedHead = options.trustedHead === undefined ? undefined : await readTrustedHead(options.trustedHead, keys);
    const store = await openStore(config);
    try {
      result = await verifyAuditLog(store, keys, { trustedHead });
    } catch (err) {
      throw new CliExit(1, `cannot read the audit log: ${describeError(err)}`);
    } finally {
      await store.close();
    }
    where = describeStoreUrl(config.audit.url);
  }
  io.stdout.write(options.json === true ? `${JSON.stringify(result)}\n` : formatVerification(result, where));
  if (!result.ok) throw new CliExit(2);
}

/** The readable summary `audit verify` prints. */
export function formatVerification(result: AuditVerification, where: string): string {
  const lines: string[] = [];
  const range = result.events === 0 ? 'none' : `seq ${result.first_seq} to ${result.last_seq}`;
  const pruned = result.first_seq > 1 ? `; records before seq ${result.first_seq} were pruned` : '';
  const latest = result.latest_checkpoint === null ? 'none' : `${result.checkpoints}, the latest vouches for seq ${result.latest_checkpoint.seq} (signed ${result.latest_checkpoint.time})`;
  if (result.ok) {
    lines.push(`audit log OK: ${where}`);
    lines.push(`  events verified:  ${result.events} (${range}${pruned})`);
    lines.push(`  head:             ${result.head}`);
  } else {
    const { broken } = result;
    lines.push(`audit log BROKEN: ${where}`);
    lines.push(`  broken at:        seq ${broken.seq}${broken.id === null ? '' : ` (id ${broken.id})`}`);
    lines.push(`  problem:          ${broken.problem}: ${CHAIN_PROBLEM_TEXT[broken.problem]}`);
    lines.push(`  verified before:  ${result.events} events (${range}${pruned})`);
    lines.push(`  last good hash:   ${result.head}`);
  }
  lines.push(`  checkpoints:      ${latest}`);
  if (result.latest_checkpoint !== null) lines.push(`  newest JWS:       ${result.latest_checkpoint.jws}`, '  (keep it: --trusted-head for the next verify)');
  return `${lines.join('\n')}\n`;
}

/**
 * The checkpoint `--trusted-head` names: the JWS itself, or a file holding
 * one (the broker's head file). It must verify with `keys`: a trusted head
 * nobody signed would prove nothing.
 */
async function readTrustedHead(value: string, keys: ReadonlyMap<string, CryptoKey | Uint8Array>): Promise<AuditCheckpoint> {
  let reading = await readAuthenticCheckpoint(value, keys);
  if (!reading.authentic && reading.claimed === null) {
    let head: AuditCheckpoint | null;
    try {
      head = await readTrustedHeadFile(value);
    } catch (err) {
      throw new CliExit(1, `--trusted-head: ${describeError(err)}`);
    }
    if (head === null) throw new CliExit(1, `--trusted-head: '${value}' is neither a checkpoint JWS nor an existing file`);
    reading = await readAuthenticCheckpoint(head.jws, keys);
  }
  if (!reading.authentic) throw new CliExit(1, `--trusted-head: the checkpoint (seq ${reading.claimed?.seq}, kid ${reading.claimed?.kid}) does not verify with the broker's keys`);
  return reading.checkpoint;
}

async function runPrune(options: { before: string; yes?: boolean; config?: string }, io: CliIo): Promise<void> {
  const before = new Date(parseTimeArg(options.before, '--before'));
  const config = await readAuditToolConfig(options.config);
  const keys = await readKeySet(config, KEY_NEEDED);
  const store = await openStore(config);
  try {
    const check = await verifyAuditLog(store, keys.verificationKeys).catch((err: unknown) => {
      throw new CliExit(1, `cannot read the audit log: ${describeError(err)}`);
    });
    if (!check.ok) {
      throw new CliExit(
        2,
        `the audit log does not verify (${check.broken.problem} at seq ${check.broken.seq}); nothing was pruned. Run 'oidc-broker audit verify' and investigate first.`,
      );
    }
    const cutoff = before.toISOString();
    const boundary = await store.pruneBoundary(cutoff);
    if (boundary === null) {
      io.stdout.write(`nothing to prune: the oldest record is not older than ${cutoff}\n`);
      return;
    }
    const first = await recordAfter(store, 0);
    const last = await recordAfter(store, boundary.seq - 1);
    const kept = await recordAfter(store, boundary.seq);
    const firstSeq = first?.seq ?? boundary.seq;
    const count = boundary.seq - firstSeq + 1;
    const span = `seq ${firstSeq} to ${boundary.seq}, ${first?.time ?? '?'} to ${last?.time ?? '?'}`;
    const after = kept === null ? 'no record would be left; new records continue the chain from the prune checkpoint' : `the log would then start at seq ${kept.seq} (${kept.time})`;
    if (options.yes !== true) {
      io.stdout.write(
        `dry run: would delete ${count} record${count === 1 ? '' : 's'} older than ${cutoff} (${span}).\n` +
          `${after[0]!.toUpperCase()}${after.slice(1)}, anchored by a signed prune checkpoint for seq ${boundary.seq}.\n` +
          'Nothing was deleted; run again with --yes to delete them.\n',
      );
      return;
    }
    let result;
    try {
      result = await pruneAuditLog(store, keys.active, before);
    } catch (err) {
      throw new CliExit(1, `pruning failed, nothing was deleted: ${describeError(err)}`);
    }
    if (result === null) {
      io.stdout.write(`nothing to prune: the oldest record is not older than ${cutoff}\n`);
      return;
    }
    io.stdout.write(
      `deleted ${result.deleted} record${result.deleted === 1 ? '' : 's'} older than ${cutoff} (seq ${result.anchor.seq - result.deleted + 1} to ${result.anchor.seq}).\n` +
        `anchor: seq ${result.anchor.seq}, hash ${result.anchor.hash} (signed prune checkpoint, kid ${result.anchor.kid}).\n`,
    );
  } finally {
    await store.close();
  }
}

/** The record right after `seq` (any filter-free record), or null. */
async function recordAfter(store: AuditStore, seq: number): Promise<AuditRecord | null> {
  return (await store.query({ limit: 1, ...(seq > 0 ? { cursor: toCursor(seq) } : {}) })).events[0] ?? null;
}

function parseLimit(value: string | undefined, format: ExportFormat): number {
  if (value === undefined) return DEFAULT_LIMIT[format];
  if (value === 'all') return Infinity;
  if (!/^[1-9][0-9]{0,15}$/.test(value) || !Number.isSafeInteger(Number(value))) throw new CliExit(1, `--limit: expected a positive integer or 'all', got '${value}'`);
  return Number(value);
}

/** The store query for the options; pages are as large as useful (one more than the limit, to tell whether more match). */
function toQuery(options: QueryOptions, limit: number): AuditQuery {
  const claims = Object.create(null) as Record<string, string>;
  for (const pair of options.claim ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CliExit(1, `--claim: expected name=value, got '${pair}'`);
    const name = pair.slice(0, at);
    if (Object.hasOwn(claims, name)) throw new CliExit(1, `--claim: claim '${name}' is given twice`);
    claims[name] = pair.slice(at + 1);
  }
  const text = (value: string | undefined, flag: string): string | undefined => {
    if (value === '') throw new CliExit(1, `${flag}: must not be empty`);
    return value;
  };
  const query: AuditQuery = {
    since: options.since === undefined ? undefined : parseTimeArg(options.since, '--since'),
    until: options.until === undefined ? undefined : parseTimeArg(options.until, '--until'),
    decision: options.decision,
    policy: text(options.policy, '--policy'),
    issuer: text(options.issuer, '--issuer'),
    subject: text(options.subject, '--subject'),
    credentialId: text(options.credentialId, '--credential-id'),
    auditMatch: text(options.auditMatch, '--audit-match'),
    claims,
    limit: Math.min(MAX_QUERY_LIMIT, limit === Infinity ? MAX_QUERY_LIMIT : limit + 1),
  };
  try {
    compileAuditQuery(query);
  } catch (err) {
    throw new CliExit(1, describeError(err));
  }
  return query;
}

const DURATION_UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A time argument as toISOString() text: a duration back from now (`90m`,
 * `24h`, `7d`), an RFC 3339 time, or YYYY-MM-DD for midnight UTC.
 */
export function parseTimeArg(value: string, flag: string): string {
  const duration = /^(\d{1,5})([mhd])$/.exec(value);
  if (duration !== null) return new Date(Date.now() - Number(duration[1]) * DURATION_UNIT_MS[duration[2] as keyof typeof DURATION_UNIT_MS]).toISOString();
  const text = /^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value;
  try {
    return toTimeBound(text, flag);
  } catch {
    throw new CliExit(1, `${flag}: expected a duration back from now such as 24h or 7d (m, h, d), an RFC 3339 time such as 2026-11-25T19:00:00Z or a date such as 2026-11-25, got '${value}'`);
  }
}

/** Opens audit.url; a SQLite file must exist already (opening would create an empty log). */
export async function openStore(config: AuditToolConfig): Promise<AuditStore> {
  const url = config.audit.url;
  if (url.startsWith('sqlite:') && !existsSync(url.slice('sqlite:'.length))) {
    throw new CliExit(1, `the audit log ${url.slice('sqlite:'.length)} does not exist (audit.url of ${config.source})`);
  }
  try {
    return await openAuditStore(url);
  } catch (err) {
    throw new CliExit(1, `cannot open the audit log ${describeStoreUrl(url)}: ${describeError(err)}`);
  }
}

async function readJwksKeys(file: string): Promise<Map<string, CryptoKey | Uint8Array>> {
  let keys: unknown;
  try {
    keys = (JSON.parse(await readFile(file, 'utf8')) as { keys?: unknown }).keys;
  } catch (err) {
    throw new CliExit(1, `--jwks: cannot read a JSON Web Key Set from ${file} (${err instanceof SyntaxError ? 'not JSON' : ((err as NodeJS.ErrnoException).code ?? 'error')})`);
  }
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => typeof k === 'object' && k !== null)) {
    throw new CliExit(1, `--jwks: ${file} must be a JWKS: {"keys": [ ...at least one key... ]}`);
  }
  // Public members only: a private key in the file is never imported.
  const publicKeys = (keys as JWK[]).map((k) => Object.fromEntries(Object.entries(k).filter(([name]) => ['kty', 'crv', 'x', 'y', 'kid', 'alg'].includes(name))) as JWK);
  if (!publicKeys.some((k) => typeof k.kid === 'string')) throw new CliExit(1, `--jwks: no key in ${file} has a kid; checkpoints name their key by kid`);
  try {
    return await importPublicKeys(publicKeys);
  } catch (err) {
    throw new CliExit(1, `--jwks: ${file} holds a key that is not an ES256 public key: ${describeError(err)}`);
  }
}

/** The audit URL without its password, wherever it appears (as the open failure's cause has it: see urlSecrets). */
export function describeStoreUrl(url: string): string {
  if (url.startsWith('sqlite:')) return url;
  let text: string;
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    text = parsed.toString();
  } catch {
    return `${url.split(':')[0]}:...`;
  }
  const [, ...passwords] = urlSecrets(url);
  for (const password of passwords) if (password !== '') text = text.replaceAll(password, '***');
  return text;
}

/**
 * An error's message, then each of its causes with its code (a SQLSTATE,
 * SQLITE_*, errno), as the server's log has them (errorSummary). A store's
 * open failure holds a driver error only as a cause already stripped of the
 * URL and its password (see src/audit/core/errors.ts).
 */
function describeError(err: unknown): string {
  const summary = errorSummary(err);
  const causes: string[] = [];
  for (let cause = summary?.cause; isSummary(cause); cause = cause.cause) {
    const { code, message } = cause;
    causes.push(typeof code === 'string' || typeof code === 'number' ? `${code}: ${String(message)}` : String(message));
  }
  const message = String(summary?.message ?? summary?.value);
  return causes.length === 0 ? message : `${message} (${causes.join('; caused by ')})`;
}

function isSummary(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

interface Progress {
  update: (count: number) => void;
  count: () => number;
  /** Stops the indicator; with a final count, prints it (only when the indicator was on). */
  stop: (finalCount?: number) => void;
}

/**
 * A running count of records written, on stderr every 250 ms, only when
 * stderr is a terminal and stdout is not (output redirected to a file or a
 * pipe): on one terminal it would mix with the records.
 */
function startProgress(io: CliIo): Progress {
  let count = 0;
  const enabled = io.stderr.isTTY === true && io.stdout.isTTY !== true;
  if (!enabled) return { update: (n) => (count = n), count: () => count, stop: () => {} };
  let shown = -1;
  const show = () => {
    if (count === shown) return;
    shown = count;
    io.stderr.write(`\r${count} records written`);
  };
  let timer: NodeJS.Timeout | null = setInterval(show, PROGRESS_INTERVAL_MS);
  return {
    update: (n) => (count = n),
    count: () => count,
    stop: (finalCount) => {
      if (timer === null) return;
      clearInterval(timer);
      timer = null;
      if (finalCount !== undefined) {
        count = finalCount;
        io.stderr.write(`\r\x1b[K${count} records written\n`);
      } else if (shown >= 0) {
        io.stderr.write('\r\x1b[K');
      }
    },
  };
}
