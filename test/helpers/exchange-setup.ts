// A real broker (jwt and aws grants, the aws ones against the loopback STS
// emulator) behind a loopback proxy the test steers, and a stand-in for GitHub
// Actions' ID-token service: what the runner clients (oidc-broker exchange, its
// bundle, the CI recipes in ci/) are tested against.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AUDIENCE, createCapturingLogger } from './broker-fixture.js';
import { startAwsBroker, type AwsBroker } from './aws-broker.js';
import { listen, type RunningServer } from '../../src/http/server.js';

export const REQUEST_TOKEN = 'runner-request-token-for-tests';
export const GOOD_CLAIMS = { sub: 'repo:acme/api:ref:refs/heads/main', repository: 'acme/api', ref: 'refs/heads/main', event_name: 'push' };

export const POLICIES = {
  'deploy.yaml': `
name: deploy
issuer: local
claims:
  repository: acme/api
  ref: refs/heads/main
grant:
  provider: jwt
  audience: https://deploy.example.com
  max_duration_seconds: 600
  claims:
    repo: \${repository}
`,
  'aws-deploy.yaml': `
name: aws-deploy
issuer: local
claims:
  repository: acme/api
  ref: refs/heads/main
grant:
  provider: aws
  role_arn: arn:aws:iam::123456789012:role/deploy-api
  max_duration_seconds: 1800
`,
};

export interface ExchangeSetup {
  aws: AwsBroker;
  broker: RunningServer;
  /** The proxy in front of the broker: what clients are pointed at; also an accepted audience. */
  proxyUrl: string;
  /** `ACTIONS_ID_TOKEN_REQUEST_URL` of the ID-token service. */
  idTokenRequestUrl: string;
  /** What happened since the last `reset()`. */
  seen: { exchanges: string[]; idAudiences: string[]; idTokens: string[] };
  /** What the proxy and the ID-token service do next. */
  steer: { failFirst: number; retryAfter: string | undefined; claims: Record<string, unknown> };
  /** A token for `aud` (default: the broker's accepted audience) with `steer.claims`. */
  mint(aud?: string): Promise<string>;
  reset(): void;
  close(): Promise<void>;
}

async function listenOn(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function startExchangeSetup(): Promise<ExchangeSetup> {
  const seen: ExchangeSetup['seen'] = { exchanges: [], idAudiences: [], idTokens: [] };
  const steer: ExchangeSetup['steer'] = { failFirst: 0, retryAfter: undefined, claims: GOOD_CLAIMS };
  let brokerUrl = '';

  // In front of the broker: records each request's path and answers 503 (with Retry-After if steered) to the first ones.
  const proxy = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      void (async () => {
        seen.exchanges.push(`${req.method} ${req.url}`);
        if (seen.exchanges.length <= steer.failFirst) {
          const headers = { 'content-type': 'application/json', ...(steer.retryAfter === undefined ? {} : { 'retry-after': steer.retryAfter }) };
          res.writeHead(503, headers).end(JSON.stringify({ error: 'not_ready', error_description: 'Try again.', request_id: 'r-503' }));
          return;
        }
        const headers: Record<string, string> = {};
        for (const name of ['authorization', 'content-type', 'accept']) if (typeof req.headers[name] === 'string') headers[name] = req.headers[name];
        const upstream = await fetch(`${brokerUrl}${req.url}`, { method: req.method, headers, body: Buffer.concat(chunks) });
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json' }).end(Buffer.from(await upstream.arrayBuffer()));
      })();
    });
  });
  const proxyUrl = await listenOn(proxy);

  // The broker's public URL is the proxy's, as behind a load balancer: clients may use it as the audience.
  const aws = await startAwsBroker({
    policies: POLICIES,
    brokerKey: { accessKeyId: 'AKIAOIDCBROKERTEST01', secretAccessKey: 'broker/secret/key/for/tests/only/000000000' },
    audiences: [AUDIENCE, proxyUrl],
  });
  const broker = await listen(aws.fx.broker, { host: '127.0.0.1', port: 0, logger: createCapturingLogger().logger });
  brokerUrl = broker.url;
  const mint = async (aud: string = AUDIENCE) => {
    const token = await aws.fx.issuer.mint({ ...steer.claims, aud });
    seen.idTokens.push(token);
    return token;
  };

  // GitHub's ID-token service, as the runner offers it: checks the request token, mints for the requested audience.
  const idService = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (req.headers.authorization !== `Bearer ${REQUEST_TOKEN}` || url.searchParams.get('api-version') !== '2.0') return res.writeHead(401).end();
      const aud = url.searchParams.get('audience');
      if (!aud) return res.writeHead(400).end();
      seen.idAudiences.push(aud);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1, value: await mint(aud) }));
    })();
  });
  const idServiceUrl = await listenOn(idService);

  return {
    aws,
    broker,
    proxyUrl,
    idTokenRequestUrl: `${idServiceUrl}/token?api-version=2.0`,
    seen,
    steer,
    mint,
    reset() {
      seen.exchanges.length = 0;
      seen.idAudiences.length = 0;
      seen.idTokens.length = 0;
      Object.assign(steer, { failFirst: 0, retryAfter: undefined, claims: GOOD_CLAIMS });
    },
    async close() {
      await new Promise((resolve) => idService.close(resolve));
      await new Promise((resolve) => proxy.close(resolve));
      await broker.shutdown();
      await aws.close();
    },
  };
}
