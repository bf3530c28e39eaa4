/**
 * `policy impact` on a large log (issue 15): BENCH_IMPACT_RECORDS (default
 * 1,000,000) GitHub Actions-shaped records (bench/tokens.ts, 25 claims, 50
 * repositories) bulk-loaded into a SQLite audit log, then the built CLI run
 * as a process on it with a policy change that newly allows some of them.
 * Prints the records replayed, the wall time and the CLI's own summary line.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { openAuditStore } from '../src/audit/open.js';
import { newAuditId } from '../src/audit/record.js';
import { generateSigningJwk } from '../src/keys/signing-key.js';
import { bulkLoadSqlite, type BulkRecord } from './audit-bulk.js';
import { githubActionsClaims, repositoryName } from './tokens.js';

const RECORDS = Number(process.env.BENCH_IMPACT_RECORDS ?? 1_000_000);
const AUDIENCE = 'https://broker.example.com';

function* records(count: number): Generator<BulkRecord> {
  const start = Date.now() - count * 1000;
  for (let i = 0; i < count; i++) {
    const claims = githubActionsClaims(i, AUDIENCE);
    const allowed = claims.repository === repositoryName(0);
    yield {
      seq: i + 1,
      entry: {
        id: newAuditId(), time: new Date(start + i * 1000).toISOString(), decision: allowed ? 'issued' : 'denied', error: allowed ? null : 'access_denied', reason: null,
        request_id: null, issuer: 'github', subject: String(claims.sub), audience: [AUDIENCE], jti: null, token_sha256: null, claims, unverified: null,
        policy: 'deploy', policy_sha256: null, provider: allowed ? 'jwt' : null, target: null, credential_id: null, expires_at: null, duration_seconds: null, client_ip: null, user_agent: null, audit_matches: [],
      },
    };
  }
}

function policy(repository: string): string {
  return `name: deploy\nissuer: github\nclaims:\n  repository_owner_id: "${String(githubActionsClaims(0, AUDIENCE).repository_owner_id)}"\n  repository: ${repository}\n  ref: refs/heads/main\ngrant:\n  provider: jwt\n  audience: https://deploy.example.com\n`;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-impact-bench-'));
  try {
    const first = String(githubActionsClaims(0, AUDIENCE).repository);
    const owner = first.slice(0, first.indexOf('/'));
    await mkdir(path.join(dir, 'before'));
    await mkdir(path.join(dir, 'after'));
    await writeFile(path.join(dir, 'before', 'deploy.yaml'), policy(first));
    await writeFile(path.join(dir, 'after', 'deploy.yaml'), policy(`{ glob: "${owner}/*" }`));
    await writeFile(path.join(dir, 'signing-key.jwk'), JSON.stringify(await generateSigningJwk()), { mode: 0o600 });
    await writeFile(path.join(dir, 'broker.yaml'), `issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [${AUDIENCE}]\naudit:\n  url: sqlite:./audit.db\nproviders:\n  jwt:\n    signing_key_file: ./signing-key.jwk\n`);
    await (await openAuditStore(`sqlite:${path.join(dir, 'audit.db')}`)).close();
    process.stderr.write(`loading ${RECORDS} records...\n`);
    const db = new Database(path.join(dir, 'audit.db'));
    bulkLoadSqlite(db, records(RECORDS));
    db.close();

    const started = performance.now();
    const output = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['bin/oidc-broker.js', 'policy', 'impact', '--before', path.join(dir, 'before'), '--after', path.join(dir, 'after'), '--since', '365d', '-c', path.join(dir, 'broker.yaml')], { stdio: ['ignore', 'pipe', 'inherit'] });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout }));
    });
    const seconds = (performance.now() - started) / 1000;
    console.log(`policy impact on ${RECORDS} records (SQLite, 25 claims each): ${seconds.toFixed(1)} s wall, exit ${output.code}`);
    console.log(output.stdout.trim().split('\n').at(-1));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
