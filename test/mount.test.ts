/**
 * Real FUSE mounts made with `tocfs mount` (the daemon), walked with node fs like a user
 * would: names, types, modes, owners, sizes, exact mtimes, link targets, devices, xattrs,
 * hard-link inode sharing and every file's sha256 must equal the corpus ground truth.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected, type Expected, type ExpectedEntry } from './helpers/corpus.js';
import { compareView, mountView } from './helpers/fs-expected.js';
import { fuseSkipReason, isTocfsMount, Mounts, xattrsUnder } from './helpers/mounts.js';

const skip = !HAVE_CORPUS ? `no corpus at ${CORPUS_DIR}` : await fuseSkipReason();

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
