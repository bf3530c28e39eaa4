/**
 * What every emulator's HTTP side shares: a server whose handler's bugs are
 * answered 500 (by the emulator's own error format) instead of hanging the
 * client, listening on 127.0.0.1 and an ephemeral port, and a close that
 * does not wait for hung or kept-alive connections.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request's body, or undefined when it is over `maxBytes` (read to its end all the same, so the answer reaches the client). */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > maxBytes ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A server running `handle`; a rejection is answered by `answerBug` with its message, unless an answer has started. */
export function createEmulatorServer(
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  answerBug: (res: ServerResponse, message: string) => void,
): Server {
  return createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent && !res.destroyed) answerBug(res, `emulator bug: ${err instanceof Error ? err.message : String(err)}`);
    });
  });
}

/** Listens on 127.0.0.1 and an ephemeral port; resolves with `http://127.0.0.1:<port>`. */
export function listenOnLoopback(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    });
  });
}

/** Closes `server`, ending its connections: hung requests and kept-alive sockets would hold `close()` open forever. */
export function closeEmulatorServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}
