import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, errors } from 'jose';
import { createLogger } from '../src/logger.js';
import {
  generateSigningJwk,
  KeyChangeRefusedError,
  loadOrCreateSigningKey,
  loadOrCreateSigningKeySet,
  loadSigningKey,
  loadSigningKeySet,
  retireSigningKey,
  rotateSigningKey,
  SigningKeyFileError,
  signJws,
  SigningKeyMissingError,
} from '../src/keys/signing-key.js';

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

test('signJws signs with the active key of the key set: the served JWKS verifies it, and after a rotation only the new key signs', async () => {
  const file = path.join(dir, 'sign', 'signing-key.jwk');
  const before = await loadOrCreateSigningKeySet(file, createLogger({ silent: true }));
  const payload = { sub: 'repo:acme/app', n: 1, nested: { a: [1, 'b'] } };
  const jws = await signJws(before.active, { typ: 'JWT' }, payload);
  assert.deepEqual(decodeProtectedHeader(jws), { alg: 'ES256', kid: before.active.kid, typ: 'JWT' });
  const verified = await compactVerify(jws, createLocalJWKSet(before.jwks), { algorithms: ['ES256'] });
  assert.deepEqual(JSON.parse(new TextDecoder().decode(verified.payload)), payload);

  await rotateSigningKey(file);
  const after = await loadSigningKeySet(file);
  const rotated = await signJws(after.active, { typ: 'JWT' }, payload);
  assert.equal(decodeProtectedHeader(rotated).kid, after.active.kid);
  assert.notEqual(after.active.kid, before.active.kid);
  await compactVerify(rotated, createLocalJWKSet(after.jwks), { algorithms: ['ES256'] });
  // The new signature is the new key's: only the new public key verifies it.
  const oldKeyOnly = { keys: after.jwks.keys.filter((k) => k.kid === before.active.kid).map((k) => ({ ...k, kid: after.active.kid })) };
  await assert.rejects(compactVerify(rotated, createLocalJWKSet(oldKeyOnly), { algorithms: ['ES256'] }), errors.JWSSignatureVerificationFailed);
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
  await assert.rejects(loadSigningKey(file), (err: Error) => err.message === `${file} is not a JSON private JWK or key set`);
});

describe('key sets', () => {
  const silent = createLogger({ silent: true });

  test('a first start creates a key set with one active key and its creation time', async () => {
    const file = path.join(dir, 'set', 'signing-key.jwk');
    const set = await loadOrCreateSigningKeySet(file, silent);
    assert.deepEqual(
      set.entries.map((e) => [e.kid, e.state]),
      [[set.active.kid, 'active']],
    );
    assert.ok(!Number.isNaN(Date.parse(set.entries[0]!.createdAt!)));
    assert.deepEqual(set.jwks.keys, [set.active.publicJwk]);
  });

  test('a bare private JWK (keys generate, or a file from before rotation) is the one active key; rotate turns it into a key set, 0600', async () => {
    const file = path.join(dir, 'legacy.jwk');
    const jwk = await generateSigningJwk();
    await writeFile(file, JSON.stringify(jwk), { mode: 0o600 });
    const legacy = await loadSigningKeySet(file);
    assert.deepEqual(legacy.entries.map((e) => [e.kid, e.state, e.createdAt]), [[jwk.kid, 'active', null]]);

    const rotated = await rotateSigningKey(file, new Date('2026-12-01T00:00:00Z'));
    assert.equal(rotated.previous, jwk.kid);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const set = await loadSigningKeySet(file);
    assert.deepEqual(set.entries.map((e) => [e.kid, e.state, e.createdAt]), [
      [rotated.kid, 'active', '2026-12-01T00:00:00.000Z'],
      [jwk.kid, 'published', null],
    ]);
    assert.equal(set.active.kid, rotated.kid);
    assert.deepEqual([...set.verificationKeys.keys()], [rotated.kid, jwk.kid]);
    assert.ok(!(await readFile(file, 'utf8')).includes(jwk.d!), 'the private half of the previous key is gone');

    assert.equal(await retireSigningKey(file, rotated.previous), true);
    const retired = await loadSigningKeySet(file);
    assert.deepEqual(retired.jwks.keys.map((k) => k.kid), [rotated.kid], 'retired keys are not served');
    assert.deepEqual([...retired.verificationKeys.keys()], [rotated.kid, jwk.kid], 'but still verify checkpoints');
    await assert.rejects(retireSigningKey(file, rotated.kid), KeyChangeRefusedError);
  });

  test('an invalid key set is refused with a message that quotes no key material', async () => {
    const active = { ...(await generateSigningJwk()), state: 'active' };
    const other = { ...(await generateSigningJwk()), state: 'published' };
    const cases: [unknown, RegExp][] = [
      [{ keys: [] }, /"keys" must be a non-empty array/],
      [{ keys: [{ ...active, state: 'published' }] }, /must have exactly one active key, has 0/],
      [{ keys: [active, { ...other, state: 'active' }] }, /must have exactly one active key, has 2/],
      [{ keys: [{ ...active, state: 'spare' }] }, /keys\[0\]: state must be one of active, published, retired/],
      [{ keys: [active, { ...other, kid: active.kid }] }, /keys\[1\]: kid .* appears twice/],
      [{ keys: [{ ...active, d: undefined }] }, /keys\[0\] is the active key but not a private JWK/],
      [{ keys: [{ ...active, crv: 'P-384' }] }, /keys\[0\] is not an ES256 \(P-256\) JWK/],
      [{ keys: [{ ...active, created_at: 'yesterday' }] }, /keys\[0\]: created_at must be an RFC 3339 time/],
    ];
    for (const [content, message] of cases) {
      const file = path.join(dir, 'invalid.jwk');
      await writeFile(file, JSON.stringify(content), { mode: 0o600 });
      await assert.rejects(loadSigningKeySet(file), (err: Error) => {
        assert.ok(err instanceof SigningKeyFileError, err.message);
        assert.match(err.message, message);
        assert.ok(!err.message.includes(active.d!) && !err.message.includes(other.d!), 'no private key material');
        return true;
      });
    }
  });
});
