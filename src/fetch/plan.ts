/** Grouping chunks into range requests, and finding the chunks that cover a byte range. */
import type { Chunk, TocEntry } from '../formats/toc.js';

/** A chunk and the entry that holds it (for error messages). */
export interface Located {
  chunk: Chunk;
  entry: TocEntry;
}

export interface PlannedRange<T extends Located> {
  start: number;
  end: number;
  items: T[];
}

/**
 * Groups chunks whose compressed extents touch, overlap or lie at most `maxGap` bytes apart
 * into ranges of at most `cap` bytes (a single chunk bigger than the cap gets a range of its
 * own). zstd:chunked puts each tar header in a small frame of its own between two files'
 * content, so neighbouring files are a few hundred bytes apart, not touching.
 */
export function coalesce<T extends Located>(items: T[], cap: number, maxGap = 0): PlannedRange<T>[] {
  const sorted = [...items].sort((a, b) => a.chunk.compressedOffset - b.chunk.compressedOffset);
  const ranges: PlannedRange<T>[] = [];
  let cur: PlannedRange<T> | undefined;
  for (const it of sorted) {
    const { compressedOffset: s, compressedEnd: e } = it.chunk;
    if (cur && s <= cur.end + maxGap && Math.max(cur.end, e) - cur.start <= cap) {
      cur.end = Math.max(cur.end, e);
      cur.items.push(it);
    } else {
      cur = { start: s, end: e, items: [it] };
      ranges.push(cur);
    }
  }
  return ranges;
}

/** Index of the first of `sorted` for which `before` is false (`before` holds for a prefix). */
export function firstNotBefore<T>(sorted: readonly T[], before: (item: T) => boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (before(sorted[mid]!)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first chunk of `chunks` (in file order) that ends after `offset`. */
export function firstChunkAfter(chunks: readonly Chunk[], offset: number): number {
  return firstNotBefore(chunks, (c) => c.offset + c.size <= offset);
}

/** Index of the first of `order` (chunks in blob order) that starts at or after compressed offset `offset`. */
export function firstInBlobAt(order: readonly Located[], offset: number): number {
  return firstNotBefore(order, (l) => l.chunk.compressedOffset < offset);
}

/** The chunks of a regular file that cover [start, end). */
export function chunksCovering(entry: TocEntry, start: number, end: number): Chunk[] {
  const out: Chunk[] = [];
  for (let i = firstChunkAfter(entry.chunks, start); i < entry.chunks.length; i++) {
    const c = entry.chunks[i]!;
    if (c.offset >= end) break;
    out.push(c);
  }
  return out;
}

/** Total length of the union of the chunks' compressed extents. */
export function extentBytes(items: readonly Located[]): number {
  const sorted = [...items].sort((a, b) => a.chunk.compressedOffset - b.chunk.compressedOffset);
  let total = 0;
  let end = -Infinity;
  for (const { chunk: c } of sorted) {
    const s = Math.max(c.compressedOffset, end);
    if (c.compressedEnd > s) total += c.compressedEnd - s;
    end = Math.max(end, c.compressedEnd);
  }
  return total;
}
