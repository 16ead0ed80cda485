/** Grouping chunks into range requests, and finding the chunks that cover a byte range. */
import type { Chunk, TocEntries, TocEntry } from '../formats/toc.js';

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
export function firstNotBefore<T>(sorted: ArrayLike<T>, before: (item: T) => boolean): number {
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

/**
 * Every chunk of a layer that has a blob position (not zeros), in blob order (compressed
 * offset, then inner offset), held as positions into the TOC: 24 bytes a chunk, where a list
 * of Located objects would hold every entry and chunk object of a parsed TOC's views (formats/
 * toc-binary.ts) for as long as the layer is served. A Located is made when asked for.
 */
export class BlobOrder implements Iterable<Located> {
  /** The entry asked for last, whose chunk list the next ask most likely needs too. */
  private last: { index: number; entry: TocEntry } | undefined;

  private constructor(
    private readonly entries: TocEntries,
    private readonly entryOf: Uint32Array,
    private readonly chunkOf: Uint32Array,
    private readonly starts: Float64Array,
    private readonly ends: Float64Array,
  ) {}

  static of(entries: TocEntries): BlobOrder {
    let count = 0;
    for (const e of entries) for (const c of e.chunks) if (!c.zeros && c.compressedOffset >= 0) count++;
    const entryOf = new Uint32Array(count);
    const chunkOf = new Uint32Array(count);
    const starts = new Float64Array(count);
    const inner = new Float64Array(count);
    const ends = new Float64Array(count);
    let k = 0;
    let sorted = true;
    let ei = 0;
    for (const e of entries) {
      const chunks = e.chunks;
      for (let ci = 0; ci < chunks.length; ci++) {
        const c = chunks[ci]!;
        if (c.zeros || c.compressedOffset < 0) continue;
        entryOf[k] = ei;
        chunkOf[k] = ci;
        starts[k] = c.compressedOffset;
        inner[k] = c.innerOffset;
        ends[k] = c.compressedEnd;
        if (k > 0 && (starts[k - 1]! > starts[k]! || (starts[k - 1] === starts[k] && inner[k - 1]! > inner[k]!))) sorted = false;
        k++;
      }
      ei++;
    }
    if (sorted) return new BlobOrder(entries, entryOf, chunkOf, starts, ends);
    // TOCs list files in blob order as a rule; a converter's TOC may not.
    const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => starts[a]! - starts[b]! || inner[a]! - inner[b]!);
    const pick = <T extends Uint32Array | Float64Array>(from: T, make: (n: number) => T): T => {
      const out = make(count);
      order.forEach((j, i) => (out[i] = from[j]!));
      return out;
    };
    return new BlobOrder(entries, pick(entryOf, (n) => new Uint32Array(n)), pick(chunkOf, (n) => new Uint32Array(n)), pick(starts, (n) => new Float64Array(n)), pick(ends, (n) => new Float64Array(n)));
  }

  get length(): number {
    return this.starts.length;
  }

  /** The compressed offset of the i-th chunk. */
  startAt(i: number): number {
    return this.starts[i]!;
  }

  at(i: number): Located {
    const index = this.entryOf[i]!;
    if (this.last?.index !== index) this.last = { index, entry: this.entries.at(index)! };
    const entry = this.last.entry;
    return { chunk: entry.chunks[this.chunkOf[i]!]!, entry };
  }

  /** Index of the first chunk that starts at or after compressed offset `offset`. */
  firstAt(offset: number): number {
    return firstNotBefore(this.starts, (start) => start < offset);
  }

  /** The chunks wholly inside compressed bytes [start, end). */
  within(start: number, end: number): Located[] {
    const out: Located[] = [];
    for (let i = this.firstAt(start); i < this.starts.length && this.starts[i]! < end; i++) if (this.ends[i]! <= end) out.push(this.at(i));
    return out;
  }

  /** Total length of the union of the chunks' compressed extents. */
  extentBytes(): number {
    return unionBytes(this.starts, this.ends);
  }

  *[Symbol.iterator](): Iterator<Located> {
    for (let i = 0; i < this.starts.length; i++) yield this.at(i);
  }
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
export function extentBytes(items: Iterable<Located>): number {
  const sorted = [...items].sort((a, b) => a.chunk.compressedOffset - b.chunk.compressedOffset);
  return unionBytes(
    sorted.map((l) => l.chunk.compressedOffset),
    sorted.map((l) => l.chunk.compressedEnd),
  );
}

/** Total length of the union of the ranges [starts[i], ends[i]), given in order of their starts. */
function unionBytes(starts: ArrayLike<number>, ends: ArrayLike<number>): number {
  let total = 0;
  let end = -Infinity;
  for (let i = 0; i < starts.length; i++) {
    const s = Math.max(starts[i]!, end);
    if (ends[i]! > s) total += ends[i]! - s;
    end = Math.max(end, ends[i]!);
  }
  return total;
}
