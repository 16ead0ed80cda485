/**
 * `tocfs ls` and `tocfs cat` through the CLI, on corpus images and on images tocfs builds
 * (every kind of entry, and the overlay cases): what a user sees on stdout/stderr and the
 * exit status.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LsEntry } from '../src/cli/commands/ls.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { expectedMtime } from './helpers/fs-expected.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { OVERLAY_LAYERS, OVERLAY_MERGED } from './helpers/overlay-image.js';
import { expectedEntries, KINDS_LAYER, KINDS_LONG_PATH, specSha256 } from './helpers/spec-expected.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let tmp: string;
let n = 0;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-lscat-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Runs the CLI with a fresh cache dir (so --stats counts TOC reads too). */
async function cli(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return runCli([...args, '--cache-dir', join(tmp, `cache-${n++}`)]);
}

describe('ls and cat on corpus images', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  const basic = `oci:${join(CORPUS_DIR, 'zstdchunked-skopeo118-basic')}`;
  const merged = loadExpected('zstdchunked-skopeo118-basic').images[0]!.merged;

  it('ls lists a directory of the merged view in byte order', async () => {
    const r = await cli(['ls', basic, '/']);
    assert.equal(r.code, 0, r.stderr);
    const top = merged.filter((x) => !x.path.includes('/')).map((x) => x.path).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    assert.deepEqual(r.stdout.toString().trimEnd().split('\n'), top);
  });

  it('ls --json gives each name\'s metadata exactly (incl. pre-1970 and sub-second mtimes, links, devices)', async () => {
    for (const dir of ['times', 'links', 'special', 'perms', 'xattrs']) {
      const r = await cli(['ls', '--json', basic, dir]);
      assert.equal(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout.toString()) as LsEntry[];
      const want = merged.filter((x) => x.path.startsWith(`${dir}/`) && !x.path.slice(dir.length + 1).includes('/'));
      assert.deepEqual(got.map((g) => g.path.slice(1)).sort(), want.map((x) => x.path).sort(), dir);
      for (const x of want) {
        const g = got.find((e) => e.path === `/${x.path}`)!;
        const m = expectedMtime(x);
        assert.deepEqual([g.mode, g.uid, g.gid, g.mtimeSec, g.mtimeNsec], [x.mode, x.uid, x.gid, m.sec, m.nsec], x.path);
        if (x.type === 'symlink') assert.equal(g.link, x.linkname, x.path);
        if (x.type === 'reg') assert.equal(g.size, x.size, x.path);
        if (x.type === 'char') assert.deepEqual(g.device, { major: x.devmajor, minor: x.devminor });
        assert.deepEqual(g.xattrs, x.xattrs ?? {}, x.path);
      }
    }
  });

  it('ls -l shows mode, links, owner, size, time and link target like ls -l', async () => {
    const r = await cli(['ls', '-l', basic, '/times']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.toString().trimEnd().split('\n');
    assert.ok(lines.some((l) => /^-rw-r--r-- 1 0 0 +17 1966-02-02T02:26:50\.750000000Z pre-1970\.txt$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => / 2023-11-14T22:13:20\.123456789Z subsecond\.txt$/.test(l)), lines.join('\n'));
    const links = (await cli(['ls', '-l', basic, 'links'])).stdout.toString();
    const abs = merged.find((x) => x.path.startsWith('links/') && x.type === 'symlink' && x.linkname?.startsWith('/'))!;
    assert.match(links, new RegExp(`^lrwxrwxrwx 1 .* ${abs.path.slice(6).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} -> ${abs.linkname!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    const perms = (await cli(['ls', '-l', basic, 'perms'])).stdout.toString();
    assert.match(perms, /^-rwsr-xr-x /m, 'setuid shows as s');
    assert.match(perms, /^drwxrwxrwt /m, 'sticky shows as t');
  });

  it('cat writes the exact bytes of files, following symlinks inside the image', async () => {
    const picks = ['data/empty', 'data/one-byte', 'data/exactly-65536.bin', 'data/medium-random.bin', 'big/large-7m.txt', 'sparse/zero-hole-3m.bin'];
    for (const x of merged.filter((e) => picks.includes(e.path))) {
      const r = await cli(['cat', basic, x.path]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), x.sha256, x.path);
    }
    const link = merged.find((x) => x.type === 'symlink' && x.linkname === '/data/tiny.txt') ?? merged.find((x) => x.type === 'symlink' && merged.some((t) => t.type === 'reg' && `/${t.path}` === x.linkname));
    if (link) {
      const target = merged.find((t) => `/${t.path}` === link.linkname)!;
      const r = await cli(['cat', basic, link.path]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), target.sha256);
    }
  });

  it('cat --stats: one small file of zstdchunked-podman54-app-v1 reads well under 5 % of the image', async () => {
    const image = 'zstdchunked-podman54-app-v1';
    const x = loadExpected(image).images[0]!.merged.find((e) => e.type === 'reg' && e.size > 100 && e.size < 2000)!;
    const r = await cli(['cat', '--stats', `oci:${join(CORPUS_DIR, image)}`, x.path]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.stdout), x.sha256);
    const m = /read (\d+) bytes in (\d+) requests from blobs: ([\d.]+)% of the compressed image \((\d+) bytes\)/.exec(r.stderr);
    assert.ok(m, r.stderr);
    const [bytes, requests, pct, total] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
    assert.equal(total, loadExpected(image).images[0]!.layers.reduce((s, d) => s + loadExpected(image).layers[d]!.size, 0));
    assert.ok(requests >= 2, 'footer/TOC and the file');
    assert.ok(pct < 5, `${pct}% of the image`);
    assert.ok(bytes < 0.05 * total);
  });

  it('errors name the path and the image, with exit status 1', async () => {
    const missing = await cli(['ls', basic, '/no/such']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\/no\/such: no such file or directory in oci:.*zstdchunked-skopeo118-basic/);
    const dir = await cli(['cat', basic, 'data']);
    assert.equal(dir.code, 1);
    assert.match(dir.stderr, /data: is a directory/);
    const fifo = merged.find((x) => x.type === 'fifo')!;
    const special = await cli(['cat', basic, fifo.path]);
    assert.equal(special.code, 1);
    assert.match(special.stderr, /not a regular file \(fifo\)/);
    const layer = await cli(['ls', '--layer', 'sha256:00000000', basic]);
    assert.equal(layer.code, 1);
    assert.match(layer.stderr, /has no layer sha256:00000000; its layers \(bottom first\):\n  0: sha256:/);
  });
});

describe('ls and cat on an image tocfs builds with every kind of entry', () => {
  const images = new Map<string, BuiltImage>();
  const ref = (format: string): string => `oci:${images.get(format)!.dir}`;
  before(async () => {
    for (const format of ['zstd:chunked', 'estargz', 'gzip'] as const) images.set(format, await buildImage(join(tmp, `kinds-${format.replace(':', '-')}`), { format, layers: [KINDS_LAYER] }));
  });

  it('ls lists a directory of the merged view in byte order', async () => {
    const r = await cli(['ls', ref('zstd:chunked'), '/']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.toString().trimEnd().split('\n'), ['dev', 'etc', 'home', 'tmp', 'usr']);
  });

  it('ls --json gives each name\'s metadata exactly (pre-1970 and sub-second mtimes, owners, links, devices, xattrs)', async () => {
    const want = await expectedEntries(KINDS_LAYER);
    for (const dir of ['etc', 'home', 'home/alice', 'usr/bin', 'dev']) {
      const r = await cli(['ls', '--json', ref('zstd:chunked'), dir]);
      assert.equal(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout.toString()) as LsEntry[];
      const names = want.filter((x) => x.path.startsWith(`${dir}/`) && !x.path.slice(dir.length + 1).includes('/'));
      assert.deepEqual(got.map((g) => g.path.slice(1)).sort(), names.map((x) => x.path).sort(), dir);
      for (const x of names) {
        const g = got.find((e) => e.path === `/${x.path}`)!;
        const target = x.type === 'hardlink' ? want.find((t) => t.path === x.link_path)! : x;
        const m = expectedMtime(target);
        assert.deepEqual([g.mode, g.uid, g.gid, g.mtimeSec, g.mtimeNsec], [target.mode, target.uid, target.gid, m.sec, m.nsec], x.path);
        if (x.type === 'symlink') assert.equal(g.link, x.linkname, x.path);
        if (target.type === 'reg') assert.equal(g.size, target.size, x.path);
        if (x.type === 'char' || x.type === 'block') assert.deepEqual(g.device, { major: x.devmajor, minor: x.devminor }, x.path);
        assert.deepEqual(g.xattrs, x.xattrs ?? {}, x.path);
      }
    }
  });

  it('ls -l shows type and mode (setuid s, sticky t), links, owner, size or device, exact time and link target', async () => {
    const lines = async (dir: string): Promise<string[]> => {
      const r = await cli(['ls', '-l', ref('zstd:chunked'), dir]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.toString().trimEnd().split('\n');
    };
    const etc = await lines('/etc');
    assert.ok(etc.some((l) => /^-rw-r--r-- 1 0 0 +10 1969-12-30T23:59:59\.250000000Z old$/.test(l)), etc.join('\n'));
    assert.ok(etc.some((l) => /^-rw-r--r-- 1 0 0 +12 2023-11-14T22:13:20\.123456000Z hello\.txt$/.test(l)), etc.join('\n'));
    const bin = await lines('/usr/bin');
    assert.ok(bin.some((l) => /^-rwsr-xr-x 2 0 0 +5000 2023-11-14T22:13:20Z tool$/.test(l)), `setuid, two names: ${bin.join('\n')}`);
    assert.ok(bin.some((l) => /^lrwxrwxrwx 1 0 0 +14 .* abs-symlink -> \/etc\/hello\.txt$/.test(l)), bin.join('\n'));
    assert.ok((await lines('/')).some((l) => /^drwxrwxrwt .* tmp$/.test(l)), 'sticky shows as t');
    const dev = await lines('/dev');
    assert.ok(dev.some((l) => /^crw-rw-rw- 1 0 0 +1, 3 .* null$/.test(l)), dev.join('\n'));
    assert.ok(dev.some((l) => /^brw-rw---- 1 0 0 +8, 0 .* sda$/.test(l)), dev.join('\n'));
    assert.ok(dev.some((l) => /^prw-r--r-- .* fifo$/.test(l)), dev.join('\n'));
    assert.ok((await lines('/home/alice')).some((l) => /^-rw------- 1 1000 1000 +15 .* notes$/.test(l)));
  });

  for (const format of ['zstd:chunked', 'estargz', 'gzip'] as const) {
    it(`${format}: cat writes the exact bytes of files, following symlinks and hard links inside the image`, async () => {
      // Every case on zstd:chunked; on the others a many-chunk file and a link (each CLI run costs a second).
      const cases: Array<[string, string]> = [['usr/lib/multi-chunk.bin', 'usr/lib/multi-chunk.bin'], ['usr/bin/abs-symlink', 'etc/hello.txt']];
      if (format === 'zstd:chunked') {
        cases.push(['etc/empty', 'etc/empty'], ['usr/lib/holes.img', 'usr/lib/holes.img'], [KINDS_LONG_PATH, KINDS_LONG_PATH], ['usr/share/naïve-日本語.txt', 'usr/share/naïve-日本語.txt'],
          ['usr/bin/tool-symlink', 'usr/bin/tool'], ['usr/bin/tool-hardlink', 'usr/bin/tool']);
      }
      for (const [path, source] of cases) {
        const r = await cli(['cat', ref(format), path]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(sha256(r.stdout), await specSha256(KINDS_LAYER, source), path);
      }
    });
  }

  it('cat --stats: one small file of a 1.6 MB zstd:chunked image reads well under 5 % of it', async () => {
    const img = images.get('zstd:chunked')!;
    const r = await cli(['cat', '--stats', ref('zstd:chunked'), 'etc/hello.txt']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'hello world\n');
    const m = /read (\d+) bytes in (\d+) requests from blobs: ([\d.]+)% of the compressed image \((\d+) bytes\)/.exec(r.stderr);
    assert.ok(m, r.stderr);
    const [bytes, requests, pct, total] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
    assert.equal(total, img.layers[0]!.size);
    assert.ok(requests >= 2, 'footer/TOC and the file');
    assert.ok(pct < 5 && bytes < 0.05 * total, `${bytes} bytes, ${pct}% of the image`);
  });

  it('errors name the path and the image, with exit status 1', async () => {
    const r = ref('zstd:chunked');
    const missing = await cli(['ls', r, '/no/such']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\/no\/such: no such file or directory in oci:.*kinds-zstd-chunked/);
    const dir = await cli(['cat', r, 'usr']);
    assert.equal(dir.code, 1);
    assert.match(dir.stderr, /usr: is a directory/);
    for (const [path, kind] of [['dev/fifo', 'fifo'], ['dev/null', 'char']]) {
      const special = await cli(['cat', r, path]);
      assert.equal(special.code, 1);
      assert.match(special.stderr, new RegExp(`not a regular file \\(${kind}\\)`));
    }
    const layer = await cli(['ls', '--layer', 'sha256:00000000', r]);
    assert.equal(layer.code, 1);
    assert.match(layer.stderr, new RegExp(`has no layer sha256:00000000; its layers \\(bottom first\\):\\n  0: ${images.get('zstd:chunked')!.layers[0]!.digest}`));
  });
});

describe('ls and cat on images with whiteouts, opaque dirs and replaced types', () => {
  const images = new Map<string, BuiltImage>();
  before(async () => {
    for (const format of ['zstd:chunked', 'estargz', 'zstd'] as const) images.set(format, await buildImage(join(tmp, `overlay-${format.replace(':', '-')}`), { format, layers: OVERLAY_LAYERS }));
  });

  for (const format of ['zstd:chunked', 'estargz', 'zstd'] as const) {
    it(`${format}: the merged view, and --layer showing a layer's own names`, async () => {
      const img = images.get(format)!;
      const ref = `oci:${img.dir}`;
      // The tree's overlay rules are checked in test/image/tree.test.ts; here what ls and cat show of them.
      const list = async (dir: string): Promise<LsEntry[]> => {
        const r = await cli(['ls', '--json', ref, dir]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout.toString()) as LsEntry[];
      };
      const root = await list('/');
      assert.deepEqual(root.map((e) => e.name), ['a', 'd', 'deep', 'f', 'g', 'ln']);
      assert.deepEqual(root.map((e) => e.type), ['dir', 'dir', 'dir', 'dir', 'symlink', 'symlink']);
      assert.equal(root.find((e) => e.name === 'g')!.link, '/a');
      const a = await list('a');
      assert.deepEqual(a.map((e) => [e.name, e.modeString]), [['hl', '-rw-r--r--'], ['keep', '-rw-------']]);
      for (const path of ['a/hl', 'a/keep']) {
        const r = await cli(['cat', ref, path]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.toString(), OVERLAY_MERGED[path], path);
      }
      // Through the symlink g -> /a, as the image itself would resolve it.
      assert.equal((await cli(['cat', ref, 'g/keep'])).stdout.toString(), 'keep v1\n');

      const top = img.layers[1]!.digest;
      const own = await cli(['ls', '--layer', top.slice(7, 19), ref, 'a']);
      assert.equal(own.code, 0, own.stderr);
      assert.deepEqual(own.stdout.toString().trimEnd().split('\n'), ['.wh.gone', 'keep']);
      const lower = await cli(['cat', '--layer', img.layers[0]!.digest, ref, 'a/keep']);
      assert.equal(lower.stdout.toString(), 'keep v0\n', 'the lower layer\'s own version');
    });
  }
});
