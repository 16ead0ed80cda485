/**
 * Compressed frames written in order while several compress at once (zstd and zlib run on
 * the libuv pool): a frame's blob offset is known only once every earlier frame is written,
 * so writers record frame indices and resolve offsets after `drain()`.
 */
import type { BlobSink } from './sink.js';

export class OrderedFrames {
  private chain: Promise<void> = Promise.resolve();
  private inFlight: Array<Promise<void>> = [];
  private starts: number[] = [];
  private ends: number[] = [];

  constructor(private sink: BlobSink, private maxInFlight = 8) {}

  /** Queues a frame (its compression already started); returns its index. Waits while too many are in flight. */
  async add(frame: Promise<Buffer> | Buffer): Promise<number> {
    const k = this.starts.length;
    this.starts.push(-1);
    this.ends.push(-1);
    const written = this.chain.then(async () => {
      const b = await frame;
      this.starts[k] = this.sink.offset;
      await this.sink.write(b);
      this.ends[k] = this.sink.offset;
    });
    written.catch(() => undefined); // surfaced by drain() or a later add()
    this.chain = written;
    this.inFlight.push(written);
    while (this.inFlight.length > this.maxInFlight) await this.inFlight.shift();
    return k;
  }

  /** Waits for every queued frame to be written; rethrows the first failure. */
  async drain(): Promise<void> {
    await this.chain;
    this.inFlight = [];
  }

  get count(): number {
    return this.starts.length;
  }

  /** Blob offset of frame `k` (after drain). */
  start(k: number): number {
    return this.starts[k]!;
  }

  /** Blob offset just past frame `k` (after drain). */
  end(k: number): number {
    return this.ends[k]!;
  }
}
