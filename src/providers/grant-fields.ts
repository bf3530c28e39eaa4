import { describeValue, has, type Json, type Report } from '../yaml/fields.js';

/**
 * Field readers the providers' grant compilers share (docs/policies/reference.md):
 * each reports a problem at its key path and says what was expected.
 */

/** Wraps a reporter so a grant reader can tell whether anything it read failed. */
export function countFailures(report: Report): { failing: Report; failed: () => boolean } {
  let failures = 0;
  return {
    failing: (...args) => {
      failures++;
      report(...args);
    },
    failed: () => failures > 0,
  };
}

export function readDuration(grant: Json, bounds: { min: number; max: number; default: number }, report: Report): number {
  if (!has(grant, 'max_duration_seconds')) return bounds.default;
  const value = grant.max_duration_seconds;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < bounds.min || value > bounds.max) {
    report(['grant', 'max_duration_seconds'], `max_duration_seconds must be an integer from ${bounds.min} to ${bounds.max}, not ${describeValue(value)}`);
    return bounds.default;
  }
  return value;
}

export function readLiteral(grant: Json, key: string, pattern: RegExp, expected: string, report: Report, required: boolean): string | undefined {
  if (!has(grant, key)) {
    if (required) report(['grant', key], `grant.${key} is required`, expected);
    return undefined;
  }
  const value = grant[key];
  if (typeof value !== 'string' || !pattern.test(value)) {
    report(['grant', key], `${key} must be ${expected}, not ${describeValue(value)}`, typeof value === 'string' && value.includes('${') ? `${key} cannot use claim templates` : undefined);
    return undefined;
  }
  return value;
}

export function readStringList(grant: Json, key: string, report: Report): string[] | undefined {
  if (!has(grant, key)) return undefined;
  const value = grant[key];
  if (!Array.isArray(value) || !value.every((item): item is string => typeof item === 'string')) {
    report(['grant', key], `${key} must be a list of strings`);
    return undefined;
  }
  return [...value];
}

