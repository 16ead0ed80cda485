/**
 * Opening one layer for reading, the one way the mount (image/image.ts) and the layer store
 * (store/layers.ts) both do it: the blob with its wrappers (metrics, remembered tail, read
 * counting), the layer's TOC (verified, from the TOC store when read before), and a
 * LayerReader over the shared chunk cache carrying every fetch.* setting. A setting added
 * to LayerFetchSettings reaches both paths through here.
 */
import type { Logger } from 'pino';
import { ChunkCache } from '../cache/chunk-cache.js';
import { DiskTocStore, type ParsedTocStore } from '../cache/toc-store.js';
import { DigestMismatchError, FormatError, TocfsError } from '../errors.js';
import { DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REQUEST_BYTES, LayerReader, type LayerFetchSettings } from '../fetch/layer-reader.js';
import { MIN_REQUEST_BYTES } from '../fetch/link-estimate.js';
import { parseLayerAnnotations } from '../formats/annotations.js';
import { NoTocError, probeLayer, readLayerTocParsed, type LayerToc, type TocStore } from '../formats/index.js';
import { sniffCodec } from '../formats/detect.js';
import { indexPlainLayer } from '../formats/plain.js';
import { decodePlainIndex, encodePlainIndex, loadPlainIndex, savePlainIndex } from '../formats/plain-index.js';
import { decodeParsedToc, isCurrentParsedToc, PARSED_TOC_VERSION } from '../formats/toc-binary.js';
import { meteredBlob, metrics } from '../metrics/index.js';
import type { ReadCounter } from '../source/counting.js';
import { rememberTail } from '../source/tail-memo.js';
import type { BlobReader, Descriptor, ImageSource } from '../source/types.js';
import { firstDifference } from './compare-index.js';
import type { PublishedIndexes } from './published-index.js';

/** The settings of the read path below an opened layer (config `cache.*`, `fetch.*`). */
export interface ReadPathSettings {
  /** Chunk cache and TOC store directory. */
  cacheDir: string;
  /** Disk budget and memory tier of the chunk cache (ChunkCache defaults otherwise). */
  cacheMaxBytes?: number | undefined;
  cacheMemoryBytes?: number | undefined;
  /** daemon.memory: the resident memory the process keeps within (the memory tier gives way). */
  memoryBudget?: number | undefined;
  fetch?: LayerFetchSettings | undefined;
  /** Uncompressed bytes between gzip checkpoints when a plain gzip layer is indexed (index.checkpoint_spacing). */
  checkpointSpacing?: number | undefined;
  /** index.check_delay: when the whole-layer check of a layer served from a published index starts. */
  indexCheckDelayMs?: number | undefined;
}

export interface LayerOpenerOptions {
  cache: ChunkCache;
  tocStore: TocStore;
  /** Where parsed TOCs are kept (formats/toc-binary.ts), so a TOC is parsed once per cache, not once per open. */
  parsedTocs?: ParsedTocStore;
  /** fetch.* settings of every reader opened here (LayerReader's defaults for those not given). */
  fetch?: LayerFetchSettings;
  logger: Logger;
  /** Counts every blob read (for --stats and tests). */
  counter?: ReadCounter;
  checkpointSpacing?: number;
  /** How long after a layer is opened from a published index its whole-layer check starts (default 30 s). */
  indexCheckDelayMs?: number;
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
  /**
   * Where to look for a seekable index of a plain gzip layer (the image's trusted published
   * indexes). With one, such a layer is read lazily, by both the mount and the store.
   */
  published?: PublishedIndexes;
  /** Called with the index of a layer this opener had to index whole (for index.publish). */
  onIndexed?: (desc: Descriptor, index: Buffer) => void;
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

/** A layer's TOC as found: `lazy` as in OpenedLayer; `check` when it came from a published index and must be checked against the whole layer. */
interface FoundToc {
  toc: LayerToc;
  lazy: boolean;
  check?: boolean;
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

/**
 * A layer's requests in flight hold their compressed bytes and then the chunks they decompress
 * to, outside anything the memory tier can give back: under a daemon.memory budget they are
 * kept to a sixteenth of it per layer by capping the request size (never below 1 MiB).
 */
export function withinBudget(fetch: LayerFetchSettings, memoryBudget: number | undefined): LayerFetchSettings {
  if (!memoryBudget) return fetch;
  const perRequest = Math.floor(memoryBudget / 16 / (fetch.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT));
  const cap = Math.max(MIN_REQUEST_BYTES, perRequest);
  return { ...fetch, maxRequestBytes: Math.min(fetch.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES, cap) };
}

export class LayerOpener {
  readonly cache: ChunkCache;
  readonly fetch: LayerFetchSettings;
  private readonly log: Logger;
  /** Parsed forms to keep, by context: each runs once, on its timer or at keepParsedTocs. */
  private readonly parsedPending = new Map<string, () => Promise<void>>();
  /** Parsed forms being written now (their timer fired): a process ending waits for them too. */
  private readonly parsedWriting = new Set<Promise<void>>();

  /** Opens the chunk cache and TOC store in `settings.cacheDir` and an opener over them. */
  static async create(settings: ReadPathSettings, logger: Logger, counter?: ReadCounter): Promise<LayerOpener> {
    const cache = await ChunkCache.open({
      dir: settings.cacheDir,
      logger,
      ...(settings.cacheMaxBytes !== undefined ? { maxBytes: settings.cacheMaxBytes } : {}),
      ...(settings.cacheMemoryBytes !== undefined ? { memoryBytes: settings.cacheMemoryBytes } : {}),
      ...(settings.memoryBudget !== undefined ? { processMemoryBudget: settings.memoryBudget } : {}),
    });
    const tocStore = new DiskTocStore(settings.cacheDir, logger);
    // Parsed TOCs of an older form are never read again (their context names its version).
    // Awaited, so that no write into the cache outlives a short command: once the cache
    // remembers this form, it is one small read.
    await tocStore.dropStaleParsed(`tocfsPTC ${PARSED_TOC_VERSION}`, (head) => !isCurrentParsedToc(head)).then(
      (dropped) => dropped > 0 && logger.info({ dropped, version: PARSED_TOC_VERSION }, 'removed parsed TOCs of an older form from the cache'),
      (e: unknown) => logger.debug({ err: e }, 'cannot look for parsed TOCs of an older form'),
    );
    return new LayerOpener({
      cache,
      tocStore,
      parsedTocs: tocStore,
      logger,
      ...(settings.fetch || settings.memoryBudget ? { fetch: withinBudget(settings.fetch ?? {}, settings.memoryBudget) } : {}),
      ...(counter ? { counter } : {}),
      ...(settings.checkpointSpacing !== undefined ? { checkpointSpacing: settings.checkpointSpacing } : {}),
      ...(settings.indexCheckDelayMs !== undefined ? { indexCheckDelayMs: settings.indexCheckDelayMs } : {}),
    });
  }

  constructor(private readonly opts: LayerOpenerOptions) {
    this.cache = opts.cache;
    this.fetch = definedOnly(opts.fetch ?? {});
    this.log = opts.logger;
  }

  async open(source: ImageSource, descriptor: Descriptor, how: OpenLayerOptions): Promise<OpenedLayer> {
    const raw = meteredBlob(source.blob(descriptor));
    const blob = rememberTail(this.opts.counter ? this.opts.counter.wrap(raw) : raw);
    const found = how.withoutToc === 'index' ? await this.tocOrIndex(descriptor, blob, how) : await this.vouchedTocOrIndex(descriptor, blob, how.published);
    const { toc, lazy } = found;
    // Pieces of a TOC-less layer that no gzip checkpoint reaches live only in the cache: if some were evicted, index again.
    const reindex = toc.format === 'none' ? { reindex: () => this.indexWhole(descriptor, blob) } : {};
    const log = how.logger ?? this.log;
    const reader = new LayerReader({ layerDigest: descriptor.digest, toc, blob, cache: this.cache, logger: log, ...reindex, ...this.fetch });
    if (found.check) this.checkInBackground(descriptor, blob, toc, reader, log);
    return { descriptor, blob, toc, reader, lazy };
  }

  /** The store's way: a TOC the annotations vouch for, or for a layer without one, a seekable index (built here, or published and trusted). */
  private async vouchedTocOrIndex(desc: Descriptor, blob: BlobReader, published: PublishedIndexes | undefined): Promise<FoundToc> {
    if (tocDigestsOf(desc).length > 0) return { toc: await this.vouchedToc(desc, blob), lazy: true };
    const stored = await this.storedIndex(desc);
    if (stored?.checkpoints) return { toc: stored, lazy: true };
    const fromPublished = await this.publishedIndex(desc, published);
    if (fromPublished) return fromPublished;
    throw new NotLazyError(`layer ${desc.digest} (${desc.mediaType}) has no TOC digest annotation and no seekable index: it cannot be served lazily and verified`);
  }

  /** A trusted published index of `desc`, parsed and checked against the descriptor; undefined (with a warning) when there is none or it is malformed. */
  private async publishedIndex(desc: Descriptor, published: PublishedIndexes | undefined): Promise<FoundToc | undefined> {
    const bytes = await published?.forLayer(desc);
    if (!bytes) return undefined;
    try {
      const toc = decodePlainIndex(desc, bytes);
      if (!toc.checkpoints || toc.compression !== 'gzip') throw new FormatError('it has no gzip checkpoints');
      this.log.info({ layer: desc.digest, repository: published!.repository, entries: toc.entries.length, checkpoints: toc.checkpoints.length }, 'serving a plain gzip layer lazily from its published seekable index (checked against the whole layer in the background)');
      return { toc, lazy: true, check: true };
    } catch (e) {
      this.log.warn({ layer: desc.digest, repository: published!.repository, reason: (e as Error).message }, 'published seekable index not used: fetching the layer whole');
      return undefined;
    }
  }

  /**
   * Reads the whole layer at low priority and checks that the published index it is served
   * from says what the layer holds. A layer that does not match stops at once (every read fails
   * from then on); one that does gets the index rebuilt here kept, so it is trusted from now on.
   */
  private checkInBackground(desc: Descriptor, blob: BlobReader, published: LayerToc, reader: LayerReader, log: Logger): void {
    const started = Date.now();
    const timer = setTimeout(() => {
      void (async () => {
        let rebuilt: LayerToc;
        try {
          rebuilt = await this.indexIntoCache(desc, blob);
        } catch (e) {
          if (e instanceof DigestMismatchError || e instanceof FormatError) {
            reader.stop(`layer ${desc.digest}: the layer itself failed its check (${(e as Error).message}); its reads fail from now on`);
            metrics.verificationFailed(desc.digest, 'blob');
            log.error({ layer: desc.digest, err: (e as Error).message }, 'layer served from a published index failed its whole-layer check: stopped');
          } else log.warn({ layer: desc.digest, err: (e as Error).message }, 'could not read the whole layer to check its published index (reads go on; checked again at the next open)');
          return;
        }
        const difference = firstDifference(published, rebuilt);
        if (difference) {
          reader.stop(`layer ${desc.digest}: its published seekable index does not match the layer (${difference}); reads fail from now on — remove the repository from index.trust or republish the index`);
          metrics.verificationFailed(desc.digest, 'toc');
          log.error({ layer: desc.digest, difference }, 'PUBLISHED INDEX DOES NOT MATCH THE LAYER: the layer is stopped (EIO) and the index dropped');
          return;
        }
        await savePlainIndex(this.opts.tocStore, desc, rebuilt);
        log.info({ layer: desc.digest, ms: Date.now() - started }, 'published seekable index checked against the whole layer: it matches');
      })();
    }, this.opts.indexCheckDelayMs ?? 30_000);
    timer.unref();
  }

  /**
   * The layer's TOC in its parsed form (formats/toc-binary.ts), the form layers are served
   * from: the cache's when it holds one made for this very descriptor, else readLayerToc's
   * normalised straight into it, and kept on disk shortly after (off the open's path).
   */
  private async readToc(desc: Descriptor, blob: BlobReader): Promise<LayerToc> {
    const started = performance.now();
    const parsedTocs = this.opts.parsedTocs;
    const context = parsedTocs && tocDigestsOf(desc).length > 0 ? parsedTocContext(desc, blob.size) : undefined;
    if (parsedTocs && context) {
      const toc = await this.loadParsed(parsedTocs, desc, context);
      if (toc) {
        this.log.debug({ layer: desc.digest, entries: toc.entries.length, ms: Math.round(performance.now() - started) }, 'TOC read from its parsed form');
        return toc;
      }
    }
    // The parsed form is also the form kept in memory: a third of the heap of the entry objects.
    const { toc, parsed } = await readLayerTocParsed(desc, blob, context ?? '', { tocStore: this.opts.tocStore });
    this.log.debug({ layer: desc.digest, entries: toc.entries.length, ms: Math.round(performance.now() - started) }, 'TOC read and parsed');
    if (parsedTocs && context && toc.verified && !this.parsedPending.has(context)) {
      const keep = (): Promise<void> => {
        clearTimeout(timer);
        this.parsedPending.delete(context);
        const writing = this.keepParsed(parsedTocs, desc, context, parsed).finally(() => this.parsedWriting.delete(writing));
        this.parsedWriting.add(writing);
        return writing;
      };
      const timer = setTimeout(() => void keep(), Math.max(PARSED_SAVE_DELAY_MS, 2 * (performance.now() - started)));
      timer.unref();
      this.parsedPending.set(context, keep);
    }
    return toc;
  }

  /**
   * Keeps now the parsed forms of TOCs read afresh that are still waiting for their turn, and
   * waits for those being written (before the process ends: a write cut short is lost, and
   * the next open parses the TOC again).
   */
  async keepParsedTocs(): Promise<void> {
    await Promise.all([...[...this.parsedPending.values()].map((keep) => keep()), ...this.parsedWriting]);
  }

  private async loadParsed(parsedTocs: ParsedTocStore, desc: Descriptor, context: string): Promise<LayerToc | undefined> {
    const bytes = await parsedTocs.getParsed(context);
    if (!bytes) return undefined;
    try {
      const toc = decodeParsedToc(bytes, context);
      if (toc && toc.verified && toc.tocDigest !== undefined && tocDigestsOf(desc).includes(toc.tocDigest)) return toc;
    } catch (e) {
      this.log.warn({ layer: desc.digest, err: (e as Error).message }, 'parsed TOC unreadable: not used');
    }
    return undefined;
  }

  private async keepParsed(parsedTocs: ParsedTocStore, desc: Descriptor, context: string, bytes: Buffer): Promise<void> {
    const started = performance.now();
    await parsedTocs.putParsed(context, bytes).catch((e: unknown) => this.log.warn({ layer: desc.digest, err: (e as Error).message }, 'cannot keep the parsed TOC'));
    this.log.debug({ layer: desc.digest, bytes: bytes.length, ms: Math.round(performance.now() - started) }, 'kept the parsed TOC');
  }

  /** The layer's TOC, which its annotations must vouch for. */
  private async vouchedToc(desc: Descriptor, blob: BlobReader): Promise<LayerToc> {
    if (tocDigestsOf(desc).length === 0) throw new NotLazyError(`layer ${desc.digest} (${desc.mediaType}) has no TOC digest annotation: it cannot be served lazily and verified`);
    const toc = await this.readToc(desc, blob).catch((e: unknown) => {
      metrics.ifMismatch(e, desc.digest, 'toc');
      throw e;
    });
    if (!toc.verified || toc.format === 'none') throw new NotLazyError(`layer ${desc.digest}: its TOC is not vouched for by the layer's annotations`);
    return toc;
  }

  /** The layer's TOC; a layer without a usable one is read from a published index, or else indexed from its whole blob. */
  private async tocOrIndex(desc: Descriptor, blob: BlobReader, how: OpenLayerOptions): Promise<FoundToc> {
    // A layer indexed whole before: its stored index, without touching the blob.
    const stored = await this.storedIndex(desc);
    if (stored) return { toc: stored, lazy: false };
    try {
      return { toc: await this.readToc(desc, blob), lazy: true };
    } catch (e) {
      metrics.ifMismatch(e, desc.digest, 'toc');
      if (!(e instanceof NoTocError)) {
        // A TOC nothing vouches for is not trusted; a vouched-for TOC that fails is an error.
        const probe = await probeLayer(desc, blob).catch(() => undefined);
        if (!probe || probe.verifiable) throw e;
      }
      const fromPublished = await this.publishedIndex(desc, how.published);
      if (fromPublished) return fromPublished;
      this.log.warn({ layer: desc.digest, reason: (e as Error).message }, 'layer has no usable TOC: fetching and verifying the whole blob once (not lazy)');
      const toc = await this.indexWhole(desc, blob);
      await savePlainIndex(this.opts.tocStore, desc, toc);
      if (toc.checkpoints) how.onIndexed?.(desc, encodePlainIndex(desc, toc));
      return { toc, lazy: false };
    }
  }

  /**
   * The seekable index of a plain layer (`tocfs index`): the one kept from an earlier whole
   * read when it has checkpoints, else built now from the whole blob (verified; its pieces go
   * into the cache) and kept. Refused for layers with a TOC, which need none; undefined for
   * layers that are not gzip (plain zstd and tar get no checkpoints).
   */
  async seekableIndex(source: ImageSource, desc: Descriptor, onProgress?: (bytes: number) => void): Promise<{ toc: LayerToc; bytes: Buffer; built: boolean } | undefined> {
    if (tocDigestsOf(desc).length > 0) throw new NotLazyError(`layer ${desc.digest} has a TOC: it is read lazily without an index`);
    const stored = await loadPlainIndex(this.opts.tocStore, desc);
    if (stored.toc?.checkpoints && stored.toc.uncompressedDigest) return { toc: stored.toc, bytes: encodePlainIndex(desc, stored.toc), built: false };
    const blob = meteredBlob(source.blob(desc));
    if (sniffCodec(await blob.read(0, Math.min(desc.size, 512))) !== 'gzip') return undefined;
    const toc = await this.indexIntoCache(desc, blob, onProgress);
    await savePlainIndex(this.opts.tocStore, desc, toc);
    return { toc, bytes: encodePlainIndex(desc, toc), built: true };
  }

  /** The index kept from an earlier whole read of a layer without TOC; one that fails its checks is not used (and said so). */
  private async storedIndex(desc: Descriptor): Promise<LayerToc | undefined> {
    const stored = await loadPlainIndex(this.opts.tocStore, desc);
    if (stored.rejected) this.log.warn({ layer: desc.digest, reason: stored.rejected }, 'stored index of a layer without TOC not used');
    return stored.toc;
  }

  /** Reads the whole blob, verifies it and indexes it (index.checkpoint_spacing), every file's pieces into the cache. */
  private indexIntoCache(desc: Descriptor, blob: BlobReader, onProgress?: (bytes: number) => void): Promise<LayerToc> {
    return indexPlainLayer(desc, blob, (digest, data) => this.cache.put(digest, data), onProgress, this.opts.checkpointSpacing);
  }

  /** Fetches the whole blob once, verifies it and puts every file's pieces into the cache. */
  private async indexWhole(desc: Descriptor, blob: BlobReader): Promise<LayerToc> {
    let lastLog = Date.now();
    const toc = await this.indexIntoCache(desc, blob, (bytes) => {
      if (Date.now() - lastLog < 2000) return;
      lastLog = Date.now();
      this.log.info({ layer: desc.digest, bytes, total: desc.size }, 'indexing layer without TOC');
    });
    this.log.info({ layer: desc.digest, entries: toc.entries.length, bytes: desc.size }, 'indexed layer without TOC: served from the cache');
    return toc;
  }
}

/**
 * After a TOC is read afresh, its parsed form is made and kept this much later (or twice as
 * long as the read took): off the path of the mount or lookup that waits for the TOC.
 */
const PARSED_SAVE_DELAY_MS = 1000;

/**
 * What a parsed TOC is made from besides the blob (which the layer digest names): the
 * descriptor, whose annotations locate and vouch for the TOC, and the form's version. A parsed
 * TOC is used only for an identical context.
 */
function parsedTocContext(desc: Descriptor, blobSize: number): string {
  const annotations = Object.entries(desc.annotations ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify({ version: PARSED_TOC_VERSION, layer: desc.digest, mediaType: desc.mediaType, size: blobSize, annotations });
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
