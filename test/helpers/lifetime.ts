import assert from 'node:assert/strict';

/**
 * Asserts that a credential issued during a call made between `beforeMs` and
 * `afterMs` expires `lifetimeMs` after it was issued. Servers state expiry in
 * whole seconds, so the bounds are widened to the enclosing seconds; nothing
 * depends on how long the call took.
 */
export function assertExpiresAfterIssue(expiresAtMs: number, lifetimeMs: number, beforeMs: number, afterMs: number): void {
  const earliest = Math.floor(beforeMs / 1000) * 1000 + lifetimeMs;
  const latest = Math.ceil(afterMs / 1000) * 1000 + lifetimeMs;
  assert.ok(
    expiresAtMs >= earliest && expiresAtMs <= latest,
    `expires at ${new Date(expiresAtMs).toISOString()}: expected ${lifetimeMs} ms after an issue between ${new Date(beforeMs).toISOString()} and ${new Date(afterMs).toISOString()}`,
  );
}
