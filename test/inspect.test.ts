/**
 * `tocfs inspect` on real corpus images, one per format generation, and on images tocfs
 * builds in every format: what it reports must agree with expected.json (computed from the
 * bytes by independent tools) or with the built blobs and their annotations, and it must
 * read only footers and TOCs.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import type { InspectReport } from '../src/cli/commands/inspect.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, seededContent, type BuiltImage, type FileSpec, type ImageFormat } from './helpers/images.js';
import { KINDS_LAYER } from './helpers/spec-expected.js';

const IMAGES: Array<[image: string, platform?: string]> = [
  ['zstdchunked-podman4-basic'], // c/storage 1.43: v1 footer, io.containers annotations
  ['zstdchunked-skopeo118-layers'], // c/storage 1.57: v3 footer, tar-split; 3 layers
  ['zstdchunked-ctrremote-basic'], // stargz-snapshotter zstd variant
  ['estargz-ctrremote-basic'],
  ['estargz-ctrremote-prefetch'],
  ['gzip-plain-basic'],
  ['zstd-plain-basic'],
  ['zstdchunked-skopeo118-multiarch', 'linux/arm64/v8'],
];

function expectedFormat(layer: ReturnType<typeof loadExpected>['layers'][string]): string {
  const f = String(layer.format.format);
  if (f === 'gzip' || f === 'zstd') return 'none';
  if (f === 'zstd:chunked' && layer.annotations?.['containerd.io/snapshot/stargz/toc.digest']) return 'stargz-zstd';
  return f;
}

describe('tocfs inspect', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  for (const [image, platform] of IMAGES) {
    it(`${image}${platform ? ` --platform ${platform}` : ''} --json --stats`, async () => {
      const expected = loadExpected(image);
      const img = platform ? expected.images.find((i) => [i.platform.os, i.platform.architecture, i.platform.variant].filter(Boolean).join('/') === platform)! : expected.images[0]!;
      const args = ['inspect', `oci:${join(CORPUS_DIR, image)}`, '--json', '--stats', ...(platform ? ['--platform', platform] : [])];
      const res = await runCli(args);
      assert.equal(res.code, 0, res.stderr);
      const report = JSON.parse(res.stdout.toString()) as InspectReport;
      assert.equal(report.manifestDigest, img.manifest_digest);
      assert.equal(report.configDigest, img.config_digest);
      if (platform) assert.equal(report.platform, platform);
      assert.deepEqual(report.layers.map((l) => l.digest), img.layers);
      for (const l of report.layers) {
        const x = expected.layers[l.digest]!;
        const format = expectedFormat(x);
        assert.equal(l.format, format, l.digest);
        assert.equal(l.compression, x.format.compression);
        assert.equal(l.mediaType, x.mediaType);
        assert.equal(l.size, x.size);
        if (format === 'none') {
          assert.deepEqual([l.lazy, l.verifiable, l.toc], [false, false, null]);
          assert.match(l.reason!, /no TOC/);
          continue;
        }
        assert.deepEqual([l.lazy, l.verifiable, l.reason], [true, true, null]);
        const footer = x.format.footer as Record<string, number>;
        if (format === 'estargz') {
          assert.equal(l.toc!.offset, footer.toc_offset);
          assert.match(l.formatVersion, /eStargz \(51 B footer\)/);
          assert.equal(l.toc!.digest, x.annotations!['containerd.io/snapshot/stargz/toc.digest']);
          assert.equal(l.uncompressedSize, Number(x.annotations!['io.containers.estargz.uncompressed-size']));
        } else {
          assert.deepEqual([l.toc!.offset, l.toc!.compressedLength, l.toc!.uncompressedLength], [footer.manifest_offset, footer.manifest_length_compressed, footer.manifest_length_uncompressed]);
          assert.match(l.formatVersion, new RegExp(`v${footer.skippable_payload_size === 64 ? 3 : 1} footer \\(${footer.skippable_payload_size} B\\)`));
          if (footer.tarsplit_offset !== undefined) {
            assert.deepEqual([l.tarSplit!.offset, l.tarSplit!.compressedLength], [footer.tarsplit_offset, footer.tarsplit_length_compressed]);
            assert.equal(l.uncompressedSize, x.uncompressed_size);
          } else assert.equal(l.tarSplit, null);
        }
        assert.equal(l.toc!.entries, x.entries.filter((e) => !e.meta).length);
      }
      const stats = report.stats!;
      assert.equal(stats.blobBytes, report.layers.reduce((n, l) => n + l.size, 0));
      assert.ok(stats.requests <= 3 * report.layers.length, `${stats.requests} requests`);
      // Footers and TOCs only: a small fraction of the layer bytes (tiny layers are read
      // almost whole by the 32 KiB eStargz tail probe, so only judge images over 1 MB).
      if (stats.blobBytes > 1_000_000) assert.ok(stats.bytesRead < stats.blobBytes / 20, `read ${stats.bytesRead} of ${stats.blobBytes}`);
    });
  }

  it('prints a human-readable table by default', async () => {
    const res = await runCli(['inspect', `oci:${join(CORPUS_DIR, 'zstdchunked-ctrremote-basic')}`]);
    assert.equal(res.code, 0, res.stderr);
    const out = res.stdout.toString();
    const expected = loadExpected('zstdchunked-ctrremote-basic');
    assert.match(out, new RegExp(`Manifest: +${expected.images[0]!.manifest_digest}`));
    assert.match(out, /FORMAT .*LAZY/);
    assert.match(out, /stargz-zstd +zstd +2600703 +2595985 +4670\/25667 +92 +yes +yes/);
    assert.match(out, /stargz-snapshotter zstd, v1 footer \(40 B\)/);
  });

  it('fails with a clear message for a directory that is not an image', async () => {
    const res = await runCli(['inspect', `oci:${CORPUS_DIR}`]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /not an OCI image layout/);
  });
});

describe('tocfs inspect on images tocfs builds', () => {
  const SMALL: FileSpec[] = [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'second layer\n' }];
  const BIG: FileSpec[] = [{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('inspect-big', 3_000_000) }, { path: 'data/small.txt', content: 'small\n' }];
  const cases: Array<{ name: string; format: ImageFormat; layers: FileSpec[][]; prioritize?: string[] }> = [
    { name: 'zstd:chunked, three layers', format: 'zstd:chunked', layers: [KINDS_LAYER, SMALL, BIG] },
    { name: 'eStargz', format: 'estargz', layers: [KINDS_LAYER, BIG] },
    { name: 'eStargz with prioritized files', format: 'estargz', layers: [BIG], prioritize: ['data/small.txt'] },
    { name: 'gzip', format: 'gzip', layers: [KINDS_LAYER] },
    { name: 'zstd', format: 'zstd', layers: [KINDS_LAYER] },
  ];
  let tmp: string;
  const images = new Map<string, BuiltImage>();
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-inspect-built-'));
    for (const [i, c] of cases.entries()) images.set(c.name, await buildImage(join(tmp, `img${i}`), { format: c.format, layers: c.layers, ...(c.prioritize ? { prioritize: c.prioritize } : {}) }));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  for (const c of cases) {
    it(`${c.name}: --json --stats`, async () => {
      const img = images.get(c.name)!;
      const res = await runCli(['inspect', `oci:${img.dir}`, '--json', '--stats']);
      assert.equal(res.code, 0, res.stderr);
      const report = JSON.parse(res.stdout.toString()) as InspectReport;
      assert.equal(report.manifestDigest, img.manifestDigest);
      assert.equal(report.configDigest, img.configDigest);
      assert.deepEqual(report.layers.map((l) => l.digest), img.layers.map((l) => l.digest));
      for (const [i, l] of report.layers.entries()) {
        const desc = img.layers[i]!;
        const a = desc.annotations ?? {};
        const bytes = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
        assert.deepEqual([l.mediaType, l.size, l.compression], [desc.mediaType, desc.size, c.format === 'estargz' || c.format === 'gzip' ? 'gzip' : 'zstd']);
        if (c.format === 'gzip' || c.format === 'zstd') {
          assert.deepEqual([l.format, l.lazy, l.verifiable, l.toc], ['none', false, false, null]);
          assert.match(l.reason!, /no TOC/);
          continue;
        }
        assert.deepEqual([l.format, l.lazy, l.verifiable, l.reason], [c.format, true, true, null]);
        assert.equal(l.toc!.entries, c.layers[i]!.length, 'one TOC entry per file of the layer');
        if (c.format === 'estargz') {
          assert.match(l.formatVersion, /eStargz \(51 B footer\)/);
          assert.equal(l.toc!.offset, parseInt(bytes.toString('latin1', bytes.length - 35, bytes.length - 19), 16), 'the offset the footer gives');
          assert.equal(l.toc!.digest, a['containerd.io/snapshot/stargz/toc.digest']);
          assert.equal(l.uncompressedSize, gunzipSync(bytes).length);
          assert.equal(l.uncompressedSize, Number(a['io.containers.estargz.uncompressed-size']));
          assert.equal(l.prefetchEnd !== null, c.prioritize !== undefined, 'a prefetch landmark only where files were prioritized');
        } else {
          const [off, clen, ulen] = a['io.github.containers.zstd-chunked.manifest-position']!.split(':').map(Number);
          const [tsOff, tsLen] = a['io.github.containers.zstd-chunked.tarsplit-position']!.split(':').map(Number);
          assert.deepEqual([l.toc!.offset, l.toc!.compressedLength, l.toc!.uncompressedLength], [off, clen, ulen]);
          assert.equal(l.toc!.digest, a['io.github.containers.zstd-chunked.manifest-checksum']);
          assert.match(l.formatVersion, /c\/storage v3 footer \(64 B\)/);
          assert.deepEqual([l.tarSplit!.offset, l.tarSplit!.compressedLength], [tsOff, tsLen]);
          assert.equal(l.uncompressedSize, (await zstdDecompress(bytes)).length);
        }
      }
      const stats = report.stats!;
      assert.equal(stats.blobBytes, img.layers.reduce((n, l) => n + l.size, 0));
      assert.ok(stats.requests <= 3 * report.layers.length, `${stats.requests} requests`);
      if (c.format !== 'gzip' && c.format !== 'zstd') assert.ok(stats.bytesRead < stats.blobBytes / 20, `read ${stats.bytesRead} of ${stats.blobBytes}`);
    });
  }

  it('prints a human-readable table by default; a directory that is not an image is a clear error', async () => {
    const img = images.get('zstd:chunked, three layers')!;
    const res = await runCli(['inspect', `oci:${img.dir}`]);
    assert.equal(res.code, 0, res.stderr);
    const out = res.stdout.toString();
    assert.match(out, new RegExp(`Manifest: +${img.manifestDigest}`));
    assert.match(out, /FORMAT .*LAZY/);
    for (const [i, l] of img.layers.entries()) assert.match(out, new RegExp(`^${i} +${l.digest.slice(7, 19)} +zstd:chunked +zstd +${l.size} .* yes +yes$`, 'm'));
    const bad = await runCli(['inspect', `oci:${tmp}`]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not an OCI image layout/);
  });
});
