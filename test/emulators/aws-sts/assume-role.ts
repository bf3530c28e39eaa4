/**
 * Parsing and validation of an STS `AssumeRole` awsQuery form, following the API reference:
 * https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
 * (and API_Tag.html, API_PolicyDescriptorType.html, the IAM quotas page for session tags).
 *
 * Messages follow STS's shapes ("1 validation error detected: Value '...' at 'roleSessionName'
 * failed to satisfy constraint: ...") so a broker that logs them sees what production would say.
 */
import type { StsErrorAnswer } from './sigv4.js';

export const STS_API_VERSION = '2011-06-15';

export interface SessionTag {
  Key: string;
  Value: string;
}

/** The AssumeRole parameters as received (lenient: present even when invalid). */
export interface AssumeRoleParams {
  RoleArn?: string;
  RoleSessionName?: string;
  /** NaN when the form value is not an integer. */
  DurationSeconds?: number;
  /** The raw session policy string, byte for byte. */
  Policy?: string;
  PolicyArns: string[];
  Tags: SessionTag[];
  TransitiveTagKeys: string[];
  ExternalId?: string;
  SourceIdentity?: string;
}

export interface ParsedForm {
  action: string | undefined;
  version: string | undefined;
  params: AssumeRoleParams;
  /** Form keys that are not AssumeRole parameters, or are malformed list members. */
  unknown: string[];
  /** Keys that appeared more than once. */
  duplicated: string[];
}

export interface AssumeRoleLimits {
  /** The role's MaxSessionDuration (IAM: 3600 by default, at most 43200). */
  roleMaxSessionSeconds: number;
}

/** IAM's plaintext limit for session policies, also used for the packed-size approximation. */
export const PACKED_POLICY_LIMIT_CHARS = 2048;

const SESSION_NAME = /^[\w+=,.@-]*$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]*$/;
const TAG_TEXT = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
/** API_AssumeRole: Policy pattern `[\u0009\u000A\u000D\u0020-\u00FF]+`. */
const POLICY_TEXT = /^[\t\n\r\u0020-\u00FF]+$/;
/** `arn:<partition>:iam::<account>:role/<path/><name>`; IAM paths are `/` or `/.../` of printable ASCII, names `[\w+=,.@-]{1,64}`. */
const ROLE_ARN = /^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):iam::(\d{12}):role\/((?:[\x21-\x7e]*\/)?)([\w+=,.@-]{1,64})$/;
const ANY_ARN = /^arn:[\w-]+:[\w-]+:[\w-]*:(\d{12}|aws)?:.+$/;

/** Code points, as AWS counts lengths. */
function length(value: string): number {
  return [...value].length;
}

/** Splits an `x-www-form-urlencoded` body into AssumeRole parameters (awsQuery: `List.member.N[.Field]`). */
export function parseAssumeRoleForm(body: string): ParsedForm {
  const seen = new Set<string>();
  const duplicated: string[] = [];
  const unknown: string[] = [];
  const scalars = new Map<string, string>();
  const policyArns = new Map<number, string>();
  const tagKeys = new Map<number, string>();
  const tagValues = new Map<number, string>();
  const transitive = new Map<number, string>();
  let action: string | undefined;
  let version: string | undefined;

  for (const [key, value] of new URLSearchParams(body)) {
    if (seen.has(key)) duplicated.push(key);
    seen.add(key);
    let m: RegExpExecArray | null;
    if (key === 'Action') action = value;
    else if (key === 'Version') version = value;
    else if (['RoleArn', 'RoleSessionName', 'DurationSeconds', 'Policy', 'ExternalId', 'SourceIdentity'].includes(key)) scalars.set(key, value);
    // awsQuery serialises an empty list as `Name=` with no members.
    else if (['PolicyArns', 'Tags', 'TransitiveTagKeys'].includes(key) && value === '') continue;
    else if ((m = /^PolicyArns\.member\.([1-9]\d*)\.arn$/.exec(key))) policyArns.set(Number(m[1]), value);
    else if ((m = /^Tags\.member\.([1-9]\d*)\.Key$/.exec(key))) tagKeys.set(Number(m[1]), value);
    else if ((m = /^Tags\.member\.([1-9]\d*)\.Value$/.exec(key))) tagValues.set(Number(m[1]), value);
    else if ((m = /^TransitiveTagKeys\.member\.([1-9]\d*)$/.exec(key))) transitive.set(Number(m[1]), value);
    // SerialNumber/TokenCode (MFA) and ProvidedContexts are real STS parameters, but the broker
    // never sends them; the emulator rejects them like unknown ones so a stray one shows up.
    else unknown.push(key);
  }

  const ordered = <T>(map: Map<number, T>): T[] => [...map.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
  const tagIndexes = [...new Set([...tagKeys.keys(), ...tagValues.keys()])].sort((a, b) => a - b);
  const tags: SessionTag[] = [];
  for (const i of tagIndexes) {
    const Key = tagKeys.get(i);
    const Value = tagValues.get(i);
    // Tag.Key and Tag.Value are both required members.
    if (Key === undefined) unknown.push(`Tags.member.${i}.Key (missing)`);
    if (Value === undefined) unknown.push(`Tags.member.${i}.Value (missing)`);
    tags.push({ Key: Key ?? '', Value: Value ?? '' });
  }

  const duration = scalars.get('DurationSeconds');
  const params: AssumeRoleParams = {
    PolicyArns: ordered(policyArns),
    Tags: tags,
    TransitiveTagKeys: ordered(transitive),
  };
  for (const name of ['RoleArn', 'RoleSessionName', 'Policy', 'ExternalId', 'SourceIdentity'] as const) {
    const value = scalars.get(name);
    if (value !== undefined) params[name] = value;
  }
  if (duration !== undefined) params.DurationSeconds = /^\d{1,9}$/.test(duration) ? Number(duration) : Number.NaN;
  return { action, version, params, unknown, duplicated };
}

function validationError(message: string): StsErrorAnswer {
  return { status: 400, type: 'Sender', code: 'ValidationError', message };
}

function malformedPolicy(message: string): StsErrorAnswer {
  return { status: 400, type: 'Sender', code: 'MalformedPolicyDocument', message };
}

/** Truncates a value for an error message (AWS echoes values; keep test output readable). */
function echo(value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value;
}

/**
 * Checks a session policy the way IAM does for an identity-based policy: a JSON object with a
 * known `Version` and a `Statement` (object or non-empty array) whose entries each have
 * `Effect` Allow|Deny, `Action` or `NotAction`, `Resource` or `NotResource`, and no `Principal`.
 * Returns the minified JSON on success (used for the packed-size estimate).
 */
function checkPolicyDocument(policy: string): { minified: string } | { error: StsErrorAnswer } {
  let doc: unknown;
  try {
    doc = JSON.parse(policy);
  } catch {
    return { error: malformedPolicy('The policy is not in the valid JSON format.') };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return { error: malformedPolicy('The policy is not in the valid JSON format.') };
  }
  const record = doc as Record<string, unknown>;
  if (record['Version'] !== '2012-10-17' && record['Version'] !== '2008-10-17') {
    return { error: malformedPolicy("Syntax errors in policy: 'Version' must be \"2012-10-17\" or \"2008-10-17\".") };
  }
  const statement = record['Statement'];
  const statements = Array.isArray(statement) ? statement : statement === undefined ? [] : [statement];
  if (statements.length === 0) return { error: malformedPolicy("Syntax errors in policy: 'Statement' is required.") };
  for (const s of statements) {
    if (typeof s !== 'object' || s === null || Array.isArray(s)) return { error: malformedPolicy('Syntax errors in policy: a Statement must be an object.') };
    const st = s as Record<string, unknown>;
    if (st['Effect'] !== 'Allow' && st['Effect'] !== 'Deny') return { error: malformedPolicy("Syntax errors in policy: 'Effect' must be Allow or Deny.") };
    if ((st['Action'] === undefined) === (st['NotAction'] === undefined)) return { error: malformedPolicy("Syntax errors in policy: exactly one of 'Action' and 'NotAction' is required.") };
    if ((st['Resource'] === undefined) === (st['NotResource'] === undefined)) return { error: malformedPolicy("Syntax errors in policy: exactly one of 'Resource' and 'NotResource' is required.") };
    if (st['Principal'] !== undefined || st['NotPrincipal'] !== undefined) return { error: malformedPolicy('Policy document should not specify a principal.') };
  }
  return { minified: JSON.stringify(doc) };
}

/**
 * Approximates STS's PackedPolicySize, which is the share of a fixed binary budget used by the
 * session policy, managed policy ARNs and session tags once compressed. The real packing is not
 * documented; the emulator uses the characters of the minified policy JSON + the ARNs + each tag's
 * key and value, against 2048 characters. Returns the percentage (rounded up; may exceed 100).
 */
export function packedPolicyPercent(minifiedPolicy: string, params: AssumeRoleParams): number {
  const chars = length(minifiedPolicy)
    + params.PolicyArns.reduce((sum, arn) => sum + length(arn), 0)
    + params.Tags.reduce((sum, t) => sum + length(t.Key) + length(t.Value), 0);
  return Math.ceil((chars * 100) / PACKED_POLICY_LIMIT_CHARS);
}

export type AssumeRoleVerdict = { ok: true; packedPolicySize: number | undefined } | { ok: false; error: StsErrorAnswer };

/**
 * Validates a parsed AssumeRole form. Constraint violations of individual members are collected
 * into one `ValidationError` ("N validation errors detected: ..."), as AWS does; the cross-field
 * rules (role max session duration, tag key uniqueness, transitive keys, `aws:` prefixes), the
 * policy grammar (`MalformedPolicyDocument`) and the packed size (`PackedPolicyTooLarge`) follow.
 */
export function validateAssumeRole(form: ParsedForm, limits: AssumeRoleLimits): AssumeRoleVerdict {
  const { params } = form;
  if (form.duplicated.length > 0) return { ok: false, error: validationError(`Parameter(s) given more than once: ${form.duplicated.join(', ')}`) };
  if (form.unknown.length > 0) return { ok: false, error: validationError(`Unrecognized or malformed parameter(s): ${form.unknown.join(', ')}`) };

  const violations: string[] = [];
  const violation = (value: string, field: string, constraint: string): void => {
    violations.push(`Value '${echo(value)}' at '${field}' failed to satisfy constraint: Member ${constraint}`);
  };
  const checkLength = (value: string, field: string, min: number, max: number): void => {
    const n = length(value);
    if (n < min) violation(value, field, `must have length greater than or equal to ${min}`);
    else if (n > max) violation(value, field, `must have length less than or equal to ${max}`);
  };
  const checkPattern = (value: string, field: string, pattern: RegExp, shown: string): void => {
    if (!pattern.test(value)) violation(value, field, `must satisfy regular expression pattern: ${shown}`);
  };

  if (params.RoleArn === undefined) violations.push("Value null at 'roleArn' failed to satisfy constraint: Member must not be null");
  else checkLength(params.RoleArn, 'roleArn', 20, 2048);
  if (params.RoleSessionName === undefined) violations.push("Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null");
  else {
    checkLength(params.RoleSessionName, 'roleSessionName', 2, 64);
    checkPattern(params.RoleSessionName, 'roleSessionName', SESSION_NAME, '[\\w+=,.@-]*');
  }
  if (params.DurationSeconds !== undefined) {
    const d = params.DurationSeconds;
    if (Number.isNaN(d)) violations.push("Value at 'durationSeconds' failed to satisfy constraint: Member must be an integer");
    else if (d < 900) violation(String(d), 'durationSeconds', 'must have value greater than or equal to 900');
    else if (d > 43200) violation(String(d), 'durationSeconds', 'must have value less than or equal to 43200');
  }
  if (params.Policy !== undefined) {
    checkLength(params.Policy, 'policy', 1, PACKED_POLICY_LIMIT_CHARS);
    if (params.Policy !== '') checkPattern(params.Policy, 'policy', POLICY_TEXT, '[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+');
  }
  if (params.PolicyArns.length > 10) violation(`[${params.PolicyArns.length} items]`, 'policyArns', 'must have length less than or equal to 10');
  params.PolicyArns.forEach((arn, i) => checkLength(arn, `policyArns.${i + 1}.member.arn`, 20, 2048));
  if (params.Tags.length > 50) violation(`[${params.Tags.length} items]`, 'tags', 'must have length less than or equal to 50');
  params.Tags.forEach((tag, i) => {
    checkLength(tag.Key, `tags.${i + 1}.member.key`, 1, 128);
    checkPattern(tag.Key, `tags.${i + 1}.member.key`, TAG_TEXT, '[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+');
    checkLength(tag.Value, `tags.${i + 1}.member.value`, 0, 256);
    checkPattern(tag.Value, `tags.${i + 1}.member.value`, TAG_TEXT, '[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*');
  });
  if (params.TransitiveTagKeys.length > 50) violation(`[${params.TransitiveTagKeys.length} items]`, 'transitiveTagKeys', 'must have length less than or equal to 50');
  params.TransitiveTagKeys.forEach((key, i) => {
    checkLength(key, `transitiveTagKeys.${i + 1}.member`, 1, 128);
    checkPattern(key, `transitiveTagKeys.${i + 1}.member`, TAG_TEXT, '[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+');
  });
  if (params.ExternalId !== undefined) {
    checkLength(params.ExternalId, 'externalId', 2, 1224);
    checkPattern(params.ExternalId, 'externalId', EXTERNAL_ID, '[\\w+=,.@:\\/-]*');
  }
  if (params.SourceIdentity !== undefined) {
    checkLength(params.SourceIdentity, 'sourceIdentity', 2, 64);
    // ':' is outside the pattern anyway; name the reserved prefix, which is the likelier mistake.
    if (params.SourceIdentity.toLowerCase().startsWith('aws:')) violation(params.SourceIdentity, 'sourceIdentity', "must not begin with the reserved prefix 'aws:'");
    else checkPattern(params.SourceIdentity, 'sourceIdentity', SESSION_NAME, '[\\w+=,.@-]*');
  }
  if (violations.length > 0) {
    const count = violations.length === 1 ? '1 validation error' : `${violations.length} validation errors`;
    return { ok: false, error: validationError(`${count} detected: ${violations.join('; ')}`) };
  }

  // Cross-field and semantic rules, checked once every member is well-formed.
  if (!ROLE_ARN.test(params.RoleArn!)) {
    return { ok: false, error: validationError(`${echo(params.RoleArn!)} is invalid: expected arn:aws:iam::<12-digit account>:role/<path/><name>`) };
  }
  for (const arn of params.PolicyArns) {
    if (!ANY_ARN.test(arn)) return { ok: false, error: validationError(`${echo(arn)} is invalid: policy ARNs look like arn:aws:iam::<account|aws>:policy/<name>`) };
  }
  if (params.DurationSeconds !== undefined && params.DurationSeconds > limits.roleMaxSessionSeconds) {
    return { ok: false, error: validationError(`The requested DurationSeconds exceeds the MaxSessionDuration set for this role.`) };
  }
  const tagKeys = new Set<string>();
  for (const tag of params.Tags) {
    const folded = tag.Key.toLowerCase();
    if (folded.startsWith('aws:')) return { ok: false, error: validationError(`Tag key '${echo(tag.Key)}' can't begin with the reserved prefix 'aws:'.`) };
    if (tagKeys.has(folded)) return { ok: false, error: validationError('Duplicate tag keys found. Please note that Tag keys are case insensitive.') };
    tagKeys.add(folded);
  }
  for (const key of params.TransitiveTagKeys) {
    if (!tagKeys.has(key.toLowerCase())) {
      return { ok: false, error: validationError(`The specified transitive tag key '${echo(key)}' must be included in the requested tags.`) };
    }
  }

  let minified = '';
  if (params.Policy !== undefined) {
    const checked = checkPolicyDocument(params.Policy);
    if ('error' in checked) return { ok: false, error: checked.error };
    minified = checked.minified;
  }
  if (params.Policy === undefined && params.PolicyArns.length === 0 && params.Tags.length === 0) {
    return { ok: true, packedPolicySize: undefined };
  }
  const percent = packedPolicyPercent(minified, params);
  if (percent > 100) {
    return {
      ok: false,
      error: { status: 400, type: 'Sender', code: 'PackedPolicyTooLarge', message: `Packed policy consumes ${percent}% of allotted space, please use smaller policy for this request.` },
    };
  }
  return { ok: true, packedPolicySize: percent };
}
