/**
 * Layers without a TOC (plain tar, tar+gzip, tar+zstd; docs/formats.md §5): read once as a whole,
 * verified against the descriptor digest, and turned into a LayerToc whose chunks are
 * content-addressed pieces handed to `put` (they exist only in the cache: compressedOffset
 * and compressedEnd are -1, so a cache miss means re-indexing).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { DigestMismatchError, FormatError, TocfsError } from '../errors.js';
import type { BlobReader, Descriptor } from '../source/types.js';
import { sniffCodec, type Codec } from './detect.js';
import { DEFAULT_CHECKPOINT_SPACING, GzipCheckpointer, type GzipCheckpoint } from './gzip/checkpoints.js';
import { normaliseName } from './path.js';
import { TAR_EOA } from './tar/header.js';
import { scanTar, type ByteSource, type TarHeader } from './tar/read.js';
import { parseSparseMapText } from './tar/sparse.js';
import type { Chunk, Compression, ArrayToc, LayerToc, TocEntry } from './toc.js';
import { isStargzMetadata } from './writer/estargz.js';
import { firstZstdFrame, isSkippableMagic } from './zstd-frames.js';

/** Size of the cache pieces a plain layer's files are cut into. */
export const PLAIN_CHUNK_SIZE = 1024 * 1024;
/** Compressed input gathered before cutting at a zstd frame boundary and decompressing. */
const ZSTD_BATCH = 8 * 1024 * 1024;
/**
 * The binding decodes whole frames into one buffer: frames that may decode to more than this
 * (by their block headers) are refused, so a few KiB of RLE blocks cannot demand gigabytes.
 */
export const MAX_ZSTD_DECODE = 1024 * 1024 * 1024;
/**
 * Holes of sparse files are expanded (and hashed) while indexing: a header of a few bytes
 * can claim terabytes, so the holes of one layer may add up to this much at most.
 */
export const MAX_SPARSE_HOLES = 16 * 1024 * 1024 * 1024;
const ZERO_PIECE = Buffer.alloc(PLAIN_CHUNK_SIZE);
const ZERO_PIECE_DIGEST = 'sha256:' + createHash('sha256').update(ZERO_PIECE).digest('hex');
/** A sparse map is untrusted text held in memory: cap it. */
const MAX_SPARSE_MAP = 16 * 1024 * 1024;

/** The blob as a stream, checked against the descriptor's size and digest when it ends. */
async function* verifiedBlob(desc: Descriptor, blob: BlobReader, onBytes?: (n: number) => void): AsyncGenerator<Buffer> {
  const h = createHash('sha256');
  let n = 0;
  for await (const chunk of await blob.stream()) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    h.update(b);
    n += b.length;
    onBytes?.(n);
    yield b;
  }
  if (n !== desc.size) throw new FormatError(`layer ${desc.digest}: blob has ${n} bytes, the descriptor says ${desc.size}`);
  const actual = 'sha256:' + h.digest('hex');
  if (actual !== desc.digest) throw new DigestMismatchError(`layer ${desc.digest}`, desc.digest, actual);
}

/** Length of the complete zstd frames (data or skippable) at the start of `b`. */
function completeFramesLength(b: Buffer): number {
  let p = 0;
  for (;;) {
    const start = p;
    if (p + 8 > b.length) return start;
    const magic = b.readUInt32LE(p);
    if ((magic & 0xfffffff0) >>> 0 === 0x184d2a50) {
      p += 8 + b.readUInt32LE(p + 4);
      if (p > b.length) return start;
      continue;
    }
    if (magic !== 0xfd2fb528) throw new FormatError(`bad zstd frame magic at ${p}`);
    const fhd = b[p + 4]!;
    const single = (fhd >> 5) & 1;
    p += 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!;
    for (;;) {
      if (p + 3 > b.length) return start;
      const bh = b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16);
      const rle = ((bh >> 1) & 3) === 1;
      p += 3 + (rle ? 1 : bh >>> 3);
      if (p > b.length) return start;
      if (bh & 1) break;
    }
    p += (fhd >> 2) & 1 ? 4 : 0;
    if (p > b.length) return start;
  }
}

/** Decodes complete frames in groups whose output bound stays within MAX_ZSTD_DECODE. */
async function* decodeFrames(buf: Buffer): AsyncGenerator<Buffer> {
  let p = 0;
  let groupStart = 0;
  let groupBound = 0;
  while (p < buf.length) {
    let end: number;
    let bound = 0;
    if (isSkippableMagic(buf.readUInt32LE(p))) end = p + 8 + buf.readUInt32LE(p + 4);
    else {
      const f = firstZstdFrame(buf.subarray(p));
      if (typeof f === 'string') throw new FormatError(`zstd frame at ${p}: ${f}`);
      end = p + f.end;
      bound = f.bound;
    }
    if (bound > MAX_ZSTD_DECODE) throw new FormatError(`zstd frame may decompress to ${bound} bytes, more than the ${MAX_ZSTD_DECODE} decoded at once`);
    if (groupBound + bound > MAX_ZSTD_DECODE) {
      yield await zstdDecompress(buf.subarray(groupStart, p));
      groupStart = p;
      groupBound = 0;
    }
    groupBound += bound;
    p = end;
  }
  if (p > groupStart) yield await zstdDecompress(buf.subarray(groupStart, p));
}

/** Decompresses a zstd stream frame group by frame group (the binding has no streaming decoder). */
async function* zstdStream(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  for await (const b of src) {
    pending.push(b);
    length += b.length;
    if (length < ZSTD_BATCH) continue;
    const buf = Buffer.concat(pending);
    const cut = completeFramesLength(buf);
    if (cut === 0) {
      pending = [buf];
      continue;
    }
    yield* decodeFrames(buf.subarray(0, cut));
    pending = [buf.subarray(cut)];
    length = buf.length - cut;
  }
  const rest = Buffer.concat(pending);
  if (rest.length > 0) {
    if (completeFramesLength(rest) !== rest.length) throw new FormatError('truncated zstd stream');
    yield* decodeFrames(rest);
  }
}

function gunzipStream(src: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  const gunzip = createGunzip();
  const input = Readable.from(src);
  input.on('error', (e) => gunzip.destroy(e));
  return input.pipe(gunzip);
}

/** A gzip stream decompressed through a GzipCheckpointer: its checkpoints once the stream has ended. */
async function* checkpointedGunzip(src: AsyncIterable<Buffer>, checkpointer: GzipCheckpointer): AsyncGenerator<Buffer> {
  for await (const b of src) yield* checkpointer.push(b);
  checkpointer.finish();
}

export interface LayerStream {
  codec: Codec;
  /** The uncompressed tar. Iterate it to the end: the digest check happens there. */
  tar: AsyncIterable<Buffer>;
  /** gzip, when asked for: the checkpoints taken, complete once `tar` has ended. */
  checkpointer?: GzipCheckpointer;
}

/**
 * Opens a whole layer blob as its uncompressed tar stream. The codec is sniffed from the
 * first bytes (never the media type); the blob's digest is checked when the stream ends.
 */
export async function openLayerStream(desc: Descriptor, blob: BlobReader, onCompressedBytes?: (n: number) => void, checkpointSpacing?: number): Promise<LayerStream> {
  const src = verifiedBlob(desc, blob, onCompressedBytes)[Symbol.asyncIterator]();
  // Gather enough for sniffing (a tar is recognised at offset 257).
  const headParts: Buffer[] = [];
  let headLength = 0;
  let ended = false;
  while (headLength < 512) {
    const r = await src.next();
    if (r.done) {
      ended = true;
      break;
    }
    headParts.push(r.value);
    headLength += r.value.length;
  }
  const head = Buffer.concat(headParts);
  const codec = sniffCodec(head.subarray(0, 512));
  if (codec === 'unknown' && head.length > 0) throw new FormatError(`layer ${desc.digest}: neither gzip, zstd nor tar (unknown first bytes ${head.subarray(0, 4).toString('hex')})`);
  const rest = (async function* () {
    if (head.length) yield head;
    if (!ended) for (let r = await src.next(); !r.done; r = await src.next()) yield r.value;
  })();
  if (codec === 'gzip' && checkpointSpacing) {
    const checkpointer = new GzipCheckpointer(checkpointSpacing);
    return { codec, tar: checkpointedGunzip(rest, checkpointer), checkpointer };
  }
  if (codec === 'gzip') return { codec, tar: gunzipStream(rest) };
  if (codec === 'zstd') return { codec, tar: zstdStream(rest) };
  return { codec, tar: rest };
}

function normalised(layer: string, name: string): string {
  const n = normaliseName(name);
  if ('error' in n) throw new FormatError(`layer ${layer}: entry ${JSON.stringify(name)}: ${n.error}`);
  return n.path;
}

/**
 * The tar stream without stargz tool entries (TOC entry, landmarks), always ending with the
 * end-of-archive blocks (stargz-snapshotter's zstd variant writes none). Everything else is
 * passed through byte for byte.
 */
export async function* withoutStargzMetadata(src: ByteSource): AsyncGenerator<Buffer> {
  let dropPadding = false;
  for await (const ev of scanTar(src)) {
    if (ev.kind === 'trailing') {
      yield ev.data;
      continue;
    }
    const raw = dropPadding ? ev.raw.subarray(ev.padding) : ev.raw;
    const ownStart = dropPadding ? 0 : ev.padding;
    dropPadding = false;
    if (ev.kind === 'end') {
      yield raw;
      if (raw.length === ownStart) yield TAR_EOA;
      continue;
    }
    const n = normaliseName(ev.header.name);
    if ('path' in n && isStargzMetadata(n.path)) {
      yield raw.subarray(0, ownStart);
      dropPadding = true;
      continue;
    }
    yield raw;
    yield* ev.content;
  }
}

/** The expanded content of a sparse member: data regions from the archive, zeros between. */
async function* expandSparse(h: TarHeader, content: AsyncIterable<Buffer>, layer: string, holes: { bytes: number }): AsyncGenerator<Buffer> {
  const it = content[Symbol.asyncIterator]();
  let buf = Buffer.alloc(0);
  let map = h.sparse!.map;
  if (h.sparse!.mapInData) {
    for (;;) {
      const parsed = parseSparseMapText(buf, h.name);
      if (parsed && buf.length >= parsed.length) {
        map = parsed.map;
        buf = buf.subarray(parsed.length);
        break;
      }
      const r = await it.next();
      if (r.done || buf.length > MAX_SPARSE_MAP) throw new FormatError(`layer ${layer}: ${h.name}: truncated or oversized sparse map`);
      buf = Buffer.concat([buf, r.value]);
    }
  }
  const take = async (n: number): Promise<Buffer[]> => {
    const out: Buffer[] = [];
    while (n > 0) {
      if (buf.length === 0) {
        const r = await it.next();
        if (r.done) throw new FormatError(`layer ${layer}: ${h.name}: sparse data shorter than its map`);
        buf = r.value;
      }
      const k = Math.min(n, buf.length);
      out.push(buf.subarray(0, k));
      buf = buf.subarray(k);
      n -= k;
    }
    return out;
  };
  let at = 0;
  const zeros = (n: number): Buffer[] => {
    holes.bytes += n;
    if (holes.bytes > MAX_SPARSE_HOLES) throw new FormatError(`layer ${layer}: ${h.name}: sparse files of the layer have more than ${MAX_SPARSE_HOLES} bytes of holes, which tocfs would have to expand`);
    const out: Buffer[] = [];
    for (; n > 0; n -= PLAIN_CHUNK_SIZE) out.push(Buffer.alloc(Math.min(n, PLAIN_CHUNK_SIZE)));
    return out;
  };
  for (const region of map) {
    if (region.offset < at || region.offset + region.length > h.sparse!.realSize) throw new FormatError(`layer ${layer}: ${h.name}: sparse map out of order or beyond the file size`);
    yield* zeros(region.offset - at);
    yield* await take(region.length);
    at = region.offset + region.length;
  }
  yield* zeros(h.sparse!.realSize - at);
}

/** Cuts a byte stream into pieces of exactly `size` bytes (the last may be shorter). */
async function* fixedPieces(src: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let length = 0;
  for await (let b of src) {
    while (b.length > 0) {
      const k = Math.min(size - length, b.length);
      parts.push(b.subarray(0, k));
      length += k;
      b = b.subarray(k);
      if (length === size) {
        yield parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        parts = [];
        length = 0;
      }
    }
  }
  if (length > 0) yield Buffer.concat(parts);
}

function entryOf(layer: string, h: TarHeader): TocEntry {
  if (h.type === 'other') throw new FormatError(`layer ${layer}: entry ${JSON.stringify(h.name)}: unsupported tar member type ${JSON.stringify(h.typeflag)}`);
  const e: TocEntry = {
    path: normalised(layer, h.name),
    type: h.type,
    mode: h.mode & 0o7777,
    uid: h.uid,
    gid: h.gid,
    size: 0,
    mtime: h.mtime,
    chunks: [],
  };
  if (h.uname) e.userName = h.uname;
  if (h.gname) e.groupName = h.gname;
  if (h.atime) e.atime = h.atime;
  if (h.ctime) e.ctime = h.ctime;
  if (h.type === 'symlink') e.linkName = h.linkName;
  if (h.type === 'hardlink') e.linkName = normalised(layer, h.linkName);
  if (h.type === 'char' || h.type === 'block') {
    e.devMajor = h.devMajor;
    e.devMinor = h.devMinor;
  }
  if (Object.keys(h.xattrs).length) e.xattrs = h.xattrs;
  return e;
}

/**
 * Indexes a TOC-less layer: streams the whole blob once, checks its digest, parses the tar
 * (PAX, GNU long names, GNU sparse) and stores every file's content in PLAIN_CHUNK_SIZE
 * pieces through `put(digest, data)`. The returned TOC is only usable after it returns
 * (a digest mismatch throws at the end, after some pieces were put — harmless, since each
 * piece is addressed by its own digest).
 */
export async function indexPlainLayer(
  desc: Descriptor,
  blob: BlobReader,
  put: (digest: string, data: Buffer) => Promise<void>,
  onProgress?: (bytes: number) => void,
  checkpointSpacing = DEFAULT_CHECKPOINT_SPACING,
): Promise<ArrayToc> {
  try {
    return await indexStream(desc, blob, put, onProgress, checkpointSpacing);
  } catch (e) {
    throw namingLayer(desc.digest, e);
  }
}

/**
 * Errors of the decoders (zlib, zstd) and the tar scanner, which do not know the layer, as
 * FormatErrors that name it; anything else (a failing `put`, a read error) passes unchanged.
 */
function namingLayer(layer: string, e: unknown): unknown {
  if (e instanceof TocfsError) return e.message.includes(layer) ? e : new FormatError(`layer ${layer}: ${e.message}`, { cause: e });
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === 'string' && err.code.startsWith('Z_')) return new FormatError(`layer ${layer}: cannot decompress (gzip): ${err.message}`, { cause: e });
  if (typeof err?.message === 'string' && err.message.startsWith('zstd')) return new FormatError(`layer ${layer}: cannot decompress (${err.message})`, { cause: e });
  return e;
}

async function indexStream(
  desc: Descriptor,
  blob: BlobReader,
  put: (digest: string, data: Buffer) => Promise<void>,
  onProgress: ((bytes: number) => void) | undefined,
  checkpointSpacing: number,
): Promise<ArrayToc> {
  const layer = desc.digest;
  const stream = await openLayerStream(desc, blob, onProgress, checkpointSpacing);
  const entries: TocEntry[] = [];
  /** Pieces read straight from the tar stream (not sparse), with their stream offsets. */
  const inStream: StreamPiece[] = [];
  const holes = { bytes: 0 };
  let zeroPiecePut = false;
  let uncompressed = 0;
  const diffHash = createHash('sha256');
  for await (const ev of scanTar((async function* () {
    for await (const b of stream.tar) {
      uncompressed += b.length;
      diffHash.update(b);
      yield b;
    }
  })())) {
    if (ev.kind !== 'entry') continue;
    const h = ev.header;
    const e = entryOf(layer, h);
    if (e.path === '' && e.type !== 'dir') throw new FormatError(`layer ${layer}: entry ${JSON.stringify(h.name)}: the root must be a directory`);
    if (isStargzMetadata(e.path)) continue;
    if (e.type === 'reg') {
      const fileHash = createHash('sha256');
      const content = h.sparse ? expandSparse(h, ev.content, layer, holes) : ev.content;
      let offset = 0;
      for await (const piece of fixedPieces(content, PLAIN_CHUNK_SIZE)) {
        fileHash.update(piece);
        const zeros = piece.equals(ZERO_PIECE.subarray(0, piece.length));
        // Runs of zero pieces (sparse holes) share one digest: hash and store it once.
        const digest = zeros && piece.length === PLAIN_CHUNK_SIZE ? ZERO_PIECE_DIGEST : 'sha256:' + createHash('sha256').update(piece).digest('hex');
        if (digest !== ZERO_PIECE_DIGEST || !zeroPiecePut) await put(digest, piece);
        if (digest === ZERO_PIECE_DIGEST) zeroPiecePut = true;
        const chunk: Chunk = { offset, size: piece.length, compressedOffset: -1, compressedEnd: -1, innerOffset: 0, digest, zeros };
        e.chunks.push(chunk);
        if (!h.sparse) inStream.push({ chunk, at: ev.dataOffset + offset });
        offset += piece.length;
      }
      e.size = offset;
      e.digest = 'sha256:' + fileHash.digest('hex');
    }
    entries.push(e);
  }
  const checkpointer = stream.checkpointer;
  // Other pieces are never fetched from the blob (offsets -1): an uncompressed tar's
  // compression field is only descriptive.
  const toc = plainLayerToc(`plain ${stream.codec}`, stream.codec === 'zstd' ? 'zstd' : 'gzip', entries, uncompressed);
  toc.uncompressedDigest = 'sha256:' + diffHash.digest('hex');
  if (checkpointer && !checkpointer.multiMember && checkpointer.checkpoints[0]?.out === 0) {
    locateInGzip(inStream, checkpointer.checkpoints, desc.size);
    toc.checkpoints = checkpointer.checkpoints;
  }
  return toc;
}

/** A piece of a file read straight from the tar stream, and where it starts in the stream. */
export interface StreamPiece {
  chunk: Chunk;
  at: number;
}

/**
 * Gives each piece the blob range that holds it in a gzip stream with checkpoints: from the
 * last checkpoint at or before its start to the byte holding the first bit of the first
 * checkpoint at or after its end (or the blob's end). Pieces of one span share the range of
 * the whole span, so one fetch and one decompression serve all of them (fetch/layer-reader.ts).
 */
export function locateInGzip(pieces: readonly StreamPiece[], checkpoints: readonly GzipCheckpoint[], blobSize: number): void {
  if (checkpoints.length === 0 || checkpoints[0]!.out !== 0) return;
  let a = 0;
  for (const { chunk, at } of pieces) {
    while (a + 1 < checkpoints.length && checkpoints[a + 1]!.out <= at) a++;
    let b = a + 1;
    while (b < checkpoints.length && checkpoints[b]!.out < at + chunk.size) b++;
    const from = checkpoints[a]!;
    chunk.compressedOffset = from.offset;
    chunk.compressedEnd = b < checkpoints.length ? checkpoints[b]!.offset + 1 : blobSize;
    chunk.innerOffset = at - from.out;
    chunk.resume = { skipBits: from.skipBits, window: from.window, out: from.out };
  }
}

/** The TOC of a layer indexed whole: it has no TOC of its own in the blob, and its digest was checked. */
export function plainLayerToc(formatVersion: string, compression: Compression, entries: TocEntry[], uncompressedSize?: number): ArrayToc {
  return {
    format: 'none',
    formatVersion,
    compression,
    entries,
    tocOffset: -1,
    tocCompressedLength: 0,
    tocUncompressedLength: 0,
    verified: true,
    ...(uncompressedSize !== undefined ? { uncompressedSize } : {}),
  };
}
