import express, { Router, type Request } from 'express';
import { InvalidRequestError, RequestTooLargeError, toBrokerError, type BrokerError } from '../../errors.js';
import { exchange } from '../../pipeline/exchange.js';
import { refuse } from '../../pipeline/record.js';
import type { ExchangeDeps, ExchangeResult } from '../../pipeline/types.js';
import { providerOf, type Grant } from '../../providers/registry.js';
import { TOKEN_TYPE, type TokenExchangeForm } from '../../providers/types.js';
import { isPlainObject } from '../../values.js';
import { fromBodyParserError, OAuthRequestError, sendOAuthError } from '../errors.js';
import { auditBodyRefusals, limitRefusedClients, MAX_BODY_BYTES, requestContext } from '../request.js';

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const SUBJECT_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.jwt, TOKEN_TYPE.idToken]);
const REQUESTED_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt]);
/** RFC 6749 section 3.2: parameters other than these may not repeat; `audience` may (RFC 8693), but we take one. */
const SINGLE_PARAMETERS = ['grant_type', 'subject_token', 'subject_token_type', 'scope', 'requested_token_type', 'actor_token', 'actor_token_type', 'resource'];

// extended: false: plain key=value pairs (repeats become arrays), no nested objects; never inflated.
const formBody = express.urlencoded({ extended: false, limit: MAX_BODY_BYTES, inflate: false, parameterLimit: 100 });

interface TokenRequest {
  subjectToken: string;
  policy: string;
  requestedTokenType: string | undefined;
}

/**
 * POST /oauth2/token (openapi.yaml): RFC 8693 token exchange over the
 * same pipeline as /v1/exchange. The policy is named by `scope` or `audience`;
 * only single-token grants (jwt, gcp) can be answered, so an AWS grant is
 * refused before anything is minted. Every refusal is audited like
 * /v1/exchange's and answered as an RFC 6749 error (see OAUTH_ERROR).
 */
export function oauthTokenRoutes(deps: ExchangeDeps): Router {
  const router = Router();

  router.post('/oauth2/token', limitRefusedClients(deps, 'exchange', { send: sendOAuthError, withToken: false }), formBody, async (req, res) => {
    const context = requestContext(req, res);
    const params: Record<string, unknown> = req.is('application/x-www-form-urlencoded') && isPlainObject(req.body) ? req.body : {};
    const rawToken = typeof params.subject_token === 'string' && params.subject_token !== '' ? params.subject_token : undefined;
    const parsed = parseTokenRequest(req, params);
    try {
      if (parsed instanceof InvalidRequestError) return await refuse(deps, 'exchange', { ...context, token: rawToken }, parsed);
      const result = await exchange(deps, {
        ...context,
        token: parsed.subjectToken,
        policy: parsed.policy,
        durationSeconds: undefined,
        checkGrant: (grant) => checkGrant(grant, parsed.requestedTokenType),
      });
      res.set('Cache-Control', 'no-store');
      res.set('Pragma', 'no-cache');
      res.json(toTokenExchangeResponse(result, tokenExchangeForm(result.grant, parsed.requestedTokenType)));
    } catch (err) {
      sendOAuthError(res, toBrokerError(err));
    }
  });

  // A body the parser refused is a decision too: audit it, answer an OAuth error.
  router.use('/oauth2/token', auditBodyRefusals(deps, 'exchange', { toRefusal: fromFormParserError, send: sendOAuthError, withToken: false }));

  return router;
}

function fromFormParserError(err: unknown): BrokerError | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'parameters.too.many') return new RequestTooLargeError('The request has too many parameters.', { reason: 'too_many_parameters', cause: err });
  if (type === 'entity.parse.failed') return new InvalidRequestError('The request body is not a valid form.', { reason: 'malformed_body', cause: err });
  return fromBodyParserError(err);
}

/** Validates the RFC 8693 request; a refusal is returned (to be audited), never thrown. */
function parseTokenRequest(req: Request, params: Record<string, unknown>): TokenRequest | InvalidRequestError {
  const refuse = (message: string, reason: string, code: 'invalid_request' | 'unsupported_grant_type' | 'invalid_target' = 'invalid_request') => new OAuthRequestError(code, message, reason);
  if (!req.is('application/x-www-form-urlencoded')) {
    return refuse('Send the token request as "Content-Type: application/x-www-form-urlencoded" (RFC 6749 section 4.1.3).', 'unsupported_content_type');
  }
  const repeated = SINGLE_PARAMETERS.find((name) => Array.isArray(params[name]));
  if (repeated) return refuse(`The ${repeated} parameter is sent more than once.`, 'repeated_parameter');
  const audiences = Array.isArray(params.audience) ? params.audience : params.audience === undefined ? [] : [params.audience];
  if (audiences.length > 1) return refuse('Name exactly one policy: more than one audience parameter was sent.', 'multiple_audiences', 'invalid_target');

  const grantType = params.grant_type;
  if (grantType === undefined || grantType === '') return refuse('The grant_type parameter is required.', 'missing_grant_type');
  if (grantType !== TOKEN_EXCHANGE_GRANT) return refuse(`Only grant_type=${TOKEN_EXCHANGE_GRANT} is supported.`, 'unsupported_grant_type', 'unsupported_grant_type');
  if (typeof params.subject_token !== 'string' || params.subject_token === '') return refuse('The subject_token parameter (the CI OIDC token) is required.', 'missing_token');
  if (typeof params.subject_token_type !== 'string' || !SUBJECT_TOKEN_TYPES.has(params.subject_token_type)) {
    return refuse(`subject_token_type must be ${TOKEN_TYPE.jwt} or ${TOKEN_TYPE.idToken}.`, 'bad_subject_token_type');
  }
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) return refuse('Delegation (actor_token) is not supported.', 'actor_token_not_supported');
  if (params.resource !== undefined) return refuse('The resource parameter is not supported: name the policy in scope or audience.', 'resource_not_supported', 'invalid_target');
  const requested = params.requested_token_type;
  if (requested !== undefined && (typeof requested !== 'string' || !REQUESTED_TOKEN_TYPES.has(requested))) {
    return refuse(`requested_token_type must be ${TOKEN_TYPE.accessToken} or ${TOKEN_TYPE.jwt}.`, 'bad_requested_token_type');
  }

  const scope = typeof params.scope === 'string' && params.scope !== '' ? params.scope : undefined;
  const audience = typeof audiences[0] === 'string' && audiences[0] !== '' ? audiences[0] : undefined;
  if (scope !== undefined && scope.split(' ').filter(Boolean).length !== 1) return refuse('scope must name exactly one policy.', 'multiple_scopes', 'invalid_target');
  if (scope !== undefined && audience !== undefined && scope.trim() !== audience) return refuse('scope and audience name different policies; send one.', 'scope_audience_mismatch');
  const policy = scope?.trim() ?? audience;
  if (policy === undefined) return refuse('Name the policy in the scope or audience parameter.', 'missing_policy');
  return { subjectToken: params.subject_token, policy, requestedTokenType: requested };
}

/**
 * What an RFC 8693 answer can carry: one token of the requested type. Returns
 * undefined for a grant that issues one, else the refusal; run by the
 * pipeline before anything is minted.
 */
function checkGrant(grant: Grant, requested: string | undefined): BrokerError | undefined {
  const answer = providerOf(grant).tokenExchange;
  if (answer.kind === 'multi_part') {
    return new OAuthRequestError('invalid_request', `This policy grants ${answer.credential}, which a token exchange response cannot carry; use POST /v1/exchange.`, 'multi_part_credential');
  }
  if (answer.form(grant, requested) === undefined) return new OAuthRequestError('invalid_request', `This policy cannot issue requested_token_type ${requested}.`, 'bad_requested_token_type');
  return undefined;
}

/** The token's form; checkGrant refused, before issuing, every grant that has none. */
function tokenExchangeForm(grant: Grant, requested: string | undefined): TokenExchangeForm {
  const answer = providerOf(grant).tokenExchange;
  const form = answer.kind === 'token' ? answer.form(grant, requested) : undefined;
  if (form === undefined) throw new TypeError(`grant of ${grant.provider} passed checkGrant without a token form`);
  return form;
}

/** RFC 8693 section 2.2.1; `issuance_id` (the audit record's id) is an extension field. */
function toTokenExchangeResponse(result: ExchangeResult, form: TokenExchangeForm): Record<string, unknown> {
  return {
    access_token: result.credentials[form.credential],
    issued_token_type: form.issuedTokenType,
    token_type: form.tokenType,
    expires_in: Math.max(0, Math.round((result.expiresAt.getTime() - Date.now()) / 1000)),
    issuance_id: result.issuanceId,
  };
}
