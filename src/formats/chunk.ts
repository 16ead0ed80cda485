import { createInflateRaw } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../digest.js';
import { DigestMismatchError, FormatError } from '../errors.js';
import { inflateFromCheckpoint } from './gzip/checkpoints.js';
import type { Chunk, Compression } from './toc.js';
import { decompressionAllowance, firstZstdFrame } from './zstd-frames.js';

/**
 * Decodes the first zstd frame of `data`, refusing (before decoding) a frame whose block
 * headers allow more than `need` bytes plus slack: the decoder itself has no output bound,
 * so a tiny hostile frame could otherwise claim gigabytes. Every chunk is wholly inside the
 * first frame of its range (c/storage: one frame per chunk; stargz-zstd: later frames hold
 * only tar headers), so the rest of the range is never decoded.
 */
async function decodeFirstZstdFrame(data: Buffer, need: number): Promise<Buffer> {
  const frame = firstZstdFrame(data);
  if (typeof frame === 'string') throw new Error(frame);
  const allowed = decompressionAllowance(need, need);
  if (frame.bound > allowed) throw new Error(`frame may decompress to ${frame.bound} bytes, the chunk needs ${need}`);
  return zstdDecompress(data.subarray(0, frame.end));
}

function gzipHeaderLength(data: Buffer): number {
  if (data.length < 18 || data[0] !== 0x1f || data[1] !== 0x8b || data[2] !== 8) throw new Error('not a gzip member (bad magic)');
  const flg = data[3]!;
  let p = 10;
  if (flg & 0x04) {
    if (p + 2 > data.length) throw new Error('truncated gzip extra field');
    p += 2 + data.readUInt16LE(p);
  }
  for (const bit of [0x08, 0x10]) {
    if (flg & bit) {
      const end = data.indexOf(0, p);
      if (end < 0) throw new Error('truncated gzip header');
      p = end + 1;
    }
  }
  if (flg & 0x02) p += 2;
  if (p > data.length) throw new Error('truncated gzip header');
  return p;
}

/**
 * Inflates the first gzip member of `data` only until `need` bytes are out (an eStargz chunk
 * lies wholly inside the member at its offset), so a member that inflates to gigabytes
 * costs no more than the chunk it claims to hold. Runs on the libuv pool.
 */
function inflateFirstGzipMember(data: Buffer, need: number): Promise<Buffer> {
  const header = gzipHeaderLength(data);
  return new Promise((resolve, reject) => {
    const inflate = createInflateRaw();
    const parts: Buffer[] = [];
    let have = 0;
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      inflate.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(parts, Math.min(have, need)).subarray(0, need));
    };
    inflate.on('data', (d: Buffer) => {
      parts.push(d);
      have += d.length;
      if (have >= need) finish();
    });
    inflate.on('end', () => finish());
    inflate.on('error', (e) => finish(have >= need ? undefined : e));
    inflate.end(data.subarray(header));
  });
}

/**
 * Turns the compressed bytes of one chunk's range into the chunk's verified content:
 * decompress (bounded), skip `innerOffset`, keep `size` bytes, check the chunk digest.
 * `what` names the layer and entry for errors.
 */
export async function extractChunk(compression: Compression, chunk: Chunk, compressed: Buffer, what: string): Promise<Buffer> {
  const need = chunk.innerOffset + chunk.size;
  let plain: Buffer;
  try {
    if (chunk.resume) plain = await inflateFromCheckpoint(chunk.resume, compressed, need);
    else plain = compression === 'zstd' ? await decodeFirstZstdFrame(compressed, need) : await inflateFirstGzipMember(compressed, need);
  } catch (e) {
    throw new FormatError(`${what}: cannot decompress chunk at [${chunk.compressedOffset}, ${chunk.compressedEnd}): ${(e as Error).message}`, { cause: e });
  }
  if (plain.length < need)
    throw new FormatError(`${what}: chunk at ${chunk.compressedOffset} decompresses to ${plain.length} bytes, need ${need}`);
  const data = plain.subarray(chunk.innerOffset, need);
  const actual = sha256(data);
  if (actual !== chunk.digest) throw new DigestMismatchError(`${what}: chunk at file offset ${chunk.offset}`, chunk.digest, actual);
  return data;
}
