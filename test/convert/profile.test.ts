/**
 * `tocfs convert --profile` through the CLI, on a two-layer image tocfs builds, checked as a
 * user would: each converted layer's TOC starts with the profiled files it holds, in profile
 * order (after their parent directories, a hard link after its target), eStargz with the
 * prefetch landmark right after them; the tar stays valid; the merged tree reads the same
 * bytes as the source's; paths the image lacks are one warning; a profile is found by file, by
 * the source image, by digest; `--prioritize` adds after the profile. Real-world check: Podman
 * pulls the converted zstd:chunked image from a loopback docker-registry and its export holds
 * the source's files.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import pino from 'pino';
import { sha256 } from '../../src/digest.js';
import { readLayerToc, type LayerToc } from '../../src/formats/index.js';
import { scanTar } from '../../src/formats/tar/read.js';
import { frontPath } from '../../src/formats/writer/front-order.js';
import { openImage } from '../../src/image/image.js';
import { openImageSource } from '../../src/image/open.js';
import type { FsNode } from '../../src/image/tree.js';
import { MAX_PROFILE_BYTES, parseProfile, PROFILE_MEDIA_TYPE } from '../../src/profile/profile.js';
import { ProfileStore } from '../../src/profile/store.js';
import type { Descriptor } from '../../src/source/types.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, seededContent, type BuiltImage, type FileSpec } from '../helpers/images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { tarMembers, tarOrderProblems } from '../helpers/tar-members.js';

const run = promisify(execFile);

const FILLER: FileSpec[] = Array.from({ length: 12 }, (_, i) => ({ path: `usr/lib/filler-${i}.so`, content: seededContent(`filler${i}`, 20_000 + i) }));

const LAYERS: FileSpec[][] = [
  [
    { path: 'etc', type: 'dir', mode: 0o755 },
    { path: 'etc/hostname', content: 'box\n' },
    { path: 'etc/motd', content: 'deleted by the next layer\n' },
    { path: 'etc/os-release', content: 'ID=tocfs\n' },
    { path: 'usr', type: 'dir', mode: 0o755 },
    { path: 'usr/lib', type: 'dir', mode: 0o755 },
    ...FILLER,
    { path: 'usr/lib/libc.so', content: seededContent('libc', 200_000) },
    { path: 'usr/lib/libssl.so', type: 'hardlink', linkName: 'usr/lib/libc.so' },
    { path: 'usr/bin', type: 'dir', mode: 0o755 },
    { path: 'usr/bin/other', content: seededContent('other', 1_000) },
    { path: 'usr/bin/python', content: seededContent('python v1', 300_000), mode: 0o755 },
  ],
  [
    { path: 'etc', type: 'dir', mode: 0o755 },
    { path: 'etc/.wh.motd', content: '' },
    { path: 'app', type: 'dir', mode: 0o755 },
    { path: 'app/unused.bin', content: seededContent('unused', 500_000) },
    { path: 'app/data.bin', content: seededContent('data', 1_000_000) },
    { path: 'app/main.py', content: 'print("hello")\n' },
    { path: 'usr', type: 'dir', mode: 0o755 },
    { path: 'usr/bin', type: 'dir', mode: 0o755 },
    { path: 'usr/bin/python', content: seededContent('python v2', 310_000), mode: 0o755 },
  ],
];

/** The profile's reads: [layer, path, offset, length], in the order first read (repeats, and three paths this image cannot give). */
const READS: Array<[number, string, number, number]> = [
  [1, 'app/main.py', 0, 15],
  [1, 'usr/bin/python', 0, 65_536],
  [0, 'usr/lib/libssl.so', 0, 4096],
  [0, 'etc/os-release', 0, 9],
  [1, 'usr/bin/python', 65_536, 65_536],
  [1, 'app/data.bin', 0, 131_072],
  [0, 'nope/missing', 0, 10],
  [0, 'usr/lib/not-there.so', 0, 10],
  [0, '/etc/hostname', 0, 4],
  [1, 'app/data.bin', 500_000, 4096],
];

/** What each layer must put first: the profiled files it holds, in profile order, parents and hard-link targets before them. */
const FRONT = [
  ['usr', 'usr/bin', 'usr/bin/python', 'usr/lib', 'usr/lib/libc.so', 'usr/lib/libssl.so', 'etc', 'etc/os-release'],
  ['app', 'app/main.py', 'usr', 'usr/bin', 'usr/bin/python', 'app/data.bin'],
];

function profileJson(img: BuiltImage, reads = READS): string {
  const json = JSON.stringify({
    schemaVersion: 1,
    mediaType: PROFILE_MEDIA_TYPE,
    created: '2026-12-06T12:00:00.000Z',
    image: { reference: `oci:${img.dir}`, repository: `oci:${img.dir}`, manifestDigest: img.manifestDigest },
    recording: { idleMs: 10_000, windowMs: 120_000, endedBy: 'idle' },
    layers: img.layers.map((l) => ({ digest: l.digest })),
    reads: reads.map(([layer, path, offset, length], i) => ({ layer, path, offset, length, atMs: 10 * i })),
  });
  parseProfile(json, 'test'); // what tocfs itself accepts
  return json;
}

/** The converted layout's layers: descriptor, TOC and decompressed stream. */
async function convertedLayers(dir: string): Promise<Array<{ desc: Descriptor; toc: LayerToc; stream: Buffer }>> {
  const source = await openImageSource(`oci:${dir}`);
  try {
    const image = await source.resolve();
    const out = [];
    for (const desc of image.layers) {
      const toc = await readLayerToc(desc, source.blob(desc));
      const blob = await readFile(join(dir, 'blobs', 'sha256', desc.digest.slice(7)));
      const stream = toc.compression === 'gzip' ? gunzipSync(blob) : Buffer.from(await zstdDecompress(blob));
      assert.equal(image.config.rootfs!.diff_ids[out.length], sha256(stream), 'config DiffID = sha256 of the decompressed layer');
      out.push({ desc, toc, stream });
    }
    return out;
  } finally {
    await source.close();
  }
}

/** The merged tree as a user sees it (what a mount shows): path -> type, and sha256 for files. */
async function mergedView(ref: string, cacheDir: string): Promise<Map<string, string>> {
  const image = await openImage(ref, { cacheDir, logger: pino({ level: 'silent' }) });
  try {
    const out = new Map<string, string>();
    const walk = async (node: FsNode, path: string): Promise<void> => {
      for (const [name, child] of node.children ?? []) {
        const p = path ? `${path}/${name}` : name;
        if (child.entry.type === 'reg') out.set(p, sha256(await image.readFile(child, 0, child.entry.size)));
        else out.set(p, child.entry.type);
        if (child.isDir) await walk(child, p);
      }
    };
    await walk(image.tree().root, '');
    return out;
  } finally {
    await image.close();
  }
}

/** The warnings a CLI run logged (JSON lines on stderr). */
function warnings(stderr: string): Array<{ msg: string; [k: string]: unknown }> {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string })
    .filter((l) => l.level === 40);
}

describe('tocfs convert --profile', () => {
  let tmp: string;
  let img: BuiltImage;
  let profileFile: string;
  let sourceView: Map<string, string>;
  let n = 0;
  const out = (): string => join(tmp, `out${++n}`);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-convert-profile-'));
    img = await buildImage(join(tmp, 'src'), { format: 'gzip', layers: LAYERS });
    profileFile = join(tmp, 'app.profile.json');
    await writeFile(profileFile, profileJson(img));
    sourceView = await mergedView(`oci:${img.dir}`, join(tmp, 'cache-src'));
    assert.equal(sourceView.has('etc/motd'), false, 'the whiteout applies');
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  for (const format of ['estargz', 'zstd:chunked'] as const) {
    it(`${format}: each layer starts with its profiled files in profile order; same merged bytes; one warning for the missing paths`, async () => {
      const dir = out();
      const r = await runCli(['convert', `oci:${img.dir}`, `oci:${dir}`, '--format', format, '--profile', profileFile, '--cache-dir', join(tmp, 'cache')]);
      assert.equal(r.code, 0, r.stderr);
      const warned = warnings(r.stderr);
      assert.equal(warned.length, 1, r.stderr);
      assert.match(warned[0]!.msg, new RegExp(`^start-up profile ${profileFile}: 3 of its 8 files are not in oci:${img.dir} \\(skipped\\)$`));
      assert.deepEqual(warned[0]!.examples, ['/etc/hostname', 'nope/missing', 'usr/lib/not-there.so']);
      assert.match(r.stderr, new RegExp(`start-up profile ${profileFile}: 5 of 8 files placed first \\(3 not in the image\\)`));

      const layers = await convertedLayers(dir);
      for (const [i, { toc, stream }] of layers.entries()) {
        const front = FRONT[i]!;
        assert.deepEqual(Array.from(toc.entries).slice(0, front.length).map((e) => e.path), front, `layer ${i}: TOC starts with the profiled files`);
        const members = await tarMembers(stream);
        assert.deepEqual(tarOrderProblems(members), [], `layer ${i}: a valid tar`);
        const names = members.map((m) => m.path);
        const restOfSource = (await tarMembers(await readFile(img.sourceTars[i]!))).map((m) => m.path).filter((p) => !front.includes(p));
        if (format === 'estargz') {
          assert.deepEqual(names, [...front, '.prefetch.landmark', ...restOfSource, 'stargz.index.json'], `layer ${i}: landmark right after the profiled files`);
          const lastFile = [...front].reverse().find((p) => Array.from(toc.entries).find((e) => e.path === p)!.chunks.length > 0)!;
          assert.equal(toc.prefetchEnd, Array.from(toc.entries).find((e) => e.path === lastFile)!.chunks.at(-1)!.compressedEnd, `layer ${i}: prefetch covers exactly the profiled files`);
        } else {
          assert.deepEqual(names, [...front, ...restOfSource], `layer ${i}: stream order`);
          const frontEnd = Math.max(...Array.from(toc.entries).filter((e) => front.includes(e.path)).flatMap((e) => e.chunks.map((c) => c.compressedEnd)));
          const restStart = Math.min(...Array.from(toc.entries).filter((e) => !front.includes(e.path)).flatMap((e) => e.chunks.map((c) => c.compressedOffset)));
          assert.ok(frontEnd <= restStart, `layer ${i}: the profiled files lie together at the front of the blob`);
        }
      }
      assert.deepEqual(await mergedView(`oci:${dir}`, join(tmp, `cache-${n}`)), sourceView, 'merged tree: same paths, types and file contents');
    });
  }

  it('finds the stored profile of the source image (by reference or digest), adds --prioritize after it, and says when there is none', async () => {
    const cacheDir = join(tmp, 'cache-store');
    await new ProfileStore(cacheDir, pino({ level: 'silent' })).save(parseProfile(profileJson(img), 'test'));
    const stored = join(cacheDir, 'profiles', `${img.manifestDigest.slice(7)}.json`);

    let dir = out();
    let r = await runCli(['convert', `oci:${img.dir}`, `oci:${dir}`, '--format', 'zstd:chunked', '--profile', `oci:${img.dir}`, '--cache-dir', cacheDir, '--prioritize', '/usr/bin/python', 'etc/hostname']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`start-up profile ${stored}: 5 of 8 files placed first`));
    let layers = await convertedLayers(dir);
    assert.deepEqual(Array.from(layers[0]!.toc.entries).slice(0, FRONT[0]!.length + 1).map((e) => e.path), [...FRONT[0]!, 'etc/hostname'], 'the profile, then --prioritize files not already placed');
    assert.deepEqual(Array.from(layers[1]!.toc.entries).slice(0, FRONT[1]!.length).map((e) => e.path), FRONT[1]);

    dir = out();
    r = await runCli(['convert', `oci:${img.dir}`, `oci:${dir}`, '--format', 'estargz', '--profile', img.manifestDigest, '--cache-dir', cacheDir]);
    assert.equal(r.code, 0, r.stderr);
    layers = await convertedLayers(dir);
    assert.deepEqual(Array.from(layers[1]!.toc.entries).slice(0, FRONT[1]!.length).map((e) => e.path), FRONT[1]);

    r = await runCli(['convert', `oci:${img.dir}`, `oci:${out()}`, '--format', 'estargz', '--profile', `oci:${img.dir}`, '--cache-dir', join(tmp, 'empty-cache')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`--profile oci:${img.dir}: no start-up profile of oci:${img.dir} \\(${img.manifestDigest}\\) in \\S+empty-cache/profiles: record one`));
  });

  it('a profile recorded on another image: matched by path, the rest skipped with one warning', async () => {
    const other = await buildImage(join(tmp, 'other'), { format: 'gzip', layers: [[{ path: 'app', type: 'dir' }, { path: 'app/main.py', content: 'v0\n' }, { path: 'app/old.py', content: 'gone\n' }]] });
    const file = join(tmp, 'other.profile.json');
    await writeFile(file, profileJson(other, [[0, 'app/old.py', 0, 5], [0, 'app/main.py', 0, 3]]));
    const dir = out();
    const r = await runCli(['convert', `oci:${img.dir}`, `oci:${dir}`, '--format', 'zstd:chunked', '--profile', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(warnings(r.stderr).map((w) => [w.msg, w.examples]), [[`start-up profile ${file}: 1 of its 2 files are not in oci:${img.dir} (skipped)`, ['app/old.py']]]);
    const layers = await convertedLayers(dir);
    assert.deepEqual(Array.from(layers[1]!.toc.entries).slice(0, 2).map((e) => e.path), ['app', 'app/main.py']);
    assert.equal(layers[0]!.toc.entries.at(0)!.path, 'etc', 'a layer with none of the files keeps its order');
  });

  it('refuses a malformed or oversized profile with the parser\'s message, writing nothing', async () => {
    const bad = join(tmp, 'bad.json');
    const good = JSON.parse(profileJson(img));
    await writeFile(bad, JSON.stringify({ ...good, reads: [{ ...good.reads[0], layer: 7 }] }));
    const dir = out();
    let r = await runCli(['convert', `oci:${img.dir}`, `oci:${dir}`, '--format', 'estargz', '--profile', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /profile \S+bad\.json reads\[0\]\.layer: 7 names no layer \(the profile lists 2\)/);
    assert.equal(await readFile(join(dir, 'index.json')).then(() => true, () => false), false, 'no layout written');
    const big = join(tmp, 'big.json');
    await writeFile(big, Buffer.alloc(MAX_PROFILE_BYTES + 4096, 0x20));
    r = await runCli(['convert', `oci:${img.dir}`, `oci:${out()}`, '--format', 'estargz', '--profile', big]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`profile \\S+big\\.json: ${MAX_PROFILE_BYTES + 1} bytes, over the ${MAX_PROFILE_BYTES}-byte limit`));
  });
});

async function have(cmd: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
}
const TOOLS = ['podman', 'skopeo', 'docker-registry', 'runc'];
const missing = (await Promise.all(TOOLS.map(async (t) => ((await have(t)) ? undefined : t)))).filter(Boolean);

describe('podman pulls a zstd:chunked image converted with --profile', { skip: missing.length ? `not installed: ${missing.join(', ')}` : false, timeout: 180_000 }, () => {
  let tmp: string;
  let registry: TestRegistry;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-cp-'));
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** podman with storage of its own (no layer reused), partial pulls on. */
  async function podman(dir: string, ...args: string[]): Promise<string> {
    const { stdout } = await run('podman', ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', 'overlay', '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', ...args], {
      env: { ...process.env, CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf') },
      maxBuffer: 16 << 20,
      timeout: 60_000,
    });
    return stdout;
  }

  /** path -> sha256 of every regular file of a `podman export` (a hard link counts as its target's content). */
  async function exportedFiles(path: string): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    const links: Array<[string, string]> = [];
    for await (const ev of scanTar(createReadStream(path))) {
      if (ev.kind !== 'entry') continue;
      const p = frontPath(ev.header.name);
      if (!p) continue;
      if (ev.header.type === 'reg') {
        const h = createHash('sha256');
        for await (const b of ev.content) h.update(b);
        files.set(p, 'sha256:' + h.digest('hex'));
      } else if (ev.header.type === 'hardlink') links.push([p, frontPath(ev.header.linkName)!]);
    }
    for (const [p, target] of links) files.set(p, files.get(target)!);
    return files;
  }

  it('pulls it (partially, with --legacy-annotations) and its export holds the source image\'s files', async () => {
    const img = await buildImage(join(tmp, 'src'), { format: 'gzip', layers: LAYERS });
    const profile = join(tmp, 'p.json');
    await writeFile(profile, profileJson(img));
    const sourceFiles = new Map([...(await mergedView(`oci:${img.dir}`, join(tmp, 'cache'))).entries()].filter(([, v]) => v.startsWith('sha256:')));
    for (const [i, extra] of [[], ['--legacy-annotations']].entries()) {
      const layout = join(tmp, `conv${i}`);
      const r = await runCli(['convert', `oci:${img.dir}`, `oci:${layout}:latest`, '--format', 'zstd:chunked', '--profile', profile, ...extra]);
      assert.equal(r.code, 0, r.stderr);
      const ref = `${registry.host}/profiled${i}:latest`;
      await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://${ref}`], { timeout: 60_000 });
      const p = join(tmp, `p${i}`);
      await mkdir(join(p, 'root'), { recursive: true });
      await writeFile(join(p, 'storage.conf'), `[storage]\ndriver = "overlay"\ngraphroot = "${p}/root"\nrunroot = "${p}/run"\n[storage.options.pull_options]\nenable_partial_images = "true"\n`);
      try {
        await podman(p, 'pull', '-q', '--tls-verify=false', ref);
        const id = (await podman(p, 'create', ref, '/bin/true')).trim();
        const exported = join(tmp, `export${i}.tar`);
        await podman(p, 'export', '-o', exported, id);
        assert.deepEqual(await exportedFiles(exported), sourceFiles, `${extra.join(' ') || 'io.github annotations (full pull)'}: the same files, byte for byte`);
        const blobRequests = registry.log.filter((l) => l.includes(`/v2/profiled${i}/blobs/`) && / 206 /.test(l));
        if (extra.length) assert.ok(blobRequests.length > 0, 'podman pulled partially, by range requests on the TOC and chunks');
      } finally {
        await podman(p, 'rm', '--all', '--force').catch(() => undefined);
        await podman(p, 'rmi', '--all', '--force').catch(() => undefined);
      }
    }
  });
});
