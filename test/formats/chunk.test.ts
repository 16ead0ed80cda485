/** Chunk extraction: bounded decompression and digest checks on hostile ranges. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compress } from '@mongodb-js/zstd';
import { sha256 } from '../../src/digest.js';
import { extractChunk } from '../../src/formats/chunk.js';
import type { Chunk } from '../../src/formats/toc.js';

function chunkFor(data: Buffer, compressedLength: number, innerOffset = 0): Chunk {
  return { offset: 0, size: data.length, compressedOffset: 1000, compressedEnd: 1000 + compressedLength, innerOffset, digest: sha256(data), zeros: false };
}

test('a zstd frame that claims far more than the chunk is refused before decoding', async () => {
  const bomb = await compress(Buffer.alloc(256 * 1024 * 1024));
  assert.ok(bomb.length < 64 * 1024, `bomb frame is ${bomb.length} bytes`);
  const small = Buffer.from('twelve bytes');
  await assert.rejects(extractChunk('zstd', chunkFor(small, bomb.length), bomb, 'layer sha256:ab entry etc/x'), /layer sha256:ab entry etc\/x: cannot decompress chunk at \[1000, \d+\): frame may decompress to \d+ bytes, the chunk needs 12/);
});

test('only the first zstd frame of a range is decoded', async () => {
  const content = Buffer.from('hello from a chunk\n');
  const range = Buffer.concat([await compress(content), await compress(Buffer.alloc(64 * 1024 * 1024))]);
  assert.deepEqual(await extractChunk('zstd', chunkFor(content, range.length), range, 'x'), content);
});

test('a gzip member that inflates to gigabytes costs only the bytes the chunk needs', async () => {
  const content = Buffer.alloc(4096, 7);
  const member = gzipSync(Buffer.concat([Buffer.from('HEADER--'), content, Buffer.alloc(128 * 1024 * 1024)]));
  const chunk = chunkFor(content, member.length, 8);
  const before = process.memoryUsage().rss;
  assert.deepEqual(await extractChunk('gzip', chunk, member, 'x'), content);
  assert.ok(process.memoryUsage().rss - before < 64 * 1024 * 1024, 'inflate stopped early');
});

test('a flipped byte is a digest mismatch naming the entry and both digests', async () => {
  const content = Buffer.from('0123456789abcdef'.repeat(100));
  const frame = Buffer.from(await compress(content));
  const good = chunkFor(content, frame.length);
  const other = Buffer.from(content);
  other[5] ^= 1;
  const lying = { ...good, digest: sha256(other) };
  await assert.rejects(extractChunk('zstd', lying, frame, 'layer sha256:cd entry usr/bin/tool'), (e: Error) => {
    assert.match(e.message, /layer sha256:cd entry usr\/bin\/tool: chunk at file offset 0: digest mismatch: expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/);
    return true;
  });
});

test('a range shorter than the chunk is an error, not a short read', async () => {
  const content = Buffer.from('abc');
  const frame = Buffer.from(await compress(content));
  const chunk = { ...chunkFor(content, frame.length), size: 10 };
  await assert.rejects(extractChunk('zstd', chunk, frame, 'x'), /decompresses to 3 bytes, need 10/);
});
