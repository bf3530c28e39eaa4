import assert from 'node:assert/strict';
import { constants, createHash, createPublicKey, generateKeyPairSync, randomUUID, sign, type KeyObject, type SignKeyObjectInput } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { loadConfig } from '../src/config.js';
import { DEFAULT_ISSUER_BOUNDS, DEFAULT_JWKS_STALE_IF_ERROR_SECONDS, DEFAULT_MAX_TOKEN_LIFETIME_SECONDS } from '../src/oidc/issuer-defaults.js';
import { DEFAULT_JWKS_CACHE_MAX_AGE_MS, DEFAULT_JWKS_COOLDOWN_MS } from '../src/oidc/jwks.js';
import { MAX_TOKEN_LENGTH } from '../src/oidc/jws.js';
import type { IssuerConfig, JwksFetchOutcome, OnJwksFetch } from '../src/oidc/types.js';
import { createTokenVerifier, readUnverifiedIdentity, type TokenVerifierOptions } from '../src/oidc/verify.js';
import { createCapturingLogger } from './helpers/broker-fixture.js';
import {
  assertInvalidToken,
  assertIssuerUnavailable,
  DEV_AUDIENCE,
  DISCOVERY_PATH,
  decodePayload,
  issuerConfigFor,
  JWKS_PATH,
  manualClock,
  nowSeconds,
  startCountingServer,
  withPayload,
  type CountingServer,
} from './helpers/oidc.js';

// Short windows so cooldown behaviour is observable in a test run.
const FAST: TokenVerifierOptions = { jwksCooldownMs: 200, fetchTimeoutMs: 400 };

describe('verify: one dev issuer over loopback HTTP', () => {
  let issuer: DevIssuer;
  let stranger: DevIssuer; // a second, unconfigured issuer: the attacker's
  let target: CountingServer; // where token-supplied URLs point
  let verify: (token: string) => ReturnType<ReturnType<typeof createTokenVerifier>['verify']>;
  const fetches: [string, JwksFetchOutcome][] = [];

  before(async () => {
    issuer = await startDevIssuer();
    stranger = await startDevIssuer();
    target = await startCountingServer();
    const verifier = createTokenVerifier([issuerConfigFor(issuer, { name: 'local', maxTokenAgeSeconds: 3600 })], {
      ...FAST,
      onJwksFetch: (name, outcome) => fetches.push([name, outcome]),
    });
    verify = (token) => verifier.verify(token);
  });

  after(async () => {
    // No request may ever have reached a URL taken from a token.
    assert.equal(target.count(), 0, `token-supplied URLs were fetched: ${target.paths().join(', ')}`);
    assert.equal(stranger.requestCount(DISCOVERY_PATH), 0);
    assert.equal(stranger.requestCount(JWKS_PATH), 0);
    await Promise.all([issuer.close(), stranger.close(), target.close()]);
  });

  it('accepts a valid token and returns its verified identity', async () => {
    const token = await issuer.mint({ repository: 'acme/api', ref: 'refs/heads/main' });
    const verified = await verify(token);
    const claims = decodePayload(token);
    assert.equal(verified.issuerName, 'local');
    assert.equal(verified.issuer, issuer.url);
    assert.equal(verified.subject, claims.sub);
    assert.deepEqual(verified.audiences, [DEV_AUDIENCE]);
    assert.equal(verified.jti, claims.jti);
    assert.equal(verified.expiresAt, claims.exp);
    assert.equal(verified.issuedAt, claims.iat);
    assert.equal(verified.claims.repository, 'acme/api');
    assert.equal(verified.tokenSha256, createHash('sha256').update(token).digest('hex'));
    assert.ok(Object.isFrozen(verified.claims));
    assert.deepEqual(fetches, [
      ['local', 'ok'],
      ['local', 'ok'],
    ]); // discovery, then JWKS
  });

  it('accepts an aud array holding a configured audience, and a token without jti', async () => {
    const verified = await verify(await issuer.mint({ aud: ['https://other.example', DEV_AUDIENCE] }, { omit: ['jti'] }));
    assert.deepEqual(verified.audiences, ['https://other.example', DEV_AUDIENCE]);
    assert.equal(verified.jti, undefined);
  });

  it('accepts exp and nbf within the clock skew', async () => {
    const now = nowSeconds();
    await verify(await issuer.mint({ exp: now - 30, nbf: now + 30 }, { issuedAt: now - 300 }));
  });

  describe('refuses bad claims with the right reason', () => {
    const cases: { name: string; reason: string; mint: () => Promise<string> }[] = [
      { name: 'expired', reason: 'expired', mint: () => issuer.mint({}, { issuedAt: nowSeconds() - 1000, expiresInSeconds: 300 }) },
      { name: 'expired just past the skew', reason: 'expired', mint: () => issuer.mint({ exp: nowSeconds() - 61 }, { issuedAt: nowSeconds() - 600 }) },
      { name: 'nbf in the future', reason: 'not_yet_valid', mint: () => issuer.mint({ nbf: nowSeconds() + 600 }) },
      { name: 'iat in the future', reason: 'issued_in_future', mint: () => issuer.mint({}, { issuedAt: nowSeconds() + 600 }) },
      { name: 'older than max_token_age_seconds', reason: 'token_too_old', mint: () => issuer.mint({}, { issuedAt: nowSeconds() - 7200, expiresInSeconds: 86400 }) },
      { name: 'wrong aud', reason: 'audience_mismatch', mint: () => issuer.mint({ aud: 'https://elsewhere.example.com' }) },
      { name: 'aud array without ours', reason: 'audience_mismatch', mint: () => issuer.mint({ aud: ['https://a.example', 'https://b.example'] }) },
      { name: 'aud differing only by a trailing slash', reason: 'audience_mismatch', mint: () => issuer.mint({ aud: `${DEV_AUDIENCE}/` }) },
      { name: 'missing aud', reason: 'missing_claim', mint: () => issuer.mint({}, { omit: ['aud'] }) },
      { name: 'missing exp', reason: 'missing_claim', mint: () => issuer.mint({}, { omit: ['exp'] }) },
      { name: 'missing iat', reason: 'missing_claim', mint: () => issuer.mint({}, { omit: ['iat'] }) },
      { name: 'missing sub', reason: 'missing_claim', mint: () => issuer.mint({}, { omit: ['sub'] }) },
      { name: 'missing iss', reason: 'missing_claim', mint: () => issuer.mint({}, { omit: ['iss'] }) },
      { name: 'exp as a string', reason: 'invalid_claim', mint: () => issuer.mint({ exp: String(nowSeconds() + 300) }) },
      { name: 'iat as a string', reason: 'invalid_claim', mint: () => issuer.mint({ iat: String(nowSeconds()) }) },
      { name: 'sub as null', reason: 'invalid_claim', mint: () => issuer.mint({ sub: null }) },
      { name: 'sub as a number', reason: 'invalid_claim', mint: () => issuer.mint({ sub: 42 }) },
      { name: 'empty sub', reason: 'invalid_claim', mint: () => issuer.mint({ sub: '' }) },
      { name: 'jti as a number', reason: 'invalid_claim', mint: () => issuer.mint({ jti: 7 }) },
      { name: 'iss as a number', reason: 'invalid_claim', mint: () => issuer.mint({ iss: 7 }) },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const token = await c.mint();
        const err = await assertInvalidToken(verify(token), c.reason, token);
        if (c.name.startsWith('missing ')) assert.match(err.message, new RegExp(`"${c.name.slice('missing '.length)}"`));
      });
    }
  });

  describe('unknown issuers: refused, and nothing is fetched for them', () => {
    it('a token from an unconfigured issuer', async () => {
      const token = await stranger.mint();
      await assertInvalidToken(verify(token), 'unknown_issuer', token);
      assert.equal(stranger.requestCount(DISCOVERY_PATH), 0);
      assert.equal(stranger.requestCount(JWKS_PATH), 0);
    });

    it('iss must match exactly (trailing slash, case, whitespace)', async () => {
      const before = issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH);
      for (const iss of [`${issuer.url}/`, issuer.url.toUpperCase(), ` ${issuer.url}`, issuer.url.replace('127.0.0.1', 'localhost')]) {
        const token = await issuer.mint({ iss });
        await assertInvalidToken(verify(token), 'unknown_issuer', token);
      }
      assert.equal(issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH), before);
    });

    it('an iss pointing at an arbitrary URL', async () => {
      const token = await stranger.mint({ iss: `${target.url}/evil` });
      await assertInvalidToken(verify(token), 'unknown_issuer', token);
    });
  });

  describe('algorithm policy', () => {
    it('alg none', async () => {
      const token = await issuer.mint({}, { alg: 'none' });
      assert.ok(token.endsWith('.'));
      await assertInvalidToken(verify(token), 'unsupported_algorithm', token);
    });

    it('alg none spelled otherwise', async () => {
      for (const alg of ['None', 'NONE', 'nOnE']) {
        const token = await issuer.mint({}, { alg: 'none', header: { alg } });
        await assertInvalidToken(verify(token), 'unsupported_algorithm', token);
      }
    });

    it('HS256 signed with the public key bytes (algorithm confusion)', async () => {
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        const token = await issuer.mint({}, { alg });
        await assertInvalidToken(verify(token), 'unsupported_algorithm', token);
      }
      // The same forgery with the JWK's modulus bytes as the secret.
      const n = Buffer.from(String(issuer.jwks().keys[0]?.n), 'base64url');
      const token = await issuer.mint({}, { alg: 'HS256', secret: n });
      await assertInvalidToken(verify(token), 'unsupported_algorithm', token);
    });

    it('an asymmetric alg outside the allowlist (PS256 with the issuer RSA key)', async () => {
      const token = await issuer.mint({}, { alg: 'PS256' });
      await assertInvalidToken(verify(token), 'unsupported_algorithm', token);
    });

    it('alg missing or not a string', async () => {
      for (const alg of [undefined, 7, ['RS256'], '']) {
        const good = await issuer.mint();
        const [, payload, signature] = good.split('.');
        const header = Buffer.from(JSON.stringify({ typ: 'JWT', kid: issuer.kid, ...(alg === undefined ? {} : { alg }) })).toString('base64url');
        await assertInvalidToken(verify(`${header}.${payload}.${signature}`), 'unsupported_algorithm');
      }
    });

    it('a config naming none, HS* or an unknown alg is refused at creation', () => {
      for (const algorithms of [['none'], ['RS256', 'HS256'], ['HS512'], ['RS256', 'ES256K'], []]) {
        assert.throws(() => createTokenVerifier([issuerConfigFor(issuer, { algorithms })]), TypeError, `algorithms ${JSON.stringify(algorithms)}`);
      }
    });
  });

  describe('token-supplied keys are refused and never fetched', () => {
    for (const name of ['jku', 'x5u']) {
      it(`${name} header`, async () => {
        const token = await issuer.mint({}, { header: { [name]: `${target.url}/${name}` } });
        await assertInvalidToken(verify(token), 'untrusted_key_reference', token);
        // Even signed by an attacker, with the attacker's kid.
        const forged = await stranger.mint({ iss: issuer.url }, { header: { [name]: `${target.url}/${name}-forged` } });
        await assertInvalidToken(verify(forged), 'untrusted_key_reference', forged);
        assert.equal(target.count(), 0);
      });
    }

    it('jwk header: an embedded attacker key', async () => {
      const attackerKey = stranger.jwks().keys[0];
      const forged = await stranger.mint({ iss: issuer.url }, { header: { jwk: attackerKey, kid: undefined } });
      await assertInvalidToken(verify(forged), 'untrusted_key_reference', forged);
      // Even when it embeds the issuer's real public key (and is signed by the issuer).
      const embedded = await issuer.mint({}, { header: { jwk: issuer.jwks().keys[0] } });
      await assertInvalidToken(verify(embedded), 'untrusted_key_reference', embedded);
    });

    it('x5c header', async () => {
      const token = await issuer.mint({}, { header: { x5c: ['MIIB'] } });
      await assertInvalidToken(verify(token), 'untrusted_key_reference', token);
    });

    it('checked before the issuer: an unknown issuer with jku fetches nothing either', async () => {
      const token = await stranger.mint({}, { header: { jku: `${target.url}/jwks` } });
      await assertInvalidToken(verify(token), 'untrusted_key_reference', token);
      assert.equal(target.count(), 0);
    });
  });

  describe('signatures', () => {
    it('tampered payload', async () => {
      const token = await issuer.mint({ repository: 'acme/api' });
      const tampered = withPayload(token, { ...decodePayload(token), repository: 'acme/prod' });
      await assertInvalidToken(verify(tampered), 'bad_signature', tampered);
    });

    it('tampered header (kid kept, typ changed)', async () => {
      const token = await issuer.mint();
      const [, payload, signature] = token.split('.');
      const header = Buffer.from(JSON.stringify({ alg: issuer.alg, kid: issuer.kid, typ: 'at+jwt' })).toString('base64url');
      await assertInvalidToken(verify(`${header}.${payload}.${signature}`), 'bad_signature');
    });

    it('truncated, emptied or swapped signature', async () => {
      const token = await issuer.mint();
      const other = await issuer.mint({ sub: 'someone-else' });
      const [h, p, s] = token.split('.') as [string, string, string];
      await assertInvalidToken(verify(`${h}.${p}.${s.slice(0, -4)}`), 'bad_signature');
      await assertInvalidToken(verify(`${h}.${p}.`), 'bad_signature');
      await assertInvalidToken(verify(`${h}.${p}.${other.split('.')[2]}`), 'bad_signature');
    });

    it('signed with another key under the issuer kid', async () => {
      const forged = await stranger.mint({ iss: issuer.url }, { kid: issuer.kid });
      await assertInvalidToken(verify(forged), 'bad_signature', forged);
    });

    it('signed with another key under its own kid', async () => {
      const forged = await stranger.mint({ iss: issuer.url });
      await assertInvalidToken(verify(forged), 'unknown_key', forged);
    });
  });

  describe('malformed input', () => {
    it('oversized tokens, before any parsing', async () => {
      await assertInvalidToken(verify('a'.repeat(MAX_TOKEN_LENGTH + 1)), 'token_too_large');
      const big = await issuer.mint({ padding: 'x'.repeat(MAX_TOKEN_LENGTH) });
      await assertInvalidToken(verify(big), 'token_too_large', big);
    });

    it('an unknown critical header extension, or an unencoded payload (b64: false)', async () => {
      const crit = await issuer.mint({}, { header: { crit: ['urn:example:policy'], 'urn:example:policy': 1 } });
      await assertInvalidToken(verify(crit), 'malformed', crit);
      const b64 = await issuer.mint({}, { header: { crit: ['b64'], b64: false } });
      await assertInvalidToken(verify(b64), 'malformed', b64);
    });

    it('garbage strings', async () => {
      const good = await issuer.mint();
      const [h, p, s] = good.split('.') as [string, string, string];
      const b64 = (v: string) => Buffer.from(v).toString('base64url');
      const garbage: unknown[] = [
        '',
        'abc',
        'a.b',
        'a.b.c.d',
        '..',
        '...',
        '\u0000',
        'null',
        ' ',
        `Bearer ${good}`,
        ` ${good}`,
        `${good} `,
        `${good}\n`,
        `${h}.${p}.${s}.`,
        `${h}.${p}`,
        `.${p}.${s}`,
        `${h}..${s}`,
        `${h}=.${p}.${s}`,
        `${h}.${p}=.${s}`,
        `${h}.${p}.${s}==`,
        `${h}.${p}+/.${s}`,
        `${b64('not json')}.${p}.${s}`,
        `${b64('[1,2]')}.${p}.${s}`,
        `${b64('"RS256"')}.${p}.${s}`,
        `${h}.${b64('not json')}.${s}`,
        `${h}.${b64('[]')}.${s}`,
        `${h}.${b64('"claims"')}.${s}`,
        `${h}.${b64('{"iss":')}.${s}`,
        `${h}.${Buffer.from([0xff, 0xfe, 0x7b, 0x7d]).toString('base64url')}.${s}`,
        'eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d', // a JWE
        undefined,
        null,
        42,
        {},
        ['a', 'b', 'c'],
      ];
      for (const input of garbage) {
        await assertInvalidToken(verify(input as string), 'malformed', typeof input === 'string' ? input : undefined);
      }
    });
  });

  describe('readUnverifiedIdentity', () => {
    it('reads iss and sub of a token it cannot verify, and never throws', async () => {
      const token = await stranger.mint({ sub: 'repo:evil/repo:ref:refs/heads/main' });
      assert.deepEqual(readUnverifiedIdentity(token), { iss: stranger.url, sub: 'repo:evil/repo:ref:refs/heads/main' });
      for (const input of ['', 'garbage', 'a.b.c', '..', 'a'.repeat(MAX_TOKEN_LENGTH + 1), undefined, null, 5, {}]) {
        assert.deepEqual(readUnverifiedIdentity(input as string), {});
      }
      assert.deepEqual(readUnverifiedIdentity(await issuer.mint({ iss: 5, sub: { a: 1 } })), {});
    });

    it('caps lengths and strips control and bidi characters', async () => {
      const token = await stranger.mint({ iss: `https://x.example/${'i'.repeat(1000)}`, sub: 'a\nb\u0000c\u202Ed\u001b[31m' });
      const identity = readUnverifiedIdentity(token);
      assert.equal(identity.iss?.length, 256);
      assert.equal(identity.sub, 'abcd[31m');
    });
  });
});

describe('verify: time claims must be usable times', () => {
  let issuer: DevIssuer;
  before(async () => {
    issuer = await startDevIssuer({ alg: 'ES256' });
  });
  after(() => issuer.close());

  // JSON.parse reads 1e400 as Infinity; jose compares it as given, so exp: 1e400 used to mean "never expires".
  const unusable: { claim: 'exp' | 'nbf' | 'iat'; raw: string }[] = [
    { claim: 'exp', raw: '1e400' },
    { claim: 'exp', raw: '-1e400' },
    { claim: 'exp', raw: '-1' },
    { claim: 'nbf', raw: '1e400' },
    { claim: 'nbf', raw: '-1e400' },
    { claim: 'nbf', raw: '-0.5' },
    { claim: 'iat', raw: '1e400' },
    { claim: 'iat', raw: '-1e400' },
    { claim: 'iat', raw: '-60' },
  ];
  for (const { claim, raw } of unusable) {
    it(`${claim}: ${raw} -> invalid_claim naming "${claim}", before any key is fetched`, async () => {
      const fetchesBefore = issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH);
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      const token = await issuer.mint({}, { rawClaims: { [claim]: raw } });
      const err = await assertInvalidToken(verifier.verify(token), 'invalid_claim', token);
      assert.match(err.message, new RegExp(`"${claim}" claim is not a usable time`));
      assert.equal(issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH), fetchesBefore);
    });
  }

  // Any other claim too: a policy would compare Infinity as a number, and the audit record would show null.
  for (const raw of ['{"big":1e400}', '{"deep":[1,{"x":-1e400}]}']) {
    it(`a non-finite number anywhere in the claims (${raw}) -> invalid_claim, before any key is fetched`, async () => {
      const fetchesBefore = issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH);
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      const token = await issuer.mint({}, { rawClaims: { extra: raw } });
      const err = await assertInvalidToken(verifier.verify(token), 'invalid_claim', token);
      assert.match(err.message, /holds a number beyond what JSON numbers can carry/);
      assert.equal(issuer.requestCount(DISCOVERY_PATH) + issuer.requestCount(JWKS_PATH), fetchesBefore);
    });
  }

  it('exp: at most max_token_lifetime_seconds (default 86400) plus the clock skew after now', async () => {
    const clock = manualClock();
    const verifier = createTokenVerifier([issuerConfigFor(issuer, { clockSkewSeconds: 60 })], { ...FAST, now: clock.now });
    const now = clock.seconds();
    await verifier.verify(await issuer.mint({ exp: now + 86_400 + 60 }, { issuedAt: now }));
    for (const exp of [now + 86_400 + 61, 1e300, Number.MAX_SAFE_INTEGER + 2]) {
      const token = await issuer.mint({ exp }, { issuedAt: now });
      const err = await assertInvalidToken(verifier.verify(token), 'lifetime_too_long', token);
      assert.match(err.message, /"exp" claim is further in the future than this issuer allows \(max_token_lifetime_seconds\)/);
    }
  });

  it('exp: the bound is per issuer (maxTokenLifetimeSeconds)', async () => {
    const clock = manualClock();
    const verifier = createTokenVerifier([issuerConfigFor(issuer, { clockSkewSeconds: 10, maxTokenLifetimeSeconds: 600 })], { ...FAST, now: clock.now });
    const now = clock.seconds();
    await verifier.verify(await issuer.mint({ exp: now + 610 }, { issuedAt: now }));
    await assertInvalidToken(verifier.verify(await issuer.mint({ exp: now + 611 }, { issuedAt: now })), 'lifetime_too_long');
    assert.throws(() => createTokenVerifier([issuerConfigFor(issuer, { maxTokenLifetimeSeconds: 0 })]), TypeError);
    assert.throws(() => createTokenVerifier([issuerConfigFor(issuer, { maxTokenLifetimeSeconds: Infinity })]), TypeError);
  });

  it('finite times far off are refused by the ordinary checks: iat and nbf in the future, exp long past', async () => {
    const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
    await assertInvalidToken(verifier.verify(await issuer.mint({ exp: 1e300 + 1 }, { issuedAt: 1e300 })), 'lifetime_too_long');
    await assertInvalidToken(verifier.verify(await issuer.mint({}, { issuedAt: nowSeconds() + 61, expiresInSeconds: 60 })), 'issued_in_future');
    await assertInvalidToken(verifier.verify(await issuer.mint({ nbf: 1e300 })), 'not_yet_valid');
    await assertInvalidToken(verifier.verify(await issuer.mint({ exp: 0 }, { issuedAt: 0 })), 'expired');
  });
});

describe('verify: key sources', () => {
  it('discovery: fetched once, then cached', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      await verifier.verify(await issuer.mint());
      await verifier.verify(await issuer.mint());
      await Promise.all([1, 2, 3].map(async () => verifier.verify(await issuer.mint())));
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1);
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('concurrent first tokens share one discovery and one JWKS fetch', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      const tokens = await Promise.all(Array.from({ length: 20 }, () => issuer.mint()));
      await Promise.all(tokens.map((t) => verifier.verify(t)));
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1);
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('jwks_uri: no discovery', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${issuer.url}${JWKS_PATH}` })], FAST);
      const verified = await verifier.verify(await issuer.mint());
      assert.equal(verified.issuer, issuer.url);
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 0);
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('static jwks: no network at all, even for an unknown kid', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const fetches: string[] = [];
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwks: issuer.jwks() })], {
        now: clock.now,
        onJwksFetch: (name, outcome) => fetches.push(`${name}:${outcome}`),
      });
      await verifier.verify(await issuer.mint());
      await assertInvalidToken(verifier.verify(await issuer.mint({}, { kid: 'not-a-published-kid' })), 'unknown_key');
      await issuer.rotateKey();
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      await assertInvalidToken(verifier.verify(await issuer.mint()), 'unknown_key');
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 0);
      assert.equal(issuer.requestCount(JWKS_PATH), 0);
      assert.deepEqual(fetches, []);
    } finally {
      await issuer.close();
    }
  });

  it('static jwks with private or symmetric key material is refused at creation', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const pub = issuer.jwks().keys[0] as Record<string, unknown>;
      for (const keys of [[{ ...pub, d: 'AAAA' }], [{ kty: 'oct', k: 'c2VjcmV0' }], 'not-an-array']) {
        assert.throws(() => createTokenVerifier([issuerConfigFor(issuer, { jwks: { keys } as never })]), TypeError);
      }
      assert.throws(() => createTokenVerifier([issuerConfigFor(issuer, { jwks: { keys: [pub] }, jwksUri: `${issuer.url}${JWKS_PATH}` })]), TypeError);
    } finally {
      await issuer.close();
    }
  });

  it('refuses an invalid issuer list at creation', () => {
    const base = { name: 'a', issuer: 'https://issuer.example', audiences: ['x'], algorithms: ['RS256'], clockSkewSeconds: 60, ...DEFAULT_ISSUER_BOUNDS };
    const bad = [
      [{ ...base, issuer: 'http://issuer.example' }],
      [{ ...base, issuer: 'not a url' }],
      [{ ...base, jwksUri: 'http://keys.example/jwks' }],
      [{ ...base, audiences: [] }],
      [{ ...base, clockSkewSeconds: -1 }],
      [{ ...base, maxTokenAgeSeconds: 0 }],
      [base, { ...base, name: 'b' }],
      [base, { ...base, issuer: 'https://other.example' }],
    ];
    for (const issuers of bad) assert.throws(() => createTokenVerifier(issuers), TypeError, JSON.stringify(issuers));
  });

  it('the per-issuer bounds are filled in once, by the config loader; the verifier applies no default of its own', async () => {
    const { issuers } = await loadConfig(undefined, {});
    for (const issuer of issuers) {
      assert.equal(issuer.maxTokenLifetimeSeconds, DEFAULT_MAX_TOKEN_LIFETIME_SECONDS, issuer.name);
      assert.equal(issuer.jwksStaleIfErrorSeconds, DEFAULT_JWKS_STALE_IF_ERROR_SECONDS, issuer.name);
    }
    const base = { name: 'a', issuer: 'https://issuer.example', audiences: ['x'], algorithms: ['RS256'], clockSkewSeconds: 60 };
    for (const bounds of [{ maxTokenLifetimeSeconds: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS }, { jwksStaleIfErrorSeconds: DEFAULT_JWKS_STALE_IF_ERROR_SECONDS }]) {
      const incomplete = { ...base, ...bounds } as unknown as IssuerConfig;
      assert.throws(() => createTokenVerifier([incomplete]), TypeError, JSON.stringify(bounds));
    }
  });

  it('several issuers: each token is checked against its own issuer keys and audiences', async () => {
    const a = await startDevIssuer();
    const b = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier(
        [issuerConfigFor(a, { name: 'a' }), issuerConfigFor(b, { name: 'b', audiences: ['https://b-only.example'] })],
        FAST,
      );
      assert.equal((await verifier.verify(await a.mint())).issuerName, 'a');
      assert.equal((await verifier.verify(await b.mint({ aud: 'https://b-only.example' }))).issuerName, 'b');
      await assertInvalidToken(verifier.verify(await b.mint()), 'audience_mismatch');
      // a's key under b's name: b's keys do not hold it.
      await assertInvalidToken(verifier.verify(await a.mint({ iss: b.url })), 'unsupported_algorithm'); // RS256 is not in b's allowlist
      const crossKid = await a.mint({ iss: b.url }, { kid: b.kid, alg: 'RS256' });
      await assertInvalidToken(createTokenVerifier([issuerConfigFor(b, { algorithms: ['RS256', 'ES256'] })], FAST).verify(crossKid), 'unknown_key');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('verify: remote key refresh', () => {
  it('key rotation: a new kid triggers one refetch, and old tokens keep verifying', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], { now: clock.now });
      const oldKid = issuer.kid;
      const oldToken = await issuer.mint();
      await verifier.verify(oldToken);
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      const newKid = await issuer.rotateKey();
      const newToken = await issuer.mint();
      assert.notEqual(newKid, oldKid);
      await verifier.verify(newToken);
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      await verifier.verify(oldToken);
      await verifier.verify(await issuer.mint());
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('a rotation inside the cooldown is picked up only once the cooldown has passed', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], { now: clock.now });
      await verifier.verify(await issuer.mint());
      await issuer.rotateKey();
      const token = await issuer.mint();
      await assertInvalidToken(verifier.verify(token), 'unknown_key');
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS - 1);
      await assertInvalidToken(verifier.verify(token), 'unknown_key');
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
      clock.advance(1);
      await verifier.verify(token);
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
    } finally {
      await issuer.close();
    }
  });

  it('a flood of tokens with random kids causes at most one refetch per cooldown', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const fetches: JwksFetchOutcome[] = [];
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${issuer.url}${JWKS_PATH}` })], {
        now: clock.now,
        onJwksFetch: (_name, outcome) => fetches.push(outcome),
      });
      await verifier.verify(await issuer.mint());
      assert.equal(issuer.requestCount(JWKS_PATH), 1);

      // Inside the cooldown of that first fetch: no refetch at all.
      const early = await Promise.all(Array.from({ length: 50 }, () => issuer.mint({}, { kid: randomUUID() })));
      await Promise.all(early.map((t) => assertInvalidToken(verifier.verify(t), 'unknown_key')));
      assert.equal(issuer.requestCount(JWKS_PATH), 1);

      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      // Cooldown over: 50 concurrent misses share exactly one refetch...
      const flood = await Promise.all(Array.from({ length: 50 }, () => issuer.mint({}, { kid: randomUUID() })));
      await Promise.all(flood.map((t) => assertInvalidToken(verifier.verify(t), 'unknown_key')));
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      // ...and 50 more, one after the other, cause none.
      for (let i = 0; i < 50; i++) await assertInvalidToken(verifier.verify(await issuer.mint({}, { kid: randomUUID() })), 'unknown_key');
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      // Valid tokens still verify from the cache.
      await verifier.verify(await issuer.mint());
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      assert.deepEqual(fetches, ['ok', 'ok']);
    } finally {
      await issuer.close();
    }
  });

  it('keys older than the cache max age are refetched, even for a known kid (in the background while they may serve as stale keys)', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    const { onJwksFetch, ended } = recordJwksFetches();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], { now: clock.now, onJwksFetch });
      await verifier.verify(await issuer.mint({}, { issuedAt: clock.seconds() }));
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS - 1);
      await verifier.verify(await issuer.mint({}, { issuedAt: clock.seconds() }));
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
      clock.advance(1);
      await verifier.verify(await issuer.mint({}, { issuedAt: clock.seconds() }));
      // One discovery and two JWKS fetches.
      await ended(3);
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1, 'discovery is not repeated');
    } finally {
      await issuer.close();
    }
  });

  it('with jwks_stale_if_error_seconds 0, keys older than the cache max age are refetched before use', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksStaleIfErrorSeconds: 0 })], { now: clock.now });
      await verifier.verify(await issuer.mint({}, { issuedAt: clock.seconds() }));
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await verifier.verify(await issuer.mint({}, { issuedAt: clock.seconds() }));
      assert.equal(issuer.requestCount(JWKS_PATH), 2);
    } finally {
      await issuer.close();
    }
  });
});

describe('verify: unavailable issuers', () => {
  const modes = ['500', 'hang', 'garbage', 'redirect'] as const;

  for (const mode of modes) {
    it(`jwks_uri answering "${mode}" -> IssuerUnavailableError(jwks_unavailable), then recovery`, async () => {
      const issuer = await startDevIssuer({ alg: 'ES256' });
      const fetches: JwksFetchOutcome[] = [];
      const clock = manualClock();
      try {
        const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${issuer.url}${JWKS_PATH}` })], {
          now: clock.now,
          fetchTimeoutMs: 300,
          onJwksFetch: (_name, outcome) => fetches.push(outcome),
        });
        const token = await issuer.mint();
        issuer.setFailure(mode);
        const err = await assertIssuerUnavailable(verifier.verify(token), 'jwks_unavailable');
        assert.ok(!err.message.includes(token));
        assert.equal(issuer.requestCount(JWKS_PATH), 1);
        if (mode === 'redirect') assert.equal(issuer.requestCount(`/redirected${JWKS_PATH}`), 0, 'the redirect must not be followed');

        // Within the cooldown, up to its last millisecond: fail fast, no new request, even once the issuer is back.
        await assertIssuerUnavailable(verifier.verify(token), 'jwks_unavailable');
        issuer.setFailure('none');
        clock.advance(DEFAULT_JWKS_COOLDOWN_MS - 1);
        await assertIssuerUnavailable(verifier.verify(await issuer.mint()), 'jwks_unavailable');
        assert.equal(issuer.requestCount(JWKS_PATH), 1);

        // Cooldown over: verifies.
        clock.advance(1);
        await verifier.verify(token);
        assert.equal(issuer.requestCount(JWKS_PATH), 2);
        assert.deepEqual(fetches, ['error', 'ok']);
      } finally {
        await issuer.close();
      }
    });
  }

  for (const mode of modes) {
    it(`discovery answering "${mode}" -> IssuerUnavailableError(discovery_failed), then recovery`, async () => {
      const issuer = await startDevIssuer({ alg: 'ES256' });
      const clock = manualClock();
      try {
        const verifier = createTokenVerifier([issuerConfigFor(issuer)], { now: clock.now, fetchTimeoutMs: 300 });
        const token = await issuer.mint();
        issuer.setFailure(mode);
        await assertIssuerUnavailable(verifier.verify(token), 'discovery_failed');
        await assertIssuerUnavailable(verifier.verify(token), 'discovery_failed');
        issuer.setFailure('none');
        clock.advance(DEFAULT_JWKS_COOLDOWN_MS - 1);
        await assertIssuerUnavailable(verifier.verify(token), 'discovery_failed');
        assert.equal(issuer.requestCount(DISCOVERY_PATH), 1, 'a failed discovery is retried at most once per cooldown');
        assert.equal(issuer.requestCount(JWKS_PATH), 0);
        if (mode === 'redirect') assert.equal(issuer.requestCount(`/redirected${DISCOVERY_PATH}`), 0);
        clock.advance(1);
        await verifier.verify(token);
        assert.equal(issuer.requestCount(DISCOVERY_PATH), 2);
      } finally {
        await issuer.close();
      }
    });
  }

  it('an issuer that is not listening at all', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const token = await issuer.mint();
    const config = issuerConfigFor(issuer);
    await issuer.close();
    await assertIssuerUnavailable(createTokenVerifier([config], FAST).verify(token), 'discovery_failed');
    await assertIssuerUnavailable(createTokenVerifier([{ ...config, jwksUri: `${config.issuer}${JWKS_PATH}` }], FAST).verify(token), 'jwks_unavailable');
  });

  it('cached keys keep working while the issuer is down', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      await verifier.verify(await issuer.mint());
      issuer.setFailure('500');
      await verifier.verify(await issuer.mint());
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('a JWKS that is valid JSON but not a JWK Set', async () => {
    const server = await startCountingServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"keys": "nope"}');
    });
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${server.url}/jwks` })], FAST);
      await assertIssuerUnavailable(verifier.verify(await issuer.mint()), 'jwks_unavailable');
      assert.equal(server.count(), 1);
    } finally {
      await Promise.all([server.close(), issuer.close()]);
    }
  });
  it('a JWKS that publishes a private key is the issuer\'s fault: jwks_unavailable, not a bad token', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const server = await startCountingServer((_req, res) => {
      void exportJWK(privateKey).then((jwk) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys: [{ ...jwk, kid: issuer.kid, alg: 'ES256' }] }));
      });
    });
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${server.url}/jwks` })], FAST);
      await assertIssuerUnavailable(verifier.verify(await issuer.mint()), 'jwks_unavailable');
      assert.equal(server.count(), 1);
    } finally {
      await Promise.all([server.close(), issuer.close()]);
    }
  });
});

/**
 * The outcomes of the verifier's JWKS fetches, in order, and a way to wait
 * until a number of them have ended: a refresh past the max age runs in the
 * background, after the verification that started it has resolved.
 */
function recordJwksFetches(): { outcomes: JwksFetchOutcome[]; onJwksFetch: OnJwksFetch; ended: (count: number) => Promise<void> } {
  const outcomes: JwksFetchOutcome[] = [];
  const waiting: (() => void)[] = [];
  return {
    outcomes,
    onJwksFetch: (_issuer, outcome) => {
      outcomes.push(outcome);
      for (const wake of waiting.splice(0)) wake();
    },
    ended: (count) =>
      new Promise((resolve) => {
        const check = () => (outcomes.length >= count ? resolve() : waiting.push(check));
        check();
      }),
  };
}

describe('verify: stale-if-error (jwks_stale_if_error_seconds)', () => {
  const STALE_MS = DEFAULT_JWKS_STALE_IF_ERROR_SECONDS * 1000;

  for (const mode of ['500', 'hang', 'garbage', 'redirect'] as const) {
    it(`JWKS answering "${mode}" past the max age: the cached keys verify until the bound, with a warning and outcome "stale"; then 503`, async () => {
      const issuer = await startDevIssuer({ alg: 'ES256' });
      const clock = manualClock();
      const { outcomes: fetches, onJwksFetch, ended } = recordJwksFetches();
      const { logger, lines } = createCapturingLogger();
      try {
        const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${issuer.url}${JWKS_PATH}` })], {
          now: clock.now,
          fetchTimeoutMs: 300,
          onJwksFetch,
          logger,
        });
        const mint = () => issuer.mint({}, { issuedAt: clock.seconds() });
        const fetchedAtMs = clock.now().getTime();
        await verifier.verify(await mint());

        issuer.setFailure(mode);
        clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
        const token = await mint();
        await verifier.verify(token);
        await ended(2);
        assert.equal(issuer.requestCount(JWKS_PATH), 2);
        assert.deepEqual(fetches, ['ok', 'stale']);
        const warnings = lines().map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 'warn');
        assert.equal(warnings.length, 1);
        assert.match(String(warnings[0]?.msg), /verifying with cached keys/);
        assert.equal(warnings[0]?.issuer, 'local');
        assert.equal(warnings[0]?.stale_until, new Date(fetchedAtMs + DEFAULT_JWKS_CACHE_MAX_AGE_MS + STALE_MS).toISOString());
        assert.ok(!lines().join('').includes(token.split('.')[1] ?? ''), 'no token in the log');

        // Inside the failure's cooldown: still the cached keys, and no new request.
        await verifier.verify(await mint());
        assert.equal(issuer.requestCount(JWKS_PATH), 2);

        // The last millisecond of the bound: a new attempt fails, the cached keys still verify.
        clock.advance(STALE_MS - 1);
        await verifier.verify(await mint());
        await ended(3);
        assert.equal(issuer.requestCount(JWKS_PATH), 3);
        assert.deepEqual(fetches, ['ok', 'stale', 'stale']);

        // Past the bound: refused as unavailable, without waiting for the next attempt's cooldown.
        clock.advance(1);
        await assertIssuerUnavailable(verifier.verify(await mint()), 'jwks_unavailable');
        clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
        await assertIssuerUnavailable(verifier.verify(await mint()), 'jwks_unavailable');
        assert.deepEqual(fetches, ['ok', 'stale', 'stale', 'error']);

        // Back: fresh keys after the cooldown.
        issuer.setFailure('none');
        clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
        await verifier.verify(await mint());
        assert.deepEqual(fetches, ['ok', 'stale', 'stale', 'error', 'ok']);
      } finally {
        await issuer.close();
      }
    });
  }

  it('past the max age a cached kid verifies at once while the refresh hangs; a later successful refresh replaces the keys', async () => {
    let issuer = await startDevIssuer({ alg: 'ES256' });
    const port = Number(new URL(issuer.url).port);
    const clock = manualClock();
    const { outcomes, onJwksFetch, ended } = recordJwksFetches();
    try {
      // The default fetch timeout (5 s) bounds the hang if the test never releases it.
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { jwksUri: `${issuer.url}${JWKS_PATH}` })], { now: clock.now, onJwksFetch });
      const mint = (from: DevIssuer) => from.mint({}, { issuedAt: clock.seconds(), expiresInSeconds: 3600 });
      const cached = await mint(issuer);
      await verifier.verify(cached);

      issuer.setFailure('hang');
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await verifier.verify(cached);
      await verifier.verify(await mint(issuer));
      assert.deepEqual(outcomes, ['ok'], 'both verified while the refresh still hangs');

      // The test releases the hang: the issuer goes down and drops the connection; cached keys bridged it.
      await issuer.close();
      await ended(2);
      assert.deepEqual(outcomes, ['ok', 'stale']);

      // Back on the same URL with a new key. The cached kid still verifies at once, and the refresh it starts replaces the keys.
      issuer = await startDevIssuer({ alg: 'ES256', port });
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      await verifier.verify(cached);
      await ended(3);
      assert.deepEqual(outcomes, ['ok', 'stale', 'ok']);
      await assertInvalidToken(verifier.verify(cached), 'unknown_key', cached);
      await verifier.verify(await mint(issuer));
      assert.equal(issuer.requestCount(JWKS_PATH), 1);
    } finally {
      await issuer.close();
    }
  });

  it('stale keys never answer an unknown kid, and a kid the refreshed JWKS withdrew is refused', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], { now: clock.now, fetchTimeoutMs: 300 });
      // Valid for the whole test on its clock.
      const mint = () => issuer.mint({}, { issuedAt: clock.seconds(), expiresInSeconds: 3600 });
      const first = await mint();
      await verifier.verify(first);

      issuer.setFailure('500');
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await verifier.verify(first);
      // A rotation during the outage: the new kid is not in the stale keys, and they are not asked for it.
      await issuer.rotateKey();
      const rotated = await mint();
      await assertIssuerUnavailable(verifier.verify(rotated), 'jwks_unavailable');
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      await assertIssuerUnavailable(verifier.verify(rotated), 'jwks_unavailable');
      await verifier.verify(first);

      // Back with a JWKS that no longer holds the first key: it is refused at once, stale or not.
      await issuer.rotateKey();
      assert.ok(!issuer.jwks().keys.some((k) => k.kid === decodeHeaderKid(first)));
      issuer.setFailure('none');
      clock.advance(DEFAULT_JWKS_COOLDOWN_MS);
      await verifier.verify(rotated);
      await assertInvalidToken(verifier.verify(first), 'unknown_key', first);
      // In the next outage the stale keys are the refreshed ones: the withdrawn kid is still not among them.
      issuer.setFailure('500');
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await verifier.verify(rotated);
      await assertIssuerUnavailable(verifier.verify(first), 'jwks_unavailable');
    } finally {
      await issuer.close();
    }
  });

  it('per issuer: 0 turns it off, and the first issuer down does not touch the second', async () => {
    const strict = await startDevIssuer({ alg: 'ES256' });
    const lenient = await startDevIssuer({ alg: 'ES256' });
    const clock = manualClock();
    try {
      const verifier = createTokenVerifier(
        [issuerConfigFor(strict, { name: 'strict', jwksStaleIfErrorSeconds: 0 }), issuerConfigFor(lenient, { name: 'lenient', jwksStaleIfErrorSeconds: 60 })],
        { now: clock.now, fetchTimeoutMs: 300 },
      );
      const mint = (issuer: DevIssuer) => issuer.mint({}, { issuedAt: clock.seconds() });
      await verifier.verify(await mint(strict));
      await verifier.verify(await mint(lenient));
      strict.setFailure('500');
      lenient.setFailure('500');
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await assertIssuerUnavailable(verifier.verify(await mint(strict)), 'jwks_unavailable');
      await verifier.verify(await mint(lenient));
      clock.advance(60_000);
      await assertIssuerUnavailable(verifier.verify(await mint(lenient)), 'jwks_unavailable');
      assert.throws(() => createTokenVerifier([issuerConfigFor(strict, { jwksStaleIfErrorSeconds: -1 })]), TypeError);
    } finally {
      await Promise.all([strict.close(), lenient.close()]);
    }
  });
});

function decodeHeaderKid(token: string): unknown {
  return (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown }).kid;
}

describe('verify: discovery document checks', () => {
  it('refuses a discovery document whose issuer differs from the configured one (trailing slash)', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      // Configured with a trailing slash; the document says it without. Discovery
      // still goes to <issuer>/.well-known/... (OIDC Discovery 4.1) but must refuse.
      const configured = `${issuer.url}/`;
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { issuer: configured })], FAST);
      await assertIssuerUnavailable(verifier.verify(await issuer.mint({ iss: configured })), 'discovery_failed');
      assert.equal(issuer.requestCount(DISCOVERY_PATH), 1);
      assert.equal(issuer.requestCount(JWKS_PATH), 0);
    } finally {
      await issuer.close();
    }
  });

  it('refuses a discovery document naming another issuer', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      issuer.setDiscoveryOverride({ issuer: 'https://token.actions.githubusercontent.com' });
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      await assertIssuerUnavailable(verifier.verify(await issuer.mint()), 'discovery_failed');
      assert.equal(issuer.requestCount(JWKS_PATH), 0);
    } finally {
      await issuer.close();
    }
  });

  it('refuses a jwks_uri the broker may not fetch', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const counting = await startCountingServer();
    try {
      for (const jwksUri of ['http://10.0.0.1/jwks', 'file:///etc/passwd', 'ftp://127.0.0.1/jwks', 42, undefined, `http://user:pass@127.0.0.1:1/jwks`]) {
        issuer.setDiscoveryOverride({ jwks_uri: jwksUri });
        const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
        await assertIssuerUnavailable(verifier.verify(await issuer.mint()), 'discovery_failed');
      }
      assert.equal(counting.count(), 0);
    } finally {
      await Promise.all([issuer.close(), counting.close()]);
    }
  });

  it('follows a jwks_uri on another allowed origin', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    const keys = await startCountingServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
      res.end(JSON.stringify(issuer.jwks()));
    });
    try {
      issuer.setDiscoveryOverride({ jwks_uri: `${keys.url}/keys` });
      const verifier = createTokenVerifier([issuerConfigFor(issuer)], FAST);
      await verifier.verify(await issuer.mint());
      assert.deepEqual(keys.paths(), ['/keys']);
      assert.equal(issuer.requestCount(JWKS_PATH), 0);
    } finally {
      await Promise.all([issuer.close(), keys.close()]);
    }
  });
});

describe('verify: injected clock', () => {
  it('uses now() for exp, nbf, iat and max age', async () => {
    const issuer = await startDevIssuer({ alg: 'ES256' });
    try {
      const iat = 1_900_000_000;
      const token = await issuer.mint({ nbf: iat }, { issuedAt: iat, expiresInSeconds: 600 });
      let clock = new Date(iat * 1000);
      const verifier = createTokenVerifier([issuerConfigFor(issuer, { clockSkewSeconds: 10, maxTokenAgeSeconds: 300 })], { ...FAST, now: () => clock });
      await verifier.verify(token);
      clock = new Date((iat - 11) * 1000);
      await assertInvalidToken(verifier.verify(token), 'not_yet_valid');
      clock = new Date((iat - 5) * 1000);
      await verifier.verify(token); // nbf and iat within the 10 s skew
      clock = new Date((iat + 311) * 1000);
      await assertInvalidToken(verifier.verify(token), 'token_too_old');
      clock = new Date((iat + 610) * 1000);
      await assertInvalidToken(verifier.verify(token), 'expired');
    } finally {
      await issuer.close();
    }
  });
});

describe('verify: signatures on node:crypto', () => {
  const ISSUER = 'https://ci.example.test';
  const b64u = (value: string | Buffer) => Buffer.from(value).toString('base64url');

  /** A token signed by hand, so the key and signature encoding can be ones jose would not produce. */
  function signToken(privateKey: KeyObject, header: Record<string, unknown>, options: { digest?: string | null; sign?: Omit<SignKeyObjectInput, 'key'>; now?: number } = {}): string {
    const iat = options.now ?? nowSeconds();
    const payload = { iss: ISSUER, sub: 'repo:acme/api:ref:refs/heads/main', aud: DEV_AUDIENCE, iat, exp: iat + 300, jti: randomUUID() };
    const signingInput = `${b64u(JSON.stringify({ typ: 'JWT', ...header }))}.${b64u(JSON.stringify(payload))}`;
    const digest = options.digest === undefined ? 'sha256' : options.digest;
    return `${signingInput}.${b64u(sign(digest, Buffer.from(signingInput), { key: privateKey, ...options.sign }))}`;
  }

  function publicJwk(privateKey: KeyObject, extra: Record<string, unknown>): Record<string, unknown> {
    return { ...createPublicKey(privateKey).export({ format: 'jwk' }), ...extra };
  }

  function staticIssuer(algorithms: string[], keys: Record<string, unknown>[]): IssuerConfig {
    return { name: 'ci', issuer: ISSUER, audiences: [DEV_AUDIENCE], algorithms, clockSkewSeconds: 60, ...DEFAULT_ISSUER_BOUNDS, jwks: { keys } };
  }

  it('PS256 (salt as long as the hash) and EdDSA tokens verify; a PS256 salt of another length does not', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const ed = generateKeyPairSync('ed25519').privateKey;
    const verifier = createTokenVerifier([staticIssuer(['PS256', 'EdDSA', 'Ed25519'], [publicJwk(rsa, { kid: 'rsa' }), publicJwk(ed, { kid: 'ed' })])]);
    const pss = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
    assert.equal((await verifier.verify(signToken(rsa, { alg: 'PS256', kid: 'rsa' }, { sign: pss }))).issuer, ISSUER);
    assert.equal((await verifier.verify(signToken(ed, { alg: 'EdDSA', kid: 'ed' }, { digest: null }))).issuer, ISSUER);
    assert.equal((await verifier.verify(signToken(ed, { alg: 'Ed25519', kid: 'ed' }, { digest: null }))).issuer, ISSUER);
    const shortSalt = signToken(rsa, { alg: 'PS256', kid: 'rsa' }, { sign: { ...pss, saltLength: 20 } });
    await assertInvalidToken(verifier.verify(shortSalt), 'bad_signature', shortSalt);
    // The same key's PKCS#1 v1.5 signature is no PS256 signature.
    const pkcs1 = signToken(rsa, { alg: 'PS256', kid: 'rsa' });
    await assertInvalidToken(verifier.verify(pkcs1), 'bad_signature', pkcs1);
  });

  it('ES256: an r || s signature verifies, the same signature DER-encoded is refused', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const verifier = createTokenVerifier([staticIssuer(['ES256'], [publicJwk(ec, { kid: 'ec' })])]);
    await verifier.verify(signToken(ec, { alg: 'ES256', kid: 'ec' }, { sign: { dsaEncoding: 'ieee-p1363' } }));
    const der = signToken(ec, { alg: 'ES256', kid: 'ec' }, { sign: { dsaEncoding: 'der' } });
    await assertInvalidToken(verifier.verify(der), 'bad_signature', der);
  });

  it('an RSA key under 2048 bits is refused as unknown_key, its signature valid or not', async () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const verifier = createTokenVerifier([staticIssuer(['RS256'], [publicJwk(weak, { kid: 'weak' })])]);
    const token = signToken(weak, { alg: 'RS256', kid: 'weak' });
    await assertInvalidToken(verifier.verify(token), 'unknown_key', token);
  });

  it('any crit header is refused as malformed, even one naming b64 with its default value', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const verifier = createTokenVerifier([staticIssuer(['ES256'], [publicJwk(ec, { kid: 'ec' })])]);
    const p1363 = { sign: { dsaEncoding: 'ieee-p1363' as const } };
    await verifier.verify(signToken(ec, { alg: 'ES256', kid: 'ec', b64: true }, p1363));
    for (const crit of [{ crit: ['b64'], b64: true }, { crit: [] }, { crit: ['exp'], exp: 1 }]) {
      const token = signToken(ec, { alg: 'ES256', kid: 'ec', ...crit }, p1363);
      await assertInvalidToken(verifier.verify(token), 'malformed', token);
    }
  });

  it('a key replaced under the same kid: after the refetch the old key verifies nothing, the new one verifies', async () => {
    const clock = manualClock();
    const [first, second] = [0, 1].map(() => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey) as [KeyObject, KeyObject];
    let published = first;
    const jwksServer = await startCountingServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [publicJwk(published, { kid: 'k1', alg: 'ES256', use: 'sig' })] }));
    });
    try {
      const verifier = createTokenVerifier([{ ...staticIssuer(['ES256'], []), jwks: undefined, jwksUri: `${jwksServer.url}/jwks`, jwksStaleIfErrorSeconds: 0 }], { now: clock.now });
      const mint = (key: KeyObject) => signToken(key, { alg: 'ES256', kid: 'k1' }, { now: clock.seconds(), sign: { dsaEncoding: 'ieee-p1363' } });
      const byFirst = mint(first);
      await verifier.verify(byFirst);
      await verifier.verify(byFirst);
      published = second;
      clock.advance(DEFAULT_JWKS_CACHE_MAX_AGE_MS);
      await verifier.verify(mint(second));
      assert.equal(jwksServer.count(), 2);
      const stillByFirst = mint(first);
      await assertInvalidToken(verifier.verify(stillByFirst), 'bad_signature', stillByFirst);
    } finally {
      await jwksServer.close();
    }
  });
});
