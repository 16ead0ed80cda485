/**
 * Reading a layer's `blob` file: the exact compressed blob, fetched lazily from the
 * registry in large sequential windows (c/storage reads it from offset 0 to the end when it
 * exports a layer). The bytes are hashed as they go out; the read that completes the blob
 * fails with EIO unless the whole blob matched its digest, so a consumer that reads to the
 * end never gets a wrong blob without an error.
 */
import { createHash, type Hash } from 'node:crypto';
import { DigestMismatchError } from '../errors.js';
import { metrics } from '../metrics/index.js';
import type { LayerContent } from './layers.js';

/** One range request per this many bytes of a sequential read. */
export const BLOB_WINDOW_BYTES = 4 * 1024 * 1024;

export class BlobFileReader {
  private window: { start: number; data: Buffer } | undefined;
  private next: { start: number; data: Promise<Buffer> } | undefined;
  private hash: Hash | undefined = createHash('sha256');
  private hashedTo = 0;

  constructor(private readonly content: LayerContent) {}

  private fetch(start: number): Promise<Buffer> {
    const size = this.content.descriptor.size;
    const length = Math.min(BLOB_WINDOW_BYTES, size - start);
    return this.content.blob.read(start, length).then((data) => {
      this.content.blobBytesRead += data.length;
      return data;
    });
  }

  private async windowAt(pos: number): Promise<{ start: number; data: Buffer }> {
    const w = this.window;
    if (w && pos >= w.start && pos < w.start + w.data.length) return w;
    const start = Math.floor(pos / BLOB_WINDOW_BYTES) * BLOB_WINDOW_BYTES;
    const data = this.next?.start === start ? await this.next.data : await this.fetch(start);
    this.window = { start, data };
    const following = start + data.length;
    this.next = following < this.content.descriptor.size ? { start: following, data: this.fetch(following) } : undefined;
    this.next?.data.catch(() => undefined);
    return this.window;
  }

  /** Up to `length` bytes at `pos` (fewer at the end of the blob). */
  async read(pos: number, length: number): Promise<Buffer> {
    const size = this.content.descriptor.size;
    const end = Math.min(size, pos + length);
    const parts: Buffer[] = [];
    for (let at = pos; at < end; ) {
      const w = await this.windowAt(at);
      const slice = w.data.subarray(at - w.start, Math.min(end, w.start + w.data.length) - w.start);
      parts.push(slice);
      at += slice.length;
    }
    const out = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    this.verify(pos, out);
    return out;
  }

  /** Hashes what goes out in order; throws on the read that completes a blob whose digest does not match. */
  private verify(pos: number, data: Buffer): void {
    if (!this.hash || pos !== this.hashedTo) {
      // Out of order: this handle can no longer vouch for the whole blob (nothing to check at the end).
      if (pos < this.hashedTo && pos + data.length <= this.hashedTo) return;
      this.hash = undefined;
      return;
    }
    this.hash.update(data);
    this.hashedTo += data.length;
    if (this.hashedTo !== this.content.descriptor.size) return;
    const actual = `sha256:${this.hash.digest('hex')}`;
    this.hash = undefined;
    const expected = this.content.descriptor.digest;
    if (actual !== expected) {
      metrics.verificationFailed(expected, 'blob');
      const err = new DigestMismatchError(`layer ${expected}: blob read from the registry`, expected, actual);
      this.content.lastError = err.message;
      throw err;
    }
  }
}
