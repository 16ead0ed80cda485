/**
 * Layers written by tocfs's own writers, held in memory as TestLayers (the shape
 * toc-repack.ts mutates), so hostile-input and format tests need no corpus.
 *
 *   const zc = await writerLayer('zstd:chunked', FILES);          // c/storage v3 footer + tar-split
 *   const v1 = await asV1Footer(zc);                               // the same data with a c/storage 1.43 v1 footer
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, type FileSpec } from './images.js';
import { repack, type TestLayer } from './toc-repack.js';

export interface WriterLayerOptions {
  chunkSize?: number;
  prioritize?: string[];
}

/** One layer of `files` written by tocfs's zstd:chunked or eStargz writer. */
export async function writerLayer(format: 'zstd:chunked' | 'estargz', files: FileSpec[], opts: WriterLayerOptions = {}): Promise<TestLayer> {
  const dir = await mkdtemp(join(tmpdir(), 'tocfs-writer-layer-'));
  try {
    const img = await buildImage(join(dir, 'img'), { format, layers: [files], ...opts });
    const desc = img.layers[0]!;
    const bytes = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
    return { desc: { ...desc, ...(desc.annotations ? { annotations: { ...desc.annotations } } : {}) }, bytes };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A fresh copy (tests mutate bytes and annotations). */
export function copyLayer(l: TestLayer): TestLayer {
  return { bytes: Buffer.from(l.bytes), desc: { ...l.desc, ...(l.desc.annotations ? { annotations: { ...l.desc.annotations } } : {}) } };
}

/**
 * A zstd:chunked layer as containers/storage 1.43 writes it: the same frames and TOC, no
 * tar-split, and the 40-byte v1 footer (`GnUlInUx`) instead of the 64-byte v3 one.
 */
export async function asV1Footer(layer: TestLayer): Promise<TestLayer> {
  const l = copyLayer(layer);
  delete l.desc.annotations!['io.github.containers.zstd-chunked.tarsplit-position'];
  return repack(l, (doc) => void delete doc.tarSplitDigest);
}
