/**
 * Builds real OCI image layouts for tests: a source tar written by tocfs's tar writer
 * (PAX for long names, binary xattrs, fractional / pre-1970 times), compressed by the chosen
 * layer writer (plain tar/gzip/zstd, or tocfs's zstd:chunked and eStargz writers).
 *
 *   const img = await buildImage(dir, { format: 'zstd:chunked', layers: [[{ path: 'etc/motd', content: 'hi\n' }]] });
 *   // oci:${img.dir}:latest
 */
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { OciLayoutWriter } from '../../src/convert/layout.js';
import { tarPadding, TAR_EOA } from '../../src/formats/tar/header.js';
import { encodeTarHeader, type TarEntrySpec } from '../../src/formats/tar/write.js';
import { writeEstargzLayer } from '../../src/formats/writer/estargz.js';
import { writePlainLayer } from '../../src/formats/writer/plain.js';
import type { TarInput, WrittenLayer } from '../../src/formats/writer/types.js';
import { writeZstdChunkedLayer } from '../../src/formats/writer/zstd-chunked.js';
import { BlobSink } from '../../src/formats/writer/sink.js';
import { hostPlatform } from '../../src/source/manifest.js';
import type { Descriptor } from '../../src/source/types.js';

/** Content produced on demand, so a 200 MB file needs no 200 MB buffer. */
export interface ContentSource {
  size: number;
  chunks(): AsyncIterable<Buffer>;
}

export type Content = Buffer | string | ContentSource;

export interface FileSpec {
  path: string;
  type?: 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch; may be fractional or negative. Default 1700000000. */
  mtime?: number;
  content?: Content;
  linkName?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Buffer | string>;
}

export type ImageFormat = 'zstd:chunked' | 'estargz' | 'gzip' | 'zstd' | 'tar';

export interface ImageSpec {
  layers: FileSpec[][];
  format: ImageFormat;
  /** index.json ref name (default `latest`); other tags already in `outDir` are kept. */
  tag?: string;
  /** eStargz chunk size. */
  chunkSize?: number;
  /** eStargz prioritized files. */
  prioritize?: string[];
  /** Zero bytes appended after the end-of-archive blocks of each source tar (GNU tar pads to 10240-byte records). */
  trailingPadding?: number;
}

export interface BuiltImage {
  dir: string;
  manifestDigest: string;
  configDigest: string;
  layers: Descriptor[];
  diffIds: string[];
  /** sha256 of each source tar (= diffIds except for eStargz, whose stream adds its TOC). */
  sourceTarDigests: string[];
  /** Paths of the source tars, kept for comparisons until `cleanup()`. */
  sourceTars: string[];
}

const CHUNK = 1024 * 1024;

function asSource(c: Content | undefined): ContentSource {
  if (c === undefined) return { size: 0, chunks: async function* () {} };
  if (typeof c === 'string' || Buffer.isBuffer(c)) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    return { size: b.length, chunks: async function* () { if (b.length) yield b; } };
  }
  return c;
}

/** Deterministic pseudo-random bytes: the AES-256-CTR keystream under a key derived from `seed`. */
export function seededContent(seed: string | number, size: number): ContentSource {
  return {
    size,
    async *chunks() {
      const key = createHash('sha256').update(String(seed)).digest();
      const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
      const zero = Buffer.alloc(CHUNK);
      for (let left = size; left > 0; left -= CHUNK) yield cipher.update(zero.subarray(0, Math.min(CHUNK, left)));
    },
  };
}

/** `seededContent` as one buffer (small sizes). */
export function seededBytes(seed: string | number, size: number): Buffer {
  const key = createHash('sha256').update(String(seed)).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

export function zeroContent(size: number): ContentSource {
  return {
    size,
    async *chunks() {
      const zero = Buffer.alloc(Math.min(CHUNK, size));
      for (let left = size; left > 0; left -= CHUNK) yield zero.subarray(0, Math.min(CHUNK, left));
    },
  };
}

export function concatContent(...parts: Content[]): ContentSource {
  const sources = parts.map(asSource);
  return {
    size: sources.reduce((n, s) => n + s.size, 0),
    async *chunks() {
      for (const s of sources) yield* s.chunks();
    },
  };
}

/** sha256 of a content (for assertions). */
export async function contentDigest(c: Content): Promise<string> {
  const h = createHash('sha256');
  for await (const b of asSource(c).chunks()) h.update(b);
  return 'sha256:' + h.digest('hex');
}

/** The bytes of a tar archive holding `files` (ends with the end-of-archive blocks). */
export async function* tarStream(files: FileSpec[], trailingPadding = 0): AsyncGenerator<Buffer> {
  for (const f of files) {
    const src = asSource(f.type === undefined || f.type === 'reg' ? f.content : undefined);
    const spec: TarEntrySpec = { ...f, size: src.size };
    delete (spec as { content?: unknown }).content;
    yield encodeTarHeader(spec);
    let n = 0;
    for await (const b of src.chunks()) {
      n += b.length;
      yield b;
    }
    if (n !== src.size) throw new Error(`${f.path}: content yielded ${n} bytes, declared ${src.size}`);
    const pad = tarPadding(n);
    if (pad) yield Buffer.alloc(pad);
  }
  yield TAR_EOA;
  if (trailingPadding > 0) yield Buffer.alloc(trailingPadding);
}

/** Writes a tar of `files` to `path`; returns its sha256 and size. */
export async function writeTarFile(files: FileSpec[], path: string, trailingPadding = 0): Promise<{ digest: string; size: number }> {
  const sink = await BlobSink.create(path);
  for await (const b of tarStream(files, trailingPadding)) await sink.write(b);
  return sink.finish();
}

async function writeLayer(format: ImageFormat, input: TarInput, out: string, spec: ImageSpec): Promise<WrittenLayer> {
  switch (format) {
    case 'zstd:chunked':
      return writeZstdChunkedLayer(input, out);
    case 'estargz':
      return writeEstargzLayer(input, out, { ...(spec.chunkSize ? { chunkSize: spec.chunkSize } : {}), ...(spec.prioritize ? { prioritize: spec.prioritize } : {}) });
    default:
      return writePlainLayer(input, format, out);
  }
}

/** Writes a complete OCI image layout into `outDir` (created if needed). */
export async function buildImage(outDir: string, spec: ImageSpec): Promise<BuiltImage> {
  const layout = new OciLayoutWriter(outDir);
  await layout.init();
  const srcDir = join(outDir, '.source');
  await mkdir(srcDir, { recursive: true });
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  const sourceTarDigests: string[] = [];
  const sourceTars: string[] = [];
  for (const [i, files] of spec.layers.entries()) {
    const tarPath = join(srcDir, `layer-${i}.tar`);
    const src = await writeTarFile(files, tarPath, spec.trailingPadding ?? 0);
    sourceTarDigests.push(src.digest);
    sourceTars.push(tarPath);
    const tmp = layout.tempPath();
    try {
      const w = await writeLayer(spec.format, () => createReadStream(tarPath), tmp, spec);
      await layout.adoptBlob(tmp, w.digest);
      layers.push({ mediaType: w.mediaType, digest: w.digest, size: w.size, ...(Object.keys(w.annotations).length ? { annotations: w.annotations } : {}) });
      diffIds.push(w.diffId);
    } catch (e) {
      await layout.discard(tmp);
      throw e;
    }
  }
  const platform = hostPlatform();
  const config = {
    created: '2023-11-14T22:13:20Z',
    architecture: platform.architecture,
    ...(platform.variant ? { variant: platform.variant } : {}),
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: spec.layers.map(() => ({ created: '2023-11-14T22:13:20Z', created_by: 'tocfs test image builder' })),
  };
  const written = await layout.writeImage({ config, layers, ...(spec.tag ? { tag: spec.tag } : {}) });
  return { dir: outDir, manifestDigest: written.manifestDigest, configDigest: written.configDigest, layers, diffIds, sourceTarDigests, sourceTars };
}

/** Size of a file (for reports in tests). */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}

/** Removes the source tars kept next to the layout. */
export async function removeSources(img: BuiltImage): Promise<void> {
  await rm(join(img.dir, '.source'), { recursive: true, force: true });
}
