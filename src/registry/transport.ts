/**
 * HTTP for the registry client: one keep-alive undici Pool per origin (bounded connections,
 * no pipelining), or a ProxyAgent tunnelling to it where HTTP(S)_PROXY / NO_PROXY say so
 * (proxy.ts), TLS settings per registry from certs.d, and network errors turned into
 * messages that say what to do.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Pool, ProxyAgent, type Dispatcher } from 'undici';
import { isIP } from 'node:net';
import { SourceError } from '../errors.js';
import { formatDuration } from '../units.js';
import { metrics } from '../metrics/index.js';
import type { Timeouts } from './options.js';
import { proxyFor, proxyLabel } from './proxy.js';
import { TransientError } from './retry.js';
import { loadTlsSettings, type TlsSettings } from './tls.js';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Dispatcher.ResponseData['body'];
  url: URL;
}

export interface HttpRequest {
  method?: 'GET' | 'POST' | 'HEAD' | 'PUT';
  headers?: Record<string, string>;
  body?: string | Buffer;
  signal?: AbortSignal;
  /** Skip certificate verification (insecure registry / --tls-verify=false). */
  insecure?: boolean;
  /** The registry name whose certs.d directory applies (defaults to the URL's host). */
  certsName?: string;
  /**
   * A health check: sent on a connection of its own (never queued behind stalled requests),
   * and its failure is neither counted nor described.
   */
  probe?: boolean;
}

const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_UNTRUSTED',
]);
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

/** The first `code` along an error's cause chain. */
export function errorCode(e: unknown): string | undefined {
  for (let x = e as { code?: unknown; cause?: unknown } | undefined, depth = 0; x && depth < 5; x = x.cause as typeof x, depth++) {
    if (typeof x.code === 'string') return x.code;
  }
  return undefined;
}

/** The root cause's message; for OpenSSL errors just the reason ("wrong version number"). */
function innermostMessage(e: unknown): string {
  let x = e as { message?: string; reason?: unknown; cause?: unknown };
  while (x.cause && typeof x.cause === 'object') x = x.cause as typeof x;
  if (typeof x.reason === 'string' && x.reason) return x.reason;
  return (x.message ?? String(e)).trim();
}

export class Transports {
  private readonly pools = new Map<string, Promise<Dispatcher>>();

  constructor(
    /** `env`: where HTTP(S)_PROXY and NO_PROXY are read (default: process.env). */
    private readonly opts: { certsDir: string; connections: number; timeouts: Timeouts; env?: NodeJS.ProcessEnv },
  ) {}

  private pool(url: URL, insecure: boolean, certsName: string, proxy: URL | undefined, probe: boolean): Promise<Dispatcher> {
    const key = `${url.origin}|${insecure}|${certsName}|${proxy?.href ?? ''}|${probe}`;
    let p = this.pools.get(key);
    if (!p) {
      p = (async () => {
        const tls: TlsSettings | undefined = url.protocol === 'https:' ? await loadTlsSettings(this.opts.certsDir, certsName) : undefined;
        const connect = {
          timeout: this.opts.timeouts.connectMs,
          rejectUnauthorized: !insecure,
          ...(tls?.ca ? { ca: tls.ca } : {}),
          ...(tls?.cert ? { cert: tls.cert, key: tls.key } : {}),
        };
        // undici's headers timeout runs from when the request is on a connection (not while it
        // waits for one) and its body timeout between two parts of a body: both are stalls.
        const stall = this.opts.timeouts.stallMs;
        const common = { connections: probe ? 1 : this.opts.connections, pipelining: 1, headersTimeout: stall, bodyTimeout: stall };
        if (!proxy) return new Pool(url.origin, { ...common, connect });
        // A CONNECT tunnel to the registry; TLS to the registry runs inside it with its own settings.
        const servername = isIP(url.hostname) ? undefined : url.hostname;
        return new ProxyAgent({ ...common, uri: proxy.href, proxyTls: { timeout: this.opts.timeouts.connectMs }, requestTls: { ...connect, ...(servername ? { servername } : {}) } });
      })();
      this.pools.set(key, p);
      p.catch(() => this.pools.delete(key));
    }
    return p;
  }

  async request(url: URL, req: HttpRequest = {}): Promise<HttpResponse> {
    const certsName = req.certsName ?? url.host;
    const proxy = proxyFor(url, this.opts.env);
    const pool = await this.pool(url, req.insecure ?? false, certsName, proxy, req.probe ?? false);
    const ended = metrics.requestStarted();
    try {
      const res = await pool.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: req.method ?? 'GET',
        headers: { 'user-agent': 'tocfs', ...req.headers },
        ...(req.body !== undefined ? { body: req.body } : {}),
        signal: req.signal ?? null,
      });
      // In flight until its body is read or dropped ('close' follows 'end' and destroy()).
      res.body.once('close', ended);
      return { status: res.statusCode, headers: res.headers, body: res.body, url };
    } catch (e) {
      ended();
      if (req.probe) throw e;
      throw this.describe(e, { host: url.host, certsName, ...(proxy ? { proxy } : {}) }, req.signal);
    }
  }

  /**
   * A network error as a SourceError: transient ones retried, TLS trust problems with the
   * fix. `what` names the transfer for errors while reading a body.
   */
  describe(e: unknown, where: { host: string; certsName: string; what?: string; proxy?: URL }, signal?: AbortSignal): Error {
    const timedOut = (signal?.reason as Error | undefined)?.name === 'TimeoutError';
    if (signal?.aborted && !timedOut) return e as Error;
    if (e instanceof SourceError) return e;
    const code = errorCode(e);
    const stalled = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
    metrics.registryError(stalled ? 'stall' : timedOut || code?.includes('TIMEOUT') || code === 'ETIMEDOUT' ? 'timeout' : 'network');
    const { host, certsName } = where;
    const what = where.what ?? host;
    if (stalled)
      return new TransientError(`${what}: no data for ${formatDuration(this.opts.timeouts.stallMs)} (registry.stall_timeout)`, undefined, undefined, { cause: e });
    if (code === 'UND_ERR_CONNECT_TIMEOUT')
      return new TransientError(`${what}: no connection within ${formatDuration(this.opts.timeouts.connectMs)} (registry.stall_timeout)`, undefined, undefined, { cause: e });
    if (timedOut) return new TransientError(`${what}: timed out (${(signal!.reason as Error).message})`, undefined, undefined, { cause: e });
    if (code && TLS_TRUST_CODES.has(code))
      return new SourceError(
        `${host}: certificate signed by unknown authority (${code}): add the CA to ${this.opts.certsDir}/${certsName}/ca.crt or use --tls-verify=false`,
        undefined,
        { cause: e },
      );
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
      return new SourceError(`${host}: TLS certificate rejected (${code}: ${innermostMessage(e)}); fix the registry's certificate or use --tls-verify=false`, undefined, { cause: e });
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO')
      return new SourceError(
        `${host}: TLS handshake failed (${innermostMessage(e)}); if the registry serves plain HTTP, use --tls-verify=false or mark it insecure in registries.conf`,
        undefined,
        { cause: e },
      );
    if (where.proxy) {
      const via = proxyLabel(where.proxy);
      const refused = /Proxy response \((\d+)\)/.exec(innermostMessage(e));
      if (refused) {
        const status = Number(refused[1]);
        const why = status === 407 ? ': it wants credentials (put them in the proxy URL, http://user:password@host:port)' : '';
        const msg = `${host}: proxy ${via} refused the tunnel (HTTP ${status})${why}; to reach ${host} directly, add it to NO_PROXY`;
        return status >= 500 ? new TransientError(msg, status, undefined, { cause: e }) : new SourceError(msg, status, { cause: e });
      }
      if (code === 'ENOTFOUND') return new SourceError(`${host}: proxy host ${where.proxy.hostname} not found (${via}, from HTTP(S)_PROXY)`, undefined, { cause: e });
      if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH')
        return new TransientError(`${host}: cannot reach proxy ${via} (${code}); check HTTP(S)_PROXY, or add ${host} to NO_PROXY`, undefined, undefined, { cause: e });
    }
    if (code === 'ENOTFOUND') return new SourceError(`${host}: host not found`, undefined, { cause: e });
    const msg = `${what}: ${innermostMessage(e)}${code ? ` (${code})` : ''}`;
    if (!code || RETRYABLE_CODES.has(code) || code.startsWith('UND_ERR')) return new TransientError(msg, undefined, undefined, { cause: e });
    return new SourceError(msg, undefined, { cause: e });
  }

  async close(): Promise<void> {
    const pools = await Promise.allSettled([...this.pools.values()]);
    this.pools.clear();
    await Promise.all(pools.map((p) => (p.status === 'fulfilled' ? p.value.destroy() : undefined)));
  }
}

/** A whole response body, refusing more than `limit` bytes. */
export async function readLimited(body: HttpResponse['body'], limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) throw new SourceError(`response larger than ${limit} bytes`);
    parts.push(chunk);
  }
  return Buffer.concat(parts, n);
}
