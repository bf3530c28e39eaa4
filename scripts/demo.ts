/**
 * `npm run demo`: the README's "first five minutes", on a fresh clone with no
 * cloud account. Starts a local CI-token issuer, a loopback AWS STS emulator
 * and the real broker (all on 127.0.0.1, ephemeral ports, config in a temp
 * directory), walks through an AWS exchange, a broker-token exchange, a
 * denial with its explanation, and the audit log, then shuts everything down.
 *
 * Secrets are shortened in everything it prints. Exit code 0 on success, 1 on
 * any failure (with a message saying which step failed).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { parseConfig } from '../src/config.js';
import { startDevIssuer, type DevIssuer } from '../src/dev/issuer.js';
import { createLogger } from '../src/logger.js';
import { createBroker, type Broker } from '../src/main.js';
import { runCli } from '../src/cli/index.js';
import { listen, type RunningServer } from '../src/http/server.js';
import { startStsEmulator, type StsEmulator } from '../test/emulators/index.js';

const ROLE_ARN = 'arn:aws:iam::123456789012:role/demo-deploy-api';
/** The broker's own (fake) AWS identity; only the loopback emulator knows it. */
const BROKER_AWS_KEY = { accessKeyId: 'AKIADEMOBROKER000001', secretAccessKey: `demo/${randomBytes(18).toString('base64url')}` };
const AUDITOR_TOKEN = `demo-auditor-${randomBytes(16).toString('hex')}`;

const tty = process.stdout.isTTY === true && !('NO_COLOR' in process.env);
const paint = (code: string) => (s: string) => (tty ? `\u001b[${code}m${s}\u001b[0m` : s);
const bold = paint('1');
const dim = paint('2');
const green = paint('32');
const red = paint('31');
const cyan = paint('36');

const out = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

/** Every secret seen so far, so nothing printed can contain one in full. */
const secrets = new Set<string>();

function short(value: string, keep = 10): string {
  return value.length <= keep ? value : `${value.slice(0, keep)}…`;
}
function redact(value: string): string {
  return `${value.slice(0, 4)}…(redacted)`;
}

const SECRET_KEYS = new Set(['secretaccesskey', 'secret_access_key', 'sessiontoken', 'session_token']);
const TOKEN_KEYS = new Set(['access_token', 'token', 'id_token']);

/** A copy of `value` with secrets shortened: AWS secrets redacted, tokens cut to their first characters. */
function scrub(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    const k = key.toLowerCase();
    if (SECRET_KEYS.has(k)) return redact(value);
    if (TOKEN_KEYS.has(k) || /^eyJ[\w-]+\.[\w-]+\./.test(value)) return short(value);
    for (const s of secrets) if (s.length >= 8 && value.includes(s)) return value.split(s).join(short(s));
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => scrub(v));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrub(v, k)]));
  return value;
}

function json(value: unknown): void {
  const text = JSON.stringify(scrub(value), null, 2);
  for (const line of text.split('\n')) out(`    ${line}`);
}

let stepNo = 0;
let currentStep = 'start-up';
function step(title: string): void {
  stepNo++;
  currentStep = `step ${stepNo} (${title})`;
  out();
  out(bold(cyan(`== ${stepNo}. ${title} ==`)));
}
function say(text: string): void {
  out(`  ${text}`);
}
function curl(line: string): void {
  out(dim(`  $ ${line}`));
}
/** A curl call whose JSON answer is shown as `jq .` prints it (secrets shortened): what the reader would see. */
function curlJson(line: string, answer: HttpAnswer): void {
  curl(`${line} | jq .`);
  json(answer.body);
}

class DemoError extends Error {}
function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new DemoError(message);
}

interface HttpAnswer {
  status: number;
  body: any;
}
async function http(method: 'GET' | 'POST', url: string, options: { token?: string; body?: unknown } = {}): Promise<HttpAnswer> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method, headers, ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}), signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; keep the text
  }
  return { status: res.status, body };
}

function policies(): Record<string, string> {
  return {
    'demo-aws-deploy.yaml': `# AWS: acme/api on main assumes one role, scoped to its own S3 prefix.
name: demo-aws-deploy
issuer: local
claims:
  repository: acme/api
  ref: refs/heads/main
grant:
  provider: aws
  role_arn: ${ROLE_ARN}
  max_duration_seconds: 900
  session_name: ci-\${run_id}
  source_identity: \${actor}
  session_tags:
    repository: \${repository}
    ref: \${ref}
    actor: \${actor}
  session_policy:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Action: ["s3:PutObject"]
        Resource: ["arn:aws:s3:::demo-artifacts/\${repository}/*"]
`,
    'demo-broker-token.yaml': `# A token signed by the broker, verifiable at /.well-known/jwks.json.
name: demo-broker-token
issuer: local
claims:
  repository: acme/api
  ref: refs/heads/main
grant:
  provider: jwt
  audience: https://deploy.example.com
`,
    'demo-deny-pull-request-target.yaml': `# Never issue anything to a pull_request_target run, whatever else allows it.
name: demo-deny-pull-request-target
effect: deny
issuer: local
claims:
  event_name: pull_request_target
`,
  };
}

/**
 * A free loopback port for the broker, known before its config is written:
 * its public URL (the `iss` of the tokens it signs, and the audience CI
 * tokens are minted for) names the port it really listens on.
 */
async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function main(): Promise<void> {
  let dir: string | undefined;
  let issuer: DevIssuer | undefined;
  let sts: StsEmulator | undefined;
  let broker: Broker | undefined;
  let server: RunningServer | undefined;
  const savedEnv = { ...process.env };
  try {
    // ---- start-up -----------------------------------------------------------
    dir = await mkdtemp(path.join(tmpdir(), 'oidc-broker-demo-'));
    const base = `http://127.0.0.1:${await freePort()}`;
    issuer = await startDevIssuer({ port: 0, audience: base });
    sts = await startStsEmulator({ ...BROKER_AWS_KEY, region: 'us-east-1' });
    secrets.add(BROKER_AWS_KEY.secretAccessKey);
    secrets.add(AUDITOR_TOKEN);
    // The broker's own AWS identity comes from the SDK's default chain: here, the environment.
    process.env.AWS_ACCESS_KEY_ID = BROKER_AWS_KEY.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = BROKER_AWS_KEY.secretAccessKey;
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    process.env.AWS_CONFIG_FILE = path.join(dir, 'aws-config-none');
    process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, 'aws-credentials-none');

    await mkdir(path.join(dir, 'policies'));
    await mkdir(path.join(dir, 'data'));
    for (const [name, text] of Object.entries(policies())) await writeFile(path.join(dir, 'policies', name), text);
    const configText = `server:
  host: 127.0.0.1
  port: ${new URL(base).port}
  public_url: ${base}
issuers:
  - name: local
    issuer: ${issuer.url}
    audiences: [${base}]
policies:
  dir: ./policies
audit:
  url: sqlite:./data/audit.db
providers:
  jwt:
    signing_key_file: ./data/signing-key.jwk
  aws:
    region: us-east-1
    endpoint: ${sts.url}
    timeout_seconds: 5
auditors:
  - name: demo-auditor
    token_sha256: ${createHash('sha256').update(AUDITOR_TOKEN).digest('hex')}
`;
    const configPath = path.join(dir, 'broker.yaml');
    await writeFile(configPath, configText);
    const config = await parseConfig(configText, configPath, {});
    const logger = createLogger({ silent: true });
    broker = await createBroker(config, { logger });
    server = await listen(broker, { host: '127.0.0.1', port: Number(new URL(base).port), logger, graceMs: 2000 });

    out(bold('oidc-broker demo: everything runs on loopback, in a temp directory; no cloud account needed.'));
    say(`CI token issuer (dev issuer):  ${issuer.url}`);
    say(`AWS STS emulator (SigV4):      ${sts.url}`);
    say(`broker:                        ${base}`);
    say(`config and audit log:          ${dir}`);
    say(`policies:                      ${Object.keys(policies()).join(', ')}`);

    // No sub: the dev issuer derives it from repository and ref, as GitHub's is (repo:acme/api:ref:refs/heads/main).
    const mainClaims = { repository: 'acme/api', ref: 'refs/heads/main', actor: 'octocat', run_id: '4242', event_name: 'push' };
    // Minted as the curl shown mints it: POST /token?format=raw answers the bare token.
    const mint = async (claims: Record<string, unknown>): Promise<string> => {
      const body = JSON.stringify(claims);
      curl(`TOKEN=$(curl -s -X POST '${issuer!.url}/token?format=raw' -H 'content-type: application/json' -d '${body}')`);
      const res = await fetch(`${issuer!.url}/token?format=raw`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(15_000) });
      const token = await res.text();
      check(res.status === 200, `the dev issuer answered ${res.status} to POST /token`);
      secrets.add(token);
      return token;
    };

    // ---- 1 ------------------------------------------------------------------
    step('Mint a CI token for acme/api on refs/heads/main');
    say('Your CI provider does this for every job; here the local dev issuer stands in for it.');
    const token1 = await mint(mainClaims);
    say(`$TOKEN now holds the raw token, ${token1.length} characters (shortened in everything this demo prints): ${short(token1)}`);
    say('Its claims:');
    json(decodeJwt(token1));

    // ---- 2 ------------------------------------------------------------------
    step('Exchange it for AWS credentials (policy demo-aws-deploy)');
    const aws = await http('POST', `${base}/v1/exchange`, { token: token1, body: { policy: 'demo-aws-deploy' } });
    const stsCall = sts.requests.at(-1);
    if (stsCall?.credentials) {
      secrets.add(stsCall.credentials.SecretAccessKey);
      secrets.add(stsCall.credentials.SessionToken);
    }
    curlJson(`curl -s -X POST ${base}/v1/exchange -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"policy":"demo-aws-deploy"}'`, aws);
    check(aws.status === 200, `AWS exchange answered ${aws.status}: ${JSON.stringify(scrub(aws.body))}`);
    const awsCreds = aws.body?.credentials as Record<string, unknown> | undefined;
    const accessKeyId = String((awsCreds?.access_key_id ?? awsCreds?.AccessKeyId ?? ''));
    check(accessKeyId.startsWith('ASIA'), 'the AWS exchange answered no temporary access key id');
    say(green(`HTTP ${aws.status}: issued ${accessKeyId} (issuance id ${aws.body.issuance_id})`));
    check(stsCall !== undefined, 'the STS emulator received no AssumeRole call');
    say(`What STS received (the emulator's request log; the call was SigV4-signed with the broker's own key ${BROKER_AWS_KEY.accessKeyId}):`);
    json({
      RoleArn: stsCall.RoleArn,
      RoleSessionName: stsCall.RoleSessionName,
      SourceIdentity: stsCall.SourceIdentity,
      DurationSeconds: stsCall.DurationSeconds,
      Tags: stsCall.Tags,
      Policy: stsCall.Policy !== undefined ? JSON.parse(stsCall.Policy) : undefined,
    });

    // ---- 3 ------------------------------------------------------------------
    step('Exchange a fresh token for a broker-signed token (policy demo-broker-token)');
    say('Each CI token is good for one exchange (a second use is 409 token_replayed), so mint another.');
    const token2 = await mint(mainClaims);
    const jwt = await http('POST', `${base}/v1/exchange`, { token: token2, body: { policy: 'demo-broker-token' } });
    const brokerToken = String(jwt.body?.credentials?.access_token ?? '');
    if (brokerToken) secrets.add(brokerToken);
    curlJson(`curl -s -X POST ${base}/v1/exchange -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"policy":"demo-broker-token"}'`, jwt);
    check(jwt.status === 200 && brokerToken !== '', `broker-token exchange answered ${jwt.status}: ${JSON.stringify(scrub(jwt.body))}`);
    say(green(`HTTP ${jwt.status}: issued a token signed by the broker, issuer ${base} (its public_url)`));
    say('The broker-signed token\'s claims:');
    json(decodeJwt(brokerToken));
    curlJson(`curl -s ${base}/.well-known/jwks.json`, await http('GET', `${base}/.well-known/jwks.json`));
    const verified = await jwtVerify(brokerToken, createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`)), { issuer: base, audience: 'https://deploy.example.com' });
    say(green(`verified with jose against the broker's JWKS: alg ${verified.protectedHeader.alg}, kid ${verified.protectedHeader.kid}, aud ${String(verified.payload.aud)}`));

    // ---- 4 ------------------------------------------------------------------
    step('A denial: a token from a feature branch');
    const featureClaims = { ...mainClaims, ref: 'refs/heads/feature/login' };
    const token3 = await mint(featureClaims);
    const denied = await http('POST', `${base}/v1/exchange`, { token: token3, body: { policy: 'demo-aws-deploy' } });
    curlJson(`curl -s -X POST ${base}/v1/exchange -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"policy":"demo-aws-deploy"}'`, denied);
    check(denied.status === 403, `the feature-branch exchange answered ${denied.status}, not 403`);
    say(red(`HTTP ${denied.status}: denied: ${String(denied.body?.error_description ?? denied.body?.error)}`));
    out();
    say('Ask the broker why (POST /v1/explain evaluates without issuing; the token stays unused):');
    const token4 = await mint(featureClaims);
    const explained = await http('POST', `${base}/v1/explain`, { token: token4, body: { policy: 'demo-aws-deploy' } });
    curlJson(`curl -s -X POST ${base}/v1/explain -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"policy":"demo-aws-deploy"}'`, explained);
    check(explained.status === 200, `explain answered ${explained.status}`);
    say(`HTTP ${explained.status}. Over HTTP the policy's expected values are hidden ("(hidden)"), so a caller cannot probe the policy.`);
    say('Whoever holds the policy files sees them offline, with nothing verified:');
    const claimsFile = path.join(dir, 'feature-claims.json');
    await writeFile(claimsFile, `${JSON.stringify(decodeJwt(token4), null, 2)}\n`);
    const offlineArgs = ['policy', 'explain', '--policy', 'demo-aws-deploy', '--claims', claimsFile, '-c', configPath, path.join(dir, 'policies')];
    curl(`npx oidc-broker ${offlineArgs.join(' ')}`);
    const offlineCode = await runCli(['node', 'oidc-broker', ...offlineArgs]);
    check(offlineCode === 3, `offline policy explain exited ${offlineCode}, expected 3 (would deny)`);
    say(`(exit code ${offlineCode}: the policy would deny)`);

    // ---- 5 ------------------------------------------------------------------
    step('Query the audit log as an auditor');
    say(`$AUDITOR_TOKEN is the demo auditor's bearer token (the config holds only its SHA-256): ${short(AUDITOR_TOKEN, 12)}`);
    curl(`curl -s '${base}/v1/audit/events?limit=10' -H "Authorization: Bearer $AUDITOR_TOKEN" | jq -c '.events[] | {time, decision, policy, subject, credential_id}'`);
    const events = await http('GET', `${base}/v1/audit/events?limit=10`, { token: AUDITOR_TOKEN });
    check(events.status === 200, `audit events answered ${events.status}: ${JSON.stringify(scrub(events.body))}`);
    for (const e of (events.body?.events ?? []) as Record<string, unknown>[]) {
      out(`    ${JSON.stringify(scrub({ time: e.time, decision: e.decision, policy: e.policy, subject: e.subject, credential_id: e.credential_id }))}`);
    }
    out();
    const verify = await http('GET', `${base}/v1/audit/verify`, { token: AUDITOR_TOKEN });
    curlJson(`curl -s ${base}/v1/audit/verify -H "Authorization: Bearer $AUDITOR_TOKEN"`, verify);
    check(verify.status === 200 && verify.body?.ok === true, `audit verify answered ${verify.status}: ${JSON.stringify(scrub(verify.body))}`);
    say(green('the hash chain verifies.'));
    // For test/demo.test.ts only: the secrets the demo saw, so the test can check none was printed in full.
    const secretsFile = process.env.OIDC_BROKER_DEMO_SECRETS_FILE;
    if (secretsFile) await writeFile(secretsFile, `${JSON.stringify([...secrets])}\n`, { mode: 0o600 });
  } finally {
    await server?.shutdown().catch(() => undefined);
    if (!server) await broker?.close().catch(() => undefined);
    await sts?.close().catch(() => undefined);
    await issuer?.close().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    process.env = savedEnv;
  }
  out();
  out(green(bold('Demo finished: everything shut down, temp directory removed.')));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const message = err instanceof DemoError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`${red(bold(`demo failed at ${currentStep}:`))} ${message}\n`);
    process.exit(1);
  },
);
