/**
 * A layer's chunks in blob order (fetch/plan.ts BlobOrder) over a TOC's parsed form, where every
 * entry is a view (formats/toc-binary.ts): the same chunks in the same order as over the entry
 * objects readLayerToc made, found by offset, spans and extents alike; a TOC not in blob order
 * comes out sorted; and a LayerReader over the parsed form serves every file's bytes, with
 * neighbouring small files fetched along.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ChunkCache } from '../../src/cache/chunk-cache.js';
import { LayerReader } from '../../src/fetch/layer-reader.js';
import { BlobOrder, extentBytes, type Located } from '../../src/fetch/plan.js';
import { extractChunk, readLayerToc } from '../../src/formats/index.js';
import { decodeParsedToc, encodeParsedToc, isColumnar } from '../../src/formats/toc-binary.js';
import type { ArrayToc, LayerToc } from '../../src/formats/toc.js';
import { seededContent, zeroContent, type FileSpec } from '../helpers/images.js';
import { memoryBlob, type TestLayer } from '../helpers/toc-repack.js';
import { writerLayer } from '../helpers/writer-layers.js';

const FILES: FileSpec[] = [
  { path: 'app', type: 'dir' },
  ...Array.from({ length: 12 }, (_, i): FileSpec => ({ path: `app/small-${i}.py`, content: seededContent(`blob-order-small-${i}`, 900 + 37 * i) })),
  { path: 'app/big.bin', content: seededContent('blob-order-big', 600_000) },
  { path: 'app/zeros.bin', content: zeroContent(200_000) },
  { path: 'app/link', type: 'symlink', linkName: 'big.bin' },
  { path: 'app/empty', content: '' },
];

const facts = (l: Located): string => `${l.entry.path} ${l.chunk.offset} ${l.chunk.compressedOffset}-${l.chunk.compressedEnd}+${l.chunk.innerOffset} ${l.chunk.digest}`;

describe('chunks in blob order over a parsed TOC', () => {
  let tmp: string;
  const layers: Record<string, TestLayer> = {};
  const objects: Record<string, ArrayToc> = {};
  const columns: Record<string, LayerToc> = {};

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-blob-order-'));
    for (const format of ['zstd:chunked', 'estargz'] as const) {
      const layer = await writerLayer(format, FILES, { chunkSize: 64 * 1024 });
      layers[format] = layer;
      objects[format] = await readLayerToc(layer.desc, memoryBlob(layer));
      columns[format] = decodeParsedToc(encodeParsedToc(objects[format]!, 'ctx')!, 'ctx')!;
      assert.ok(isColumnar(columns[format]!));
    }
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  for (const format of ['zstd:chunked', 'estargz'] as const) {
    it(`holds the same chunks, found the same ways, as over entry objects (${format})`, () => {
      const fromObjects = BlobOrder.of(objects[format]!.entries);
      const fromColumns = BlobOrder.of(columns[format]!.entries);
      const listed = Array.from(fromColumns, facts);
      assert.deepEqual(listed, Array.from(fromObjects, facts));
      // Every chunk with a blob position and nothing else: no zero chunk, nothing of the empty file.
      const positioned = objects[format]!.entries.flatMap((e) => e.chunks.filter((c) => !c.zeros && c.compressedOffset >= 0));
      assert.equal(fromColumns.length, positioned.length);
      assert.ok(fromColumns.length >= 12 + Math.ceil(600_000 / (64 * 1024)), 'the small files and big.bin at least');
      assert.ok(!listed.some((l) => l.startsWith('app/empty')));
      const starts = Array.from(fromColumns, (l) => l.chunk.compressedOffset);
      assert.deepEqual(starts, [...starts].sort((a, b) => a - b), 'in blob order');
      assert.equal(fromColumns.extentBytes(), extentBytes(Array.from(fromObjects)));
      const mid = fromColumns.at(7).chunk;
      assert.equal(fromColumns.firstAt(mid.compressedOffset), 7);
      assert.equal(fromColumns.firstAt(mid.compressedOffset + 1), 8);
      assert.equal(fromColumns.firstAt(Number.MAX_SAFE_INTEGER), fromColumns.length);
      const inside = fromColumns.within(fromColumns.at(3).chunk.compressedOffset, fromColumns.at(6).chunk.compressedEnd);
      assert.deepEqual(inside.map(facts), [3, 4, 5, 6].map((i) => facts(fromColumns.at(i))));
    });
  }

  it('sorts a TOC whose entries are not in blob order', () => {
    const toc = objects['zstd:chunked']!;
    const shuffled = [...toc.entries].reverse();
    const order = BlobOrder.of(shuffled);
    assert.deepEqual(Array.from(order, facts), Array.from(BlobOrder.of(toc.entries), facts));
  });

  for (const format of ['zstd:chunked', 'estargz'] as const) {
    it(`serves every file's bytes through a LayerReader over the parsed form (${format})`, async () => {
      const layer = layers[format]!;
      const blob = memoryBlob(layer);
      const cache = await ChunkCache.open({ dir: join(tmp, `cache-${format.replace(':', '-')}`) });
      const reader = new LayerReader({ layerDigest: layer.desc.digest, toc: columns[format]!, blob, cache });
      const byPath = new Map(Array.from(objects[format]!.entries, (e) => [e.path, e]));
      // What the file holds, decompressed straight from the layer's bytes with the entry objects' chunks.
      const want = async (path: string): Promise<Buffer> => {
        const e = byPath.get(path)!;
        const parts: Buffer[] = [];
        for (const c of e.chunks) parts.push(c.zeros ? Buffer.alloc(c.size) : await extractChunk(objects[format]!.compression, c, layer.bytes.subarray(c.compressedOffset, c.compressedEnd), path));
        return Buffer.concat(parts);
      };
      const first = Array.from(columns[format]!.entries).find((e) => e.path === 'app/small-0.py')!;
      assert.deepEqual(await reader.readAt(first, 0, first.size), await want('app/small-0.py'));
      assert.ok(reader.stats.neighbourChunks > 0, 'the small files after it were fetched along');
      const requests = blob.reads.length;
      for (const e of columns[format]!.entries) {
        if (e.type !== 'reg') continue;
        assert.deepEqual(await reader.readAt(e, 0, e.size), await want(e.path), e.path);
      }
      assert.ok(blob.reads.length > requests, 'big.bin needed requests of its own');
      await cache.flush();
    });
  }
});
