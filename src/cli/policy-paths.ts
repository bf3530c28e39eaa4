import { stat } from 'node:fs/promises';
import path from 'node:path';
import { isPolicyFileName, loadPolicyDir, readPolicyFile } from '../policy/load.js';
import { isPolicyTestFileName } from '../policy/test-cases.js';
import type { PolicyFile } from '../policy/types.js';
import { CliExit } from './io.js';

/** What a path argument of `policy validate` or `policy test` names (docs/policies/reference.md, "Checking policies"). */
export type PolicyPath = { kind: 'dir'; dir: string } | { kind: 'policy'; file: string } | { kind: 'test'; file: string };

const EXPECTED = 'expected a policy directory, a policy file (*.yaml, *.yml) or a policy test file (*.test.yaml, *.test.yml)';

/** Tells a directory, a policy file and a policy test file apart; anything else ends the command with exit 1. */
export async function toPolicyPath(arg: string): Promise<PolicyPath> {
  let isDirectory: boolean;
  try {
    const info = await stat(arg);
    if (!info.isDirectory() && !info.isFile()) throw new CliExit(1, `${arg}: ${EXPECTED}`);
    isDirectory = info.isDirectory();
  } catch (err) {
    if (err instanceof CliExit) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliExit(1, code === 'ENOENT' ? `${arg} does not exist` : `cannot read ${arg} (${code ?? String(err)})`);
  }
  if (isDirectory) return { kind: 'dir', dir: arg };
  const name = path.basename(arg);
  if (isPolicyTestFileName(name)) return { kind: 'test', file: arg };
  if (isPolicyFileName(name)) return { kind: 'policy', file: arg };
  throw new CliExit(1, `${arg} is not a policy file: ${EXPECTED}`);
}

/**
 * The policy files the arguments name (`policy validate`): every policy
 * file of each directory, and each policy file given, each file once.
 */
export async function readPolicyPaths(args: readonly string[]): Promise<PolicyFile[]> {
  const files = new Map<string, PolicyFile>();
  for (const arg of args) {
    const target = await toPolicyPath(arg);
    if (target.kind === 'test') throw new CliExit(1, `${arg} is a policy test file: run 'oidc-broker policy test ${arg}'`);
    const read = target.kind === 'dir' ? await readPolicyDir(target.dir) : [readOrExit(target.file)];
    for (const file of read) if (!files.has(path.resolve(file.path))) files.set(path.resolve(file.path), file);
  }
  return [...files.values()];
}

/** A policy directory and the test files to run against it: all of its own (`all`), or the ones named. */
export interface PolicyTestTarget {
  dir: string;
  tests: 'all' | string[];
}

/**
 * The directories whose policies `policy test` compiles, each with the test
 * files to run: a directory runs all of its test files; a test file runs
 * against the policies of its directory; a policy file means its own test
 * file (`deploy.yaml`: `deploy.test.yaml` or `deploy.test.yml` beside it).
 */
export async function toPolicyTestTargets(args: readonly string[]): Promise<PolicyTestTarget[]> {
  const targets = new Map<string, PolicyTestTarget>();
  const add = (dir: string, tests: PolicyTestTarget['tests']) => {
    const key = path.resolve(dir);
    const known = targets.get(key);
    if (known === undefined) targets.set(key, { dir, tests });
    else if (known.tests !== 'all') known.tests = tests === 'all' ? 'all' : [...new Set([...known.tests, ...tests])];
  };
  for (const arg of args) {
    const target = await toPolicyPath(arg);
    if (target.kind === 'dir') add(target.dir, 'all');
    else if (target.kind === 'test') add(path.dirname(target.file), [target.file]);
    else add(path.dirname(target.file), [await testFileOf(target.file)]);
  }
  return [...targets.values()];
}

async function testFileOf(policyFile: string): Promise<string> {
  const base = policyFile.replace(/\.ya?ml$/, '');
  const candidates = [`${base}.test.yaml`, `${base}.test.yml`];
  for (const candidate of candidates) {
    if (await stat(candidate).then((info) => info.isFile(), () => false)) return candidate;
  }
  throw new CliExit(1, `no test cases for ${policyFile}: neither ${candidates.join(' nor ')} exists`);
}

/** The policy files of a directory (loadPolicyDir); one it cannot read ends the command with exit 1. */
export async function readPolicyDir(dir: string): Promise<PolicyFile[]> {
  try {
    return await loadPolicyDir(dir);
  } catch (err) {
    throw new CliExit(1, err instanceof Error ? err.message : String(err));
  }
}

function readOrExit(file: string): PolicyFile {
  try {
    // toPolicyPath found a file: null (a directory) cannot happen but for a race, which reads as missing.
    const read = readPolicyFile(file);
    if (read === null) throw new CliExit(1, `${file} does not exist`);
    return read;
  } catch (err) {
    if (err instanceof CliExit) throw err;
    throw new CliExit(1, err instanceof Error ? err.message : String(err));
  }
}
