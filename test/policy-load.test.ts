// loadPolicyDir: the only I/O of policy/.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadPolicyDir, PolicyDirError } from '../src/policy/load.js';

const VALID = fileURLToPath(new URL('./fixtures/policies/valid/', import.meta.url));

describe('loadPolicyDir', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'oidc-broker-policy-load-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test('reads *.yaml and *.yml, sorted; skips *.test.yaml, hidden files, other files and subdirectories', async () => {
    const files = await loadPolicyDir(VALID);
    assert.deepEqual(
      files.map((f) => path.basename(f.path)),
      ['deny-prt.yml', 'deploy.yaml'],
    );
    const deploy = files[1];
    assert.ok(deploy);
    assert.equal(deploy.path, path.join(VALID, 'deploy.yaml'));
    assert.equal(deploy.text, await readFile(deploy.path, 'utf8'));
    assert.deepEqual(Buffer.from(deploy.bytes ?? []), await readFile(deploy.path));
  });

  test('a missing directory is an error that says so', async () => {
    const missing = path.join(tmp, 'no-such-dir');
    await assert.rejects(loadPolicyDir(missing), (err: unknown) => err instanceof PolicyDirError && err.message === `Policy directory '${missing}' does not exist.`);
  });

  test('a file is not a directory', async () => {
    const file = path.join(tmp, 'file.yaml');
    await writeFile(file, 'x: 1\n');
    await assert.rejects(loadPolicyDir(file), { name: 'PolicyDirError', message: `Policy directory '${file}' is not a directory.` });
  });

  test('an empty directory loads no files', async () => {
    const dir = path.join(tmp, 'empty');
    await mkdir(dir);
    assert.deepEqual(await loadPolicyDir(dir), []);
  });

  test('sorts by code unit, the same on every machine', async () => {
    const dir = path.join(tmp, 'order');
    await mkdir(dir);
    for (const name of ['b.yaml', 'B.yaml', 'a.yml', '_c.yaml', 'a.test.yml']) await writeFile(path.join(dir, name), 'x: 1\n');
    assert.deepEqual(
      (await loadPolicyDir(dir)).map((f) => path.basename(f.path)),
      ['B.yaml', '_c.yaml', 'a.yml', 'b.yaml'],
    );
  });

  test('follows symlinked files (a Kubernetes ConfigMap mount) and skips its ..data directory', async () => {
    const dir = path.join(tmp, 'configmap');
    await mkdir(path.join(dir, '..2026_01_01'), { recursive: true });
    await writeFile(path.join(dir, '..2026_01_01', 'deploy.yaml'), 'name: deploy\n');
    await symlink('..2026_01_01', path.join(dir, '..data'));
    await symlink(path.join('..data', 'deploy.yaml'), path.join(dir, 'deploy.yaml'));
    const files = await loadPolicyDir(dir);
    assert.deepEqual(
      files.map((f) => [path.basename(f.path), f.text]),
      [['deploy.yaml', 'name: deploy\n']],
    );
  });

  test('a dangling symlink fails the load instead of silently dropping a policy', async () => {
    const dir = path.join(tmp, 'dangling');
    await mkdir(dir);
    await symlink(path.join(dir, 'gone.yaml'), path.join(dir, 'deny.yaml'));
    await assert.rejects(loadPolicyDir(dir), { name: 'PolicyDirError', message: /Cannot read policy file '.*deny\.yaml': ENOENT/ });
  });

  test('a file that is not valid UTF-8 fails the load', async () => {
    const dir = path.join(tmp, 'latin1');
    await mkdir(dir);
    await writeFile(path.join(dir, 'p.yaml'), Buffer.from([0x6e, 0x61, 0x6d, 0x65, 0x3a, 0x20, 0xe9, 0x0a]));
    await assert.rejects(loadPolicyDir(dir), { name: 'PolicyDirError', message: /Policy file '.*p\.yaml' is not valid UTF-8\./ });
  });

  test('keeps the exact bytes (a BOM included) for hashing; the text drops the BOM', async () => {
    const dir = path.join(tmp, 'bom');
    await mkdir(dir);
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('name: bom\n')]);
    await writeFile(path.join(dir, 'bom.yaml'), bytes);
    const [file] = await loadPolicyDir(dir);
    assert.ok(file);
    assert.equal(file.text, 'name: bom\n');
    assert.deepEqual(Buffer.from(file.bytes ?? []), bytes);
  });
});
