// The client's retry timing (src/client/retry.ts): pure functions, so every
// case is a table row with the randomness and the clock given.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_RETRY, parseRetryAfter, retryDelayMs } from '../src/client/retry.js';

describe('retryDelayMs', () => {
  const options = { maxAttempts: 5, baseDelayMs: 1000, maxDelayMs: 30_000 };
  const rows: [attempt: number, retryAfter: number | undefined, random: number, expected: number][] = [
    [1, undefined, 0, 500], // jitter: half of the backoff at least
    [1, undefined, 0.999, 1000], // and at most all of it
    [2, undefined, 0.5, 1500],
    [3, undefined, 0, 2000],
    [10, undefined, 0.999, 29_985], // the backoff is capped before jitter
    [1, 7, 0.5, 7000], // Retry-After wins, without jitter
    [1, 0, 0.5, 0],
    [1, 3600, 0.5, 30_000], // and is capped too
  ];
  for (const [attempt, retryAfter, random, expected] of rows) {
    test(`attempt ${attempt}, Retry-After ${retryAfter}, random ${random}: ${expected} ms`, () => {
      assert.equal(retryDelayMs(attempt, retryAfter, options, () => random), expected);
    });
  }

  test('the defaults: 3 attempts, 1 s base, 30 s cap', () => {
    assert.deepEqual(DEFAULT_RETRY, { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 30_000 });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-12-06T10:00:00Z');
  const rows: [value: string | null, expected: number | undefined][] = [
    [null, undefined],
    ['0', 0],
    ['120', 120],
    [' 5 ', 5],
    ['Sun, 06 Dec 2026 10:00:30 GMT', 30],
    ['Sun, 06 Dec 2026 09:59:00 GMT', 0], // a date in the past: no wait
    ['-1', undefined],
    ['1.5', undefined],
    ['soon', undefined],
    ['', undefined],
  ];
  for (const [value, expected] of rows) {
    test(`${JSON.stringify(value)} → ${expected}`, () => {
      assert.equal(parseRetryAfter(value, now), expected);
    });
  }
});
