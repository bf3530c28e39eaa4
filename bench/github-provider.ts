/**
 * CPU cost of one `github` issue (octokit: App JWT, token request, answer
 * parsing) against the loopback GitHub emulator, next to one `jwt` issue.
 * The emulator runs in a child process, so this process's CPU time is the
 * broker side only. Sequential calls; prints figures only.
 *
 *   node --import tsx bench/github-provider.ts [iterations]
 */
import { fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { newAuditId } from '../src/audit/record.js';
import { loadOrCreateSigningKey } from '../src/keys/signing-key.js';
import { createLogger } from '../src/logger.js';
import { compilePolicies } from '../src/policy/compile.js';
import type { Grant } from '../src/providers/registry.js';
import { createGithubProvider } from '../src/providers/github/issuer.js';
import type { GithubGrant } from '../src/providers/github/grant.js';
import { createJwtProvider } from '../src/providers/jwt/issuer.js';
import type { JwtGrant } from '../src/providers/jwt/grant.js';
import type { VerifiedToken } from '../src/oidc/types.js';

const APP_ID = '4242';

if (process.argv[2] === '--emulator') {
  const { startGithubEmulator } = await import('../test/emulators/index.js');
  const gh = await startGithubEmulator({
    appId: APP_ID,
    publicKey: process.env.GH_BENCH_PUBLIC_KEY!,
    installations: [{ id: 7, account: 'acme', repositories: ['app', 'lib'], permissions: { contents: 'write', pull_requests: 'write' } }],
  });
  // The emulator keeps what it hands out; a long run only grows it, which does not touch the broker side measured here.
  process.send!(gh.url);
} else {
  const iterations = Number(process.argv[2] ?? 2000);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const child = fork(fileURLToPath(import.meta.url), ['--emulator'], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, GH_BENCH_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'pem' }).toString() },
  });
  const url = await new Promise<string>((resolve) => child.once('message', (m) => resolve(m as string)));

  const grantOf = (text: string): Grant => {
    const result = compilePolicies([{ path: 'p.yaml', text }], { issuers: new Map([['ci', { audiences: ['a'] , tenantClaims: [] }]]), providers: new Set(['jwt', 'github']) });
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    return [...result.set.byName.values()][0]!.grant!;
  };
  const githubGrant = grantOf('issuer: ci\nclaims: {repository_owner: acme}\ngrant:\n  provider: github\n  repositories: [acme/app, acme/lib]\n  permissions: {contents: write, pull_requests: write}\n') as GithubGrant;
  const jwtGrant = grantOf('issuer: ci\nclaims: {repository_owner: acme}\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n') as JwtGrant;
  const claims = { sub: 'repo:acme/app:ref:refs/heads/main', repository: 'acme/app', repository_owner: 'acme' };
  const token: VerifiedToken = { issuerName: 'ci', issuer: 'x', subject: claims.sub, audiences: ['a'], jti: undefined, expiresAt: 0, issuedAt: 0, claims, tokenSha256: '0'.repeat(64), signingInputSha256: '1'.repeat(64) };

  const dir = await mkdtemp(path.join(tmpdir(), 'bench-github-'));
  const signingKey = await loadOrCreateSigningKey(path.join(dir, 'key.jwk'), createLogger({ silent: true }));
  const jwt = createJwtProvider({ issuerUrl: 'https://broker.example.com', signingKey: () => signingKey });
  const github = createGithubProvider({ appId: APP_ID, privateKey, apiUrl: url, deadlineMs: 10_000, attemptTimeoutMs: 5_000 });

  const measure = async (name: string, issue: () => Promise<unknown>): Promise<void> => {
    for (let i = 0; i < Math.min(300, iterations); i++) await issue();
    const cpu = process.cpuUsage();
    const started = performance.now();
    for (let i = 0; i < iterations; i++) await issue();
    const used = process.cpuUsage(cpu);
    const wallMs = performance.now() - started;
    console.log(`${name.padEnd(34)} CPU µs/issue ${((used.user + used.system) / iterations).toFixed(0).padStart(6)}   wall µs/issue ${((wallMs * 1000) / iterations).toFixed(0).padStart(6)}`);
  };
  const request = { token, requestedDurationSeconds: undefined, issuanceId: newAuditId() };
  for (let round = 0; round < 3; round++) {
    await measure('jwt (ES256 sign)', () => jwt.issue({ ...request, grant: jwtGrant }));
    await measure('github (octokit, cached lookup)', () => github.issue({ ...request, grant: githubGrant }));
  }
  child.kill();
  await rm(dir, { recursive: true, force: true });
}
