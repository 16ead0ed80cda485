/**
 * A small HTTP proxy in front of a real registry that injects the faults a real registry
 * cannot be made to produce: dropped connections, 5xx/429 bursts, wrong Content-Range,
 * ignored Range, trickling, truncated or corrupted bodies, the wrong blob's bytes, redirects
 * to blob storage. Tests queue faults with `inject()`; every request that reaches the proxy
 * is recorded.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';

export type Fault =
  /** Answer with this status (and headers) without asking the registry. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Close the connection without any response. */
  | { kind: 'reset' }
  /** Forward, send the headers and `afterBytes` of the body, then cut the connection. */
  | { kind: 'cut'; afterBytes: number }
  /** Ask the registry for the range moved by `by` bytes: the Content-Range no longer matches the request. */
  | { kind: 'shift-range'; by: number }
  /** Drop the Range header: the registry answers 200 with the whole blob. */
  | { kind: 'ignore-range' }
  /** Forward, but deliver the body at `bytesPerSecond`. */
  | { kind: 'trickle'; bytesPerSecond: number }
  /** Forward the headers and `afterBytes` of the body, then send nothing more, holding the connection open. */
  | { kind: 'stall'; afterBytes: number }
  /** Answer 307 to `${to}${path}${query}` (blob storage on another origin). */
  | { kind: 'redirect'; to: string }
  /** Forward, but send only the first `keep` bytes of the body with a Content-Length saying so, and end the response cleanly. */
  | { kind: 'truncate'; keep: number }
  /** Forward, with the body byte at `at` (or the middle of the body) XORed with 0xff. */
  | { kind: 'flip'; at?: number }
  /** Ask the registry for blob `digest` instead; `hideTotal` turns the Content-Range total into `*` so only the content can tell. */
  | { kind: 'wrong-blob'; digest: string; hideTotal?: boolean };

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The fault applied, if any. */
  fault?: Fault['kind'];
  /** Date.now() when it arrived. */
  at: number;
}

interface Rule {
  fault: Fault;
  remaining: number;
  match: RegExp;
}

export interface FaultProxy {
  host: string;
  port: number;
  requests: RecordedRequest[];
  /** Applies `fault` to the next `times` requests whose path matches `match` (default: blob GETs). */
  inject(fault: Fault, opts?: { times?: number; match?: RegExp }): void;
  clear(): void;
  /** Requests a fault was applied to. */
  faulted(): number;
  close(): Promise<void>;
}

export const BLOB_PATH = /\/blobs\/sha256:[0-9a-f]{64}/;
export const MANIFEST_PATH = /\/manifests\//;

function listen(server: Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((r) => server.close(() => r()));
}

function shiftRange(range: string | undefined, by: number): string | undefined {
  const m = range && /^bytes=(\d+)-(\d+)$/.exec(range);
  return m ? `bytes=${Number(m[1]) + by}-${Number(m[2]) + by}` : range;
}

async function trickle(from: IncomingMessage, to: ServerResponse, bytesPerSecond: number): Promise<void> {
  const step = Math.max(1, Math.floor(bytesPerSecond / 10));
  try {
    for await (const chunk of from as AsyncIterable<Buffer>) {
      for (let i = 0; i < chunk.length; i += step) {
        if (to.destroyed) return;
        to.write(chunk.subarray(i, i + step));
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    to.end();
  } catch {
    // The registry went away mid-body: so does the client's connection.
    to.destroy();
  }
}

/** The response headers for a body cut to `keep` bytes (Content-Range unchanged: the lie). */
function truncatedHeaders(headers: IncomingHttpHeaders, keep: number): IncomingHttpHeaders {
  const declared = Number(headers['content-length'] ?? NaN);
  return { ...headers, 'content-length': String(Number.isNaN(declared) ? keep : Math.min(keep, declared)) };
}

/** `bytes S-E/TOTAL` → `bytes S-E/*`. */
function hideTotal(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const cr = headers['content-range'];
  return typeof cr === 'string' ? { ...headers, 'content-range': cr.replace(/\/\d+$/, '/*') } : headers;
}

/** Starts the proxy on `opts.port` (e.g. to bring back a proxy that was closed), else on a free port. */
export async function startFaultProxy(upstream: string, opts: { port?: number } = {}): Promise<FaultProxy> {
  const rules: Rule[] = [];
  const requests: RecordedRequest[] = [];
  const [upHost, upPort] = upstream.split(':') as [string, string];

  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    const rule = rules.find((r) => r.remaining > 0 && r.match.test(path));
    if (rule) rule.remaining--;
    const fault = rule?.fault;
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers, ...(fault ? { fault: fault.kind } : {}), at: Date.now() });
    req.resume();
    switch (fault?.kind) {
      case 'status':
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
        res.end(fault.body ?? '');
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'redirect':
        res.writeHead(307, { location: `${fault.to}${path}` });
        res.end();
        return;
    }
    const headers: IncomingHttpHeaders = { ...req.headers, host: upstream };
    if (fault?.kind === 'ignore-range') delete headers.range;
    if (fault?.kind === 'shift-range') headers.range = shiftRange(req.headers.range, fault.by);
    const upPath = fault?.kind === 'wrong-blob' ? path.replace(BLOB_PATH, (m) => m.replace(/sha256:[0-9a-f]{64}/, fault.digest)) : path;
    const up = httpRequest({ host: upHost, port: Number(upPort), method: req.method, path: upPath, headers }, (upRes) => {
      // The registry died mid-body: cut the client off too (a `cut` fault ends the connection itself).
      let cutting = false;
      const upstreamGone = (): void => {
        if (!cutting) res.destroy();
      };
      upRes.on('error', upstreamGone);
      upRes.on('aborted', upstreamGone);
      if (fault?.kind === 'truncate') {
        res.writeHead(upRes.statusCode ?? 502, truncatedHeaders(upRes.headers, fault.keep));
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          const n = Math.min(chunk.length, fault.keep - sent);
          if (n > 0) res.write(chunk.subarray(0, n));
          sent += n;
        });
        upRes.on('end', () => res.end());
        return;
      }
      if (fault?.kind === 'flip') {
        const length = Number(upRes.headers['content-length'] ?? 0);
        const at = fault.at ?? Math.floor(length / 2);
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        let pos = 0;
        upRes.on('data', (chunk: Buffer) => {
          if (at >= pos && at < pos + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[at - pos] = chunk[at - pos]! ^ 0xff;
          }
          pos += chunk.length;
          res.write(chunk);
        });
        upRes.on('end', () => res.end());
        return;
      }
      res.writeHead(upRes.statusCode ?? 502, fault?.kind === 'wrong-blob' && fault.hideTotal ? hideTotal(upRes.headers) : upRes.headers);
      if (fault?.kind === 'cut') {
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          const n = Math.min(chunk.length, fault.afterBytes - sent);
          if (n > 0) res.write(chunk.subarray(0, n));
          sent += n;
          if (sent >= fault.afterBytes) {
            cutting = true;
            upRes.destroy();
            // Let the bytes already written go out before the connection drops.
            res.socket?.end(() => res.socket?.destroy());
          }
        });
        return;
      }
      if (fault?.kind === 'stall') {
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          const n = Math.min(chunk.length, fault.afterBytes - sent);
          if (n > 0) res.write(chunk.subarray(0, n));
          sent += n;
          if (sent >= fault.afterBytes) upRes.destroy();
        });
        cutting = true;
        return;
      }
      if (fault?.kind === 'trickle') {
        void trickle(upRes, res, fault.bytesPerSecond);
        return;
      }
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    up.end();
  });
  const port = await listen(server, opts.port);
  return {
    host: `127.0.0.1:${port}`,
    port,
    requests,
    inject(fault, opts = {}) {
      rules.push({ fault, remaining: opts.times ?? 1, match: opts.match ?? BLOB_PATH });
    },
    clear() {
      rules.length = 0;
    },
    faulted: () => requests.filter((r) => r.fault).length,
    close: () => closeServer(server),
  };
}

export interface BlobStorage {
  /** `http://127.0.0.1:PORT` — give it to a `redirect` fault. */
  url: string;
  requests: RecordedRequest[];
  /** Answer the next `n` requests 403, like an expired pre-signed URL. */
  expire(n?: number): void;
  close(): Promise<void>;
}

/**
 * Blob storage on its own origin, serving a docker-registry's blobs from its filesystem root
 * (`…/blobs/sha256:HEX` → `ROOT/docker/registry/v2/blobs/sha256/HE/HEX/data`), with Range.
 */
export async function startBlobStorage(registryRoot: string): Promise<BlobStorage> {
  const requests: RecordedRequest[] = [];
  let expired = 0;
  const server = createServer(async (req, res) => {
    requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers, at: Date.now() });
    if (expired > 0) {
      expired--;
      return void res.writeHead(403).end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
    }
    const m = /sha256:([0-9a-f]{64})/.exec(req.url ?? '');
    if (!m) return void res.writeHead(404).end();
    const file = join(registryRoot, 'docker', 'registry', 'v2', 'blobs', 'sha256', m[1]!.slice(0, 2), m[1]!, 'data');
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      return void res.writeHead(404).end();
    }
    const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (r) {
      const start = Number(r[1]);
      const end = Math.min(Number(r[2]), size - 1);
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` });
      createReadStream(file, { start, end }).pipe(res);
    } else {
      res.writeHead(200, { 'content-length': size });
      createReadStream(file).pipe(res);
    }
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    expire: (n = 1) => {
      expired += n;
    },
    close: () => closeServer(server),
  };
}
