import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FetchFailedError, fetchJson, type FetchFailureKind } from '../src/oidc/safe-fetch.js';
import { isAllowedOutboundUrl } from '../src/oidc/url-policy.js';
import { startCountingServer, type CountingServer } from './helpers/oidc.js';

describe('isAllowedOutboundUrl', () => {
  const table: [string, boolean][] = [
    ['https://token.actions.githubusercontent.com', true],
    ['https://gitlab.example.com/.well-known/openid-configuration', true],
    ['https://10.0.0.1/jwks', true], // https anywhere: the documented rule (docs/configuration.md)
    ['HTTPS://Issuer.Example.com', true],
    ['http://127.0.0.1:8081', true],
    ['http://127.1.2.3/jwks', true],
    ['http://127.1', true], // normalised to 127.0.0.1
    ['http://2130706433/', true], // 127.0.0.1 as an integer
    ['http://localhost:8081', true],
    ['http://LOCALHOST', true],
    ['http://[::1]:8081/', true],
    ['http://[0:0:0:0:0:0:0:1]/', true],
    ['http://issuer.example.com', false],
    ['http://10.0.0.1/', false],
    ['http://128.0.0.1/', false],
    ['http://0.0.0.0/', false],
    ['http://[::ffff:127.0.0.1]/', false],
    ['http://localhost.evil.example/', false],
    ['http://127.0.0.1.evil.example/', false],
    ['http://evil.example/#@127.0.0.1', false],
    ['http://127.0.0.1@evil.example/', false],
    ['https://user:pass@issuer.example.com', false],
    ['https://user@issuer.example.com', false],
    ['ftp://127.0.0.1/', false],
    ['file:///etc/passwd', false],
    ['data:application/json,{}', false],
    ['javascript:alert(1)', false],
    ['//issuer.example.com', false],
    ['/relative', false],
    ['', false],
    ['not a url', false],
  ];
  for (const [url, expected] of table) {
    it(`${JSON.stringify(url)} -> ${expected}`, () => assert.equal(isAllowedOutboundUrl(url), expected));
  }
  it('never throws on non-strings', () => {
    for (const v of [undefined, null, 42, {}, []]) assert.equal(isAllowedOutboundUrl(v as string), false);
  });
});

describe('fetchJson', () => {
  let server: CountingServer;
  const big = JSON.stringify({ keys: [], padding: 'x'.repeat(600 * 1024) });

  before(async () => {
    server = await startCountingServer((req, res) => {
      switch (req.url) {
        case '/ok':
          res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
          return res.end('{"keys":[]}');
        case '/jwk-set':
          res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
          return res.end('{"keys":[]}');
        case '/big-declared':
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(big) });
          return res.end(big);
        case '/big-chunked':
          res.writeHead(200, { 'content-type': 'application/json' });
          // No content-length: the cap must stop the read itself.
          for (let i = 0; i < 100; i++) res.write('x'.repeat(10 * 1024));
          return res.end();
        case '/html':
          res.writeHead(200, { 'content-type': 'text/html' });
          return res.end('<html></html>');
        case '/no-type':
          res.writeHead(200);
          return res.end('{}');
        case '/not-json':
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end('{"keys": [');
        case '/not-utf8':
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(Buffer.from([0x22, 0xff, 0xfe, 0x22]));
        case '/redirect':
          res.writeHead(302, { location: '/ok' });
          return res.end();
        case '/permanent':
          res.writeHead(308, { location: '/ok' });
          return res.end();
        case '/missing':
          res.writeHead(404, { 'content-type': 'application/json' });
          return res.end('{}');
        case '/error':
          res.writeHead(503, { 'content-type': 'application/json' });
          return res.end('{"error":"secret upstream detail"}');
        case '/created':
          res.writeHead(201, { 'content-type': 'application/json' });
          return res.end('{}');
        case '/hang':
          return; // never answers
        case '/slow-body':
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write('{"keys":');
          return; // body never finishes
        default:
          res.writeHead(404);
          return res.end();
      }
    });
  });
  after(() => server.close());

  async function failure(url: string, options = {}): Promise<FetchFailedError> {
    try {
      await fetchJson(url, options);
    } catch (err) {
      assert.ok(err instanceof FetchFailedError, String(err));
      return err;
    }
    assert.fail(`${url} should have failed`);
  }

  it('fetches JSON (application/json and +json)', async () => {
    assert.deepEqual(await fetchJson(`${server.url}/ok`), { keys: [] });
    assert.deepEqual(await fetchJson(`${server.url}/jwk-set`), { keys: [] });
  });

  const cases: [string, FetchFailureKind][] = [
    ['/big-declared', 'too_large'],
    ['/big-chunked', 'too_large'],
    ['/html', 'content_type'],
    ['/no-type', 'content_type'],
    ['/not-json', 'bad_json'],
    ['/not-utf8', 'bad_json'],
    ['/redirect', 'redirect'],
    ['/permanent', 'redirect'],
    ['/missing', 'http_status'],
    ['/error', 'http_status'],
    ['/created', 'http_status'],
  ];
  for (const [path, kind] of cases) {
    it(`${path} -> ${kind}`, async () => {
      const err = await failure(`${server.url}${path}`);
      assert.equal(err.kind, kind);
      assert.ok(!err.message.includes('secret upstream detail'), 'no upstream body in messages');
    });
  }

  it('does not follow redirects', async () => {
    const before = server.paths().filter((p) => p === '/ok').length;
    await failure(`${server.url}/redirect`);
    assert.equal(server.paths().filter((p) => p === '/ok').length, before);
  });

  it('times out on a server that never answers, or never finishes the body', async () => {
    for (const path of ['/hang', '/slow-body']) {
      const err = await failure(`${server.url}${path}`, { timeoutMs: 200 });
      assert.equal(err.kind, 'timeout');
    }
  });

  it('refuses disallowed URLs without any request', async () => {
    const before = server.count();
    for (const url of ['http://example.com/jwks', 'file:///etc/passwd', `ftp://127.0.0.1/`, 'https://user:pw@example.com/']) {
      assert.equal((await failure(url)).kind, 'url_not_allowed');
    }
    assert.equal(server.count(), before);
  });

  it('a respected smaller cap', async () => {
    assert.equal((await failure(`${server.url}/ok`, { maxBytes: 4 })).kind, 'too_large');
  });

  it('connection refused is a network failure', async () => {
    const closed = await startCountingServer();
    const url = closed.url;
    await closed.close();
    assert.equal((await failure(`${url}/ok`)).kind, 'network');
  });
});
