// A loopback stand-in for the part of GitHub's REST API the Action's post step
// calls: `DELETE /installation/token` with the token as bearer. It records
// every request, keeps a set of live tokens (a revoked or unknown token gets
// 401, as GitHub answers), and can be told to answer otherwise.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

export interface GitHubRevocationServer {
  url: string;
  requests: RecordedRequest[];
  liveTokens: Set<string>;
  /** When set, every request gets this answer instead (status, and headers such as `location`). */
  override: { status: number; headers?: Record<string, string> } | undefined;
  close(): Promise<void>;
}

export async function startGitHubRevocationServer(): Promise<GitHubRevocationServer> {
  const state: GitHubRevocationServer = {
    url: '',
    requests: [],
    liveTokens: new Set(),
    override: undefined,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    state.requests.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization });
    req.resume();
    if (state.override) {
      res.writeHead(state.override.status, state.override.headers ?? {}).end();
      return;
    }
    if (req.method !== 'DELETE' || req.url !== '/installation/token') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'Not Found' }));
      return;
    }
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token === undefined || !state.liveTokens.delete(token)) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'Bad credentials' }));
      return;
    }
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
