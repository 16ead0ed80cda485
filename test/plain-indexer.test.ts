/**
 * indexPlainLayer on the corpus's plain layers (gzip and zstd, written by skopeo 1.9.3): every
 * entry must agree with expected.json (computed by python's tarfile from the same bytes), and
 * every file must be rebuildable from the pieces handed to `put`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, mkdir, mkdtemp, open, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sha256 } from '../src/digest.js';
import { DigestMismatchError } from '../src/errors.js';
import { indexPlainLayer, PLAIN_CHUNK_SIZE } from '../src/formats/plain.js';
import { parsePaxTime } from '../src/formats/tar/pax.js';
import type { LayerToc } from '../src/formats/toc.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import type { Descriptor } from '../src/source/types.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected, type ExpectedEntry } from './helpers/corpus.js';
import { corpusLayer, memoryBlob } from './helpers/toc-repack.js';

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

describe('plain-layer indexer on the corpus', { skip: !HAVE_CORPUS && 'corpus not present' }, () => {
  for (const image of PLAIN_IMAGES) {
    it(`${image}: entries and contents match expected.json`, async () => {
      const x = loadExpected(image);
      for (const [digest, layer] of Object.entries(x.layers)) {
        const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size };
        const { toc, store, progress } = await index(join(CORPUS_DIR, image), desc);
        assert.equal(toc.format, 'none');
        assert.equal(toc.verified, true);
        assert.equal(toc.formatVersion, image.startsWith('zstd') ? 'plain zstd' : 'plain gzip');
        assert.equal(toc.uncompressedSize, layer.uncompressed_size);
        assert.equal(progress.at(-1), layer.size, 'progress reaches the blob size');
        const want = layer.entries.filter((e) => !e.meta);
        assert.deepEqual(toc.entries.map((e) => e.path), want.map((e) => e.path), `${image} ${digest}: paths in archive order`);
        toc.entries.forEach((e, i) => {
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
        for (const e of toc.entries.filter((t) => t.type === 'reg')) {
          const w = want.find((t) => t.path === e.path)!;
          let at = 0;
          const parts = e.chunks.map((c) => {
            assert.equal(c.offset, at, `${e.path}: chunks cover the file without gaps`);
            assert.ok(c.size <= PLAIN_CHUNK_SIZE && c.compressedOffset === -1 && c.compressedEnd === -1);
            at += c.size;
            const data = store.get(c.digest);
            assert.ok(data, `${e.path}: chunk ${c.digest} was put`);
            assert.equal(c.zeros, !data.some((b) => b !== 0));
            return data;
          });
          assert.equal(at, e.size);
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
    const sparse = toc.entries.find((e) => e.path === 'sparse/gnu-sparse-32m.img')!;
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
      const byPath = new Map(toc.entries.map((e) => [e.path, e]));
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
});
