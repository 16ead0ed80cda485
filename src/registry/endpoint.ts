/**
 * One place an image can be pulled from (a mirror or the registry): scheme discovery for
 * insecure registries, authentication, redirects, manifests, and blob bytes with retries.
 */
import { SourceError } from '../errors.js';
import { logger } from '../log.js';
import { metrics } from '../metrics/index.js';
import { DOCKER_HUB } from '../reference.js';
import type { Descriptor } from '../source/types.js';
import { AuthError, Authenticator } from './auth.js';
import { registryHealth, type RegistryDownError, type RegistryHealth } from './health.js';
import type { RetryPolicy, Timeouts } from './options.js';
import type { PullSource } from './registries-conf.js';
import { parseRetryAfter, RetryBudget, TransientError, withRetries } from './retry.js';
import { readLimited, type HttpResponse, type Transports } from './transport.js';

export interface EndpointContext {
  transports: Transports;
  retry: RetryPolicy;
  timeouts: Timeouts;
  /** false: every registry may be plain HTTP or have an unverified certificate. */
  tlsVerify: boolean;
  authFiles: string[];
  /** registries.conf `credential-helpers` (unset: the auth files only). */
  credentialHelpers?: { helpers: string[]; file: string };
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType?: string;
}

const MAX_MANIFEST = 4 * 1024 * 1024;
const MAX_ERROR_BODY = 64 * 1024;
const MAX_REDIRECTS = 5;
/**
 * How long a blob's redirect target (typically a pre-signed storage URL) is reused for
 * further ranges of that blob without asking the registry again. A target that stops
 * answering 200/206 is dropped at once.
 */
const REDIRECT_REUSE_MS = 5 * 60 * 1000;

function header(h: HttpResponse['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** `bytes START-END/TOTAL` (TOTAL may be `*`). */
export function parseContentRange(v: string | undefined): { start: number; end: number; total?: number } | undefined {
  const m = v ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(v) : null;
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), ...(m[3] !== '*' ? { total: Number(m[3]) } : {}) };
}

/** Drops a response body we will not read, without an unhandled 'error' from the abort. */
function discard(res: HttpResponse | undefined): void {
  if (!res || res.body.readableEnded || res.body.destroyed) return;
  res.body.on('error', () => {});
  res.body.destroy();
}

/** Bytes a successful attempt must deliver before earlier failures stop counting against the retry budget. */
const PROGRESS_RESETS_RETRIES = 1024 * 1024;

/** What a request other than a pull sends: its method, its body, and whether it needs push rights. */
interface SendBody {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT';
  body?: Buffer;
  push?: boolean;
}

/** Failures that may mean the registry is down, not just one bad connection: a stall, or no connection at all. */
const UNREACHABLE_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT']);

function unreachable(e: unknown): boolean {
  for (let x = e, depth = 0; x instanceof Error && depth < 6; x = x.cause, depth++) if (UNREACHABLE_CODES.has((x as { code?: string }).code ?? '')) return true;
  return false;
}

/**
 * One attempt's signal: the caller's, and an abort when the registry is found down while the
 * attempt still waits for its response (a request queued behind stalled ones would otherwise
 * wait out a stall of its own). Once the response is in, its body has undici's stall timeout.
 */
class Attempt {
  private readonly ac = new AbortController();
  readonly signal: AbortSignal;
  down: RegistryDownError | undefined;
  private stopListening: (() => void) | undefined;

  constructor(health: RegistryHealth, user?: AbortSignal) {
    this.signal = user ? AbortSignal.any([user, this.ac.signal]) : this.ac.signal;
    this.stopListening = health.onDown((e) => {
      this.down = e;
      this.ac.abort(e);
    });
  }

  answered(): void {
    this.stopListening?.();
    this.stopListening = undefined;
  }
}

export class RegistryEndpoint {
  readonly registry: string;
  readonly repository: string;
  readonly mirror: boolean;
  readonly auth: Authenticator;
  /** Shared by every endpoint on the same host. */
  readonly health: RegistryHealth;
  private readonly insecure: boolean;
  private readonly unregister: () => void;
  private base?: Promise<URL>;
  private warnedRangeIgnored = false;
  /** Blob digest → the storage URL the registry redirected it to. */
  private readonly redirects = new Map<string, { url: URL; until: number }>();

  constructor(
    source: PullSource,
    private readonly ctx: EndpointContext,
  ) {
    this.registry = source.registry;
    this.repository = source.repository;
    this.mirror = source.mirror;
    this.insecure = source.insecure || !ctx.tlsVerify;
    this.auth = new Authenticator({
      registry: this.registry,
      repository: this.repository,
      authFiles: ctx.authFiles,
      ...(ctx.credentialHelpers ? { credentialHelpers: ctx.credentialHelpers } : {}),
      transports: ctx.transports,
      insecure: this.insecure,
    });
    this.health = registryHealth(this.registry);
    this.unregister = this.health.register((signal) => this.answers(signal));
  }

  /** The host is known to be down: requests to it fail at once. */
  get down(): boolean {
    return this.health.down;
  }

  /** Stops lending this endpoint's connections to the health checks of its host. */
  close(): void {
    this.unregister();
  }

  /** Resolves when the registry answers `GET /v2/` at all (any status), on a connection of its own. */
  private async answers(signal: AbortSignal): Promise<void> {
    const base = await this.baseUrl(signal);
    const res = await this.ctx.transports.request(new URL('/v2/', base), { signal, insecure: this.insecure, certsName: this.registry, probe: true });
    await res.body.dump();
  }

  /**
   * The error a failed attempt ends with: the registry found down (now, or by another request
   * meanwhile) ends the request at once, without retries; anything else goes to the retry budget.
   */
  private async attemptError(a: Attempt, e: unknown, what: string, signal: AbortSignal | undefined): Promise<Error> {
    if (a.down) return a.down;
    const err = this.describe(e, what, a.signal);
    if (!signal?.aborted && unreachable(err) && (await this.health.confirmDown(err, this.ctx.timeouts.stallMs))) return this.health.downError(err);
    return err;
  }

  /** `host[/repo]` for messages. */
  get name(): string {
    return `${this.registry}/${this.repository}`;
  }

  private apiHost(): string {
    return this.registry === DOCKER_HUB ? 'registry-1.docker.io' : this.registry;
  }

  /** https, or for an insecure registry whichever of https (unverified) and http answers. */
  private baseUrl(signal?: AbortSignal): Promise<URL> {
    if (!this.base) {
      const https = new URL(`https://${this.apiHost()}/`);
      this.base = this.insecure ? this.probe(https, signal) : Promise.resolve(https);
      this.base.catch(() => (this.base = undefined));
    }
    return this.base;
  }

  private async probe(https: URL, signal?: AbortSignal): Promise<URL> {
    // Bounded by the connect and stall timeouts of the transport.
    const ping = async (base: URL): Promise<void> => {
      const res = await this.ctx.transports.request(new URL('/v2/', base), { ...(signal ? { signal } : {}), insecure: true, certsName: this.registry });
      await res.body.dump();
    };
    try {
      await ping(https);
      return https;
    } catch (httpsError) {
      if (signal?.aborted) throw httpsError;
      const http = new URL(`http://${this.apiHost()}/`);
      try {
        await ping(http);
        logger().debug({ registry: this.registry }, 'insecure registry answers plain HTTP');
        return http;
      } catch {
        throw httpsError;
      }
    }
  }

  /**
   * One request with its authentication handshake and redirects. The registry's
   * Authorization goes only to the registry's own origin.
   */
  private async send(path: string, headers: Record<string, string>, signal: AbortSignal, body: SendBody = {}): Promise<HttpResponse> {
    const base = await this.baseUrl(signal);
    let url = new URL(path, base);
    let authorization = await this.auth.authorization(signal, body.push);
    let authenticated = false;
    for (let hops = 0; ; ) {
      const own = url.origin === base.origin;
      const res = await this.ctx.transports.request(url, {
        ...(body.method ? { method: body.method } : {}),
        ...(body.body ? { body: body.body } : {}),
        headers: { ...headers, ...(own && authorization ? { authorization } : {}) },
        signal,
        insecure: own ? this.insecure : false,
        certsName: own ? this.registry : url.host,
      });
      if (res.status === 401 && own && !authenticated) {
        await res.body.dump();
        authorization = await this.auth.unauthorized(res.headers['www-authenticate'], authorization, signal, body.push);
        authenticated = true;
        continue;
      }
      const location = header(res.headers, 'location');
      if ([301, 302, 303, 307, 308].includes(res.status) && location) {
        await res.body.dump();
        if (++hops > MAX_REDIRECTS) throw new SourceError(`${this.registry}: more than ${MAX_REDIRECTS} redirects for ${path}`);
        url = new URL(location, url);
        continue;
      }
      return res;
    }
  }

  /** Throws the error a non-success response means (and releases its body). */
  private async fail(res: HttpResponse, what: string): Promise<never> {
    const status = res.status;
    metrics.registryError(status);
    if (status === 416) {
      // The registry's 416 carries a Content-Length that does not match its body: never read it.
      discard(res);
      throw new SourceError(`${what}: ${this.registry} answered 416 Range Not Satisfiable`, status);
    }
    let detail = '';
    try {
      const text = (await readLimited(res.body, MAX_ERROR_BODY)).toString('utf8');
      const errs = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors;
      if (Array.isArray(errs)) detail = errs.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    } catch {
      // No registry error document; the status says enough.
    }
    const suffix = `${status}${detail ? ` ${detail}` : ''}`;
    if (status === 401) throw await this.auth.deniedError(status, detail || undefined);
    if (status === 408 || status === 429 || status >= 500)
      throw new TransientError(`${what}: ${this.registry} answered ${suffix}`, status, parseRetryAfter(res.headers['retry-after']));
    if (status === 403) throw new AuthError(`${what}: ${this.registry} denied access (${suffix})`, status);
    if (status === 404) throw new SourceError(`${what}: not found on ${this.registry} (${suffix})`, status);
    throw new SourceError(`${what}: ${this.registry} answered ${suffix}`, status);
  }

  private describe(e: unknown, what: string, signal: AbortSignal): Error {
    return this.ctx.transports.describe(e, { host: this.registry, certsName: this.registry, what }, signal);
  }

  /** A manifest or index by tag or digest, with its Content-Type. The caller verifies digests. */
  async manifest(reference: string, accept: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `manifest ${this.name}:${reference}`;
    return withRetries(this.ctx.retry, what, signal, async () => {
      await this.health.ready();
      const a = new Attempt(this.health, signal);
      let res: HttpResponse | undefined;
      try {
        res = await this.send(`/v2/${this.repository}/manifests/${reference}`, { accept }, a.signal);
        a.answered();
        if (res.status !== 200) await this.fail(res, what);
        const length = Number(header(res.headers, 'content-length') ?? 0);
        if (length > MAX_MANIFEST) {
          discard(res);
          throw new SourceError(`${what}: manifest of ${length} bytes is larger than the ${MAX_MANIFEST} allowed`);
        }
        const bytes = await readLimited(res.body, MAX_MANIFEST);
        const ct = header(res.headers, 'content-type');
        return { bytes, ...(ct ? { mediaType: ct.split(';')[0]!.trim() } : {}) };
      } catch (e) {
        discard(res);
        throw await this.attemptError(a, e, what, signal);
      } finally {
        a.answered();
      }
    });
  }

  /** A blob GET: to the storage URL the registry last redirected this blob to, else through the registry. */
  private async blobResponse(digest: string, headers: Record<string, string>, signal: AbortSignal): Promise<HttpResponse> {
    const cached = this.redirects.get(digest);
    if (cached && cached.until > Date.now()) {
      try {
        const res = await this.ctx.transports.request(cached.url, { headers, signal });
        if (res.status === 200 || res.status === 206) return res;
        discard(res);
      } catch (e) {
        if (signal.aborted) throw e;
      }
      logger().debug({ registry: this.registry, blob: digest }, 'stored redirect target failed; asking the registry again');
    }
    this.redirects.delete(digest);
    const res = await this.send(`/v2/${this.repository}/blobs/${digest}`, headers, signal);
    const base = await this.baseUrl(signal);
    if (res.url.origin !== base.origin && (res.status === 200 || res.status === 206)) this.redirects.set(digest, { url: res.url, until: Date.now() + REDIRECT_REUSE_MS });
    return res;
  }

  /**
   * Bytes [offset, offset+length) of a blob, yielded as they arrive. A cut or timed-out
   * transfer resumes where it stopped; `206` must carry the Content-Range asked for; a `200`
   * (the registry ignored Range) is the whole blob and is cut to the range here.
   */
  async *blobRange(desc: Descriptor, offset: number, length: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const what = `blob ${desc.digest} of ${this.name}`;
    const end = offset + length;
    let pos = offset;
    const budget = new RetryBudget(this.ctx.retry, what);
    while (pos < end) {
      await this.health.ready();
      const a = new Attempt(this.health, signal);
      const startedAt = pos;
      const wantRange = !(pos === 0 && end === desc.size);
      let res: HttpResponse | undefined;
      try {
        res = await this.blobResponse(desc.digest, wantRange ? { range: `bytes=${pos}-${end - 1}` } : {}, a.signal);
        a.answered();
        let skip = 0;
        const declaredLength = header(res.headers, 'content-length');
        if (res.status === 206) {
          const cr = parseContentRange(header(res.headers, 'content-range'));
          if (!cr || cr.start !== pos || cr.end !== end - 1 || (cr.total !== undefined && cr.total !== desc.size))
            throw new TransientError(`${what}: asked for bytes ${pos}-${end - 1}/${desc.size}, got Content-Range ${JSON.stringify(header(res.headers, 'content-range') ?? null)}`, 206);
          if (declaredLength !== undefined && Number(declaredLength) !== end - pos)
            throw new TransientError(`${what}: Content-Length ${declaredLength} does not match the range ${pos}-${end - 1}`, 206);
        } else if (res.status === 200) {
          if (declaredLength !== undefined && Number(declaredLength) !== desc.size)
            throw new TransientError(`${what}: Content-Length ${declaredLength}, but the blob has ${desc.size} bytes`, 200);
          if (wantRange && !this.warnedRangeIgnored) {
            this.warnedRangeIgnored = true;
            logger().warn({ registry: this.registry }, 'registry ignored a Range request and sent the whole blob; reading through it');
          }
          skip = pos;
        } else {
          await this.fail(res, what);
        }
        // Reading a 206 to its end keeps the connection reusable; a whole blob sent for a
        // range is cut off as soon as the range is in.
        const stopEarly = res.status === 200 && wantRange;
        for await (const raw of res.body as AsyncIterable<Buffer>) {
          let chunk = raw;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
          }
          const overflow = chunk.length > end - pos;
          if (overflow) chunk = chunk.subarray(0, end - pos);
          if (chunk.length > 0) {
            pos += chunk.length;
            if (pos - startedAt >= PROGRESS_RESETS_RETRIES) budget.reset();
            yield chunk;
          }
          if (overflow || (stopEarly && pos === end)) break;
        }
        if (pos < end) throw new TransientError(`${what}: connection closed at byte ${pos} of ${offset}-${end - 1}`, res.status);
      } catch (e) {
        await budget.failed(await this.attemptError(a, e, what, signal), signal, { at: pos });
      } finally {
        a.answered();
        discard(res);
      }
    }
  }

  /**
   * A request beyond reading manifests and blobs (uploads, manifest PUTs, the referrers API),
   * with the same authentication (`push`: asks for push rights too), redirects and retries of
   * transient failures. A status not in `ok` is thrown as the error it means; `read` takes the
   * response (its body is dropped afterwards if left unread).
   */
  async exchange<T>(what: string, path: string, opts: SendBody & { headers?: Record<string, string>; ok: number[]; signal?: AbortSignal }, read: (res: HttpResponse) => Promise<T>): Promise<T> {
    return withRetries(this.ctx.retry, what, opts.signal, async () => {
      await this.health.ready();
      const signal = opts.signal ?? new AbortController().signal;
      let res: HttpResponse | undefined;
      try {
        res = await this.send(path, opts.headers ?? {}, signal, opts);
        if (!opts.ok.includes(res.status)) await this.fail(res, what);
        return await read(res);
      } catch (e) {
        throw this.describe(e, what, signal);
      } finally {
        discard(res);
      }
    });
  }
}
