import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { decodeJwt } from 'jose';
import { queryAll } from '../audit/query.js';
import { compileContext, type BrokerConfig } from '../config.js';
import { formatPolicyIssue } from '../policy/issues.js';
import { compilePolicies } from '../policy/compile.js';
import { lintPolicies } from '../policy/lint.js';
import { createImpactTally, isNewlyAllowed, type ImpactRow } from '../policy/impact.js';
import { evaluateOffline, offlineToken, renderExplainText, toExplainOutput } from '../policy/explain.js';
import { loadPolicyTestFiles, readPolicyFile } from '../policy/load.js';
import { runPolicyTests, type TestCaseResult } from '../policy/test-cases.js';
import type { CompileContext, PolicyFile, PolicyIssue, PolicySet } from '../policy/types.js';
import { suggest } from '../yaml/fields.js';
import { openStore, parseTimeArg } from './audit.js';
import { CliExit, readConfig, type CliIo } from './io.js';
import { readPolicyDir, readPolicyPaths, toPolicyTestTargets, type PolicyTestTarget } from './policy-paths.js';
import { POLICY_TEST_FORMATS, resultLine, toJsonReport, toJunitReport, type PolicyTestFormat } from './policy-test-report.js';
import { glyphsFor } from './style.js';

const CONFIG_HELP = 'config file naming the issuers and providers policies may use (default: $BROKER_CONFIG, else ./broker.yaml, else built-in development defaults)';
const DIR_HELP = 'policy directory (default: the configured policies.dir)';
const PATHS_HELP = 'policy directories and policy files (default: the configured policies.dir)';
const TEST_PATHS_HELP = 'policy directories, policy test files, or policy files whose test file to run (default: the configured policies.dir)';
/** `policy explain`'s exit code when the policy would deny, so scripts can branch on it. */
export const EXIT_DENY = 3;
/** `policy impact`'s exit code when the change newly allows something (same value: "look before this ships"). */
export const EXIT_NEWLY_ALLOWED = 3;
/** What `policy impact` replays without `--since`. */
const DEFAULT_IMPACT_DAYS = 30;
/** Records read per page of the audit log. */
const IMPACT_PAGE = 1000;
export const UNVERIFIED_NOTE = 'token not verified: offline explain shows what the policy would decide';

interface ExplainOptions {
  policy: string;
  claims?: string;
  token?: string;
  issuer?: string;
  json?: boolean;
  config?: string;
}

export function registerPolicyCommands(program: Command, io: CliIo): void {
  const policy = program.command('policy').description('Work with trust policies offline.');
  policy
    .command('validate')
    .argument('[paths...]', PATHS_HELP)
    .option('-c, --config <file>', CONFIG_HELP)
    .option('--strict', 'treat every warning (lint rules, allow_any_tenant) as an error: exit 1 if there is any')
    .description('Compile every policy of the directories and files given with the server\'s compiler and lint it; exit 1 with file:line errors.')
    .addHelpText(
      'after',
      `
Errors (the broker would not load the directory) go to stderr as
file:line: key: message (hint: ...), and the exit code is 1. A directory
that loads is linted: warnings go to stderr, one per line, as
warning: file:line: [rule] key: message (hint: safer form):
the lint rules name-without-id, legacy-sub-only, trailing-wildcard,
double-star-ref, unanchored-regex, overlapping-sibling and
privileged-triggers (docs/policies/reference.md, "Lint"), and policies that
trust every tenant (allow_any_tenant). Warnings never stop the broker from
loading the directory.

A policy file given on its own is compiled and linted without the rest of
its directory (so names used twice across files, and overlaps with policies
in other files, are only seen when the directory is given).

Exit codes: 0 the directory loads (warnings or not, without --strict);
1 it does not, or --strict and there is a warning, or a path is missing or
not a policy directory or file.

Examples:
  oidc-broker policy validate -c broker.yaml policies/
  oidc-broker policy validate -c broker.yaml policies/api-deploy-prod.yaml policies/deny-forks.yaml
  oidc-broker policy validate --strict -c broker.yaml policies/     # in CI: no warning either
  oidc-broker policy validate policies/ 2>&1 | grep -F '[name-without-id]'`,
    )
    .action(async (paths: string[], options: { config?: string; strict?: boolean }) => {
      const config = await readConfig(options.config);
      const files = await readPolicyPaths(paths.length > 0 ? paths : [config.policies.dir]);
      const ctx = compileContext(config);
      const result = compilePolicies(files, ctx);
      const fileCount = `${files.length} file${files.length === 1 ? '' : 's'}`;
      if (!result.ok) {
        io.stderr.write(`${result.issues.map(formatPolicyIssue).join('\n')}\n`);
        io.stderr.write(`${result.issues.length} problem${result.issues.length === 1 ? '' : 's'} in ${fileCount}\n`);
        throw new CliExit(1);
      }
      const warnings = [...result.warnings, ...lintPolicies(files, result.set, ctx)];
      writeWarnings(warnings, io);
      const warned = warnings.length === 0 ? '' : `, ${warnings.length} warning${warnings.length === 1 ? '' : 's'}`;
      if (options.strict === true && warnings.length > 0) {
        throw new CliExit(1, `${warnings.length} warning${warnings.length === 1 ? '' : 's'} in ${fileCount}, which --strict refuses`);
      }
      io.stdout.write(`ok: ${result.set.size} polic${result.set.size === 1 ? 'y' : 'ies'} in ${fileCount}${warned}\n`);
    });

  policy
    .command('test')
    .argument('[paths...]', TEST_PATHS_HELP)
    .option('-c, --config <file>', CONFIG_HELP)
    .addOption(new Option('--format <format>', 'text: one PASS or FAIL line per case; json: one JSON report; junit: JUnit XML for CI test reports').choices(POLICY_TEST_FORMATS).default('text'))
    .description('Run policy test files (*.test.yaml) against the policies of their directory; one PASS or FAIL line per case.')
    .addHelpText(
      'after',
      `
A test file holds a list of cases, each a claim set, a policy name and the
expected decision, evaluated offline exactly as the broker evaluates a
verified token (the named policy, then every deny policy of the issuer):

  tests:
    - name: main may deploy
      policy: api-deploy-prod
      issuer: github              # optional; default: the policy's issuer
      audience: https://broker.example.com
                                  # optional; default: the claims' aud, else
                                  # the issuer's first configured audience
      claims: {repository: acme/api, ref: refs/heads/main}
      expect: allow               # allow | deny

Paths: a directory runs all its test files; a test file runs against the
policies of its directory; a policy file (deploy.yaml) runs its own test
file beside it (deploy.test.yaml). Several paths may be given.

The policies are compiled with the server's compiler and the config's issuers
and providers (-c). Problems in test files (unknown keys, missing fields, an
unknown policy or issuer) are printed as file:line errors on stderr, and are
in the json and junit reports too.

Formats (stdout): text (the default); json, one object with "summary",
"cases" and "problems"; junit, JUnit XML with one testsuite per test file,
one testcase per case (a failure with the reason) and each problem as an
error.

Exit codes: 0 every case passed; 1 a case failed, a test file is invalid, the
policies do not compile, a path is missing or not a policy file, or a
directory has no test cases (so a CI step pointed at the wrong directory
fails instead of passing vacuously), whatever the format.

Examples:
  oidc-broker policy test -c broker.yaml policies/
  oidc-broker policy test -c broker.yaml policies/api-deploy-prod.yaml
  oidc-broker policy test -c broker.yaml --format junit policies/ > policy-tests.xml`,
    )
    .action(async (paths: string[], options: { config?: string; format: PolicyTestFormat }) => runTests(paths, options, io));

  policy
    .command('explain')
    .argument('[dir]', DIR_HELP)
    .requiredOption('--policy <name>', 'the policy a request would name')
    .option('--claims <file>', "the token's claims as a JSON object ('-' reads stdin)")
    .option('--token <jwt>', "a token whose payload is decoded WITHOUT verification ('-' reads stdin)")
    .option('--issuer <name>', "config issuer name the token is from (default: with --token, the configured issuer whose URL is its iss; else the policy's issuer)")
    .option('--json', 'print the JSON object POST /v1/explain answers (explain_id is null)')
    .option('-c, --config <file>', CONFIG_HELP)
    .description('Show offline what a policy decides for a claim set or token, condition by condition.')
    .addHelpText(
      'after',
      `
Prints the decision, then every condition of the named policy and of each
deny policy of the issuer: key, operator, expected value, the token's value,
and whether it holds (✓/✗). Nothing is verified: signature, expiry and
issuer are not checked, so this shows what the policies would decide for a
valid token with these claims. Unlike POST /v1/explain, deny policies'
expected values are shown (you hold the policy files).

The audiences are the claims' aud; without one, the issuer's first configured
audience. A token none of whose audiences the issuer accepts would be refused
before any policy is evaluated, and is reported so.

Exit codes: 0 the policy would allow; ${EXIT_DENY} it would deny; 1 error (bad
arguments, config, policies that do not compile, unknown policy or issuer,
unreadable claims or token).

Examples:
  oidc-broker policy explain --policy api-deploy-prod --claims claims.json
  echo "$ID_TOKEN" | oidc-broker policy explain --policy api-deploy-prod --token - --json`,
    )
    .action(async (dir: string | undefined, options: ExplainOptions) => runExplain(dir, options, io));

  policy
    .command('impact')
    .requiredOption('--after <dir>', 'the proposed policy directory')
    .option('--before <dir>', 'the policy directory in force (default: the configured policies.dir)')
    .option('--since <time>', `replay records from then on: a duration such as 24h or 7d, an RFC 3339 time, or a date (default: ${DEFAULT_IMPACT_DAYS}d)`)
    .option('--json', 'one JSON line per change: {"subject", "issuer", "policy", "before", "after", "requests"}')
    .option('-c, --config <file>', `${CONFIG_HELP}; its audit.url is the log replayed`)
    .description('Replay the verified claim sets of the audit log against two policy sets and list every (subject, policy) whose decision changes.')
    .addHelpText(
      'after',
      `
Every issued, denied and explain record with a verified claim set (a token
refused before verification has none) is evaluated as the exchange
evaluates it (the named policy, the issuer's deny policies, whether the
claims fill the grant) under --before and under --after. Each (subject,
issuer, policy) whose decision differs is printed with the number of
recorded requests it covers, newly allowed first. "unknown_policy": the set
has no policy of that name. Both sets compile with the config's issuers and
providers (-c). The log holds no secret, and nothing is written to it.

Exit codes: 0 nothing becomes newly allowed; ${EXIT_NEWLY_ALLOWED} something does (so a
pull-request check can stop for review); 1 error (config, policies that do
not compile, the audit log unreadable).

Examples:
  oidc-broker policy impact --before policies/ --after proposed/policies/ --since 7d
  oidc-broker policy impact --after proposed/policies/ --json > impact.ndjson`,
    )
    .action(async (options: ImpactOptions) => runImpact(options, io));
}

interface ImpactOptions {
  before?: string;
  after: string;
  since?: string;
  json?: boolean;
  config?: string;
}

async function runImpact(options: ImpactOptions, io: CliIo): Promise<void> {
  const config = await readConfig(options.config);
  const ctx = compileContext(config);
  const before = await compileDir(options.before ?? config.policies.dir, ctx, io);
  const after = await compileDir(options.after, ctx, io);
  const since = impactSince(options.since);
  const store = await openStore(config);
  const tally = createImpactTally(before, after);
  const started = performance.now();
  try {
    for await (const record of queryAll(store, { since, limit: IMPACT_PAGE })) if (record.decision !== 'error') tally.add(record);
  } finally {
    await store.close();
  }
  const rows = tally.rows();
  if (options.json === true) {
    for (const row of rows) io.stdout.write(`${JSON.stringify(row)}\n`);
  } else {
    for (const row of rows) io.stdout.write(`${impactLine(row)}\n`);
    const newly = rows.filter(isNewlyAllowed);
    io.stdout.write(
      `${rows.length} change${rows.length === 1 ? '' : 's'} (${newly.length} newly allowed) over ${tally.replayed()} recorded request${tally.replayed() === 1 ? '' : 's'} since ${since}, ${Math.round(performance.now() - started)} ms\n`,
    );
  }
  if (rows.some(isNewlyAllowed)) throw new CliExit(EXIT_NEWLY_ALLOWED);
}

/** `NEWLY ALLOWED  subject  issuer/policy  before -> after  N requests` (or `changed`). */
function impactLine(row: ImpactRow): string {
  const mark = isNewlyAllowed(row) ? 'NEWLY ALLOWED' : 'changed';
  return `${mark}  ${row.subject}  ${row.issuer}/${row.policy}  ${row.before} -> ${row.after}  ${row.requests} request${row.requests === 1 ? '' : 's'}`;
}

/** --since (a duration back from now, a time or a date: parseTimeArg); default 30 days. */
function impactSince(value: string | undefined): string {
  return value === undefined ? new Date(Date.now() - DEFAULT_IMPACT_DAYS * 86_400_000).toISOString() : parseTimeArg(value, '--since');
}

async function runTests(paths: string[], options: { config?: string; format: PolicyTestFormat }, io: CliIo): Promise<void> {
  const config = await readConfig(options.config);
  const ctx = compileContext(config);
  const targets = await toPolicyTestTargets(paths.length > 0 ? paths : [config.policies.dir]);
  const results: TestCaseResult[] = [];
  const issues: PolicyIssue[] = [];
  const testFiles: string[] = [];
  for (const target of targets) {
    const set = await compileDir(target.dir, ctx, io);
    const files = await readTestFiles(target);
    if (files.length === 0) throw new CliExit(1, `no test cases found: ${target.dir} has no *.test.yaml files`);
    const run = runPolicyTests(files, set, ctx);
    results.push(...run.results);
    issues.push(...run.issues);
    testFiles.push(...files.map((f) => f.path));
  }

  if (issues.length > 0) io.stderr.write(`${issues.map(formatPolicyIssue).join('\n')}\n`);
  const passed = results.filter((r) => r.passed).length;
  const failed = results.length - passed;
  switch (options.format) {
    case 'json':
      io.stdout.write(toJsonReport({ results, issues, testFiles }));
      break;
    case 'junit':
      io.stdout.write(toJunitReport({ results, issues, testFiles }, formatPolicyIssue));
      break;
    case 'text': {
      const glyphs = glyphsFor(io);
      for (const result of results) io.stdout.write(`${resultLine(result, glyphs)}\n`);
      const parts = [`${passed} passed`, `${failed} failed`];
      if (issues.length > 0) parts.push(`${issues.length} problem${issues.length === 1 ? '' : 's'} in test files`);
      io.stdout.write(`${parts.join(', ')} (${testFiles.length} test file${testFiles.length === 1 ? '' : 's'})\n`);
      break;
    }
  }
  if (failed > 0 || issues.length > 0) throw new CliExit(1);
}

async function runExplain(dir: string | undefined, options: ExplainOptions, io: CliIo): Promise<void> {
  if ((options.claims === undefined) === (options.token === undefined)) throw new CliExit(1, 'give either --claims FILE.json or --token JWT');
  const config = await readConfig(options.config);
  const ctx = compileContext(config);
  const set = await compileDir(dir ?? config.policies.dir, ctx, io);
  const policy = set.byName.get(options.policy);
  if (policy === undefined) {
    const hint = suggest(options.policy, [...set.byName.keys()]);
    throw new CliExit(1, `no policy named '${options.policy}' in ${dir ?? config.policies.dir}${hint ? ` (${hint})` : ''}`);
  }

  const notes: string[] = [];
  let claims: Record<string, unknown>;
  let issuerName: string;
  if (options.token !== undefined) {
    claims = decodeToken(options.token === '-' ? (await readStdin(io)).trim() : options.token);
    notes.push(UNVERIFIED_NOTE);
    issuerName = options.issuer ?? issuerOfToken(config, claims, notes) ?? policy.issuer;
  } else {
    claims = parseClaims(options.claims === '-' ? await readStdin(io) : await readText(options.claims!, '--claims'), options.claims!);
    issuerName = options.issuer ?? policy.issuer;
  }
  if (!ctx.issuers.has(issuerName)) {
    const configured = [...ctx.issuers.keys()];
    throw new CliExit(1, `--issuer: '${issuerName}' is not a configured issuer (${suggest(issuerName, configured) ?? `configured: ${configured.join(', ') || 'none'}`})`);
  }
  const token = offlineToken(ctx, issuerName, claims);
  if (token.defaultAudience) notes.push(`no aud claim: evaluated with audience ${token.audiences[0] ?? '(none)'}, the first configured audience of issuer '${issuerName}'`);

  const output = toExplainOutput(policy.name, evaluateOffline(set, ctx, policy, token), null, 'owner');
  if (options.json) {
    for (const note of notes) io.stderr.write(`oidc-broker: note: ${note}\n`);
    io.stdout.write(`${JSON.stringify(output, null, 2)}\n`);
  } else {
    io.stdout.write(renderExplainText(output, notes, glyphsFor(io)));
  }
  if (output.decision !== 'allow') throw new CliExit(EXIT_DENY);
}

/** The configured issuer whose URL is the token's `iss`; a note when there is none (the broker would refuse the token). */
function issuerOfToken(config: BrokerConfig, claims: Record<string, unknown>, notes: string[]): string | undefined {
  const iss = claims.iss;
  const issuer = config.issuers.find((i) => i.issuer === iss);
  if (issuer) return issuer.name;
  notes.push(`the token's iss ${iss === undefined ? '(absent)' : JSON.stringify(iss)} is not a configured issuer: the broker would refuse it; evaluated as the policy's issuer`);
  return undefined;
}

function decodeToken(token: string): Record<string, unknown> {
  try {
    return decodeJwt(token);
  } catch (err) {
    throw new CliExit(1, `--token: not a JWT whose payload is a JSON object (${err instanceof Error ? err.message : String(err)})`);
  }
}

function parseClaims(text: string, source: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliExit(1, `--claims: ${source === '-' ? 'stdin' : source} is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CliExit(1, `--claims: ${source === '-' ? 'stdin' : source} must hold a JSON object of claims`);
  return value as Record<string, unknown>;
}

/** Compiles the directory with the server's compiler; on failure prints every issue and exits 1. */
async function compileDir(dir: string, ctx: CompileContext, io: CliIo): Promise<PolicySet> {
  const files = await readPolicyDir(dir);
  const result = compilePolicies(files, ctx);
  if (result.ok) {
    writeWarnings(result.warnings, io);
    return result.set;
  }
  io.stderr.write(`${result.issues.map(formatPolicyIssue).join('\n')}\n`);
  throw new CliExit(1, `the policies do not compile: ${result.issues.length} problem${result.issues.length === 1 ? '' : 's'} in ${files.length} file${files.length === 1 ? '' : 's'}`);
}

/** A set's warnings on stderr, one `warning: file:line: ...` line each, whatever the command (docs/policies/reference.md, "Tenant binding"). */
function writeWarnings(warnings: readonly PolicyIssue[], io: CliIo): void {
  for (const warning of warnings) io.stderr.write(`warning: ${formatPolicyIssue(warning)}\n`);
}

/**
 * The target's policy test files: all of its directory's (loadPolicyTestFiles,
 * in the loader's order), or the ones named. A file that cannot be read ends
 * the command with exit 1.
 */
async function readTestFiles(target: PolicyTestTarget): Promise<PolicyFile[]> {
  try {
    if (target.tests === 'all') return await loadPolicyTestFiles(target.dir);
    return target.tests.map((file) => readPolicyFile(file, 'Policy test file')).filter((file): file is PolicyFile => file !== null);
  } catch (err) {
    throw new CliExit(1, err instanceof Error ? err.message : String(err));
  }
}

async function readText(file: string, what: string): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new CliExit(1, `${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CliExit(1, `${what}: ${file} is not valid UTF-8`);
  }
}

async function readStdin(io: CliIo): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
