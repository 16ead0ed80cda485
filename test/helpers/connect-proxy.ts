/**
 * A tiny HTTP CONNECT proxy on 127.0.0.1 for tests. Names in `hosts` are resolved by the
 * proxy alone (so a client that reaches the registry by such a name provably went through
 * it); anything else is refused with 502, so it never connects beyond this machine.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface TestProxy {
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  /** `host:port` of every CONNECT, with the status answered. */
  connects: Array<{ target: string; status: number }>;
  close(): Promise<void>;
}

export interface TestProxyOptions {
  /** name -> loopback address the proxy connects to instead. */
  hosts: Record<string, string>;
  /** Require `Proxy-Authorization: Basic` with these credentials (else 407). */
  auth?: { user: string; password: string };
}

export async function startConnectProxy(opts: TestProxyOptions): Promise<TestProxy> {
  const connects: TestProxy['connects'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => res.writeHead(501).end('only CONNECT\n'));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    const target = req.url ?? '';
    const answer = (status: number, text: string): void => {
      connects.push({ target, status });
      client.end(`HTTP/1.1 ${status} ${text}\r\n${status === 407 ? 'Proxy-Authenticate: Basic realm="test"\r\n' : ''}\r\n`);
    };
    if (opts.auth) {
      const want = 'Basic ' + Buffer.from(`${opts.auth.user}:${opts.auth.password}`).toString('base64');
      if (req.headers['proxy-authorization'] !== want) return answer(407, 'Proxy Authentication Required');
    }
    const m = /^([^:]+):(\d+)$/.exec(target);
    const address = m ? opts.hosts[m[1]!] : undefined;
    if (!m || !address) return answer(502, 'Bad Gateway');
    const upstream = connect(Number(m[2]), address, () => {
      connects.push({ target, status: 200 });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connects,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
