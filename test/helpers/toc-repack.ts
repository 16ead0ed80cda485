/**
 * Test helper for hostile-input tests: takes a real corpus layer, lets a test change its TOC
 * JSON, and re-packs the layer with a TOC frame / member, footer and annotation digests that
 * are correct again, so each test case isolates exactly one fault.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../../src/digest.js';
import type { BlobReader, Descriptor } from '../../src/source/types.js';
import { CORPUS_DIR, loadExpected } from './corpus.js';
import { skippableFrame, u64le } from '../../src/formats/writer/common.js';

export interface TestLayer {
  desc: Descriptor;
  bytes: Buffer;
}

/** A BlobReader over bytes in memory (the mutated layers exist nowhere else). */
export function memoryBlob(layer: TestLayer): BlobReader & { reads: Array<[number, number]> } {
  const reads: Array<[number, number]> = [];
  return {
    digest: layer.desc.digest,
    size: layer.bytes.length,
    reads,
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > layer.bytes.length) throw new Error(`read [${offset}, ${offset + length}) outside ${layer.bytes.length} bytes`);
      reads.push([offset, length]);
      return Buffer.from(layer.bytes.subarray(offset, offset + length));
    },
    async stream() {
      const { Readable } = await import('node:stream');
      return Readable.from([layer.bytes]);
    },
  };
}

export function corpusLayer(image: string, index = 0): TestLayer {
  const expected = loadExpected(image);
  const digest = expected.images[0]!.layers[index]!;
  const l = expected.layers[digest]!;
  const bytes = readFileSync(join(CORPUS_DIR, image, 'blobs', 'sha256', digest.slice(7)));
  return { desc: { mediaType: l.mediaType, digest, size: l.size, ...(l.annotations ? { annotations: { ...l.annotations } } : {}) }, bytes };
}

const ZSTD_POS = ['io.github.containers.zstd-chunked.manifest-position', 'io.containers.zstd-chunked.manifest-position'];
const ZSTD_SUM = ['io.github.containers.zstd-chunked.manifest-checksum', 'io.containers.zstd-chunked.manifest-checksum'];
const TARSPLIT_POS = 'io.github.containers.zstd-chunked.tarsplit-position';
const STARGZ_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';

function zstdPosition(layer: TestLayer): { key: number; offset: number; clen: number; ulen: number } {
  const a = layer.desc.annotations ?? {};
  const key = ZSTD_POS.findIndex((k) => a[k] !== undefined);
  if (key < 0) throw new Error('not a zstd:chunked layer');
  const [offset, clen, ulen] = a[ZSTD_POS[key]!]!.split(':').map(Number) as [number, number, number];
  return { key, offset, clen, ulen };
}

function estargzTocOffset(bytes: Buffer): number {
  return parseInt(bytes.toString('latin1', bytes.length - 35, bytes.length - 19), 16);
}

/** The TOC JSON text of a (corpus or repacked) layer. */
export async function tocText(layer: TestLayer): Promise<string> {
  const a = layer.desc.annotations ?? {};
  if (ZSTD_POS.some((k) => a[k] !== undefined)) {
    const { offset, clen } = zstdPosition(layer);
    return (await zstdDecompress(layer.bytes.subarray(offset, offset + clen))).toString('utf8');
  }
  const tar = gunzipSync(layer.bytes.subarray(estargzTocOffset(layer.bytes), layer.bytes.length - 51));
  return tar.toString('utf8', 512, 512 + parseInt(tar.toString('latin1', 124, 135), 8));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type TocJson = { version: unknown; entries: any[]; [k: string]: unknown };

/**
 * Re-packs `layer` with a changed TOC. `change` edits the parsed JSON in place, or returns
 * the exact JSON text to store (for malformed documents).
 */
export async function repack(layer: TestLayer, change: (doc: TocJson) => void | string | Buffer): Promise<TestLayer> {
  const doc = JSON.parse(await tocText(layer)) as TocJson;
  const out = change(doc);
  const json = Buffer.isBuffer(out) ? out : Buffer.from(typeof out === 'string' ? out : JSON.stringify(doc));
  return repackRaw(layer, json);
}

export async function repackRaw(layer: TestLayer, json: Buffer, compressedToc?: Buffer): Promise<TestLayer> {
  const annotations = { ...(layer.desc.annotations ?? {}) };
  if (annotations[STARGZ_DIGEST]) annotations[STARGZ_DIGEST] = sha256(json);
  let bytes: Buffer;
  if (ZSTD_POS.some((k) => annotations[k] !== undefined)) {
    const { key, offset, clen } = zstdPosition(layer);
    const data = layer.bytes.subarray(0, offset - 8);
    const toc = compressedToc ?? (await zstdCompress(json, 3));
    const tocOffset = data.length + 8;
    annotations[ZSTD_POS[key]!] = `${tocOffset}:${toc.length}:${json.length}:1`;
    annotations[ZSTD_SUM[key]!] = sha256(toc);
    const parts = [data, skippableFrame(toc)];
    if (annotations[TARSPLIT_POS]) {
      const [tsOff, tsLen, tsU] = annotations[TARSPLIT_POS].split(':').map(Number) as [number, number, number];
      const ts = layer.bytes.subarray(tsOff, tsOff + tsLen);
      const newTsOff = tocOffset + toc.length + 8;
      annotations[TARSPLIT_POS] = `${newTsOff}:${tsLen}:${tsU}`;
      parts.push(skippableFrame(ts), skippableFrame(Buffer.concat([u64le([tocOffset, toc.length, json.length, 1, newTsOff, tsLen, tsU]), Buffer.from('GNUlInUx')])));
    } else {
      void clen;
      parts.push(skippableFrame(Buffer.concat([u64le([tocOffset, toc.length, json.length, 1]), Buffer.from('GnUlInUx')])));
    }
    bytes = Buffer.concat(parts);
  } else {
    const tocOffset = estargzTocOffset(layer.bytes);
    const member = gzipSync(Buffer.concat([tarHeader('stargz.index.json', json.length), json, Buffer.alloc((512 - (json.length % 512)) % 512), Buffer.alloc(1024)]));
    bytes = Buffer.concat([layer.bytes.subarray(0, tocOffset), member, layer.bytes.subarray(layer.bytes.length - 51)]);
  }
  return { desc: { ...layer.desc, digest: sha256(bytes), size: bytes.length, annotations }, bytes };
}

function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/** The layer with its TOC annotations removed (only the footer tells where the TOC is). */
export function withoutAnnotations(layer: TestLayer): TestLayer {
  return { ...layer, desc: { mediaType: layer.desc.mediaType, digest: layer.desc.digest, size: layer.desc.size } };
}
