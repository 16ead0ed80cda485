/**
 * tocfs's zstd:chunked and eStargz writers, checked by real consumers: the `zstd` and `tar`
 * command-line tools, tocfs's TOC reader (readLayerToc + extractChunk, which verify every
 * digest), and byte-for-byte comparisons with the source tar. Chunking and tar-split are
 * also checked against real containers/storage output from the corpus.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../src/digest.js';
import { FormatError } from '../src/errors.js';
import { extractChunk, readLayerToc, type LayerToc, type TocEntry } from '../src/formats/index.js';
import { normaliseName } from '../src/formats/path.js';
import { parseTarSplit, rebuildTar } from '../src/formats/tar-split.js';
import { formatPaxTime } from '../src/formats/tar/pax.js';
import { scanTar } from '../src/formats/tar/read.js';
import { toTimestamp } from '../src/formats/tar/write.js';
import { writeEstargzLayer } from '../src/formats/writer/estargz.js';
import { Chunker } from '../src/formats/writer/rollsum.js';
import { writeZstdChunkedLayer } from '../src/formats/writer/zstd-chunked.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import type { BlobReader, Descriptor } from '../src/source/types.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, concatContent, contentDigest, seededBytes, seededContent, zeroContent, type BuiltImage, type ContentSource, type FileSpec } from './helpers/images.js';

const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x20, 0x00, 0x00, 0x00, 0xff, 0x80, 0x00, 0x00]);
const LONG = 'usr/share/' + 'very-long-directory-name-'.repeat(5) + '/file-with-a-long-name.txt';

/** Every file kind the formats can describe. */
export const RICH_LAYER: FileSpec[] = [
  { path: 'etc', type: 'dir' },
  { path: 'etc/hello.txt', content: 'hello world\n', mtime: 1700000000.123456 },
  { path: 'etc/xattr.txt', content: 'tocfs test\n', xattrs: { 'user.comment': 'tocfs test', 'security.capability': CAP } },
  { path: 'etc/empty', content: '' },
  { path: 'etc/old', content: 'from 1969\n', mtime: -86400.75 },
  { path: 'tmp', type: 'dir', mode: 0o1777 },
  { path: 'home', type: 'dir' },
  { path: 'home/alice', type: 'dir', uid: 1000, gid: 1000, uname: 'alice', gname: 'alice', mode: 0o700 },
  { path: 'home/alice/notes', content: 'owned by alice\n', uid: 1000, gid: 1000, uname: 'alice', gname: 'alice', mode: 0o600 },
  { path: 'home/big-id', content: 'id beyond ustar\n', uid: 3_000_000, gid: 3_000_001, uname: 'nobody2', gname: 'nogroup2' },
  { path: 'usr', type: 'dir' },
  { path: 'usr/bin', type: 'dir' },
  { path: 'usr/bin/tool', content: seededBytes('tool', 5000), mode: 0o4755 },
  { path: 'usr/bin/tool-hardlink', type: 'hardlink', linkName: 'usr/bin/tool' },
  { path: 'usr/bin/tool-symlink', type: 'symlink', linkName: 'tool' },
  { path: 'usr/lib', type: 'dir' },
  { path: 'usr/lib/big.bin', content: seededContent('big', 6_303_801) },
  { path: 'usr/lib/holes.img', content: concatContent(seededContent('h1', 70_000), zeroContent(2 * 1024 * 1024), seededContent('h2', 30_000)) },
  { path: 'usr/lib/edges.img', content: concatContent(zeroContent(5000), seededContent('e1', 3000), zeroContent(1000), seededContent('e2', 10), zeroContent(4096)) },
  { path: 'usr/lib/allzero.bin', content: zeroContent(8192) },
  { path: LONG, content: 'long path\n' },
  { path: 'usr/share/naïve-日本語.txt', content: 'non-ascii\n' },
  { path: 'dev', type: 'dir' },
  { path: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
  { path: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0, mode: 0o660 },
  { path: 'dev/fifo', type: 'fifo', mode: 0o644 },
  { path: 'var', type: 'dir' },
  { path: 'var/.wh.removed-file', content: '', mode: 0o600 },
  { path: 'var/cache', type: 'dir' },
  { path: 'var/cache/.wh..wh..opq', content: '' },
];

function sh(cmd: string): string {
  return execFileSync('bash', ['-o', 'pipefail', '-c', cmd], { maxBuffer: 64 << 20 }).toString();
}

function norm(p: string): string {
  const n = normaliseName(p);
  assert.ok('path' in n, p);
  return n.path;
}

async function openLayer(img: BuiltImage): Promise<{ desc: Descriptor; blob: BlobReader; path: string }> {
  const src = new OciLayoutSource({ transport: 'oci', dir: img.dir } as never);
  const resolved = await src.resolve();
  const desc = resolved.layers[0]!;
  assert.deepEqual(resolved.config.rootfs?.diff_ids, img.diffIds, 'config diff_ids');
  return { desc, blob: src.blob(desc), path: join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)) };
}

async function fileContent(toc: LayerToc, e: TocEntry, blob: BlobReader): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const c of e.chunks) parts.push(await extractChunk(toc.compression, c, await blob.read(c.compressedOffset, c.compressedEnd - c.compressedOffset), e.path));
  return Buffer.concat(parts);
}

/** TOC entries must say exactly what the spec put into the tar; every file must read back right. */
async function checkToc(toc: LayerToc, blob: BlobReader, spec: FileSpec[], wholeSeconds: boolean): Promise<void> {
  assert.equal(toc.verified, true);
  assert.deepEqual(Array.from(toc.entries).map((e) => e.path), spec.map((f) => norm(f.path)));
  const byPath = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
  for (const f of spec) {
    const e = byPath.get(norm(f.path))!;
    const type = f.type ?? 'reg';
    assert.equal(e.type, type, `${f.path} type`);
    const defMode = type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644;
    assert.equal(e.mode, f.mode ?? defMode, `${f.path} mode`);
    assert.equal(e.uid, f.uid ?? 0, `${f.path} uid`);
    assert.equal(e.gid, f.gid ?? 0, `${f.path} gid`);
    const t = toTimestamp(f.mtime ?? 1700000000);
    const want = wholeSeconds ? { sec: t.sec + (t.nsec >= 5e8 ? 1 : 0), nsec: 0 } : t;
    assert.deepEqual(e.mtime, want, `${f.path} mtime`);
    if (type === 'symlink') assert.equal(e.linkName, f.linkName);
    if (type === 'hardlink') assert.equal(e.linkName, norm(f.linkName!));
    if (type === 'char' || type === 'block') assert.deepEqual([e.devMajor ?? 0, e.devMinor ?? 0], [f.devMajor, f.devMinor], `${f.path} device`);
    const xattrs = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')]));
    const wantX = Object.fromEntries(Object.entries(f.xattrs ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    assert.deepEqual(xattrs, wantX, `${f.path} xattrs`);
    if (type === 'reg') {
      const content = f.content ?? '';
      const data = await fileContent(toc, e, blob);
      assert.equal(e.size, data.length, `${f.path} size`);
      assert.equal(sha256(data), await contentDigest(content), `${f.path} content`);
    }
  }
}

describe('zstd:chunked writer', () => {
  let tmp: string;
  let img: BuiltImage;
  let layer: { desc: Descriptor; blob: BlobReader; path: string };
  let toc: LayerToc;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-writer-zc-'));
    img = await buildImage(join(tmp, 'img'), { format: 'zstd:chunked', layers: [RICH_LAYER], trailingPadding: 8704 });
    layer = await openLayer(img);
    toc = await readLayerToc(layer.desc, layer.blob);
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('decompresses with zstd to exactly the source tar (so the DiffID is the source tar digest)', () => {
    const out = sh(`zstd -dc '${layer.path}' | sha256sum`).split(' ')[0];
    assert.equal('sha256:' + out, img.sourceTarDigests[0]);
    assert.equal(img.diffIds[0], img.sourceTarDigests[0]);
    assert.equal(layer.desc.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  });

  it('lists every member with zstd -d | tar -t', () => {
    const names = sh(`zstd -qdc '${layer.path}' > '${tmp}/plain.tar' && tar -tf '${tmp}/plain.tar'`).trim().split('\n');
    assert.deepEqual(names, RICH_LAYER.map((f) => (f.type === 'dir' ? f.path + '/' : f.path)));
  });

  it('has the newest c/storage shape: v3 footer, io.github annotations, tar-split digest in the TOC', async () => {
    assert.equal(toc.format, 'zstd:chunked');
    assert.equal(toc.formatVersion, 'c/storage v3 footer (64 B)');
    const a = layer.desc.annotations!;
    assert.match(a['io.github.containers.zstd-chunked.manifest-checksum']!, /^sha256:[0-9a-f]{64}$/);
    assert.match(a['io.github.containers.zstd-chunked.manifest-position']!, /^\d+:\d+:\d+:1$/);
    assert.match(a['io.github.containers.zstd-chunked.tarsplit-position']!, /^\d+:\d+:\d+$/);
    assert.ok(toc.tarSplit?.digest, 'tarSplitDigest in the TOC');
    const [off, clen] = a['io.github.containers.zstd-chunked.manifest-position']!.split(':').map(Number) as [number, number];
    const json = (await zstdDecompress(await layer.blob.read(off, clen))).toString();
    assert.ok(!json.includes('\n') && !json.includes('0001-01-01'), 'compact JSON without zero times');
    assert.ok(json.includes('"modtime":"2023-11-14T22:13:20.123456Z"'), 'fractional time in RFC 3339 UTC');
    assert.ok(json.includes('"modtime":"1969-12-30T23:59:59.25Z"'), 'pre-1970 time');
  });

  it('describes every entry exactly and every chunk verifies', async () => {
    await checkToc(toc, layer.blob, RICH_LAYER, false);
  });

  it('puts each chunk in exactly one zstd frame and cuts zero runs into zeros chunks', async () => {
    const get = (p: string): TocEntry => Array.from(toc.entries).find((e) => e.path === p)!;
    for (const e of toc.entries) {
      for (const c of e.chunks) {
        const plain = await zstdDecompress(await layer.blob.read(c.compressedOffset, c.compressedEnd - c.compressedOffset));
        assert.equal(plain.length, c.size, `${e.path} chunk at ${c.offset}: its range holds nothing but the chunk`);
      }
    }
    const holes = get('usr/lib/holes.img');
    const zeros = holes.chunks.filter((c) => c.zeros);
    assert.deepEqual(zeros.map((c) => [c.offset, c.size]), [[70_000, 2 * 1024 * 1024]]);
    assert.equal(get('usr/lib/allzero.bin').chunks.length, 1, 'a single-chunk file has no chunk entries');
    const edges = get('usr/lib/edges.img');
    assert.deepEqual(edges.chunks.filter((c) => c.zeros).map((c) => [c.offset, c.size]), [[0, 5000], [9010, 4096]]);
    assert.ok(get('usr/lib/big.bin').chunks.length > 50, 'rolling checksum cuts the 6 MB file into many chunks');
  });

  it('tar-split rebuilds the source tar byte for byte', async () => {
    const ts = toc.tarSplit!;
    const compressed = await layer.blob.read(ts.offset, ts.compressedLength);
    assert.equal(sha256(compressed), ts.digest);
    const entries = parseTarSplit(await zstdDecompress(compressed));
    assert.equal(entries.reduce((n, e) => n + (e.type === 2 ? e.payload.length : e.size), 0), readFileSync(img.sourceTars[0]!).length);
    // Newest containers/storage pulls partially only if the tar-split lists exactly the TOC's entries.
    assert.deepEqual(entries.flatMap((e) => (e.type === 1 ? [[norm(e.name), e.size]] : [])), Array.from(toc.entries).map((e) => [e.path, e.size]));
    assert.deepEqual(entries.map((e) => e.position), entries.map((_, i) => i), 'positions count entries from 0');
    const byPath = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
    const parts: Buffer[] = [];
    for await (const b of rebuildTar(entries, (name) => fileContent(toc, byPath.get(norm(name))!, layer.blob))) parts.push(b);
    const rebuilt = Buffer.concat(parts);
    assert.ok(rebuilt.equals(readFileSync(img.sourceTars[0]!)), 'rebuilt tar equals the source');
  });

  it('refuses duplicate names and GNU sparse members with a clear error', async () => {
    const dup = buildImage(join(tmp, 'dup'), { format: 'zstd:chunked', layers: [[{ path: 'a', content: 'x' }, { path: './a', content: 'y' }]] });
    await assert.rejects(dup, (e: Error) => e instanceof FormatError && /duplicate entry "\.\/a"/.test(e.message));
    if (!HAVE_CORPUS) return;
    const x = loadExpected('gzip-plain-gnusparse');
    const blob = join(CORPUS_DIR, 'gzip-plain-gnusparse', 'blobs', 'sha256', x.images[0]!.layers[0]!.slice(7));
    const tar = gunzipSync(readFileSync(blob));
    await assert.rejects(writeZstdChunkedLayer(() => [tar], join(tmp, 'sparse.zst')), /sparse\/gnu-sparse-32m\.img.*GNU sparse/);
    await assert.rejects(writeEstargzLayer(() => [tar], join(tmp, 'sparse.gz')), /GNU sparse/);
  });
});

describe('writers refuse GNU sparse members (as GNU tar writes them)', () => {
  for (const [name, args] of [['old GNU', ['--format=gnu', '-S']], ['PAX 1.0', ['--format=posix', '--sparse-version=1.0', '-S']]] as const) {
    it(`${name} sparse: a clear error naming the member, from both writers`, async () => {
      const tmp = await mkdtemp(join(tmpdir(), 'tocfs-writer-sparse-'));
      try {
        await mkdir(join(tmp, 'root', 'sparse'), { recursive: true });
        const img = join(tmp, 'root', 'sparse', 'holes.img');
        await writeFile(img, '');
        await truncate(img, 8 << 20);
        const fh = await open(img, 'r+');
        await fh.write(Buffer.from('data in the middle'), 0, 18, 4 << 20);
        await fh.close();
        const tar = execFileSync('tar', [...args, '-cf', '-', '-C', join(tmp, 'root'), 'sparse'], { maxBuffer: 64 << 20 });
        await assert.rejects(writeZstdChunkedLayer(() => [tar], join(tmp, 'sparse.zst')), /sparse\/holes\.img.*GNU sparse/);
        await assert.rejects(writeEstargzLayer(() => [tar], join(tmp, 'sparse.gz')), /sparse\/holes\.img.*GNU sparse/);
        // The same file, not sparse, is written.
        const plain = execFileSync('tar', ['--format=posix', '-cf', '-', '-C', join(tmp, 'root'), 'sparse'], { maxBuffer: 64 << 20 });
        assert.equal((await writeZstdChunkedLayer(() => [plain], join(tmp, 'plain.zst'))).diffId, sha256(plain));
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    });
  }
});

describe('zstd:chunked writer against real containers/storage output', { skip: !HAVE_CORPUS && 'corpus not present' }, () => {
  const image = 'zstdchunked-skopeo118-basic';
  let source: OciLayoutSource;
  let desc: Descriptor;
  let toc: LayerToc;
  let stream: Buffer;

  before(async () => {
    source = new OciLayoutSource({ transport: 'oci', dir: join(CORPUS_DIR, image) } as never);
    desc = (await source.resolve()).layers[0]!;
    toc = await readLayerToc(desc, source.blob(desc));
    stream = await zstdDecompress(readFileSync(join(CORPUS_DIR, image, 'blobs', 'sha256', desc.digest.slice(7))));
  });

  it('cuts every file at the same chunk boundaries as skopeo 1.18', async () => {
    const byPath = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
    let files = 0;
    let chunks = 0;
    for await (const ev of scanTar([stream])) {
      if (ev.kind !== 'entry' || ev.header.type !== 'reg' || ev.header.size === 0) continue;
      const got: Array<[number, number, boolean]> = [];
      let at = 0;
      const chunker = new Chunker(async (c) => {
        got.push([at, c.size, c.kind === 'zeros']);
        at += c.size;
      });
      for await (const piece of ev.content) await chunker.write(piece);
      await chunker.end();
      const e = byPath.get(norm(ev.header.name))!;
      const want = e.chunks.map((c) => [c.offset, c.size, c.zeros] as [number, number, boolean]);
      // c/storage marks a single-chunk file's only chunk as data even when it is all zeros.
      if (want.length === 1) assert.equal(got.length, 1, ev.header.name);
      else assert.deepEqual(got, want, ev.header.name);
      files++;
      chunks += want.length;
    }
    assert.ok(files > 10 && chunks > 500, `compared ${files} files, ${chunks} chunks`);
  });

  it('computes the same CRC-64 as the real tar-split and rebuilds the DiffID from it', async () => {
    const ts = toc.tarSplit!;
    const entries = parseTarSplit(await zstdDecompress(await source.blob(desc).read(ts.offset, ts.compressedLength)));
    const byPath = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
    const parts: Buffer[] = [];
    for await (const b of rebuildTar(entries, (name) => fileContent(toc, byPath.get(norm(name))!, source.blob(desc)))) parts.push(b);
    const x = loadExpected(image);
    assert.equal(sha256(parts), x.images[0]!.diff_ids[0]);
  });
});

describe('eStargz writer', () => {
  let tmp: string;
  let img: BuiltImage;
  let layer: { desc: Descriptor; blob: BlobReader; path: string };
  let toc: LayerToc;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-writer-esgz-'));
    img = await buildImage(join(tmp, 'img'), { format: 'estargz', chunkSize: 1024 * 1024, layers: [RICH_LAYER] });
    layer = await openLayer(img);
    toc = await readLayerToc(layer.desc, layer.blob);
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('is a gzip tar that tar -tz lists: landmark first, the source members, the TOC entry last', () => {
    const names = sh(`tar -tzf '${layer.path}'`).trim().split('\n');
    assert.deepEqual(names, ['.no.prefetch.landmark', ...RICH_LAYER.map((f) => (f.type === 'dir' ? f.path + '/' : f.path)), 'stargz.index.json']);
    assert.equal(layer.desc.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  });

  it('has a DiffID and uncompressed-size annotation that match the gunzipped blob', () => {
    const plain = gunzipSync(readFileSync(layer.path));
    assert.equal(sha256(plain), img.diffIds[0]);
    assert.equal(layer.desc.annotations!['io.containers.estargz.uncompressed-size'], String(plain.length));
    assert.equal(toc.format, 'estargz');
    assert.equal(toc.noPrefetch, true);
    const tocJson = plain.subarray(plain.length - 1024 - Math.ceil(toc.tocUncompressedLength / 512) * 512, plain.length - 1024).subarray(0, toc.tocUncompressedLength);
    assert.equal(sha256(tocJson), layer.desc.annotations!['containerd.io/snapshot/stargz/toc.digest']);
  });

  it('describes every entry (whole-second times) and every chunk verifies', async () => {
    await checkToc(toc, layer.blob, RICH_LAYER, true);
    const big = Array.from(toc.entries).find((e) => e.path === 'usr/lib/big.bin')!;
    assert.deepEqual(big.chunks.map((c) => c.offset), [0, 1, 2, 3, 4, 5, 6].map((i) => i * 1024 * 1024));
  });

  it('replaces the TOC entry and landmark of a source that is itself eStargz', { skip: !HAVE_CORPUS && 'corpus not present' }, async () => {
    const x = loadExpected('estargz-ctrremote-basic');
    const source = gunzipSync(readFileSync(join(CORPUS_DIR, 'estargz-ctrremote-basic', 'blobs', 'sha256', x.images[0]!.layers[0]!.slice(7))));
    const out = join(tmp, 'again.gz');
    await writeEstargzLayer(() => [source], out);
    const names = sh(`tar -tzf '${out}'`).trim().split('\n');
    assert.equal(names.filter((n) => /landmark|stargz\.index\.json/.test(n)).length, 2, 'one landmark, one TOC entry');
    assert.equal(names[0], '.no.prefetch.landmark');
    assert.equal(names.at(-1), 'stargz.index.json');
  });

  it('replaces the TOC entry and landmark of a source that is itself eStargz (one tocfs wrote)', async () => {
    const source = gunzipSync(readFileSync(layer.path));
    const out = join(tmp, 'again-built.gz');
    const again = await writeEstargzLayer(() => [source], out);
    const names = sh(`tar -tzf '${out}'`).trim().split('\n');
    assert.deepEqual(names.filter((n) => /landmark|stargz\.index\.json/.test(n)), ['.no.prefetch.landmark', 'stargz.index.json'], 'one landmark, one TOC entry');
    assert.deepEqual(names.slice(1, -1), RICH_LAYER.map((f) => (f.type === 'dir' ? f.path + '/' : f.path)), 'the source members, in order, between them');
    const bytes = readFileSync(out);
    const blob: BlobReader = { digest: again.digest, size: again.size, read: async (o, n) => bytes.subarray(o, o + n), stream: async () => createReadStream(out) };
    await checkToc(await readLayerToc({ mediaType: again.mediaType, digest: again.digest, size: again.size, annotations: again.annotations }, blob), blob, RICH_LAYER, true);
  });

  it('moves prioritized files (with parents and hard-link targets) before .prefetch.landmark', async () => {
    const pf = await buildImage(join(tmp, 'pf'), { format: 'estargz', prioritize: ['/usr/bin/tool-hardlink', 'etc/hello.txt', 'not/there'], layers: [RICH_LAYER] });
    const l = await openLayer(pf);
    const names = sh(`tar -tzf '${l.path}'`).trim().split('\n');
    assert.deepEqual(names.slice(0, 7), ['usr/', 'usr/bin/', 'usr/bin/tool', 'usr/bin/tool-hardlink', 'etc/', 'etc/hello.txt', '.prefetch.landmark']);
    assert.equal(names.length, RICH_LAYER.length + 2);
    const t = await readLayerToc(l.desc, l.blob);
    const hello = Array.from(t.entries).find((e) => e.path === 'etc/hello.txt')!;
    assert.ok(t.prefetchEnd !== undefined && hello.chunks[0]!.compressedEnd <= t.prefetchEnd, 'prioritized content lies before the landmark');
    const big = Array.from(t.entries).find((e) => e.path === 'usr/lib/big.bin')!;
    assert.ok(big.chunks[0]!.compressedOffset >= t.prefetchEnd!);
    await checkToc(t, l.blob, [...RICH_LAYER].sort((a, b) => names.indexOf(a.type === 'dir' ? a.path + '/' : a.path) - names.indexOf(b.type === 'dir' ? b.path + '/' : b.path)), true);
  });
});

describe('writers read their source as a stream', () => {
  it('writes a layer from a stream of odd-sized pieces', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-writer-pieces-'));
    try {
      const img = await buildImage(join(tmp, 'img'), { format: 'tar', layers: [RICH_LAYER.slice(0, 20)] });
      const tarPath = img.sourceTars[0]!;
      const zc = await writeZstdChunkedLayer(() => createReadStream(tarPath, { highWaterMark: 777 }), join(tmp, 'a.zst'));
      assert.equal(zc.diffId, img.sourceTarDigests[0]);
      const es = await writeEstargzLayer(() => createReadStream(tarPath, { highWaterMark: 333 }), join(tmp, 'a.gz'), { chunkSize: 4096 });
      assert.equal(es.diffId, sha256(gunzipSync(readFileSync(join(tmp, 'a.gz')))));
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('zstd:chunked writer on degenerate content', () => {
  it('caps chunks the rolling sum never splits and writes a 64 MiB hole as one tiny zeros frame', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-writer-big-'));
    try {
      const ff: ContentSource = { size: 20 << 20, async *chunks() { for (let i = 0; i < 20; i++) yield Buffer.alloc(1 << 20, 0xff); } };
      const spec: FileSpec[] = [{ path: 'ff.bin', content: ff }, { path: 'hole.img', content: concatContent(zeroContent(64 << 20), 'end') }];
      const img = await buildImage(join(tmp, 'img'), { format: 'zstd:chunked', layers: [spec] });
      const layer = await openLayer(img);
      assert.ok(layer.desc.size < 64 * 1024, `84 MiB of trivial content compresses to ${layer.desc.size} bytes`);
      const toc = await readLayerToc(layer.desc, layer.blob);
      const ffEntry = Array.from(toc.entries).find((e) => e.path === 'ff.bin')!;
      assert.deepEqual(ffEntry.chunks.map((c) => c.size), [8 << 20, 8 << 20, 4 << 20]);
      const hole = Array.from(toc.entries).find((e) => e.path === 'hole.img')!;
      assert.deepEqual(hole.chunks.map((c) => [c.size, c.zeros]), [[64 << 20, true], [3, false]]);
      assert.ok(hole.chunks[0]!.compressedEnd - hole.chunks[0]!.compressedOffset < 4096, 'RLE frame for the hole');
      await checkToc(toc, layer.blob, spec, false);
      const out = sh(`zstd -dc '${layer.path}' | sha256sum`).split(' ')[0];
      assert.equal('sha256:' + out, img.sourceTarDigests[0]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('tar writer (the test images\' source tars)', () => {
  it('writes what python\'s tarfile reads back: names, types, modes, owners, times, links, devices, xattrs', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-tar-'));
    try {
      const img = await buildImage(join(tmp, 'img'), { format: 'tar', layers: [RICH_LAYER] });
      const script = `
import json, sys, tarfile, hashlib
out = []
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        x = {k: m.pax_headers[k].encode('utf-8', 'surrogateescape').hex() for k in m.pax_headers if k.startswith('SCHILY.xattr.')}
        out.append({'name': m.name, 'type': m.type.decode(), 'mode': m.mode, 'uid': m.uid, 'gid': m.gid, 'uname': m.uname, 'gname': m.gname,
                    'mtime': m.pax_headers.get('mtime', str(m.mtime)), 'linkname': m.linkname, 'dev': [m.devmajor, m.devminor], 'size': m.size,
                    'sha256': hashlib.sha256(t.extractfile(m).read()).hexdigest() if m.isreg() else None, 'xattrs': x})
print(json.dumps(out))`;
      const got = JSON.parse(execFileSync('python3', ['-c', script, img.sourceTars[0]!]).toString()) as Array<Record<string, unknown>>;
      const flags: Record<string, string> = { reg: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };
      assert.equal(got.length, RICH_LAYER.length);
      for (const [i, f] of RICH_LAYER.entries()) {
        const g = got[i]!;
        const type = f.type ?? 'reg';
        const t = toTimestamp(f.mtime ?? 1700000000);
        const mtime = t.nsec ? formatPaxTime(t) : String(t.sec);
        assert.deepEqual(
          [g.name, g.type, g.mode, g.uid, g.gid, g.uname, g.gname, g.mtime, g.linkname, g.dev, g.xattrs],
          [f.path, flags[type], f.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644), f.uid ?? 0, f.gid ?? 0, f.uname ?? '', f.gname ?? '', mtime, f.linkName ?? '',
            [f.devMajor ?? 0, f.devMinor ?? 0], Object.fromEntries(Object.entries(f.xattrs ?? {}).map(([k, v]) => [`SCHILY.xattr.${k}`, Buffer.from(v).toString('hex')]))],
          f.path,
        );
        if (type === 'reg') assert.equal('sha256:' + g.sha256, await contentDigest(f.content ?? ''), f.path);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
