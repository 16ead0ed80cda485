/**
 * The index of a TOC-less (plain gzip/zstd) layer is kept in the TOC store under the blob
 * digest: a second `tocfs ls`/`cat` of the same image transfers no blob bytes, and a stored
 * index that does not check out is not used. On plain layers tocfs builds (never skipped)
 * and the corpus's.
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

const skip = HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`;
const PLAIN_IMAGES = ['gzip-plain-basic', 'gzip-plain-gnusparse', 'gzip-plain-layers', 'zstd-plain-basic'];

async function indexed(image: string, digest: string): Promise<{ desc: Descriptor; toc: Awaited<ReturnType<typeof indexPlainLayer>> }> {
  const layer = loadExpected(image).layers[digest]!;
  const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size };
  const src = new OciLayoutSource({ transport: 'oci', dir: join(CORPUS_DIR, image) });
  return { desc, toc: await indexPlainLayer(desc, src.blob(desc), async () => undefined) };
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

describe('stored index of plain layers', { skip }, () => {
  for (const image of PLAIN_IMAGES) {
    it(`${image}: what is stored reads back as the index built from the blob`, async () => {
      for (const digest of Object.keys(loadExpected(image).layers)) {
        const { desc, toc } = await indexed(image, digest);
        assert.deepEqual(decodePlainIndex(desc, encodePlainIndex(desc, toc)), toc);
      }
    });
  }

  it('refuses an index of another blob, a damaged one, and one whose fields do not check out', async () => {
    const image = 'gzip-plain-gnusparse';
    const digest = Object.keys(loadExpected(image).layers)[0]!;
    const { desc, toc } = await indexed(image, digest);
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
    const IMAGE = 'gzip-plain-layers';
    let tmp: string;
    let reg: TestRegistry;
    let ref: string;
    let cacheArgs: string[];
    const expected = loadExpected(IMAGE).images[0]!;
    const FILE = expected.merged.find((e) => e.path === 'data/shared.txt')!;
    const layerBytes = Object.values(loadExpected(IMAGE).layers).reduce((a, l) => a + l.size, 0);
    const layerDigests = Object.keys(loadExpected(IMAGE).layers);

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
      await reg.load(join(CORPUS_DIR, IMAGE));
      ref = `docker://${reg.host}/${IMAGE}`;
      cacheArgs = ['--cache-dir', join(tmp, 'cache'), '--tls-verify=false', '--platform', 'linux/amd64'];
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
      assert.equal(names.length, Object.keys(loadExpected(IMAGE).layers).length, 'one stored index per layer');
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

// The same on plain layers tocfs builds (never skipped).
const PLAIN_BUILT = ['built-gzip', 'built-zstd'];
const SHARED = Buffer.from('shared by every layer\n'.repeat(50));
const PLAIN_LAYERS: FileSpec[][] = [
  [{ path: 'data', type: 'dir' }, { path: 'data/shared.txt', content: SHARED }, { path: 'data/mixed.img', content: concatContent(seededContent('plainstore-a', 100_000), zeroContent(3 << 20), seededContent('plainstore-b', 1000)) }],
  [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello\n' }, { path: 'etc/link', type: 'symlink', linkName: 'motd' }],
  [{ path: 'data', type: 'dir' }, { path: 'data/more.bin', content: seededContent('plainstore-more', 300_000) }],
];
const builtDirs = new Map<string, string>();
async function layersOf(image: string): Promise<Descriptor[]> {
  return (await new OciLayoutSource({ transport: 'oci', dir: builtDirs.get(image)! }).resolve()).layers;
}
async function indexedBuilt(image: string, desc: Descriptor): Promise<{ toc: Awaited<ReturnType<typeof indexPlainLayer>> }> {
  const src = new OciLayoutSource({ transport: 'oci', dir: builtDirs.get(image)! });
  return { toc: await indexPlainLayer(desc, src.blob(desc), async () => undefined) };
}

describe('stored index of plain layers tocfs builds', () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-plainstore-built-'));
    for (const image of PLAIN_BUILT) builtDirs.set(image, (await buildImage(join(work, image), { format: image.startsWith('built-zstd') ? 'zstd' : 'gzip', layers: PLAIN_LAYERS })).dir);
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const image of PLAIN_BUILT) {
    it(`${image}: what is stored reads back as the index built from the blob`, async () => {
      for (const desc of await layersOf(image)) {
        const { toc } = await indexedBuilt(image, desc);
        assert.deepEqual(decodePlainIndex(desc, encodePlainIndex(desc, toc)), toc);
      }
    });
  }

  it('refuses an index of another blob, a damaged one, and one whose fields do not check out', async () => {
    const desc = (await layersOf('built-gzip'))[0]!;
    const { toc } = await indexedBuilt('built-gzip', desc);
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
    const IMAGE = 'built-gzip';
    let tmp: string;
    let reg: TestRegistry;
    let ref: string;
    let cacheArgs: string[];
    const FILE = { path: 'data/shared.txt', sha256: createHash('sha256').update(SHARED).digest('hex') };
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
      await reg.load(builtDirs.get(IMAGE)!, IMAGE);
      const layers = await layersOf(IMAGE);
      layerBytes = layers.reduce((a, l) => a + l.size, 0);
      layerDigests = layers.map((l) => l.digest);
      ref = `docker://${reg.host}/${IMAGE}`;
      cacheArgs = ['--cache-dir', join(tmp, 'cache'), '--tls-verify=false'];
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
