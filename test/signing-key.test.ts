import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger } from '../src/logger.js';
import { loadOrCreateSigningKey, loadSigningKey, SigningKeyMissingError } from '../src/keys/signing-key.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-key-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

test('replicas starting together end up with one key, created 0600, with no temporary files left', async () => {
  const file = path.join(dir, 'data', 'signing-key.jwk');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSigningKey(file, createLogger({ silent: true }))));
  assert.equal(new Set(keys.map((k) => k.kid)).size, 1);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(path.dirname(file)), ['signing-key.jwk']);
  assert.equal(keys[0]!.publicJwk.d, undefined, 'the public JWK holds no private part');
  assert.equal(keys[0]!.alg, 'ES256');
  const again = await loadOrCreateSigningKey(file, createLogger({ silent: true }));
  assert.equal(again.kid, keys[0]!.kid, 'an existing key is reused');
});

test('a key file readable by other users is refused', async () => {
  const file = path.join(dir, 'loose.jwk');
  await loadOrCreateSigningKey(file, createLogger({ silent: true }));
  await chmod(file, 0o644);
  await assert.rejects(loadOrCreateSigningKey(file, createLogger({ silent: true })), /readable or writable by other users/);
});

test('loadSigningKey reads an existing key and never creates one', async () => {
  const file = path.join(dir, 'readonly', 'signing-key.jwk');
  await assert.rejects(loadSigningKey(file), SigningKeyMissingError);
  await assert.rejects(stat(path.dirname(file)), /ENOENT/, 'not even the directory was created');
  const created = await loadOrCreateSigningKey(file, createLogger({ silent: true }));
  assert.equal((await loadSigningKey(file)).kid, created.kid);
});

test('a key file that is not JSON is refused without quoting its content', async () => {
  const file = path.join(dir, 'garbled.jwk');
  await writeFile(file, '{"kty":"EC","d":"c2VjcmV0LWtleS1tYXRlcmlhbA', { mode: 0o600 });
  await assert.rejects(loadSigningKey(file), (err: Error) => err.message === `${file} is not a JSON private JWK`);
});
