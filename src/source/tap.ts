import type { BlobReader } from './types.js';

export interface BlobTap {
  /** Bytes delivered, as they are delivered (a read's buffer, each readParts part, each stream chunk). */
  bytes(n: number): void;
  /** One read or stream that answered, or one readParts that ended (however it ended). */
  request?(): void;
}

/**
 * `blob` with what it delivers reported to `tap`, by every way of reading it. readParts is
 * kept when the source has it (dropping it would silently turn streamed ranges into
 * whole-range waits for everything above the wrapper).
 */
export function tapBlob(blob: BlobReader, tap: BlobTap): BlobReader {
  const parts = blob.readParts?.bind(blob);
  return {
    digest: blob.digest,
    size: blob.size,
    async read(offset, length, signal) {
      const buf = await blob.read(offset, length, signal);
      tap.request?.();
      tap.bytes(buf.length);
      return buf;
    },
    ...(parts && {
      async *readParts(offset: number, length: number, signal?: AbortSignal): AsyncIterable<Buffer> {
        try {
          for await (const part of parts(offset, length, signal)) {
            tap.bytes(part.length);
            yield part;
          }
        } finally {
          tap.request?.();
        }
      },
    }),
    async stream(signal) {
      const s = await blob.stream(signal);
      tap.request?.();
      s.on('data', (chunk: Buffer) => tap.bytes(chunk.length));
      return s;
    },
  };
}
