/**
 * Fetching ahead of reads: the eStargz prefetch landmark at mount time, and the whole layer
 * in the background at low priority (user reads go first).
 */
import type { LayerReader, Located } from './layer-reader.js';
import { coalesce } from './plan.js';

export interface FetchProgress {
  /** Compressed bytes of chunks done (fetched or found cached). */
  done: number;
  total: number;
}

export type ProgressCallback = (p: FetchProgress) => void;

const BACKGROUND_WRITE_BACKLOG = 32 * 1024 * 1024;

const chunkBytes = (l: Located): number => l.chunk.compressedEnd - l.chunk.compressedOffset;

/**
 * eStargz `.prefetch.landmark`: the files before it are the ones the workload needs first.
 * Fetches blob bytes [0, prefetchEnd) in one request and caches every chunk below the
 * landmark. Returns the bytes fetched (0 when there is no landmark or all is cached).
 */
export async function prefetchLandmark(reader: LayerReader, onProgress?: ProgressCallback): Promise<number> {
  const end = reader.toc.prefetchEnd;
  if (!end || reader.toc.noPrefetch) return 0;
  const inside = reader.chunksInBlobOrder().within(0, end);
  const total = inside.reduce((n, l) => n + chunkBytes(l), 0);
  let done = 0;
  return reader.fetchSpan(0, end, (l) => {
    done += chunkBytes(l);
    onProgress?.({ done, total });
  });
}

export interface FetchAllOptions {
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Range requests of the background fetch in flight at once (default 2). */
  concurrency?: number;
  /** Chunks per planning step (default 1 MiB of compressed bytes, the request cap). */
  batchBytes?: number;
}

/**
 * Fetches every chunk of the layer not cached yet, in blob order, at low priority: each
 * request waits while user reads are in progress. Stops (rejecting with the abort reason)
 * when `signal` aborts; fetch errors reject too (nothing unverified is ever cached).
 */
export async function fetchAll(reader: LayerReader, opts: FetchAllOptions = {}): Promise<void> {
  const all = Array.from(reader.chunksInBlobOrder());
  const total = all.reduce((n, l) => n + chunkBytes(l), 0);
  const batches = coalesce(all, opts.batchBytes ?? 1024 * 1024, reader.maxGapBytes).map((r) => r.items);
  let done = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      opts.signal?.throwIfAborted();
      const batch = batches[next++]!;
      const missing = await reader.uncached(batch);
      if (missing.length > 0) {
        await reader.obtain(missing, 'background');
        // Do not outrun the disk: what is fetched in the background is only worth it once stored.
        await reader.cache.writesBelow(BACKGROUND_WRITE_BACKLOG);
      }
      done += batch.reduce((n, l) => n + chunkBytes(l), 0);
      opts.onProgress?.({ done, total });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 2) }, worker));
}
