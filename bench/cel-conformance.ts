/**
 * CEL conformance and cost of policy `condition:` expressions.
 *
 *   node --import tsx bench/cel-conformance.ts [--suite NAME] [--verbose] [--iterations N]
 *
 * Part 1 runs the cel-spec "simple" conformance tests shipped by
 * @bufbuild/cel-spec against @bufbuild/cel, planned with the options policy
 * conditions use (`CONDITION_ENV_OPTIONS`: the strings extension less
 * `format`/`quote`, `matches()` on re2js), and prints per suite:
 *   pass   the expected value (type-exact: int vs uint vs double), or an error where one is expected
 *   fail   a wrong value, or a value where an error was expected (the dangerous kind for policies)
 *   error  an error where a value was expected (a policy condition would not match: fail closed)
 *   load   of the tests with an expected value, how many the broker's load checks
 *          (`checkExpression`: undeclared identifiers, unknown functions or call forms,
 *          message literals, non-literal matches() patterns, depth) would refuse at load
 * Tests needing protobuf messages and check-only tests (type deduction) are
 * excluded and counted separately: conditions have neither.
 *
 * Part 2 times compiling and evaluating a typical condition over GitHub-like claims.
 * Figures only; no thresholds (machines are noisy).
 */
import { getTestRegistry } from '@bufbuild/cel-spec/testdata/registry.js';
import { getConformanceSuite, type IncrementalTest, type IncrementalTestSuite } from '@bufbuild/cel-spec/testdata/tests.js';
import type { Value } from '@bufbuild/cel-spec/cel/expr/value_pb.js';
import type { Type } from '@bufbuild/cel-spec/cel/expr/checked_pb.js';
import { equals, isMessage, type Message } from '@bufbuild/protobuf';
import { isReflectMessage } from '@bufbuild/protobuf/reflect';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { celEnv, celUint, isCelError, isCelList, isCelMap, isCelType, isCelUint, parse, plan, type CelInput } from '@bufbuild/cel';
import { readFileSync } from 'node:fs';
import { checkExpression, compileCondition, CONDITION_ENV_OPTIONS } from '../src/policy/cel.js';

const args = process.argv.slice(2);
const argValue = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const ONLY_SUITE = argValue('--suite');
const VERBOSE = args.includes('--verbose');
const ITERATIONS = Number(argValue('--iterations') ?? 20_000);

/** The installed version (the packages' `exports` hide their package.json from resolution). */
const versionOf = (name: string): string => (JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string }).version;

const registry = getTestRegistry();
const WKT_TIME = new Set(['google.protobuf.Timestamp', 'google.protobuf.Duration']);

// ------------------------------------------------------------- canonical values
type Canon =
  | { t: 'null' }
  | { t: 'bool'; v: boolean }
  | { t: 'int' | 'uint' | 'timestamp' | 'duration'; v: bigint }
  | { t: 'double'; v: number }
  | { t: 'string' | 'bytes' | 'type' | 'unsupported' | 'unknown-js'; v: string }
  | { t: 'list'; v: Canon[] }
  | { t: 'map'; v: [Canon, Canon][] }
  | { t: 'msg'; v: Message };

function unpack(any: Parameters<typeof anyUnpack>[0]): Message {
  const message = anyUnpack(any, registry);
  if (!message) throw new Error(`cannot unpack ${any.typeUrl}`);
  return message;
}

function timeCanon(message: Message): Canon | undefined {
  const m = message as Message & { seconds?: bigint; nanos?: number };
  const v = BigInt(m.seconds ?? 0n) * 1_000_000_000n + BigInt(m.nanos ?? 0);
  if (message.$typeName === 'google.protobuf.Timestamp') return { t: 'timestamp', v };
  if (message.$typeName === 'google.protobuf.Duration') return { t: 'duration', v };
  return undefined;
}

function normType(name: string): string {
  const aliases: Record<string, string> = { null: 'null_type', timestamp: 'google.protobuf.Timestamp', duration: 'google.protobuf.Duration' };
  const base = name.replace(/[<(].*$/, '');
  return aliases[base] ?? base;
}

/** cel.expr.Value -> canonical tagged value. */
function fromSpec(value: Value): Canon {
  const k = value.kind;
  switch (k.case) {
    case 'nullValue':
      return { t: 'null' };
    case 'boolValue':
      return { t: 'bool', v: k.value };
    case 'int64Value':
      return { t: 'int', v: BigInt(k.value) };
    case 'uint64Value':
      return { t: 'uint', v: BigInt(k.value) };
    case 'doubleValue':
      return { t: 'double', v: k.value };
    case 'stringValue':
      return { t: 'string', v: k.value };
    case 'bytesValue':
      return { t: 'bytes', v: Buffer.from(k.value).toString('hex') };
    case 'typeValue':
      return { t: 'type', v: normType(k.value) };
    case 'enumValue':
      return { t: 'int', v: BigInt(k.value.value) };
    case 'listValue':
      return { t: 'list', v: k.value.values.map(fromSpec) };
    case 'mapValue':
      return { t: 'map', v: k.value.entries.map((e) => [fromSpec(e.key ?? missing()), fromSpec(e.value ?? missing())]) };
    case 'objectValue': {
      const message = unpack(k.value);
      return timeCanon(message) ?? { t: 'msg', v: message };
    }
    default:
      return { t: 'unsupported', v: String(k.case) };
  }
}

function missing(): never {
  throw new Error('malformed test value');
}

/** A @bufbuild/cel result -> canonical tagged value. */
function fromCel(value: unknown): Canon {
  if (value === null) return { t: 'null' };
  switch (typeof value) {
    case 'boolean':
      return { t: 'bool', v: value };
    case 'bigint':
      return { t: 'int', v: value };
    case 'number':
      return { t: 'double', v: value };
    case 'string':
      return { t: 'string', v: value };
    default:
  }
  if (isCelUint(value)) return { t: 'uint', v: value.value };
  if (value instanceof Uint8Array) return { t: 'bytes', v: Buffer.from(value).toString('hex') };
  if (isCelType(value)) return { t: 'type', v: normType(value.name) };
  if (isCelList(value)) return { t: 'list', v: [...value].map(fromCel) };
  if (isCelMap(value)) return { t: 'map', v: [...value.entries()].map(([a, b]) => [fromCel(a), fromCel(b)] as [Canon, Canon]) };
  const message = isReflectMessage(value) ? value.message : value;
  if (isMessage(message)) return timeCanon(message) ?? { t: 'msg', v: message };
  return { t: 'unknown-js', v: typeof value };
}

function same(expected: Canon, actual: Canon): boolean {
  if (expected.t !== actual.t) return false;
  if (expected.t === 'null') return true;
  const got = (actual as { v: unknown }).v;
  switch (expected.t) {
    case 'double':
      return (Number.isNaN(expected.v) && Number.isNaN(got)) || expected.v === got;
    case 'list': {
      const a = got as Canon[];
      return expected.v.length === a.length && expected.v.every((e, i) => same(e, a[i] ?? { t: 'null' }));
    }
    case 'map': {
      const a = got as [Canon, Canon][];
      return expected.v.length === a.length && expected.v.every(([ek, ev]) => a.some(([ak, av]) => same(ek, ak) && same(ev, av)));
    }
    case 'msg': {
      const a = got as Message;
      const schema = registry.getMessage(expected.v.$typeName);
      return schema !== undefined && a.$typeName === expected.v.$typeName && equals(schema, expected.v, a);
    }
    default:
      return expected.v === got;
  }
}

const show = (c: Canon): string => JSON.stringify(c, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));

// --------------------------------------------------------------- classification
function specKinds(value: Value | undefined, acc: Set<string>): Set<string> {
  if (!value) return acc;
  const k = value.kind;
  if (k.case === 'objectValue') acc.add(`obj:${k.value.typeUrl.split('/').pop() ?? ''}`);
  else if (k.case !== undefined) acc.add(k.case);
  if (k.case === 'listValue') for (const v of k.value.values) specKinds(v, acc);
  if (k.case === 'mapValue') {
    for (const e of k.value.entries) {
      specKinds(e.key, acc);
      specKinds(e.value, acc);
    }
  }
  return acc;
}

function typeNeedsProto(type: Type | undefined): boolean {
  if (!type) return false;
  const k = type.typeKind;
  switch (k.case) {
    case 'messageType':
      return !WKT_TIME.has(k.value);
    case 'wrapper':
    case 'abstractType':
      return true;
    case 'wellKnown':
      return Number(k.value) === 1; // ANY
    case 'listType':
      return typeNeedsProto(k.value.elemType);
    case 'mapType':
      return typeNeedsProto(k.value.keyType) || typeNeedsProto(k.value.valueType);
    default:
      return false;
  }
}

const PROTO_EXPR = /TestAllTypes|NestedMessage|NestedEnum|GlobalEnum|cel\.expr\.conformance|google\.protobuf\.(?!Timestamp\b|Duration\b)\w+|\b[A-Z][A-Za-z0-9_]*\s*\{/;

function classify(test: IncrementalTest): 'core' | 'proto' | 'checkOnly' {
  const o = test.original;
  if (o.checkOnly || o.resultMatcher.case === 'typedResult' || o.resultMatcher.case === 'unknown' || o.resultMatcher.case === 'anyUnknowns') return 'checkOnly';
  const kinds = new Set<string>();
  for (const binding of Object.values(o.bindings)) if (binding.kind.case === 'value') specKinds(binding.kind.value, kinds);
  if (o.resultMatcher.case === 'value') specKinds(o.resultMatcher.value, kinds);
  if ([...kinds].some((k) => k.startsWith('obj:') && !WKT_TIME.has(k.slice(4))) || kinds.has('enumValue')) return 'proto';
  for (const decl of o.typeEnv) {
    if (decl.declKind.case === 'function') return 'proto';
    if (decl.declKind.case === 'ident' && typeNeedsProto(decl.declKind.value.type)) return 'proto';
  }
  return PROTO_EXPR.test(o.expr) ? 'proto' : 'core';
}

// ----------------------------------------------------------------------- runner
function input(value: Value): unknown {
  const k = value.kind;
  switch (k.case) {
    case 'nullValue':
      return null;
    case 'boolValue':
    case 'stringValue':
    case 'doubleValue':
    case 'bytesValue':
      return k.value;
    case 'int64Value':
      return BigInt(k.value);
    case 'uint64Value':
      return celUint(BigInt(k.value));
    case 'enumValue':
      return BigInt(k.value.value);
    case 'listValue':
      return k.value.values.map(input);
    case 'mapValue':
      return new Map(k.value.entries.map((e) => [input(e.key ?? missing()), input(e.value ?? missing())]));
    case 'objectValue':
      return unpack(k.value);
    default:
      throw new Error(`unsupported binding ${String(k.case)}`);
  }
}

type Status = 'pass' | 'fail' | 'error' | 'skip';
interface Outcome {
  status: Status;
  /** The broker's load checks would refuse the expression (only computed for tests expecting a value). */
  refusedAtLoad?: string | undefined;
  detail?: string;
}

function runTest(test: IncrementalTest): Outcome {
  const o = test.original;
  const bindings: Record<string, unknown> = {};
  for (const [name, binding] of Object.entries(o.bindings)) {
    if (binding.kind.case !== 'value') return { status: 'skip', detail: `binding ${String(binding.kind.case)}` };
    try {
      bindings[name] = input(binding.kind.value);
    } catch (err) {
      return { status: 'skip', detail: (err as Error).message };
    }
  }
  const expectError = o.resultMatcher.case === 'evalError' || o.resultMatcher.case === 'anyEvalErrors';
  let result: unknown;
  let failure: string | undefined;
  let parsed: ReturnType<typeof parse> | undefined;
  try {
    parsed = parse(o.expr);
    const env = celEnv({ namespace: o.container || undefined, registry, ...CONDITION_ENV_OPTIONS });
    result = plan(env, parsed)(bindings as Record<string, CelInput>);
    if (isCelError(result)) failure = `eval: ${result.message}`;
  } catch (err) {
    failure = `${parsed === undefined ? 'parse' : 'plan/eval'}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
  }
  if (failure !== undefined) return expectError ? { status: 'pass' } : { status: 'error', detail: failure };
  const actual = fromCel(result);
  if (expectError) return { status: 'fail', detail: `expected an error, got ${show(actual)}` };

  const expected = o.resultMatcher.case === 'value' ? fromSpec(o.resultMatcher.value) : ({ t: 'bool', v: true } as Canon);
  const declared = [...new Set([...Object.keys(o.bindings), ...o.typeEnv.filter((d) => d.declKind.case === 'ident').map((d) => d.name)])];
  let refusedAtLoad: string | undefined;
  try {
    refusedAtLoad = parsed && checkExpression(parsed, declared).problem?.message;
  } catch (err) {
    refusedAtLoad = `check threw ${(err as Error).name}`;
  }
  if (same(expected, actual)) return { status: 'pass', refusedAtLoad };
  return { status: 'fail', refusedAtLoad, detail: `expected ${show(expected)} got ${show(actual)}` };
}

interface Counts {
  total: number;
  pass: number;
  fail: number;
  error: number;
  skip: number;
  load: number;
  proto: number;
  checkOnly: number;
}

/** The suites a claims condition relies on (no protobuf messages, no extensions beyond strings). */
const CORE_SUITES = ['basic', 'comparisons', 'conversions', 'fields', 'fp_math', 'integer_math', 'lists', 'logic', 'macros', 'parse', 'plumbing', 'string', 'timestamps'];

const zero = (): Counts => ({ total: 0, pass: 0, fail: 0, error: 0, skip: 0, load: 0, proto: 0, checkOnly: 0 });

function conformance(): void {
  const root: IncrementalTestSuite = getConformanceSuite();
  const rows: [string, Counts][] = [];
  const refusals = new Map<string, number>();
  for (const file of root.suites) {
    if (ONLY_SUITE !== undefined && file.name !== ONLY_SUITE) continue;
    const c = zero();
    const walk = (suite: IncrementalTestSuite, path: string[]): void => {
      for (const test of suite.tests) {
        const kind = classify(test);
        if (kind === 'checkOnly') {
          c.checkOnly++;
          continue;
        }
        if (kind === 'proto') {
          c.proto++;
          continue;
        }
        c.total++;
        const outcome = runTest(test);
        c[outcome.status]++;
        if (outcome.refusedAtLoad !== undefined) {
          c.load++;
          const reason = outcome.refusedAtLoad.replace(/'[^']*'/g, "'…'").replace(/\(.*\)/, '(…)');
          refusals.set(reason, (refusals.get(reason) ?? 0) + 1);
        }
        if (VERBOSE && (outcome.status !== 'pass' || outcome.refusedAtLoad !== undefined)) {
          const expr = test.original.expr.replace(/\s+/g, ' ');
          console.log(`  ${outcome.status.toUpperCase()} ${[...path, test.name].join('/')}: ${expr}  -- ${outcome.detail ?? ''}${outcome.refusedAtLoad ? ` [load: ${outcome.refusedAtLoad}]` : ''}`);
        }
      }
      for (const sub of suite.suites) walk(sub, [...path, sub.name]);
    };
    walk(file, [file.name]);
    rows.push([file.name, c]);
  }

  console.log(`\nCEL conformance: @bufbuild/cel ${versionOf('@bufbuild/cel')} against @bufbuild/cel-spec ${versionOf('@bufbuild/cel-spec')} (policy condition options)`);
  console.log(`${'suite'.padEnd(22)}${'tests'.padStart(6)}${'pass'.padStart(6)}${'fail'.padStart(6)}${'error'.padStart(7)}${'skip'.padStart(6)}${'load'.padStart(6)}   excluded: proto/check-only`);
  const total = zero();
  for (const [name, c] of rows) {
    for (const key of Object.keys(total) as (keyof Counts)[]) total[key] += c[key];
    console.log(`${name.padEnd(22)}${String(c.total).padStart(6)}${String(c.pass).padStart(6)}${String(c.fail).padStart(6)}${String(c.error).padStart(7)}${String(c.skip).padStart(6)}${String(c.load).padStart(6)}   ${c.proto}/${c.checkOnly}`);
  }
  const core = zero();
  for (const [name, c] of rows) if (CORE_SUITES.includes(name)) for (const key of Object.keys(core) as (keyof Counts)[]) core[key] += c[key];
  const corePct = core.total === 0 ? 0 : (100 * core.pass) / core.total;
  console.log(`${'CORE*'.padEnd(22)}${String(core.total).padStart(6)}${String(core.pass).padStart(6)}${String(core.fail).padStart(6)}${String(core.error).padStart(7)}${String(core.skip).padStart(6)}${String(core.load).padStart(6)}   ${core.proto}/${core.checkOnly}   pass ${corePct.toFixed(1)}%`);
  const pct = total.total === 0 ? 0 : (100 * total.pass) / total.total;
  console.log(`${'TOTAL'.padEnd(22)}${String(total.total).padStart(6)}${String(total.pass).padStart(6)}${String(total.fail).padStart(6)}${String(total.error).padStart(7)}${String(total.skip).padStart(6)}${String(total.load).padStart(6)}   ${total.proto}/${total.checkOnly}   pass ${pct.toFixed(1)}%`);
  console.log(`* CORE = ${CORE_SUITES.join(', ')}: the suites a claims condition relies on.`);
  console.log('Not enabled, so their tests error by design: the math, encoders, bindings and block extensions, optional values,');
  console.log("two-variable macros (macros2), and string_ext's format() and strings.quote().");
  if (refusals.size > 0) {
    console.log('load: tests with an expected value that the broker\'s load checks refuse, by reason:');
    for (const [reason, n] of [...refusals].sort((a, b) => b[1] - a[1])) console.log(`  ${String(n).padStart(4)}  ${reason}`);
  }
}

// ----------------------------------------------------------------- micro-bench
const TYPICAL = `claims.repository_owner_id == "1234567" &&
  claims.ref.startsWith("refs/tags/v") &&
  claims.event_name in ["push", "workflow_dispatch"] &&
  !(claims.actor in ["dependabot[bot]", "renovate[bot]"]) &&
  claims.job_workflow_ref.matches("^acme/workflows/\\\\.github/workflows/deploy\\\\.yml@refs/tags/v[0-9]+")`;

/** A GitHub Actions ID token's claims (about 30, as GitHub sends them). */
const CLAIMS: Record<string, unknown> = {
  jti: '2f0cf9b1-5c3e-4a1d-9a3e-0d4f1c2b3a4e', sub: 'repo:acme/api:ref:refs/tags/v1.2.3', aud: 'https://broker.example.com',
  ref: 'refs/tags/v1.2.3', sha: '0123456789abcdef0123456789abcdef01234567', repository: 'acme/api', repository_owner: 'acme',
  repository_owner_id: '1234567', run_id: '9876543210', run_number: '42', run_attempt: '1', repository_visibility: 'private',
  repository_id: '7654321', actor_id: '1111', actor: 'octocat', workflow: 'release', head_ref: '', base_ref: '', event_name: 'push',
  ref_protected: 'true', ref_type: 'tag', workflow_ref: 'acme/api/.github/workflows/release.yml@refs/tags/v1.2.3',
  workflow_sha: '0123456789abcdef0123456789abcdef01234567', job_workflow_ref: 'acme/workflows/.github/workflows/deploy.yml@refs/tags/v3',
  job_workflow_sha: 'fedcba9876543210fedcba9876543210fedcba98', runner_environment: 'github-hosted', enterprise: 'acme-ent',
  iss: 'https://token.actions.githubusercontent.com', nbf: 1_700_000_000, exp: 1_700_000_300, iat: 1_700_000_000,
};

function time(label: string, iterations: number, fn: () => unknown): void {
  for (let i = 0; i < Math.min(1000, iterations); i++) fn(); // warm up
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  const micros = Number(process.hrtime.bigint() - started) / 1000 / iterations;
  console.log(`  ${label.padEnd(48)} ${micros.toFixed(2).padStart(9)} µs/op  (${iterations} ops)`);
}

function microBench(): void {
  console.log(`\nPolicy condition cost (Node ${process.version}); condition:\n${TYPICAL.replace(/^/gm, '    ')}`);
  const compiled = compileCondition(TYPICAL);
  if (!compiled.ok) throw new Error(`typical condition does not compile: ${compiled.error.message}`);
  const condition = compiled.condition;
  const check = (claims: Record<string, unknown>, matched: boolean): void => {
    const outcome = condition.evaluate(claims);
    if (outcome.matched !== matched) throw new Error(`unexpected outcome ${JSON.stringify(outcome)}`);
  };
  check(CLAIMS, true);
  const denied = { ...CLAIMS, actor: 'dependabot[bot]' };
  check(denied, false);
  const { ref: _ref, ...noRef } = CLAIMS;
  check(noRef, false);
  const wrongOwner = { ...CLAIMS, repository_owner_id: '999' };
  check(wrongOwner, false);

  time('compile (parse + load checks + plan)', Math.max(1, Math.floor(ITERATIONS / 10)), () => compileCondition(TYPICAL));
  time('evaluate: holds (every clause runs)', ITERATIONS, () => condition.evaluate(CLAIMS));
  time('evaluate: false at the first clause', ITERATIONS, () => condition.evaluate(wrongOwner));
  time('evaluate: false at the 4th clause (bot actor)', ITERATIONS, () => condition.evaluate(denied));
  time('evaluate: error (missing claim `ref`)', ITERATIONS, () => condition.evaluate(noRef));
  const simple = compileCondition('claims.run_attempt == "1"');
  if (!simple.ok) throw new Error('simple condition does not compile');
  time('evaluate: claims.run_attempt == "1"', ITERATIONS, () => simple.condition.evaluate(CLAIMS));
}

conformance();
microBench();
