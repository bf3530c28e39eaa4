import { AccessDeniedError } from '../errors.js';
import type { Template } from '../claims/template.js';
import type { KeyPath } from '../yaml/document.js';
import type { Report } from '../yaml/fields.js';

/**
 * What an upstream API accepts in a field that a grant template fills
 * (docs/providers.md, "Claim templates and how claim values are made safe").
 * A rendered value that does not fit is refused, never altered: replacing a
 * character or cutting the value short would let two different claims reach
 * the upstream as one value, and IAM policies decide on that value.
 */
export interface ValueRule {
  /** The field in messages, e.g. "a session tag value". */
  readonly what: string;
  /** Matches one allowed character (a `u` regex over one code point). */
  readonly allowedChar: RegExp;
  /** The allowed characters in words, for messages. */
  readonly allowedText: string;
  /** Bounds in code points, as AWS counts them. */
  readonly minChars: number;
  readonly maxChars: number;
}

/** The first character of `text` the rule does not allow, if any. */
function firstDisallowed(text: string, rule: ValueRule): string | undefined {
  for (const char of text) if (!rule.allowedChar.test(char)) return char;
  return undefined;
}

/** Names a character by code point, and shows it only when it is printable ASCII (never a control or bidi character). */
function describeChar(char: string): string {
  const code = `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  return /^[\x21-\x7e]$/.test(char) ? `'${char}' (${code})` : code;
}

function countChars(text: string): number {
  return [...text].length;
}

/**
 * Checks at load what a template's own text already decides: a literal
 * character the field never accepts, literal text longer than the field, or
 * plain text shorter than it. Each is reported at `at` (file:line:key).
 */
export function checkTemplateFits(template: Template, rule: ValueRule, at: KeyPath, report: Report): void {
  for (const literal of template.literals) {
    const disallowed = firstDisallowed(literal, rule);
    if (disallowed !== undefined) {
      report(at, `${describeChar(disallowed)} is not allowed in ${rule.what}, which takes only ${rule.allowedText}`);
      return;
    }
  }
  const literalChars = template.literals.reduce((sum, literal) => sum + countChars(literal), 0);
  if (literalChars > rule.maxChars) report(at, `the template's own text is ${literalChars} characters; ${rule.what} holds at most ${rule.maxChars}`);
  else if (template.claimRefs.length === 0 && literalChars < rule.minChars) report(at, `${rule.what} needs at least ${rule.minChars} characters, not ${literalChars}`);
}

/**
 * Renders a template for one token and verifies that the result fits the
 * rule as it is. The message names the field, the claim and the offending
 * character or the length, never the whole value.
 *
 * @param field the field in messages, e.g. "session tag 'ref'".
 * @param reason the audit record's machine reason.
 * @throws AccessDeniedError when a claim value holds a character the field does not allow, or the result is too long or too short.
 * @throws TemplateError when a referenced claim is absent or not a plain value (see `renderGrant`).
 */
export function renderFitting(template: Template, claims: Readonly<Record<string, unknown>>, rule: ValueRule, field: string, reason: string): string {
  const refuse = (problem: string): never => {
    throw new AccessDeniedError(`The policy's ${field} cannot be filled from this token: ${problem}. The broker refuses a value rather than alter it, so that two different claims never yield the same value.`, {
      reason,
    });
  };
  const rendered = template.render(claims, (value, claim) => {
    const disallowed = firstDisallowed(value, rule);
    if (disallowed !== undefined) refuse(`claim '${claim}' holds ${describeChar(disallowed)}, and ${rule.what} takes only ${rule.allowedText}`);
  });
  const chars = countChars(rendered);
  if (chars > rule.maxChars) refuse(`it renders to ${chars} characters, and ${rule.what} holds at most ${rule.maxChars}`);
  if (chars < rule.minChars) refuse(`it renders to ${chars} characters, and ${rule.what} needs at least ${rule.minChars}`);
  return rendered;
}
