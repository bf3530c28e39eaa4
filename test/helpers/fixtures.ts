import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Reads a JSON fixture from test/fixtures (see test/fixtures/README.md). Call
 * it from `before()`: a missing or unreadable file then fails that suite's
 * first test with the path in the message, instead of a suite-level error
 * that the runner's summary does not count as a failure.
 */
export function readJsonFixture<T>(relativePath: string): T {
  const file = fileURLToPath(new URL(`../fixtures/${relativePath}`, import.meta.url));
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`test fixture ${file} cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  return JSON.parse(text) as T;
}
