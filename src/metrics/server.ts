/** The HTTP endpoint Prometheus scrapes: GET /metrics, and GET /healthz for liveness checks. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LoadedConfig } from '../config/load.js';
import { parseAddress } from '../config/schema.js';
import { TocfsError } from '../errors.js';
import { logger } from '../log.js';
import { registry } from './metrics.js';

/** Where `tocfs store` serves metrics when metrics.address is not set anywhere (issue #8: on for the store, off for mount). */
export const STORE_METRICS_ADDRESS = '127.0.0.1:9464';

/**
 * The address a daemon should serve metrics on, or undefined for none: metrics.address when
 * set by flag, environment or file (an explicit "" turns them off), else on for the store
 * and off for mounts.
 */
export function metricsAddressFor(daemon: 'mount' | 'store', config: Pick<LoadedConfig, 'values' | 'origins'>): string | undefined {
  const address = config.origins['metrics.address'].source === 'default' && daemon === 'store' ? STORE_METRICS_ADDRESS : config.values['metrics.address'];
  return address === '' ? undefined : address;
}

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
