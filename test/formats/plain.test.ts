/**
 * indexPlainLayer on plain layers (gzip and zstd) that tocfs builds and that the corpus holds
 * (written by skopeo 1.9.3): every entry must agree with the spec or expected.json (computed
 * by python's tarfile from the same bytes), and every file must be rebuildable from the
 * pieces handed to `put`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, mkdir, mkdtemp, open, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../../src/digest.js';
import { DigestMismatchError } from '../../src/errors.js';
import { extractChunk } from '../../src/formats/chunk.js';
import { indexPlainLayer, PLAIN_CHUNK_SIZE } from '../../src/formats/plain.js';
import { parsePaxTime } from '../../src/formats/tar/pax.js';
import type { LayerToc, TocEntry } from '../../src/formats/toc.js';
import { OciLayoutSource } from '../../src/source/oci-layout.js';
import type { Descriptor } from '../../src/source/types.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected, type ExpectedEntry } from '../helpers/corpus.js';
import { corpusLayer, memoryBlob } from '../helpers/toc-repack.js';
import { expectedMtime as specMtime } from '../helpers/fs-expected.js';
import { buildImage } from '../helpers/images.js';
import { expectedEntries, KINDS_LAYER } from '../helpers/spec-expected.js';

const PLAIN_IMAGES = ['gzip-plain-basic', 'gzip-plain-gnusparse', 'gzip-plain-layers', 'gzip-plain-multiarch', 'zstd-plain-basic'];

function expectedMtime(x: ExpectedEntry): { sec: number; nsec: number } {
  return x.mtime_pax !== undefined ? parsePaxTime(x.mtime_pax) : { sec: x.mtime, nsec: 0 };
}

async function index(dir: string, desc: Descriptor): Promise<{ toc: LayerToc; store: Map<string, Buffer>; progress: number[] }> {
  const store = new Map<string, Buffer>();
  const progress: number[] = [];
  const src = new OciLayoutSource({ transport: 'oci', dir } as never);
  const toc = await indexPlainLayer(desc, src.blob(desc), async (d, data) => {
    assert.equal(sha256(data), d, 'put digest matches its data');
    store.set(d, Buffer.from(data));
  }, (n) => progress.push(n));
  return { toc, store, progress };
}

/** A file's pieces as they were put: they cover it without gaps, at most PLAIN_CHUNK_SIZE each, zeros where marked. */
function storedPieces(e: TocEntry, store: Map<string, Buffer>): Buffer[] {
  let at = 0;
  const parts = e.chunks.map((c) => {
    assert.equal(c.offset, at, `${e.path}: chunks cover the file without gaps`);
    assert.ok(c.size <= PLAIN_CHUNK_SIZE, `${e.path}: piece of ${c.size} bytes`);
    at += c.size;
    const data = store.get(c.digest);
    assert.ok(data, `${e.path}: chunk ${c.digest} was put`);
    assert.equal(c.zeros, !data.some((b) => b !== 0));
    return data;
  });
  assert.equal(at, e.size);
  return parts;
}

/**
 * Pieces of a gzip layer that a checkpoint reaches decompress from their blob range to what was
 * put; every other piece (zstd, tar, sparse members) is only in the cache (offsets -1).
 */
async function checkPieceRanges(toc: LayerToc, blob: Buffer, store: Map<string, Buffer>): Promise<void> {
  let located = 0;
  let pieces = 0;
  for (const e of toc.entries) {
    for (const c of e.chunks) {
      pieces++;
      if (c.compressedOffset < 0) {
        assert.equal(c.compressedEnd, -1);
        continue;
      }
      assert.ok(toc.formatVersion === 'plain gzip' && c.resume, `${e.path}: only gzip pieces have blob ranges`);
      assert.ok(c.compressedOffset < c.compressedEnd && c.compressedEnd <= blob.length, `${e.path}: range [${c.compressedOffset}, ${c.compressedEnd}) inside the blob`);
      const data = await extractChunk(toc.compression, c, blob.subarray(c.compressedOffset, c.compressedEnd), e.path);
      assert.ok(data.equals(store.get(c.digest)!), `${e.path}: piece at ${c.offset} decompresses from its checkpoint`);
      located++;
    }
  }
  if (toc.formatVersion === 'plain gzip' && pieces > 0) assert.ok(located > 0, 'a gzip layer\'s pieces are reachable from checkpoints');
}

describe('plain-layer indexer on the corpus', { skip: !HAVE_CORPUS && 'corpus not present' }, () => {
  for (const image of PLAIN_IMAGES) {
    it(`${image}: entries and contents match expected.json`, async () => {
      const x = loadExpected(image);
      for (const [digest, layer] of Object.entries(x.layers)) {
        const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size };
        const { toc, store, progress } = await index(join(CORPUS_DIR, image), desc);
        await checkPieceRanges(toc, await readFile(join(CORPUS_DIR, image, 'blobs', 'sha256', digest.slice(7))), store);
        assert.equal(toc.format, 'none');
        assert.equal(toc.verified, true);
        assert.equal(toc.formatVersion, image.startsWith('zstd') ? 'plain zstd' : 'plain gzip');
        assert.equal(toc.uncompressedSize, layer.uncompressed_size);
        assert.equal(progress.at(-1), layer.size, 'progress reaches the blob size');
        const want = Array.from(layer.entries).filter((e) => !e.meta);
        assert.deepEqual(Array.from(toc.entries).map((e) => e.path), want.map((e) => e.path), `${image} ${digest}: paths in archive order`);
        Array.from(toc.entries).forEach((e, i) => {
          const w = want[i]!;
          const what = `${image}: ${w.path}`;
          assert.equal(e.type, w.type, `${what} type`);
          assert.equal(e.mode, w.mode, `${what} mode`);
          assert.deepEqual([e.uid, e.gid, e.userName ?? '', e.groupName ?? ''], [w.uid, w.gid, w.uname ?? '', w.gname ?? ''], `${what} owner`);
          assert.deepEqual(e.mtime, expectedMtime(w), `${what} mtime`);
          if (w.type === 'reg') assert.equal(e.size, w.size, `${what} size`);
          if (w.type === 'symlink') assert.equal(e.linkName, w.linkname, `${what} symlink target`);
          if (w.type === 'hardlink') assert.equal(e.linkName, w.link_path, `${what} hard-link target`);
          if (w.type === 'char' || w.type === 'block') assert.deepEqual([e.devMajor, e.devMinor], [w.devmajor, w.devminor], `${what} device`);
          const xattrs = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')]));
          assert.deepEqual(xattrs, w.xattrs ?? {}, `${what} xattrs`);
        });
        for (const e of Array.from(toc.entries).filter((t) => t.type === 'reg')) {
          const w = want.find((t) => t.path === e.path)!;
          const parts = storedPieces(e, store);
          assert.equal(sha256(parts), 'sha256:' + w.sha256, `${image}: ${e.path} content`);
          assert.equal(e.digest, 'sha256:' + w.sha256);
        }
      }
    });
  }

  it('expands GNU sparse files (PAX 1.0) and flags their zero pieces', async () => {
    const x = loadExpected('gzip-plain-gnusparse');
    const digest = x.images[0]!.layers[0]!;
    const { toc } = await index(join(CORPUS_DIR, 'gzip-plain-gnusparse'), { mediaType: x.layers[digest]!.mediaType, digest, size: x.layers[digest]!.size });
    const sparse = Array.from(toc.entries).find((e) => e.path === 'sparse/gnu-sparse-32m.img')!;
    assert.equal(sparse.size, 32 * 1024 * 1024);
    assert.ok(sparse.chunks.filter((c) => c.zeros).length >= 28, 'most of the 32 MiB are holes');
  });

  it('refuses a blob whose bytes do not match the descriptor digest', async () => {
    const layer = corpusLayer('gzip-plain-layers', 0);
    const bytes = Buffer.from(layer.bytes);
    bytes[4] ^= 0x01; // the gzip header's MTIME: still decodes to the same tar, but is not the blob the manifest names
    const blob = memoryBlob({ desc: layer.desc, bytes });
    await assert.rejects(indexPlainLayer(layer.desc, blob, async () => undefined), (e: Error) =>
      e instanceof DigestMismatchError && e.message.includes(`layer ${layer.desc.digest}`) && e.actual === sha256(bytes));
  });
});

describe('plain-layer indexer on layers tocfs builds', () => {
  for (const format of ['gzip', 'zstd'] as const) {
    it(`${format}: entries and contents match the spec`, async () => {
      const tmp = await mkdtemp(join(tmpdir(), 'tocfs-plain-built-'));
      try {
        const img = await buildImage(join(tmp, 'img'), { format, layers: [KINDS_LAYER] });
        const desc = img.layers[0]!;
        const { toc, store, progress } = await index(img.dir, desc);
        const bytes = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
        await checkPieceRanges(toc, bytes, store);
        assert.deepEqual([toc.format, toc.verified, toc.formatVersion], ['none', true, `plain ${format}`]);
        assert.equal(toc.uncompressedSize, (format === 'gzip' ? gunzipSync(bytes) : await zstdDecompress(bytes)).length);
        assert.equal(progress.at(-1), desc.size, 'progress reaches the blob size');
        const want = await expectedEntries(KINDS_LAYER);
        assert.deepEqual(Array.from(toc.entries).map((e) => e.path), want.map((e) => e.path), 'paths in archive order');
        for (const [i, e] of Array.from(toc.entries).entries()) {
          const w = want[i]!;
          assert.deepEqual([e.type, e.mode], [w.type, w.mode], `${w.path} type, mode`);
          assert.deepEqual([e.uid, e.gid, e.userName ?? '', e.groupName ?? ''], [w.uid, w.gid, w.uname ?? '', w.gname ?? ''], `${w.path} owner`);
          assert.deepEqual(e.mtime, specMtime(w), `${w.path} mtime`);
          if (w.type === 'reg') assert.equal(e.size, w.size, `${w.path} size`);
          if (w.type === 'symlink') assert.equal(e.linkName, w.linkname, `${w.path} symlink target`);
          if (w.type === 'hardlink') assert.equal(e.linkName, w.link_path, `${w.path} hard-link target`);
          if (w.type === 'char' || w.type === 'block') assert.deepEqual([e.devMajor, e.devMinor], [w.devmajor, w.devminor], `${w.path} device`);
          assert.deepEqual(Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')])), w.xattrs ?? {}, `${w.path} xattrs`);
          if (w.type !== 'reg') continue;
          const parts = storedPieces(e, store);
          assert.equal(sha256(parts), 'sha256:' + w.sha256, `${e.path} content`);
        }
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    });
  }

  it('refuses a blob whose bytes do not match the descriptor digest', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-plain-built-'));
    try {
      const img = await buildImage(join(tmp, 'img'), { format: 'gzip', layers: [KINDS_LAYER.slice(0, 3)] });
      const desc = img.layers[0]!;
      const good = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
      assert.equal((await indexPlainLayer(desc, memoryBlob({ desc, bytes: good }), async () => undefined)).entries.length, 3, 'the untouched blob indexes');
      const bytes = Buffer.from(good);
      bytes[4] ^= 0x01; // the gzip header's MTIME: still decodes to the same tar, but is not the blob the manifest names
      await assert.rejects(indexPlainLayer(desc, memoryBlob({ desc, bytes }), async () => undefined), (e: Error) =>
        e instanceof DigestMismatchError && e.message.includes(`layer ${desc.digest}`) && e.actual === sha256(bytes));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('plain-layer indexer on archives written by GNU tar', () => {
  it('reads GNU long names, old-GNU sparse members, hard links and symlinks', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-plain-gnu-'));
    try {
      const root = join(tmp, 'root');
      const long = 'd'.repeat(120) + '/' + 'f'.repeat(110) + '.txt';
      await mkdir(join(root, 'd'.repeat(120)), { recursive: true });
      await writeFile(join(root, long), 'long name\n');
      const sparse = join(root, 'sparse.img');
      await writeFile(sparse, '');
      await truncate(sparse, 10 << 20);
      const fh = await open(sparse, 'r+');
      await fh.write(Buffer.from('hello in the middle'), 0, 19, 5 << 20);
      await fh.close();
      await link(join(root, long), join(root, 'hardlink'));
      await symlink('sparse.img', join(root, 'symlink'));
      const archive = join(tmp, 'layer.tar.gz');
      execFileSync('tar', ['--format=gnu', '-S', '-czf', archive, '-C', root, '.']);
      const bytes = await readFile(archive);
      const desc: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(bytes), size: bytes.length };
      const store = new Map<string, Buffer>();
      const toc = await indexPlainLayer(desc, memoryBlob({ desc, bytes }), async (d, data) => void store.set(d, Buffer.from(data)));
      const byPath = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
      const content = (p: string): Buffer => {
        const e = byPath.get(p)!;
        return e.type === 'hardlink' ? content(e.linkName!) : Buffer.concat(e.chunks.map((c) => store.get(c.digest)!));
      };
      assert.equal(content(long).toString(), 'long name\n');
      const img = byPath.get('sparse.img')!;
      assert.equal(img.size, 10 << 20);
      assert.equal(sha256(content('sparse.img')), sha256(await readFile(sparse)));
      // GNU tar stores the second name of a hard-linked file as a link to the first one it wrote.
      const [first, second] = [long, 'hardlink'].map((p) => byPath.get(p)!);
      assert.ok((first!.type === 'hardlink' && first!.linkName === 'hardlink') || (second!.type === 'hardlink' && second!.linkName === long));
      assert.equal(byPath.get('symlink')!.linkName, 'sparse.img');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('expands PAX 1.0 sparse members (tar --format=posix --sparse-version=1.0) and flags their zero pieces', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-plain-pax-sparse-'));
    try {
      const root = join(tmp, 'root');
      await mkdir(join(root, 'sparse'), { recursive: true });
      const sparse = join(root, 'sparse', 'pax-sparse-12m.img');
      await writeFile(sparse, '');
      await truncate(sparse, 12 << 20);
      const fh = await open(sparse, 'r+');
      await fh.write(Buffer.from('data at 1 MiB'), 0, 13, 1 << 20);
      await fh.write(Buffer.from('data near the end'), 0, 17, (12 << 20) - 100);
      await fh.close();
      const archive = join(tmp, 'layer.tar.gz');
      execFileSync('tar', ['--format=posix', '--sparse-version=1.0', '-S', '-czf', archive, '-C', root, 'sparse']);
      const bytes = await readFile(archive);
      const desc: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(bytes), size: bytes.length };
      const store = new Map<string, Buffer>();
      const toc = await indexPlainLayer(desc, memoryBlob({ desc, bytes }), async (d, data) => void store.set(d, Buffer.from(data)));
      const e = Array.from(toc.entries).find((x) => x.path === 'sparse/pax-sparse-12m.img');
      assert.ok(e, `the real name, not GNU tar's GNUSparseFile.N/…: ${Array.from(toc.entries).map((x) => x.path).join(', ')}`);
      assert.equal(e.size, 12 << 20);
      assert.equal(sha256(e.chunks.map((c) => store.get(c.digest)!)), sha256(await readFile(sparse)));
      assert.ok(e.chunks.filter((c) => c.zeros).length >= 10, 'most of the 12 MiB are holes');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
