/** Plain (TOC-less) layers: uncompressed tar, single-member gzip, or zstd frames. */
import { createHash } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { compress as zstdCompress } from '@mongodb-js/zstd';
import { BlobSink } from './sink.js';
import { LayerMediaTypes, type TarInput, type WrittenLayer } from './types.js';

export type PlainCodec = 'tar' | 'gzip' | 'zstd';

/** zstd input is cut into frames of this size (the binding has no streaming encoder). */
const ZSTD_FRAME = 8 * 1024 * 1024;

async function* hashed(src: AsyncIterable<Buffer> | Iterable<Buffer>, h: ReturnType<typeof createHash>, count: { n: number }, onProgress?: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const b of src) {
    h.update(b);
    count.n += b.length;
    onProgress?.(count.n);
    yield b;
  }
}

async function* zstdFrames(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let len = 0;
  for await (const b of src) {
    parts.push(b);
    len += b.length;
    if (len >= ZSTD_FRAME) {
      yield await zstdCompress(Buffer.concat(parts), 3);
      parts = [];
      len = 0;
    }
  }
  if (len > 0) yield await zstdCompress(Buffer.concat(parts), 3);
}

export async function writePlainLayer(tar: TarInput, codec: PlainCodec, outPath: string, onProgress?: (n: number) => void): Promise<WrittenLayer> {
  const sink = await BlobSink.create(outPath);
  const h = createHash('sha256');
  const count = { n: 0 };
  try {
    const src = hashed(tar(), h, count, onProgress);
    const out: AsyncIterable<Buffer> = codec === 'tar' ? src : codec === 'gzip' ? Readable.from(src).pipe(createGzip()) : zstdFrames(src);
    for await (const b of out) await sink.write(b);
    const { digest, size } = await sink.finish();
    return { mediaType: LayerMediaTypes[codec], digest, size, diffId: 'sha256:' + h.digest('hex'), uncompressedSize: count.n, annotations: {} };
  } catch (e) {
    await sink.abort();
    throw e;
  }
}
