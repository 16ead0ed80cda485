/**
 * `tocfs convert` on images tocfs builds and on real corpus images (plain gzip and zstd,
 * eStargz, zstd:chunked and stargz-zstd sources, one and several layers): the new layout must
 * resolve, every layer's TOC must be readable and verified, describe exactly the source's
 * entries (tool metadata dropped) with every chunk verifying, and the config's DiffIDs must be
 * the digests of the decompressed new layers.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../src/digest.js';
import { extractChunk, readLayerToc, type LayerToc } from '../src/formats/index.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import type { BlobReader, ResolvedImage } from '../src/source/types.js';
import { runCli } from './helpers/cli.js';
import { startRegistry } from './helpers/registry.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected, type ExpectedEntry } from './helpers/corpus.js';
import { buildImage, type BuiltImage, type FileSpec, type ImageFormat } from './helpers/images.js';
import { buildMultiArchImage } from './helpers/multiarch.js';
import { OVERLAY_LAYERS } from './helpers/overlay-image.js';
import { expectedEntries, KINDS_LAYER } from './helpers/spec-expected.js';

async function tocContent(toc: LayerToc, path: string, blob: BlobReader): Promise<Buffer> {
  const e = Array.from(toc.entries).find((x) => x.path === path)!;
  const parts: Buffer[] = [];
  for (const c of e.chunks) parts.push(await extractChunk(toc.compression, c, await blob.read(c.compressedOffset, c.compressedEnd - c.compressedOffset), path));
  return Buffer.concat(parts);
}

/** The converted layer describes exactly the source layer's entries (metadata entries excluded). */
async function checkLayer(toc: LayerToc, blob: BlobReader, expected: ExpectedEntry[], what: string): Promise<void> {
  const want = expected.filter((x) => !x.meta);
  assert.deepEqual(Array.from(toc.entries).map((e) => e.path), want.map((x) => x.path), `${what}: paths`);
  for (const [i, e] of Array.from(toc.entries).entries()) {
    const x = want[i]!;
    const w = `${what}: ${x.path}`;
    assert.deepEqual([e.type, e.mode, e.uid, e.gid], [x.type, x.mode, x.uid, x.gid], `${w} type/mode/owner`);
    if (x.type === 'symlink') assert.equal(e.linkName, x.linkname, w);
    if (x.type === 'hardlink') assert.equal(e.linkName, x.link_path, w);
    if (x.type === 'char' || x.type === 'block') assert.deepEqual([e.devMajor ?? 0, e.devMinor ?? 0], [x.devmajor, x.devminor], w);
    const xattrs = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')]));
    assert.deepEqual(xattrs, x.xattrs ?? {}, `${w} xattrs`);
    if (x.type === 'reg') {
      assert.equal(e.size, x.size, `${w} size`);
      assert.equal(sha256(await tocContent(toc, e.path, blob)), 'sha256:' + x.sha256, `${w} content`);
    }
  }
}

async function decompressedDigest(toc: LayerToc, bytes: Buffer): Promise<string> {
  return sha256(toc.compression === 'gzip' ? gunzipSync(bytes) : await zstdDecompress(bytes));
}

describe('tocfs convert on images tocfs builds', () => {
  let tmp: string;
  const sources = new Map<string, { img: BuiltImage; layers: FileSpec[][] }>();
  const source = async (format: ImageFormat, layers: FileSpec[][], name: string): Promise<{ img: BuiltImage; layers: FileSpec[][] }> => {
    const key = `${format}-${name}`;
    if (!sources.has(key)) sources.set(key, { img: await buildImage(join(tmp, 'src', key.replace(':', '-')), { format, layers }), layers });
    return sources.get(key)!;
  };
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-convert-built-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const cases: Array<{ from: ImageFormat; layers: 'kinds' | 'overlay'; format: 'zstd:chunked' | 'estargz'; args?: string[] }> = [
    { from: 'gzip', layers: 'kinds', format: 'zstd:chunked' },
    { from: 'gzip', layers: 'kinds', format: 'estargz' },
    { from: 'estargz', layers: 'kinds', format: 'zstd:chunked' },
    { from: 'zstd:chunked', layers: 'kinds', format: 'estargz', args: ['--chunk-size', '65536'] },
    { from: 'zstd', layers: 'kinds', format: 'zstd:chunked', args: ['--legacy-annotations'] },
    { from: 'gzip', layers: 'overlay', format: 'zstd:chunked' },
    { from: 'tar', layers: 'overlay', format: 'estargz' },
  ];
  for (const c of cases) {
    it(`${c.from} (${c.layers}) -> ${c.format} ${c.args?.join(' ') ?? ''}`, async () => {
      const { img, layers } = await source(c.from, c.layers === 'kinds' ? [KINDS_LAYER] : OVERLAY_LAYERS, c.layers);
      const out = join(tmp, `${c.from}-${c.layers}-${c.format}`.replaceAll(':', '-'));
      const r = await runCli(['convert', `oci:${img.dir}`, `oci:${out}:converted`, '--format', c.format, ...(c.args ?? [])]);
      assert.equal(r.code, 0, r.stderr);
      for (let i = 1; i <= layers.length; i++) assert.match(r.stderr, new RegExp(`"msg":"layer ${i}/${layers.length} [0-9a-f]{12} \\(uncompressed\\): done"`));
      const src = new OciLayoutSource({ transport: 'oci', dir: out, tag: 'converted' });
      const resolved = await src.resolve();
      assert.equal(r.stdout.toString().trim(), `oci:${out}:converted ${resolved.manifestDigest}`);
      assert.equal(resolved.layers.length, layers.length);
      assert.equal(resolved.config.rootfs!.diff_ids.length, layers.length);
      assert.deepEqual(resolved.config.config, { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] }, 'the rest of the config is kept');
      for (const [i, desc] of resolved.layers.entries()) {
        const blob = src.blob(desc);
        const toc = await readLayerToc(desc, blob);
        assert.deepEqual([toc.format, toc.verified], [c.format, true]);
        assert.equal(desc.mediaType, c.format === 'estargz' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar+zstd');
        await checkLayer(toc, blob, await expectedEntries(layers[i]!), `${c.from} layer ${i}`);
        const diffId = await decompressedDigest(toc, await readFile(join(out, 'blobs', 'sha256', desc.digest.slice(7))));
        assert.equal(resolved.config.rootfs!.diff_ids[i], diffId, 'config DiffID = digest of the decompressed layer');
        if (c.format === 'zstd:chunked' && c.from !== 'estargz') assert.equal(diffId, img.sourceTarDigests[i], 'zstd:chunked of a plain layer keeps the tar stream byte for byte');
        if (c.args?.includes('--legacy-annotations')) {
          assert.equal(desc.annotations!['io.containers.zstd-chunked.manifest-position'], desc.annotations!['io.github.containers.zstd-chunked.manifest-position']);
        }
        if (c.args?.includes('--chunk-size')) {
          assert.ok(Array.from(toc.entries).every((e) => e.chunks.every((ch) => ch.size <= 65536)), 'chunks no larger than --chunk-size');
          assert.ok(Array.from(toc.entries).some((e) => e.chunks.length > 1));
        }
      }
    });
  }

  it('places --prioritize files (with their parent directories) before the prefetch landmark', async () => {
    const { img } = await source('gzip', [KINDS_LAYER], 'kinds');
    const out = join(tmp, 'prio');
    const r = await runCli(['convert', `oci:${img.dir}`, `oci:${out}`, '--format', 'estargz', '--prioritize', '/etc/hello.txt', 'usr/bin/tool']);
    assert.equal(r.code, 0, r.stderr);
    const src = new OciLayoutSource({ transport: 'oci', dir: out });
    const desc = (await src.resolve()).layers[0]!;
    const toc = await readLayerToc(desc, src.blob(desc));
    assert.deepEqual(Array.from(toc.entries).slice(0, 5).map((e) => e.path), ['etc', 'etc/hello.txt', 'usr', 'usr/bin', 'usr/bin/tool']);
    const last = Array.from(toc.entries).find((e) => e.path === 'usr/bin/tool')!.chunks.at(-1)!;
    assert.ok(toc.prefetchEnd !== undefined && last.compressedEnd <= toc.prefetchEnd);
    const later = Array.from(toc.entries).find((e) => e.path === 'usr/lib/multi-chunk.bin')!.chunks[0]!;
    assert.ok(later.compressedOffset >= toc.prefetchEnd, 'files not prioritized come after the landmark');
  });

  it('converts from a registry, picking the platform asked for', async () => {
    const multi = await buildMultiArchImage(join(tmp, 'multiarch'), 'gzip', [
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [[{ path: 'etc', type: 'dir' }, { path: 'etc/arch', content: 'amd64\n' }]] },
      { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [[{ path: 'etc', type: 'dir' }, { path: 'etc/arch', content: 'arm64\n' }], [{ path: 'usr', type: 'dir' }, { path: 'usr/arm-only', content: 'arm\n' }]] },
    ]);
    const registry = await startRegistry();
    try {
      const repo = await registry.load(multi.dir, 'multiarch');
      const out = join(tmp, 'from-registry');
      const r = await runCli(['convert', `docker://${registry.host}/${repo}:latest`, `oci:${out}`, '--format', 'zstd:chunked', '--tls-verify=false', '--platform', 'linux/arm64/v8']);
      assert.equal(r.code, 0, r.stderr);
      const src = new OciLayoutSource({ transport: 'oci', dir: out });
      const resolved = await src.resolve({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
      assert.equal(resolved.config.architecture, 'arm64');
      assert.deepEqual(resolved.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
      assert.deepEqual(index.manifests[0].platform, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'index.json names the platform');
      assert.equal(resolved.layers.length, 2);
      const toc = await readLayerToc(resolved.layers[0]!, src.blob(resolved.layers[0]!));
      assert.equal((await tocContent(toc, 'etc/arch', src.blob(resolved.layers[0]!))).toString(), 'arm64\n');
      assert.deepEqual(resolved.config.rootfs!.diff_ids, multi.images[1]!.diffIds, 'zstd:chunked keeps each tar, so the DiffIDs stay');
    } finally {
      await registry.stop();
    }
  });

  it('refuses a source blob that does not match its digest, naming the layer', async () => {
    const { img } = await source('gzip', OVERLAY_LAYERS, 'overlay');
    const dir = join(tmp, 'tampered');
    await cp(img.dir, dir, { recursive: true });
    const layer = img.layers[1]!.digest;
    const path = join(dir, 'blobs', 'sha256', layer.slice(7));
    const bytes = await readFile(path);
    bytes[4] ^= 1; // gzip MTIME: decodes the same, different digest
    await writeFile(path, bytes);
    const r = await runCli(['convert', `oci:${dir}`, `oci:${join(tmp, 'tampered-out')}`, '--format', 'zstd:chunked']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`layer ${layer}: digest mismatch: expected ${layer}, got sha256:${sha256(bytes).slice(7)}`));
  });

  it('gives clear errors for a bad destination or option', async () => {
    const { img } = await source('gzip', OVERLAY_LAYERS, 'overlay');
    const src = `oci:${img.dir}`;
    let r = await runCli(['convert', src, 'docker://127.0.0.1:1/x', '--format', 'estargz']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /convert writes OCI layouts only: give the destination as oci:DIR\[:tag\]/);
    const existing = join(tmp, 'existing');
    await cp(img.dir, existing, { recursive: true });
    r = await runCli(['convert', src, `oci:${existing}`, '--format', 'estargz']);
    assert.match(r.stderr, /already holds an OCI layout; convert writes a fresh one/);
    assert.equal(await readFile(join(existing, 'index.json'), 'utf8'), await readFile(join(img.dir, 'index.json'), 'utf8'), 'left untouched');
    r = await runCli(['convert', src, `oci:${join(tmp, 'x')}`, '--format', 'zstd:chunked', '--profile', join(tmp, 'no-such.profile.json')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--profile \S+no-such\.profile\.json: no such profile file/);
    r = await runCli(['convert', src, `oci:${join(tmp, 'x')}`, '--format', 'estargz', '--chunk-size', '0']);
    assert.match(r.stderr, /--chunk-size must be a positive number of bytes, got 0/);
    r = await runCli(['convert', src, `oci:${join(tmp, 'x')}`, '--format', 'gzip']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Invalid values:[\s\S]*format/);
  });
});

describe('tocfs convert', { skip: !HAVE_CORPUS && 'corpus not present' }, () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-convert-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  const cases: Array<{ image: string; format: 'zstd:chunked' | 'estargz'; args?: string[] }> = [
    { image: 'gzip-plain-basic', format: 'zstd:chunked' },
    { image: 'gzip-plain-basic', format: 'estargz' },
    { image: 'estargz-ctrremote-basic', format: 'zstd:chunked' },
    { image: 'zstdchunked-ctrremote-basic', format: 'estargz', args: ['--chunk-size', '65536'] },
    { image: 'zstd-plain-basic', format: 'zstd:chunked', args: ['--legacy-annotations'] },
    { image: 'gzip-plain-layers', format: 'zstd:chunked' },
  ];
  for (const c of cases) {
    it(`${c.image} -> ${c.format} ${c.args?.join(' ') ?? ''}`, async () => {
      const out = join(tmp, `${c.image}-${c.format.replace(':', '-')}`);
      const r = await runCli(['convert', `oci:${join(CORPUS_DIR, c.image)}`, `oci:${out}:converted`, '--format', c.format, ...(c.args ?? [])]);
      assert.equal(r.code, 0, r.stderr);
      const x = loadExpected(c.image);
      const img = x.images[0]!;
      assert.match(r.stderr, new RegExp(`layer ${img.layers.length}/${img.layers.length} .* MB/s`), 'progress lines on stderr');
      // Not on a terminal: progress is logged (JSON lines), one final line per layer at least.
      for (let i = 1; i <= img.layers.length; i++) assert.match(r.stderr, new RegExp(`"msg":"layer ${i}/${img.layers.length} [0-9a-f]{12} \\(uncompressed\\): done"`));
      const src = new OciLayoutSource({ transport: 'oci', dir: out, tag: 'converted' });
      const resolved: ResolvedImage = await src.resolve();
      assert.equal(r.stdout.toString().trim(), `oci:${out}:converted ${resolved.manifestDigest}`);
      assert.equal(resolved.layers.length, img.layers.length);
      assert.equal(resolved.config.rootfs!.diff_ids.length, img.layers.length);
      assert.equal(resolved.config.architecture, 'amd64', 'the rest of the config is kept');
      for (const [i, desc] of resolved.layers.entries()) {
        const blob = src.blob(desc);
        const toc = await readLayerToc(desc, blob);
        assert.equal(toc.format, c.format);
        assert.equal(toc.verified, true);
        assert.equal(desc.mediaType, c.format === 'estargz' ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar+zstd');
        const sourceLayer = x.layers[img.layers[i]!]!;
        await checkLayer(toc, blob, sourceLayer.entries, `${c.image} layer ${i}`);
        const bytes = await readFile(join(out, 'blobs', 'sha256', desc.digest.slice(7)));
        const diffId = await decompressedDigest(toc, bytes);
        assert.equal(resolved.config.rootfs!.diff_ids[i], diffId, 'config DiffID = digest of the decompressed layer');
        if (c.format === 'zstd:chunked' && !Array.from(sourceLayer.entries).some((e) => e.meta)) {
          assert.equal(diffId, sourceLayer.uncompressed_digest, 'zstd:chunked of a plain layer keeps the tar stream byte for byte');
        }
        if (c.args?.includes('--legacy-annotations')) {
          assert.equal(desc.annotations!['io.containers.zstd-chunked.manifest-position'], desc.annotations!['io.github.containers.zstd-chunked.manifest-position']);
        }
        if (c.args?.includes('--chunk-size')) {
          assert.ok(Array.from(toc.entries).every((e) => e.chunks.every((ch) => ch.size <= 65536)), 'chunks no larger than --chunk-size');
          assert.ok(Array.from(toc.entries).some((e) => e.chunks.length > 1));
        }
      }
    });
  }

  it('places --prioritize files (with their parent directories) before the prefetch landmark', async () => {
    const out = join(tmp, 'prio');
    const r = await runCli(['convert', `oci:${join(CORPUS_DIR, 'gzip-plain-basic')}`, `oci:${out}`, '--format', 'estargz', '--prioritize', '/etc/hostname', 'bin/hello.sh']);
    assert.equal(r.code, 0, r.stderr);
    const src = new OciLayoutSource({ transport: 'oci', dir: out });
    const desc = (await src.resolve()).layers[0]!;
    const toc = await readLayerToc(desc, src.blob(desc));
    assert.deepEqual(Array.from(toc.entries).slice(0, 4).map((e) => e.path), ['etc', 'etc/hostname', 'bin', 'bin/hello.sh']);
    const first = Array.from(toc.entries).find((e) => e.path === 'bin/hello.sh')!.chunks[0]!;
    assert.ok(toc.prefetchEnd !== undefined && first.compressedEnd <= toc.prefetchEnd);
  });

  it('converts from a registry, picking the platform asked for', async () => {
    const registry = await startRegistry();
    try {
      const repo = await registry.load(join(CORPUS_DIR, 'gzip-plain-multiarch'));
      const out = join(tmp, 'from-registry');
      const r = await runCli(['convert', `docker://${registry.host}/${repo}:latest`, `oci:${out}`, '--format', 'zstd:chunked', '--tls-verify=false', '--platform', 'linux/arm64/v8']);
      assert.equal(r.code, 0, r.stderr);
      const x = loadExpected('gzip-plain-multiarch').images.find((i) => i.platform.architecture === 'arm64')!;
      const src = new OciLayoutSource({ transport: 'oci', dir: out });
      const resolved = await src.resolve({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
      assert.equal(resolved.config.architecture, 'arm64');
      assert.deepEqual(resolved.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
      assert.deepEqual(index.manifests[0].platform, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'index.json names the platform');
      assert.equal(resolved.layers.length, x.layers.length);
      for (const [i, desc] of resolved.layers.entries()) {
        const toc = await readLayerToc(desc, src.blob(desc));
        await checkLayer(toc, src.blob(desc), loadExpected('gzip-plain-multiarch').layers[x.layers[i]!]!.entries, `arm64 layer ${i}`);
      }
    } finally {
      await registry.stop();
    }
  });

  it('refuses a source blob that does not match its digest, naming the layer', async () => {
    const dir = join(tmp, 'tampered');
    await cp(join(CORPUS_DIR, 'gzip-plain-layers'), dir, { recursive: true });
    const layer = loadExpected('gzip-plain-layers').images[0]!.layers[1]!;
    const path = join(dir, 'blobs', 'sha256', layer.slice(7));
    const bytes = await readFile(path);
    bytes[4] ^= 1; // gzip MTIME: decodes the same, different digest
    await writeFile(path, bytes);
    const r = await runCli(['convert', `oci:${dir}`, `oci:${join(tmp, 'tampered-out')}`, '--format', 'zstd:chunked']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`layer ${layer}: digest mismatch: expected ${layer}, got sha256:${sha256(bytes).slice(7)}`));
  });

  it('gives clear errors for a bad destination or option', async () => {
    const src = `oci:${join(CORPUS_DIR, 'gzip-plain-layers')}`;
    let r = await runCli(['convert', src, 'docker://127.0.0.1:1/x', '--format', 'estargz']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /convert writes OCI layouts only: give the destination as oci:DIR\[:tag\]/);
    const existing = join(tmp, 'existing');
    await cp(join(CORPUS_DIR, 'gzip-plain-layers'), existing, { recursive: true });
    r = await runCli(['convert', src, `oci:${existing}`, '--format', 'estargz']);
    assert.match(r.stderr, /already holds an OCI layout; convert writes a fresh one/);
    assert.equal(await readFile(join(existing, 'index.json'), 'utf8'), await readFile(join(CORPUS_DIR, 'gzip-plain-layers', 'index.json'), 'utf8'), 'left untouched');
    r = await runCli(['convert', src, `oci:${join(tmp, 'x')}`, '--format', 'estargz', '--chunk-size', '0']);
    assert.match(r.stderr, /--chunk-size must be a positive number of bytes, got 0/);
    r = await runCli(['convert', src, `oci:${join(tmp, 'x')}`, '--format', 'gzip']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Invalid values:[\s\S]*format/);
  });
});
