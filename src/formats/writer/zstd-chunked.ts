/**
 * zstd:chunked writer in the newest containers/storage form (docs/formats.md §2, §7): one zstd
 * frame per chunk, one header frame between files, rolling-checksum chunking, compact TOC,
 * tar-split, v3 footer, `io.github.containers.zstd-chunked.*` annotations. The decompressed
 * blob equals the source tar byte for byte, so the DiffID is the source tar's sha256 — unless
 * `prioritize` moves members to the front (front-order.ts): then it is the same members, each
 * with its own bytes, in the new order.
 */
import { createHash } from 'node:crypto';
import { compress as zstdCompress } from '@mongodb-js/zstd';
import { FormatError } from '../../errors.js';
import { Annotations } from '../annotations.js';
import { Crc64 } from '../crc64.js';
import { TarSplitBuilder } from '../tar-split.js';
import { scanTar, type TarHeader } from '../tar/read.js';
import { checkWritable, formatRfc3339, skippableFrame, u64le, xattrsBase64 } from './common.js';
import { planFront, type FrontPlan } from './front-order.js';
import { OrderedFrames } from './ordered.js';
import { Chunker, type ChunkPiece } from './rollsum.js';
import { BlobSink } from './sink.js';
import { LayerMediaTypes, type LayerWriterOptions, type TarInput, type WrittenLayer } from './types.js';

const LEVEL = 3;
const FOOTER_MAGIC_V3 = Buffer.from('GNUlInUx', 'latin1');

const RLE_BLOCK = 128 * 1024;

/**
 * A zstd frame of `size` zero bytes made of RLE blocks (4 bytes per 128 KiB), built directly
 * so a hole of any size costs no memory to compress. Single-segment frame with its content
 * size, no checksum.
 */
function zeroFrame(size: number): Buffer {
  const blocks = Math.ceil(size / RLE_BLOCK);
  const out = Buffer.alloc(4 + 1 + 8 + blocks * 4);
  out.writeUInt32LE(0xfd2fb528, 0);
  out[4] = 0xe0; // frame content size: 8 bytes; single segment
  out.writeBigUInt64LE(BigInt(size), 5);
  let p = 13;
  for (let left = size; left > 0; left -= RLE_BLOCK, p += 4) {
    const n = Math.min(left, RLE_BLOCK);
    const header = (n << 3) | (1 << 1) | (left <= RLE_BLOCK ? 1 : 0);
    out.writeUIntLE(header, p, 3);
    out[p + 3] = 0;
  }
  return out;
}

const zeroDigests = new Map<number, string>();
const ZEROS_1M = Buffer.alloc(1024 * 1024);

function zerosDigest(size: number): string {
  let d = zeroDigests.get(size);
  if (!d) {
    const h = createHash('sha256');
    for (let left = size; left > 0; left -= ZEROS_1M.length) h.update(ZEROS_1M.subarray(0, Math.min(left, ZEROS_1M.length)));
    d = 'sha256:' + h.digest('hex');
    if (zeroDigests.size > 256) zeroDigests.clear();
    zeroDigests.set(size, d);
  }
  return d;
}

/** One TOC entry, fields in c/storage's order, zero values omitted. */
type TocJsonEntry = Record<string, string | number | Record<string, string>>;

interface FileChunk {
  chunkOffset: number;
  /** Index of the chunk's frame (its offset is known once all frames are written). */
  frame: number;
  size: number;
  digest: string;
  zeros: boolean;
}

function metadataEntry(h: TarHeader & { type: Exclude<TarHeader['type'], 'other'> }): TocJsonEntry {
  const e: TocJsonEntry = { type: h.type, name: h.name };
  if (h.linkName) e.linkName = h.linkName;
  if (h.mode) e.mode = h.mode;
  if (h.size) e.size = h.size;
  if (h.uid) e.uid = h.uid;
  if (h.gid) e.gid = h.gid;
  e.modtime = formatRfc3339(h.mtime);
  if (h.atime) e.accesstime = formatRfc3339(h.atime);
  if (h.ctime) e.changetime = formatRfc3339(h.ctime);
  if (h.devMajor) e.devMajor = h.devMajor;
  if (h.devMinor) e.devMinor = h.devMinor;
  const x = xattrsBase64(h.xattrs);
  if (x) e.xattrs = x;
  return e;
}

/** Adds the offsets and chunk fields of a file with data; returns the entries (reg + chunk entries). */
function fileEntries(main: TocJsonEntry, name: string, digest: string, chunks: FileChunk[], frames: OrderedFrames): TocJsonEntry[] {
  main.digest = digest;
  main.offset = frames.start(chunks[0]!.frame);
  main.endOffset = frames.end(chunks[chunks.length - 1]!.frame);
  if (chunks.length === 1) return [main];
  const out: TocJsonEntry[] = [main];
  chunks.forEach((c, i) => {
    const e = i === 0 ? main : ({ type: 'chunk', name } as TocJsonEntry);
    if (i > 0) e.offset = frames.start(c.frame);
    e.chunkSize = c.size;
    if (c.chunkOffset) e.chunkOffset = c.chunkOffset;
    e.chunkDigest = c.digest;
    if (c.zeros) e.chunkType = 'zeros';
    if (i > 0) out.push(e);
  });
  return out;
}

export async function writeZstdChunkedLayer(tar: TarInput, outPath: string, opts: LayerWriterOptions = {}): Promise<WrittenLayer> {
  const sink = await BlobSink.create(outPath);
  let front: FrontPlan | undefined;
  try {
    const diffHash = createHash('sha256');
    let sourceBytes = 0;
    const tarSplit = new TarSplitBuilder();
    const frames = new OrderedFrames(sink);
    // Entries of files with data are completed once their frames' offsets are known.
    const entries: Array<TocJsonEntry | (() => TocJsonEntry[])> = [];
    let header: Buffer[] = [];
    const counted = (b: Buffer): void => {
      diffHash.update(b);
      sourceBytes += b.length;
    };
    const flushHeaderFrame = async (): Promise<void> => {
      if (header.length === 0) return;
      const data = Buffer.concat(header);
      header = [];
      if (data.length) await frames.add(zstdCompress(data, LEVEL));
    };

    /** Raw stream bytes between contents: header blocks, padding, end of archive. */
    const passThrough = (b: Buffer): void => {
      counted(b);
      header.push(b);
      tarSplit.segment(b);
    };
    /** One member, its header blocks already passed through: its TOC entry and content frames. */
    const addMember = async (h: TarHeader, content: AsyncIterable<Buffer>): Promise<void> => {
      checkWritable(h);
      const main = metadataEntry(h);
      if (h.size === 0) {
        tarSplit.file(h.name, 0, null);
        entries.push(main);
        return;
      }
      const fileHash = createHash('sha256');
      const crc = new Crc64();
      const chunks: FileChunk[] = [];
      let chunkOffset = 0;
      await flushHeaderFrame();
      const chunker = new Chunker(async (c: ChunkPiece) => {
        if (c.kind === 'zeros') {
          const frame = await frames.add(zeroFrame(c.size));
          chunks.push({ chunkOffset, frame, size: c.size, digest: zerosDigest(c.size), zeros: true });
        } else {
          const data = c.parts.length === 1 ? c.parts[0]! : Buffer.concat(c.parts);
          const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
          const frame = await frames.add(zstdCompress(data, LEVEL));
          chunks.push({ chunkOffset, frame, size: data.length, digest, zeros: false });
        }
        chunkOffset += c.size;
      });
      for await (const piece of content) {
        counted(piece);
        fileHash.update(piece);
        crc.update(piece);
        await chunker.write(piece);
        opts.onProgress?.(sourceBytes);
      }
      await chunker.end();
      tarSplit.file(h.name, h.size, crc.digest());
      const digest = 'sha256:' + fileHash.digest('hex');
      entries.push(() => fileEntries(main, h.name, digest, chunks, frames));
    };

    // The prioritized members first, each with the source's bytes (header, content, padding):
    // the stream is the source's members in a new order, still a valid tar.
    front = await planFront(tar, opts.prioritize ?? [], { spoolPath: `${outPath}.front` });
    const dup = front.duplicates[0];
    if (dup !== undefined) throw new FormatError(`tar: duplicate entry ${JSON.stringify(dup)}: zstd:chunked layers need unique names`);
    for await (const m of front.members()) {
      passThrough(m.headerBytes);
      await addMember(m.header, m.content());
      passThrough(m.padding);
    }
    // Then the rest as it comes; without a front the stream is the source byte for byte.
    let afterFrontMember = false;
    for await (const ev of scanTar(tar())) {
      if (ev.kind === 'trailing') {
        passThrough(ev.data);
        continue;
      }
      // An event's leading bytes are the previous member's padding: they stay with that member.
      if (ev.kind === 'entry' && front.has(ev.header.name)) {
        if (!afterFrontMember) passThrough(ev.raw.subarray(0, ev.padding));
        afterFrontMember = true;
        continue;
      }
      passThrough(afterFrontMember ? ev.raw.subarray(ev.padding) : ev.raw);
      afterFrontMember = false;
      if (ev.kind === 'entry') await addMember(ev.header, ev.content);
    }
    await flushHeaderFrame();
    await frames.drain();
    opts.onProgress?.(sourceBytes);

    const tarSplitText = tarSplit.text();
    const tarSplitCompressed = await zstdCompress(tarSplitText, LEVEL);
    const tarSplitDigest = 'sha256:' + createHash('sha256').update(tarSplitCompressed).digest('hex');
    const tocEntries = entries.flatMap((e) => (typeof e === 'function' ? e() : [e]));
    const toc = Buffer.from(JSON.stringify({ version: 1, entries: tocEntries, tarSplitDigest }));
    const tocCompressed = await zstdCompress(toc, LEVEL);
    const tocOffset = sink.offset + 8;
    const tarSplitOffset = tocOffset + tocCompressed.length + 8;
    await sink.write(skippableFrame(tocCompressed));
    await sink.write(skippableFrame(tarSplitCompressed));
    const footer = Buffer.concat([u64le([tocOffset, tocCompressed.length, toc.length, 1, tarSplitOffset, tarSplitCompressed.length, tarSplitText.length]), FOOTER_MAGIC_V3]);
    await sink.write(skippableFrame(footer));
    const { digest, size } = await sink.finish();
    const checksum = 'sha256:' + createHash('sha256').update(tocCompressed).digest('hex');
    const position = `${tocOffset}:${tocCompressed.length}:${toc.length}:1`;
    return {
      mediaType: LayerMediaTypes.zstd,
      digest,
      size,
      diffId: 'sha256:' + diffHash.digest('hex'),
      uncompressedSize: sourceBytes,
      annotations: {
        [Annotations.zstdChecksumNew]: checksum,
        [Annotations.zstdPositionNew]: position,
        [Annotations.tarSplitPosition]: `${tarSplitOffset}:${tarSplitCompressed.length}:${tarSplitText.length}`,
        ...(opts.legacyAnnotations ? { [Annotations.zstdChecksumOld]: checksum, [Annotations.zstdPositionOld]: position } : {}),
      },
      ...(opts.prioritize ? { front: [...front.paths] } : {}),
    };
  } catch (e) {
    await sink.abort();
    throw e;
  } finally {
    await front?.close();
  }
}
