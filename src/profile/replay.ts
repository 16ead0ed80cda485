/**
 * Replaying a start-up profile on one layer: the chunks that hold the profile's reads are
 * fetched at once, as large range requests in profile order, on prefetch slots of their own
 * (reads join them and never queue behind them). Bounded in bytes and requests, cancellable.
 * A profile never changes the bytes served; what in it does not fit the layer is skipped
 * and counted, for one warning per profile.
 */
import type { LayerReader, Located } from '../fetch/layer-reader.js';
import { chunksCovering, coalesce, type PlannedRange } from '../fetch/plan.js';
import type { LayerToc, TocEntry } from '../formats/toc.js';
import type { Descriptor } from '../source/types.js';
import type { ProfileMatch } from './store.js';
import type { Profile } from './profile.js';

/** A request of a replay spans at most this many compressed bytes. */
export const REPLAY_REQUEST_BYTES = 4 * 1024 * 1024;
/** Gaps between wanted chunks a replay may bridge to save requests (each a round trip)... */
export const REPLAY_MAX_GAP_BYTES = 256 * 1024;
/** ...as long as the replay fetches at most this much more than the chunks it wants. */
export const REPLAY_MAX_OVERHEAD = 1.2;

export interface ReplayBudget {
  /** Compressed bytes still allowed (shared by the layers of one image). */
  bytes: number;
  requests: number;
}

/** What in a profile did not fit the layer (each kind counted, none fatal). */
export interface ReplaySkips {
  /** Paths that are not a regular file of the layer. */
  unknownPaths: number;
  /** Paths that could not be in any image (absolute, `..`, NUL). */
  outsidePaths: number;
  /** Reads whose recorded file digest differs from the layer's TOC although the profile names this very layer. */
  digestMismatches: number;
  /** Chunks left out when the budget ran out. */
  overBudget: number;
}

export interface ReplayResult extends ReplaySkips {
  /** Compressed bytes fetched. */
  bytes: number;
  requests: number;
  /** Chunks the profile asked for that were already cached or being fetched. */
  alreadyThere: number;
  /** Requests that failed (their reads fetch what they need themselves). */
  failedRequests: number;
}

export interface ReplayLayer {
  /** Position in the image, bottom = 0. */
  index: number;
  descriptor: Descriptor;
  toc: LayerToc;
  reader: LayerReader;
}

function outsideImage(path: string): boolean {
  return path.startsWith('/') || path.includes('\0') || path.split('/').some((s) => s === '..');
}

/** The regular files of a layer by path. */
function filesOf(toc: LayerToc): Map<string, TocEntry> {
  const m = new Map<string, TocEntry>();
  for (const e of toc.entries) if (e.type === 'reg') m.set(e.path, e);
  return m;
}

/**
 * The chunks of `layer` the profile's reads need, in profile order. A read belongs to the
 * layer when the profile's layer is this one (same blob or TOC digest); with a profile of
 * another image (`match` layer or repository), reads whose layer is not in this image are
 * matched by path, to the topmost image layer holding the file (`topmostHolder`).
 */
export function chunksForLayer(profile: Profile, match: ProfileMatch, layer: ReplayLayer, topmostHolder: (path: string) => number | undefined, skips: ReplaySkips): Located[] {
  const files = filesOf(layer.toc);
  const own = new Set<number>();
  profile.layers.forEach((l, i) => {
    if (l.digest === layer.descriptor.digest || (l.tocDigest !== undefined && layer.toc.tocDigest === l.tocDigest)) own.add(i);
  });
  const seen = new Set<string>();
  const out: Located[] = [];
  for (const r of profile.reads) {
    const exact = own.has(r.layer);
    if (!exact && (match === 'manifest' || topmostHolder(r.path) !== layer.index)) continue;
    if (outsideImage(r.path)) {
      if (exact) skips.outsidePaths++;
      continue;
    }
    const entry = files.get(r.path);
    if (!entry) {
      if (exact) skips.unknownPaths++;
      continue;
    }
    if (exact && r.digest && entry.digest && r.digest !== entry.digest) {
      skips.digestMismatches++;
      continue;
    }
    const end = Math.min(entry.size, r.offset + r.length);
    for (const chunk of chunksCovering(entry, r.offset, end)) {
      if (chunk.zeros || chunk.compressedOffset < 0 || seen.has(chunk.digest)) continue;
      seen.add(chunk.digest);
      out.push({ chunk, entry });
    }
  }
  return out;
}

/**
 * Fetches `wanted` (in profile order) into the cache: what is not cached is coalesced into
 * requests of up to REPLAY_REQUEST_BYTES, started in the order of their first chunk in the
 * profile, within `budget`. Stops starting requests when `signal` aborts.
 */
export async function replayChunks(reader: LayerReader, wanted: readonly Located[], budget: ReplayBudget, signal: AbortSignal | undefined, skips: ReplaySkips): Promise<ReplayResult> {
  const result: ReplayResult = { ...skips, bytes: 0, requests: 0, alreadyThere: 0, failedRequests: 0 };
  const missing = await reader.uncached(wanted);
  result.alreadyThere = wanted.length - missing.length;
  const order = new Map(missing.map((l, i) => [l.chunk.digest, i]));
  const ranges = planReplay(missing, reader.maxGapBytes)
    .map((r) => ({ ...r, first: Math.min(...r.items.map((l) => order.get(l.chunk.digest)!)) }))
    .sort((a, b) => a.first - b.first);
  const chosen: typeof ranges = [];
  for (const r of ranges) {
    const cost = r.end - r.start;
    if (budget.requests <= 0 || budget.bytes < cost) {
      result.overBudget += r.items.length;
      continue;
    }
    budget.requests--;
    budget.bytes -= cost;
    chosen.push(r);
  }
  // Requests start in profile order; the reader's prefetch slots bound how many run at once.
  await Promise.all(
    chosen.map(async (r) => {
      if (signal?.aborted) return;
      try {
        const fetched = await reader.fetchSpan(r.start, r.end, undefined, 'prefetch');
        if (fetched > 0) {
          result.bytes += fetched;
          result.requests++;
        }
      } catch {
        result.failedRequests++;
      }
    }),
  );
  return result;
}

/**
 * Ranges for `missing`: first neighbours within the reader's own gap, then the smallest gaps
 * between those ranges bridged, smallest first, while the bytes bridged stay within
 * (REPLAY_MAX_OVERHEAD − 1) of the wanted bytes and no range passes REPLAY_REQUEST_BYTES.
 */
function planReplay(missing: Located[], readerGap: number): PlannedRange<Located>[] {
  const ranges = coalesce(missing, REPLAY_REQUEST_BYTES, readerGap);
  const wantedBytes = missing.reduce((n, l) => n + l.chunk.compressedEnd - l.chunk.compressedOffset, 0);
  let budget = (REPLAY_MAX_OVERHEAD - 1) * wantedBytes;
  const gaps = ranges.slice(1).map((r, i) => ({ i, bytes: r.start - ranges[i]!.end })).filter((g) => g.bytes <= REPLAY_MAX_GAP_BYTES);
  const join = new Set<number>();
  for (const g of gaps.sort((a, b) => a.bytes - b.bytes)) {
    if (g.bytes > budget) break;
    budget -= g.bytes;
    join.add(g.i);
  }
  const out: PlannedRange<Located>[] = [];
  ranges.forEach((r, i) => {
    const last = out.at(-1);
    if (last && join.has(i - 1) && r.end - last.start <= REPLAY_REQUEST_BYTES) {
      last.end = r.end;
      last.items.push(...r.items);
    } else out.push({ start: r.start, end: r.end, items: [...r.items] });
  });
  return out;
}
