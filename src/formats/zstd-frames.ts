import { decompress as zstdDecompress } from '@mongodb-js/zstd';

const ZSTD_MAGIC = 0xfd2fb528;
const BLOCK_MAX = 128 * 1024;

export function isSkippableMagic(m: number): boolean {
  return (m & 0xfffffff0) >>> 0 === 0x184d2a50;
}

/** Walks one zstd data frame at `p`: its end and the most bytes it can decompress to, or an error string. */
function walkFrame(data: Buffer, start: number): { end: number; bound: number } | string {
  let p = start;
  let bound = 0;
  const fhd = data[p + 4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictIdLen = [0, 1, 2, 4][fhd & 3]!;
  const fcsLen = [singleSegment, 2, 4, 8][fcsFlag]!;
  if (fhd & 0x08) return `reserved bit set in zstd frame header at ${p}`;
  p += 5 + (singleSegment ? 0 : 1) + dictIdLen + fcsLen;
  for (;;) {
    if (p + 3 > data.length) return `truncated zstd block at ${p}`;
    const bh = data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    p += 3;
    if (type === 0) {
      bound += size;
      p += size;
    } else if (type === 1) {
      bound += size;
      p += 1;
    } else if (type === 2) {
      if (size > BLOCK_MAX) return `oversized zstd block at ${p - 3}`;
      bound += BLOCK_MAX;
      p += size;
    } else return `reserved zstd block type at ${p - 3}`;
    if (p > data.length) return `truncated zstd block at ${p}`;
    if (last) break;
  }
  p += checksum ? 4 : 0;
  if (p > data.length) return 'truncated zstd frame checksum';
  return { end: p, bound };
}

/**
 * The most bytes `data` (whole zstd frames) can decompress to, found by walking frame and
 * block headers without decompressing: raw and RLE blocks state their size, a compressed
 * block yields at most 128 KiB. Returns an error string for anything that is not a sequence
 * of complete frames. This lets a TOC be refused before the decoder (which has no output
 * bound) could be made to allocate gigabytes.
 */
export function zstdDecompressedBound(data: Buffer): number | string {
  let p = 0;
  let bound = 0;
  let frames = 0;
  while (p < data.length) {
    if (p + 8 > data.length) return `truncated zstd frame at ${p}`;
    const magic = data.readUInt32LE(p);
    if (isSkippableMagic(magic)) {
      p += 8 + data.readUInt32LE(p + 4);
      continue;
    }
    if (magic !== ZSTD_MAGIC) return `bad zstd magic at ${p}`;
    const frame = walkFrame(data, p);
    if (typeof frame === 'string') return frame;
    bound += frame.bound;
    p = frame.end;
    frames++;
  }
  if (frames === 0) return 'no zstd frame';
  return bound;
}

/** The first zstd data frame of `data` (which must start with one): where it ends and its output bound. */
export function firstZstdFrame(data: Buffer): { end: number; bound: number } | string {
  if (data.length < 8) return 'truncated zstd frame';
  if (data.readUInt32LE(0) !== ZSTD_MAGIC) return 'bad zstd magic at 0';
  return walkFrame(data, 0);
}

/** Decompresses zstd data only if it provably cannot exceed `maxOutput` bytes. */
export async function decompressZstdBounded(data: Buffer, maxOutput: number): Promise<Buffer> {
  const bound = zstdDecompressedBound(data);
  if (typeof bound === 'string') throw new Error(bound);
  if (bound > maxOutput) throw new Error(`may decompress to up to ${bound} bytes, more than the limit of ${maxOutput}`);
  return zstdDecompress(data);
}

/**
 * The output bound to allow for a frame sequence that declares `declared` bytes: the walk
 * counts every compressed block as a full 128 KiB, so allow one block of slack (or double
 * for large inputs), never more than `limit`.
 */
export function decompressionAllowance(declared: number, limit: number): number {
  return Math.min(limit + BLOCK_MAX, Math.max(2 * declared, declared + BLOCK_MAX));
}
