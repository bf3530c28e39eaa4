// A loopback stand-in for the parts of GitHub's REST API that a GitHub App
// token's life touches: with `app`, the installation lookup and token creation
// the broker's github provider calls (the App JWT checked against the App's
// public key); always, `DELETE /installation/token`, the Action's post step.
// It records every request and keeps the set of live tokens: a revoked or
// unknown token gets 401, as GitHub answers.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { importSPKI, jwtVerify } from 'jose';

export interface RecordedRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

export interface GitHubApi {
  url: string;
  requests: RecordedRequest[];
  liveTokens: Set<string>;
  /** Bodies of token creations (`POST /app/installations/{id}/access_tokens`). */
  tokenRequests: unknown[];
  /** When set, every request gets this answer instead (status, and headers such as `location`). */
  override: { status: number; headers?: Record<string, string> } | undefined;
  close(): Promise<void>;
}

export interface GitHubAppOptions {
  /** The App id the App JWT's `iss` must carry. */
  id: string;
  /** The App's public key (SPKI PEM), to verify its JWTs. */
  publicKeyPem: string;
  /** The one installation: its owner and repository names. */
  owner: string;
  repositories: string[];
}

const INSTALLATION_ID = 4242;

export async function startGitHubApi(app?: GitHubAppOptions): Promise<GitHubApi> {
  const publicKey = app ? await importSPKI(app.publicKeyPem, 'RS256') : undefined;
  const state: GitHubApi = {
    url: '',
    requests: [],
    liveTokens: new Set(),
    tokenRequests: [],
    override: undefined,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };

  function json(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
  }

  async function isAppJwt(authorization: string | undefined): Promise<boolean> {
    const jwt = /^Bearer (.+)$/.exec(authorization ?? '')?.[1];
    if (!jwt || !publicKey || !app) return false;
    try {
      const { payload } = await jwtVerify(jwt, publicKey, { algorithms: ['RS256'] });
      return String(payload.iss) === app.id;
    } catch {
      return false;
    }
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method === 'DELETE' && path === '/installation/token') {
      const token = /^(?:Bearer|token) (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token === undefined || !state.liveTokens.delete(token)) return json(res, 401, { message: 'Bad credentials' });
      res.writeHead(204).end();
      return;
    }
    if (app) {
      const lookup = /^\/(?:repos\/([^/]+)\/([^/]+)|orgs\/([^/]+)|users\/([^/]+))\/installation$/.exec(path);
      if (req.method === 'GET' && lookup) {
        if (!(await isAppJwt(req.headers.authorization))) return json(res, 401, { message: 'A JSON web token could not be decoded' });
        const owner = lookup[1] ?? lookup[3] ?? lookup[4];
        if (owner !== app.owner || (lookup[2] !== undefined && !app.repositories.includes(lookup[2]))) return json(res, 404, { message: 'Not Found' });
        return json(res, 200, { id: INSTALLATION_ID, account: { login: app.owner, type: 'Organization' }, app_id: Number(app.id), repository_selection: 'selected', permissions: { contents: 'write', pull_requests: 'write', metadata: 'read' } });
      }
      if (req.method === 'POST' && path === `/app/installations/${INSTALLATION_ID}/access_tokens`) {
        if (!(await isAppJwt(req.headers.authorization))) return json(res, 401, { message: 'A JSON web token could not be decoded' });
        const asked = JSON.parse(body || '{}') as { repositories?: string[]; permissions?: Record<string, string> };
        state.tokenRequests.push(asked);
        const names = asked.repositories ?? app.repositories;
        if (!names.every((name) => app.repositories.includes(name))) return json(res, 422, { message: 'There is at least one repository that does not exist or is not accessible to the parent installation.' });
        const token = `ghs_${randomBytes(18).toString('hex')}`;
        state.liveTokens.add(token);
        return json(res, 201, {
          token,
          expires_at: new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
          permissions: { metadata: 'read', ...asked.permissions },
          repository_selection: 'selected',
          repositories: names.map((name, i) => ({ id: 1000 + i, name, full_name: `${app.owner}/${name}` })),
        });
      }
    }
    json(res, 404, { message: 'Not Found' });
  }

  const server = http.createServer((req, res) => {
    state.requests.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization });
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (state.override) {
        res.writeHead(state.override.status, state.override.headers ?? {}).end();
        return;
      }
      handle(req, res, Buffer.concat(chunks).toString('utf8')).catch(() => json(res, 500, { message: 'stand-in failed' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
