/**
 * Real FUSE mounts made with `tocfs mount` (the daemon), walked with node fs like a user
 * would: names, types, modes, owners, sizes, exact mtimes, link targets, devices, xattrs,
 * hard-link inode sharing and every file's sha256 must equal the ground truth — the specs
 * of images tocfs builds (needs only FUSE), and the corpus's expected.json.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected, type Expected, type ExpectedEntry } from './helpers/corpus.js';
import { compareView, mountView } from './helpers/fs-expected.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { fuseSkipReason, isTocfsMount, Mounts, xattrsUnder } from './helpers/mounts.js';
import { OVERLAY_LAYERS, OVERLAY_MERGED } from './helpers/overlay-image.js';
import { expectedEntries, KINDS_LAYER } from './helpers/spec-expected.js';

const noFuse = await fuseSkipReason();
const skip = !HAVE_CORPUS ? `no corpus at ${CORPUS_DIR}` : noFuse;

let tmp: string;
let mounts: Mounts;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-mount-'));
  mounts = new Mounts(tmp);
});
after(async () => {
  await mounts?.cleanup();
  await rm(tmp, { recursive: true, force: true });
});

/** stargz-snapshotter TOCs (eStargz and its zstd variant) keep whole seconds. */
function wholeSecondTimes(expected: Expected, layers: string[]): boolean {
  return layers.some((d) => {
    const l = expected.layers[d]!;
    return String(l.format.format) === 'estargz' || l.annotations?.['containerd.io/snapshot/stargz/toc.digest'] !== undefined;
  });
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Compares a mounted tree with expected entries: metadata, xattrs and every file's content. */
async function checkMount(mnt: string, want: ExpectedEntry[], wholeSeconds: boolean): Promise<void> {
  const xattrs = await xattrsUnder(mnt);
  const problems = await compareView(await mountView(mnt), want, { wholeSecondTimes: wholeSeconds, xattrs: (p) => xattrs[p] ?? {} });
  const byPath = new Map(want.map((x) => [x.path, x]));
  for (const x of want) {
    if (x.meta || x.sha256 === undefined) continue;
    const target = x.type === 'hardlink' ? byPath.get(x.hardlink_to ?? x.link_path ?? '') ?? x : x;
    if (target.type !== 'reg' && x.type !== 'reg') continue;
    const got = sha256(await readFile(join(mnt, x.path)));
    if (got !== x.sha256) problems.push(`${x.path}: content sha256 ${got}, expected ${x.sha256}`);
  }
  assert.deepEqual(problems, []);
}

describe('mount: images tocfs builds, through the daemon', { skip: noFuse }, () => {
  const images = new Map<string, BuiltImage>();
  before(async () => {
    for (const format of ['zstd:chunked', 'estargz', 'gzip'] as const) {
      images.set(format, await buildImage(join(tmp, `kinds-${format.replace(':', '-')}`), { format, layers: [KINDS_LAYER] }));
      images.set(`overlay ${format}`, await buildImage(join(tmp, `overlay-${format.replace(':', '-')}`), { format, layers: OVERLAY_LAYERS }));
    }
  });

  for (const format of ['zstd:chunked', 'estargz', 'gzip'] as const) {
    it(`${format}: every kind of entry (modes, owners, exact times, links, devices, xattrs, hard links, contents) as the spec says`, async () => {
      const mnt = await mounts.mount(`oci:${images.get(format)!.dir}`);
      assert.ok(await isTocfsMount(mnt), 'listed as a fuse.tocfs mount');
      await checkMount(mnt, await expectedEntries(KINDS_LAYER), format === 'estargz');
      const r = await mounts.unmount(mnt);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await isTocfsMount(mnt), false, 'gone from the mount table');
    });

    it(`${format}: the merged view of two layers with whiteouts, an opaque directory and replaced types`, async () => {
      const mnt = await mounts.mount(`oci:${images.get(`overlay ${format}`)!.dir}`);
      const seen: Record<string, string> = {};
      for (const e of await mountView(mnt)) seen[e.path] = e.type === 'dir' ? 'dir' : e.type === 'symlink' ? `-> ${e.link}` : (await readFile(join(mnt, e.path))).toString();
      assert.deepEqual(seen, OVERLAY_MERGED);
      assert.equal((await mounts.unmount(mnt)).code, 0);
    });
  }

  it('--layer mounts that layer\'s own tree, whiteouts as the files they are', async () => {
    const img = images.get('overlay zstd:chunked')!;
    const mnt = await mounts.mount(`oci:${img.dir}`, ['--layer', img.layers[1]!.digest.slice(7, 19)]);
    const want = await expectedEntries(OVERLAY_LAYERS[1]!);
    assert.ok(want.some((x) => x.whiteout === 'opaque') && want.some((x) => x.whiteout === 'file'), 'the layer has both kinds of whiteout');
    // Parents the layer does not state are there as plain directories.
    const implicit = ['deep', 'deep/er'].map((path) => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }));
    await checkMount(mnt, [...want, ...implicit], false);
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('writes fail with EROFS; reads keep working', async () => {
    const mnt = await mounts.mount(`oci:${images.get('zstd:chunked')!.dir}`);
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['create', () => writeFile(join(mnt, 'new-file'), 'x')],
      ['overwrite', () => writeFile(join(mnt, 'etc/hello.txt'), 'x')],
      ['open for append', () => open(join(mnt, 'etc/empty'), 'a')],
      ['mkdir', () => mkdir(join(mnt, 'newdir'))],
      ['unlink', () => unlink(join(mnt, 'etc/empty'))],
      ['chmod', () => chmod(join(mnt, 'etc/empty'), 0o777)],
    ];
    for (const [what, attempt] of attempts) await assert.rejects(attempt(), { code: 'EROFS' }, what);
    assert.equal(await readFile(join(mnt, 'etc/hello.txt'), 'utf8'), 'hello world\n');
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });
});

describe('mount: every corpus image through the daemon', { skip }, () => {
  for (const image of corpusImages()) {
    const expected = loadExpected(image);
    for (const img of expected.images) {
      if (!img.merged) continue; // zstdchunked-skopeo118-gnusparse: no ground truth (no tar reader can list it)
      const p = img.platform;
      const platform = `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
      it(`${image}${expected.images.length > 1 ? ` ${platform}` : ''}`, async () => {
        const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, image)}`, ['--platform', platform]);
        assert.ok(await isTocfsMount(mnt), 'listed as a fuse.tocfs mount');
        await checkMount(mnt, img.merged, wholeSecondTimes(expected, img.layers));
        const r = await mounts.unmount(mnt);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(await isTocfsMount(mnt), false, 'gone from the mount table');
      });
    }
  }
});

describe('mount: one layer, read-only, errors', { skip }, () => {
  const image = 'zstdchunked-skopeo118-layers';

  it('--layer mounts that layer\'s own tree, whiteouts as the files they are', async () => {
    const expected = loadExpected(image);
    const digest = expected.images[0]!.layers[1]!;
    const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, image)}`, ['--layer', digest.slice(7, 19)]);
    const want = expected.layers[digest]!.entries;
    assert.ok(want.some((x) => x.whiteout === 'opaque') && want.some((x) => x.whiteout === 'file'), 'the layer has both kinds of whiteout');
    await checkMount(mnt, want, false);
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('writes fail with EROFS; reads keep working', async () => {
    const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, image)}`);
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['create', () => writeFile(join(mnt, 'new-file'), 'x')],
      ['overwrite', () => writeFile(join(mnt, 'etc/app.conf'), 'x')],
      ['open for append', () => open(join(mnt, 'etc/keep.conf'), 'a')],
      ['mkdir', () => mkdir(join(mnt, 'newdir'))],
      ['unlink', () => unlink(join(mnt, 'etc/keep.conf'))],
      ['chmod', () => chmod(join(mnt, 'etc/keep.conf'), 0o777)],
    ];
    for (const [what, attempt] of attempts) await assert.rejects(attempt(), { code: 'EROFS' }, what);
    assert.equal(await readFile(join(mnt, 'etc/app.conf'), 'utf8'), 'version=3\n');
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });
});
