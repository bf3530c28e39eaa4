import type { KeyPath } from '../../yaml/document.js';
import { isPlainObject } from '../../values.js';
import type { Template } from '../../claims/template.js';
import { checkKnownKeys, describeValue, echo, has, readTemplate, type Json, type KeyHints, type Report } from '../../yaml/fields.js';
import { countFailures, readDuration, readLiteral, readStringList } from '../grant-fields.js';
import { checkTemplateFits, type ValueRule } from '../value-rules.js';

/** A JSON value whose strings are templates: an AWS session policy. */
export type JsonTemplate = Template | number | boolean | null | readonly JsonTemplate[] | { readonly [key: string]: JsonTemplate };

export interface AwsGrant {
  provider: 'aws';
  /** Ceiling; the session lasts at least 900 s (STS's floor). */
  maxDurationSeconds: number;
  /** Literal, checked at load: a role chosen by claims would let a token pick its own privileges. */
  roleArn: string;
  sessionName: Template | undefined;
  sourceIdentity: Template | undefined;
  /** Tag key (literal) and value template, in file order. */
  sessionTags: readonly (readonly [key: string, value: Template])[];
  transitiveTagKeys: readonly string[];
  sessionPolicy: JsonTemplate | undefined;
  policyArns: readonly string[];
  externalId: string | undefined;
  region: string | undefined;
}

export const AWS_GRANT_KEYS = [
  'provider', 'role_arn', 'session_name', 'source_identity', 'session_tags', 'transitive_tag_keys',
  'session_policy', 'policy_arns', 'external_id', 'region', 'max_duration_seconds',
] as const;
/** STS AssumeRole limits (AWS API reference). */
const AWS_DURATION = { min: 900, max: 43_200, default: 3600 } as const;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const POLICY_ARN = /^arn:aws[a-z-]*:iam::(\d{12}|aws):policy\/[\w+=,.@/-]{1,512}$/;
const TAG_KEY = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$/u;

/** STS AssumeRole's `RoleSessionName` and `SourceIdentity` (AWS API reference): `[\w+=,.@-]`, 2 to 64 characters. */
const STS_NAME_CHAR = /^[\w+=,.@-]$/;
const STS_NAME_TEXT = 'ASCII letters, digits and _ + = , . @ -';
export const SESSION_NAME_RULE: ValueRule = { what: 'a session name', allowedChar: STS_NAME_CHAR, allowedText: STS_NAME_TEXT, minChars: 2, maxChars: 64 };
// `:` is outside the charset, so a source identity can never start with the reserved `aws:`.
export const SOURCE_IDENTITY_RULE: ValueRule = { what: 'a source identity', allowedChar: STS_NAME_CHAR, allowedText: STS_NAME_TEXT, minChars: 2, maxChars: 64 };
/** STS's `Tag.Value`: letters, digits and spaces of any script, and `_ . : / = + - @`; at most 256 characters. */
export const TAG_VALUE_RULE: ValueRule = {
  what: 'a session tag value',
  allowedChar: /^[\p{L}\p{Z}\p{N}_.:/=+\-@]$/u,
  allowedText: 'letters, digits, spaces and _ . : / = + - @',
  minChars: 0,
  maxChars: 256,
};
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;

/** An `aws` grant (docs/policies/reference.md): STS AssumeRole parameters, every literal checked at load. */
export function compileAwsGrant(grant: Json, report: Report, hints: KeyHints): AwsGrant | undefined {
  checkKnownKeys(grant, AWS_GRANT_KEYS, ['grant'], report, hints);
  const { failing, failed } = countFailures(report);

  const roleArn = readLiteral(grant, 'role_arn', ROLE_ARN, 'an IAM role ARN such as arn:aws:iam::123456789012:role/deploy', failing, true);
  const sessionName = has(grant, 'session_name') ? readFittingTemplate(grant.session_name, SESSION_NAME_RULE, ['grant', 'session_name'], failing) : undefined;
  const sourceIdentity = has(grant, 'source_identity') ? readFittingTemplate(grant.source_identity, SOURCE_IDENTITY_RULE, ['grant', 'source_identity'], failing) : undefined;

  const sessionTags: (readonly [string, Template])[] = [];
  if (has(grant, 'session_tags')) {
    const tags = grant.session_tags;
    if (!isPlainObject(tags)) failing(['grant', 'session_tags'], 'session_tags must be a map of tag key to template');
    else {
      const seen = new Set<string>();
      for (const [key, raw] of Object.entries(tags)) {
        const at = ['grant', 'session_tags', key];
        if (!TAG_KEY.test(key) || /^aws:/i.test(key)) failing(at, `tag key '${echo(key)}' must be 1-128 letters, digits, spaces or _.:/=+-@ and not start with aws:`);
        else if (seen.has(key.toLowerCase())) failing(at, `tag key '${echo(key)}' repeats another key (tag keys are case-insensitive)`);
        seen.add(key.toLowerCase());
        const template = readFittingTemplate(raw, TAG_VALUE_RULE, at, failing);
        if (template) sessionTags.push(Object.freeze([key, template] as const));
      }
      if (sessionTags.length > 50) failing(['grant', 'session_tags'], `at most 50 session tags, not ${sessionTags.length}`);
    }
  }
  const transitiveTagKeys = readStringList(grant, 'transitive_tag_keys', failing) ?? [];
  for (const [index, key] of transitiveTagKeys.entries()) {
    if (!sessionTags.some(([tag]) => tag === key)) failing(['grant', 'transitive_tag_keys', index], `'${echo(key)}' is not one of session_tags`);
  }

  let sessionPolicy: JsonTemplate | undefined;
  if (has(grant, 'session_policy')) {
    const raw = grant.session_policy;
    if (!isPlainObject(raw) || !has(raw, 'Version') || !has(raw, 'Statement')) {
      failing(['grant', 'session_policy'], 'session_policy must be an IAM policy document with Version and Statement');
    } else sessionPolicy = readJsonTemplate(raw, ['grant', 'session_policy'], failing);
  }
  const policyArns = readStringList(grant, 'policy_arns', failing) ?? [];
  if (policyArns.length > 10) failing(['grant', 'policy_arns'], `at most 10 managed policy ARNs, not ${policyArns.length}`);
  for (const [index, arn] of policyArns.entries()) {
    if (!POLICY_ARN.test(arn)) failing(['grant', 'policy_arns', index], `'${echo(arn)}' is not an IAM managed policy ARN`);
  }
  const externalId = readLiteral(grant, 'external_id', EXTERNAL_ID, '2-1224 characters of letters, digits and _+=,.@:/-', failing, false);
  const region = readLiteral(grant, 'region', REGION, 'an AWS region such as eu-west-1', failing, false);
  const maxDurationSeconds = readDuration(grant, AWS_DURATION, failing);

  if (failed() || roleArn === undefined) return undefined;
  return Object.freeze({
    provider: 'aws',
    maxDurationSeconds,
    roleArn,
    sessionName,
    sourceIdentity,
    sessionTags: Object.freeze(sessionTags),
    transitiveTagKeys: Object.freeze(transitiveTagKeys),
    sessionPolicy,
    policyArns: Object.freeze(policyArns),
    externalId,
    region,
  });
}

/** A template whose own text fits the field; a literal that cannot is a load error, not a refusal at every exchange. */
function readFittingTemplate(value: unknown, rule: ValueRule, at: KeyPath, report: Report): Template | undefined {
  const template = readTemplate(value, at, report);
  if (template) checkTemplateFits(template, rule, at, report);
  return template;
}

/** Every string of a JSON document becomes a template; keys stay literal. */
function readJsonTemplate(value: unknown, at: KeyPath, report: Report): JsonTemplate | undefined {
  if (typeof value === 'string') return readTemplate(value, at, report);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return value;
  if (Array.isArray(value)) {
    const items = value.map((item, index) => readJsonTemplate(item, [...at, index], report));
    return items.every((item) => item !== undefined) ? Object.freeze(items) : undefined;
  }
  if (isPlainObject(value)) {
    const out: Record<string, JsonTemplate> = {};
    for (const [key, item] of Object.entries(value)) {
      const compiled = readJsonTemplate(item, [...at, key], report);
      if (compiled === undefined) return undefined;
      Object.defineProperty(out, key, { value: compiled, enumerable: true });
    }
    return Object.freeze(out);
  }
  report(at, `unsupported value ${describeValue(value)}`);
  return undefined;
}
