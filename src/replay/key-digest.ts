import { createHash } from 'node:crypto';

/**
 * What both replay stores keep for a claim key: its SHA-256 in hex, a fixed
 * 64 characters. The key (policy, issuer, jti or signing-input hash) is as
 * long as its claims make it, and in memory a rope of its parts; the digest
 * keeps a memory entry near 80 bytes of string (docs/performance.md, "Memory
 * under a soak") and a Redis key of bounded length.
 */
export function toKeyDigest(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}
