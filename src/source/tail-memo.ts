import type { BlobReader } from './types.js';

/** eStargz TOC probes read up to 32 KiB of the tail; zstd:chunked footers much less. */
const DEFAULT_TAIL_BYTES = 64 * 1024;

/**
 * `blob` keeping the bytes of its first read that ends at the blob's end (the footer/TOC probe,
 * at most `maxBytes`), so later reads inside them — a small layer's files and prefetch span,
 * which the probe often already covered whole — are answered without fetching them again.
 * The bytes are the source's own; chunk digests are still checked by whoever reads them.
 */
export function rememberTail(blob: BlobReader, maxBytes = DEFAULT_TAIL_BYTES): BlobReader {
  let tail: { offset: number; bytes: Buffer } | undefined;
  const known = (offset: number, length: number): Buffer | undefined =>
    tail && offset >= tail.offset && offset + length <= blob.size ? tail.bytes.subarray(offset - tail.offset, offset - tail.offset + length) : undefined;
  const parts = blob.readParts?.bind(blob);
  return {
    digest: blob.digest,
    size: blob.size,
    async read(offset, length, signal) {
      const hit = known(offset, length);
      if (hit) return hit;
      const buf = await blob.read(offset, length, signal);
      if (!tail && offset + length === blob.size && length <= maxBytes) tail = { offset, bytes: buf };
      return buf;
    },
    ...(parts && {
      async *readParts(offset: number, length: number, signal?: AbortSignal): AsyncIterable<Buffer> {
        const hit = known(offset, length);
        if (hit) yield hit;
        else yield* parts(offset, length, signal);
      },
    }),
    stream: (signal) => blob.stream(signal),
  };
}
