/** The HTTP endpoint Prometheus scrapes: GET /metrics, and GET /healthz for liveness checks. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseAddress } from '../units.js';
import { TocfsError } from '../errors.js';
import { logger } from '../log.js';
import { registry } from './metrics.js';

export interface MetricsServer {
  /** The port listened on (the one chosen by the system when the address said port 0). */
  port: number;
  host: string;
  close(): Promise<void>;
}

/** Serves metrics at `HOST:PORT` (`[::1]:9464`; port 0 picks a free one); resolves once listening. */
export async function startMetricsServer(address: string): Promise<MetricsServer> {
  const where = parseAddress(address);
  if (!where) throw new TocfsError(`invalid metrics address ${JSON.stringify(address)}: expected HOST:PORT, e.g. 127.0.0.1:9464`, 'ECONFIG');
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : body),
        (err: Error) => {
          logger().error({ err }, 'collecting metrics failed');
          res.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
        },
      );
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new TocfsError(`cannot serve metrics on ${address}: ${e.message}`, 'ECONFIG', { cause: e })));
    server.listen(where.port, where.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = where.host.includes(':') ? `[${where.host}]` : where.host;
  logger().info({ address: `${host}:${port}` }, 'serving metrics at /metrics');
  return {
    port,
    host: where.host,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      }),
  };
}
