import { createHash } from 'node:crypto';
import path from 'node:path';
import express, { Router, type Request, type RequestHandler } from 'express';
import { InvalidRequestError, InvalidTokenError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { TokenVerifier } from '../../oidc/types.js';
import { lookupPolicy } from '../../policy/evaluate.js';
import { evaluateOffline, offlineToken, toExplainOutput } from '../../policy/explain.js';
import { formatPolicyIssue } from '../../policy/issues.js';
import { loadPolicyDir, loadPolicyTestFiles } from '../../policy/load.js';
import { policySetDigest, type PolicySetStatus } from '../../policy/reload.js';
import { runPolicyTests, type PolicyTestRun } from '../../policy/test-cases.js';
import type { CompileContext, PolicyFile, PolicySet } from '../../policy/types.js';
import { isPlainObject } from '../../values.js';
import type { AuditorAuth } from '../auditor-auth.js';
import { MAX_BODY_BYTES, requestContext } from '../request.js';

const evaluateBody = express.json({ limit: MAX_BODY_BYTES, strict: true, inflate: false });
const FIELDS = new Set(['policy', 'claims', 'token', 'issuer']);

/**
 * GET /v1/policies (openapi.yaml, docs/console.md "Policies"): auditors
 * only. The loaded set (its /readyz status and every policy), each policy's
 * source as read from `policyDir` now (only if its SHA-256 is still the
 * loaded one: a file changed since is `source_status: changed`), and every
 * case of the directory's test files run against the loaded set, as
 * `oidc-broker policy test` runs them. The files are read on each request
 * (about 2 ms for the 28 example policies and their 14 test files); the
 * cases (about 35 ms of CPU for their 101) run again only when the loaded
 * set or a test file changed (docs/console.md, "Policies").
 *
 * POST /v1/policies/evaluate (openapi.yaml, docs/console.md "The playground"):
 * auditors only, by Bearer token or the console's session cookie (then only
 * from the console's own origin, `sameOrigin`). What the loaded policy set
 * decides for a claim set, or for a token verified as an exchange verifies
 * it, condition by condition as `oidc-broker policy explain` shows it
 * offline (deny policies' expected values included: auditors may read the
 * policies). Issues nothing, claims nothing against replay, and writes no
 * audit record: a made-up claim set is not a request, and would otherwise
 * be counted in the stats and replayed by `policy impact`. Each call is
 * logged (`policy evaluate`: auditor, policy, decision, the token's SHA-256,
 * never the token or the claims).
 */
export function policyRoutes(deps: {
  policies: () => PolicySet;
  policyStatus: () => PolicySetStatus;
  policyContext: CompileContext;
  policyDir: string;
  verifier: Pick<TokenVerifier, 'verify'>;
  auditorAuth: AuditorAuth;
  sameOrigin: RequestHandler;
  logger: Logger;
}): Router {
  const router = Router();
  // A browser sends the cookie only with the console's own requests (SameSite=Strict); the Origin check is the first line.
  const sameOriginForSessions: RequestHandler = (req, res, next) => (deps.auditorAuth.credentialOf(req).kind === 'session' ? deps.sameOrigin(req, res, next) : next());

  let lastRun: { key: string; run: PolicyTestRun } | null = null;

  router.get('/v1/policies', deps.auditorAuth.middleware, async (req, res) => {
    const name = Object.keys(req.query)[0];
    if (name !== undefined) throw new InvalidRequestError(`Unknown query parameter '${name.slice(0, 64).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?')}'.`, { reason: 'bad_query' });
    const set = deps.policies();
    const status = deps.policyStatus();
    const problems: string[] = [];
    const read = (load: (dir: string) => Promise<PolicyFile[]>) =>
      load(deps.policyDir).catch((err: unknown) => {
        problems.push(err instanceof Error ? err.message : String(err));
        return [];
      });
    const [files, testFiles] = [await read(loadPolicyDir), await read(loadPolicyTestFiles)];
    const byPath = new Map(files.map((file) => [file.path, file]));
    // The set's SHA-256 names its files; the compile context is fixed for the process.
    const key = `${status.sha256} ${policySetDigest(testFiles)}`;
    if (lastRun?.key !== key) lastRun = { key, run: runPolicyTests(testFiles, set, deps.policyContext) };
    const { run } = lastRun;
    res.set('Cache-Control', 'no-store');
    res.json({
      set: status,
      policies: [...set.byName.values()].map((policy) => {
        const file = byPath.get(policy.file);
        const sourceStatus = file === undefined ? 'unreadable' : sha256(file) === policy.sha256 ? 'loaded' : 'changed';
        return {
          name: policy.name,
          description: policy.description ?? null,
          issuer: policy.issuer,
          effect: policy.effect,
          mode: policy.mode,
          file: path.basename(policy.file),
          sha256: policy.sha256,
          source_status: sourceStatus,
          source: sourceStatus === 'loaded' ? file!.text : null,
        };
      }),
      tests: {
        files: testFiles.map((file) => path.basename(file.path)),
        results: run.results.map((result) => ({
          file: path.basename(result.case.file),
          line: result.case.line ?? null,
          name: result.case.name,
          policy: result.case.policy,
          expect: result.case.expect,
          decision: result.decision.allowed ? 'allow' : 'deny',
          passed: result.passed,
          reason: result.decision.reason,
          message: result.decision.message,
        })),
        problems: [...problems, ...run.issues.map((issue) => formatPolicyIssue({ ...issue, file: path.basename(issue.file) }))],
      },
    });
  });

  router.post('/v1/policies/evaluate', sameOriginForSessions, deps.auditorAuth.middleware, evaluateBody, async (req, res) => {
    const body = readBody(req);
    const set = deps.policies();
    const policy = lookupPolicy(set, body.policy);
    const notes: string[] = [];
    let issuerName: string;
    let claims: Readonly<Record<string, unknown>>;
    let tokenSha256: string | null = null;
    let audiences: readonly string[] | undefined;
    if (body.token !== undefined) {
      const verified = await deps.verifier.verify(body.token).catch((err: unknown) => {
        // A 401 would read as the auditor's own credential failing: the token is the input here.
        if (err instanceof InvalidTokenError) throw new InvalidRequestError(`The token does not verify: ${err.message}`, { reason: 'token_not_verified' });
        throw err;
      });
      ({ issuerName, claims, tokenSha256, audiences } = verified);
    } else {
      issuerName = body.issuer ?? policy.issuer;
      if (!deps.policyContext.issuers.has(issuerName)) {
        throw new InvalidRequestError(`'issuer' must be a configured issuer name (${[...deps.policyContext.issuers.keys()].join(', ')}).`, { reason: 'unknown_issuer' });
      }
      claims = body.claims!;
    }
    const token = offlineToken(deps.policyContext, issuerName, claims, audiences);
    if (token.defaultAudience) notes.push(`No aud claim: evaluated with audience ${token.audiences[0] ?? '(none)'}, the first configured audience of issuer '${issuerName}'.`);
    const output = toExplainOutput(policy.name, evaluateOffline(set, deps.policyContext, policy, token), null, 'owner');
    const { requestId, clientIp } = requestContext(req, res);
    deps.logger.info('policy evaluate', {
      request_id: requestId,
      client_ip: clientIp,
      auditor: res.locals.auditor as string,
      policy: policy.name,
      issuer: issuerName,
      input: body.token === undefined ? 'claims' : 'token',
      token_sha256: tokenSha256,
      decision: output.decision,
    });
    res.set('Cache-Control', 'no-store');
    res.json({ ...output, issuer: issuerName, notes });
  });

  return router;
}

interface EvaluateBody {
  policy: string;
  claims?: Record<string, unknown>;
  token?: string;
  issuer?: string;
}

/** `{"policy", "claims", "issuer"?}` or `{"policy", "token"}`. @throws InvalidRequestError naming the problem */
function readBody(req: Request): EvaluateBody {
  const bad = (message: string, reason = 'malformed_body') => new InvalidRequestError(message, { reason });
  if (!req.is('application/json')) throw bad('Send the request as JSON with "Content-Type: application/json".', 'unsupported_content_type');
  const body: unknown = req.body;
  if (!isPlainObject(body)) throw bad('The request body must be a JSON object.');
  const unknown = Object.keys(body).find((key) => !FIELDS.has(key));
  if (unknown !== undefined) throw bad(`Unknown field ${JSON.stringify(unknown.slice(0, 64))} in the request body; expected policy, claims or token, issuer.`, 'unknown_field');
  if (typeof body.policy !== 'string' || body.policy === '') throw bad('The "policy" field must name a policy.');
  if ((body.claims === undefined) === (body.token === undefined)) throw bad('Give either "claims" (a JSON object) or "token" (a compact JWT), not both.');
  if (body.claims !== undefined && !isPlainObject(body.claims)) throw bad('The "claims" field must be a JSON object of claims.');
  if (body.token !== undefined && (typeof body.token !== 'string' || body.token === '')) throw bad('The "token" field must be a compact JWT.');
  if (body.issuer !== undefined && (typeof body.issuer !== 'string' || body.token !== undefined)) {
    throw bad(typeof body.issuer !== 'string' ? 'The "issuer" field must be a configured issuer name.' : 'A token names its own issuer: give "issuer" only with "claims".');
  }
  return body as unknown as EvaluateBody;
}

/** A file's SHA-256 as the compiler takes it (its bytes, else its UTF-8 text). */
function sha256(file: PolicyFile): string {
  return createHash('sha256')
    .update(file.bytes ?? file.text)
    .digest('hex');
}
