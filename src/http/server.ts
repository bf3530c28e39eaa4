import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { InvalidRequestError, RequestTooLargeError } from '../errors.js';
import { newUlid } from '../ids.js';
import type { Logger } from '../logger.js';
import type { ExchangeDeps } from '../pipeline/types.js';
import { HTTP_STATUS, retryAfterSeconds } from './errors.js';
import { refuseUnparsed } from './request.js';

/** Request headers beyond this are refused before any route runs (Node's own parser limit). */
const MAX_HEADER_BYTES = 16 * 1024;

/** What `listen` serves and shuts down (main.ts's `Broker` is one). */
export interface ServedBroker {
  app: http.RequestListener;
  /** Served on `adminPort` when one is given (docs/configuration.md#server). */
  adminApp: http.RequestListener;
  /** What records the requests Node refuses before any route runs. */
  deps: ExchangeDeps;
  /**
   * How long shutdown waits, in all, for the requests and decisions in flight: the exchange deadline plus a
   * margin, so a finishing exchange's answer still reaches its caller. One bound for the whole shutdown, so
   * the supervisor's grace period can cover it (docs/architecture.md, "Shutdown").
   */
  graceMs: number;
  /** Stops taking requests (readyz 503) before the server closes. */
  stopAccepting(): void;
  /**
   * Waits up to `waitMs` (what is left of shutdown's one deadline; `graceMs` when not given) for the decisions in
   * flight to be recorded, abandons and records the rest, stops watching the policy directory, flushes and closes the stores.
   */
  close(waitMs?: number): Promise<void>;
}

export interface RunningServer {
  url: string;
  server: http.Server;
  /** The admin listener's URL, when `adminPort` was given. */
  adminUrl: string | undefined;
  /** Mark not ready, stop accepting, finish in-flight requests (bounded), close the stores. Idempotent. */
  shutdown(): Promise<void>;
}

/**
 * Listens and logs the `"msg":"listening"` line operators and tests wait for
 * (README.md#quick-start); with `adminPort`, a second listener on the same host
 * serves the admin app, and the line holds its URL too.
 */
export async function listen(
  broker: ServedBroker,
  options: {
    host: string;
    port: number;
    adminPort?: number | undefined;
    logger: Logger;
    /** The whole shutdown's bound, when not the broker's `graceMs`. */
    graceMs?: number;
  },
): Promise<RunningServer> {
  const server = await listenOn(broker.app, options.host, options.port, broker.deps);
  let admin: http.Server | undefined;
  try {
    admin = options.adminPort === undefined ? undefined : await listenOn(broker.adminApp, options.host, options.adminPort, broker.deps);
  } catch (err) {
    await new Promise((resolve) => server.close(resolve));
    throw err;
  }
  const url = urlOf(server);
  const adminUrl = admin === undefined ? undefined : urlOf(admin);
  options.logger.info('listening', { url, ...(adminUrl === undefined ? {} : { admin_url: adminUrl }) });
  const servers = admin === undefined ? [server] : [server, admin];
  const closeWhenAnswered = closeConnectionsWhenAnswered(servers);

  let shuttingDown: Promise<void> | undefined;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      const graceMs = options.graceMs ?? broker.graceMs;
      // One deadline, set now, for the HTTP wait and the decisions' drain together: each getting the whole bound
      // would double it, past the supervisor's grace period, and its SIGKILL would lose the records shutdown waits for.
      const deadline = performance.now() + graceMs;
      options.logger.info('shutting down', { in_flight_decisions: broker.deps.decisions.count(), grace_ms: graceMs });
      broker.stopAccepting();
      closeWhenAnswered();
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      for (const s of servers) s.closeIdleConnections();
      const grace = new Promise<'timeout'>((resolve) => setTimeout(resolve, graceMs, 'timeout').unref());
      if ((await Promise.race([closed, grace])) === 'timeout') {
        options.logger.warn('in-flight requests did not finish in time; closing connections');
        for (const s of servers) s.closeAllConnections();
        await closed;
      }
      await broker.close(Math.max(0, deadline - performance.now()));
      options.logger.info('stopped');
    })());
  return { url, server, adminUrl, shutdown };
}

/**
 * Returns what makes every answer not yet begun, and every later one, end its
 * connection (`Connection: close`): an answer written during shutdown must not
 * invite its keep-alive client to stay, or the exit waits for keepAliveTimeout.
 * Requests already in flight are marked too: their headers are written later.
 * (Express swaps each response's prototype for its own, so a ServerResponse
 * subclass would not see the headers being written.)
 */
function closeConnectionsWhenAnswered(servers: http.Server[]): () => void {
  let closing = false;
  const unanswered = new Set<http.ServerResponse>();
  const markClosing = (res: http.ServerResponse) => {
    if (!res.headersSent) res.setHeader('Connection', 'close');
  };
  for (const server of servers) {
    server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      if (closing) return markClosing(res);
      unanswered.add(res);
      res.once('close', () => unanswered.delete(res));
    });
  }
  return () => {
    closing = true;
    for (const res of unanswered) markClosing(res);
  };
}

async function listenOn(app: http.RequestListener, host: string, port: number, deps: ExchangeDeps): Promise<http.Server> {
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 60_000, headersTimeout: 20_000 }, app);
  server.keepAliveTimeout = 5_000;
  // Node reports the parse error again for each later chunk the client sends while the answer is being recorded:
  // one request, one answer, one record.
  const answered = new WeakSet<Socket>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (answered.has(socket)) return;
    if (!socket.writable) return socket.destroy();
    answered.add(socket);
    void answerUnparsed(deps, err, socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/**
 * Node's parser refused the request before express saw it, so nothing else
 * gives it an id or a record: it gets both here, and the same error body as
 * every other refusal (openapi.yaml).
 */
async function answerUnparsed(deps: ExchangeDeps, err: NodeJS.ErrnoException, socket: Socket): Promise<void> {
  const requestId = newUlid();
  const refusal =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new RequestTooLargeError(`The request headers are larger than ${MAX_HEADER_BYTES / 1024} KiB.`, { reason: 'headers_too_large' })
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new InvalidRequestError('The request did not arrive in time.', { reason: 'request_timeout' })
        : new InvalidRequestError('The request is not valid HTTP.', { reason: 'malformed_http', cause: err });
  const error = await refuseUnparsed(deps, { requestId, clientIp: socket.remoteAddress ?? null, userAgent: null }, refusal);
  if (!socket.writable) return void socket.destroy();
  const status = HTTP_STATUS[error.code];
  const body = JSON.stringify({ error: error.code, error_description: error.message, request_id: requestId });
  const retryAfter = retryAfterSeconds(error, status);
  const headers = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}`,
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    `X-Request-Id: ${requestId}`,
    'Cache-Control: no-store',
    ...(retryAfter === undefined ? [] : [`Retry-After: ${retryAfter}`]),
    'Connection: close',
  ];
  socket.end(`${headers.join('\r\n')}\r\n\r\n${body}`);
}

function urlOf(server: http.Server): string {
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
