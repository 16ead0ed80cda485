import { promisify } from 'node:util';
import { gunzip as gunzipCb, inflateRaw as inflateRawCb } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../digest.js';
import { DigestMismatchError, FormatError } from '../errors.js';
import type { Chunk, Compression } from './toc.js';

const gunzip = promisify(gunzipCb);
const inflateRaw = promisify(inflateRawCb);

/** Decompresses every zstd frame in `data` (skippable frames are ignored by the decoder). Off the main thread. */
export async function decompressZstd(data: Buffer): Promise<Buffer> {
  return zstdDecompress(data);
}

/**
 * Decompresses the first gzip member of `data`. An eStargz chunk lies wholly inside the
 * member that starts at its offset, so whatever follows that member is never needed.
 */
export async function decompressFirstGzipMember(data: Buffer): Promise<Buffer> {
  if (data.length < 18 || data[0] !== 0x1f || data[1] !== 0x8b || data[2] !== 8) throw new FormatError('not a gzip member (bad magic)');
  const flg = data[3]!;
  let p = 10;
  if (flg & 0x04) {
    if (p + 2 > data.length) throw new FormatError('truncated gzip extra field');
    p += 2 + data.readUInt16LE(p);
  }
  for (const bit of [0x08, 0x10]) {
    if (flg & bit) {
      const end = data.indexOf(0, p);
      if (end < 0) throw new FormatError('truncated gzip header');
      p = end + 1;
    }
  }
  if (flg & 0x02) p += 2;
  if (p > data.length) throw new FormatError('truncated gzip header');
  // inflateRaw stops at the end of the deflate stream and ignores the trailer and later members.
  return inflateRaw(data.subarray(p), { finishFlush: 2 /* Z_SYNC_FLUSH: tolerate what follows */ });
}

export async function decompressRange(compression: Compression, data: Buffer): Promise<Buffer> {
  return compression === 'zstd' ? decompressZstd(data) : decompressFirstGzipMember(data);
}

/** Whole-stream gunzip of concatenated members (plain tar+gzip layers). */
export async function gunzipAll(data: Buffer): Promise<Buffer> {
  return gunzip(data);
}

/**
 * Turns the compressed bytes of one chunk's range into the chunk's verified content:
 * decompress, skip `innerOffset`, keep `size` bytes, check the chunk digest.
 * `what` names the layer and entry for errors.
 */
export async function extractChunk(compression: Compression, chunk: Chunk, compressed: Buffer, what: string): Promise<Buffer> {
  let plain: Buffer;
  try {
    plain = await decompressRange(compression, compressed);
  } catch (e) {
    throw new FormatError(`${what}: cannot decompress chunk at [${chunk.compressedOffset}, ${chunk.compressedEnd}): ${(e as Error).message}`, { cause: e });
  }
  if (plain.length < chunk.innerOffset + chunk.size)
    throw new FormatError(`${what}: chunk at ${chunk.compressedOffset} decompresses to ${plain.length} bytes, need ${chunk.innerOffset + chunk.size}`);
  const data = plain.subarray(chunk.innerOffset, chunk.innerOffset + chunk.size);
  const actual = sha256(data);
  if (actual !== chunk.digest) throw new DigestMismatchError(`${what}: chunk at file offset ${chunk.offset}`, chunk.digest, actual);
  return data;
}
