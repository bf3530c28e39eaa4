import { readFileSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { isPolicyTestFileName } from './test-cases.js';
import type { PolicyFile } from './types.js';

/**
 * Files read between two yields to the event loop. Policy files are small, and
 * reading one synchronously costs ~10 µs where `fs/promises` costs ~100 µs of
 * thread-pool round trips (10,000 files: 0.1 s instead of 1 s or more); reading
 * in slices keeps a reload from holding up requests for more than a few ms.
 */
const READ_SLICE = 100;

/** The policy directory cannot be read; the message names the path and the cause. */
export class PolicyDirError extends Error {
  override name = 'PolicyDirError';
}

/**
 * Reads the policy files of `dir` (docs/policies/reference.md): every `*.yaml` and
 * `*.yml` directly in it, not recursive, skipping policy test files
 * (`*.test.yaml`, `*.test.yml`, docs/policies/reference.md) and hidden entries (so a
 * Kubernetes ConfigMap mount's `..data` and editor lock files are ignored;
 * the mount's symlinked files are followed). Sorted by file name, so issues and
 * the loaded set come out in the same order everywhere.
 *
 * The only module in `policy/` that does I/O.
 *
 * @throws PolicyDirError when the directory is missing or not a directory, or a
 *   policy file is unreadable or not valid UTF-8.
 */
export function loadPolicyDir(dir: string): Promise<PolicyFile[]> {
  return loadFiles(dir, isPolicyFileName, 'Policy file');
}

/** The policy test files of `dir` (`*.test.yaml`, `*.test.yml`; `policy test`, the console's policy view), read as loadPolicyDir reads policies. @throws PolicyDirError */
export function loadPolicyTestFiles(dir: string): Promise<PolicyFile[]> {
  return loadFiles(dir, isPolicyTestFileName, 'Policy test file');
}

async function loadFiles(dir: string, wanted: (name: string) => boolean, what: string): Promise<PolicyFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new PolicyDirError(`Policy directory '${dir}' does not exist.`, { cause: err });
    if (code === 'ENOTDIR') throw new PolicyDirError(`Policy directory '${dir}' is not a directory.`, { cause: err });
    throw new PolicyDirError(`Cannot read policy directory '${dir}': ${code ?? String(err)}.`, { cause: err });
  }
  // Code-unit order, not locale order: the same on every machine.
  const candidates = names.filter(wanted).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  const files: PolicyFile[] = [];
  for (const [index, name] of candidates.entries()) {
    if (index > 0 && index % READ_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
    const file = readPolicyFile(path.join(dir, name), what);
    if (file !== null) files.push(file);
  }
  return files;
}

/**
 * Reads one policy file, as loadPolicyDir reads each of a directory's
 * (`policy validate FILE`); null when the path is not a file (a directory).
 * @throws PolicyDirError when it is missing, unreadable or not valid UTF-8.
 */
export function readPolicyFile(file: string, what = 'Policy file'): PolicyFile | null {
  let bytes: Buffer;
  try {
    // stat follows symlinks: a directory named `x.yaml` is skipped, a dangling link is an error.
    if (!statSync(file).isFile()) return null;
    bytes = readFileSync(file);
  } catch (err) {
    throw new PolicyDirError(`Cannot read ${what.toLowerCase()} '${file}': ${(err as NodeJS.ErrnoException).code ?? String(err)}.`, { cause: err });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    // Replacing bad bytes would make the text differ from what was reviewed and hashed.
    throw new PolicyDirError(`${what} '${file}' is not valid UTF-8.`, { cause: err });
  }
  return { path: file, text, bytes: new Uint8Array(bytes) };
}

/** `*.yaml` / `*.yml`, not hidden, not a policy test file: the files loadPolicyDir reads. */
export function isPolicyFileName(name: string): boolean {
  if (name.startsWith('.')) return false;
  if (!/\.ya?ml$/.test(name)) return false;
  return !/\.test\.ya?ml$/.test(name);
}
