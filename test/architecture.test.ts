// The layering of docs/architecture.md, checked on the sources: every import
// between two parts of src/ points down the layers, never up or sideways into
// a circle, so the offline CLI never loads what only the server needs.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

/** Top to bottom; a part may import only parts of a lower layer (and itself). */
const LAYERS: readonly (readonly string[])[] = [
  ['cli'],
  ['main'],
  ['http'],
  ['pipeline'],
  ['config', 'audit', 'dev'],
  ['policy'],
  ['providers'],
  ['config-fields'],
  ['oidc', 'replay', 'keys', 'limits'],
  ['yaml'],
  ['claims'],
  ['values', 'errors', 'logger', 'ids', 'metrics', 'client'],
];

function partOf(file: string): string {
  const [first] = path.relative(SRC, file).split(path.sep);
  return first!.replace(/\.ts$/, '');
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Every relative import (static, type-only, re-export or dynamic) as [from part, to part, file]. */
function crossPartImports(): [from: string, to: string, file: string][] {
  const out: [string, string, string][] = [];
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
      const target = path.resolve(path.dirname(file), match[1]!);
      const [from, to] = [partOf(file), partOf(target)];
      if (from !== to) out.push([from, to, path.relative(SRC, file)]);
    }
  }
  return out;
}

test('every part of src/ has a layer', () => {
  const known = new Set(LAYERS.flat());
  const parts = new Set(sourceFiles(SRC).map(partOf));
  assert.deepEqual([...parts].filter((p) => !known.has(p)).sort(), [], 'add new parts to LAYERS and to docs/architecture.md');
});

test('imports between parts of src/ point down the layers', () => {
  const level = new Map(LAYERS.flatMap((parts, i) => parts.map((p) => [p, i] as const)));
  const upward = crossPartImports()
    .filter(([from, to]) => level.get(to)! <= level.get(from)!)
    .map(([from, to, file]) => `${file}: ${from} imports ${to}`);
  assert.deepEqual(upward, []);
});

test('the layer check sees type-only imports and re-exports', () => {
  const imports = crossPartImports().map(([from, to, file]) => `${file}: ${from} -> ${to}`);
  // `import type { Grant, ProviderName } from '../providers/registry.js'`
  assert.ok(imports.includes(`${path.join('policy', 'types.ts')}: policy -> providers`), imports.join('\n'));
});
