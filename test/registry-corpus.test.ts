/**
 * Every corpus image, and images tocfs builds in every format (never skipped), served by a real
 * docker-registry resolve and read exactly as the same image read from its OCI layout. One suite
 * body runs on each set of images; the corpus set skips without the corpus.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sha256 } from '../src/digest.js';
import { openImageSource, type SourceOptions } from '../src/image/open.js';
import type { ImageSource, Platform, ResolvedImage } from '../src/source/types.js';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { buildMultiArchImage, type BuiltMultiArchImage } from './helpers/multiarch.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedRegistryOptions } from './helpers/registry-env.js';
import { builtPlatformWant, corpusPlatformWant, type PlatformWant } from './helpers/test-images.js';

const ARM64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };

/** Deterministic pseudo-random numbers (mulberry32) so a failure can be reproduced. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function comparable(r: ResolvedImage): Omit<ResolvedImage, 'reference'> {
  const { reference: _reference, ...rest } = r;
  return rest;
}

// Images tocfs builds, every format and a multi-platform index: never skipped.
const BUILT_IMAGES = ['built-zstd-chunked', 'built-estargz', 'built-gzip', 'built-zstd', 'built-multiarch'];
const builtDirs = new Map<string, string>();
const single = new Map<string, BuiltImage>();
const multi = new Map<string, BuiltMultiArchImage>();
const dirOf = (image: string): string => builtDirs.get(image)!;
/** The manifest of `arch` (of a single-platform image: its one manifest). */
const manifestOf = (image: string, arch: string): string => single.get(image)?.manifestDigest ?? multi.get(image)!.images.find((i) => i.platform.architecture === arch)!.manifestDigest;

async function buildAll(tmp: string): Promise<void> {
  const layers = (seed: string): FileSpec[][] => [
    [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: `${seed}\n` }, { path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent(`regbuilt-${seed}`, 600_000) }],
    [{ path: 'etc', type: 'dir' }, { path: 'etc/.wh.motd', content: '' }, { path: 'etc/other', content: seededContent(`regbuilt-${seed}-2`, 20_000) }],
  ];
  for (const format of ['zstd:chunked', 'estargz', 'gzip', 'zstd'] as const) {
    const name = `built-${format.replace(':', '-')}`;
    // One manifest, no index: it is what any --platform resolves to.
    const img = await buildImage(join(tmp, name), { format, layers: layers(format) });
    builtDirs.set(name, img.dir);
    single.set(name, img);
  }
  const m = await buildMultiArchImage(join(tmp, 'built-multiarch'), 'zstd:chunked', [
    { platform: AMD64, layers: layers('amd64') },
    { platform: ARM64, layers: layers('arm64') },
  ]);
  builtDirs.set('built-multiarch', m.dir);
  multi.set('built-multiarch', m);
}

/** A set of images the suite serves, with what each should resolve to and which plays each role. */
interface ImageSet {
  label: string;
  skip: string | false;
  tmpPrefix: string;
  /** Makes the images (the corpus is already there). */
  prepare(tmp: string): Promise<void>;
  names(): string[];
  dir(name: string): string;
  /** The manifest of `arch` (of a single-platform image: its one manifest). */
  manifestOf(name: string, arch: string): string;
  /** A multi-platform image's `arch` image, and its index digest. */
  platformWant(name: string, arch: string): PlatformWant;
  indexDigest(name: string): string;
  /** A zstd:chunked image, a gzip one and a zstd one. */
  zstdChunked: string;
  gzip: string;
  zstd: string;
}

const CORPUS_SET: ImageSet = {
  label: 'the corpus',
  skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
  tmpPrefix: 'tocfs-regcorpus-',
  prepare: async () => {},
  names: () => corpusImages(),
  dir: (name) => join(CORPUS_DIR, name),
  manifestOf: (name, arch) => loadExpected(name).images.find((i) => i.platform.architecture === arch)!.manifest_digest,
  platformWant: corpusPlatformWant,
  indexDigest: (name) => (loadExpected(name) as unknown as { top_digest: string }).top_digest,
  zstdChunked: 'zstdchunked-skopeo118-basic',
  gzip: 'gzip-plain-basic',
  zstd: 'zstd-plain-basic',
};

const BUILT_SET: ImageSet = {
  label: 'images tocfs builds',
  skip: false,
  tmpPrefix: 'tocfs-regbuilt-',
  prepare: buildAll,
  names: () => BUILT_IMAGES,
  dir: dirOf,
  manifestOf,
  platformWant: (name, arch) => builtPlatformWant(multi.get(name)!, arch),
  indexDigest: (name) => multi.get(name)!.indexDigest,
  zstdChunked: 'built-zstd-chunked',
  gzip: 'built-gzip',
  zstd: 'built-zstd',
};

for (const set of [BUILT_SET, CORPUS_SET]) {
  describe(`registry source over ${set.label}`, { skip: set.skip }, () => {
    let reg: TestRegistry;
    let tmp: string;
    let opts: SourceOptions;
    const sources: ImageSource[] = [];
    const open = async (ref: string, extra: SourceOptions = {}): Promise<ImageSource> => {
      const s = await openImageSource(ref, { ...opts, ...extra });
      sources.push(s);
      return s;
    };

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), set.tmpPrefix));
      opts = { tlsVerify: false, registry: await isolatedRegistryOptions(tmp) };
      await set.prepare(tmp);
      reg = await startRegistry();
      for (const image of set.names()) await reg.load(set.dir(image), image);
    });
    after(async () => {
      await Promise.all(sources.map((s) => s.close()));
      await reg?.stop();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    });

    for (const image of set.names()) {
      test(`${image}: resolve and byte ranges equal the oci: layout`, async () => {
        const local = await open(`oci:${set.dir(image)}`);
        const remote = await open(`docker://${reg.host}/${image}:latest`);
        const want = await local.resolve({ platform: AMD64 });
        const got = await remote.resolve({ platform: AMD64 });
        assert.equal(got.reference, `docker://${reg.host}/${image}:latest`);
        assert.deepEqual(comparable(got), comparable(want));
        assert.equal(got.manifestDigest, set.manifestOf(image, 'amd64'));

        const rand = prng(image.length * 7919);
        for (const layer of got.layers) {
          const a = local.blob(layer);
          const b = remote.blob(layer);
          const ranges: Array<[number, number]> = [
            [0, Math.min(layer.size, 512)],
            [Math.max(0, layer.size - 300), Math.min(layer.size, 300)],
            [0, layer.size],
          ];
          for (let i = 0; i < 6; i++) {
            const off = Math.floor(rand() * layer.size);
            ranges.push([off, Math.floor(rand() * Math.min(layer.size - off, 256 * 1024))]);
          }
          for (const [off, len] of ranges) {
            const bytes = await b.read(off, len);
            assert.equal(bytes.length, len);
            assert.ok(bytes.equals(await a.read(off, len)), `${layer.digest} [${off}, +${len})`);
          }
          const h = createHash('sha256');
          for await (const chunk of await b.stream()) h.update(chunk as Buffer);
          assert.equal('sha256:' + h.digest('hex'), layer.digest, 'stream() of the whole layer');
        }
      });
    }

    for (const image of set.names().filter((i) => i.includes('multiarch'))) {
      test(`${image}: --platform linux/arm64/v8, the host default, and pinned digests`, async () => {
        const remote = await open(`docker://${reg.host}/${image}:latest`, { platform: ARM64 });
        const arm = await remote.resolve();
        const armWant = set.platformWant(image, 'arm64');
        assert.equal(arm.manifestDigest, armWant.manifestDigest);
        assert.equal(arm.configDigest, armWant.configDigest);
        assert.deepEqual(arm.layers.map((l) => l.digest), armWant.layers);
        assert.deepEqual(arm.platform, ARM64);
        const local = await open(`oci:${set.dir(image)}`);
        assert.deepEqual(comparable(arm), comparable(await local.resolve({ platform: ARM64 })));
        // The source's own --platform default, as the registry source honours it.
        const localArm = await open(`oci:${set.dir(image)}`, { platform: ARM64 });
        assert.deepEqual(comparable(await localArm.resolve()), comparable(arm));
        // A platform asked for at resolve wins over the source's default, in both.
        const amdWant = set.platformWant(image, 'amd64').manifestDigest;
        assert.equal((await localArm.resolve({ platform: AMD64 })).manifestDigest, amdWant);
        assert.equal((await remote.resolve({ platform: AMD64 })).manifestDigest, amdWant);

        const def = await (await open(`docker://${reg.host}/${image}`)).resolve();
        const hostArch = { x64: 'amd64', arm64: 'arm64' }[process.arch as 'x64' | 'arm64'];
        assert.equal(def.manifestDigest, set.platformWant(image, hostArch!).manifestDigest);
        assert.equal(def.indexDigest, set.indexDigest(image));

        // The index pinned by digest gives the same image; so does the platform manifest pinned directly.
        const byIndex = await (await open(`docker://${reg.host}/${image}@${def.indexDigest}`)).resolve();
        assert.deepEqual(comparable(byIndex), comparable(def));
        const byManifest = await (await open(`docker://${reg.host}/${image}@${arm.manifestDigest}`)).resolve();
        assert.equal(byManifest.manifestDigest, arm.manifestDigest);
        assert.equal(byManifest.indexDigest, undefined);
        assert.equal(byManifest.configDigest, arm.configDigest);
        // tag and digest together: the digest decides.
        const both = await (await open(`docker://${reg.host}/${image}:latest@${arm.manifestDigest}`)).resolve();
        assert.equal(both.manifestDigest, arm.manifestDigest);
      });
    }

    test('many reads in flight share at most 16 keep-alive connections', async () => {
      const image = set.zstdChunked;
      const remote = await open(`docker://${reg.host}/${image}:latest`);
      const layer = (await remote.resolve({ platform: AMD64 })).layers[0]!;
      const local = await open(`oci:${set.dir(image)}`);
      const logged = reg.log.length;
      const offsets = Array.from({ length: 96 }, (_, i) => Math.floor((layer.size - 4096) * (i / 96)));
      const got = await Promise.all(offsets.map((o) => remote.blob(layer).read(o, 4096)));
      for (const [i, o] of offsets.entries()) assert.ok(got[i]!.equals(await local.blob(layer).read(o, 4096)));
      // The registry's log names the client address and port of every request.
      for (let i = 0; i < 100 && reg.log.slice(logged).filter((l) => l.includes('http.response.status=206')).length < 96; i++) await new Promise((r) => setTimeout(r, 50));
      const ports = new Set(reg.log.slice(logged).flatMap((l) => /http.response.status=206/.test(l) ? [/http.request.remoteaddr="([^"]+)"/.exec(l)?.[1]] : []));
      assert.ok(ports.size >= 2 && ports.size <= 16, `${ports.size} connections`);
    });

    test('a tag and the same image pinned by digest resolve alike', async () => {
      const image = set.zstdChunked;
      const byTag = await (await open(`docker://${reg.host}/${image}:latest`)).resolve();
      const byDigest = await (await open(`docker://${reg.host}/${image}@${byTag.manifestDigest}`)).resolve();
      assert.deepEqual(comparable(byDigest), comparable(byTag));
      assert.equal(byTag.manifestDigest, sha256(byTag.manifestBytes));
    });

    test('reads outside a blob are refused alike by both sources', async () => {
      const image = set.gzip;
      const layer = (await (await open(`oci:${set.dir(image)}`)).resolve({ platform: AMD64 })).layers[0]!;
      for (const src of [await open(`oci:${set.dir(image)}`), await open(`docker://${reg.host}/${image}:latest`)]) {
        const blob = src.blob(layer);
        for (const [off, len] of [[layer.size - 10, 20], [-1, 5], [0.5, 2]] as const)
          await assert.rejects(blob.read(off, len), (e: Error) => {
            assert.equal(e.message, `read [${off}, ${off + len}) is outside blob ${layer.digest} of ${layer.size} bytes`);
            return true;
          });
        assert.equal((await blob.read(layer.size - 10, 10)).length, 10);
      }
    });

    test('a pinned digest the registry does not have: a clear error', async () => {
      const image = set.zstdChunked;
      const missing = 'sha256:' + '0'.repeat(64);
      await assert.rejects((await open(`docker://${reg.host}/${image}@${missing}`)).resolve(), (e: Error) => {
        assert.match(e.message, new RegExp(`manifest ${reg.host}/${image}:${missing}: not found on ${reg.host} \\(404 MANIFEST_UNKNOWN`));
        return true;
      });
    });

    test('a registry that answers a pinned digest with other bytes is caught', async () => {
      // Serve image A's manifest bytes under image B's manifest digest, in a repository of its own.
      const a = set.manifestOf(set.gzip, 'amd64');
      const b = set.manifestOf(set.zstd, 'amd64');
      await reg.load(set.dir(set.gzip), 'liar');
      const v2 = join(reg.root, 'docker', 'registry', 'v2');
      const hb = b.split(':')[1]!;
      const rev = join(v2, 'repositories', 'liar', '_manifests', 'revisions', 'sha256', hb);
      await mkdir(rev, { recursive: true });
      await writeFile(join(rev, 'link'), b);
      await mkdir(join(v2, 'blobs', 'sha256', hb.slice(0, 2), hb), { recursive: true });
      await copyFile(join(v2, 'blobs', 'sha256', a.split(':')[1]!.slice(0, 2), a.split(':')[1]!, 'data'), join(v2, 'blobs', 'sha256', hb.slice(0, 2), hb, 'data'));
      await assert.rejects((await open(`docker://${reg.host}/liar@${b}`)).resolve(), (e: Error) => {
        assert.equal(e.name, 'DigestMismatchError');
        assert.match(e.message, new RegExp(`manifest from ${reg.host}: digest mismatch: expected ${b}, got ${a}`));
        return true;
      });
    });

    test('Docker schema2 manifests and manifest lists', async () => {
      // The same blobs as an OCI image, described with Docker's media types.
      const src = set.dir(set.gzip);
      const layout = join(tmp, 'docker-schema2');
      await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
      for (const f of await readdir(join(src, 'blobs', 'sha256'))) await copyFile(join(src, 'blobs', 'sha256', f), join(layout, 'blobs', 'sha256', f));
      const oci = JSON.parse(await readFile(join(src, 'blobs', 'sha256', set.manifestOf(set.gzip, 'amd64').split(':')[1]!), 'utf8'));
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
          config: { ...oci.config, mediaType: 'application/vnd.docker.container.image.v1+json' },
          layers: oci.layers.map((l: { digest: string; size: number }) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: l.digest, size: l.size })),
        }),
      );
      const md = sha256(manifest);
      const list = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
          manifests: [{ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: md, size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } }],
        }),
      );
      const ld = sha256(list);
      await writeFile(join(layout, 'blobs', 'sha256', md.split(':')[1]!), manifest);
      await writeFile(join(layout, 'blobs', 'sha256', ld.split(':')[1]!), list);
      await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      await writeFile(
        join(layout, 'index.json'),
        JSON.stringify({
          schemaVersion: 2,
          manifests: [
            { mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', digest: ld, size: list.length, annotations: { 'org.opencontainers.image.ref.name': 'list' } },
            { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'single' } },
          ],
        }),
      );
      await reg.load(layout, 'docker-schema2');
      const single = await (await open(`docker://${reg.host}/docker-schema2:single`)).resolve({ platform: AMD64 });
      assert.equal(single.manifestMediaType, 'application/vnd.docker.distribution.manifest.v2+json');
      assert.equal(single.manifestDigest, md);
      assert.deepEqual(single.layers.map((l) => l.mediaType), oci.layers.map(() => 'application/vnd.docker.image.rootfs.diff.tar.gzip'));
      const viaList = await (await open(`docker://${reg.host}/docker-schema2:list`)).resolve({ platform: AMD64 });
      assert.equal(viaList.indexDigest, ld);
      assert.equal(viaList.manifestDigest, md);
      assert.equal(viaList.configDigest, oci.config.digest);
    });
  });
}
