/**
 * A loopback GitHub REST API emulator for GitHub App installation tokens, as
 * `@octokit/auth-app` and `@octokit/core` speak to api.github.com: it verifies
 * the App JWT (RS256 with the App's public key, `iss`, `iat`, `exp`), answers
 * the installation lookups, creates installation tokens checked against the
 * installation's repositories and permissions (422 as GitHub answers), serves
 * `GET /repos/{owner}/{repo}` to installation tokens, revokes them
 * (`DELETE /installation/token`) and injects GitHub's failure modes on demand.
 * `addToken` puts in a token as if GitHub had issued it, for a client that
 * only uses or revokes one.
 *
 * @example
 * ```ts
 * const gh = await startGithubEmulator({ appId: '4242', publicKey, installations: [{ id: 7, account: 'acme', repositories: ['app'], permissions: { contents: 'write', metadata: 'read' } }] });
 * const octokit = new Octokit({ baseUrl: gh.url, authStrategy: createAppAuth, auth: { appId: '4242', privateKey } });
 * const { data } = await octokit.request('GET /repos/{owner}/{repo}/installation', { owner: 'acme', repo: 'app' });
 * await gh.close();
 * ```
 */
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { compactVerify } from 'jose';
import { closeEmulatorServer, createEmulatorServer, listenOnLoopback, readBody } from '../loopback.js';

export type PermissionLevel = 'read' | 'write' | 'admin';

export interface GithubInstallation {
  id: number;
  /** The organisation or user the App is installed on. */
  account: string;
  accountType?: 'Organization' | 'User';
  /** Repository names (without owner) the installation covers. */
  repositories: string[];
  /** `selected` (default) or `all`; the emulator only knows the listed repositories either way. */
  repositorySelection?: 'all' | 'selected';
  /** What the installation was granted, e.g. `{ contents: 'write', metadata: 'read' }`. */
  permissions: Record<string, PermissionLevel>;
}

export interface GithubEmulatorOptions {
  /** The App's id: the JWT's `iss` must be it (GitHub accepts it as a string or an integer). */
  appId: string | number;
  /** The App's public key (PEM or KeyObject): every App JWT must verify with it. */
  publicKey: string | KeyObject;
  installations: GithubInstallation[];
  /** How far in the future an `iat` may be (clock drift), in seconds. Default 60. */
  maxDriftSeconds?: number;
  now?: () => Date;
}

/** One request, after routing; `auth` says what authenticated it. */
export interface ReceivedGithubRequest {
  method: string;
  path: string;
  /** `app` (a verified App JWT), `installation` (a live installation token), `none`, or `invalid`. */
  auth: 'app' | 'installation' | 'none' | 'invalid';
  /** The App JWT's claims when `auth` is `app`. */
  jwtClaims?: { iss: unknown; iat: number; exp: number };
  /** The parsed JSON body of a POST. */
  body?: unknown;
  /** HTTP status answered; undefined for a `hang` fault. */
  status: number | undefined;
  /** The fault injected into this request, if any. */
  fault?: GithubFault['kind'];
  /** True once the client closed the connection before the answer (it gave up). */
  abandoned: boolean;
}

export interface IssuedGithubToken {
  token: string;
  installationId: number;
  /** Owner-qualified names the token covers. */
  repositories: string[];
  permissions: Record<string, PermissionLevel>;
  expiresAt: Date;
  revoked: boolean;
}

/**
 * Which endpoint a fault hits: the installation lookup, the token creation,
 * both of those App-authenticated calls (`any`, the default), or the
 * revocation (`DELETE /installation/token`), which only `revoke` names, so a
 * fault meant for the App calls never swallows a test's revocation.
 */
export type FaultTarget = 'lookup' | 'access_tokens' | 'any' | 'revoke';

export type GithubFault =
  | { kind: 'none' }
  /** Primary rate limit: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` this many seconds ahead (default 60). */
  | { kind: 'primary_rate_limit'; resetInSeconds?: number; times?: number; on?: FaultTarget }
  /** Secondary rate limit: 403 or 429 with `retry-after`. */
  | { kind: 'secondary_rate_limit'; status: 403 | 429; retryAfterSeconds: number; times?: number; on?: FaultTarget }
  | { kind: 'server_error'; status?: 500 | 502 | 503; times?: number; on?: FaultTarget }
  /** Never answers; close() ends the connection. */
  | { kind: 'hang'; times?: number; on?: FaultTarget }
  /** Any other answer GitHub, or a proxy before it, may give (a 307 with `location`): this status, GitHub's error body and these headers. */
  | { kind: 'answer'; status: number; headers?: Record<string, string>; times?: number; on?: FaultTarget };

/** A token as if GitHub had issued it to the installation `installationId`. */
export type GithubTokenGrant = Omit<IssuedGithubToken, 'token' | 'revoked'>;

export interface GithubEmulator {
  /** `http://127.0.0.1:<port>`: the `baseUrl` (GitHub Enterprise Server's `/api/v3` is not needed). */
  url: string;
  /** Every request, in arrival order. */
  requests: ReceivedGithubRequest[];
  /** Every installation token handed out, in order. */
  tokens: IssuedGithubToken[];
  /**
   * Makes the next `times` calls (default: all) on `on` fail; a fault applies
   * only after the caller authenticated (the App JWT verified; for `revoke`, a
   * live installation token), so it never hides a credential bug.
   *
   * @throws TypeError for an `answer` status outside 200 to 599.
   */
  setFault(fault: GithubFault): void;
  /**
   * Adds a live installation token without a token creation, for clients that
   * only use or revoke one; it appears in `tokens`.
   *
   * @throws TypeError if the token is already known or the installation is not one of the options'.
   */
  addToken(token: string, grant: GithubTokenGrant): IssuedGithubToken;
  close(): Promise<void>;
}

const DOCS = 'https://docs.github.com/rest';
const LEVEL_RANK: Readonly<Record<PermissionLevel, number>> = { read: 1, write: 2, admin: 3 };
const MAX_BODY_BYTES = 64 * 1024;
/** GitHub refuses App JWTs that live longer than ten minutes. */
const MAX_JWT_LIFETIME_SECONDS = 600;
const TOKEN_LIFETIME_SECONDS = 3600;

/** GitHub's timestamps: second precision, `Z`. */
function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}


type JwtVerdict = { ok: true; claims: { iss: unknown; iat: number; exp: number } } | { ok: false; message: string };

/**
 * Starts the emulator on 127.0.0.1 and an ephemeral port.
 *
 * @throws if the server cannot listen.
 */
export async function startGithubEmulator(options: GithubEmulatorOptions): Promise<GithubEmulator> {
  const publicKey = typeof options.publicKey === 'string' ? createPublicKey(options.publicKey) : options.publicKey;
  const now = options.now ?? (() => new Date());
  const maxDriftSeconds = options.maxDriftSeconds ?? 60;
  const requests: ReceivedGithubRequest[] = [];
  const tokens: IssuedGithubToken[] = [];
  const repositoryIds = new Map<string, number>();
  let fault: { fault: Exclude<GithubFault, { kind: 'none' }>; remaining: number } | undefined;

  const repositoryId = (fullName: string): number => {
    let id = repositoryIds.get(fullName.toLowerCase());
    if (id === undefined) {
      id = 100_000 + repositoryIds.size;
      repositoryIds.set(fullName.toLowerCase(), id);
    }
    return id;
  };
  const findInstallation = (owner: string): GithubInstallation | undefined => options.installations.find((i) => i.account.toLowerCase() === owner.toLowerCase());

  const send = (res: ServerResponse, record: ReceivedGithubRequest, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    record.status = status;
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {
      ...(text ? { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(text)) } : {}),
      date: now().toUTCString(),
      'x-github-media-type': 'github.v3; format=json',
      'x-github-request-id': randomBytes(8).toString('hex').toUpperCase(),
      ...headers,
    });
    res.end(text);
  };
  const sendError = (res: ServerResponse, record: ReceivedGithubRequest, status: number, message: string, headers: Record<string, string> = {}): void =>
    send(res, record, status, { message, documentation_url: DOCS, status: String(status) }, headers);

  /** GitHub's App JWT rules, with its own messages (octokit's auth-app recognises the clock-skew ones). */
  const verifyAppJwt = async (jwt: string): Promise<JwtVerdict> => {
    let payloadBytes: Uint8Array;
    try {
      const verified = await compactVerify(jwt, publicKey, { algorithms: ['RS256'] });
      payloadBytes = verified.payload;
    } catch {
      return { ok: false, message: 'A JSON web token could not be decoded' };
    }
    let claims: Record<string, unknown>;
    try {
      claims = JSON.parse(Buffer.from(payloadBytes).toString('utf8')) as Record<string, unknown>;
    } catch {
      return { ok: false, message: 'A JSON web token could not be decoded' };
    }
    const { iss, iat, exp } = claims;
    const nowSeconds = Math.floor(now().getTime() / 1000);
    if (typeof iat !== 'number' || !Number.isInteger(iat) || iat > nowSeconds + maxDriftSeconds) {
      return { ok: false, message: "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued." };
    }
    if (typeof exp !== 'number' || exp <= nowSeconds) {
      return { ok: false, message: "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires." };
    }
    if (exp - iat > MAX_JWT_LIFETIME_SECONDS || exp > nowSeconds + MAX_JWT_LIFETIME_SECONDS + maxDriftSeconds) {
      return { ok: false, message: "'Expiration time' claim ('exp') is too far in the future." };
    }
    if (String(iss) !== String(options.appId) || (typeof iss !== 'string' && typeof iss !== 'number')) {
      return { ok: false, message: "'Issuer' claim ('iss') must be an Integer" };
    }
    return { ok: true, claims: { iss, iat, exp } };
  };

  /** A live installation token, or undefined (unknown, revoked, expired). */
  const liveToken = (value: string): IssuedGithubToken | undefined => {
    const found = tokens.find((t) => t.token === value);
    return found && !found.revoked && found.expiresAt > now() ? found : undefined;
  };

  /** Consumes and returns the fault for an authenticated call on `target`, if one applies. */
  const takeFault = (target: Exclude<FaultTarget, 'any'>): Exclude<GithubFault, { kind: 'none' }> | undefined => {
    if (!fault) return undefined;
    const on = fault.fault.on ?? 'any';
    if (on !== target && !(on === 'any' && target !== 'revoke')) return undefined;
    const taken = fault.fault;
    if (--fault.remaining <= 0) fault = undefined;
    return taken;
  };

  /** Answers an injected fault; true when it did (or hung). */
  const answerFault = (res: ServerResponse, record: ReceivedGithubRequest, target: Exclude<FaultTarget, 'any'>): boolean => {
    const injected = takeFault(target);
    if (!injected) return false;
    record.fault = injected.kind;
    const nowSeconds = Math.floor(now().getTime() / 1000);
    switch (injected.kind) {
      case 'hang':
        return true;
      case 'primary_rate_limit': {
        const reset = nowSeconds + (injected.resetInSeconds ?? 60);
        sendError(res, record, 403, 'API rate limit exceeded for installation.', {
          'x-ratelimit-limit': '5000',
          'x-ratelimit-remaining': '0',
          'x-ratelimit-used': '5000',
          'x-ratelimit-reset': String(reset),
          'x-ratelimit-resource': 'core',
        });
        return true;
      }
      case 'secondary_rate_limit':
        sendError(res, record, injected.status, 'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.', {
          'retry-after': String(injected.retryAfterSeconds),
        });
        return true;
      case 'server_error':
        sendError(res, record, injected.status ?? 502, 'Server Error');
        return true;
      case 'answer':
        sendError(res, record, injected.status, STATUS_CODES[injected.status] ?? 'Unknown', injected.headers);
        return true;
    }
  };

  const installationJson = (installation: GithubInstallation): Record<string, unknown> => ({
    id: installation.id,
    account: { login: installation.account, id: 5000 + installation.id, type: installation.accountType ?? 'Organization' },
    repository_selection: installation.repositorySelection ?? 'selected',
    access_tokens_url: `/app/installations/${installation.id}/access_tokens`,
    repositories_url: '/installation/repositories',
    app_id: Number(options.appId),
    target_id: 5000 + installation.id,
    target_type: installation.accountType ?? 'Organization',
    permissions: installation.permissions,
    events: [],
    created_at: '2024-01-01T00:00:00Z',
    updated_at: '2024-01-01T00:00:00Z',
    single_file_name: null,
  });

  const repositoryJson = (owner: string, name: string): Record<string, unknown> => ({
    id: repositoryId(`${owner}/${name}`),
    name,
    full_name: `${owner}/${name}`,
    private: true,
    owner: { login: owner },
  });

  const createToken = (res: ServerResponse, record: ReceivedGithubRequest, installation: GithubInstallation, body: unknown): void => {
    const request = (body ?? {}) as { repositories?: unknown; permissions?: unknown; repository_ids?: unknown };
    if (typeof request !== 'object' || Array.isArray(request)) return sendError(res, record, 400, 'Problems parsing JSON');
    let names = installation.repositories;
    if (request.repositories !== undefined) {
      if (!Array.isArray(request.repositories) || !request.repositories.every((r): r is string => typeof r === 'string')) {
        return sendError(res, record, 422, 'Invalid request.\n\nFor \'properties/repositories\', the value is not an array of strings.');
      }
      const known = new Set(installation.repositories.map((r) => r.toLowerCase()));
      if (request.repositories.some((r) => !known.has(r.toLowerCase()))) {
        return sendError(res, record, 422, 'There is at least one repository that does not exist or is not accessible to the parent installation.');
      }
      names = request.repositories.map((r) => installation.repositories.find((known) => known.toLowerCase() === r.toLowerCase())!);
    }
    let permissions: Record<string, PermissionLevel> = installation.permissions;
    if (request.permissions !== undefined) {
      if (request.permissions === null || typeof request.permissions !== 'object' || Array.isArray(request.permissions)) {
        return sendError(res, record, 422, 'Invalid request.\n\nFor \'properties/permissions\', the value is not an object.');
      }
      const asked = request.permissions as Record<string, unknown>;
      for (const [name, level] of Object.entries(asked)) {
        const granted = installation.permissions[name];
        if (typeof level !== 'string' || !(level in LEVEL_RANK) || granted === undefined || LEVEL_RANK[level as PermissionLevel] > LEVEL_RANK[granted]) {
          return sendError(res, record, 422, 'The permissions requested are not granted to this installation.');
        }
      }
      permissions = asked as Record<string, PermissionLevel>;
    }
    const issued: IssuedGithubToken = {
      token: `ghs_${randomBytes(27).toString('base64url').replace(/[-_]/g, 'x').slice(0, 36)}`,
      installationId: installation.id,
      repositories: names.map((n) => `${installation.account}/${n}`),
      permissions,
      expiresAt: new Date(Math.floor(now().getTime() / 1000) * 1000 + TOKEN_LIFETIME_SECONDS * 1000),
      revoked: false,
    };
    tokens.push(issued);
    const selected = request.repositories !== undefined || (installation.repositorySelection ?? 'selected') === 'selected';
    send(res, record, 201, {
      token: issued.token,
      expires_at: isoSeconds(issued.expiresAt),
      permissions,
      repository_selection: selected ? 'selected' : 'all',
      ...(selected ? { repositories: names.map((n) => repositoryJson(installation.account, n)) } : {}),
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', 'http://emulator').pathname;
    const record: ReceivedGithubRequest = { method, path, auth: 'none', status: undefined, abandoned: false };
    requests.push(record);
    res.once('close', () => {
      if (!res.writableFinished) record.abandoned = true;
    });
    const raw = await readBody(req, MAX_BODY_BYTES);
    if (raw === undefined) return sendError(res, record, 413, 'Request body too large');
    if (raw.length > 0) {
      try {
        record.body = JSON.parse(raw.toString('utf8'));
      } catch {
        return sendError(res, record, 400, 'Problems parsing JSON');
      }
    }

    const authorization = req.headers.authorization ?? '';
    const credential = /^(?:bearer|token)\s+(\S+)$/i.exec(authorization)?.[1];
    const route = /^\/(?:(repos)\/([^/]+)\/([^/]+)\/installation|(orgs|users)\/([^/]+)\/installation|app\/installations\/(\d+)\/access_tokens)$/.exec(path);

    if (route) {
      // App-authenticated endpoints: a verified App JWT or 401.
      if (credential === undefined) {
        record.auth = 'none';
        return sendError(res, record, 401, 'A JSON web token could not be decoded');
      }
      const verdict = await verifyAppJwt(credential);
      if (!verdict.ok) {
        record.auth = 'invalid';
        return sendError(res, record, 401, verdict.message);
      }
      record.auth = 'app';
      record.jwtClaims = verdict.claims;
      const installationId = route[6];
      if (installationId === undefined) {
        if (method !== 'GET') return sendError(res, record, 404, 'Not Found');
        if (answerFault(res, record, 'lookup')) return;
        const owner = route[2] ?? route[5]!;
        const installation = findInstallation(owner);
        const repo = route[3];
        if (!installation || (repo !== undefined && !installation.repositories.some((r) => r.toLowerCase() === repo.toLowerCase()))) {
          return sendError(res, record, 404, 'Not Found');
        }
        return send(res, record, 200, installationJson(installation));
      }
      if (method !== 'POST') return sendError(res, record, 404, 'Not Found');
      if (answerFault(res, record, 'access_tokens')) return;
      const installation = options.installations.find((i) => i.id === Number(installationId));
      if (!installation) return sendError(res, record, 404, 'Not Found');
      return createToken(res, record, installation, record.body);
    }

    // Installation-token endpoints.
    const token = credential === undefined ? undefined : liveToken(credential);
    record.auth = credential === undefined ? 'none' : token ? 'installation' : 'invalid';
    if (path === '/installation/token' && method === 'DELETE') {
      if (!token) return sendError(res, record, 401, 'Bad credentials');
      if (answerFault(res, record, 'revoke')) return;
      token.revoked = true;
      return send(res, record, 204, undefined);
    }
    const repoRoute = /^\/repos\/([^/]+)\/([^/]+)$/.exec(path);
    if (repoRoute && method === 'GET') {
      if (credential !== undefined && !token) return sendError(res, record, 401, 'Bad credentials');
      const fullName = `${repoRoute[1]}/${repoRoute[2]}`;
      if (!token || !token.repositories.some((r) => r.toLowerCase() === fullName.toLowerCase())) return sendError(res, record, 404, 'Not Found');
      const [owner, name] = token.repositories.find((r) => r.toLowerCase() === fullName.toLowerCase())!.split('/') as [string, string];
      return send(res, record, 200, repositoryJson(owner, name));
    }
    return sendError(res, record, 404, 'Not Found');
  };

  const server = createEmulatorServer(handle, (res, message) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ message }));
  });
  const url = await listenOnLoopback(server);

  return {
    url,
    requests,
    tokens,
    setFault(next: GithubFault): void {
      if (next.kind === 'answer' && !(Number.isInteger(next.status) && next.status >= 200 && next.status <= 599)) {
        throw new TypeError(`an answer fault needs an HTTP status from 200 to 599, not ${next.status}`);
      }
      const times = next.kind === 'none' ? 0 : next.times ?? Number.POSITIVE_INFINITY;
      fault = next.kind === 'none' || times <= 0 ? undefined : { fault: next, remaining: times };
    },
    addToken(token: string, grant: GithubTokenGrant): IssuedGithubToken {
      if (tokens.some((t) => t.token === token)) throw new TypeError('that token is already known');
      if (!options.installations.some((i) => i.id === grant.installationId)) throw new TypeError(`no installation ${grant.installationId}`);
      const added: IssuedGithubToken = { ...grant, token, revoked: false };
      tokens.push(added);
      return added;
    },
    close: () => closeEmulatorServer(server),
  };
}
