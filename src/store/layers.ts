/**
 * What the layer store knows: image references resolved on first lookup, the layers found
 * in them by key (compressed blob digest or TOC digest), their verified TOCs and trees, and
 * the use counts Podman sends (UseCounts: durable across restarts when given a journal).
 * One LayerStore serves every image; layer content (TOC, tree, reader) is shared by blob
 * digest, and every reader shares one chunk cache.
 *
 * A lookup either yields a layer whose `info`, `diff` and `blob` are complete, or a
 * StoreMiss saying why not (Podman then pulls the layer itself). Misses are remembered for
 * `negativeTtlMs`; a lookup never waits longer than `lookupTimeoutMs` (the resolution goes
 * on in the background and a later lookup finds its result).
 */
import type { Logger } from 'pino';
import { isDigest } from '../digest.js';
import { preview, TocfsError } from '../errors.js';
import type { LayerReader } from '../fetch/layer-reader.js';
import { prefetchLandmark } from '../fetch/prefetch.js';
import type { LayerToc } from '../formats/index.js';
import { formatPlatform } from '../source/manifest.js';
import { openImageSource, type SourceOptions } from '../image/open.js';
import { buildLayerTree, mergeLayers, type FsTree } from '../image/tree.js';
import { LayerOpener, NotLazyError, tocDigestsOf } from '../layer/open.js';
import { PublishedIndexes } from '../layer/published-index.js';
import { metrics } from '../metrics/index.js';
import type { ImageProfiles, ImageProfileStatus, StartupProfiles } from '../profile/session.js';
import { recordedImage } from '../profile/recorder.js';
import { registryDownCause } from '../registry/health.js';
import type { BlobReader, Descriptor, ImageSource, ResolvedImage } from '../source/types.js';
import { DEFAULT_LOOKUP_TIMEOUT_MS, DEFAULT_NEGATIVE_TTL_MS } from './defaults.js';
import { layerInfo, type LayerInfo } from './info.js';
import { UseCounts, type RememberedLayer } from './use-counts.js';


/** Inode numbers: each tree gets its own range so layers on the one store mount never share an st_ino (overlayfs sees them all on one device). */
export const INODE_SLOT_BITS = 22;
const MAX_SLOTS = 2 ** (32 - INODE_SLOT_BITS);

/** The store cannot serve this (ref, key): the answer is ENOENT and Podman pulls normally. */
export class StoreMiss extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ENOENT', options);
    this.name = 'StoreMiss';
  }
}

export interface LayerStoreOptions {
  /** Opens every layer the store serves (cache, TOC store, fetch.* settings). */
  opener: LayerOpener;
  source: SourceOptions;
  logger: Logger;
  lookupTimeoutMs?: number;
  negativeTtlMs?: number;
  /**
   * 'landmark' (default): when a layer is first looked up, fetch the files its eStargz
   * prefetch landmark marks, in one request in the background (reads join it); 'none': only what is read.
   */
  prefetch?: 'landmark' | 'none';
  /** Start-up profiles: replayed when a layer of an image is first looked up, recorded at an image's first use. */
  profiles?: StartupProfiles;
  /** Use counts (default: in memory only). */
  uses?: UseCounts;
  /** index.trust: repositories whose published seekable indexes make plain gzip layers servable. */
  indexTrust?: readonly string[];
}

/** One layer blob's lazily readable content, shared by every reference that names it. */
export class LayerContent {
  /** Bytes read through `blob` files (exports). */
  blobBytesRead = 0;
  lastError: string | undefined;
  /** First inode number of the layer's own tree (its nodes are numbered from 1). */
  readonly inoBase: number;

  constructor(
    readonly descriptor: Descriptor,
    readonly blob: BlobReader,
    readonly toc: LayerToc,
    readonly reader: LayerReader,
    /** The layer's own tree in overlayfs form (0:0 whiteout devices, opaque xattrs). */
    readonly diff: FsTree,
    slot: number,
  ) {
    this.inoBase = slot * 2 ** INODE_SLOT_BITS;
  }

  /** The cache file with a regular file's whole content, once all of it is cached (LayerReader.wholeFile). */
  wholeFile(entry: Parameters<LayerReader['wholeFile']>[0]): Promise<string | undefined> {
    return this.reader.wholeFile(entry);
  }

  /** Reads file content into `into` (LayerReader.readInto), remembering the last failure for `tocfs store status`. */
  readInto(entry: Parameters<LayerReader['readAt']>[0], offset: number, length: number, into: Buffer): number | Promise<number> {
    const noteFailure = (e: unknown): never => {
      this.lastError = (e as Error).message;
      throw e;
    };
    try {
      const n = this.reader.readInto(entry, offset, length, into);
      return typeof n === 'number' ? n : n.catch(noteFailure);
    } catch (e) {
      return noteFailure(e);
    }
  }
}

/** A (reference, key) the store serves: what the `<base64 ref>/<key>/` directory shows. */
export class StoreLayer {
  readonly info: LayerInfo;
  readonly infoBytes: Buffer;
  chain: Promise<{ tree: FsTree; contents: LayerContent[]; inoBase: number }> | undefined;

  constructor(
    readonly ref: string,
    readonly key: string,
    readonly image: ResolvedImage,
    readonly index: number,
    readonly content: LayerContent,
    diffId: string,
  ) {
    this.info = layerInfo(content.descriptor, diffId, content.toc, key);
    this.infoBytes = Buffer.from(JSON.stringify(this.info));
  }
}

/** A reference's source and the platform images resolved from it so far. */
interface StoreImage {
  ref: string;
  source: ImageSource;
  /** The default platform's image first, then others as keys ask for them. */
  versions: ResolvedImage[];
  /** Manifest digests of the index not resolved yet. */
  unresolved: Descriptor[];
  resolvedAt: number;
  /** Start-up profiles by manifest digest (one per platform image used). */
  profiles: Map<string, ImageProfiles>;
  /** Published seekable indexes by manifest digest (looked up at a plain gzip layer's first lookup). */
  indexes: Map<string, PublishedIndexes>;
}

interface Miss {
  error: StoreMiss;
  until: number;
}

export interface LayerStatus {
  ref: string;
  key: string;
  digest: string;
  platform: string;
  format: string;
  uses: number;
  size: number;
  fetchedBytes: number;
  fetchedPercent: number;
  blobBytesRead: number;
  lastError?: string;
  /**
   * 'served': looked up since the store started. 'remembered': only known from the use
   * counts of an earlier run (digest, format, size and platform as then; nothing fetched
   * counted yet) until Podman looks it up again.
   */
  state: 'served' | 'remembered';
}

export interface StoreStatus {
  images: Array<{ ref: string; manifest: string; platform: string; profile?: ImageProfileStatus }>;
  layers: LayerStatus[];
  misses: Array<{ ref: string; key: string; reason: string }>;
}

/** A lookup that took longer than its bound. */
export class LookupTimeout extends StoreMiss {}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LookupTimeout(`${what}: not resolved within ${ms} ms (still trying in the background)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function rememberedOf(layer: StoreLayer): RememberedLayer {
  return { digest: layer.content.descriptor.digest, size: layer.content.descriptor.size, format: layer.content.toc.format, platform: formatPlatform(layer.image.platform) };
}

function asMiss(e: unknown, what: string): StoreMiss {
  if (e instanceof StoreMiss) return e;
  return new StoreMiss(`${what}: ${(e as Error).message}`, { cause: e });
}

export class LayerStore {
  private readonly log: Logger;
  private readonly lookupTimeoutMs: number;
  private readonly negativeTtlMs: number;
  private readonly images = new Map<string, Promise<StoreImage>>();
  /** Every image resolved so far, replaced ones too (their sources stay open for the layers read through them). */
  private readonly resolved: StoreImage[] = [];
  private readonly layers = new Map<string, StoreLayer>();
  private readonly pending = new Map<string, Promise<StoreLayer>>();
  private readonly misses = new Map<string, Miss>();
  private readonly contents = new Map<string, Promise<LayerContent>>();
  private nextSlot = 1;
  private readonly uses: UseCounts;

  constructor(private readonly opts: LayerStoreOptions) {
    this.log = opts.logger;
    this.uses = opts.uses ?? UseCounts.inMemory(opts.logger);
    this.lookupTimeoutMs = opts.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
    this.negativeTtlMs = opts.negativeTtlMs ?? DEFAULT_NEGATIVE_TTL_MS;
  }

  /** A layer already resolved (no I/O). */
  peek(ref: string, key: string): StoreLayer | undefined {
    return this.layers.get(`${ref}\n${key}`);
  }

  /** Every layer served so far, for listings. */
  known(): StoreLayer[] {
    return [...this.layers.values()];
  }

  /** References looked up so far. */
  refs(): string[] {
    return [...this.images.keys()];
  }

  /** The layer `key` of image `ref`, resolving what it must (bounded); rejects with StoreMiss. */
  lookup(ref: string, key: string): Promise<StoreLayer> {
    const id = `${ref}\n${key}`;
    const done = this.layers.get(id);
    if (done) return Promise.resolve(done);
    const miss = this.misses.get(id);
    if (miss && miss.until > Date.now()) return Promise.reject(miss.error);
    let p = this.pending.get(id);
    if (!p) {
      p = this.resolveLayer(ref, key).then(
        (layer) => {
          this.pending.delete(id);
          this.misses.delete(id);
          this.layers.set(id, layer);
          this.log.info({ ref, key, layer: layer.content.descriptor.digest, format: layer.content.toc.format, platform: formatPlatform(layer.image.platform) }, 'serving layer');
          return layer;
        },
        (e: unknown) => {
          this.pending.delete(id);
          const error = asMiss(e, `${ref} ${key}`);
          // While the registry is down every lookup fails at once anyway; remembering that
          // would only keep answering "not here" for negativeTtlMs after it is back.
          if (!registryDownCause(e)) this.misses.set(id, { error, until: Date.now() + this.negativeTtlMs });
          this.log.info({ ref, key, reason: error.message }, 'not serving layer (Podman pulls it itself)');
          throw error;
        },
      );
      this.pending.set(id, p);
    }
    return withTimeout(p, this.lookupTimeoutMs, `${ref} ${key}`).catch((e: unknown) => {
      if (e instanceof LookupTimeout) {
        // Fast answers until the resolution going on in the background settles (it replaces this miss).
        if (!this.layers.has(id)) this.misses.set(id, { error: e, until: Date.now() + this.negativeTtlMs });
        this.log.info({ ref, key, reason: e.message }, 'lookup gave up: answering ENOENT (Podman pulls the layer itself)');
      }
      throw e;
    });
  }

  /** The image a reference names (default platform), for the `manifest` and `config` views. */
  async image(ref: string): Promise<ResolvedImage> {
    return (await withTimeout(this.imageFor(ref), this.lookupTimeoutMs, ref)).versions[0]!;
  }

  /** The use count of (ref, key), whether looked up since the start or remembered from before. */
  usesOf(ref: string, key: string): number {
    return this.uses.get(ref, key);
  }

  /**
   * `use` notification: +1 for a layer served since the start or counted before a restart;
   * ignored for any other (Podman looks a layer up before it uses it). Resolves once the
   * count is durable.
   */
  use(ref: string, key: string): Promise<void> {
    return this.count(ref, key, +1, 'use');
  }

  /** Release notification (rmdir): −1, never below 0; ignored for a layer with no count. Resolves once durable. */
  release(ref: string, key: string): Promise<void> {
    return this.count(ref, key, -1, 'release');
  }

  private count(ref: string, key: string, delta: number, what: 'use' | 'release'): Promise<void> {
    const layer = this.peek(ref, key);
    if (!layer && !this.uses.has(ref, key)) {
      this.log.debug({ ref, key }, `${what} of a layer neither served nor counted before: ignored`);
      return Promise.resolve();
    }
    const { uses, durable } = this.uses.change(ref, key, delta, layer && rememberedOf(layer));
    this.log.debug({ ref, key, uses, ...(layer ? {} : { lookedUp: false }) }, what);
    return durable;
  }

  /** The merged tree of layers bottom..`layer` of its image (debug view `chain/`). */
  chainOf(layer: StoreLayer): Promise<{ tree: FsTree; contents: LayerContent[]; inoBase: number }> {
    layer.chain ??= (async () => {
      const img = await this.imageFor(layer.ref);
      const contents = await Promise.all(layer.image.layers.slice(0, layer.index + 1).map((d, i) => this.contentFor(img.source, d, i, this.indexesOf(img, layer.image))));
      return { tree: mergeLayers(contents.map((c) => c.toc)), contents, inoBase: this.allocSlot() * 2 ** INODE_SLOT_BITS };
    })();
    layer.chain.catch(() => (layer.chain = undefined));
    return withTimeout(layer.chain, this.lookupTimeoutMs, `${layer.ref} ${layer.key} chain`);
  }

  async status(): Promise<StoreStatus> {
    const now = Date.now();
    const layers = this.known().map((l): LayerStatus => {
      const c = l.content;
      const s = c.reader.stats;
      return {
        ref: l.ref,
        key: l.key,
        digest: c.descriptor.digest,
        platform: formatPlatform(l.image.platform),
        format: c.toc.format,
        uses: this.uses.get(l.ref, l.key),
        size: c.descriptor.size,
        fetchedBytes: s.fetchedBytes,
        fetchedPercent: Math.round(s.fetchedPercent * 10) / 10,
        blobBytesRead: c.blobBytesRead,
        ...(c.lastError ? { lastError: c.lastError } : {}),
        state: 'served',
      };
    });
    for (const r of this.uses.entries()) {
      if (this.layers.has(`${r.ref}\n${r.key}`)) continue;
      const l = r.layer;
      layers.push({ ref: r.ref, key: r.key, digest: l?.digest ?? r.key, platform: l?.platform ?? '', format: l?.format ?? '', uses: r.uses, size: l?.size ?? 0, fetchedBytes: 0, fetchedPercent: 0, blobBytesRead: 0, state: 'remembered' });
    }
    const misses = [...this.misses.entries()].filter(([, m]) => m.until > now).map(([id, m]) => {
      const [ref, key] = id.split('\n') as [string, string];
      return { ref, key, reason: m.error.message };
    });
    const images: StoreStatus['images'] = [];
    for (const p of this.images.values()) {
      // Only resolved images: a resolution under way is not waited for.
      const img = await Promise.race([p, Promise.resolve(undefined)]).catch(() => undefined);
      for (const v of img?.versions ?? []) {
        const profile = img!.profiles.get(v.manifestDigest)?.status();
        images.push({ ref: img!.ref, manifest: v.manifestDigest, platform: formatPlatform(v.platform), ...(profile ? { profile } : {}) });
      }
    }
    return { images, layers, misses };
  }

  /**
   * Ends the recordings of start-up profiles (saving them) and closes the sources of every
   * image resolved, replaced ones included; resolutions still under way are abandoned (the
   * process is ending). Parsed TOCs not yet kept in the cache are kept first.
   */
  async close(): Promise<void> {
    for (const img of this.resolved.splice(0)) {
      for (const p of img.profiles.values()) await p.stop();
      await img.source.close().catch(() => undefined);
    }
    await this.opts.opener.keepParsedTocs().catch(() => undefined);
  }

  private allocSlot(): number {
    const slot = this.nextSlot;
    this.nextSlot = this.nextSlot + 1 >= MAX_SLOTS ? 1 : this.nextSlot + 1;
    return slot;
  }

  private imageFor(ref: string, refresh = false): Promise<StoreImage> {
    let p = this.images.get(ref);
    if (!p || refresh) {
      // A replaced source stays open: layers resolved through it still read their blobs with it.
      p = (async () => {
        const source = await openImageSource(ref, this.opts.source);
        try {
          const first = await source.resolve();
          const unresolved = (first.indexManifests ?? []).filter((m) => m.digest !== first.manifestDigest && m.platform && m.platform.os !== 'unknown');
          return { ref, source, versions: [first], unresolved, resolvedAt: Date.now(), profiles: new Map(), indexes: new Map() };
        } catch (e) {
          await source.close().catch(() => undefined);
          throw e;
        }
      })();
      this.images.set(ref, p);
      p.then((img) => this.resolved.push(img), () => undefined);
      // A failed resolution is retried by the next lookup after the negative TTL (the miss is cached per key).
      p.catch(() => {
        if (this.images.get(ref) === p) this.images.delete(ref);
      });
    }
    return p;
  }

  /** Finds the layer in the image's platforms: the default one first, then the index's others. */
  private async locate(img: StoreImage, key: string): Promise<{ image: ResolvedImage; index: number } | undefined> {
    const find = (image: ResolvedImage): number => image.layers.findIndex((d) => d.digest === key || tocDigestsOf(d).includes(key));
    for (const image of img.versions) {
      const index = find(image);
      if (index >= 0) return { image, index };
    }
    while (img.unresolved.length > 0) {
      const m = img.unresolved.shift()!;
      if (img.versions.some((v) => v.manifestDigest === m.digest)) continue;
      const image = await img.source.resolve({ platform: m.platform! });
      img.versions.push(image);
      const index = find(image);
      if (index >= 0) return { image, index };
    }
    return undefined;
  }

  private async resolveLayer(ref: string, key: string): Promise<StoreLayer> {
    let img = await this.imageFor(ref);
    let found = await this.locate(img, key);
    if (!found && Date.now() - img.resolvedAt > this.negativeTtlMs) {
      // The tag may have moved since it was resolved.
      img = await this.imageFor(ref, true);
      found = await this.locate(img, key);
    }
    if (!found) throw new StoreMiss(`${ref}: no layer with blob or TOC digest ${key} in ${img.versions.map((v) => `${v.manifestDigest} (${formatPlatform(v.platform)})`).join(', ')}`);
    const { image, index } = found;
    const diffIds = image.config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== image.layers.length)
      throw new StoreMiss(`${ref}: the config lists ${diffIds.length} diff_ids for ${image.layers.length} layers: cannot vouch for the layer's DiffID`);
    const diffId = diffIds[index]!;
    if (!isDigest(diffId)) throw new StoreMiss(`${ref}: config diff_ids[${index}] is not a sha256 digest: ${preview(diffId, 100)}`);
    const content = await this.contentFor(img.source, image.layers[index]!, index, this.indexesOf(img, image));
    // A layer served from a seekable index knows its real DiffID: Podman before 5.1 takes info's word for it.
    const actual = content.toc.uncompressedDigest;
    if (actual !== undefined && actual !== diffId) throw new StoreMiss(`${ref}: config diff_ids[${index}] is ${diffId}, but the layer's index says its DiffID is ${actual}`);
    this.profilesOf(img, image)?.layerOpened({ index, descriptor: content.descriptor, toc: content.toc, reader: content.reader });
    return new StoreLayer(ref, key, image, index, content, diffId);
  }

  /** The start-up profiles of one platform image of a reference, begun at its first layer lookup. */
  private profilesOf(img: StoreImage, image: ResolvedImage): ImageProfiles | undefined {
    if (!this.opts.profiles) return undefined;
    let p = img.profiles.get(image.manifestDigest);
    if (!p) {
      p = this.opts.profiles.begin(recordedImage(img.ref, image));
      img.profiles.set(image.manifestDigest, p);
    }
    return p;
  }

  /** The published seekable indexes of one platform image of a reference. */
  private indexesOf(img: StoreImage, image: ResolvedImage): PublishedIndexes {
    let p = img.indexes.get(image.manifestDigest);
    if (!p) {
      p = new PublishedIndexes({ reference: img.ref, manifestDigest: image.manifestDigest }, this.opts.indexTrust ?? [], this.opts.source, this.log);
      img.indexes.set(image.manifestDigest, p);
    }
    return p;
  }

  /** Reads (once per blob digest) a layer's verified TOC (or seekable index) and builds its tree and reader. */
  private contentFor(source: ImageSource, desc: Descriptor, index: number, published: PublishedIndexes): Promise<LayerContent> {
    let p = this.contents.get(desc.digest);
    if (!p) {
      p = (async () => {
        const { blob, toc, reader } = await this.opts.opener.open(source, desc, { withoutToc: 'refuse', published }).catch((e: unknown) => {
          throw e instanceof NotLazyError ? new StoreMiss(e.message, { cause: e }) : e;
        });
        if ((this.opts.prefetch ?? 'landmark') === 'landmark' && toc.prefetchEnd && !toc.noPrefetch) this.prefetch(reader);
        return new LayerContent(desc, blob, toc, reader, buildLayerTree(toc, index, { whiteouts: 'overlay' }), this.allocSlot());
      })();
      this.contents.set(desc.digest, p);
      p.catch(() => {
        if (this.contents.get(desc.digest) === p) this.contents.delete(desc.digest);
      });
    }
    return p;
  }

  /** Fetches the layer's eStargz landmark files in the background; a failure only costs the reads their own fetches. */
  private prefetch(reader: LayerReader): void {
    const started = Date.now();
    prefetchLandmark(reader).then(
      (bytes) => this.log.info({ layer: reader.layerDigest, bytes, ms: Date.now() - started }, 'prefetched the files before the eStargz landmark'),
      (err: unknown) => this.log.warn({ err, layer: reader.layerDigest }, 'landmark prefetch failed (reads fetch what they need)'),
    );
  }

  /** Drops metric series of every layer (at shutdown). */
  forgetMetrics(): void {
    for (const l of this.layers.values()) metrics.forgetLayer(l.content.descriptor.digest);
  }
}
