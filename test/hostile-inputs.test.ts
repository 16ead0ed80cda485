/**
 * Hand-made hostile inputs (issue #7 item 2) beyond the single-fault TOC cases of
 * formats-hostile.test.ts: hard-link chains and cycles through whiteouts in merged trees,
 * entries under a symlinked directory, decompression bombs (TOC frame, chunk frames, plain
 * layers), absurd sparse sizes, deeply nested JSON and a 100k-entry index. Each must end in
 * a clear TocfsError or a safe result, in bounded memory.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { sha256 } from '../src/digest.js';
import { TocfsError } from '../src/errors.js';
import { extractChunk, readLayerToc, type LayerToc } from '../src/formats/index.js';
import { indexPlainLayer, MAX_SPARSE_HOLES, MAX_ZSTD_DECODE } from '../src/formats/plain.js';
import { parseConfig, parseManifestDocument, selectPlatform } from '../src/source/manifest.js';
import { buildLayerTree, mergeLayers, type FsTree } from '../src/image/tree.js';
import { CORPUS_DIR, HAVE_CORPUS } from './helpers/corpus.js';
import { zstdRleBomb } from './helpers/fuzz.js';
import { buildImage, type FileSpec, type ImageFormat } from './helpers/images.js';
import { corpusLayer, memoryBlob, repack, repackRaw, tocText, type TestLayer } from './helpers/toc-repack.js';

/** Rejects with a TocfsError whose message matches. */
async function refuses(p: Promise<unknown> | (() => unknown), re: RegExp): Promise<void> {
  await assert.rejects(async () => (typeof p === 'function' ? p() : p), (e: Error) => {
    assert.ok(e instanceof TocfsError, `${e.name}: ${e.message}`);
    assert.match(e.message, re);
    assert.ok(e.message.length < 2000, `a readable message (${e.message.length} characters)`);
    return true;
  });
}

/** Runs `fn` and returns how much the process RSS grew meanwhile (MB). */
async function rssGrowth(fn: () => Promise<unknown>): Promise<number> {
  const before = process.memoryUsage.rss();
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  return (Math.max(peak, process.memoryUsage.rss()) - before) / 1e6;
}

interface Built {
  layers: TestLayer[];
  tocs: LayerToc[];
}

let work: string;
let n = 0;
async function build(format: ImageFormat, layers: FileSpec[][]): Promise<Built> {
  const img = await buildImage(join(work, `img${n++}`), { format, layers });
  const out: Built = { layers: [], tocs: [] };
  for (const desc of img.layers) {
    const bytes = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
    out.layers.push({ desc, bytes });
  }
  return out;
}
async function tocs(b: Built): Promise<LayerToc[]> {
  return Promise.all(b.layers.map((l) => readLayerToc(l.desc, memoryBlob(l))));
}

/** The bytes a tree serves at `path`, extracted and verified from the blob of the layer that provides it. */
async function content(b: Built, t: LayerToc[], tree: FsTree, path: string): Promise<string> {
  const node = tree.lookup(path);
  assert.ok(node, `${path} exists`);
  const parts: Buffer[] = [];
  for (const c of node.entry.chunks) {
    const blob = b.layers[node.layer]!.bytes;
    parts.push(await extractChunk(t[node.layer]!.compression, c, blob.subarray(c.compressedOffset, c.compressedEnd), path));
  }
  return Buffer.concat(parts).toString();
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'tocfs-hostile-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

for (const format of ['zstd:chunked', 'estargz'] as const) {
  describe(`hostile trees (${format})`, () => {
    it('a hard-link chain keeps its content when a whiteout removes the first name', async () => {
      const b = await build(format, [
        [{ path: 'a', content: 'A-content' }, { path: 'b', type: 'hardlink', linkName: 'a' }, { path: 'c', type: 'hardlink', linkName: 'b' }],
        [{ path: '.wh.a', content: '' }],
      ]);
      const t = await tocs(b);
      const tree = mergeLayers(t);
      assert.equal(tree.lookup('a'), undefined);
      assert.equal(tree.lookup('b'), tree.lookup('c'), 'b and c stay one inode');
      assert.equal(tree.lookup('b')!.nlink, 2);
      assert.equal(await content(b, t, tree, 'c'), 'A-content');
      assert.equal(tree.inodeCount, 2, 'root and the one file');
    });

    it('a hard link in an upper layer to a name only a lower layer has (or had, before a whiteout) is refused', async () => {
      const b = await build(format, [
        [{ path: 'a', content: 'A' }, { path: 'b', type: 'hardlink', linkName: 'a' }],
        [{ path: '.wh.a', content: '' }, { path: 'a', type: 'hardlink', linkName: 'b' }],
      ]);
      await refuses(readLayerToc(b.layers[1]!.desc, memoryBlob(b.layers[1]!)), /TOC entry "a": hard link to "b": target does not exist in the layer/);
    });

    it('a hard link through a symlinked directory names no entry and is refused', async () => {
      const b = await build(format, [[{ path: 'etc', type: 'dir' }, { path: 'etc/passwd', content: 'p' }, { path: 'link', type: 'symlink', linkName: '/etc' }, { path: 'x', type: 'hardlink', linkName: 'link/passwd' }]]);
      await refuses(readLayerToc(b.layers[0]!.desc, memoryBlob(b.layers[0]!)), /hard link to "link\/passwd": target does not exist in the layer/);
    });

    it('entries under a symlink to /etc land inside the image: the symlink becomes a directory (as overlayfs shows it), nothing else changes', async () => {
      const b = await build(format, [
        [{ path: 'etc', type: 'dir' }, { path: 'etc/passwd', content: 'image passwd' }, { path: 'link', type: 'symlink', linkName: '/etc' }, { path: 'up', type: 'symlink', linkName: '../../..' }],
        [{ path: 'link/passwd', content: 'written through link' }, { path: 'up/x', content: 'written through up' }],
      ]);
      const t = await tocs(b);
      for (const tree of [mergeLayers(t), buildLayerTree(t[1]!, 1)]) {
        assert.ok(tree.lookup('link')!.isDir && tree.lookup('up')!.isDir);
        assert.equal(await content(b, t, tree, 'link/passwd'), 'written through link');
        assert.equal(await content(b, t, tree, 'up/x'), 'written through up');
      }
      const merged = mergeLayers(t);
      assert.equal(await content(b, t, merged, 'etc/passwd'), 'image passwd');
      assert.deepEqual([...merged.walk()].map((e) => e.path), ['', 'etc', 'etc/passwd', 'link', 'link/passwd', 'up', 'up/x']);
    });

    it('the same in one layer: the symlink, then a file under it', async () => {
      const b = await build(format, [[{ path: 'link', type: 'symlink', linkName: '/etc' }, { path: 'link/passwd', content: 'inside' }]]);
      const t = await tocs(b);
      const tree = mergeLayers(t);
      assert.ok(tree.lookup('link')!.isDir);
      assert.equal(await content(b, t, tree, 'link/passwd'), 'inside');
      assert.equal(tree.lookup('etc'), undefined);
    });

    it('symlinks that climb resolve inside the image root', async () => {
      const b = await build(format, [[{ path: 'etc', type: 'dir' }, { path: 'etc/passwd', content: 'p' }, { path: 'up', type: 'symlink', linkName: '../../..' }, { path: 'abs', type: 'symlink', linkName: '/../../etc' }]]);
      const tree = mergeLayers(await tocs(b));
      for (const p of ['up/up/etc/passwd', 'abs/passwd', 'up/abs/../../etc/passwd']) {
        const r = tree.resolve(p);
        assert.ok('node' in r, p);
        assert.equal(r.path, 'etc/passwd', p);
      }
    });

    it('whiteouts of . and .. are refused in the merged view and in the overlay form', async () => {
      const b = await build(format, [[{ path: 'd', type: 'dir' }, { path: 'd/.wh...', content: '' }]]);
      const t = await tocs(b);
      assert.throws(() => mergeLayers(t), (e: Error) => e instanceof TocfsError && /whiteout "d\/\.wh\.\.\." names "\.\."/.test(e.message));
      assert.throws(() => buildLayerTree(t[0]!, 0, { whiteouts: 'overlay' }), /names "\.\."/);
    });
  });
}

describe('decompression bombs', () => {
  const zc = (): TestLayer => corpusLayer('zstdchunked-skopeo19-layers', 0);
  const esgz = (): TestLayer => corpusLayer('estargz-ctrremote-basic', 0);
  const skip = HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`;

  it('TOC frame: 32 KiB of RLE blocks (1 GiB) is refused before decoding, even when the position declares the 150 MiB limit', { skip }, async () => {
    const json = Buffer.from(await tocText(zc()));
    const bomb = zstdRleBomb(8192);
    assert.ok(bomb.length < 33_000);
    for (const declared of [json.length, 150 * 1024 * 1024]) {
      const l = await repackRaw(zc(), json, bomb);
      const k = 'io.containers.zstd-chunked.manifest-position';
      const [o, c] = l.desc.annotations![k]!.split(':');
      l.desc.annotations![k] = `${o}:${c}:${declared}:1`;
      const grew = await rssGrowth(() => refuses(readLayerToc(l.desc, memoryBlob(l)), /cannot decompress TOC: may decompress to up to 1073741824 bytes, more than the limit of \d+/));
      assert.ok(grew < 256, `RSS grew ${grew.toFixed(0)} MB`);
    }
  });

  it('TOC frame whose header claims 4 GiB of content: a clear error, no allocation', { skip }, async () => {
    const json = Buffer.from(await tocText(zc()));
    const l = await repackRaw(zc(), json, zstdRleBomb(2, 4n << 30n));
    const grew = await rssGrowth(() => refuses(readLayerToc(l.desc, memoryBlob(l)), /cannot decompress TOC|TOC decompresses to \d+ bytes, the position says/));
    assert.ok(grew < 256, `RSS grew ${grew.toFixed(0)} MB`);
  });

  it('chunk frame: an RLE bomb in place of a zstd chunk is refused before decoding', { skip }, async () => {
    const l = zc();
    const toc = await readLayerToc(l.desc, memoryBlob(l));
    const f = toc.entries.find((e) => e.chunks.length > 0)!;
    await refuses(extractChunk('zstd', f.chunks[0]!, zstdRleBomb(8192), f.path), /cannot decompress chunk .*frame may decompress to 1073741824 bytes, the chunk needs \d+/);
  });

  it('chunk member: 64 MiB of gzip zeros in place of an eStargz chunk inflates only as far as the chunk, then fails its digest', { skip }, async () => {
    const l = esgz();
    const toc = await readLayerToc(l.desc, memoryBlob(l));
    const f = toc.entries.find((e) => e.chunks.length > 0 && e.size < 100_000)!;
    const member = gzipSync(Buffer.alloc(64 << 20), { level: 9 });
    const grew = await rssGrowth(() => refuses(extractChunk('gzip', f.chunks[0]!, member, f.path), /digest mismatch/));
    assert.ok(grew < 48, `RSS grew ${grew.toFixed(0)} MB`);
  });

  it('eStargz TOC member of 64 MiB zeros (64 KiB compressed) is refused at the limit without inflating it all', { skip }, async () => {
    const l = esgz();
    const off = parseInt(l.bytes.toString('latin1', l.bytes.length - 35, l.bytes.length - 19), 16);
    const bytes = Buffer.concat([l.bytes.subarray(0, off), gzipSync(Buffer.alloc(64 << 20), { level: 9 }), l.bytes.subarray(l.bytes.length - 51)]);
    const desc = { mediaType: l.desc.mediaType, size: bytes.length, digest: sha256(bytes) };
    await refuses(readLayerToc(desc, memoryBlob({ desc, bytes }), { allowUnverified: true, limits: { maxUncompressedTocBytes: 1 << 20 } }), /decompresses to more than the limit of 1048576 bytes/);
  });

  it('plain zstd layer: a frame that may decode to more than 1 GiB is refused before decoding', async () => {
    const bytes = zstdRleBomb(MAX_ZSTD_DECODE / (128 * 1024) + 1);
    const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', size: bytes.length, digest: sha256(bytes) };
    await refuses(indexPlainLayer(desc, memoryBlob({ desc, bytes }), async () => {}), new RegExp(`layer ${desc.digest}: zstd frame may decompress to \\d+ bytes, more than the ${MAX_ZSTD_DECODE} decoded at once`));
  });

  it('plain layer: a 100-byte sparse header claiming 1 TiB is refused instead of expanded', async () => {
    const b256 = (h: Buffer, at: number, v: bigint): void => {
      h[at] = 0x80;
      for (let i = 11; i > 0; i--, v >>= 8n) h[at + i] = Number(v & 0xffn);
    };
    const h = Buffer.alloc(512);
    h.write('big.img', 0);
    h.write('0000644\0', 100);
    h.write('00000000001\0', 124);
    h.write('S', 156);
    h.write('ustar  \0', 257);
    b256(h, 386, (1n << 40n) - 1n);
    b256(h, 398, 1n);
    b256(h, 483, 1n << 40n);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const x of h) sum += x;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    const bytes = gzipSync(Buffer.concat([h, Buffer.from('x'), Buffer.alloc(511 + 1024)]));
    assert.ok(bytes.length < 200);
    const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: bytes.length, digest: sha256(bytes) };
    let puts = 0;
    await refuses(indexPlainLayer(desc, memoryBlob({ desc, bytes }), async () => void puts++), new RegExp(`big\\.img: sparse files of the layer have more than ${MAX_SPARSE_HOLES} bytes of holes`));
    assert.equal(puts, 0);
  });
});

// The corpus-layer bombs above, on layers tocfs's own writers make: these never skip.
describe('decompression bombs in layers tocfs writes', () => {
  const FILES: FileSpec[] = [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=3\n' }, { path: 'etc/motd', content: 'welcome\n'.repeat(100) }];
  let zc: TestLayer;
  let esgz: TestLayer;
  before(async () => {
    zc = (await build('zstd:chunked', [FILES])).layers[0]!;
    esgz = (await build('estargz', [FILES])).layers[0]!;
  });

  it('TOC frame: 32 KiB of RLE blocks (1 GiB) is refused before decoding, even when the position declares the 150 MiB limit', async () => {
    const json = Buffer.from(await tocText(zc));
    for (const declared of [json.length, 150 * 1024 * 1024]) {
      const l = await repackRaw(zc, json, zstdRleBomb(8192));
      const k = 'io.github.containers.zstd-chunked.manifest-position';
      const [o, c] = l.desc.annotations![k]!.split(':');
      l.desc.annotations![k] = `${o}:${c}:${declared}:1`;
      const grew = await rssGrowth(() => refuses(readLayerToc(l.desc, memoryBlob(l)), /cannot decompress TOC: may decompress to up to 1073741824 bytes, more than the limit of \d+/));
      assert.ok(grew < 256, `RSS grew ${grew.toFixed(0)} MB`);
    }
  });

  it('TOC frame whose header claims 4 GiB of content: a clear error, no allocation', async () => {
    const l = await repackRaw(zc, Buffer.from(await tocText(zc)), zstdRleBomb(2, 4n << 30n));
    const grew = await rssGrowth(() => refuses(readLayerToc(l.desc, memoryBlob(l)), /cannot decompress TOC|TOC decompresses to \d+ bytes, the position says/));
    assert.ok(grew < 256, `RSS grew ${grew.toFixed(0)} MB`);
  });

  it('chunk frame: an RLE bomb in place of a zstd chunk is refused before decoding', async () => {
    const toc = await readLayerToc(zc.desc, memoryBlob(zc));
    const f = toc.entries.find((e) => e.path === 'etc/motd')!;
    await refuses(extractChunk('zstd', f.chunks[0]!, zstdRleBomb(8192), f.path), /cannot decompress chunk .*frame may decompress to 1073741824 bytes, the chunk needs \d+/);
  });

  it('chunk member: 64 MiB of gzip zeros in place of an eStargz chunk inflates only as far as the chunk, then fails its digest', async () => {
    const toc = await readLayerToc(esgz.desc, memoryBlob(esgz));
    const f = toc.entries.find((e) => e.path === 'etc/motd')!;
    const member = gzipSync(Buffer.alloc(64 << 20), { level: 9 });
    const grew = await rssGrowth(() => refuses(extractChunk('gzip', f.chunks[0]!, member, f.path), /digest mismatch/));
    assert.ok(grew < 48, `RSS grew ${grew.toFixed(0)} MB`);
  });

  it('eStargz TOC member of 64 MiB zeros (64 KiB compressed) is refused at the limit without inflating it all', async () => {
    const off = parseInt(esgz.bytes.toString('latin1', esgz.bytes.length - 35, esgz.bytes.length - 19), 16);
    const bytes = Buffer.concat([esgz.bytes.subarray(0, off), gzipSync(Buffer.alloc(64 << 20), { level: 9 }), esgz.bytes.subarray(esgz.bytes.length - 51)]);
    const desc = { mediaType: esgz.desc.mediaType, size: bytes.length, digest: sha256(bytes) };
    await refuses(readLayerToc(desc, memoryBlob({ desc, bytes }), { allowUnverified: true, limits: { maxUncompressedTocBytes: 1 << 20 } }), /decompresses to more than the limit of 1048576 bytes/);
  });

  it('TOC: a 100k-deep value in an entry field is a clear error naming the entry', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    for (const base of [zc, esgz]) {
      for (const field of ['mode', 'size', 'uid', 'gid']) {
        const l = await repack(base, (d) => JSON.stringify({ ...d, entries: [{ type: 'reg', name: 'etc/x', [field]: '__DEEP__' }, ...d.entries] }).replace('"__DEEP__"', deep));
        await refuses(readLayerToc(l.desc, memoryBlob(l)), new RegExp(`TOC entry "etc/x": ${field} is not an integer in \\[0, \\d+\\]: an array of 1`));
      }
    }
  });
});

describe('deeply nested JSON and absurd counts', () => {
  const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n);
  const digest = sha256(Buffer.from('x'));

  it('manifest: a million-deep value where a digest, a size or annotations belong', () => {
    for (const [field, re] of [['digest', /layers\[0\]: bad digest an array of 1/], ['size', /layers\[0\]: bad size an array of 1/]] as const) {
      const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest, size: 1, [field]: '__DEEP__' };
      const doc = JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: 1 }, layers: [layer] }).replace('"__DEEP__"', deep(1_000_000));
      assert.throws(() => parseManifestDocument(Buffer.from(doc), undefined, 'ref'), (e: Error) => e instanceof TocfsError && re.test(e.message));
    }
    const ann = JSON.stringify({ schemaVersion: 2, config: { mediaType: 'c', digest, size: 1 }, layers: [{ mediaType: 'l', digest, size: 1, annotations: { a: '__DEEP__', b: 'ok' } }], annotations: { x: '__DEEP__' } }).replaceAll('"__DEEP__"', deep(1_000_000));
    const m = parseManifestDocument(Buffer.from(ann), undefined, 'ref');
    assert.equal(m.kind, 'manifest');
    if (m.kind === 'manifest') {
      assert.deepEqual(m.layers[0]!.annotations, { b: 'ok' }, 'non-string annotation values are dropped');
      assert.deepEqual(m.annotations, {});
    }
    assert.throws(() => parseManifestDocument(Buffer.from(deep(1_000_000)), undefined, 'ref'), /ref: unsupported manifest/);
    assert.throws(() => parseConfig(Buffer.from(`{"config":${deep(1_000_000).slice(0, -1)}`), 'ref'), (e: Error) => e instanceof TocfsError && /image config is not valid JSON/.test(e.message));
  });

  it('TOC: a 100k-deep value in an entry field is a clear error naming the entry', { skip: HAVE_CORPUS ? false : 'no corpus' }, async () => {
    for (const field of ['mode', 'size', 'uid', 'gid']) {
      const l = await repack(corpusLayer('zstdchunked-skopeo19-layers', 0), (d) => JSON.stringify({ ...d, entries: [{ type: 'reg', name: 'etc/x', [field]: '__DEEP__' }, ...d.entries] }).replace('"__DEEP__"', deep(100_000)));
      await refuses(readLayerToc(l.desc, memoryBlob(l)), new RegExp(`TOC entry "etc/x": ${field} is not an integer in \\[0, \\d+\\]: an array of 1`));
    }
  });

  it('an index with 100k manifests: parsed, the platform found, and a miss reported in a short message', () => {
    const manifests = Array.from({ length: 100_000 }, (_, i) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(Buffer.from(String(i))), size: 100 + i, platform: { os: 'linux', architecture: 'arm', variant: `v${i}` } }));
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 7, platform: { os: 'linux', architecture: 'riscv64' } as never });
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests }));
    assert.ok(bytes.length > 15_000_000);
    const index = parseManifestDocument(bytes, undefined, 'ref');
    assert.equal(index.kind, 'index');
    if (index.kind !== 'index') return;
    assert.equal(index.manifests.length, 100_001);
    assert.equal(selectPlatform(index, { os: 'linux', architecture: 'riscv64' }, 'ref').digest, digest);
    assert.throws(() => selectPlatform(index, { os: 'linux', architecture: 's390x' }, 'ref'), (e: Error) => {
      assert.ok(e instanceof TocfsError);
      assert.match(e.message, /no manifest for platform linux\/s390x \(the index has: linux\/arm\/v0, linux\/arm\/v1, .*, … \(100001 in all\)\)/);
      assert.ok(e.message.length < 1000, `${e.message.length} characters`);
      return true;
    });
  });
});
