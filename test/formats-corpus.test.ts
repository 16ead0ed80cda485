/**
 * Every layer of every corpus image (real blobs written by podman, skopeo and ctr-remote):
 * the TOC entries tocfs reads must agree with expected.json, computed independently from the
 * decompressed tar, and every file's content read through the TOC's chunks must hash right.
 * The same walk runs on an image tocfs builds in every format, against its spec.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { sha256 } from '../src/digest.js';
import { extractChunk, NoTocError, probeLayer, readLayerToc, type LayerToc, type TocEntry } from '../src/formats/index.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import type { BlobReader, Descriptor } from '../src/source/types.js';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected, type ExpectedEntry } from './helpers/corpus.js';
import { buildImage } from './helpers/images.js';
import { expectedEntries, KINDS_LAYER } from './helpers/spec-expected.js';

async function contentDigest(toc: LayerToc, entry: TocEntry, blob: BlobReader, what: string): Promise<string> {
  const parts: Buffer[] = [];
  for (const c of entry.chunks) {
    const compressed = await blob.read(c.compressedOffset, c.compressedEnd - c.compressedOffset);
    parts.push(await extractChunk(toc.compression, c, compressed, what));
  }
  return sha256(parts).slice('sha256:'.length);
}

/** Whole-second TOC times (eStargz) are the tar time rounded; c/storage keeps nanoseconds. */
function mtimeMatches(toc: LayerToc, e: TocEntry, x: ExpectedEntry): boolean {
  if (x.mtime_pax !== undefined && toc.format === 'zstd:chunked') {
    const negative = x.mtime_pax.startsWith('-');
    const [s, f = ''] = x.mtime_pax.replace('-', '').split('.');
    const frac = Number(f.padEnd(9, '0').slice(0, 9));
    const sec = negative ? -Number(s) - (frac > 0 ? 1 : 0) : Number(s);
    const nsec = negative && frac > 0 ? 1e9 - frac : frac;
    return e.mtime.sec === sec && e.mtime.nsec === nsec;
  }
  const got = e.mtime.sec + e.mtime.nsec / 1e9;
  if (toc.format === 'zstd:chunked') return Math.abs(got - x.mtime) <= 1e-6;
  return e.mtime.nsec === 0 && Math.abs(got - x.mtime) <= 0.5;
}

async function compareEntries(toc: LayerToc, blob: BlobReader, expected: ExpectedEntry[], layer: string): Promise<string[]> {
  const problems: string[] = [];
  const want = expected.filter((x) => !x.meta);
  const got = new Map(Array.from(toc.entries).map((e) => [e.path, e]));
  assert.deepEqual(Array.from(toc.entries).map((e) => e.path), want.map((x) => x.path), `${layer}: entry paths in archive order`);
  for (const x of want) {
    const e = got.get(x.path)!;
    const bad = (field: string, a: unknown, b: unknown): void => {
      problems.push(`${x.path}: ${field}: got ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`);
    };
    if (e.type !== x.type) bad('type', e.type, x.type);
    if (e.mode !== x.mode) bad('mode', e.mode, x.mode);
    if (e.uid !== x.uid) bad('uid', e.uid, x.uid);
    if (e.gid !== x.gid) bad('gid', e.gid, x.gid);
    if (toc.format !== 'zstd:chunked' && (e.userName ?? '') !== (x.uname ?? '')) bad('userName', e.userName, x.uname);
    if (toc.format !== 'zstd:chunked' && (e.groupName ?? '') !== (x.gname ?? '')) bad('groupName', e.groupName, x.gname);
    if (!mtimeMatches(toc, e, x)) bad('mtime', e.mtime, x.mtime_pax ?? x.mtime);
    if (x.type === 'reg' && e.size !== x.size) bad('size', e.size, x.size);
    if (x.type === 'symlink' && e.linkName !== x.linkname) bad('linkName', e.linkName, x.linkname);
    if (x.type === 'hardlink' && e.linkName !== x.link_path) bad('linkName', e.linkName, x.link_path);
    if ((x.type === 'char' || x.type === 'block') && (e.devMajor !== x.devmajor || e.devMinor !== x.devminor)) bad('device', [e.devMajor, e.devMinor], [x.devmajor, x.devminor]);
    const xattrs = Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')]));
    assert.deepEqual(xattrs, x.xattrs ?? {}, `${layer} ${x.path}: xattrs`);
    if (x.type === 'reg') {
      const digest = await contentDigest(toc, e, blob, `${layer} ${x.path}`);
      if (digest !== x.sha256) bad('content sha256', digest, x.sha256);
    }
  }
  return problems;
}

function layerSource(image: string): OciLayoutSource {
  return new OciLayoutSource({ transport: 'oci', dir: join(CORPUS_DIR, image) });
}

describe('formats: every corpus layer', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  for (const image of corpusImages()) {
    const expected = loadExpected(image);
    for (const [digest, layer] of Object.entries(expected.layers)) {
      const format = String(layer.format.format);
      it(`${image} ${digest.slice(7, 19)} (${format})`, async () => {
        const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size, ...(layer.annotations ? { annotations: layer.annotations } : {}) };
        const blob = layerSource(image).blob(desc);
        const probe = await probeLayer(desc, blob);
        if (format === 'gzip' || format === 'zstd') {
          assert.equal(probe.format, 'none');
          assert.equal(probe.codec, layer.format.compression);
          assert.equal(probe.lazy, false);
          await assert.rejects(readLayerToc(desc, blob), NoTocError);
          return;
        }
        assert.equal(probe.lazy, true, probe.reason);
        const toc = await readLayerToc(desc, blob);
        assert.equal(toc.verified, true);
        assert.equal(toc.compression, layer.format.compression);
        const summary = (layer.format.toc_summary ?? {}) as { landmark?: string };
        const footer = layer.format.footer as { manifest_offset?: number; toc_offset?: number; manifest_length_compressed?: number; manifest_length_uncompressed?: number };
        if (format === 'estargz') {
          assert.equal(toc.format, 'estargz');
          assert.equal(toc.tocOffset, footer.toc_offset);
          assert.equal(toc.noPrefetch === true, summary.landmark === '.no.prefetch.landmark');
          assert.equal(toc.prefetchEnd !== undefined, summary.landmark === '.prefetch.landmark');
        } else {
          assert.equal(toc.format, layer.annotations?.['containerd.io/snapshot/stargz/toc.digest'] ? 'stargz-zstd' : 'zstd:chunked');
          assert.equal(toc.tocOffset, footer.manifest_offset);
          assert.equal(toc.tocCompressedLength, footer.manifest_length_compressed);
          assert.equal(toc.tocUncompressedLength, footer.manifest_length_uncompressed);
        }
        // Known from the annotation (stargz writers) or the verified tar-split (c/storage ≥ 1.47).
        if (toc.format !== 'zstd:chunked' || toc.tarSplit) assert.equal(toc.uncompressedSize, layer.uncompressed_size, 'uncompressed size');
        else assert.equal(toc.uncompressedSize, undefined);
        if (!layer.tar_valid) {
          // zstdchunked-skopeo118-gnusparse: skopeo expanded a GNU PAX-1.0 sparse member but kept
          // its sparse headers, so no tar reader can list the stream. The TOC itself is sound and
          // describes the expanded file; its contents are checked against the same source image
          // in its plain gzip form below.
          return;
        }
        assert.deepEqual(await compareEntries(toc, blob, layer.entries, `${image} ${digest}`), []);
      });
    }
  }

  it('zstdchunked-skopeo118-gnusparse: the TOC of the corrupt-tar layer still serves the expanded sparse file', async () => {
    const image = 'zstdchunked-skopeo118-gnusparse';
    const [digest, layer] = Object.entries(loadExpected(image).layers)[0]!;
    const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size, annotations: layer.annotations! };
    const blob = layerSource(image).blob(desc);
    const toc = await readLayerToc(desc, blob);
    const plain = Object.values(loadExpected('gzip-plain-gnusparse').layers)[0]!.entries;
    assert.deepEqual(Array.from(toc.entries).map((e) => e.path).sort(), plain.map((x) => x.path).sort());
    for (const x of plain.filter((p) => p.type === 'reg')) {
      const e = Array.from(toc.entries).find((t) => t.path === x.path)!;
      assert.equal(e.size, x.size, x.path);
      assert.equal(await contentDigest(toc, e, blob, x.path), x.sha256, `${x.path}: content`);
    }
    assert.ok(Array.from(toc.entries).some((e) => e.chunks.some((c) => c.zeros)), 'the sparse holes are zeros chunks');
  });
});

describe('formats: every layer of an image tocfs builds, in each format', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-formats-built-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  for (const format of ['zstd:chunked', 'estargz', 'gzip', 'zstd'] as const) {
    it(`${format}: probe, TOC and every entry and content against the spec`, async () => {
      const img = await buildImage(join(tmp, format.replace(':', '-')), { format, layers: [KINDS_LAYER] });
      const desc = img.layers[0]!;
      const blob = new OciLayoutSource({ transport: 'oci', dir: img.dir }).blob(desc);
      const bytes = await readFile(join(img.dir, 'blobs', 'sha256', desc.digest.slice(7)));
      const plain = format === 'estargz' || format === 'gzip' ? gunzipSync(bytes) : await zstdDecompress(bytes);
      const probe = await probeLayer(desc, blob);
      if (format === 'gzip' || format === 'zstd') {
        assert.deepEqual([probe.format, probe.codec, probe.lazy], ['none', format, false]);
        await assert.rejects(readLayerToc(desc, blob), NoTocError);
        return;
      }
      assert.deepEqual([probe.format, probe.lazy, probe.verifiable], [format, true, true], probe.reason);
      const toc = await readLayerToc(desc, blob);
      assert.deepEqual([toc.format, toc.compression, toc.verified], [format, format === 'estargz' ? 'gzip' : 'zstd', true]);
      assert.equal(toc.uncompressedSize, plain.length, 'uncompressed size = the decompressed blob');
      assert.deepEqual(await compareEntries(toc, blob, await expectedEntries(KINDS_LAYER), `${format} ${desc.digest}`), []);
    });
  }
});
