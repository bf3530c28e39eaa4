import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createSilentLogger } from '../src/logger.js';
import { loadOrCreateSigningKey } from '../src/providers/signing-key.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-key-'));
});
after(async () => rm(dir, { recursive: true, force: true }));

test('replicas starting together end up with one key, created 0600, with no temporary files left', async () => {
  const file = path.join(dir, 'data', 'signing-key.jwk');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSigningKey(file, createSilentLogger())));
  assert.equal(new Set(keys.map((k) => k.kid)).size, 1);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(path.dirname(file)), ['signing-key.jwk']);
  assert.equal(keys[0]!.publicJwk.d, undefined, 'the public JWK holds no private part');
  assert.equal(keys[0]!.alg, 'ES256');
  const again = await loadOrCreateSigningKey(file, createSilentLogger());
  assert.equal(again.kid, keys[0]!.kid, 'an existing key is reused');
});

test('a key file readable by other users is refused', async () => {
  const file = path.join(dir, 'loose.jwk');
  await loadOrCreateSigningKey(file, createSilentLogger());
  await chmod(file, 0o644);
  await assert.rejects(loadOrCreateSigningKey(file, createSilentLogger()), /readable or writable by other users/);
});
