/**
 * `docker://` images as an ImageSource: pull sources from registries.conf (mirrors first),
 * manifests with platform choice and digest checks, blobs read by range from whichever
 * source answers.
 */
import { Readable } from 'node:stream';
import { sha256 } from '../digest.js';
import { DigestMismatchError, SourceError } from '../errors.js';
import { MANIFEST_ACCEPT } from '../source/manifest.js';
import { resolveManifest, wantedPlatform, type ManifestBytes } from '../source/resolve.js';
import { logger } from '../log.js';
import { formatReference, type DockerReference } from '../reference.js';
import { checkBlobRead, type BlobReader, type Descriptor, type ImageSource, type ResolvedImage, type ResolveOptions } from '../source/types.js';
import { authFilePaths } from './auth-file.js';
import { RegistryEndpoint, type EndpointContext } from './endpoint.js';
import { RegistryDownError } from './health.js';
import { DEFAULT_CERTS_DIR, DEFAULT_CONNECTIONS, DEFAULT_RETRY, DEFAULT_TIMEOUTS, type SourceOptions } from './options.js';
import { loadRegistriesConf, pullSources, registriesConfPaths } from './registries-conf.js';
import { Transports } from './transport.js';

export function createRegistrySource(ref: DockerReference, options: SourceOptions): ImageSource {
  return new RegistrySource(ref, options);
}

async function collect(chunks: AsyncIterable<Buffer>, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let n = 0;
  for await (const c of chunks) {
    c.copy(out, n);
    n += c.length;
  }
  if (n !== length) throw new SourceError(`internal: collected ${n} of ${length} bytes`);
  return out;
}

export class RegistrySource implements ImageSource {
  private readonly transports: Transports;
  private readonly ctx: EndpointContext;
  private endpointList?: Promise<RegistryEndpoint[]>;
  /** Index of the endpoint that served the manifest: blobs are read from it first. */
  private preferred = 0;

  constructor(
    readonly ref: DockerReference,
    private readonly options: SourceOptions = {},
  ) {
    const r = options.registry ?? {};
    const timeouts = { ...DEFAULT_TIMEOUTS, ...r.timeouts };
    this.transports = new Transports({
      certsDir: r.certsDir ?? process.env.TOCFS_CERTS_DIR ?? DEFAULT_CERTS_DIR,
      connections: r.connections ?? DEFAULT_CONNECTIONS,
      timeouts,
      ...(r.env ? { env: r.env } : {}),
    });
    this.ctx = {
      transports: this.transports,
      retry: { ...DEFAULT_RETRY, ...r.retry },
      timeouts,
      tlsVerify: options.tlsVerify !== false,
      authFiles: authFilePaths(r.authFile),
    };
  }

  /** Mirrors first, then the registry itself (registries.conf). */
  endpoints(): Promise<RegistryEndpoint[]> {
    this.endpointList ??= (async () => {
      const conf = await loadRegistriesConf(registriesConfPaths(this.options.registry ?? {}));
      const ctx = conf.credentialHelpers ? { ...this.ctx, credentialHelpers: conf.credentialHelpers } : this.ctx;
      return pullSources(conf, this.ref).map((s) => new RegistryEndpoint(s, ctx));
    })();
    return this.endpointList;
  }

  private async ordered(): Promise<RegistryEndpoint[]> {
    const eps = await this.endpoints();
    return [eps[this.preferred]!, ...eps.filter((_, i) => i !== this.preferred)];
  }

  async resolve(options: ResolveOptions = {}): Promise<ResolvedImage> {
    const eps = await this.endpoints();
    const failures: string[] = [];
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[i]!;
      try {
        const resolved = await this.resolveFrom(ep, options);
        this.preferred = i;
        return resolved;
      } catch (e) {
        if (options.signal?.aborted || i === eps.length - 1) {
          if (failures.length && e instanceof Error) e.message += ` (mirrors tried first: ${failures.join('; ')})`;
          throw e;
        }
        // A source known to be down was logged once when it went down.
        logger()[e instanceof RegistryDownError ? 'debug' : 'warn']({ mirror: ep.name, err: (e as Error).message }, 'mirror failed; trying the next source');
        failures.push(`${ep.registry}: ${(e as Error).message}`);
      }
    }
    throw new SourceError(`${formatReference(this.ref)}: no registry to pull from`);
  }

  /** The manifest `reference` names on `ep`; a digest reference is checked against the bytes. */
  private async fetchManifest(ep: RegistryEndpoint, reference: string, signal?: AbortSignal): Promise<ManifestBytes> {
    const m = await ep.manifest(reference, MANIFEST_ACCEPT, signal);
    const digest = sha256(m.bytes);
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new DigestMismatchError(`${formatReference(this.ref)}: manifest from ${ep.registry}`, reference, digest);
    return { ...m, digest };
  }

  private async resolveFrom(ep: RegistryEndpoint, options: ResolveOptions): Promise<ResolvedImage> {
    const signal = options.signal;
    const top = await this.fetchManifest(ep, this.ref.digest ?? this.ref.tag ?? 'latest', signal);
    return resolveManifest(formatReference(this.ref), top, wantedPlatform(options, this.options.platform), {
      where: `from ${ep.registry}`,
      manifest: (d) => ep.manifest(d.digest, MANIFEST_ACCEPT, signal),
      config: (d) => collect(ep.blobRange(d, 0, d.size, signal), d.size),
    });
  }

  /**
   * Bytes of `desc` from the preferred source, continuing from the next one if it fails.
   * Sources known to be down are passed over; when every one is, the read fails at once.
   */
  private async *range(desc: Descriptor, offset: number, length: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const all = await this.ordered();
    const eps = all.filter((ep) => !ep.down);
    if (eps.length === 0) throw all[0]!.health.failFast();
    let pos = offset;
    for (let i = 0; i < eps.length; i++) {
      try {
        for await (const c of eps[i]!.blobRange(desc, pos, offset + length - pos, signal)) {
          pos += c.length;
          yield c;
        }
        // Later reads go straight to the source that works.
        if (eps[i] !== all[0]) this.preferred = (await this.endpoints()).indexOf(eps[i]!);
        return;
      } catch (e) {
        if (signal?.aborted || i === eps.length - 1) throw e;
        logger()[e instanceof RegistryDownError ? 'debug' : 'warn']({ source: eps[i]!.name, blob: desc.digest, err: (e as Error).message }, 'blob read failed; trying the next source');
      }
    }
  }

  blob(descriptor: Descriptor): BlobReader {
    const size = descriptor.size;
    const source = this;
    return {
      digest: descriptor.digest,
      size,
      async read(offset, length, signal) {
        checkBlobRead(descriptor, offset, length);
        if (length === 0) return Buffer.alloc(0);
        return collect(source.range(descriptor, offset, length, signal), length);
      },
      readParts(offset, length, signal) {
        checkBlobRead(descriptor, offset, length);
        return source.range(descriptor, offset, length, signal);
      },
      async stream(signal) {
        return Readable.from(source.range(descriptor, 0, size, signal), { objectMode: false });
      },
    };
  }

  async close(): Promise<void> {
    for (const ep of (await this.endpointList?.catch(() => undefined)) ?? []) ep.close();
    await this.transports.close();
  }
}
