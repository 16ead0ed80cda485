import { FormatError } from '../errors.js';
import type { BlobReader } from '../source/types.js';

/** Bytes [offset, end) of a blob, taken from `have` (which holds [haveOffset, …)) when it covers them. */
export async function readRange(blob: BlobReader, layer: string, offset: number, end: number, what: string, have?: { offset: number; bytes: Buffer }): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(end) || offset < 0 || end < offset || end > blob.size)
    throw new FormatError(`layer ${layer}: ${what} range [${offset}, ${end}) is outside the ${blob.size}-byte blob`);
  if (have && offset >= have.offset && end <= have.offset + have.bytes.length) return have.bytes.subarray(offset - have.offset, end - have.offset);
  return blob.read(offset, end - offset);
}

/** The last `n` bytes of a blob (fewer if the blob is smaller). */
export async function readTail(blob: BlobReader, n: number): Promise<{ offset: number; bytes: Buffer }> {
  const len = Math.min(n, blob.size);
  return { offset: blob.size - len, bytes: await blob.read(blob.size - len, len) };
}
