/**
 * Opening one layer for reading, the one way the mount (image/image.ts) and the layer store
 * (store/layers.ts) both do it: the blob with its wrappers (metrics, remembered tail, read
 * counting), the layer's TOC (verified, from the TOC store when read before), and a
 * LayerReader over the shared chunk cache carrying every fetch.* setting. A setting added
 * to LayerFetchSettings reaches both paths through here.
 */
import type { Logger } from 'pino';
import { ChunkCache } from '../cache/chunk-cache.js';
import { DiskTocStore } from '../cache/toc-store.js';
import { TocfsError } from '../errors.js';
import { LayerReader, type LayerFetchSettings } from '../fetch/layer-reader.js';
import { parseLayerAnnotations } from '../formats/annotations.js';
import { NoTocError, probeLayer, readLayerToc, type LayerToc, type TocStore } from '../formats/index.js';
import { indexPlainLayer } from '../formats/plain.js';
import { loadPlainIndex, savePlainIndex } from '../formats/plain-index.js';
import { meteredBlob, metrics } from '../metrics/index.js';
import type { ReadCounter } from '../source/counting.js';
import { rememberTail } from '../source/tail-memo.js';
import type { BlobReader, Descriptor, ImageSource } from '../source/types.js';

/** The settings of the read path below an opened layer (config `cache.*`, `fetch.*`). */
export interface ReadPathSettings {
  /** Chunk cache and TOC store directory. */
  cacheDir: string;
  /** Disk budget and memory tier of the chunk cache (ChunkCache defaults otherwise). */
  cacheMaxBytes?: number | undefined;
  cacheMemoryBytes?: number | undefined;
  fetch?: LayerFetchSettings | undefined;
}

export interface LayerOpenerOptions {
  cache: ChunkCache;
  tocStore: TocStore;
  /** fetch.* settings of every reader opened here (LayerReader's defaults for those not given). */
  fetch?: LayerFetchSettings;
  logger: Logger;
  /** Counts every blob read (for --stats and tests). */
  counter?: ReadCounter;
}

/**
 * What to do with a layer that has no TOC tocfs can trust: 'index' fetches the whole blob
 * once, verifies it and serves it from the cache (the mount); 'refuse' fails with
 * NotLazyError (the store, whose client then pulls the layer itself).
 */
export type WithoutToc = 'index' | 'refuse';

export interface OpenLayerOptions {
  withoutToc: WithoutToc;
  /** Logger of the layer's reader (default: the opener's). */
  logger?: Logger;
}

/** One layer, ready to read. */
export interface OpenedLayer {
  descriptor: Descriptor;
  blob: BlobReader;
  toc: LayerToc;
  reader: LayerReader;
  /** false when the layer had no usable TOC and was fetched whole. */
  lazy: boolean;
}

/** A layer that cannot be read lazily with a TOC its annotations vouch for. */
export class NotLazyError extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ENOENT', options);
    this.name = 'NotLazyError';
  }
}

/** The TOC digests a layer's annotations carry (eStargz TOC digest, zstd:chunked manifest checksum). */
export function tocDigestsOf(desc: Descriptor): string[] {
  try {
    const a = parseLayerAnnotations(desc);
    return [a.stargzTocDigest, a.zstdChecksum].filter((d): d is string => d !== undefined);
  } catch {
    return [];
  }
}

export class LayerOpener {
  readonly cache: ChunkCache;
  readonly fetch: LayerFetchSettings;
  private readonly log: Logger;

  /** Opens the chunk cache and TOC store in `settings.cacheDir` and an opener over them. */
  static async create(settings: ReadPathSettings, logger: Logger, counter?: ReadCounter): Promise<LayerOpener> {
    const cache = await ChunkCache.open({
      dir: settings.cacheDir,
      logger,
      ...(settings.cacheMaxBytes !== undefined ? { maxBytes: settings.cacheMaxBytes } : {}),
      ...(settings.cacheMemoryBytes !== undefined ? { memoryBytes: settings.cacheMemoryBytes } : {}),
    });
    return new LayerOpener({ cache, tocStore: new DiskTocStore(settings.cacheDir, logger), logger, ...(settings.fetch ? { fetch: settings.fetch } : {}), ...(counter ? { counter } : {}) });
  }

  constructor(private readonly opts: LayerOpenerOptions) {
    this.cache = opts.cache;
    this.fetch = definedOnly(opts.fetch ?? {});
    this.log = opts.logger;
  }

  async open(source: ImageSource, descriptor: Descriptor, how: OpenLayerOptions): Promise<OpenedLayer> {
    const raw = meteredBlob(source.blob(descriptor));
    const blob = rememberTail(this.opts.counter ? this.opts.counter.wrap(raw) : raw);
    const { toc, lazy } = how.withoutToc === 'index' ? await this.tocOrIndex(descriptor, blob) : { toc: await this.vouchedToc(descriptor, blob), lazy: true };
    // A TOC-less layer's pieces live only in the cache: if some were evicted, index again.
    const reindex = lazy ? {} : { reindex: () => this.indexWhole(descriptor, blob) };
    const reader = new LayerReader({ layerDigest: descriptor.digest, toc, blob, cache: this.cache, logger: how.logger ?? this.log, ...reindex, ...this.fetch });
    return { descriptor, blob, toc, reader, lazy };
  }

  /** The layer's TOC, which its annotations must vouch for. */
  private async vouchedToc(desc: Descriptor, blob: BlobReader): Promise<LayerToc> {
    if (tocDigestsOf(desc).length === 0) throw new NotLazyError(`layer ${desc.digest} (${desc.mediaType}) has no TOC digest annotation: it cannot be served lazily and verified`);
    const toc = await readLayerToc(desc, blob, { tocStore: this.opts.tocStore }).catch((e: unknown) => {
      metrics.ifMismatch(e, desc.digest, 'toc');
      throw e;
    });
    if (!toc.verified || toc.format === 'none') throw new NotLazyError(`layer ${desc.digest}: its TOC is not vouched for by the layer's annotations`);
    return toc;
  }

  /** The layer's TOC; a layer without a usable one is indexed from its whole blob. */
  private async tocOrIndex(desc: Descriptor, blob: BlobReader): Promise<{ toc: LayerToc; lazy: boolean }> {
    const tocStore = this.opts.tocStore;
    // A layer indexed whole before: its stored index, without touching the blob.
    const stored = await loadPlainIndex(tocStore, desc);
    if (stored.toc) return { toc: stored.toc, lazy: false };
    if (stored.rejected) this.log.warn({ layer: desc.digest, reason: stored.rejected }, 'stored index of a layer without TOC not used');
    try {
      return { toc: await readLayerToc(desc, blob, { tocStore }), lazy: true };
    } catch (e) {
      metrics.ifMismatch(e, desc.digest, 'toc');
      if (!(e instanceof NoTocError)) {
        // A TOC nothing vouches for is not trusted; a vouched-for TOC that fails is an error.
        const probe = await probeLayer(desc, blob).catch(() => undefined);
        if (!probe || probe.verifiable) throw e;
      }
      this.log.warn({ layer: desc.digest, reason: (e as Error).message }, 'layer has no usable TOC: fetching and verifying the whole blob once (not lazy)');
      const toc = await this.indexWhole(desc, blob);
      await savePlainIndex(tocStore, desc, toc);
      return { toc, lazy: false };
    }
  }

  /** Fetches the whole blob once, verifies it and puts every file's pieces into the cache. */
  private async indexWhole(desc: Descriptor, blob: BlobReader): Promise<LayerToc> {
    let lastLog = Date.now();
    const toc = await indexPlainLayer(desc, blob, (digest, data) => this.cache.put(digest, data), (bytes) => {
      if (Date.now() - lastLog < 2000) return;
      lastLog = Date.now();
      this.log.info({ layer: desc.digest, bytes, total: desc.size }, 'indexing layer without TOC');
    });
    this.log.info({ layer: desc.digest, entries: toc.entries.length, bytes: desc.size }, 'indexed layer without TOC: served from the cache');
    return toc;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
