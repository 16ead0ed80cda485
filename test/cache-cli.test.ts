/**
 * `tocfs cache stats|gc|verify|clear` on a cache filled by reading an image tocfs builds, and
 * one filled from a real corpus image (skipped without the corpus): one suite body for both.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ChunkCache } from '../src/cache/chunk-cache.js';
import { DiskTocStore } from '../src/cache/toc-store.js';
import { LayerReader } from '../src/fetch/layer-reader.js';
import { readLayerToc } from '../src/formats/index.js';
import { openImageSource } from '../src/image/open.js';
import { runCli } from './helpers/cli.js';
import { seededContent } from './helpers/images.js';
import { builtTestImage, corpusTestImage } from './helpers/test-images.js';

const ENV = { TOCFS_CONFIG: '', XDG_CONFIG_HOME: '/nonexistent' };

async function cli(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const r = await runCli(['cache', ...args], { env: ENV });
  return { code: r.code, out: r.stdout.toString(), err: String(r.stderr) };
}

/** Reads every file of every layer of `image` through a LayerReader into the cache at `dir`; returns what it holds. */
async function fillCache(image: string, dir: string): Promise<{ files: number; bytes: number }> {
  const src = await openImageSource(image);
  try {
    const img = await src.resolve();
    const cache = await ChunkCache.open({ dir });
    for (const desc of img.layers) {
      const blob = src.blob(desc);
      const toc = await readLayerToc(desc, blob, { tocStore: new DiskTocStore(dir) });
      const reader = new LayerReader({ layerDigest: desc.digest, toc, blob, cache });
      for (const e of toc.entries) if (e.type === 'reg') await reader.readAt(e, 0, e.size);
    }
    await cache.flush();
    const s = await cache.stats();
    return { files: s.files, bytes: s.bytes };
  } finally {
    await src.close();
  }
}

const IMAGES = [
  builtTestImage('cache-cli', [
    [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'hello\n' }, { path: 'usr', type: 'dir' }, { path: 'usr/lib.so', content: seededContent('cache-cli-lib', 900_000) }],
    [{ path: 'data', type: 'dir' }, { path: 'data/blob.bin', content: seededContent('cache-cli-blob', 600_000) }],
  ]),
  corpusTestImage('zstdchunked-podman54-app-v1'),
];

for (const testImage of IMAGES) {
  describe(`tocfs cache on a cache filled from the ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let dir: string;
    let filled = { files: 0, bytes: 0 };

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-cache-cli-'));
      dir = join(tmp, 'cache');
      filled = await fillCache(`oci:${await testImage.dir()}`, dir);
      assert.ok(filled.files > 4, `the reads cached ${filled.files} chunks`);
    });
    after(async () => {
      if (tmp) await rm(tmp, { recursive: true, force: true });
    });

    test('stats, human and --json', async () => {
      const json = await cli('stats', '--cache-dir', dir, '--json');
      assert.equal(json.code, 0, json.err);
      const s = JSON.parse(json.out);
      assert.deepEqual(s.chunks, filled);
      assert.equal(s.tocs.files, 2);
      assert.equal(s.dir, dir);
      const human = await cli('stats', '--cache-dir', dir);
      assert.match(human.out, new RegExp(`chunks: ${filled.files} files`));
      assert.match(human.out, /TOCs: +2 files/);
    });

    test('stats of a directory that does not exist says so and creates nothing', async () => {
      const missing = join(tmp, 'nope');
      const r = await cli('stats', '--cache-dir', missing);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /does not exist yet/);
      await assert.rejects(readdir(missing), /ENOENT/);
    });

    test('verify finds a corrupted chunk, removes it and exits 1; then exits 0', async () => {
      const first = (await readdir(join(dir, 'chunks', 'sha256')))[0]!;
      const name = (await readdir(join(dir, 'chunks', 'sha256', first)))[0]!;
      await writeFile(join(dir, 'chunks', 'sha256', first, name), 'not the chunk');
      const r = await cli('verify', '--cache-dir', dir, '--json');
      assert.equal(r.code, 1, r.err);
      const res = JSON.parse(r.out);
      assert.deepEqual(res.bad, [`sha256:${name}`]);
      assert.equal(res.checked, filled.files);
      const again = await cli('verify', '--cache-dir', dir);
      assert.equal(again.code, 0, again.err);
      assert.match(again.out, new RegExp(`checked ${filled.files - 1} chunks .*: all match`));
    });

    test('gc --max-size shrinks to the budget; a bad size is a usage error', async () => {
      const budget = Math.floor(filled.bytes / 2);
      const r = await cli('gc', '--cache-dir', dir, '--max-size', String(budget), '--json');
      assert.equal(r.code, 0, r.err);
      const res = JSON.parse(r.out);
      assert.ok(res.removedFiles > 0);
      assert.ok(res.bytes <= budget, `${res.bytes} > ${budget}`);
      // Not on a terminal: progress comes as log lines on stderr, ending with "done".
      assert.match(r.err, /"msg":"cache gc: done"/);
      const human = await cli('gc', '--cache-dir', dir, '--max-size', '1k');
      assert.match(human.out, /^removed \d+ chunks .* \(budget 1\.00 KiB\)$/m);
      const bad = await cli('gc', '--cache-dir', dir, '--max-size', 'lots');
      assert.equal(bad.code, 1);
      assert.match(bad.err, /--max-size: not a size: "lots"/);
    });

    test('clear removes every chunk and TOC', async () => {
      const r = await cli('clear', '--cache-dir', dir);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /and 2 TOCs from/);
      const s = JSON.parse((await cli('stats', '--cache-dir', dir, '--json')).out);
      assert.deepEqual(s.chunks, { files: 0, bytes: 0 });
      assert.deepEqual(s.tocs, { files: 0, bytes: 0 });
    });
  });
}
