/**
 * The policy lint (`policy validate`, docs/policies/reference.md, "Lint") on
 * the generated GitHub-like policy corpus (test/helpers/policy-corpus.ts, the
 * one bench/policies.ts compiles): for each size in BENCH_LINT_SIZES (default
 * 1000 and 10000), the compile time and the lint time after it, median of
 * three runs, and the warnings by rule.
 */
import { performance } from 'node:perf_hooks';
import { compilePolicies } from '../src/policy/compile.js';
import { lintPolicies } from '../src/policy/lint.js';
import type { CompileContext, PolicyFile } from '../src/policy/types.js';
import { defaultTenantClaims, sharedIssuerKind } from '../src/oidc/issuer-defaults.js';
import { generate } from '../test/helpers/policy-corpus.js';

const SIZES = (process.env.BENCH_LINT_SIZES ?? '1000,10000').split(',').map(Number);
const RUNS = 3;
const GITHUB = 'https://token.actions.githubusercontent.com';
const CTX: CompileContext = {
  issuers: new Map([['github', { audiences: ['http://127.0.0.1:8080'], tenantClaims: defaultTenantClaims(GITHUB), kind: sharedIssuerKind(GITHUB) }]]),
  providers: new Set(['jwt']),
};

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

for (const size of SIZES) {
  const files: PolicyFile[] = generate(size).map((f) => ({ path: f.name, text: f.text }));
  const compileMs: number[] = [];
  const lintMs: number[] = [];
  const byRule: Record<string, number> = {};
  for (let run = 0; run < RUNS; run++) {
    let started = performance.now();
    const result = compilePolicies(files, CTX);
    compileMs.push(performance.now() - started);
    if (!result.ok) throw new Error(`the corpus does not compile: ${result.issues[0]?.message}`);
    started = performance.now();
    const warnings = lintPolicies(files, result.set, CTX);
    lintMs.push(performance.now() - started);
    if (run === 0) for (const w of warnings) byRule[w.rule ?? ''] = (byRule[w.rule ?? ''] ?? 0) + 1;
  }
  console.log(JSON.stringify({ policies: size, compile_ms: Math.round(median(compileMs)), lint_ms: Math.round(median(lintMs)), warnings: byRule }));
}
