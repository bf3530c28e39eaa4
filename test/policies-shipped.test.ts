// The example policies shipped in policies/ (docs/policies/reference.md): every
// one compiles with the built-in development defaults (what `npm start` uses),
// and every case of every policies/*.test.yaml decides as it says, with all the
// shipped deny policies in force. Independent of the `oidc-broker policy test`
// runner: it calls the compiler and the evaluator directly.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileContext, loadConfig } from '../src/config.js';
import { formatPolicyIssue } from '../src/policy/issues.js';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy } from '../src/policy/evaluate.js';
import { loadPolicyDir } from '../src/policy/load.js';
import type { PolicySet } from '../src/policy/types.js';
import { isPlainObject } from '../src/values.js';
import { parseYaml } from '../src/yaml/parse.js';

const DIR = fileURLToPath(new URL('../policies/', import.meta.url));
const CASE_KEYS = ['name', 'policy', 'issuer', 'claims', 'expect'];

interface Case {
  name: string;
  policy: string;
  issuer?: string;
  claims: Record<string, unknown>;
  expect: 'allow' | 'deny';
}

interface TestFile {
  /** Base name, e.g. `github-deploy-prod.test.yaml`. */
  file: string;
  /** The policy file it belongs to, e.g. `github-deploy-prod.yaml`. */
  policyFile: string;
  cases: Case[];
}

/** Parses a test file with the YAML front end the policy loader uses. */
function parseTestFile(file: string, text: string): Case[] {
  const parsed = parseYaml(text);
  assert.ok(parsed.ok, `${file}: YAML problems: ${JSON.stringify(!parsed.ok && parsed.problems)}`);
  const root = parsed.doc.value;
  assert.ok(isPlainObject(root) && Object.keys(root).length === 1 && Array.isArray(root.tests), `${file}: expected a map with one key, tests: [...]`);
  return (root.tests as unknown[]).map((raw, i) => {
    const where = `${file}: tests[${i}]`;
    assert.ok(isPlainObject(raw), `${where}: expected a map`);
    assert.deepEqual(Object.keys(raw).filter((k) => !CASE_KEYS.includes(k)), [], `${where}: unknown keys`);
    assert.ok(typeof raw.name === 'string' && raw.name.length > 0, `${where}: name`);
    assert.ok(typeof raw.policy === 'string', `${where}: policy`);
    assert.ok(raw.issuer === undefined || typeof raw.issuer === 'string', `${where}: issuer`);
    assert.ok(isPlainObject(raw.claims), `${where}: claims must be a map`);
    assert.ok(raw.expect === 'allow' || raw.expect === 'deny', `${where}: expect must be allow or deny`);
    return raw as unknown as Case;
  });
}

// Everything below is read once, before the tests are declared, so each case is its own test.
const config = await loadConfig(undefined, {}); // no file: the built-in development defaults
const issuerUrls = new Map(config.issuers.map((i) => [i.name, i.issuer]));
const audiences = [config.server.publicUrl];
const policyFiles = await loadPolicyDir(DIR);
const compiled = compilePolicies(policyFiles, compileContext(config));
const testFiles: TestFile[] = [];
for (const name of (await readdir(DIR)).filter((n) => n.endsWith('.test.yaml')).sort()) {
  testFiles.push({ file: name, policyFile: name.replace(/\.test\.yaml$/, '.yaml'), cases: parseTestFile(name, await readFile(path.join(DIR, name), 'utf8')) });
}

function policySet(): PolicySet {
  if (!compiled.ok) assert.fail(`policies/ does not compile with the development defaults:\n${compiled.issues.map(formatPolicyIssue).join('\n')}`);
  return compiled.set;
}

describe('the shipped policies', () => {
  test('all compile with the development defaults (no config file)', () => {
    assert.equal(config.source, 'built-in defaults');
    assert.equal(policySet().size, policyFiles.length);
  });

  test('every policy file has a test file, and every test file a policy file', () => {
    const policies = policyFiles.map((f) => path.basename(f.path)).sort();
    assert.deepEqual(testFiles.map((t) => t.policyFile).sort(), policies);
  });

  test('each test file pins its own policy: an allow policy allows and denies; a deny policy refuses and lets through', () => {
    const set = policySet();
    for (const { file, policyFile, cases } of testFiles) {
      const policy = [...set.byName.values()].find((p) => path.basename(p.file) === policyFile);
      assert.ok(policy, `${file}: no compiled policy from ${policyFile}`);
      if (policy.effect === 'allow') {
        const own = cases.filter((c) => c.policy === policy.name);
        assert.ok(own.some((c) => c.expect === 'allow'), `${file}: no case where ${policy.name} allows`);
        assert.ok(own.some((c) => c.expect === 'deny'), `${file}: no case where ${policy.name} denies`);
      } else {
        // A deny policy is never named in a request: its cases name an allow policy and show the deny applying on top.
        const refusedByIt = cases.filter((c) => {
          const decision = evaluate(set, lookupPolicy(set, c.policy), tokenOf(c));
          return decision.reason === 'denied_by_policy' && decision.evaluations.some((e) => e.policy === policy.name && e.effect === 'deny' && e.matched);
        });
        assert.ok(refusedByIt.length > 0, `${file}: no case refused by ${policy.name}`);
        assert.ok(cases.some((c) => c.expect === 'allow'), `${file}: no case that ${policy.name} lets through`);
      }
    }
  });
});

function tokenOf(c: Case): { issuerName: string; claims: Record<string, unknown>; audiences: string[] } {
  const set = policySet();
  return { issuerName: c.issuer ?? lookupPolicy(set, c.policy).issuer, claims: c.claims, audiences };
}

for (const { file, cases } of testFiles) {
  describe(file, () => {
    for (const c of cases) {
      test(`${c.name} -> ${c.expect}`, () => {
        const set = policySet();
        const policy = lookupPolicy(set, c.policy);
        if (c.issuer !== undefined) assert.ok(issuerUrls.has(c.issuer), `issuer '${c.issuer}' is not a development default`);
        const token = tokenOf(c);
        // The claim set must look like a token the named issuer could have signed for this broker.
        if (c.issuer === undefined && c.claims.iss !== undefined) assert.equal(c.claims.iss, issuerUrls.get(policy.issuer), 'iss of the claim set');
        if (c.claims.aud !== undefined) assert.ok(([] as unknown[]).concat(c.claims.aud).includes(config.server.publicUrl), 'aud of the claim set');

        const decision = evaluate(set, policy, token);
        assert.equal(decision.allowed, c.expect === 'allow', `expected ${c.expect}; ${decision.reason}: ${decision.message}`);

        // An allowed token must also fill the grant's templates, or the exchange would still refuse it.
        if (decision.allowed && policy.grant?.provider === 'jwt') {
          policy.grant.audience.render(c.claims);
          for (const template of Object.values(policy.grant.claims)) template.render(c.claims);
        }
      });
    }
  });
}
