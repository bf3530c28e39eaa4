import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startDevIssuer } from '../src/dev/issuer.js';
import { createTokenVerifier } from '../src/oidc/verify.js';
import { DEV_AUDIENCE, DISCOVERY_PATH, issuerConfigFor, JWKS_PATH } from './helpers/oidc.js';

describe('dev issuer', () => {
  it('serves discovery and JWKS, and counts requests', async () => {
    const issuer = await startDevIssuer();
    try {
      assert.match(issuer.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const discovery = (await (await fetch(`${issuer.url}${DISCOVERY_PATH}`)).json()) as Record<string, unknown>;
      assert.equal(discovery.issuer, issuer.url);
      assert.equal(discovery.jwks_uri, `${issuer.url}${JWKS_PATH}`);
      const jwks = (await (await fetch(`${issuer.url}${JWKS_PATH}`)).json()) as { keys: Record<string, unknown>[] };
      assert.equal(jwks.keys.length, 1);
      assert.equal(jwks.keys[0]?.kid, issuer.kid);
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.ok(!(member in jwks.keys[0]), `no private member ${member}`);
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1);
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
      assert.equal(issuer.requestCount('/nothing'), 0);
    } finally {
      await issuer.close();
    }
  });

  it('POST /token mints a verifiable token with the posted claims', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const res = await fetch(`${issuer.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api' }),
      });
      assert.equal(res.status, 200);
      const { token } = (await res.json()) as { token: string };
      const verified = await createTokenVerifier([issuerConfigFor(issuer)]).verify(token);
      assert.equal(verified.subject, 'repo:acme/api:ref:refs/heads/main');
      assert.equal(verified.claims.repository, 'acme/api');
      assert.deepEqual(verified.audiences, [DEV_AUDIENCE]);
      assert.equal(verified.expiresAt - verified.issuedAt, 300);

      for (const body of ['not json', '[1]', '"x"']) {
        assert.equal((await fetch(`${issuer.url}/token`, { method: 'POST', body })).status, 400);
      }
      assert.equal((await fetch(`${issuer.url}/token`, { method: 'POST', body: 'x'.repeat(100 * 1024) })).status, 413);
    } finally {
      await issuer.close();
    }
  });

  it('keeps its key across restarts with keyFile (mode 0600)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'dev-issuer-'));
    try {
      const keyFile = path.join(dir, 'nested', 'issuer.jwk');
      const first = await startDevIssuer({ keyFile });
      const kid = first.kid;
      const token = await first.mint();
      const port = Number(new URL(first.url).port);
      await first.close();
      assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
      assert.ok('d' in (JSON.parse(await readFile(keyFile, 'utf8')) as object));

      const second = await startDevIssuer({ keyFile, port });
      try {
        assert.equal(second.kid, kid);
        await createTokenVerifier([issuerConfigFor(second)]).verify(token);
        const rotated = await second.rotateKey();
        assert.notEqual(rotated, kid);
        assert.equal((JSON.parse(await readFile(keyFile, 'utf8')) as { kid: string }).kid, rotated);
        assert.deepEqual(
          second.jwks().keys.map((k) => k.kid),
          [rotated, kid],
        );
      } finally {
        await second.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to bind anything but loopback', async () => {
    for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.com']) {
      await assert.rejects(startDevIssuer({ host }), TypeError, host);
    }
  });

  it('close() drops hung connections', async () => {
    const issuer = await startDevIssuer();
    issuer.setFailure('hang');
    const pending = fetch(`${issuer.url}${JWKS_PATH}`).then(
      () => 'answered',
      () => 'dropped',
    );
    // Only a request the issuer holds tests close(); one refused before it arrived would pass anyway.
    while (issuer.requestCount(JWKS_PATH) === 0) await new Promise((r) => setTimeout(r, 5));
    await issuer.close();
    assert.equal(await pending, 'dropped');
  });
});
