import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { DigestMismatchError, FormatError } from '../../src/errors.js';
import { extractChunk } from '../../src/formats/chunk.js';
import { GzipCheckpointer, inflateFromCheckpoint, WINDOW_SIZE } from '../../src/formats/gzip/checkpoints.js';
import { decodePlainIndex, encodePlainIndex } from '../../src/formats/plain-index.js';
import { plainLayerToc } from '../../src/formats/plain.js';
import type { Chunk, TocEntry } from '../../src/formats/toc.js';
import { seededBytes } from '../helpers/images.js';

/** Text, random bytes and long runs: deflate blocks of every type, at every bit offset. */
function mixed(size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0, n = 0; n < size; i++) {
    const kind = i % 3;
    const part = kind === 0 ? Buffer.from(`line ${i} of some text that repeats a little ${i % 17}\n`.repeat(200)) : kind === 1 ? seededBytes(`mixed-${i}`, 30_000) : Buffer.alloc(50_000, i & 0xff);
    parts.push(part);
    n += part.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

function checkpointed(gz: Buffer, spacing: number, piece = 65_536): { out: Buffer; c: GzipCheckpointer } {
  const c = new GzipCheckpointer(spacing);
  const outs: Buffer[] = [];
  for (let i = 0; i < gz.length; i += piece) outs.push(...c.push(gz.subarray(i, i + piece)));
  c.finish();
  return { out: Buffer.concat(outs), c };
}

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('gzip checkpoints', () => {
  const raw = mixed(6 * 1024 * 1024);
  const gz = gzipSync(raw, { level: 6 });

  it('decompresses the stream exactly, and every checkpoint resumes it byte for byte', async () => {
    // Random parts make stored blocks, which pad to the stream's own byte boundaries.
    for (const piece of [4096, 1 << 20]) {
      const { out, c } = checkpointed(gz, 512 * 1024, piece);
      assert.ok(out.equals(raw));
      assert.ok(c.checkpoints.length >= 8, `${c.checkpoints.length} checkpoints for 6 MiB at 512 KiB spacing`);
      assert.equal(c.checkpoints[0]!.out, 0, 'the first checkpoint is the stream start');
      assert.ok(new Set(c.checkpoints.map((cp) => cp.skipBits)).size > 1, 'checkpoints fall at several bit offsets');
      for (const [i, cp] of c.checkpoints.entries()) {
        assert.equal(cp.window.length, Math.min(WINDOW_SIZE, cp.out));
        assert.ok(cp.window.equals(raw.subarray(Math.max(0, cp.out - WINDOW_SIZE), cp.out)), 'the window is the output before the checkpoint');
        const next = c.checkpoints[i + 1];
        const need = (next?.out ?? raw.length) - cp.out;
        const got = inflateFromCheckpoint(cp, gz.subarray(cp.offset, next ? next.offset + 1 : gz.length), need);
        assert.ok(got.equals(raw.subarray(cp.out, cp.out + need)), `checkpoint ${i} at bit ${cp.skipBits} of byte ${cp.offset}`);
      }
    }
  });

  it('a concatenated gzip stream decompresses whole; no checkpoint is taken after the first member', () => {
    const two = Buffer.concat([gzipSync(raw.subarray(0, 3_000_000)), gzipSync(raw.subarray(3_000_000))]);
    const { out, c } = checkpointed(two, 256 * 1024);
    assert.ok(out.equals(raw));
    assert.equal(c.multiMember, true);
    assert.ok(c.checkpoints.every((cp) => cp.out < 3_000_000));
  });

  it('a truncated or corrupt stream is a FormatError', () => {
    assert.throws(() => checkpointed(gz.subarray(0, gz.length - 100), 1 << 20), (e: Error) => e instanceof FormatError && /truncated/.test(e.message));
    const bad = Buffer.from(gz);
    bad[20] ^= 0xff;
    bad[21] ^= 0xff;
    assert.throws(() => checkpointed(bad, 1 << 20), FormatError);
  });

  it('a piece read through a wrong window fails its digest: never served', async () => {
    const { c } = checkpointed(gz, 512 * 1024);
    const cp = c.checkpoints.find((p) => p.out > WINDOW_SIZE)!;
    const next = c.checkpoints[c.checkpoints.indexOf(cp) + 1]!;
    const size = 100_000;
    const chunk: Chunk = { offset: 0, size, compressedOffset: cp.offset, compressedEnd: next.offset + 1, innerOffset: 1000, digest: sha(raw.subarray(cp.out + 1000, cp.out + 1000 + size)), zeros: false, resume: { skipBits: cp.skipBits, window: cp.window, out: cp.out } };
    const span = gz.subarray(chunk.compressedOffset, chunk.compressedEnd);
    assert.ok((await extractChunk('gzip', chunk, span, 'f')).equals(raw.subarray(cp.out + 1000, cp.out + 1000 + size)));
    // A wrong window or bit offset decodes to garbage or fails to decode; either way no byte
    // that does not hash to the piece's digest comes out.
    const want = raw.subarray(cp.out + 1000, cp.out + 1000 + size);
    const outcomes = await Promise.all([
      { ...chunk, resume: { skipBits: cp.skipBits, window: Buffer.from(cp.window).fill(0x41), out: cp.out } },
      { ...chunk, resume: { skipBits: (cp.skipBits + 3) % 8, window: cp.window, out: cp.out } },
      { ...chunk, compressedOffset: chunk.compressedOffset + 1 },
    ].map((bad) => extractChunk('gzip', bad, gz.subarray(bad.compressedOffset, bad.compressedEnd), 'f').then((d) => d, (e: Error) => e)));
    for (const o of outcomes) assert.ok(o instanceof DigestMismatchError || o instanceof FormatError || (Buffer.isBuffer(o) && o.equals(want)), String(o));
    assert.ok(outcomes.some((o) => o instanceof Error), 'a wrong entry point is caught');
  });
});

describe('stored index with checkpoints', () => {
  const raw = mixed(3 * 1024 * 1024);
  const gz = gzipSync(raw);
  const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length };
  const { c } = checkpointed(gz, 256 * 1024);
  const piece = (at: number, size: number): { chunk: Chunk; at: number } => ({ at, chunk: { offset: 0, size, compressedOffset: -1, compressedEnd: -1, innerOffset: 0, digest: sha(raw.subarray(at, at + size)), zeros: false } });
  const entry: TocEntry = { path: 'f', type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: { sec: 0, nsec: 0 }, chunks: [], digest: sha(raw.subarray(512, 512 + 2_000_000)) };
  const pieces = [piece(512, 1 << 20), piece(512 + (1 << 20), 2_000_000 - (1 << 20))];
  pieces[1]!.chunk.offset = 1 << 20;
  entry.chunks = pieces.map((p) => p.chunk);
  entry.size = 2_000_000;
  const toc = plainLayerToc('plain gzip', 'gzip', [{ path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: { sec: 0, nsec: 0 }, chunks: [] }, entry], raw.length);

  it('keeps the checkpoints and piece ranges across a save and load', async () => {
    const { locateInGzip } = await import('../../src/formats/plain.js');
    locateInGzip(pieces, c.checkpoints, gz.length);
    toc.checkpoints = c.checkpoints;
    const back = decodePlainIndex(desc, encodePlainIndex(desc, toc));
    const chunks = back.entries[1]!.chunks;
    assert.deepEqual(chunks.map((x) => [x.compressedOffset, x.compressedEnd, x.innerOffset]), entry.chunks.map((x) => [x.compressedOffset, x.compressedEnd, x.innerOffset]));
    for (const [i, x] of chunks.entries()) assert.ok((await extractChunk('gzip', x, gz.subarray(x.compressedOffset, x.compressedEnd), 'f')).equals(raw.subarray(pieces[i]!.at, pieces[i]!.at + x.size)));
  });

  it('refuses malformed checkpoints with a clear error', () => {
    const stored = (mutate: (body: { checkpoints: unknown[][]; entries: Array<{ pieces?: unknown[][] }> }) => void): Buffer => {
      const data = encodePlainIndex(desc, toc);
      const nl = data.indexOf(0x0a, data.indexOf(0x0a) + 1);
      const body = JSON.parse(data.subarray(nl + 1).toString());
      mutate(body);
      const json = Buffer.from(JSON.stringify(body));
      const meta = JSON.parse(data.subarray(data.indexOf(0x0a) + 1, nl).toString());
      meta.body = sha(json);
      return Buffer.concat([data.subarray(0, data.indexOf(0x0a) + 1), Buffer.from(JSON.stringify(meta) + '\n'), json]);
    };
    const cases: Array<[string, (b: { checkpoints: unknown[][]; entries: Array<{ pieces?: unknown[][] }> }) => void, RegExp]> = [
      ['out of order', (b) => b.checkpoints.reverse(), /out of order/],
      ['offset past the blob', (b) => (b.checkpoints.at(-1)![0] = gz.length + 5), /malformed/],
      ['truncated window', (b) => (b.checkpoints[1]![3] = (b.checkpoints[1]![3] as string).slice(0, 400)), /window of/],
      ['skip bits of 9', (b) => (b.checkpoints[1]![1] = 9), /malformed/],
      ['a piece past the stream', (b) => (b.entries[1]!.pieces![1]![3] = raw.length), /past the end/],
    ];
    for (const [what, mutate, message] of cases) assert.throws(() => decodePlainIndex(desc, stored(mutate)), (e: Error) => e instanceof FormatError && message.test(e.message), what);
  });
});
