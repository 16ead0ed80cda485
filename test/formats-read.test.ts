/**
 * readLayerToc / probeLayer beyond the plain corpus walk: every footer generation and variant
 * (built from real layers where the corpus has no sample), footer-only TOCs, a lying media
 * type, the TOC store, request counts, and the normalisation rules of toc.ts. One suite body
 * runs on layers tocfs's writers make (always) and on real corpus layers (skipped without the
 * corpus).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { DiskTocStore } from '../src/cache/toc-store.js';
import { sha256 } from '../src/digest.js';
import { extractChunk, probeLayer, readLayerToc, type TocStore } from '../src/formats/index.js';
import { ReadCounter } from '../src/source/counting.js';
import { CORPUS_DIR, HAVE_CORPUS } from './helpers/corpus.js';
import { seededContent, type FileSpec } from './helpers/images.js';
import { corpusLayer, memoryBlob, repack, tocText, withoutAnnotations, type TestLayer } from './helpers/toc-repack.js';
import { asV1Footer, copyLayer, writerLayer } from './helpers/writer-layers.js';

/** The layers a run of the suite reads; each call returns a fresh copy the test may change. */
interface LayerSet {
  label: string;
  skip: string | false;
  prepare(): Promise<void>;
  /** zstd:chunked with a v1 footer (c/storage 1.43 shape) and with a v3 footer (≥ 1.57, tar-split). */
  zc(): TestLayer;
  zcNew(): TestLayer;
  /** stargz-zstd (ctr-remote), where the set has one. */
  szc?: () => TestLayer;
  esgz(): TestLayer;
  /** eStargz with a .prefetch.landmark. */
  prefetch(): TestLayer;
  /** A regular file of the eStargz layer whose gzip member goes on into the next tar header. */
  smallFile: string;
  /** What the set knows of its files: the zstd:chunked layer's paths, etc/motd's content, the prioritized file. */
  paths?: string[];
  motd?: string;
  prioritized?: string;
}

const FILES: FileSpec[] = [
  { path: 'etc', type: 'dir' },
  { path: 'etc/app.conf', content: 'version=3\n' },
  { path: 'etc/motd', content: 'welcome\n'.repeat(40) },
  { path: 'data', type: 'dir' },
  { path: 'data/big.bin', content: seededContent('formats-read-big', 400_000) },
];
const written: Record<'zc' | 'zc1' | 'esgz' | 'prefetch', TestLayer> = {} as never;

const SETS: LayerSet[] = [
  {
    label: 'layers tocfs writes (no corpus needed)',
    skip: false,
    prepare: async () => {
      written.zc = await writerLayer('zstd:chunked', FILES);
      written.zc1 = await asV1Footer(written.zc);
      written.esgz = await writerLayer('estargz', FILES);
      written.prefetch = await writerLayer('estargz', FILES, { prioritize: ['etc/motd'] });
    },
    zc: () => copyLayer(written.zc1),
    zcNew: () => copyLayer(written.zc),
    esgz: () => copyLayer(written.esgz),
    prefetch: () => copyLayer(written.prefetch),
    smallFile: 'etc/app.conf', // 10 bytes + padding, then the next tar header
    paths: ['etc', 'etc/app.conf', 'etc/motd', 'data', 'data/big.bin'],
    motd: 'welcome\n'.repeat(40),
    prioritized: 'etc/motd',
  },
  {
    label: 'corpus layers',
    skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
    prepare: async () => {},
    zc: () => corpusLayer('zstdchunked-skopeo19-layers', 0),
    zcNew: () => corpusLayer('zstdchunked-skopeo118-layers', 0),
    szc: () => corpusLayer('zstdchunked-ctrremote-basic', 0),
    esgz: () => corpusLayer('estargz-ctrremote-basic', 0),
    prefetch: () => corpusLayer('estargz-ctrremote-prefetch', 0),
    smallFile: 'etc/hostname', // 13 bytes + padding, then the next tar header
  },
];

function withTail(layer: TestLayer, cut: number, tail: Buffer): TestLayer {
  const bytes = Buffer.concat([layer.bytes.subarray(0, layer.bytes.length - cut), tail]);
  return { bytes, desc: { ...layer.desc, digest: sha256(bytes), size: bytes.length } };
}

const ESGZ_FOOTER_TRAILER = Buffer.from('010000ffff0000000000000000', 'hex');
function legacyStargzFooter(tocOffset: number): Buffer {
  return Buffer.concat([Buffer.from('1f8b08040000000000ff1600', 'hex'), Buffer.from(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 'latin1'), ESGZ_FOOTER_TRAILER]);
}
function externalTocFooter(): Buffer {
  return Buffer.concat([Buffer.from('1f8b08040000000000ff1500', 'hex'), Buffer.from('53471100', 'hex'), Buffer.from('STARGZEXTERNALTOC', 'latin1'), ESGZ_FOOTER_TRAILER]);
}

class MapStore implements TocStore {
  readonly map = new Map<string, Buffer>();
  async get(key: string): Promise<Buffer | undefined> {
    return this.map.get(key);
  }
  async put(key: string, raw: Buffer): Promise<void> {
    this.map.set(key, Buffer.from(raw));
  }
}

for (const set of SETS) {
  describe(`formats: detection and reading, ${set.label}`, { skip: set.skip }, () => {
    const { zc, zcNew, szc, esgz } = set;
    before(() => set.prepare());

    const variants: Array<[string, () => TestLayer, string]> = [['zstd:chunked v1', zc, 'zstd:chunked'], ['zstd:chunked v3', zcNew, 'zstd:chunked'], ...(szc ? [['stargz-zstd', szc, 'stargz-zstd'] as [string, () => TestLayer, string]] : []), ['eStargz', esgz, 'estargz']];
    for (const [name, base, format] of variants) {
      it(`${name}: a TOC found by footer only is refused unless allowUnverified, then read unverified`, async () => {
        const annotated = base();
        const bare = withoutAnnotations(annotated);
        await assert.rejects(readLayerToc(bare.desc, memoryBlob(bare)), /TOC found by footer probing only .*no layer annotation vouches for it/);
        const probe = await probeLayer(bare.desc, memoryBlob(bare));
        assert.equal(probe.verifiable, false);
        assert.equal(probe.lazy, true);
        assert.match(probe.reason!, /no layer annotation vouches/);
        const toc = await readLayerToc(bare.desc, memoryBlob(bare), { allowUnverified: true });
        assert.equal(toc.verified, false);
        assert.equal(toc.tocDigest, undefined);
        assert.equal(toc.format, format);
        const verified = await readLayerToc(annotated.desc, memoryBlob(annotated));
        assert.equal(verified.verified, true);
        assert.deepEqual(toc.entries, verified.entries);
        if (set.paths) assert.deepEqual(verified.entries.map((e) => e.path), set.paths);
      });
    }

    if (szc) {
      it('stargz-zstd with only its toc.digest annotation is found by the footer and verified by the JSON digest', async () => {
        const full = szc();
        const a = full.desc.annotations!;
        const only: TestLayer = { ...full, desc: { ...full.desc, annotations: { 'containerd.io/snapshot/stargz/toc.digest': a['containerd.io/snapshot/stargz/toc.digest']! } } };
        const toc = await readLayerToc(only.desc, memoryBlob(only));
        assert.deepEqual([toc.format, toc.verified, toc.tocDigest], ['stargz-zstd', true, a['containerd.io/snapshot/stargz/toc.digest']]);
        assert.deepEqual(toc.entries, (await readLayerToc(full.desc, memoryBlob(full))).entries);
      });
    }

    it('c/storage 1.47–1.49 v2 footer (56-byte payload, never readable by its own reader) is recognised', async () => {
      const l = zc();
      const p = l.bytes.subarray(l.bytes.length - 40);
      const footer = Buffer.concat([Buffer.from('502a4d1838000000', 'hex'), p, Buffer.alloc(16)]);
      const v2 = withTail(l, 48, footer);
      const probe = await probeLayer(v2.desc, memoryBlob(v2));
      assert.match(probe.formatVersion, /v2 footer \(56 B\)/);
      const fromAnnotations = await readLayerToc(v2.desc, memoryBlob(v2));
      assert.match(fromAnnotations.formatVersion, /c\/storage v2 footer \(56 B\)/);
      const bare = withoutAnnotations(v2);
      const fromFooter = await readLayerToc(bare.desc, memoryBlob(bare), { allowUnverified: true });
      assert.equal(fromFooter.tocOffset, fromAnnotations.tocOffset);
      assert.deepEqual(fromFooter.entries, fromAnnotations.entries);
    });

    it('legacy stargz (47-byte footer) is detected and reported as not lazily mountable', async () => {
      const l = esgz();
      const tocOffset = parseInt(l.bytes.toString('latin1', l.bytes.length - 35, l.bytes.length - 19), 16);
      const legacy = withoutAnnotations(withTail(l, 51, legacyStargzFooter(tocOffset)));
      const probe = await probeLayer(legacy.desc, memoryBlob(legacy));
      assert.deepEqual([probe.format, probe.lazy, probe.codec], ['estargz', false, 'gzip']);
      assert.match(probe.formatVersion, /legacy stargz/);
      assert.match(probe.reason!, /no chunk digests/);
      await assert.rejects(readLayerToc(legacy.desc, memoryBlob(legacy), { allowUnverified: true }), /legacy stargz TOC carries no chunk digests/);
    });

    it('external-TOC eStargz (46-byte footer) is detected and reported as not lazily mountable', async () => {
      const l = esgz();
      const ext = withTail(l, 51, externalTocFooter());
      const probe = await probeLayer(ext.desc, memoryBlob(ext));
      assert.equal(probe.lazy, false);
      assert.match(probe.formatVersion, /external TOC/);
      assert.match(probe.reason!, /separate TOC image/);
      const bare = withoutAnnotations(ext);
      await assert.rejects(readLayerToc(bare.desc, memoryBlob(bare), { allowUnverified: true }), /external TOC .*not lazily mountable/);
    });

    it('a media type that lies (gzip eStargz declared tar+zstd) is read by its bytes', async () => {
      const l = esgz();
      l.desc.mediaType = 'application/vnd.oci.image.layer.v1.tar+zstd';
      const probe = await probeLayer(l.desc, memoryBlob(l));
      assert.deepEqual([probe.format, probe.codec], ['estargz', 'gzip']);
      const toc = await readLayerToc(l.desc, memoryBlob(l));
      assert.deepEqual([toc.format, toc.compression], ['estargz', 'gzip']);
      const motd = toc.entries.find((e) => e.path === 'etc/motd')!;
      const c = motd.chunks[0]!;
      const data = await extractChunk(toc.compression, c, l.bytes.subarray(c.compressedOffset, c.compressedEnd), 'etc/motd');
      assert.equal(sha256(data), motd.digest);
      if (set.motd !== undefined) assert.equal(data.toString(), set.motd);
    });

    for (const [name, base, requests] of [['zstd:chunked (position annotated)', zcNew, 1], ['eStargz', esgz, 1]] as const) {
      it(`${name}: opens with ${requests} request, then from the TOC store with none; a corrupt stored TOC is refetched`, async () => {
        const l = base();
        const store = new MapStore();
        const first = new ReadCounter();
        const toc = await readLayerToc(l.desc, first.wrap(memoryBlob(l)), { tocStore: store });
        assert.equal(first.requests, requests);
        assert.ok(first.bytes < l.bytes.length / 4, `read ${first.bytes} of ${l.bytes.length} bytes`);
        assert.equal(store.map.size, 1);
        assert.ok(store.map.has(toc.tocDigest!));
        const second = new ReadCounter();
        assert.deepEqual(await readLayerToc(l.desc, second.wrap(memoryBlob(l)), { tocStore: store }), toc);
        assert.equal(second.requests, 0);
        const [key, stored] = [...store.map][0]!;
        stored[stored.length - 3] ^= 1;
        const third = new ReadCounter();
        assert.deepEqual(await readLayerToc(l.desc, third.wrap(memoryBlob(l)), { tocStore: store }), toc);
        assert.equal(third.requests, requests);
        assert.notEqual(store.map.get(key)![stored.length - 3], stored[stored.length - 3], 'the good TOC was stored again');
        const good = store.map.get(key)!.toString('latin1');
        store.map.set(key, Buffer.from(good.replace(`"dataEnd":${toc.tocOffset - (toc.format === 'estargz' ? 0 : 8)}`, '"dataEnd":99999999'), 'latin1'));
        assert.notEqual(store.map.get(key)!.toString('latin1'), good);
        const fourth = new ReadCounter();
        assert.deepEqual(await readLayerToc(l.desc, fourth.wrap(memoryBlob(l)), { tocStore: store }), toc);
        assert.equal(fourth.requests, requests, 'a stored header that disagrees with the descriptor is ignored (it is not covered by the digest)');
      });
    }

    it('with the disk TOC store, a second process-independent open reads nothing from the blob', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'tocfs-tocstore-'));
      try {
        for (const l of [zc(), zcNew(), ...(szc ? [szc()] : []), esgz()]) {
          const first = new ReadCounter();
          const toc = await readLayerToc(l.desc, first.wrap(memoryBlob(l)), { tocStore: new DiskTocStore(dir) });
          assert.ok(first.requests > 0);
          const second = new ReadCounter();
          assert.deepEqual(await readLayerToc(l.desc, second.wrap(memoryBlob(l)), { tocStore: new DiskTocStore(dir) }), toc);
          assert.equal(second.requests, 0, l.desc.digest);
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('normalises names, link targets, modes, times with zone offsets and unknown times', async () => {
      const l = await repack(zc(), (d) => {
        d.entries.push(
          { type: 'dir', name: './n/', mode: 0o40755, modtime: '2023-11-15T07:13:20.5+09:00', accesstime: '0001-01-01T00:00:00Z', changetime: '1969-12-31T23:59:59.25-00:30' },
          { type: 'reg', name: 'n//./f', mode: 0o104755, uid: 1000, gid: 1000, modtime: '2023-11-14T22:13:20.123456789Z' },
          { type: 'hardlink', name: 'n/a/../h', linkName: './n/f' },
          { type: 'symlink', name: 'n/s', linkName: '../../etc/../x' },
          { type: 'block', name: 'n/sda', devMajor: 8 },
          { type: 'fifo', name: 'deep/er/fifo' },
        );
      });
      const toc = await readLayerToc(l.desc, memoryBlob(l));
      const get = (p: string) => toc.entries.find((e) => e.path === p)!;
      assert.deepEqual([get('n').type, get('n').mode, get('n').mtime, get('n').atime, get('n').ctime], ['dir', 0o755, { sec: 1700000000, nsec: 500000000 }, undefined, { sec: 1800 - 1, nsec: 250000000 }]);
      assert.deepEqual([get('n/f').mode, get('n/f').uid, get('n/f').mtime, get('n/f').digest, get('n/f').chunks], [0o4755, 1000, { sec: 1700000000, nsec: 123456789 }, sha256(Buffer.alloc(0)), []]);
      assert.deepEqual([get('n/h').type, get('n/h').linkName], ['hardlink', 'n/f']);
      assert.equal(get('n/s').linkName, '../../etc/../x', 'symlink targets stay verbatim');
      assert.deepEqual([get('n/sda').devMajor, get('n/sda').devMinor], [8, 0]);
      assert.equal(get('deep/er/fifo').type, 'fifo');
      assert.ok(!toc.entries.some((e) => e.path === 'deep' || e.path === 'deep/er' || e.path === 'n/a'), 'parents are not synthesised here');
    });

    it('a directory stated twice is merged (later metadata wins); the root keeps path ""', async () => {
      const l = await repack(zc(), (d) => {
        d.entries.unshift({ type: 'dir', name: './', mode: 0o755 });
        d.entries.push({ type: 'dir', name: 'etc', mode: 0o700, modtime: '2023-11-14T22:13:20Z' });
      });
      const toc = await readLayerToc(l.desc, memoryBlob(l));
      assert.equal(toc.entries[0]!.path, '');
      const etc = toc.entries.filter((e) => e.path === 'etc');
      assert.equal(etc.length, 1);
      assert.equal(etc[0]!.mode, 0o700);
    });

    it('eStargz innerOffset: a payload that shares a member is cut out of it and verified', async () => {
      const base = esgz();
      const doc = JSON.parse(await tocText(base));
      const host = doc.entries.find((e: { name: string }) => e.name === set.smallFile);
      const next = doc.entries.filter((e: { offset?: number }) => (e.offset ?? 0) > host.offset).map((e: { offset: number }) => e.offset).sort((a: number, b: number) => a - b)[0];
      const member = gunzipSync(base.bytes.subarray(host.offset, next));
      const inner = 512; // the file's bytes + padding, then the next tar header
      assert.ok(member.length >= inner + 512, `the member holds more than the file (${member.length} bytes)`);
      const shared = member.subarray(inner, inner + 512);
      const l = await repack(base, (d) => void d.entries.push({ type: 'reg', name: 'etc/shared', size: 512, offset: host.offset, innerOffset: inner, digest: sha256(shared), chunkDigest: sha256(shared) }));
      const toc = await readLayerToc(l.desc, memoryBlob(l));
      const c = toc.entries.find((e) => e.path === 'etc/shared')!.chunks[0]!;
      assert.deepEqual([c.compressedOffset, c.compressedEnd, c.innerOffset], [host.offset, next, inner]);
      assert.deepEqual(await extractChunk('gzip', c, l.bytes.subarray(c.compressedOffset, c.compressedEnd), 'etc/shared'), shared);
    });

    it('eStargz prefetch landmark: prefetchEnd is its offset, both landmarks are hidden', async () => {
      const l = set.prefetch();
      const landmark = JSON.parse(await tocText(l)).entries.find((e: { name: string }) => e.name === '.prefetch.landmark');
      assert.ok(landmark, 'the layer has a .prefetch.landmark');
      const toc = await readLayerToc(l.desc, memoryBlob(l));
      assert.equal(toc.prefetchEnd, landmark.offset);
      assert.equal(toc.noPrefetch, undefined);
      assert.ok(!toc.entries.some((e) => e.path.includes('landmark')));
      if (set.prioritized) assert.ok(toc.entries.find((e) => e.path === set.prioritized)!.chunks[0]!.compressedEnd <= toc.prefetchEnd!, 'the prioritized file lies before the landmark');
      const np = await readLayerToc(esgz().desc, memoryBlob(esgz()));
      assert.deepEqual([np.noPrefetch, np.prefetchEnd], [true, undefined]);
    });
  });
}
