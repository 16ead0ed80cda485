/**
 * LayerReader: serves byte ranges of one layer's regular files from verified chunks.
 *
 * readAt finds the chunks that cover the range; zero chunks are made up, stored chunks are
 * read from the chunk store, and the missing ones are fetched by the layer's RangeFetcher
 * (coalescing, concurrency, priorities, deadlines), together with the read-ahead of files
 * read in order. Fetches are joined by chunk digest across every reader of the store
 * (in-flight.ts); each chunk is decompressed and verified against its TOC digest here before
 * it is stored or served, and a failure is reported to the waiting reads only, so a later
 * read retries.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { sha256 } from '../digest.js';
import { DigestMismatchError, FormatError } from '../errors.js';
import { extractChunk } from '../formats/chunk.js';
import { inflateFromCheckpoint } from '../formats/gzip/checkpoints.js';
import type { Chunk, LayerToc, TocEntry } from '../formats/toc.js';
import { logger as rootLogger } from '../log.js';
import { metrics } from '../metrics/index.js';
import type { BlobReader } from '../source/types.js';
import { formatDuration } from '../units.js';
import type { ChunkStore } from './chunk-store.js';
import { describeEntry, FetchTimeoutError, LayerReadError, ReadTimeoutError } from './errors.js';
import { inFlightFor, type InFlightChunks } from './in-flight.js';
import { BlobOrder, chunksCovering, firstNotBefore, type Located } from './plan.js';
import { RangeFetcher, type QueuedPriority, type RangeItem } from './range-fetcher.js';

export type { Located } from './plan.js';
export type { FetchPriority } from './range-fetcher.js';
export { LayerReadError } from './errors.js';

/** The cap; requests start at 1 MiB and grow toward it as the link's bandwidth-delay product asks (link-estimate.ts). */
export const DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024;
export const DEFAULT_READ_AHEAD = 32 * 1024 * 1024;
export const DEFAULT_MAX_IN_FLIGHT = 8;
/** Bytes between two chunks worth fetching to save a request (a request costs the registry ~3–5 ms). */
export const DEFAULT_MAX_GAP_BYTES = 16 * 1024;
export const DEFAULT_NEIGHBOUR_BYTES = 128 * 1024;

/** The settings of a LayerReader an operator tunes (config `fetch.*`); layer/open.ts passes them to every reader. */
export interface LayerFetchSettings {
  /** Cap for one coalesced range request (default 8 MiB; below it the size follows the link). */
  maxRequestBytes?: number | undefined;
  /** Largest gap between two chunks' compressed extents still bridged into one request (default 16 KiB). */
  maxGapBytes?: number | undefined;
  /** How far ahead (uncompressed bytes) a file read sequentially is fetched (default 32 MiB; 0 = off). */
  readAhead?: number | undefined;
  /** Range requests in flight for this layer (default 8). */
  maxInFlight?: number | undefined;
  /**
   * A read of a small file also fetches the small files that follow it in the layer, up to
   * this many compressed bytes in all (default 128 KiB; 0 = off): files of one directory
   * sit together in a layer and are often read one after another, each a round trip.
   */
  neighbourBytes?: number | undefined;
  /**
   * A read still waiting for its content after this long fails, and a range fetch (its
   * retries included) still unfinished after this long is given up (default: no limit).
   * Without the fetch limit a later read of the same chunks would join the stuck fetch
   * instead of fetching afresh.
   */
  fetchTimeoutMs?: number | undefined;
}

/** Every key of LayerFetchSettings (the compiler checks the list is complete). */
export const FETCH_SETTING_KEYS = ['maxRequestBytes', 'maxGapBytes', 'readAhead', 'maxInFlight', 'neighbourBytes', 'fetchTimeoutMs'] as const satisfies ReadonlyArray<keyof LayerFetchSettings>;
const allKeysListed: Exclude<keyof LayerFetchSettings, (typeof FETCH_SETTING_KEYS)[number]> extends never ? true : never = true;
void allKeysListed;

export interface LayerReaderOptions extends LayerFetchSettings {
  layerDigest: string;
  toc: LayerToc;
  blob: BlobReader;
  /** Where verified chunks are kept; readers over one store share its in-flight fetches. */
  cache: ChunkStore;
  logger?: Logger;
  /**
   * Layers without a TOC (format 'none'): re-runs the indexer that put every chunk into the
   * cache, for when some were evicted. Called at most once at a time.
   */
  reindex?: () => Promise<unknown>;
}

export interface LayerReaderStats {
  /** Compressed bytes fetched from the blob. */
  fetchedBytes: number;
  fetchedRequests: number;
  /** Bytes returned by readAt. */
  servedBytes: number;
  /** Chunks found in the cache (memory or disk) instead of being fetched. */
  cacheHits: number;
  /** Chunks of small files fetched along with a neighbouring file's read. */
  neighbourChunks: number;
  verifyFailures: number;
  /** Compressed bytes of all the layer's chunks (union of their extents). */
  chunkBytes: number;
  /** fetchedBytes as a percentage of chunkBytes (capped at 100). */
  fetchedPercent: number;
}

/** A chunk a read or a prefetch claimed, and how to answer whoever waits for it. */
interface Wanted extends RangeItem {
  resolve(data: Buffer): void;
  reject(e: unknown): void;
}

/** A gzip piece's blob range: the pieces sharing it are fetched and decompressed together. */
function spanKey(chunk: Chunk): string {
  return `${chunk.compressedOffset}-${chunk.compressedEnd}`;
}

/** Where a gzip piece starts in the uncompressed stream. */
function streamOffset(chunk: Chunk): number {
  return chunk.resume!.out + chunk.innerOffset;
}

/** Told of every readAt (start-up profile recording). */
export type ReadListener = (entry: TocEntry, offset: number, length: number) => void;

interface SequenceState {
  /** Where the next sequential read would start. */
  next: number;
  /** File offset up to which read-ahead was already asked for. */
  aheadEnd: number;
  window: number;
}

export class LayerReader {
  readonly layerDigest: string;
  readonly toc: LayerToc;
  readonly cache: ChunkStore;
  private readonly log: Logger;
  private readonly fetcher: RangeFetcher<Wanted>;
  private readonly inFlight: InFlightChunks;
  private readonly readAhead: number;
  private readonly maxRequestBytes: number;
  private readonly neighbourBytes: number;
  private readonly reindex: (() => Promise<unknown>) | undefined;
  private readonly sequences = new LRUCache<TocEntry, SequenceState>({ max: 1024 });
  private reindexing: Promise<unknown> | undefined;
  private blobOrder: BlobOrder | undefined;
  private readonly counters = { servedBytes: 0, cacheHits: 0, neighbourChunks: 0, verifyFailures: 0 };
  /** Set when the layer must not be read any more (its index proved wrong). */
  private stopped: LayerReadError | undefined;
  /** Pieces of a plain gzip layer in the order of the uncompressed stream. */
  private streamOrder: Located[] | undefined;
  /** Checkpoint spans being decompressed, by blob range: one decompression serves a fetch's pieces (`kept`: those verified). */
  private readonly spanOutputs = new Map<string, Promise<{ plain: Buffer; kept: Map<string, Buffer> }>>();
  /** Checkpoint spans being fetched, by blob range: the verified pieces their decompression yields. */
  private readonly spanFetches = new Map<string, { start: number; end: number; kept: Promise<Map<string, Buffer>>; settle(kept: Map<string, Buffer>): void }>();
  private chunkBytes: number | undefined;
  private readonly readListeners = new Set<ReadListener>();

  constructor(opts: LayerReaderOptions) {
    this.layerDigest = opts.layerDigest;
    this.toc = opts.toc;
    this.cache = opts.cache;
    this.log = opts.logger ?? rootLogger();
    this.readAhead = opts.readAhead ?? DEFAULT_READ_AHEAD;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.neighbourBytes = opts.neighbourBytes ?? DEFAULT_NEIGHBOUR_BYTES;
    this.reindex = opts.reindex;
    this.inFlight = inFlightFor(opts.cache);
    const settings = {
      maxRequestBytes: this.maxRequestBytes,
      maxGapBytes: opts.maxGapBytes ?? DEFAULT_MAX_GAP_BYTES,
      maxInFlight: opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      fetchTimeoutMs: opts.fetchTimeoutMs,
    };
    this.fetcher = new RangeFetcher<Wanted>(opts.layerDigest, opts.blob, settings, {
      arrived: (w, compressed, answered) => this.deliverChunk(w, compressed, answered),
      failed: (w, error) => w.reject(error),
      fetched: () => metrics.layerProgress(this.layerDigest, this.fetcher.counters.fetchedBytes, this.stats.chunkBytes),
    });
  }

  /** The fetch settings in force (defaults filled in). */
  get settings(): Required<Omit<LayerFetchSettings, 'fetchTimeoutMs'>> & Pick<LayerFetchSettings, 'fetchTimeoutMs'> {
    const { maxRequestBytes, maxGapBytes, maxInFlight, fetchTimeoutMs } = this.fetcher.settings;
    return { maxRequestBytes, maxGapBytes, maxInFlight, readAhead: this.readAhead, neighbourBytes: this.neighbourBytes, fetchTimeoutMs };
  }

  get maxGapBytes(): number {
    return this.fetcher.settings.maxGapBytes;
  }

  get stats(): LayerReaderStats {
    // Not through chunksInBlobOrder(): that keeps its list, 24 B a chunk, and stats are asked for
    // every few seconds of every layer a store serves, most of which never need the list.
    this.chunkBytes ??= (this.blobOrder ?? BlobOrder.of(this.toc.entries)).extentBytes();
    const { fetchedBytes, fetchedRequests } = this.fetcher.counters;
    const pct = this.chunkBytes > 0 ? Math.min(100, (100 * fetchedBytes) / this.chunkBytes) : 0;
    return { fetchedBytes, fetchedRequests, ...this.counters, chunkBytes: this.chunkBytes, fetchedPercent: pct };
  }

  /** Every non-zero chunk of the layer with a blob position, in blob order. */
  chunksInBlobOrder(): BlobOrder {
    this.blobOrder ??= BlobOrder.of(this.toc.entries);
    return this.blobOrder;
  }

  /** Those of `items` that are neither stored nor being fetched (for background work). */
  async uncached(items: readonly Located[]): Promise<Located[]> {
    const flags = await Promise.all(items.map((l) => l.chunk.zeros || this.inFlight.has(l.chunk.digest) || this.cache.has(l.chunk.digest)));
    return items.filter((_, i) => !flags[i]);
  }

  private what(entry: TocEntry): string {
    return describeEntry(this.layerDigest, entry);
  }

  /** Fails every read from now on with `reason` (a layer whose index proved not to match it). */
  stop(reason: string): void {
    this.stopped = new LayerReadError(reason);
  }

  /**
   * Reads [offset, offset+length) of a regular file (clamped to its size). Gives up when
   * `signal` aborts or, with fetch.timeout set, when no answer came within it.
   */
  async readAt(entry: TocEntry, offset: number, length: number, outerSignal?: AbortSignal): Promise<Buffer> {
    const end = this.checkRead(entry, offset, length);
    if (offset >= end) return Buffer.alloc(0);
    const chunks = chunksCovering(entry, offset, end);
    const parts = await this.fetchCovering(entry, chunks, offset, end, outerSignal);
    let next = 0;
    const slices = chunks.map((c) => {
      const from = Math.max(0, offset - c.offset);
      const to = Math.min(c.size, end - c.offset);
      // A zeros chunk may be huge (sparse files): make up only the part asked for.
      return c.zeros ? Buffer.alloc(to - from) : parts[next++]!.subarray(from, to);
    });
    const out = slices.length === 1 ? slices[0]! : Buffer.concat(slices);
    this.counters.servedBytes += out.length;
    return out;
  }

  /**
   * Like readAt, but copies the bytes into `into` (from its start) and returns their count.
   * When every chunk of the range is in the memory tier the answer is synchronous: no
   * promise, timer or intermediate buffer per read, which is what bounds warm reads.
   */
  readInto(entry: TocEntry, offset: number, length: number, into: Buffer, signal?: AbortSignal): number | Promise<number> {
    const end = this.checkRead(entry, offset, length);
    if (offset >= end) return 0;
    const chunks = chunksCovering(entry, offset, end);
    for (const c of chunks) if (!c.zeros && !this.cache.inMemory(c.digest)) return this.readIntoAsync(entry, chunks, offset, end, into, signal);
    // Nothing in between can evict: every chunk checked above is still there.
    const contents = chunks.map((c) => (c.zeros ? undefined : this.cache.peek(c.digest)));
    for (const c of chunks) if (!c.zeros) this.counters.cacheHits++;
    this.noteRead(entry, offset, end);
    const ahead = this.readAheadFor(entry, offset, end);
    if (ahead.length > 0) this.readAheadInBackground(entry, ahead);
    copyChunks(chunks, contents, offset, end, into);
    this.counters.servedBytes += end - offset;
    return end - offset;
  }

  private async readIntoAsync(entry: TocEntry, chunks: Chunk[], offset: number, end: number, into: Buffer, signal: AbortSignal | undefined): Promise<number> {
    const parts = await this.fetchCovering(entry, chunks, offset, end, signal);
    let next = 0;
    copyChunks(chunks, chunks.map((c) => (c.zeros ? undefined : parts[next++])), offset, end, into);
    this.counters.servedBytes += end - offset;
    return end - offset;
  }

  /** The end of a read of [offset, offset+length) clamped to the file; throws for a read that cannot be served. */
  private checkRead(entry: TocEntry, offset: number, length: number): number {
    if (this.stopped) throw this.stopped;
    if (entry.type !== 'reg') throw new LayerReadError(`${this.what(entry)}: not a regular file (${entry.type})`);
    if (!(offset >= 0) || !(length >= 0)) throw new RangeError(`bad read [${offset}, +${length})`);
    return Math.min(entry.size, offset + length);
  }

  private noteRead(entry: TocEntry, offset: number, end: number): void {
    for (const listener of this.readListeners) listener(entry, offset, end - offset);
  }

  private readAheadInBackground(entry: TocEntry, ahead: Located[]): void {
    this.obtain(ahead, 'user').catch((e) => this.log.debug({ err: e, layer: this.layerDigest, path: entry.path }, 'read-ahead failed'));
  }

  /** The contents of the stored ones of `chunks` (those covering [offset, end); zeros chunks have none), fetched as needed. */
  private async fetchCovering(entry: TocEntry, chunks: Chunk[], offset: number, end: number, outerSignal: AbortSignal | undefined): Promise<Buffer[]> {
    this.noteRead(entry, offset, end);
    const ahead = this.readAheadFor(entry, offset, end);
    const deadline = this.readDeadline(entry, outerSignal);
    const signal = deadline?.signal ?? outerSignal;
    this.fetcher.beginUserRead();
    try {
      if (ahead.length > 0) this.readAheadInBackground(entry, ahead);
      const stored = chunks.filter((c) => !c.zeros).map((chunk) => ({ chunk, entry }));
      // A fetch this read joined may run out of time (it was started for an earlier read that
      // timed out): the read then asks once afresh, within its own time.
      const retryTimedOut = (e: unknown): Promise<Buffer[]> => {
        if (e instanceof FetchTimeoutError && !signal?.aborted) return this.obtain(stored, 'user');
        throw e;
      };
      return await abortable(this.obtain(stored, 'user').catch(retryTimedOut), signal);
    } finally {
      deadline?.clear();
      this.fetcher.endUserRead();
    }
  }

  /** fetch.timeout for one read, joined with the caller's signal. */
  private readDeadline(entry: TocEntry, outer: AbortSignal | undefined): { signal: AbortSignal; clear(): void } | undefined {
    const ms = this.fetcher.settings.fetchTimeoutMs;
    if (!ms) return undefined;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new ReadTimeoutError(`${this.what(entry)}: no data within fetch.timeout (${formatDuration(ms)})`)), ms);
    const onOuter = (): void => ac.abort(outer!.reason);
    outer?.addEventListener('abort', onOuter, { once: true });
    if (outer?.aborted) ac.abort(outer.reason);
    return {
      signal: ac.signal,
      clear: () => {
        clearTimeout(timer);
        outer?.removeEventListener('abort', onOuter);
      },
    };
  }

  /**
   * The cache file holding `entry`'s whole content, once every chunk of it is cached
   * (ChunkStore.wholeFile), for an open the kernel will read without tocfs (passthrough).
   * The read observers (a start-up profile recording) are told of it as a read of the whole
   * file: none of its reads will reach them.
   */
  async wholeFile(entry: TocEntry): Promise<string | undefined> {
    if (entry.type !== 'reg' || !entry.digest || entry.size === 0 || this.stopped || !this.cache.wholeFile) return undefined;
    // The same content being fetched for another reader (this file in another layer or image,
    // opened a moment earlier): wait for it, so this open shares that one cache file rather
    // than filling a page cache of its own. cache.wholeFile says no if anything else is missing.
    const flights = entry.chunks.map((c) => (c.zeros ? undefined : this.inFlight.join(c.digest)));
    if (flights.some((f) => f !== undefined)) {
      // Only worth waiting when nothing else is missing (a file read in part and read ahead is not).
      for (const [i, c] of entry.chunks.entries()) if (!c.zeros && !flights[i] && !(await this.cache.has(c.digest))) return undefined;
      if (!(await Promise.all(flights.map((f) => f?.promise)).then(() => true, () => false))) return undefined;
    }
    const file = await this.cache.wholeFile(entry.digest, entry.chunks);
    if (file) for (const listener of this.readListeners) listener(entry, 0, entry.size);
    return file;
  }

  /** Calls `listener` for every read from now on, before it is served; returns the function that stops it. */
  observeReads(listener: ReadListener): () => void {
    this.readListeners.add(listener);
    return () => void this.readListeners.delete(listener);
  }

  /** Resolves once every range request started so far has ended (reads may be answered before their request ends). */
  settled(): Promise<void> {
    return this.fetcher.settled();
  }

  /** User reads (readAt calls) in progress. */
  get userReadsInFlight(): number {
    return this.fetcher.userReadsInFlight;
  }

  /** Chunks to fetch ahead of a read that continues a sequential walk through the file. */
  private readAheadFor(entry: TocEntry, offset: number, end: number): Located[] {
    if (this.readAhead <= 0) return [];
    let st = this.sequences.get(entry);
    const sequential = offset === 0 || (st !== undefined && offset === st.next);
    if (!sequential) {
      if (st) st.window = 0;
      if (st) st.next = end;
      return [];
    }
    if (!st || offset === 0) {
      st = { next: end, aheadEnd: end, window: 0 };
      this.sequences.set(entry, st);
    }
    st.next = end;
    // Each step asks for at least one request's worth, so read-ahead requests are as large as the link wants.
    st.window = Math.min(this.readAhead, Math.max(2 * st.window, this.fetcher.requestBytes));
    const from = Math.max(end, st.aheadEnd);
    const to = Math.min(entry.size, end + st.window);
    // Ask again only when less than half the window is left, so requests stay large.
    if (from >= to || st.aheadEnd - end > st.window / 2) return [];
    st.aheadEnd = to;
    return chunksCovering(entry, from, to)
      .filter((c) => !c.zeros)
      .map((chunk) => ({ chunk, entry }));
  }

  /**
   * The verified contents of `items`' chunks, in order: zeros made up, stored chunks served,
   * fetches in flight joined, the rest fetched (coalesced with whatever else is missing now).
   */
  async obtain(items: readonly Located[], priority: QueuedPriority): Promise<Buffer[]> {
    const results: Array<Promise<Buffer> | Buffer> = [];
    const lookups: Wanted[] = [];
    for (const { chunk, entry } of items) {
      if (chunk.zeros) {
        results.push(Buffer.alloc(chunk.size));
        continue;
      }
      const inMemory = this.cache.peek(chunk.digest);
      if (inMemory) {
        this.counters.cacheHits++;
        results.push(inMemory);
        continue;
      }
      const joined = this.inFlight.join(chunk.digest);
      if (joined) {
        if (priority === 'user') joined.promote();
        results.push(joined.promise);
        continue;
      }
      const { wanted, promise } = this.claim({ chunk, entry });
      wanted.urgent = priority === 'user';
      lookups.push(wanted);
      results.push(promise);
    }
    if (lookups.length > 0) {
      this.lookUp(lookups, priority).catch((e) => {
        for (const w of lookups) w.reject(new LayerReadError(`${this.what(w.entry)}: ${(e as Error).message}`, { cause: e }));
      });
    }
    return Promise.all(results);
  }

  /** Serves what the store has on disk; queues the rest for fetching. */
  private async lookUp(wanted: Wanted[], priority: QueuedPriority): Promise<void> {
    const missing: Wanted[] = [];
    await Promise.all(
      wanted.map(async (w) => {
        const hit = await this.cache.get(w.chunk.digest).catch(() => undefined);
        if (hit && hit.length === w.chunk.size) {
          this.counters.cacheHits++;
          w.resolve(hit);
        } else missing.push(w);
      }),
    );
    if (missing.length === 0) return;
    // Pieces of a layer indexed whole without checkpoints exist only in the cache: index again.
    if (missing.some((w) => w.chunk.compressedOffset < 0)) {
      await this.refill(missing);
      return;
    }
    const toFetch = this.joinSpanFetches(missing, priority);
    if (toFetch.length === 0) return;
    // Before any await: a read that arrives meanwhile joins these spans instead of fetching them again.
    this.registerSpanFetches(toFetch);
    const neighbours = priority === 'user' ? await this.neighboursOf(toFetch) : [];
    this.registerSpanFetches(neighbours);
    this.fetcher.enqueue([...toFetch, ...neighbours], priority);
  }

  /**
   * Pieces of a gzip span that is being fetched wait for it (its decompression yields every
   * piece in it) instead of fetching the span again; returns the rest.
   */
  private joinSpanFetches(missing: Wanted[], priority: QueuedPriority): Wanted[] {
    const rest: Wanted[] = [];
    for (const w of missing) {
      const fetching = w.chunk.resume && this.spanFetchHolding(w.chunk);
      if (!fetching) {
        rest.push(w);
        continue;
      }
      void fetching.kept.then((kept) => {
        const data = kept.get(w.chunk.digest);
        if (!data) return this.fetcher.enqueue([w], priority);
        this.counters.cacheHits++;
        w.resolve(data);
        this.cache.put(w.chunk.digest, data).catch(() => undefined);
      });
    }
    return rest;
  }

  /** A span fetch under way whose range holds `chunk`'s (its decompression then yields the piece). */
  private spanFetchHolding(chunk: Chunk): { kept: Promise<Map<string, Buffer>> } | undefined {
    const exact = this.spanFetches.get(spanKey(chunk));
    if (exact) return exact;
    for (const f of this.spanFetches.values()) if (f.start <= chunk.compressedOffset && f.end >= chunk.compressedEnd) return f;
    return undefined;
  }

  /** Marks the spans of `wanted`'s gzip pieces as being fetched, until their first piece is delivered or fails. */
  private registerSpanFetches(wanted: Wanted[]): void {
    for (const w of wanted) {
      if (!w.chunk.resume) continue;
      const key = spanKey(w.chunk);
      if (this.spanFetches.has(key)) continue;
      let settle!: (kept: Map<string, Buffer>) => void;
      const kept = new Promise<Map<string, Buffer>>((resolve) => (settle = resolve));
      const entry = {
        start: w.chunk.compressedOffset,
        end: w.chunk.compressedEnd,
        kept,
        settle: (k: Map<string, Buffer>) => {
          if (this.spanFetches.get(key) === entry) this.spanFetches.delete(key);
          settle(k);
        },
      };
      this.spanFetches.set(key, entry);
      // A fetch that fails delivers nothing: the pieces waiting for it fetch for themselves.
      const reject = w.reject;
      w.reject = (e: unknown) => {
        entry.settle(new Map());
        reject(e);
      };
    }
  }

  /**
   * Small files that follow the missing chunks in the blob, not stored nor being fetched,
   * while the whole span stays within neighbourBytes; claimed so reads of them join the fetch.
   */
  private async neighboursOf(missing: readonly Wanted[]): Promise<Wanted[]> {
    if (this.neighbourBytes <= 0) return [];
    const start = Math.min(...missing.map((w) => w.chunk.compressedOffset));
    let end = Math.max(...missing.map((w) => w.chunk.compressedEnd));
    const order = this.chunksInBlobOrder();
    const candidates: Located[] = [];
    for (let i = order.firstAt(end); i < order.length; i++) {
      const l = order.at(i);
      const small = l.entry.chunks.length === 1 && l.entry.size <= this.neighbourBytes;
      if (!small || l.chunk.compressedEnd - start > this.neighbourBytes || l.chunk.compressedOffset - end > this.fetcher.settings.maxGapBytes) break;
      end = l.chunk.compressedEnd;
      if (!this.inFlight.has(l.chunk.digest) && !this.cache.inMemory(l.chunk.digest)) candidates.push(l);
    }
    const stored = await Promise.all(candidates.map((l) => this.cache.has(l.chunk.digest).catch(() => false)));
    const out: Wanted[] = [];
    candidates.forEach((l, i) => {
      if (stored[i] || this.inFlight.has(l.chunk.digest)) return;
      const { wanted, promise } = this.claim(l);
      promise.catch(() => undefined); // nobody waits for it yet; a read that joins gets the error itself
      out.push(wanted);
    });
    this.counters.neighbourChunks += out.length;
    return out;
  }

  /** Decompresses and verifies one fetched chunk, answers its waiters, then stores it. Never throws. */
  private async deliverChunk(w: Wanted, compressed: Buffer, answered: () => void): Promise<void> {
    const { chunk, entry } = w;
    try {
      const data = chunk.resume ? await this.pieceFromSpan(chunk, compressed, this.what(entry)) : await extractChunk(this.toc.compression, chunk, compressed, this.what(entry));
      // Answer first: the read need not wait for the disk write.
      w.resolve(data);
      answered();
      await this.cache.put(chunk.digest, data);
    } catch (e) {
      this.counters.verifyFailures++;
      metrics.verificationFailed(this.layerDigest, 'chunk');
      answered();
      this.log.warn({ err: e, layer: this.layerDigest, path: entry.path }, 'chunk failed verification');
      const message = (e as Error).message;
      w.reject(new LayerReadError(message.startsWith(this.what(entry)) ? message : `${this.what(entry)}: ${message}`, { cause: e }));
    }
  }

  /**
   * A piece of a plain gzip layer (Chunk.resume). Its range is the whole checkpoint span it is
   * in: the span is decompressed once per fetch, and every other piece of it that is not
   * stored yet is kept too (each checked against its digest), so reads of neighbouring files
   * fetch and decompress nothing more.
   */
  private async pieceFromSpan(chunk: Chunk, compressed: Buffer, what: string): Promise<Buffer> {
    // A piece that crosses a checkpoint has a longer range from the same start than the others.
    const key = spanKey(chunk);
    let output = this.spanOutputs.get(key);
    if (!output) {
      const order = this.chunksInBlobOrder();
      let need = chunk.innerOffset + chunk.size;
      for (let i = order.firstAt(chunk.compressedOffset); i < order.length && order.startAt(i) === chunk.compressedOffset; i++) {
        const c = order.at(i).chunk;
        if (c.compressedEnd === chunk.compressedEnd) need = Math.max(need, c.innerOffset + c.size);
      }
      const resume = chunk.resume!;
      output = new Promise<Buffer>((resolve) => resolve(inflateFromCheckpoint(resume, compressed, need))).then((plain) => ({ plain, kept: this.keepSpan(resume.out, plain) }));
      this.spanOutputs.set(key, output);
      output
        .then(({ kept }) => this.spanFetches.get(key)?.settle(kept), () => this.spanFetches.get(key)?.settle(new Map()))
        .finally(() => setImmediate(() => this.spanOutputs.delete(key)));
    }
    let span: { plain: Buffer; kept: Map<string, Buffer> };
    try {
      span = await output;
    } catch (e) {
      throw new FormatError(`${what}: cannot decompress the gzip span at [${chunk.compressedOffset}, ${chunk.compressedEnd}): ${(e as Error).message}`, { cause: e });
    }
    // Verified (and copied: a view would keep the whole span alive in the memory tier) by keepSpan.
    const kept = span.kept.get(chunk.digest);
    if (kept) return kept;
    const end = chunk.innerOffset + chunk.size;
    if (span.plain.length < end) throw new FormatError(`${what}: the gzip span at ${chunk.compressedOffset} decompresses to ${span.plain.length} bytes, need ${end}`);
    const actual = sha256(span.plain.subarray(chunk.innerOffset, end));
    throw new DigestMismatchError(`${what}: piece at file offset ${chunk.offset}`, chunk.digest, actual);
  }

  /** The gzip pieces of the layer by their offset in the uncompressed stream. */
  private stream(): Located[] {
    this.streamOrder ??= Array.from(this.chunksInBlobOrder())
      .filter((l) => l.chunk.resume)
      .sort((a, b) => streamOffset(a.chunk) - streamOffset(b.chunk));
    return this.streamOrder;
  }

  /**
   * Keeps every piece that lies wholly in `plain` (the stream decompressed from offset `from`),
   * each checked against its digest, whatever span it belongs to; returns them by digest.
   */
  private keepSpan(from: number, plain: Buffer): Map<string, Buffer> {
    const kept = new Map<string, Buffer>();
    const order = this.stream();
    const lo = firstNotBefore(order, (l) => streamOffset(l.chunk) < from);
    for (let i = lo; i < order.length; i++) {
      const { chunk } = order[i]!;
      const start = streamOffset(chunk) - from;
      if (start + chunk.size > plain.length) break;
      if (kept.has(chunk.digest)) continue;
      const data = Buffer.from(plain.subarray(start, start + chunk.size));
      if (sha256(data) !== chunk.digest) continue; // its own read will fail verification and say so
      kept.set(chunk.digest, data);
      if (this.inFlight.has(chunk.digest) || this.cache.inMemory(chunk.digest)) continue;
      this.cache.put(chunk.digest, data).catch((e: unknown) => this.log.debug({ err: e, layer: this.layerDigest }, 'could not store a piece of a gzip span'));
    }
    return kept;
  }

  /**
   * Fetches [start, end) of the blob in one request and stores every chunk wholly inside it
   * that is not stored yet (eStargz prefetch landmark, start-up profile replay). Returns the
   * bytes fetched. At 'prefetch' priority the request takes a slot of its own, so reads never
   * queue behind it; reads of its chunks join it either way.
   */
  async fetchSpan(start: number, end: number, onChunk?: (l: Located) => void, priority: 'user' | 'prefetch' = 'user'): Promise<number> {
    const inside = this.chunksInBlobOrder().within(start, end);
    // Claim every chunk not in memory nor being fetched before the first await, so reads
    // that arrive while the span is checked or in flight join it instead of asking again.
    const claimed: Array<{ l: Located; wanted: Wanted; promise: Promise<Buffer> }> = [];
    const done: Array<Promise<unknown>> = [];
    for (const l of inside) {
      const joined = this.inFlight.join(l.chunk.digest);
      if (joined || this.cache.inMemory(l.chunk.digest)) {
        done.push((joined?.promise ?? Promise.resolve()).then(() => onChunk?.(l), () => onChunk?.(l)));
        continue;
      }
      const c = this.claim(l);
      claimed.push({ l, ...c });
      done.push(c.promise.then(() => onChunk?.(l)));
    }
    const onDisk = await Promise.all(claimed.map((c) => this.cache.get(c.l.chunk.digest).catch(() => undefined)));
    const wanted: Wanted[] = [];
    claimed.forEach((c, i) => {
      const hit = onDisk[i];
      if (hit && hit.length === c.l.chunk.size) c.wanted.resolve(hit);
      else wanted.push(c.wanted);
    });
    if (wanted.length > 0) await this.fetcher.fetchSpan(start, end, wanted, priority);
    await Promise.all(done);
    return wanted.length > 0 ? end - start : 0;
  }

  /** Claims a chunk in the in-flight table: reads of it from now on join this reader's fetch. */
  private claim(l: Located): { wanted: Wanted; promise: Promise<Buffer> } {
    const claim = this.inFlight.claim(l.chunk.digest, () => {
      if (wanted.urgent) return;
      wanted.urgent = true;
      this.fetcher.wakeBackground();
    });
    const wanted: Wanted = { ...l, urgent: true, resolve: claim.resolve, reject: claim.reject };
    return { wanted, promise: claim.promise };
  }

  /** Layers without a TOC: their chunks live only in the cache; re-index once to refill it. */
  private async refill(missing: Wanted[]): Promise<void> {
    if (!this.reindex) {
      const err = new LayerReadError(`${this.what(missing[0]!.entry)}: chunk ${missing[0]!.chunk.digest} is not in the cache and the layer has no TOC to fetch it by`);
      for (const w of missing) w.reject(err);
      return;
    }
    this.reindexing ??= this.reindex().finally(() => (this.reindexing = undefined));
    try {
      await this.reindexing;
    } catch (e) {
      const err = new LayerReadError(`layer ${this.layerDigest}: re-indexing the layer failed: ${(e as Error).message}`, { cause: e });
      for (const w of missing) w.reject(err);
      return;
    }
    for (const w of missing) {
      const data = await this.cache.get(w.chunk.digest);
      if (data) w.resolve(data);
      else w.reject(new LayerReadError(`${this.what(w.entry)}: chunk ${w.chunk.digest} is still not in the cache after re-indexing the layer`));
    }
  }
}

/** Copies [offset, end) of a file from its covering chunks' contents (undefined: a zeros chunk) into `into`. */
function copyChunks(chunks: readonly Chunk[], contents: ReadonlyArray<Buffer | undefined>, offset: number, end: number, into: Buffer): void {
  let at = 0;
  chunks.forEach((c, i) => {
    const from = Math.max(0, offset - c.offset);
    const to = Math.min(c.size, end - c.offset);
    const data = contents[i];
    if (data) data.copy(into, at, from, to);
    else into.fill(0, at, at + to - from);
    at += to - from;
  });
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
