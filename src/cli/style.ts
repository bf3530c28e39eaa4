import { isPlainOutput, type CliIo } from './io.js';

/** The marks the CLI's human-readable output uses: glyphs and colour on a terminal, plain ASCII otherwise (isPlainOutput). */
export interface Glyphs {
  /** A passing and a failing `policy test` case. */
  pass: string;
  fail: string;
  /** A condition that holds or fails (`policy explain`). */
  holds: string;
  fails: string;
  /** Between a failing case and why it failed. */
  dash: string;
}

const GREEN = '\u001b[32m';
const RED = '\u001b[31m';
const RESET = '\u001b[0m';

const TERMINAL: Glyphs = { pass: `${GREEN}PASS${RESET}`, fail: `${RED}FAIL${RESET}`, holds: '✓', fails: '✗', dash: '—' };
const PLAIN: Glyphs = { pass: 'PASS', fail: 'FAIL', holds: 'yes', fails: 'no', dash: '-' };

/** The marks for this run's stdout (README.md#cli, "Output"). */
export function glyphsFor(io: CliIo): Glyphs {
  return isPlainOutput(io) ? PLAIN : TERMINAL;
}
