// In-process cost of each step of an exchange, to show which one dominates.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditEntry } from '../src/audit/types.js';
import { startDevIssuer } from '../src/dev/issuer.js';
import { createLogger } from '../src/logger.js';
import { DEFAULT_ISSUER_BOUNDS, defaultTenantClaims } from '../src/oidc/issuer-defaults.js';
import { createTokenVerifier } from '../src/oidc/verify.js';
import { compilePolicies } from '../src/policy/compile.js';
import { evaluate, lookupPolicy } from '../src/policy/evaluate.js';
import type { JwtGrant } from '../src/providers/jwt/grant.js';
import { createJwtProvider } from '../src/providers/jwt/issuer.js';
import { loadOrCreateSigningKey } from '../src/keys/signing-key.js';

import { AUDIENCE, DENY_PULL_REQUEST_TARGET, policyYaml } from './deployment.js';
import { githubActionsClaims } from './tokens.js';

const CLAIMS = githubActionsClaims(0, AUDIENCE);
const SUBJECT = String(CLAIMS.sub);

const CONCURRENCY = 32;

/**
 * Sequential latency of one op, and its cost per op with 32 in flight (as under
 * load: jose's WebCrypto work runs on libuv's thread pool, so ops overlap),
 * in wall time and in CPU time of all the process's threads: on a machine
 * whose cores are all busy serving, the CPU time is what an op costs.
 */
async function timeEach(
  name: string,
  iterations: number,
  run: () => unknown,
): Promise<{ step: string; 'latency µs': number; 'µs/op at 32 in flight': number; 'CPU µs/op at 32 in flight': number; 'ops/s at 32 in flight': number }> {
  for (let i = 0; i < Math.min(200, iterations); i++) await run();
  let started = performance.now();
  for (let i = 0; i < iterations; i++) await run();
  const latencyMs = (performance.now() - started) / iterations;
  started = performance.now();
  const cpuBefore = process.cpuUsage();
  for (let i = 0; i < iterations; i += CONCURRENCY) await Promise.all(Array.from({ length: CONCURRENCY }, () => run()));
  const cpu = process.cpuUsage(cpuBefore);
  const ops = Math.ceil(iterations / CONCURRENCY) * CONCURRENCY;
  const perOpMs = (performance.now() - started) / ops;
  const cpuPerOpMs = (cpu.user + cpu.system) / 1000 / ops;
  const round = (ms: number) => Math.round(ms * 10_000) / 10;
  return {
    step: name,
    'latency µs': round(latencyMs),
    'µs/op at 32 in flight': round(perOpMs),
    'CPU µs/op at 32 in flight': round(cpuPerOpMs),
    'ops/s at 32 in flight': Math.round(1000 / perOpMs),
  };
}

export async function stepCosts(): Promise<object[]> {
  const rows: object[] = [];
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-steps-'));
  for (const alg of ['ES256', 'RS256'] as const) {
    const issuer = await startDevIssuer({ port: 0, alg });
    const verifier = createTokenVerifier([{ name: 'github', issuer: issuer.url, audiences: [AUDIENCE], algorithms: [alg], clockSkewSeconds: 60, ...DEFAULT_ISSUER_BOUNDS, jwks: issuer.jwks() }]);
    const token = await issuer.mint({ ...CLAIMS, aud: AUDIENCE });
    rows.push(await timeEach(`verify ${alg} token (cached keys)`, 2000, () => verifier.verify(token)));
    await issuer.close();
  }

  const compiled = compilePolicies(
    [
      { path: 'bench.yaml', text: policyYaml('jwt', 'on') },
      { path: 'deny.yaml', text: DENY_PULL_REQUEST_TARGET },
    ],
    { issuers: new Map([['github', { audiences: [AUDIENCE], tenantClaims: defaultTenantClaims('https://token.actions.githubusercontent.com') }]]), providers: new Set(['jwt']) },
  );
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.issues));
  const set = compiled.set;
  const policy = lookupPolicy(set, 'bench');
  const verified = { issuerName: 'github', claims: { ...CLAIMS, aud: AUDIENCE }, audiences: [AUDIENCE] };
  rows.push(await timeEach('evaluate policy + deny policies', 100_000, () => evaluate(set, policy, verified)));

  const signingKey = await loadOrCreateSigningKey(path.join(dir, 'key.jwk'), createLogger({ silent: true }));
  const provider = createJwtProvider({ issuerUrl: AUDIENCE, signingKey: () => signingKey });
  const token = { issuerName: 'github', issuer: 'x', subject: SUBJECT, audiences: [AUDIENCE], jti: undefined, expiresAt: 0, issuedAt: 0, claims: CLAIMS, tokenSha256: '0'.repeat(64), signingInputSha256: '1'.repeat(64) };
  rows.push(await timeEach('sign broker token (ES256)', 2000, () => provider.issue({ grant: policy.grant as JwtGrant, token, requestedDurationSeconds: undefined, issuanceId: newAuditId() })));

  const store = openSqliteAuditStore(path.join(dir, 'audit.db'));
  const entry = (): AuditEntry => ({
    id: newAuditId(), time: new Date().toISOString(), decision: 'issued', error: null, reason: null, request_id: 'r', issuer: 'github', subject: SUBJECT,
    audience: [AUDIENCE], jti: null, token_sha256: '0'.repeat(64), claims: CLAIMS, unverified: null, policy: 'bench', policy_sha256: '0'.repeat(64),
    provider: 'jwt', target: 'https://deploy.example.com', credential_id: 'c', expires_at: new Date().toISOString(), duration_seconds: 900, client_ip: '127.0.0.1', user_agent: 'bench', audit_matches: [],
  });
  // Sequential appends pay one fsync each; 32 in flight share a transaction (group commit).
  rows.push(await timeEach('audit append (SQLite, synchronous=FULL)', 2000, () => store.append(entry())));
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return rows;
}
