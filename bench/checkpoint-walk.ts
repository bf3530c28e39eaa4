/**
 * What the audit checkpointer's verification walk costs the broker's event
 * loop (docs/performance.md, "Checkpoint walk off the event loop"): a SQLite
 * store takes appends from BENCH_WALK_IN_FLIGHT concurrent lanes (default 50)
 * for BENCH_WALK_SECONDS (default 10), through a checkpointer that walks and
 * signs every BENCH_WALK_CHECKPOINT_MS (default 1000). Each record carries
 * 25 scalar claims, as an exchange of a GitHub Actions token does.
 *
 * Prints one JSON line: appends/s, checkpoints made, records walked, the
 * main thread's event-loop delay (p50, p99, max, ms) and utilisation.
 * Figures only, no thresholds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { startCheckpointer } from '../src/audit/checkpoints.js';
import { newAuditId } from '../src/audit/record.js';
import { openSqliteAuditStore } from '../src/audit/sqlite/store.js';
import type { AuditEntry } from '../src/audit/types.js';
import { loadOrCreateSigningKeySet } from '../src/keys/signing-key.js';
import { createLogger } from '../src/logger.js';

const SECONDS = Number(process.env.BENCH_WALK_SECONDS ?? 10);
const IN_FLIGHT = Number(process.env.BENCH_WALK_IN_FLIGHT ?? 50);
const CHECKPOINT_MS = Number(process.env.BENCH_WALK_CHECKPOINT_MS ?? 1000);

/** An issued exchange's record with the 25 claims of a GitHub Actions token (bench/tokens.ts). */
function entry(i: number): AuditEntry {
  const repository = `org${i % 50}/repo${i % 50}`;
  const claims: Record<string, unknown> = {
    sub: `repo:${repository}:ref:refs/heads/main`,
    ref: 'refs/heads/main',
    sha: 'a'.repeat(40),
    repository,
    repository_owner: `org${i % 50}`,
    repository_owner_id: String(1000 + (i % 50)),
    run_id: String(9_000_000 + i),
    run_number: String(i),
    run_attempt: '1',
    repository_visibility: 'private',
    repository_id: String(2000 + (i % 50)),
    actor_id: '42',
    actor: 'octocat',
    workflow: 'deploy',
    head_ref: '',
    base_ref: '',
    event_name: 'push',
    ref_type: 'branch',
    job_workflow_ref: `${repository}/.github/workflows/deploy.yml@refs/heads/main`,
    nbf: 1_764_000_000 + i,
    iat: 1_764_000_000 + i,
    exp: 1_764_000_300 + i,
    jti: newAuditId(),
    iss: 'https://token.actions.githubusercontent.com',
    aud: 'oidc-broker',
  };
  return {
    id: newAuditId(),
    time: new Date().toISOString(),
    decision: 'issued',
    error: null,
    reason: null,
    request_id: `req-${i}`,
    issuer: 'https://token.actions.githubusercontent.com',
    subject: claims.sub as string,
    audience: ['oidc-broker'],
    jti: claims.jti as string,
    token_sha256: 'b'.repeat(64),
    claims,
    unverified: null,
    policy: 'deploy',
    policy_sha256: 'c'.repeat(64),
    provider: 'jwt',
    target: 'https://service.example',
    credential_id: `cred-${i}`,
    expires_at: new Date(Date.now() + 900_000).toISOString(),
    duration_seconds: 900,
    client_ip: '127.0.0.1',
    user_agent: 'bench',
    audit_matches: [],
  };
}

const dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-bench-walk-'));
try {
  const logger = createLogger({ silent: true });
  const keySet = await loadOrCreateSigningKeySet(path.join(dir, 'key.jwk'), logger);
  const store = openSqliteAuditStore(path.join(dir, 'audit.db'));
  const checkpointer = startCheckpointer({ store, keys: () => keySet, logger, intervalMs: 3_600_000 });
  let checkpoints = 0;
  let walked = 0;
  let lastSeq = 0;
  // The checkpointer's own timer, driven from here to count what each checkpoint vouches for.
  const timed = setInterval(() => {
    void checkpointer.checkpointNow().then((made) => {
      if (made === null) return;
      checkpoints += 1;
      walked += made.seq - lastSeq;
      lastSeq = made.seq;
    });
  }, CHECKPOINT_MS);

  const delay = monitorEventLoopDelay({ resolution: 1 });
  const eluStart = performance.eventLoopUtilization();
  delay.enable();
  const deadline = performance.now() + SECONDS * 1000;
  let appended = 0;
  const lane = async (): Promise<void> => {
    while (performance.now() < deadline) {
      await checkpointer.store.append(entry(appended));
      appended += 1;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  const elapsedSeconds = (performance.now() - started) / 1000;
  delay.disable();
  const elu = performance.eventLoopUtilization(eluStart);
  clearInterval(timed);
  await checkpointer.stop();
  await store.close();
  const ms = (ns: number) => Math.round(ns / 1e5) / 10;
  console.log(
    JSON.stringify({
      appends_per_s: Math.round(appended / elapsedSeconds),
      checkpoints,
      records_walked: walked,
      loop_delay_ms: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
      main_thread_utilisation: Math.round(elu.utilization * 100) / 100,
    }),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
