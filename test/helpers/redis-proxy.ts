/**
 * A loopback TCP proxy to the real Redis (127.0.0.1:6379) that a test steers
 * command by command: pass a chunk on, hold it, or drop it (a Redis that hangs
 * after the handshake), and go away and come back on the same port (a Redis
 * restart).
 */
import net from 'node:net';

/** Decides what happens to one chunk a client sent: call `forward()` now, later, or never. */
export type RedisProxyRoute = (chunk: Buffer, forward: () => void, client: net.Socket) => void;

export interface RedisProxy {
  port: number;
  url: string;
  /** Replaces how client chunks are routed; the default passes every chunk on. */
  route(route: RedisProxyRoute): void;
  /** Closes the listener and every connection, keeping the port for `restore()`. */
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export const passEverything: RedisProxyRoute = (_chunk, forward) => forward();

export async function startRedisProxy(): Promise<RedisProxy> {
  const sockets = new Set<net.Socket>();
  let route = passEverything;
  const server = net.createServer((client) => {
    const upstream = net.connect(6379, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.on('data', (chunk: Buffer) => route(chunk, () => upstream.write(chunk), client));
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const cut = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    route: (next) => {
      route = next;
    },
    cut,
    restore: () => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve)),
    close: cut,
  };
}
