/**
 * Range requests for one layer blob: chunks asked for in the same turn of the event loop are
 * planned together, neighbouring compressed extents coalesced into requests of up to
 * `maxRequestBytes`; at most `maxInFlight` requests run at once; user ranges go before
 * background ones, which wait while user reads are in progress; each request is given up
 * at its deadline (fetch.timeout). What arrives goes to a RangeSink chunk by chunk: the
 * fetcher neither decompresses nor verifies nor caches.
 */
import { Sema } from 'async-sema';
import { metrics } from '../metrics/index.js';
import type { BlobReader } from '../source/types.js';
import { formatDuration } from '../units.js';
import { describeEntry, FetchTimeoutError, LayerReadError } from './errors.js';
import { LinkEstimate } from './link-estimate.js';
import { coalesce, type Located, type PlannedRange } from './plan.js';

/**
 * user: a read waits for it. background: whole-layer fetching, which waits while user reads
 * are in progress. prefetch: fetching ahead of reads known to come (start-up profiles), on
 * slots of its own so user reads never queue behind it, and without waiting for them.
 */
export type FetchPriority = 'user' | 'background' | 'prefetch';
/** Priorities of chunks queued one by one (prefetch comes as whole spans). */
export type QueuedPriority = Exclude<FetchPriority, 'prefetch'>;

/** A chunk a range request is for. */
export interface RangeItem extends Located {
  /** A user read waits for it: a background range holding it does not wait for user reads. */
  urgent: boolean;
}

/** Where a fetcher's results go. */
export interface RangeSink<T extends RangeItem> {
  /**
   * The compressed bytes of `item` arrived (a view into the request's buffer). Calls
   * `answered` once whoever waits for the item has its result; resolves when all is done
   * (stored, say). Never rejects.
   */
  arrived(item: T, compressed: Buffer, answered: () => void): Promise<void>;
  /** The request holding `item` failed or ran out of time. */
  failed(item: T, error: LayerReadError): void;
  /** A request brought `bytes` more of the blob. */
  fetched?(bytes: number): void;
}

export interface RangeFetcherSettings {
  /** Cap for one coalesced range request; below it the size follows the link (link-estimate.ts). */
  maxRequestBytes: number;
  /** Largest gap between two chunks' compressed extents still bridged into one request. */
  maxGapBytes: number;
  /** Range requests in flight for this layer. */
  maxInFlight: number;
  /** Prefetch requests in flight for this layer, besides maxInFlight (default 8). */
  maxPrefetchInFlight?: number;
  /** A request (its retries included) still unfinished after this long is given up (undefined: no limit). */
  fetchTimeoutMs?: number | undefined;
}

interface QueuedRange<T> extends PlannedRange<T & Located> {
  priority: FetchPriority;
  /** Hand out each chunk as soon as its bytes are in, not at the end of the request (long spans). */
  stream?: boolean;
  /**
   * When (Date.now()) the request is given up. Ranges of user reads count fetch.timeout from
   * when the reads asked, like the reads' own timeouts, so a request that waited for a slot
   * does not outlive the reads that wanted it; others count from their start.
   */
  deadline?: number;
}

export class RangeFetcher<T extends RangeItem> {
  private readonly sema: Sema;
  private readonly prefetchSema: Sema;
  private queue: Array<{ item: T; priority: QueuedPriority }> = [];
  private flushScheduled = false;
  private userActive = 0;
  private idleWaiters: Array<() => void> = [];
  readonly counters = { fetchedBytes: 0, fetchedRequests: 0 };
  readonly link = new LinkEstimate();
  /** Requests under way (or waiting for a slot). */
  private readonly active = new Set<Promise<void>>();

  constructor(
    readonly layerDigest: string,
    private readonly blob: BlobReader,
    readonly settings: RangeFetcherSettings,
    private readonly sink: RangeSink<T>,
  ) {
    this.sema = new Sema(settings.maxInFlight);
    this.prefetchSema = new Sema(settings.maxPrefetchInFlight ?? 8);
  }

  /** Queues chunks to fetch; everything queued in this turn of the event loop is planned together. */
  enqueue(items: readonly T[], priority: QueuedPriority): void {
    for (const item of items) this.queue.push({ item, priority });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** A user read started: background requests wait until none is in progress. */
  beginUserRead(): void {
    this.userActive++;
  }

  endUserRead(): void {
    if (--this.userActive === 0) this.wakeBackground();
  }

  /** User reads in progress. */
  get userReadsInFlight(): number {
    return this.userActive;
  }

  /** Lets waiting background requests look again (a user read now waits for one of them). */
  wakeBackground(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** The size ranges are coalesced up to now (fetch.max_request_bytes at most). */
  get requestBytes(): number {
    return this.link.requestBytes(this.settings.maxRequestBytes);
  }

  /** Fetches [start, end) in one request (user or prefetch priority), handing out each item as its bytes arrive. */
  fetchSpan(start: number, end: number, items: T[], priority: 'user' | 'prefetch' = 'user'): Promise<void> {
    return this.fetchRange({ start, end, items, priority, stream: true });
  }

  /** Plans everything queued in this turn into ranges; user ranges first. */
  private flush(): void {
    this.flushScheduled = false;
    const queued = this.queue;
    this.queue = [];
    const byPriority = (p: QueuedPriority): T[] => queued.filter((q) => (q.item.urgent ? 'user' : q.priority) === p).map((q) => q.item);
    const { maxGapBytes, fetchTimeoutMs } = this.settings;
    const requestBytes = this.requestBytes;
    const user = coalesce(byPriority('user'), requestBytes, maxGapBytes);
    const background = coalesce(byPriority('background'), requestBytes, maxGapBytes);
    const deadline = fetchTimeoutMs ? { deadline: Date.now() + fetchTimeoutMs } : {};
    // Streamed: reads wait for their chunks, not for the request's end (the larger requests
    // grow, the more that matters), and the link is measured.
    for (const r of user) void this.fetchRange({ ...r, priority: 'user', stream: true, ...deadline });
    for (const r of background) void this.fetchRange({ ...r, priority: 'background', stream: true });
  }

  /** Resolves once every request started so far has ended (its chunks handed out, its counters updated). */
  async settled(): Promise<void> {
    while (this.active.size > 0) await Promise.all(this.active);
  }

  private fetchRange(range: QueuedRange<T>): Promise<void> {
    const p = this.fetchOne(range).finally(() => this.active.delete(p));
    this.active.add(p);
    return p;
  }

  /**
   * Fetches one range and hands out each of its chunks. Never throws.
   * A background range waits while user reads are in progress, unless one of them waits for it.
   */
  private async fetchOne(range: QueuedRange<T>): Promise<void> {
    const sema = range.priority === 'prefetch' ? this.prefetchSema : this.sema;
    await sema.acquire();
    // Checked with the slot in hand, so no background request starts while a user read is in progress.
    while (range.priority === 'background' && this.userActive > 0 && !range.items.some((w) => w.urgent)) {
      this.sema.release();
      await new Promise<void>((r) => this.idleWaiters.push(r));
      await this.sema.acquire();
    }
    const observed = metrics.startChunkFetch(range.items.length);
    const hand = (item: T, buf: Buffer): Promise<void> =>
      this.sink.arrived(item, buf.subarray(item.chunk.compressedOffset - range.start, item.chunk.compressedEnd - range.start), () => observed());
    const early = new Set<T>();
    const earlyDone: Array<Promise<void>> = [];
    let bytes: Buffer;
    const timeoutMs = this.settings.fetchTimeoutMs;
    const deadline = range.deadline ?? (timeoutMs ? Date.now() + timeoutMs : undefined);
    const signal = deadline !== undefined ? AbortSignal.timeout(Math.max(1, deadline - Date.now())) : undefined;
    try {
      bytes =
        range.stream && this.blob.readParts
          ? await this.readStreaming(range, signal, (item, buf) => {
              early.add(item);
              earlyDone.push(hand(item, buf));
            })
          : await this.blob.read(range.start, range.end - range.start, signal);
      this.counters.fetchedBytes += bytes.length;
      this.counters.fetchedRequests++;
      this.sink.fetched?.(bytes.length);
    } catch (e) {
      observed(true);
      const first = describeEntry(this.layerDigest, range.items[0]!.entry);
      // Given up at the deadline, the error is only the abort (the failures before it were logged as they came).
      const err = signal?.aborted
        ? new FetchTimeoutError(`${first}: cannot fetch bytes [${range.start}, ${range.end}) of the layer: no data within fetch.timeout (${formatDuration(timeoutMs!)})`)
        : new LayerReadError(`${first}: cannot fetch bytes [${range.start}, ${range.end}) of the layer: ${(e as Error).message}`, { cause: e });
      for (const item of range.items) this.sink.failed(item, err);
      return;
    } finally {
      sema.release();
    }
    await Promise.all([...earlyDone, ...range.items.filter((item) => !early.has(item)).map((item) => hand(item, bytes))]);
  }

  /** Reads the range in one request, calling `ready` for each item as soon as its bytes are in; resolves with all of them. */
  private async readStreaming(range: QueuedRange<T>, signal: AbortSignal | undefined, ready: (item: T, bytes: Buffer) => void): Promise<Buffer> {
    const length = range.end - range.start;
    const buf = Buffer.allocUnsafe(length);
    const byEnd = [...range.items].sort((a, b) => a.chunk.compressedEnd - b.chunk.compressedEnd);
    let n = 0;
    let next = 0;
    const sent = performance.now();
    let first: number | undefined;
    for await (const part of this.blob.readParts!(range.start, length, signal)) {
      first ??= performance.now();
      if (n + part.length > length) throw new Error(`the source sent more than the ${length} bytes asked for`);
      part.copy(buf, n);
      n += part.length;
      while (next < byEnd.length && byEnd[next]!.chunk.compressedEnd - range.start <= n) ready(byEnd[next++]!, buf);
    }
    if (n !== length) throw new Error(`the source sent ${n} of the ${length} bytes asked for`);
    if (first !== undefined) this.link.sample(length, first - sent, performance.now() - first);
    return buf;
  }
}
