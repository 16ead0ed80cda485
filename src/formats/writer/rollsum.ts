/**
 * containers/storage's content-defined chunking (docs/formats.md §2.8): a bup-style rolling sum
 * over a 64-byte window ends a chunk after a byte when its low 16 bits are all ones; a run of
 * at least 1024 zero bytes becomes a chunk of its own (`zeros`). State is per file.
 */

const WINDOW = 64;
const CHAR_OFFSET = 31;
const SPLIT_MASK = 0xffff;
export const HOLE_THRESHOLD = 1024;
/**
 * tocfs's own bound on one data chunk (c/storage has none): keeps the writer's memory bounded
 * for data the rolling sum never splits (long runs of one non-zero byte). Real data splits
 * long before it, so boundaries still match c/storage's.
 */
export const MAX_CHUNK = 8 * 1024 * 1024;

export class RollSum {
  // int32 arithmetic (wraps like Go's uint32; only the low 16 bits are tested)
  s1 = (WINDOW * CHAR_OFFSET) | 0;
  s2 = (WINDOW * (WINDOW - 1) * CHAR_OFFSET) | 0;
  readonly window = new Uint8Array(WINDOW);
  wofs = 0;

  /** Rolls one byte in; returns true when a chunk ends after it. */
  roll(c: number): boolean {
    const d = this.window[this.wofs]!;
    this.s1 = (this.s1 + c - d) | 0;
    this.s2 = (this.s2 + this.s1 - WINDOW * (d + CHAR_OFFSET)) | 0;
    this.window[this.wofs] = c;
    this.wofs = (this.wofs + 1) & (WINDOW - 1);
    return (this.s2 & SPLIT_MASK) === SPLIT_MASK;
  }

  /** Rolls `n` zeros in without split checks (a hole). After a full window of zeros the state no longer changes. */
  rollZeros(n: number): void {
    for (let i = 0; i < Math.min(n, WINDOW); i++) this.roll(0);
  }

  /**
   * Rolls non-zero bytes of `b` from `from` on; stops after a split (returns the index after
   * the splitting byte), at a zero byte (returns its index, no roll), or at the end.
   */
  rollUntil(b: Uint8Array, from: number): { at: number; split: boolean } {
    const w = this.window;
    let s1 = this.s1;
    let s2 = this.s2;
    let wofs = this.wofs;
    let i = from;
    let split = false;
    for (; i < b.length; i++) {
      const c = b[i]!;
      if (c === 0) break;
      const d = w[wofs]!;
      s1 = (s1 + c - d) | 0;
      s2 = (s2 + s1 - WINDOW * (d + CHAR_OFFSET)) | 0;
      w[wofs] = c;
      wofs = (wofs + 1) & (WINDOW - 1);
      if ((s2 & SPLIT_MASK) === SPLIT_MASK) {
        i++;
        split = true;
        break;
      }
    }
    this.s1 = s1;
    this.s2 = s2;
    this.wofs = wofs;
    return { at: i, split };
  }
}

export type ChunkPiece = { kind: 'data'; parts: Buffer[]; size: number } | { kind: 'zeros'; size: number };

/**
 * Feeds file content in pieces and calls `onChunk` for every finished chunk, in order.
 * Zero runs shorter than the threshold are ordinary data.
 */
export class Chunker {
  private sum = new RollSum();
  private parts: Buffer[] = [];
  private size = 0;
  private zeroRun = 0;

  constructor(private onChunk: (c: ChunkPiece) => Promise<void>) {}

  private async endData(): Promise<void> {
    if (this.size === 0) return;
    const parts = this.parts;
    const size = this.size;
    this.parts = [];
    this.size = 0;
    await this.onChunk({ kind: 'data', parts, size });
  }

  /** Emits the pending zero run: a hole, or ordinary bytes. */
  private async flushZeros(): Promise<void> {
    const n = this.zeroRun;
    if (n === 0) return;
    this.zeroRun = 0;
    if (n >= HOLE_THRESHOLD) {
      await this.endData();
      this.sum.rollZeros(n);
      await this.onChunk({ kind: 'zeros', size: n });
      return;
    }
    let start = 0;
    for (let i = 0; i < n; i++) {
      if (this.sum.roll(0) || this.size + i + 1 - start >= MAX_CHUNK) {
        this.push(Buffer.alloc(i + 1 - start));
        start = i + 1;
        await this.endData();
      }
    }
    if (n > start) this.push(Buffer.alloc(n - start));
  }

  private push(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.size += b.length;
  }

  async write(piece: Buffer): Promise<void> {
    let start = 0; // first byte of `piece` not yet in a chunk or zero run
    let i = 0;
    while (i < piece.length) {
      if (piece[i] === 0) {
        if (this.zeroRun === 0) this.push(piece.subarray(start, i));
        this.zeroRun++;
        start = ++i;
        continue;
      }
      if (this.zeroRun > 0) await this.flushZeros();
      // Non-zero run: roll up to the next split or zero, at most up to the chunk cap.
      const limit = Math.min(piece.length, i + Math.max(1, MAX_CHUNK - this.size - (i - start)));
      const r = this.sum.rollUntil(limit === piece.length ? piece : piece.subarray(0, limit), i);
      i = r.at;
      if (r.split || this.size + (i - start) >= MAX_CHUNK) {
        this.push(piece.subarray(start, i));
        start = i;
        await this.endData();
      }
    }
    if (this.zeroRun === 0) this.push(piece.subarray(start));
  }

  async end(): Promise<void> {
    await this.flushZeros();
    await this.endData();
  }
}
