/**
 * Where a layer writer puts its compressed bytes: a file, written sequentially, with the
 * running offset (TOC offsets are blob offsets) and the blob's sha256.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';

const FLUSH_AT = 1024 * 1024;

export class BlobSink {
  /** Bytes written so far = offset of the next byte in the blob. */
  offset = 0;
  private hash: Hash = createHash('sha256');
  private pending: Buffer[] = [];
  private pendingLength = 0;

  private constructor(readonly path: string, private fh: FileHandle) {}

  static async create(path: string): Promise<BlobSink> {
    return new BlobSink(path, await open(path, 'w'));
  }

  async write(data: Buffer): Promise<void> {
    if (data.length === 0) return;
    this.hash.update(data);
    this.offset += data.length;
    this.pending.push(data);
    this.pendingLength += data.length;
    if (this.pendingLength >= FLUSH_AT) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pendingLength === 0) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingLength = 0;
    let done = 0;
    while (done < data.length) done += (await this.fh.write(data, done, data.length - done)).bytesWritten;
  }

  /** Flushes and closes; returns the blob's digest and size. */
  async finish(): Promise<{ digest: string; size: number }> {
    await this.flush();
    await this.fh.close();
    return { digest: 'sha256:' + this.hash.digest('hex'), size: this.offset };
  }

  /** Closes and deletes the partial file. */
  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await rm(this.path, { force: true });
  }
}
