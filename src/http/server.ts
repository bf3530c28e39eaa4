import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.js';
import { HTTP_STATUS } from './errors.js';

/** Request headers beyond this are refused before any route runs (Node's own parser limit). */
const MAX_HEADER_BYTES = 16 * 1024;
/** How long shutdown waits for in-flight requests before cutting connections. */
const SHUTDOWN_GRACE_MS = 10_000;

/** What `listen` serves and shuts down (main.ts's `Broker` is one). */
export interface ServedBroker {
  app: http.RequestListener;
  /** Served on `adminPort` when one is given (docs/configuration.md#server). */
  adminApp: http.RequestListener;
  /** Stops taking requests (readyz 503) before the server closes. */
  stopAccepting(): void;
  /** Stops watching the policy directory, flushes and closes the stores. */
  close(): Promise<void>;
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
export async function listen(broker: ServedBroker, options: { host: string; port: number; adminPort?: number | undefined; logger: Logger; graceMs?: number }): Promise<RunningServer> {
  const server = await listenOn(broker.app, options.host, options.port);
  let admin: http.Server | undefined;
  try {
    admin = options.adminPort === undefined ? undefined : await listenOn(broker.adminApp, options.host, options.adminPort);
  } catch (err) {
    await new Promise((resolve) => server.close(resolve));
    throw err;
  }
  const url = urlOf(server);
  const adminUrl = admin === undefined ? undefined : urlOf(admin);
  options.logger.info('listening', { url, ...(adminUrl === undefined ? {} : { admin_url: adminUrl }) });
  const servers = admin === undefined ? [server] : [server, admin];

  let shuttingDown: Promise<void> | undefined;
  const shutdown = () =>
    (shuttingDown ??= (async () => {
      options.logger.info('shutting down');
      broker.stopAccepting();
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      for (const s of servers) s.closeIdleConnections();
      const grace = new Promise<'timeout'>((resolve) => setTimeout(resolve, options.graceMs ?? SHUTDOWN_GRACE_MS, 'timeout').unref());
      if ((await Promise.race([closed, grace])) === 'timeout') {
        options.logger.warn('in-flight requests did not finish in time; closing connections');
        for (const s of servers) s.closeAllConnections();
        await closed;
      }
      await broker.close();
      options.logger.info('stopped');
    })());
  return { url, server, adminUrl, shutdown };
}

async function listenOn(app: http.RequestListener, host: string, port: number): Promise<http.Server> {
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 60_000, headersTimeout: 20_000 }, app);
  server.keepAliveTimeout = 5_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const status = tooLarge ? HTTP_STATUS.request_too_large : HTTP_STATUS.invalid_request;
    const body = JSON.stringify({
      error: tooLarge ? 'request_too_large' : 'invalid_request',
      error_description: tooLarge ? 'The request headers are too large.' : 'The request is not valid HTTP.',
    });
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
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

function urlOf(server: http.Server): string {
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
