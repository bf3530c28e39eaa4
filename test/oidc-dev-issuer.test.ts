import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { createTokenVerifier } from '../src/oidc/verify.js';
import { cli, logLine, REPO, startCli, waitForOutput } from './helpers/cli.js';
import { DEV_AUDIENCE, DISCOVERY_PATH, decodePayload, issuerConfigFor, JWKS_PATH } from './helpers/oidc.js';

/**
 * One request over raw HTTP to the dev issuer's socket, with the headers given
 * exactly, `Host` included or left out (fetch would not let a test choose it).
 */
async function rawRequest(
  issuer: DevIssuer,
  options: { method?: string; path: string; headers: Record<string, string>; body?: string },
): Promise<{ status: number; json: Record<string, unknown> }> {
  const { hostname, port } = new URL(issuer.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname.replace(/^\[|\]$/g, ''), port, method: options.method ?? 'GET', path: options.path, headers: options.headers, setHost: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

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

      const json = { 'content-type': 'application/json' };
      for (const body of ['not json', '[1]', '"x"']) {
        assert.equal((await fetch(`${issuer.url}/token`, { method: 'POST', headers: json, body })).status, 400);
      }
      assert.equal((await fetch(`${issuer.url}/token`, { method: 'POST', headers: json, body: 'x'.repeat(100 * 1024) })).status, 413);
    } finally {
      await issuer.close();
    }
  });

  it('POST /token?format=raw answers the bare token as text', async () => {
    const issuer = await startDevIssuer();
    try {
      const res = await fetch(`${issuer.url}/token?format=raw`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"repository":"acme/api"}' });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
      const token = await res.text();
      assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
      const verified = await createTokenVerifier([issuerConfigFor(issuer)]).verify(token);
      assert.equal(verified.claims.repository, 'acme/api');
    } finally {
      await issuer.close();
    }
  });

  it('sub defaults to repo:<repository>:ref:<ref> of the claims given', async () => {
    const issuer = await startDevIssuer();
    try {
      for (const [claims, sub] of [
        [{ repository: 'acme/api', ref: 'refs/heads/release' }, 'repo:acme/api:ref:refs/heads/release'],
        [{ repository: 'acme/api' }, 'repo:acme/api:ref:refs/heads/main'],
        [{ ref: 'refs/tags/v1' }, 'repo:local/dev:ref:refs/tags/v1'],
        [{}, 'repo:local/dev:ref:refs/heads/main'],
        // Not strings: the defaults, never "repo:42:..." or "[object Object]".
        [{ repository: 42, ref: { name: 'main' } }, 'repo:local/dev:ref:refs/heads/main'],
        // A sub given is kept as given.
        [{ sub: 'repo:other/repo:environment:prod', repository: 'acme/api' }, 'repo:other/repo:environment:prod'],
      ] as const) {
        assert.equal(decodePayload(await issuer.mint(claims)).sub, sub, JSON.stringify(claims));
        const posted = await fetch(`${issuer.url}/token?format=raw`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(claims) });
        assert.equal(decodePayload(await posted.text()).sub, sub, `POST /token ${JSON.stringify(claims)}`);
      }
    } finally {
      await issuer.close();
    }
  });

  it("`oidc-broker dev issuer`'s start-up hint mints a raw token that the example policy local-dev allows", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'dev-issuer-hint-'));
    const run = startCli(['dev', 'issuer', '--port', '0', '--key-file', path.join(dir, 'key.jwk')]);
    try {
      const { url, mint } = (await waitForOutput(run, logLine('dev issuer listening'))) as { url: string; mint: string };
      const body = '{"repository":"acme/api","ref":"refs/heads/main"}';
      assert.equal(mint, `curl -s -X POST '${url}/token?format=raw' -H 'content-type: application/json' -d '${body}'`);
      // What that curl sends.
      const res = await fetch(`${url}/token?format=raw`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(res.status, 200);
      const token = await res.text();
      const claims = decodePayload(token);
      assert.equal(claims.sub, 'repo:acme/api:ref:refs/heads/main');
      assert.equal(claims.aud, DEV_AUDIENCE, 'the development defaults\' audience');
      const explained = await cli(['policy', 'explain', '--policy', 'local-dev', '--issuer', 'local', '--token', '-', path.join(REPO, 'policies')], { stdin: token });
      assert.equal(explained.code, 0, `${explained.stdout}${explained.stderr}`);
      assert.match(explained.stdout, /^Decision: ALLOW \(allowed\)$/m);
    } finally {
      run.signal('SIGINT');
      assert.equal((await run.done).code, 0);
      await rm(dir, { recursive: true, force: true });
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

  it('answers only requests addressed to a loopback name with its own port (no DNS rebinding)', async () => {
    const issuer = await startDevIssuer();
    try {
      const port = new URL(issuer.url).port;
      const mintBody = JSON.stringify({ sub: 'repo:acme/api:ref:refs/heads/main' });
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
        const discovery = await rawRequest(issuer, { path: DISCOVERY_PATH, headers: { host } });
        assert.equal(discovery.status, 200, host);
        const minted = await rawRequest(issuer, { method: 'POST', path: '/token', headers: { host, 'content-type': 'application/json' }, body: mintBody });
        assert.equal(minted.status, 200, host);
        assert.equal(typeof minted.json.token, 'string');
      }
      // A rebinding page's own name, loopback on another port or none, another loopback address, no Host at all: refused, nothing minted.
      for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1:${Number(port) + 1}`, '127.0.0.1', `localhost.evil.example:${port}`, `127.0.0.2:${port}`, undefined]) {
        for (const [method, path, body] of [['GET', DISCOVERY_PATH, undefined], ['GET', JWKS_PATH, undefined], ['POST', '/token', mintBody]] as const) {
          const headers: Record<string, string> = { 'content-type': 'application/json', ...(host === undefined ? {} : { host }) };
          const res = await rawRequest(issuer, { method, path, headers, ...(body ? { body } : {}) });
          // Without Host, Node's HTTP server answers 400 before the issuer sees the request.
          assert.equal(res.status, host === undefined ? 400 : 421, `${method} ${path} with Host ${JSON.stringify(host)}`);
          if (host !== undefined) assert.equal(res.json.error, 'misdirected_request');
          assert.equal(res.json.token, undefined);
        }
      }
    } finally {
      await issuer.close();
    }
  });

  it('POST /token mints only for Content-Type: application/json (a CORS-simple request never mints)', async () => {
    const issuer = await startDevIssuer();
    try {
      const host = new URL(issuer.url).host;
      const body = JSON.stringify({ sub: 'repo:acme/api:ref:refs/heads/main' });
      for (const contentType of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'application/json-seq', undefined]) {
        const headers: Record<string, string> = { host, ...(contentType === undefined ? {} : { 'content-type': contentType }) };
        const res = await rawRequest(issuer, { method: 'POST', path: '/token', headers, body });
        assert.equal(res.status, 415, String(contentType));
        assert.equal(res.json.error, 'unsupported_media_type');
        assert.equal(res.json.token, undefined);
      }
      for (const contentType of ['application/json', 'Application/JSON; charset=utf-8']) {
        const res = await rawRequest(issuer, { method: 'POST', path: '/token', headers: { host, 'content-type': contentType }, body });
        assert.equal(res.status, 200, contentType);
      }
    } finally {
      await issuer.close();
    }
  });

  it('mint() writes rawClaims verbatim (exp 1e400 reads back as Infinity)', async () => {
    const issuer = await startDevIssuer();
    try {
      const token = await issuer.mint({ repository: 'acme/api' }, { rawClaims: { exp: '1e400', nbf: '-1e400' } });
      const text = Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8');
      assert.match(text, /"exp":1e400/);
      const payload = JSON.parse(text) as Record<string, unknown>;
      assert.equal(payload.exp, Infinity);
      assert.equal(payload.nbf, -Infinity);
      assert.equal(payload.repository, 'acme/api');
      assert.equal(payload.iss, issuer.url);
      assert.equal(Object.keys(payload).filter((k) => k === 'exp').length, 1);
      assert.deepEqual(JSON.parse(Buffer.from((await issuer.mint({}, { omit: ['iss', 'aud', 'sub', 'iat', 'exp', 'jti'], rawClaims: { exp: '1' } })).split('.')[1] ?? '', 'base64url').toString('utf8')), { exp: 1 });
    } finally {
      await issuer.close();
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
