/**
 * The index of a TOC-less (plain gzip/zstd) layer is kept in the TOC store under the blob
 * digest: a second `tocfs ls`/`cat` of the same image transfers no blob bytes, and a stored
 * index that does not check out is not used. One suite body runs on plain layers tocfs builds
 * (never skipped) and on the corpus's (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256 } from '../src/digest.js';
import { decodePlainIndex, encodePlainIndex } from '../src/formats/plain-index.js';
import { indexPlainLayer } from '../src/formats/plain.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import type { Descriptor } from '../src/source/types.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, concatContent, seededContent, zeroContent, type FileSpec } from './helpers/images.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';
import { registryLogSettled } from './helpers/store.js';

const SHARED = Buffer.from('shared by every layer\n'.repeat(50));
const PLAIN_LAYERS: FileSpec[][] = [
  [{ path: 'data', type: 'dir' }, { path: 'data/shared.txt', content: SHARED }, { path: 'data/mixed.img', content: concatContent(seededContent('plainstore-a', 100_000), zeroContent(3 << 20), seededContent('plainstore-b', 1000)) }],
  [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello\n' }, { path: 'etc/link', type: 'symlink', linkName: 'motd' }],
  [{ path: 'data', type: 'dir' }, { path: 'data/more.bin', content: seededContent('plainstore-more', 300_000) }],
];

/** The plain images a run of the suite reads, and what it knows of them. */
interface PlainSet {
  label: string;
  skip: string | false;
  prepare(): Promise<void>;
  cleanup(): Promise<void>;
  images: string[];
  dir(image: string): string;
  /** The image's layer descriptors. */
  layers(image: string): Promise<Descriptor[]>;
  /** An image whose first layer has a file with data and zero pieces. */
  damageImage: string;
  /** The image served to the CLI, a file of it under /data with its sha256, and the CLI's --platform. */
  cliImage: string;
  cliFile(): { path: string; sha256: string };
  platformArgs: string[];
}

const built = new Map<string, string>();
let builtWork: string | undefined;

const SETS: PlainSet[] = [
  {
    label: 'plain layers tocfs builds',
    skip: false,
    prepare: async () => {
      builtWork = await mkdtemp(join(tmpdir(), 'tocfs-plainstore-built-'));
      for (const image of ['built-gzip', 'built-zstd']) built.set(image, (await buildImage(join(builtWork, image), { format: image.startsWith('built-zstd') ? 'zstd' : 'gzip', layers: PLAIN_LAYERS })).dir);
    },
    cleanup: async () => {
      if (builtWork) await rm(builtWork, { recursive: true, force: true });
    },
    images: ['built-gzip', 'built-zstd'],
    dir: (image) => built.get(image)!,
    layers: async (image) => (await new OciLayoutSource({ transport: 'oci', dir: built.get(image)! }).resolve()).layers,
    damageImage: 'built-gzip',
    cliImage: 'built-gzip',
    cliFile: () => ({ path: 'data/shared.txt', sha256: createHash('sha256').update(SHARED).digest('hex') }),
    platformArgs: [],
  },
  {
    label: 'plain layers of the corpus',
    skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
    prepare: async () => {},
    cleanup: async () => {},
    images: ['gzip-plain-basic', 'gzip-plain-gnusparse', 'gzip-plain-layers', 'zstd-plain-basic'],
    dir: (image) => join(CORPUS_DIR, image),
    layers: async (image) => Object.entries(loadExpected(image).layers).map(([digest, l]) => ({ mediaType: l.mediaType, digest, size: l.size })),
    damageImage: 'gzip-plain-gnusparse',
    cliImage: 'gzip-plain-layers',
    cliFile: () => {
      const f = loadExpected('gzip-plain-layers').images[0]!.merged.find((e) => e.path === 'data/shared.txt')!;
      return { path: f.path, sha256: f.sha256! };
    },
    platformArgs: ['--platform', 'linux/amd64'],
  },
];

async function indexed(set: PlainSet, image: string, desc: Descriptor): Promise<{ toc: Awaited<ReturnType<typeof indexPlainLayer>> }> {
  const src = new OciLayoutSource({ transport: 'oci', dir: set.dir(image) });
  return { toc: await indexPlainLayer(desc, src.blob(desc), async () => undefined) };
}

/** A stored index with its body changed by `edit` and its checksum made to match again. */
function reencoded(stored: Buffer, edit: (body: { entries: Array<Record<string, unknown>> }) => void): Buffer {
  const nl = stored.indexOf(0x0a, stored.indexOf(0x0a) + 1);
  const [magic, metaLine] = stored.subarray(0, nl).toString().split('\n') as [string, string];
  const body = JSON.parse(stored.subarray(nl + 1).toString());
  edit(body);
  const json = Buffer.from(JSON.stringify(body));
  const meta = { ...JSON.parse(metaLine), body: sha256(json) };
  return Buffer.concat([Buffer.from(`${magic}\n${JSON.stringify(meta)}\n`), json]);
}

for (const set of SETS) {
  describe(`stored index of ${set.label}`, { skip: set.skip }, () => {
    before(() => set.prepare());
    after(() => set.cleanup());

    for (const image of set.images) {
      it(`${image}: what is stored reads back as the index built from the blob`, async () => {
        for (const desc of await set.layers(image)) {
          const { toc } = await indexed(set, image, desc);
          assert.deepEqual(decodePlainIndex(desc, encodePlainIndex(desc, toc)), toc);
        }
      });
    }

    it('refuses an index of another blob, a damaged one, and one whose fields do not check out', async () => {
      const desc = (await set.layers(set.damageImage))[0]!;
      const { toc } = await indexed(set, set.damageImage, desc);
      const stored = encodePlainIndex(desc, toc);
      assert.throws(() => decodePlainIndex({ ...desc, digest: sha256(Buffer.from('other')) }, stored), /another blob/);
      assert.throws(() => decodePlainIndex({ ...desc, size: desc.size + 1 }, stored), /another blob/);
      const damaged = Buffer.from(stored);
      damaged[damaged.length - 20] ^= 1;
      assert.throws(() => decodePlainIndex(desc, damaged), /damaged/);
      // Past the checksum (rewritten to match): every field is still checked.
      const withZeros = toc.entries.findIndex((e) => e.chunks.some((c) => !c.zeros));
      assert.ok(withZeros >= 0);
      const cases: Array<[(b: { entries: Array<Record<string, unknown>> }) => void, RegExp]> = [
        [(b) => ((b.entries[withZeros]!.pieces as unknown[][]).find((p) => p[2] === 0)![2] = 1), /marked zeros is not/],
        [(b) => (b.entries[withZeros]!.path = '../escape'), /bad path/],
        [(b) => (b.entries[withZeros]!.mode = 0o170000), /bad mode/],
        [(b) => ((b.entries[withZeros]!.pieces as unknown[][])[0]![0] = 2 * 1024 * 1024), /bad piece/],
        [(b) => (b.entries[withZeros]!.type = 'socket'), /bad type/],
      ];
      for (const [edit, want] of cases) assert.throws(() => decodePlainIndex(desc, reencoded(stored, edit)), want);
      assert.deepEqual(decodePlainIndex(desc, reencoded(stored, () => undefined)), toc, 'the rewriting itself changes nothing');
    });

    describe('through a registry with the CLI', () => {
      const IMAGE = set.cliImage;
      let tmp: string;
      let reg: TestRegistry;
      let ref: string;
      let cacheArgs: string[];
      let FILE: { path: string; sha256: string };
      let layerBytes = 0;
      let layerDigests: string[] = [];

      /** Runs the CLI and returns its output and the blob bytes the registry sent for it. */
      async function measured(args: string[]): Promise<{ stdout: Buffer; stderr: string; blobBytes: number }> {
        await registryLogSettled(reg);
        // Layer blobs only: every run reads the image's config blob to resolve it.
        const served = (): number => layerDigests.reduce((a, d) => a + blobBytesServed(reg.log, d), 0);
        const before = served();
        const r = await runCli([...args.slice(0, 1), ...cacheArgs, ...args.slice(1)]);
        assert.equal(r.code, 0, r.stderr.toString());
        await registryLogSettled(reg);
        return { stdout: r.stdout, stderr: r.stderr.toString(), blobBytes: served() - before };
      }

      before(async () => {
        tmp = await mkdtemp(join(tmpdir(), 'tocfs-plainstore-'));
        reg = await startRegistry();
        await reg.load(set.dir(IMAGE), IMAGE);
        const layers = await set.layers(IMAGE);
        layerBytes = layers.reduce((a, l) => a + l.size, 0);
        layerDigests = layers.map((l) => l.digest);
        FILE = set.cliFile();
        ref = `docker://${reg.host}/${IMAGE}`;
        cacheArgs = ['--cache-dir', join(tmp, 'cache'), '--tls-verify=false', ...set.platformArgs];
      });
      after(async () => {
        await reg?.stop();
        await rm(tmp, { recursive: true, force: true });
      });

      it('a second ls and cat transfer no blob bytes; evicted pieces and a damaged index are fetched again', async (t) => {
        const first = await measured(['ls', '-l', ref, '/data']);
        assert.ok(first.blobBytes >= layerBytes, `first ls fetched ${first.blobBytes} of ${layerBytes} layer bytes`);

        const second = await measured(['ls', '-l', ref, '/data']);
        assert.equal(second.stdout.toString(), first.stdout.toString());
        assert.equal(second.blobBytes, 0, 'the second ls fetched blob bytes');
        const cat = await measured(['cat', ref, `/${FILE.path}`]);
        assert.equal(createHash('sha256').update(cat.stdout).digest('hex'), FILE.sha256);
        assert.equal(cat.blobBytes, 0, 'cat of a file indexed before fetched blob bytes');
        t.diagnostic(`first ls: ${first.blobBytes} blob bytes; second ls and cat: ${second.blobBytes + cat.blobBytes}`);

        // The pieces are gone from the cache (evicted): the index still serves ls, and cat indexes again.
        await rm(join(tmp, 'cache', 'chunks'), { recursive: true, force: true });
        const afterEviction = await measured(['cat', ref, `/${FILE.path}`]);
        assert.equal(createHash('sha256').update(afterEviction.stdout).digest('hex'), FILE.sha256);
        assert.ok(afterEviction.blobBytes > 0, 'evicted pieces came back from the registry');

        // A damaged stored index is not used: the layers are indexed from their blobs again.
        const tocDir = join(tmp, 'cache', 'tocs', 'sha256');
        const names = await readdir(tocDir);
        assert.equal(names.length, layerDigests.length, 'one stored index per layer');
        for (const n of names) {
          const data = await readFile(join(tocDir, n));
          data[data.length - 2] ^= 1;
          await writeFile(join(tocDir, n), data);
        }
        const repaired = await measured(['ls', '-l', ref, '/data']);
        assert.equal(repaired.stdout.toString(), first.stdout.toString());
        assert.ok(repaired.blobBytes >= layerBytes);
        assert.match(repaired.stderr, /stored index of a layer without TOC not used/);
        assert.match(repaired.stderr, /damaged/);
        assert.equal((await measured(['ls', '-l', ref, '/data'])).blobBytes, 0, 'stored again after indexing');
      });
    });
  });
}
