/**
 * The bytes of a layer's footer/TOC probe serve later reads inside them: a small layer's files
 * and its prefetch span are not fetched a second time. Checked on an image tocfs builds, and
 * on a real corpus image.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from '../helpers/corpus.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, seededContent } from '../helpers/images.js';

const IMAGE = 'estargz-ctrremote-prefetch';

test('built eStargz image: cat of a file of a layer the TOC probe read whole makes one request per layer, nothing more', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'tocfs-tail-built-'));
  try {
    const content = 'a small file in a small layer\n';
    const img = await buildImage(join(tmp, 'img'), {
      format: 'estargz',
      layers: [
        [{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('tail-memo-big', 500_000) }],
        [{ path: 'etc', type: 'dir' }, { path: 'etc/small.conf', content }],
      ],
    });
    const small = img.layers[1]!;
    assert.ok(small.size < 16 * 1024 && img.layers[0]!.size > 400_000, `a small layer (${small.size} B) over a big one`);
    const r = await runCli(['cat', '--stats', '--cache-dir', join(tmp, 'cache'), '--layer', small.digest, `oci:${img.dir}`, 'etc/small.conf']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), content);
    const m = /read (\d+) bytes in (\d+) requests/.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.equal(Number(m[2]), img.layers.length, `one tail probe per layer and no request for etc/small.conf: ${r.stderr}`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test('cat of a file of a layer the TOC probe read whole: one request per layer, nothing more', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, async () => {
  const exp = loadExpected(IMAGE);
  const layers = exp.images[0]!.layers;
  const small = layers.find((d) => exp.layers[d]!.size < 16 * 1024)!;
  const file = exp.layers[small]!.entries.find((e) => e.type === 'reg' && e.size > 0 && !e.path.startsWith('.') && !e.path.includes('stargz'))!;
  const cache = await mkdtemp(join(tmpdir(), 'tocfs-tail-'));
  try {
    const r = await runCli(['cat', '--stats', '--cache-dir', cache, '--layer', small, `oci:${join(CORPUS_DIR, IMAGE)}`, file.path]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, file.size);
    const m = /read (\d+) bytes in (\d+) requests/.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.equal(Number(m[2]), layers.length, `one tail probe per layer and no request for ${file.path}: ${r.stderr}`);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});
