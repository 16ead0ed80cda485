import type { BlobReader } from './types.js';

/** Counts the bytes and requests that pass through a BlobReader (for `--stats` and tests). */
export class ReadCounter {
  bytes = 0;
  requests = 0;
  readonly perBlob = new Map<string, { bytes: number; requests: number }>();

  wrap(blob: BlobReader): BlobReader {
    const counter = this;
    const note = (n: number): void => {
      counter.bytes += n;
      counter.requests += 1;
      const b = counter.perBlob.get(blob.digest) ?? { bytes: 0, requests: 0 };
      b.bytes += n;
      b.requests += 1;
      counter.perBlob.set(blob.digest, b);
    };
    const parts = blob.readParts?.bind(blob);
    return {
      digest: blob.digest,
      size: blob.size,
      async read(offset, length, signal) {
        const buf = await blob.read(offset, length, signal);
        note(buf.length);
        return buf;
      },
      ...(parts && {
        async *readParts(offset: number, length: number, signal?: AbortSignal): AsyncIterable<Buffer> {
          let n = 0;
          try {
            for await (const part of parts(offset, length, signal)) {
              n += part.length;
              yield part;
            }
          } finally {
            note(n);
          }
        },
      }),
      async stream(signal) {
        const s = await blob.stream(signal);
        s.on('data', (chunk: Buffer) => {
          counter.bytes += chunk.length;
        });
        counter.requests += 1;
        return s;
      },
    };
  }
}
