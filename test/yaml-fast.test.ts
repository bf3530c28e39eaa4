// The YAML fast path (src/yaml/fast.ts) must give exactly what the `yaml` library
// gives (value and every line) whenever it accepts a text, and leave anything
// else to the library. Checked on the repository's policies, generated
// policies, hand-picked edge cases, and seeded random mutations of them all.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { generate } from './helpers/policy-corpus.js';
import type { KeyPath } from '../src/yaml/document.js';
import { parseSimpleYaml } from '../src/yaml/fast.js';
import { parseYaml, parseYamlWithLibrary } from '../src/yaml/parse.js';

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) out.push(...yamlFiles(file));
    else if (/\.ya?ml$/.test(name)) out.push(file);
  }
  return out;
}

/** Every path into the value, plus paths that do not exist (a missing key, an index on a map, past the end). */
function pathsOf(value: unknown, prefix: (string | number)[] = []): KeyPath[] {
  const paths: KeyPath[] = [prefix, [...prefix, 'missing'], [...prefix, 0], [...prefix, -1], [...prefix, 99]];
  if (Array.isArray(value)) value.forEach((item, i) => paths.push(...pathsOf(item, [...prefix, i])));
  else if (typeof value === 'object' && value !== null) for (const key of Object.keys(value)) paths.push(...pathsOf((value as Record<string, unknown>)[key], [...prefix, key]));
  return paths;
}

/** True when the fast path accepted `text`; then it must agree with the full parse. */
function agrees(text: string, context = ''): boolean {
  const fast = parseSimpleYaml(text);
  if (fast === undefined) return false;
  const full = parseYamlWithLibrary(text);
  const where = `${context}\n---- text ----\n${text}\n--------------`;
  assert.ok(full.ok, `the fast path accepted a text the full parser refuses: ${JSON.stringify(!full.ok && full.problems)}${where}`);
  assert.deepStrictEqual(fast.value, full.doc.value, `values differ${where}`);
  for (const p of pathsOf(full.doc.value)) assert.equal(fast.lineOf(p), full.doc.lineOf(p), `lineOf(${JSON.stringify(p)}) differs${where}`);
  return true;
}

const ROOT = path.resolve(import.meta.dirname, '..');
const REPO_FILES = [...yamlFiles(path.join(ROOT, 'policies')), ...yamlFiles(path.join(ROOT, 'test', 'fixtures', 'policies'))];
const GENERATED = generate(400).map((f) => f.text);

/** Common constructs the fast path must accept (and agree on). */
const IN_SUBSET: string[] = [
  'a: b\n',
  'a: b',
  '\n\n# lead\n  # indented comment\na: b # trailing\n# end\n',
  'a: b#c\nd: e #f\ng: "h" # i\nj: \'k\'   # l\n',
  'a: "x \\\\ y \\" z"\nb: \'it\'\'s\'\nc: ""\nd: \'\'\n',
  'a: true\nb: False\nc: ~\nd: null\ne: 0\nf: 12\ng: 123456789012345\nh: yes\n',
  'a: [x, "y", \'z\', 1, true, null]\nb: [ x , y ]\nc: [x,y]\n',
  'a: { in: [push, workflow_dispatch] }\nb: {glob: "x*"}\nc: { a: 1, b: "two", c: [3] }\n',
  'a:\n  - x\n  - "y"\n  - [z]\n  - { k: v }\nb:\n- compact\n- seq\nc: d\n',
  'a:\n  b:\n    c:\n      d: e\n    f: g\n  h: i\nj: k\n',
  '__proto__: x\nconstructor: y\ntoString: z\nhasOwnProperty: w\n',
  '/ref: x\n/a~1b/0: y\nkey.with.dots: z\nkey-with-dashes: w\n_under: v\n',
  '# d\u00e9j\u00e0 vu \u2026 \ud83d\ude80\na: "\u00e9" # \u2014\nb: [\u00e9, \u3000x]\n',
  'a: b\u00a0\nc: \u3000d\u3000\ne: [f\u00a0, \u00a0g]\n',
  'claims:\n  repository: acme/api\n  ref: [refs/heads/main]\n  sub: { glob: "repo:acme/*:ref:refs/heads/**" }\n  event_name: { regex: "push|workflow_dispatch" }\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n  claims:\n    repo: ${repository}\n',
  'server:\n  host: localhost\n  port: 8080\n  public_url: https://broker.example.com\nreplay:\n  url: "memory:"\naudit:\n  url: sqlite:${DATA_DIR}/audit.db\n',
];

/** Cases near the edges of the subset, accepted or not. */
const EDGES: string[] = [
  ...IN_SUBSET,
  'a: b\n',
  'a: b',
  '\n\n# lead\n  # indented comment\na: b # trailing\n# end\n',
  'a: b#c\nd: e #f\ng: "h" # i\nj: \'k\'   # l\n',
  'a: "x \\\\ y \\" z"\nb: \'it\'\'s\'\nc: ""\nd: \'\'\n',
  'a: "\\n"\n',
  'a: "\\."\n',
  "a: 'one\n  two'\n",
  'a: one\n  two\n',
  'a: true\nb: False\nc: TRUE\nd: yes\ne: no\nf: on\ng: ~\nh: null\ni: NULL\nj: Null\nk: nULL\n',
  'a: 0\nb: 12\nc: 012\nd: -1\ne: +1\nf: 1.5\ng: .5\nh: 1e3\ni: 0x1F\nj: 0o17\nk: .inf\nl: .nan\nm: 123456789012345\nn: 1234567890123456\no: 12345678901234567890\np: 1_000\nq: 1.2.3\n',
  'a: [x, "y", \'z\', 1, true, null]\nb: [ x , y ]\nc: [x,y]\nd: []\ne: [x, ]\nf: [x, [y]]\ng: [a: b]\nh: [a#b]\ni: [x] # c\nj: [x]#c\n',
  'a: { in: [push, workflow_dispatch] }\nb: {glob: "x*"}\nc: { a: 1, b: "two", c: [3] }\nd: {}\ne: { a: { b: c } }\nf: { a: b, a: c }\ng: { "q": x }\nh: { a:b }\n',
  'claims:\n  repository: acme/api\n  ref: [refs/heads/main]\n  sub: { glob: "repo:acme/*:ref:refs/heads/**" }\n  event_name: { regex: "push|workflow_dispatch" }\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n  claims:\n    repo: ${repository}\n',
  'a:\n  - x\n  - "y"\n  - [z]\n  - { k: v }\nb:\n- compact\n- seq\nc: d\n',
  'a:\n  -   spaced\n  -\n  - x\n',
  'a:\n  - x\n    - y\n',
  'a:\n  - k: v\n',
  'a:\n  - x\n  b: c\n',
  'a:\n  b:\n    c:\n      d: e\n    f: g\n  h: i\nj: k\n',
  'a:\n  b: c\n   d: e\n',
  'a:\n    b: c\n  d: e\n',
  'a:\nb: c\n',
  'a:\n',
  'a: b\na: c\n',
  'a: b\n  c: d\n',
  '  a: b\n  c: d\n',
  '__proto__: x\nconstructor: y\ntoString: z\nhasOwnProperty: w\n',
  'a: { __proto__: x, constructor: [1] }\n',
  'true: x\n',
  'null: x\n',
  '1: x\n',
  '"a": b\n',
  '? a\n: b\n',
  'a: &x b\nc: *x\n',
  'a: !!str 1\n',
  '%YAML 1.2\n---\na: b\n',
  '---\na: b\n',
  'a: b\n...\n',
  'a: |\n  x\n',
  'a: >\n  x\n',
  'a:\tb\n',
  'a: b\r\nc: d\r\n',
  '\ufeffa: b\n',
  'a: caf\u00e9\n',
  '# d\u00e9j\u00e0 vu \u2026 \ud83d\ude80\na: "\u00e9" # \u2014\nb: [\u00e9, \u3000x]\n',
  'a: b\u00a0\nc: \u3000d\u3000\ne: [f\u00a0, \u00a0g]\n',
  'a: b\u2028c\n',
  'a: b\u0085c\n',
  'a: \ud83d\n',
  'a: b: c\n',
  'a: b:\n',
  'a: -x\nb: :x\nc: ?x\nd: @x\ne: `x\nf: %x\n',
  'a: x\n- y\n',
  '- a\n- b\n',
  'just a scalar\n',
  '# only a comment\n',
  '',
  'a:  \n  b: c\n',
  'a: # comment\n  b: c\n',
  'a: # comment\n- x\n',
  '/ref: x\n/a~1b/0: y\nkey.with.dots: z\nkey-with-dashes: w\n_under: v\n',
  'a: x #\n',
  'a: "x"y\n',
  'a: "unterminated\n',
  "a: 'x''\n",
  `a: ${'x'.repeat(1200)}\n`,
  // Broker configs (src/config.ts reads through the same front end): `0.0.0.0`, `./x` and sequences of maps fall back.
  'server:\n  host: 0.0.0.0\n  port: 8080\n  public_url: https://broker.example.com\npolicies:\n  dir: ./policies\naudit:\n  url: postgres://broker:${PGPASS}@db.internal:5432/audit\n  checkpoint_interval_seconds: 60\nproviders:\n  aws:\n    region: eu-west-1\n',
  'issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [https://broker.example.com]\nauditors:\n  - name: sec\n    token_sha256: ${AUDITOR_SHA}\n',
  'a: [x, y\nb: z]\n',
  'a: {b: c\n',
];

describe('the fast path agrees with the full parse', () => {
  test('on the repository\'s policy files (and accepts the usual ones)', () => {
    let accepted = 0;
    for (const file of REPO_FILES) if (agrees(readFileSync(file, 'utf8'), file)) accepted++;
    assert.ok(accepted >= REPO_FILES.length / 3, `accepted only ${accepted} of ${REPO_FILES.length}`);
  });

  test('on generated policy files, all of which it accepts', () => {
    for (const [i, text] of GENERATED.entries()) assert.ok(agrees(text, `generated ${i}`), `fell back on generated file ${i}:\n${text}`);
  });

  test('on edge cases', () => {
    for (const text of EDGES) agrees(text);
    for (const text of IN_SUBSET) assert.ok(parseSimpleYaml(text), `expected the fast path to accept:\n${text}`);
  });

  test('__proto__ and inherited names are own keys, as the full parse makes them', () => {
    const doc = parseSimpleYaml('__proto__: x\nconstructor: y\n');
    assert.ok(doc);
    const value = doc.value as Record<string, unknown>;
    assert.ok(Object.hasOwn(value, '__proto__'));
    assert.equal(Object.getPrototypeOf(value), Object.prototype);
    assert.deepEqual(Object.keys(value), ['__proto__', 'constructor']);
  });

  test('parseYaml answers from the fast path when it can and reports problems from the full parse', () => {
    const ok = parseYaml('a: b\n');
    assert.ok(ok.ok);
    assert.deepEqual(ok.doc.value, { a: 'b' });
    const dup = parseYaml('a: b\na: c\n');
    assert.ok(!dup.ok);
    assert.deepEqual(dup, parseYamlWithLibrary('a: b\na: c\n'));
  });

  test('on seeded random mutations of all of the above', () => {
    // mulberry32
    let state = 20260101;
    const rand = (): number => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;
    const seeds = [...EDGES, ...GENERATED.slice(0, 50), ...REPO_FILES.map((f) => readFileSync(f, 'utf8'))].filter((t) => t.length > 0);
    const INSERTS = [' ', '  ', '\n', '#', ' #', ':', ': ', '-', '- ', '"', "'", '[', ']', '{', '}', ',', '\\', '~', '0', '1', '.', 'x', 'true', 'null', '&a', '*a', '!', '|', '>', '?', '%', '@', '__proto__', '\u00e9', '\u00a0', '\u3000', '\u2026', '\ud83d\ude80', '\t', '\r'];
    let accepted = 0;
    const runs = 6000;
    for (let run = 0; run < runs; run++) {
      let text = pick(seeds);
      const edits = 1 + Math.floor(rand() * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * (text.length + 1));
        const r = rand();
        if (r < 0.45) text = text.slice(0, at) + pick(INSERTS) + text.slice(at);
        else if (r < 0.8) text = text.slice(0, at) + text.slice(at + 1 + Math.floor(rand() * 3));
        else {
          // Re-indent or duplicate a line.
          const lines = text.split('\n');
          const i = Math.floor(rand() * lines.length);
          if (rand() < 0.5) lines[i] = ' '.repeat(Math.floor(rand() * 5)) + (lines[i] ?? '').trimStart();
          else lines.splice(i, 0, lines[i] ?? '');
          text = lines.join('\n');
        }
      }
      if (agrees(text, `mutation run ${run}`)) accepted++;
    }
    // Enough mutants stay in the subset for the comparison to mean something.
    assert.ok(accepted > runs / 10, `only ${accepted} of ${runs} mutants were in the subset`);
  });
});
