/**
 * An image opened for reading: the one place that wires sources -> formats -> cache -> fetch.
 *
 * openImage resolves the reference, reads (or loads from the TOC store) every layer's TOC,
 * and gives each layer a LayerReader over the shared chunk cache. Layers without a usable
 * TOC are fetched whole once, verified and indexed into the cache (not lazy).
 */
import type { Logger } from 'pino';
import { ChunkCache, defaultCacheDir } from '../cache/chunk-cache.js';
import { DiskTocStore } from '../cache/toc-store.js';
import { TocfsError } from '../errors.js';
import { LayerReader, type LayerFetchSettings } from '../fetch/layer-reader.js';
import { NoTocError, probeLayer, readLayerToc, type LayerToc, type TocStore } from '../formats/index.js';
import { indexPlainLayer } from '../formats/plain.js';
import { loadPlainIndex, savePlainIndex } from '../formats/plain-index.js';
import { logger as rootLogger } from '../log.js';
import { meteredBlob, metrics } from '../metrics/index.js';
import { rememberTail } from '../source/tail-memo.js';
import type { ReadCounter } from '../source/counting.js';
import type { BlobReader, Descriptor, ImageSource, Platform, ResolvedImage } from '../source/types.js';
import type { RegistryClientOptions } from '../registry/options.js';
import { openImageSource } from './open.js';
import { buildLayerTree, mergeLayers, type FsNode, type FsTree } from './tree.js';

export interface OpenImageOptions {
  /** Chunk cache and TOC store directory (default: defaultCacheDir()). */
  cacheDir?: string;
  /** Disk budget and memory tier of the chunk cache (ChunkCache defaults). */
  cacheMaxBytes?: number;
  cacheMemoryBytes?: number;
  /** LayerReader tuning (its defaults otherwise). */
  fetch?: LayerFetchSettings;
  tlsVerify?: boolean;
  platform?: Platform;
  /** Registry client settings (config files, credentials, retries); its defaults otherwise. */
  registry?: RegistryClientOptions;
  /** Counts every blob read (for --stats and tests). */
  counter?: ReadCounter;
  logger?: Logger;
}

export interface ImageLayer {
  /** Position in the image, bottom = 0. */
  index: number;
  descriptor: Descriptor;
  blob: BlobReader;
  toc: LayerToc;
  reader: LayerReader;
  /** false when the layer had no usable TOC and was fetched whole. */
  lazy: boolean;
}

export interface OpenedImage {
  /** The canonical reference. */
  reference: string;
  resolved: ResolvedImage;
  layers: ImageLayer[];
  cache: ChunkCache;
  /** The merged root filesystem, or with a digest (or unique hex prefix) that layer's own tree. */
  tree(layerDigest?: string): FsTree;
  /** The layer a digest or unique hex prefix names. */
  layer(digest: string): ImageLayer;
  /** Bytes [offset, offset+length) of a regular file of any of this image's trees; `signal` gives up waiting. */
  readFile(node: FsNode, offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  close(): Promise<void>;
}

/** Reads every layer's TOC; a layer that cannot be read lazily is indexed from its whole blob. */
async function layerToc(desc: Descriptor, blob: BlobReader, tocStore: TocStore, cache: ChunkCache, log: Logger): Promise<{ toc: LayerToc; lazy: boolean }> {
  // A layer indexed whole before: its stored index, without touching the blob.
  const stored = await loadPlainIndex(tocStore, desc);
  if (stored.toc) return { toc: stored.toc, lazy: false };
  if (stored.rejected) log.warn({ layer: desc.digest, reason: stored.rejected }, 'stored index of a layer without TOC not used');
  try {
    return { toc: await readLayerToc(desc, blob, { tocStore }), lazy: true };
  } catch (e) {
    metrics.ifMismatch(e, desc.digest, 'toc');
    if (!(e instanceof NoTocError)) {
      // A TOC nothing vouches for is not trusted; a vouched-for TOC that fails is an error.
      const probe = await probeLayer(desc, blob).catch(() => undefined);
      if (!probe || probe.verifiable) throw e;
    }
    log.warn({ layer: desc.digest, reason: (e as Error).message }, 'layer has no usable TOC: fetching and verifying the whole blob once (not lazy)');
    const toc = await indexWithoutToc(desc, blob, cache, log);
    await savePlainIndex(tocStore, desc, toc);
    return { toc, lazy: false };
  }
}

/** Fetches the whole blob once, verifies it and puts every file's pieces into the cache. */
async function indexWithoutToc(desc: Descriptor, blob: BlobReader, cache: ChunkCache, log: Logger): Promise<LayerToc> {
  let lastLog = Date.now();
  const toc = await indexPlainLayer(desc, blob, (digest, data) => cache.put(digest, data), (bytes) => {
    if (Date.now() - lastLog < 2000) return;
    lastLog = Date.now();
    log.info({ layer: desc.digest, bytes, total: desc.size }, 'indexing layer without TOC');
  });
  log.info({ layer: desc.digest, entries: toc.entries.length, bytes: desc.size }, 'indexed layer without TOC: served from the cache');
  return toc;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export async function openImage(reference: string, opts: OpenImageOptions = {}): Promise<OpenedImage> {
  const log = opts.logger ?? rootLogger();
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const source: ImageSource = await openImageSource(reference, {
    ...(opts.tlsVerify !== undefined ? { tlsVerify: opts.tlsVerify } : {}),
    ...(opts.platform ? { platform: opts.platform } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  try {
    const resolved = await source.resolve();
    const cache = await ChunkCache.open({
      dir: cacheDir,
      logger: log,
      ...(opts.cacheMaxBytes !== undefined ? { maxBytes: opts.cacheMaxBytes } : {}),
      ...(opts.cacheMemoryBytes !== undefined ? { memoryBytes: opts.cacheMemoryBytes } : {}),
    });
    const tocStore = new DiskTocStore(cacheDir, log);
    const layers = await Promise.all(
      resolved.layers.map(async (descriptor, index): Promise<ImageLayer> => {
        const raw = meteredBlob(source.blob(descriptor));
        const blob = rememberTail(opts.counter ? opts.counter.wrap(raw) : raw);
        const { toc, lazy } = await layerToc(descriptor, blob, tocStore, cache, log);
        // A TOC-less layer's pieces live only in the cache: if some were evicted, index again.
        const reindex = lazy ? {} : { reindex: () => indexWithoutToc(descriptor, blob, cache, log) };
        // Its warnings (a chunk failing verification) name the image; they name layer and path themselves.
        const reader = new LayerReader({ layerDigest: descriptor.digest, toc, blob, cache, logger: log.child({ image: resolved.reference }), ...reindex, ...definedOnly(opts.fetch ?? {}) });
        return { index, descriptor, blob, toc, reader, lazy };
      }),
    );
    return new Image(resolved, layers, cache, source);
  } catch (e) {
    await source.close().catch(() => undefined);
    throw e;
  }
}

class Image implements OpenedImage {
  readonly reference: string;
  private merged: FsTree | undefined;
  private readonly own = new Map<number, FsTree>();

  constructor(
    readonly resolved: ResolvedImage,
    readonly layers: ImageLayer[],
    readonly cache: ChunkCache,
    private readonly source: ImageSource,
  ) {
    this.reference = resolved.reference;
  }

  layer(digest: string): ImageLayer {
    const want = digest.toLowerCase().replace(/^sha256:/, '');
    const found = want.length >= 4 ? this.layers.filter((l) => l.descriptor.digest.slice('sha256:'.length).startsWith(want)) : [];
    if (found.length === 1) return found[0]!;
    const list = this.layers.map((l) => `  ${l.index}: ${l.descriptor.digest}`).join('\n');
    throw new TocfsError(`${found.length > 1 ? `layer ${digest} is ambiguous` : `image ${this.reference} has no layer ${digest}`}; its layers (bottom first):\n${list}`);
  }

  tree(layerDigest?: string): FsTree {
    if (layerDigest === undefined) {
      this.merged ??= mergeLayers(this.layers.map((l) => l.toc));
      return this.merged;
    }
    const layer = this.layer(layerDigest);
    let t = this.own.get(layer.index);
    if (!t) {
      t = buildLayerTree(layer.toc, layer.index);
      this.own.set(layer.index, t);
    }
    return t;
  }

  readFile(node: FsNode, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const layer = this.layers[node.layer];
    if (!layer) return Promise.reject(new TocfsError(`no layer ${node.layer} in ${this.reference}`));
    return layer.reader.readAt(node.entry, offset, length, signal);
  }

  async close(): Promise<void> {
    await this.cache.flush().catch(() => undefined);
    await this.source.close();
  }
}
