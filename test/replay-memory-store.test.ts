// The memory replay store (src/replay/memory-store.ts): claims, and the bound on what it holds
// (docs/performance.md, "Memory under a soak"), with the clock injected.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createMemoryReplayStore } from '../src/replay/memory-store.js';

/** A key shaped like the pipeline's (src/pipeline/steps.ts, claimReplay). */
const keyOf = (policy: string, jti: string) => `${policy}\nhttps://token.actions.githubusercontent.com\njti:${jti}`;

describe('memory replay store', () => {
  test('a key is claimed once until it expires or is released; keys differing in one character are distinct', async () => {
    let nowMs = 1_000_000;
    const store = createMemoryReplayStore(() => nowMs);
    assert.equal(await store.claim(keyOf('deploy', 'a'), nowMs + 60_000), true);
    assert.equal(await store.claim(keyOf('deploy', 'a'), nowMs + 60_000), false);
    assert.equal(await store.claim(keyOf('deploy', 'b'), nowMs + 60_000), true);
    assert.equal(await store.claim(keyOf('deplo', 'ya'), nowMs + 60_000), true);
    await store.release(keyOf('deploy', 'a'));
    assert.equal(await store.claim(keyOf('deploy', 'a'), nowMs + 60_000), true);
    nowMs += 60_000;
    assert.equal(await store.claim(keyOf('deploy', 'b'), nowMs + 60_000), true, 'an expired claim no longer refuses');
  });

  test('N distinct claims leave only the unexpired ones once later claims have swept them, a few per claim', async () => {
    let nowMs = 1_000_000;
    const store = createMemoryReplayStore(() => nowMs);
    const N = 5_000;
    for (let i = 0; i < N; i++) assert.equal(await store.claim(keyOf('deploy', `old-${i}`), nowMs + 300_000), true);
    assert.equal(await store.claim(keyOf('deploy', 'young'), nowMs + 900_000), true);
    assert.equal(store.entries(), N + 1);
    nowMs += 300_000;
    assert.equal(await store.claim(keyOf('deploy', 'new-0'), nowMs + 300_000), true);
    assert.ok(store.entries() > N - 10, 'one claim sweeps a few entries, not the whole map');
    // Each claim looks at 4 entries and adds 1: N / 3 claims go once round what was there.
    const later = Math.ceil(N / 3) + 10;
    for (let i = 1; i < later; i++) assert.equal(await store.claim(keyOf('deploy', `new-${i}`), nowMs + 300_000), true);
    assert.equal(store.entries(), later + 1, 'the young claim and the new ones');
    assert.equal(await store.claim(keyOf('deploy', 'young'), nowMs + 900_000), false, 'an unexpired claim survives the sweep');
    await store.close();
    assert.equal(store.entries(), 0);
  });
});
