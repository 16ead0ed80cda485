/**
 * `tocfs inspect` on real corpus images, one per format generation: what it reports must
 * agree with expected.json (computed from the bytes by independent tools), and it must read
 * only footers and TOCs.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { InspectReport } from '../src/cli/commands/inspect.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';

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
