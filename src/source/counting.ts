import { tapBlob } from './tap.js';
import type { BlobReader } from './types.js';

/** Counts the bytes and requests that pass through a BlobReader (for `--stats` and tests). */
export class ReadCounter {
  bytes = 0;
  requests = 0;
  readonly perBlob = new Map<string, { bytes: number; requests: number }>();

  wrap(blob: BlobReader): BlobReader {
    const mine = (): { bytes: number; requests: number } => {
      let b = this.perBlob.get(blob.digest);
      if (!b) this.perBlob.set(blob.digest, (b = { bytes: 0, requests: 0 }));
      return b;
    };
    return tapBlob(blob, {
      bytes: (n) => {
        this.bytes += n;
        mine().bytes += n;
      },
      request: () => {
        this.requests += 1;
        mine().requests += 1;
      },
    });
  }
}
