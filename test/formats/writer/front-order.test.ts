/**
 * front-order.ts and the two writers that use it: the members asked for go first, in the order
 * asked, after their parent directories and hard-link targets; whiteouts and absent paths stay
 * out; the result is a valid tar whose members keep their own bytes (zstd:chunked: header,
 * content and padding, even non-zero padding); large fronts go through a spool file.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../../../src/digest.js';
import { FormatError } from '../../../src/errors.js';
import { readLayerToc } from '../../../src/formats/index.js';
import { parseTarSplit, rebuildTar } from '../../../src/formats/tar-split.js';
import { tarPadding, TAR_EOA } from '../../../src/formats/tar/header.js';
import { encodeTarHeader, type TarEntrySpec } from '../../../src/formats/tar/write.js';
import { writeEstargzLayer } from '../../../src/formats/writer/estargz.js';
import { frontPath, planFront } from '../../../src/formats/writer/front-order.js';
import { writeZstdChunkedLayer } from '../../../src/formats/writer/zstd-chunked.js';
import type { BlobReader } from '../../../src/source/types.js';
import { seededBytes } from '../../helpers/images.js';
import { tarMembers, tarOrderProblems } from '../../helpers/tar-members.js';

type Spec = TarEntrySpec & { content?: Buffer };

/** A tar whose padding after each content is `padByte` (readers must not care what padding holds). */
function tarOf(specs: Spec[], padByte = 0): Buffer {
  const parts: Buffer[] = [];
  for (const s of specs) {
    const content = s.content ?? Buffer.alloc(0);
    const { content: _, ...spec } = s;
    parts.push(encodeTarHeader({ ...spec, size: content.length }), content, Buffer.alloc(tarPadding(content.length), padByte));
  }
  parts.push(TAR_EOA);
  return Buffer.concat(parts);
}

/** A written layer file as a BlobReader. */
async function blobOf(path: string, w: { digest: string; size: number }): Promise<BlobReader> {
  const bytes = await readFile(path);
  return { digest: w.digest, size: w.size, read: async (o, n) => bytes.subarray(o, o + n), stream: async () => createReadStream(path) };
}

const SPECS: Spec[] = [
  { path: 'etc', type: 'dir', mode: 0o755 },
  { path: 'etc/hostname', content: Buffer.from('box\n') },
  { path: 'etc/app.conf', content: Buffer.from('level = 3\n') },
  { path: 'etc/.wh.old', content: Buffer.alloc(0) },
  { path: 'usr', type: 'dir', mode: 0o755 },
  { path: 'usr/lib', type: 'dir', mode: 0o755 },
  { path: 'usr/lib/libz.so', content: seededBytes('libz', 70_001) },
  { path: 'usr/lib/other.so', content: seededBytes('other', 5_000) },
  { path: 'usr/lib/libz.hl', type: 'hardlink', linkName: 'usr/lib/libz.so' },
  { path: 'usr/share', type: 'dir', mode: 0o755 },
  { path: 'usr/share/big.dat', content: seededBytes('big', 300_000) },
  { path: 'usr/share/tail.txt', content: Buffer.from('the end\n') },
];
// A hard link asked for (its target and the target's parents were not), a file, a whiteout, an absent path.
const ASKED = ['/usr/lib/libz.hl', 'etc/app.conf', 'etc/.wh.old', 'not/there', 'usr/share/tail.txt'];
const FRONT = ['usr', 'usr/lib', 'usr/lib/libz.so', 'usr/lib/libz.hl', 'etc', 'etc/app.conf', 'usr/share', 'usr/share/tail.txt'];

describe('front order (writers)', () => {
  let tmp: string;
  const source = tarOf(SPECS, 0xa5);
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-front-order-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('zstd:chunked: asked-for members first with their parents and link targets, each with its own bytes; TOC, tar-split and DiffID agree', async () => {
    const out = join(tmp, 'front.zst');
    const w = await writeZstdChunkedLayer(() => [source], out, { prioritize: ASKED });
    assert.deepEqual(w.front, FRONT);
    const blob = await readFile(out);
    const stream = Buffer.from(await zstdDecompress(blob));
    assert.equal(w.diffId, sha256(stream), 'DiffID = sha256 of the new stream');
    assert.equal(stream.length, source.length, 'same members, same bytes, new order');
    const got = await tarMembers(stream);
    const want = await tarMembers(source);
    const rest = want.map((m) => m.path).filter((p) => !FRONT.includes(p));
    assert.deepEqual(got.map((m) => m.path), [...FRONT, ...rest]);
    assert.deepEqual(tarOrderProblems(got), []);
    const wantBytes = new Map(want.map((m) => [m.path, m.bytes]));
    for (const m of got) assert.ok(m.bytes.equals(wantBytes.get(m.path)!), `${m.path}: header, content and padding as in the source`);

    const desc = { mediaType: w.mediaType, digest: w.digest, size: w.size, annotations: w.annotations };
    const toc = await readLayerToc(desc, await blobOf(out, w));
    assert.equal(toc.verified, true);
    assert.deepEqual(toc.entries.map((e) => e.path), got.map((m) => m.path), 'TOC in stream order');
    const frontEnd = Math.max(...toc.entries.filter((e) => FRONT.includes(e.path)).flatMap((e) => e.chunks.map((c) => c.compressedEnd)));
    const restStart = Math.min(...toc.entries.filter((e) => !FRONT.includes(e.path)).flatMap((e) => e.chunks.map((c) => c.compressedOffset)));
    assert.ok(frontEnd <= restStart, 'the front files lie together before every other file');
    const ts = toc.tarSplit!;
    const entries = parseTarSplit(await zstdDecompress(blob.subarray(ts.offset, ts.offset + ts.compressedLength)));
    const byPath = new Map(got.map((m) => [m.path, m]));
    const parts: Buffer[] = [];
    for await (const b of rebuildTar(entries, async (name, size) => {
      const m = byPath.get(frontPath(name)!)!;
      return m.bytes.subarray(m.bytes.length - size - tarPadding(size), m.bytes.length - tarPadding(size));
    })) parts.push(b);
    assert.ok(Buffer.concat(parts).equals(stream), 'tar-split rebuilds the new stream');
  });

  it('eStargz: the same front, then .prefetch.landmark, then the rest', async () => {
    const out = join(tmp, 'front.gz');
    const w = await writeEstargzLayer(() => [source], out, { prioritize: ASKED, chunkSize: 32_768 });
    assert.deepEqual(w.front, FRONT);
    const got = await tarMembers(gunzipSync(await readFile(out)));
    const rest = (await tarMembers(source)).map((m) => m.path).filter((p) => !FRONT.includes(p));
    assert.deepEqual(got.map((m) => m.path), [...FRONT, '.prefetch.landmark', ...rest, 'stargz.index.json']);
    assert.deepEqual(tarOrderProblems(got), []);
    const desc = { mediaType: w.mediaType, digest: w.digest, size: w.size, annotations: w.annotations };
    const toc = await readLayerToc(desc, await blobOf(out, w));
    const lastFront = toc.entries.find((e) => e.path === 'usr/share/tail.txt')!.chunks.at(-1)!;
    assert.equal(toc.prefetchEnd, lastFront.compressedEnd, 'the landmark right after the last front file');
  });

  it('nothing found: no front, and zstd:chunked keeps the source stream byte for byte', async () => {
    const w = await writeZstdChunkedLayer(() => [source], join(tmp, 'none.zst'), { prioritize: ['not/there', 'etc/.wh.old', '/'] });
    assert.deepEqual(w.front, []);
    assert.equal(w.diffId, sha256(source));
    const e = await writeEstargzLayer(() => [source], join(tmp, 'none.gz'), { prioritize: ['not/there'] });
    assert.deepEqual((await tarMembers(gunzipSync(await readFile(join(tmp, 'none.gz'))))).map((m) => m.path)[0], '.no.prefetch.landmark');
    assert.deepEqual(e.front, []);
  });

  it('zstd:chunked refuses a duplicate name among the front members, as it does elsewhere', async () => {
    const dup = tarOf([{ path: 'a', content: Buffer.from('x') }, { path: './a', content: Buffer.from('y') }]);
    await assert.rejects(writeZstdChunkedLayer(() => [dup], join(tmp, 'dup.zst'), { prioritize: ['a'] }), (e: Error) => e instanceof FormatError && /duplicate entry "a"/.test(e.message));
    assert.equal(existsSync(join(tmp, 'dup.zst.front')), false);
  });

  it('a hostile list (2,000 distinct paths of 2,000 components) and a hard-link cycle: linear work, each member placed once', async () => {
    const tar = tarOf([
      { path: 'x', type: 'hardlink', linkName: 'y' },
      { path: 'y', type: 'hardlink', linkName: 'x' },
      { path: 'd', type: 'dir' },
      { path: 'd/f', content: Buffer.from('f') },
    ]);
    const deep = Array.from({ length: 2000 }, (_, i) => `${i}/${'a/'.repeat(2000)}f`);
    const plan = await planFront(() => [tar], [...deep, 'x', 'd/f', 'x'], { spoolPath: join(tmp, 'hostile.front') });
    try {
      assert.deepEqual(plan.paths, ['y', 'x', 'd', 'd/f']);
    } finally {
      await plan.close();
    }
  });

  it('keeps a large front in a spool file (contiguous across a spill in mid-member), removed on close', async () => {
    const files = [
      { path: 'a.bin', content: seededBytes('a', 50_000) },
      { path: 'b.bin', content: seededBytes('b', 100_000) },
      { path: 'c.bin', content: seededBytes('c', 100_000) },
      { path: 'd.bin', content: seededBytes('d', 10) },
    ];
    const tar = tarOf(files);
    const spoolPath = join(tmp, 'spool');
    const plan = await planFront(() => [tar], ['c.bin', 'a.bin', 'b.bin'], { spoolPath, memoryBytes: 64 * 1024 });
    try {
      assert.deepEqual(plan.paths, ['c.bin', 'a.bin', 'b.bin']);
      assert.ok(existsSync(spoolPath), 'spilled to the spool file');
      for await (const m of plan.members()) {
        const h = createHash('sha256');
        for await (const b of m.content()) h.update(b);
        assert.equal('sha256:' + h.digest('hex'), sha256(files.find((f) => f.path === m.path)!.content), m.path);
      }
      assert.equal(plan.has('./b.bin'), true);
      assert.equal(plan.has('d.bin'), false);
    } finally {
      await plan.close();
    }
    assert.equal(existsSync(spoolPath), false, 'spool removed');
  });
});
