/**
 * An image opened for reading: its layers, their merged tree, and file reads by tree node.
 *
 * openImage resolves the reference and opens every layer with layer/open.ts (TOC and
 * LayerReader over the shared chunk cache). Layers without a usable TOC are fetched whole
 * once, verified and indexed into the cache (not lazy).
 */
import type { Logger } from 'pino';
import { defaultCacheDir, type ChunkCache } from '../cache/chunk-cache.js';
import { TocfsError } from '../errors.js';
import { LayerOpener, type OpenedLayer, type ReadPathSettings } from '../layer/open.js';
import { PublishedIndexes, pushIndexes, type IndexedImage } from '../layer/published-index.js';
import { logger as rootLogger } from '../log.js';
import type { SourceOptions } from '../registry/options.js';
import type { ReadCounter } from '../source/counting.js';
import type { ImageSource, Platform, ResolvedImage } from '../source/types.js';
import type { RegistryClientOptions } from '../registry/options.js';
import { openImageSource } from './open.js';
import { buildLayerTree, mergeLayers, type FsNode, type FsTree } from './tree.js';

/** cacheDir defaults to defaultCacheDir(). */
export interface OpenImageOptions extends Partial<ReadPathSettings> {
  tlsVerify?: boolean;
  platform?: Platform;
  /** Registry client settings (config files, credentials, retries); its defaults otherwise. */
  registry?: RegistryClientOptions;
  /** Counts every blob read (for --stats and tests). */
  counter?: ReadCounter;
  logger?: Logger;
  /** index.trust and index.publish: published seekable indexes of plain gzip layers. */
  index?: { trust: readonly string[]; publish: boolean };
}

export interface ImageLayer extends OpenedLayer {
  /** Position in the image, bottom = 0. */
  index: number;
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
  /** Like readFile, into `into`; synchronous when the bytes are in memory (LayerReader.readInto). */
  readFileInto(node: FsNode, offset: number, length: number, into: Buffer): number | Promise<number>;
  /** The cache file with a regular file's whole content, once all of it is cached (LayerReader.wholeFile). */
  wholeFile(node: FsNode): Promise<string | undefined>;
  close(): Promise<void>;
}

export async function openImage(reference: string, opts: OpenImageOptions = {}): Promise<OpenedImage> {
  const log = opts.logger ?? rootLogger();
  const source: ImageSource = await openImageSource(reference, {
    ...(opts.tlsVerify !== undefined ? { tlsVerify: opts.tlsVerify } : {}),
    ...(opts.platform ? { platform: opts.platform } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  try {
    const resolved = await source.resolve();
    const opener = await LayerOpener.create({ ...opts, cacheDir: opts.cacheDir ?? defaultCacheDir() }, log, opts.counter);
    // Readers' warnings (a chunk failing verification) name the image; they name layer and path themselves.
    const readerLog = log.child({ image: resolved.reference });
    const sourceOptions = { ...(opts.tlsVerify !== undefined ? { tlsVerify: opts.tlsVerify } : {}), ...(opts.registry ? { registry: opts.registry } : {}) };
    const image = { reference: resolved.reference, manifestDigest: resolved.manifestDigest };
    const published = new PublishedIndexes(image, opts.index?.trust ?? [], sourceOptions, log);
    const built: Array<{ layer: string; bytes: Buffer }> = [];
    const layers = await Promise.all(
      resolved.layers.map(
        async (descriptor, index): Promise<ImageLayer> => ({
          index,
          ...(await opener.open(source, descriptor, { withoutToc: 'index', logger: readerLog, published, onIndexed: (d, bytes) => built.push({ layer: d.digest, bytes }) })),
        }),
      ),
    );
    if (opts.index?.publish && built.length > 0) publishInBackground(image, built, sourceOptions, log);
    return new Image(resolved, layers, opener, source);
  } catch (e) {
    await source.close().catch(() => undefined);
    throw e;
  }
}

/** index.publish: the indexes of layers this mount had to fetch whole, pushed beside the image; a failure is a warning. */
function publishInBackground(image: IndexedImage, built: Array<{ layer: string; bytes: Buffer }>, sourceOptions: SourceOptions, log: Logger): void {
  pushIndexes(image, built, sourceOptions).then(
    (pushed) => log.info({ image: image.reference, repository: pushed.repository, artifact: pushed.manifestDigest, layers: built.length }, 'published the seekable indexes of the layers indexed whole'),
    (e: unknown) => log.warn({ image: image.reference, err: (e as Error).message }, 'could not publish the seekable indexes (index.publish)'),
  );
}

class Image implements OpenedImage {
  readonly reference: string;
  private merged: FsTree | undefined;
  private readonly own = new Map<number, FsTree>();
  readonly cache: ChunkCache;

  constructor(
    readonly resolved: ResolvedImage,
    readonly layers: ImageLayer[],
    private readonly opener: LayerOpener,
    private readonly source: ImageSource,
  ) {
    this.reference = resolved.reference;
    this.cache = opener.cache;
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

  readFileInto(node: FsNode, offset: number, length: number, into: Buffer): number | Promise<number> {
    const layer = this.layers[node.layer];
    if (!layer) return Promise.reject(new TocfsError(`no layer ${node.layer} in ${this.reference}`));
    return layer.reader.readInto(node.entry, offset, length, into);
  }

  wholeFile(node: FsNode): Promise<string | undefined> {
    return this.layers[node.layer]?.reader.wholeFile(node.entry) ?? Promise.resolve(undefined);
  }

  async close(): Promise<void> {
    await this.opener.keepParsedTocs().catch(() => undefined);
    await this.cache.flush().catch(() => undefined);
    await this.source.close();
  }
}
