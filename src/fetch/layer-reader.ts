/**
 * LayerReader: serves byte ranges of one layer's regular files from verified chunks.
 *
 * readAt finds the chunks that cover the range; zero chunks are made up, cached chunks are
 * read from the cache, and the missing ones are fetched: every chunk asked for in the same
 * turn of the event loop (this read, its read-ahead, concurrent reads of other files) is
 * planned together so neighbouring compressed extents become one range request of up to
 * `maxRequestBytes`. Fetches are joined by chunk digest across every reader of the cache,
 * each chunk is decompressed and verified against its TOC digest before it is cached or
 * served, and a failure is reported to the waiting reads only, so a later read retries.
 */
import { Sema } from 'async-sema';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { ChunkCache } from '../cache/chunk-cache.js';
import { formatDuration } from '../units.js';
import { TocfsError } from '../errors.js';
import { extractChunk } from '../formats/chunk.js';
import type { LayerToc, TocEntry } from '../formats/toc.js';
import { logger as rootLogger } from '../log.js';
import { metrics } from '../metrics/index.js';
import type { BlobReader } from '../source/types.js';
import { chunksCovering, coalesce, extentBytes, type Located, type PlannedRange } from './plan.js';

export type { Located } from './plan.js';

export const DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024;
export const DEFAULT_READ_AHEAD = 8 * 1024 * 1024;
export const DEFAULT_MAX_IN_FLIGHT = 8;
/** Bytes between two chunks worth fetching to save a request (a request costs the registry ~3–5 ms). */
export const DEFAULT_MAX_GAP_BYTES = 16 * 1024;

export interface LayerReaderOptions {
  layerDigest: string;
  toc: LayerToc;
  blob: BlobReader;
  cache: ChunkCache;
  logger?: Logger;
  /** Cap for one coalesced range request (default 1 MiB). */
  maxRequestBytes?: number;
  /** Largest gap between two chunks' compressed extents still bridged into one request (default 16 KiB). */
  maxGapBytes?: number;
  /** How far ahead (uncompressed bytes) a file read sequentially is fetched (default 8 MiB; 0 = off). */
  readAhead?: number;
  /** Range requests in flight for this layer (default 8). */
  maxInFlight?: number;
  /**
   * A range fetch (its retries included) still unfinished after this long is given up
   * (default: no limit). Reads waiting for it have timed out by then; without a limit a
   * later read of the same chunks would join the stuck fetch instead of fetching afresh.
   */
  fetchTimeoutMs?: number;
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
  verifyFailures: number;
  /** Compressed bytes of all the layer's chunks (union of their extents). */
  chunkBytes: number;
  /** fetchedBytes as a percentage of chunkBytes (capped at 100). */
  fetchedPercent: number;
}

/** A read that could not be served (the FUSE layer answers EIO); `cause` says why. */
/** The settings of a LayerReader an operator tunes (config `fetch.*`), passed through the image and store layers. */
export type LayerFetchSettings = Partial<Pick<LayerReaderOptions, 'maxRequestBytes' | 'maxGapBytes' | 'readAhead' | 'maxInFlight' | 'fetchTimeoutMs'>>;

export class LayerReadError extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'EIO', options);
    this.name = 'LayerReadError';
  }
}

/** A fetch given up at its deadline (fetch.timeout). */
class FetchTimeoutError extends LayerReadError {}

export type FetchPriority = 'user' | 'background';

interface Wanted extends Located {
  resolve(data: Buffer): void;
  reject(e: unknown): void;
  /** A user read waits for this chunk. */
  urgent: boolean;
}

interface QueuedRange extends PlannedRange<Wanted> {
  priority: FetchPriority;
  /** Hand out each chunk as soon as its bytes are in, not at the end of the request (long spans). */
  stream?: boolean;
  /**
   * When (Date.now()) the fetch is given up. Reads' ranges count fetch.timeout from when the
   * reads asked, like the reads' own timeouts, so a fetch that waited for a request slot does
   * not outlive the reads that wanted it and catch the next read; others count from the start.
   */
  deadline?: number;
}

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
  private readonly blob: BlobReader;
  readonly cache: ChunkCache;
  private readonly log: Logger;
  private readonly maxRequestBytes: number;
  readonly maxGapBytes: number;
  private readonly readAhead: number;
  private readonly reindex: (() => Promise<unknown>) | undefined;
  private readonly fetchTimeoutMs: number | undefined;
  private readonly sema: Sema;
  private readonly sequences = new LRUCache<TocEntry, SequenceState>({ max: 1024 });
  private queue: Array<{ item: Wanted; priority: FetchPriority }> = [];
  private flushScheduled = false;
  private userActive = 0;
  private idleWaiters: Array<() => void> = [];
  private reindexing: Promise<unknown> | undefined;
  private blobOrder: Located[] | undefined;
  private readonly counters = { fetchedBytes: 0, fetchedRequests: 0, servedBytes: 0, cacheHits: 0, verifyFailures: 0 };
  private chunkBytes: number | undefined;

  constructor(opts: LayerReaderOptions) {
    this.layerDigest = opts.layerDigest;
    this.toc = opts.toc;
    this.blob = opts.blob;
    this.cache = opts.cache;
    this.log = opts.logger ?? rootLogger();
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.maxGapBytes = opts.maxGapBytes ?? DEFAULT_MAX_GAP_BYTES;
    this.readAhead = opts.readAhead ?? DEFAULT_READ_AHEAD;
    this.reindex = opts.reindex;
    this.fetchTimeoutMs = opts.fetchTimeoutMs;
    this.sema = new Sema(opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
  }

  get stats(): LayerReaderStats {
    this.chunkBytes ??= extentBytes(this.chunksInBlobOrder());
    const pct = this.chunkBytes > 0 ? Math.min(100, (100 * this.counters.fetchedBytes) / this.chunkBytes) : 0;
    return { ...this.counters, chunkBytes: this.chunkBytes, fetchedPercent: pct };
  }

  /** Every non-zero chunk of the layer with a blob position, in blob order. */
  chunksInBlobOrder(): readonly Located[] {
    if (!this.blobOrder) {
      const all: Located[] = [];
      for (const entry of this.toc.entries) {
        if (entry.type !== 'reg') continue;
        for (const chunk of entry.chunks) if (!chunk.zeros && chunk.compressedOffset >= 0) all.push({ chunk, entry });
      }
      this.blobOrder = all.sort((a, b) => a.chunk.compressedOffset - b.chunk.compressedOffset || a.chunk.innerOffset - b.chunk.innerOffset);
    }
    return this.blobOrder;
  }

  /** Those of `items` that are neither cached nor being fetched (for background work). */
  async uncached(items: readonly Located[]): Promise<Located[]> {
    const flags = await Promise.all(items.map((l) => l.chunk.zeros || this.cache.inflight.has(l.chunk.digest) || this.cache.has(l.chunk.digest)));
    return items.filter((_, i) => !flags[i]);
  }

  private what(entry: TocEntry): string {
    return `layer ${this.layerDigest} entry ${entry.path}`;
  }

  /** Reads [offset, offset+length) of a regular file (clamped to its size). */
  async readAt(entry: TocEntry, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    if (entry.type !== 'reg') throw new LayerReadError(`${this.what(entry)}: not a regular file (${entry.type})`);
    if (!(offset >= 0) || !(length >= 0)) throw new RangeError(`bad read [${offset}, +${length})`);
    const end = Math.min(entry.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const chunks = chunksCovering(entry, offset, end);
    const ahead = this.readAheadFor(entry, offset, end);
    this.userActive++;
    let parts: Buffer[];
    try {
      if (ahead.length > 0) {
        this.obtain(ahead, 'user').catch((e) => this.log.debug({ err: e, layer: this.layerDigest, path: entry.path }, 'read-ahead failed'));
      }
      const stored = chunks.filter((c) => !c.zeros).map((chunk) => ({ chunk, entry }));
      // A fetch this read joined may run out of time (it was started for an earlier read that
      // timed out): the read then asks once afresh, within its own time.
      const retryTimedOut = (e: unknown): Promise<Buffer[]> => {
        if (e instanceof FetchTimeoutError && !signal?.aborted) return this.obtain(stored, 'user');
        throw e;
      };
      parts = await abortable(this.obtain(stored, 'user').catch(retryTimedOut), signal);
    } finally {
      if (--this.userActive === 0) this.wakeBackground();
    }
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
    st.window = Math.min(this.readAhead, Math.max(2 * st.window, this.maxRequestBytes));
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
   * The verified contents of `items`' chunks, in order: zeros made up, cache hits served,
   * fetches in flight joined, the rest fetched (coalesced with whatever else is missing now).
   */
  async obtain(items: readonly Located[], priority: FetchPriority): Promise<Buffer[]> {
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
      const joined = this.cache.inflight.get(chunk.digest);
      if (joined) {
        if (priority === 'user') joined.promote();
        results.push(joined.promise);
        continue;
      }
      const { wanted, promise } = this.obtainDeferred({ chunk, entry });
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

  private async lookUp(wanted: Wanted[], priority: FetchPriority): Promise<void> {
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
    if (this.toc.format === 'none' || missing.some((w) => w.chunk.compressedOffset < 0)) {
      await this.refill(missing);
      return;
    }
    for (const item of missing) this.queue.push({ item, priority });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Plans everything queued in this turn into ranges; user ranges first. */
  private flush(): void {
    this.flushScheduled = false;
    const queued = this.queue;
    this.queue = [];
    const byPriority = (p: FetchPriority) => queued.filter((q) => (q.item.urgent ? 'user' : q.priority) === p).map((q) => q.item);
    const user = coalesce(byPriority('user'), this.maxRequestBytes, this.maxGapBytes);
    const background = coalesce(byPriority('background'), this.maxRequestBytes, this.maxGapBytes);
    const deadline = this.fetchTimeoutMs ? { deadline: Date.now() + this.fetchTimeoutMs } : {};
    for (const r of user) void this.fetchRange({ ...r, priority: 'user', ...deadline });
    for (const r of background) void this.fetchRange({ ...r, priority: 'background' });
  }

  /** User reads (readAt calls) in progress. */
  get userReadsInFlight(): number {
    return this.userActive;
  }

  private wakeBackground(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Fetches one range, then verifies, caches and hands out each of its chunks. Never throws.
   * A background range waits while user reads are in progress, unless one of them waits for it.
   */
  private async fetchRange(range: QueuedRange): Promise<void> {
    await this.sema.acquire();
    // Checked with the slot in hand, so no background request starts while a user read is in progress.
    while (range.priority === 'background' && this.userActive > 0 && !range.items.some((w) => w.urgent)) {
      this.sema.release();
      await new Promise<void>((r) => this.idleWaiters.push(r));
      await this.sema.acquire();
    }
    const fetched = metrics.startChunkFetch(range.items.length);
    const deliver = (w: Wanted, buf: Buffer): Promise<void> => this.deliverChunk(range, w, buf, fetched);
    const early = new Set<Wanted>();
    const earlyDone: Array<Promise<void>> = [];
    let bytes: Buffer;
    const deadline = range.deadline ?? (this.fetchTimeoutMs ? Date.now() + this.fetchTimeoutMs : undefined);
    const signal = deadline !== undefined ? AbortSignal.timeout(Math.max(1, deadline - Date.now())) : undefined;
    try {
      bytes = range.stream && this.blob.readParts
        ? await this.readStreaming(range, signal, (w, buf) => {
            early.add(w);
            earlyDone.push(deliver(w, buf));
          })
        : await this.blob.read(range.start, range.end - range.start, signal);
      this.counters.fetchedBytes += bytes.length;
      this.counters.fetchedRequests++;
      metrics.layerProgress(this.layerDigest, this.counters.fetchedBytes, this.stats.chunkBytes);
    } catch (e) {
      fetched(true);
      const first = range.items[0]!;
      // Given up at the deadline, the error is only the abort (the failures before it were logged as they came).
      const err = signal?.aborted
        ? new FetchTimeoutError(`${this.what(first.entry)}: cannot fetch bytes [${range.start}, ${range.end}) of the layer: no data within fetch.timeout (${formatDuration(this.fetchTimeoutMs!)})`)
        : new LayerReadError(`${this.what(first.entry)}: cannot fetch bytes [${range.start}, ${range.end}) of the layer: ${(e as Error).message}`, { cause: e });
      for (const w of range.items) w.reject(err);
      return;
    } finally {
      this.sema.release();
    }
    await Promise.all([...earlyDone, ...range.items.filter((w) => !early.has(w)).map((w) => deliver(w, bytes))]);
  }

  /**
   * Reads the range in one request, calling `ready` for each item as soon as its bytes are
   * in; resolves with all of them.
   */
  private async readStreaming(range: QueuedRange, signal: AbortSignal | undefined, ready: (w: Wanted, bytes: Buffer) => void): Promise<Buffer> {
    const length = range.end - range.start;
    const buf = Buffer.allocUnsafe(length);
    const byEnd = [...range.items].sort((a, b) => a.chunk.compressedEnd - b.chunk.compressedEnd);
    let n = 0;
    let next = 0;
    for await (const part of this.blob.readParts!(range.start, length, signal)) {
      if (n + part.length > length) throw new Error(`the source sent more than the ${length} bytes asked for`);
      part.copy(buf, n);
      n += part.length;
      while (next < byEnd.length && byEnd[next]!.chunk.compressedEnd - range.start <= n) ready(byEnd[next++]!, buf);
    }
    if (n !== length) throw new Error(`the source sent ${n} of the ${length} bytes asked for`);
    return buf;
  }

  /** Decompresses and verifies one chunk of a fetched range, hands it out, then caches it. Never throws. */
  private async deliverChunk(range: QueuedRange, w: Wanted, bytes: Buffer, fetched: (failed?: boolean) => void): Promise<void> {
    const { chunk, entry } = w;
    try {
      const data = await extractChunk(this.toc.compression, chunk, bytes.subarray(chunk.compressedOffset - range.start, chunk.compressedEnd - range.start), this.what(entry));
      // Resolve first: the read need not wait for the disk write.
      w.resolve(data);
      fetched();
      await this.cache.put(chunk.digest, data);
    } catch (e) {
      this.counters.verifyFailures++;
      metrics.verificationFailed(this.layerDigest, 'chunk');
      fetched();
      this.log.warn({ err: e, layer: this.layerDigest, path: entry.path }, 'chunk failed verification');
      const message = (e as Error).message;
      w.reject(new LayerReadError(message.startsWith(this.what(entry)) ? message : `${this.what(entry)}: ${message}`, { cause: e }));
    }
  }

  /**
   * Fetches [start, end) of the blob in one request and caches every chunk wholly inside it
   * that is not cached yet (eStargz prefetch landmark). Returns the bytes fetched.
   */
  async fetchSpan(start: number, end: number, onChunk?: (l: Located) => void): Promise<number> {
    const inside = this.chunksInBlobOrder().filter((l) => l.chunk.compressedOffset >= start && l.chunk.compressedEnd <= end);
    // Claim every chunk not in memory nor being fetched before the first await, so reads
    // that arrive while the span is checked or in flight join it instead of asking again.
    const claimed: Array<{ l: Located; wanted: Wanted; promise: Promise<Buffer> }> = [];
    const done: Array<Promise<unknown>> = [];
    for (const l of inside) {
      const joined = this.cache.inflight.get(l.chunk.digest);
      if (joined || this.cache.inMemory(l.chunk.digest)) {
        done.push((joined?.promise ?? Promise.resolve()).then(() => onChunk?.(l), () => onChunk?.(l)));
        continue;
      }
      const p = this.obtainDeferred(l);
      claimed.push({ l, ...p });
      done.push(p.promise.then(() => onChunk?.(l)));
    }
    const onDisk = await Promise.all(claimed.map((c) => this.cache.get(c.l.chunk.digest).catch(() => undefined)));
    const wanted: Wanted[] = [];
    claimed.forEach((c, i) => {
      const hit = onDisk[i];
      if (hit && hit.length === c.l.chunk.size) c.wanted.resolve(hit);
      else wanted.push(c.wanted);
    });
    const before = this.counters.fetchedBytes;
    if (wanted.length > 0) await this.fetchRange({ start, end, items: wanted, priority: 'user', stream: true });
    await Promise.all(done);
    return this.counters.fetchedBytes - before;
  }

  private obtainDeferred(l: Located): { wanted: Wanted; promise: Promise<Buffer> } {
    let wanted!: Wanted;
    const promise = new Promise<Buffer>((resolve, reject) => {
      wanted = { ...l, resolve, reject, urgent: true };
    });
    const flight = {
      promise,
      promote: (): void => {
        if (wanted.urgent) return;
        wanted.urgent = true;
        this.wakeBackground();
      },
    };
    const forget = (): void => {
      if (this.cache.inflight.get(l.chunk.digest) === flight) this.cache.inflight.delete(l.chunk.digest);
    };
    promise.then(forget, forget);
    this.cache.inflight.set(l.chunk.digest, flight);
    return { wanted, promise };
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
