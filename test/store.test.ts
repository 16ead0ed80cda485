/**
 * `tocfs store` driven through its mount the way containers/storage drives it: a real
 * docker-registry holding images tocfs builds (never skipped) and corpus images, the store as
 * a real FUSE mount, file operations only. The TOC-digest lookups are what containers/storage ≥ 1.55 (Podman ≥ 5.1) does
 * (stat diff/info/blob, create use, read info and check toc-digest, rmdir); the blob-digest
 * lookups are Podman 4.3.1's (test/store-podman.test.ts runs the real Podman).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdtemp, open, readdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeRef, encodeRef, parseKey, parseStorePath } from '../src/store/names.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected, type Expected } from './helpers/corpus.js';
import { runCli } from './helpers/cli.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';
import { STORE_MEMORY_TIER_BYTES } from '../src/config/memory-tier.js';
import { isFuseMounted, registryLogSettled, startStore, type RunningStore } from './helpers/store.js';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from '@mongodb-js/zstd';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { fuseSkipReason } from './helpers/mounts.js';
import { buildMultiArchImage, type BuiltMultiArchImage } from './helpers/multiarch.js';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** expected.json gives file content digests as bare hex. */
const contentHash = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** errno code of a failing fs call ('' when it succeeds). */
async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return '';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

/** getxattr through python (node has no xattr API); undefined when the attribute is absent. */
function xattr(path: string, name: string): string | undefined {
  const out = execFileSync('python3', ['-c', 'import os,sys\ntry: sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())\nexcept OSError as e: sys.stdout.write("ERRNO:%d" % e.errno)', path, name]).toString();
  return out.startsWith('ERRNO:') ? undefined : out;
}

describe('names', () => {
  it('encodes references as Go StdEncoding and decodes only strict standard base64', () => {
    assert.equal(encodeRef('localhost:5055/alstest:v1'), 'bG9jYWxob3N0OjUwNTUvYWxzdGVzdDp2MQ==');
    assert.equal(decodeRef('bG9jYWxob3N0OjUwNTUvYWxzdGVzdDp2MQ=='), 'localhost:5055/alstest:v1');
    assert.equal(decodeRef('bG9jYWxob3N0OjUwNTUvYWxzdGVzdDp2MQ'), undefined, 'padding is required');
    assert.equal(decodeRef('bG9jYWxob3N0OjUwNTUvYWxzdGVzdDp2MQ=x'), undefined);
    assert.equal(decodeRef('status'), undefined);
    assert.equal(decodeRef('a-b_'), undefined, 'the URL-safe alphabet is not base64.StdEncoding');
    for (const ref of ['docker.io/library/alpine:3.10', 'quay.io/a/b@sha256:' + 'a'.repeat(64), '127.0.0.1:5000/x-y_z.w:latest']) {
      assert.ok(!encodeRef(ref).includes('/'), `${ref} encodes without '/'`);
      assert.equal(decodeRef(encodeRef(ref)), ref);
    }
    assert.equal(parseKey('sha256:' + 'a'.repeat(64)), 'sha256:' + 'a'.repeat(64));
    assert.equal(parseKey('sha256:' + 'A'.repeat(64)), undefined);
    assert.equal(parseKey('use'), undefined);
    const b = encodeRef('r:1');
    const k = 'sha256:' + 'b'.repeat(64);
    assert.deepEqual(parseStorePath(`/${b}/${k}/diff/etc/passwd`), { kind: 'tree', ref: 'r:1', name: b, key: k, tree: 'diff', sub: '/etc/passwd' });
    assert.deepEqual(parseStorePath(`/${b}/${k}/use`), { kind: 'use', ref: 'r:1', name: b, key: k });
    assert.equal(parseStorePath(`/${b}/${k}/info/x`).kind, 'invalid');
    assert.equal(parseStorePath(`/${b}/manifest`).kind, 'imageFile');
  });
});

describe('tocfs store over a real registry', { skip: HAVE_CORPUS ? false : `corpus not found at ${CORPUS_DIR}` }, () => {
  let registry: TestRegistry;
  let work: string;
  let store: RunningStore;
  const images = ['zstdchunked-skopeo118-layers', 'estargz-ctrremote-prefetch', 'gzip-plain-basic', 'zstdchunked-skopeo118-multiarch'];
  const expected = new Map<string, Expected>();
  const refOf = (image: string): string => `${registry.host}/${image}:latest`;
  const layerDir = (image: string, key: string): string => join(store.dir, encodeRef(refOf(image)), key);

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-test-'));
    registry = await startRegistry();
    for (const image of images) {
      await registry.load(join(CORPUS_DIR, image));
      expected.set(image, loadExpected(image));
    }
    store = await startStore(join(work, 'store'), join(work, 'cache'));
  });

  after(async () => {
    await store?.stop().catch(() => undefined);
    if (work && (await isFuseMounted(join(work, 'store')))) execFileSync('fusermount', ['-uz', join(work, 'store')]);
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('TOC-digest keys (Podman ≥ 5.1): stat diff/info/blob, use, info with toc-digest and the DiffID flag, rmdir', async () => {
    const exp = expected.get('zstdchunked-skopeo118-layers')!;
    const img = exp.images[0]!;
    const rootInodes = new Set<number>();
    for (const [i, digest] of img.layers.entries()) {
      const layer = exp.layers[digest]!;
      const tocDigest = layer.annotations!['io.github.containers.zstd-chunked.manifest-checksum']!;
      const dir = layerDir('zstdchunked-skopeo118-layers', tocDigest);
      for (const name of ['diff', 'info', 'blob']) assert.equal(await errnoOf(stat(join(dir, name))), '', `${name} of layer ${i} by TOC digest`);
      assert.equal(await errnoOf(open(join(dir, 'use'), 'w+')), 'ENOENT', 'creating use answers ENOENT (use counted)');
      const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
      assert.equal(info['toc-digest'], tocDigest, 'toc-digest equals the lookup key');
      assert.equal(info.flags['expected-layer-diffid'], img.diff_ids[i]);
      assert.equal(info['diff-digest'], img.diff_ids[i]);
      assert.equal(info['compressed-diff-digest'], digest);
      assert.equal(info['compressed-size'], layer.size);
      assert.equal(info['diff-size'], layer.uncompressed_size);
      assert.equal(info.compression, 4, 'zstd');
      assert.equal(await errnoOf(rmdir(dir)), 'ENOENT', 'rmdir answers ENOENT (release counted) and the directory stays');
      assert.equal(await errnoOf(stat(join(dir, 'diff'))), '');
      rootInodes.add((await stat(join(dir, 'diff'))).ino);
    }
    assert.equal(rootInodes.size, img.layers.length, 'each layer tree has inode numbers of its own (overlayfs sees them on one device)');
  });

  it('blob-digest keys (Podman 4.3.1) on eStargz with whiteouts: info, overlay-native diff tree, exact blob', async () => {
    const exp = expected.get('estargz-ctrremote-prefetch')!;
    const img = exp.images[0]!;
    const digest = img.layers[1]!;
    const layer = exp.layers[digest]!;
    const dir = layerDir('estargz-ctrremote-prefetch', digest);
    const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
    assert.deepEqual(
      { d: info['diff-digest'], c: info['compressed-diff-digest'], s: info['compressed-size'], z: info.compression, u: info['diff-size'], t: info['toc-digest'] },
      { d: img.diff_ids[1], c: digest, s: layer.size, z: 2, u: layer.uncompressed_size, t: layer.annotations!['containerd.io/snapshot/stargz/toc.digest'] },
    );
    // Whiteouts: `.wh.NAME` is a 0:0 character device NAME; `.wh..wh..opq` is an opaque directory.
    const diff = join(dir, 'diff');
    for (const e of layer.entries.filter((x) => x.whiteout === 'file')) {
      const target = e.path.replace(/\.wh\.([^/]+)$/, '$1');
      const st = await stat(join(diff, target));
      assert.ok(st.isCharacterDevice(), `${target} is a character device`);
      assert.equal(st.rdev, 0, `${target} is 0:0`);
      const parent = target.includes('/') ? target.slice(0, target.lastIndexOf('/')) : '';
      assert.ok(!(await readdir(join(diff, parent))).some((n) => n.startsWith('.wh.')), `no .wh. names in ${parent}`);
    }
    const opaque = layer.entries.filter((x) => x.whiteout === 'opaque').map((x) => x.path.replace(/\/?\.wh\.\.wh\.\.opq$/, ''));
    assert.ok(opaque.length > 0);
    for (const d of opaque) {
      assert.equal(xattr(join(diff, d), 'trusted.overlay.opaque'), 'y', `${d} trusted.overlay.opaque`);
      assert.equal(xattr(join(diff, d), 'user.overlay.opaque'), 'y', `${d} user.overlay.opaque`);
    }
    assert.equal(xattr(join(diff, opaque[0]!), 'user.no-such'), undefined, 'missing xattr: ENODATA');
    // A regular file's bytes.
    const file = layer.entries.find((x) => x.type === 'reg' && x.size > 0 && !x.meta && !x.whiteout)!;
    assert.equal(contentHash(await readFile(join(diff, file.path))), file.sha256);
    // The blob is the exact compressed layer.
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, digest);
    const blob = await readFile(join(dir, 'blob'));
    assert.equal(blob.length, layer.size);
    assert.equal(sha256(blob), digest);
    await registryLogSettled(registry);
    assert.ok(blobBytesServed(registry.log, digest) - before >= layer.size * 0.9, 'blob bytes come from the registry on demand');
  });

  it('eStargz landmark files are prefetched when a layer is looked up; reading them then costs no request', async () => {
    const exp = expected.get('estargz-ctrremote-prefetch')!;
    const digest = exp.images[0]!.layers[0]!;
    const layer = exp.layers[digest]!;
    const landmark = layer.entries.findIndex((e) => e.path === '.prefetch.landmark');
    const files = layer.entries.slice(0, landmark).filter((e) => e.type === 'reg' && e.size > 0);
    assert.ok(files.length > 0, 'files before the landmark');
    const gets = (): number => registry.log.filter((l) => l.includes(`/blobs/${digest}`) && /"GET /.test(l)).length;
    // A store of its own with an empty cache: nothing of the layer is cached yet.
    const own = await startStore(join(work, 'prefetch-store'), join(work, 'prefetch-cache'));
    try {
      const dir = join(own.dir, encodeRef(refOf('estargz-ctrremote-prefetch')), digest);
      await registryLogSettled(registry);
      const before = gets();
      assert.equal(await errnoOf(stat(join(dir, 'diff'))), '');
      const deadline = Date.now() + 15_000;
      while (!own.log.some((l) => l.includes('prefetched the files before the eStargz landmark') && l.includes(digest))) {
        assert.ok(Date.now() < deadline, 'the store logs the landmark prefetch');
        await new Promise((r) => setTimeout(r, 50));
      }
      await registryLogSettled(registry);
      const afterLookup = gets();
      assert.ok(afterLookup > before, 'the lookup read the TOC and the landmark span');
      for (const f of files) assert.equal(contentHash(await readFile(join(dir, 'diff', f.path))), f.sha256, f.path);
      await registryLogSettled(registry);
      assert.equal(gets(), afterLookup, 'the landmark files came from the prefetch');
    } finally {
      assert.equal(await own.stop(), 0);
    }
  });

  it('other local users get EACCES: they cannot make the store resolve images with its credentials', async () => {
    const ref = encodeRef(refOf('zstdchunked-skopeo118-layers'));
    // mkdtemp's 0700 would stop them before the store does.
    await chmod(work, 0o755);
    const asNobody = (...cmd: string[]): { status: number | null; stderr: string } => {
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd], { encoding: 'utf8' });
      return { status: r.status, stderr: r.stderr };
    };
    const denied = asNobody('cat', join(store.dir, ref, 'manifest'));
    assert.notEqual(denied.status, 0);
    assert.match(denied.stderr, /Permission denied/);
    assert.match(asNobody('ls', store.dir).stderr, /Permission denied/);
    assert.ok((await readFile(join(store.dir, ref, 'manifest'))).length > 0, 'the store user (root) reads it');
  });

  it('chain/, manifest and config views', async () => {
    const exp = expected.get('zstdchunked-skopeo118-layers')!;
    const img = exp.images[0]!;
    const ref = encodeRef(refOf('zstdchunked-skopeo118-layers'));
    assert.equal(sha256(await readFile(join(store.dir, ref, 'manifest'))), img.manifest_digest);
    assert.equal(sha256(await readFile(join(store.dir, ref, 'config'))), img.config_digest);
    const chain = join(layerDir('zstdchunked-skopeo118-layers', img.layers[2]!), 'chain');
    const found: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const name of await readdir(join(chain, rel))) {
        const p = rel ? `${rel}/${name}` : name;
        found.push(p);
        if ((await lstat(join(chain, p))).isDirectory()) await walk(p);
      }
    };
    await walk('');
    assert.deepEqual(found.sort(), img.merged.map((m) => m.path).filter((p) => p !== '').sort());
    const file = img.merged.find((m) => m.type === 'reg' && m.size > 0)!;
    assert.equal(contentHash(await readFile(join(chain, file.path))), file.sha256);
  });

  it('a multi-platform image: a blob digest of another platform is served with that platform\'s DiffID', async () => {
    const exp = expected.get('zstdchunked-skopeo118-multiarch')!;
    const arm = exp.images.find((i) => i.platform.architecture === 'arm64')!;
    const dir = layerDir('zstdchunked-skopeo118-multiarch', arm.layers[0]!);
    const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
    assert.equal(info['diff-digest'], arm.diff_ids[0]);
    const file = exp.layers[arm.layers[0]!]!.entries.find((e) => e.type === 'reg' && e.size > 0)!;
    assert.equal(contentHash(await readFile(join(dir, 'diff', file.path))), file.sha256);
  });

  it('answers ENOENT for what it cannot serve: plain gzip layers, unknown keys, bad names, use', async () => {
    const exp = expected.get('gzip-plain-basic')!;
    const gz = layerDir('gzip-plain-basic', exp.images[0]!.layers[0]!);
    for (const name of ['diff', 'info', 'blob']) assert.equal(await errnoOf(stat(join(gz, name))), 'ENOENT', `plain gzip ${name}`);
    await registryLogSettled(registry);
    assert.ok(blobBytesServed(registry.log, exp.images[0]!.layers[0]!) === 0, 'not a byte of the gzip layer was fetched');
    assert.equal(await errnoOf(stat(join(layerDir('zstdchunked-skopeo118-layers', 'sha256:' + '0'.repeat(64)), 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, 'not-base64!', 'sha256:' + '0'.repeat(64), 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, encodeRef(refOf('zstdchunked-skopeo118-layers')), 'not-a-digest', 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, encodeRef(`${registry.host}/no-such-repo:latest`), 'sha256:' + '0'.repeat(64), 'diff'))), 'ENOENT');
    const key = expected.get('zstdchunked-skopeo118-layers')!.images[0]!.layers[0]!;
    assert.equal(await errnoOf(stat(join(layerDir('zstdchunked-skopeo118-layers', key), 'use'))), 'ENOENT');
  });

  it('a registry that never answers: the lookup gives up after --lookup-timeout with ENOENT, and the miss is remembered', async () => {
    // A fault a real registry cannot produce: it accepts connections and never says a word.
    const sockets: Socket[] = [];
    const silent = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const quick = await startStore(join(work, 'quick-store'), join(work, 'cache'), ['--lookup-timeout', '1000', '--negative-ttl', '60000']);
    try {
      const ref = `127.0.0.1:${(silent.address() as AddressInfo).port}/silent:latest`;
      const diff = join(quick.dir, encodeRef(ref), 'sha256:' + '1'.repeat(64), 'diff');
      assert.equal(await errnoOf(stat(diff)), 'ENOENT');
      // The answer can reach the caller before the daemon's log line reaches its stream.
      for (let i = 0; i < 50 && !quick.log.some((l) => l.includes('not resolved within 1000 ms')); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(quick.log.some((l) => l.includes('not resolved within 1000 ms')), `the log says why: ${quick.log.slice(-5).join('\n')}`);
      assert.equal(await errnoOf(stat(diff)), 'ENOENT', 'asked again: the remembered miss');
    } finally {
      assert.equal(await quick.stop(), 0);
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('tocfs store status reports served layers, uses and misses', async () => {
    const exp = expected.get('zstdchunked-skopeo118-layers')!;
    const digest = exp.images[0]!.layers[0]!;
    const dir = layerDir('zstdchunked-skopeo118-layers', digest);
    await stat(join(dir, 'diff'));
    await errnoOf(open(join(dir, 'use'), 'w+'));
    await errnoOf(open(join(dir, 'use'), 'w+'));
    const gz = expected.get('gzip-plain-basic')!.images[0]!.layers[0]!;
    assert.equal(await errnoOf(stat(join(layerDir('gzip-plain-basic', gz), 'diff'))), 'ENOENT');
    let doc:
      | { images: Array<{ ref: string; manifest: string }>; layers: Array<{ ref: string; key: string; uses: number; fetchedBytes: number }>; misses: Array<{ key: string }>; memory?: { rssBytes: number; budgetBytes?: number; tierBytes: number; tierLimitBytes: number } }
      | undefined;
    for (let i = 0; i < 100; i++) {
      const res = await runCli(['store', 'status', '--json', store.dir]);
      if (res.code === 0) {
        doc = JSON.parse(res.stdout.toString());
        if (doc!.layers.some((l) => l.key === digest && l.uses === 2) && doc!.misses.some((m) => m.key === gz)) break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const entry = doc?.layers.find((l) => l.key === digest);
    assert.ok(entry, 'the layer is listed');
    assert.equal(entry.uses, 2);
    assert.ok(doc!.misses.some((m) => m.key === gz), 'the plain gzip layer is listed as not served');
    assert.ok(doc!.images.some((i) => i.ref === refOf('zstdchunked-skopeo118-layers') && i.manifest === exp.images[0]!.manifest_digest), 'the resolved image is listed');
    const mem = doc!.memory;
    assert.ok(mem, 'the status tells the memory');
    assert.ok(mem.rssBytes > 20e6 && mem.budgetBytes! >= 256 * 1024 ** 2, `resident ${mem.rssBytes} within daemon.memory ${mem.budgetBytes}`);
    assert.ok(mem.tierLimitBytes >= 4 * 1024 ** 2 && mem.tierBytes <= mem.tierLimitBytes, `memory tier ${mem.tierBytes} of ${mem.tierLimitBytes}`);
    // cache.memory_size is set nowhere here: the store's own default, not 1/16 of RAM.
    assert.ok(mem.tierLimitBytes <= STORE_MEMORY_TIER_BYTES, `memory tier limit ${mem.tierLimitBytes} within the store's default ${STORE_MEMORY_TIER_BYTES}`);
    const table = await runCli(['store', 'status', store.dir]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout.toString(), new RegExp(digest.slice(7, 19)));
    assert.match(table.stdout.toString(), /^memory: .* resident of daemon\.memory .*; memory tier .* \(may hold .*\)$/m);
  });

  it('SIGTERM unmounts cleanly and exits 0; a stale mount left by kill -9 is cleared by the next start', async () => {
    assert.equal(await store.stop('SIGTERM'), 0);
    assert.equal(await isFuseMounted(store.dir), false, 'unmounted after SIGTERM');
    store = await startStore(store.dir, join(work, 'cache'));
    store.child.kill('SIGKILL');
    await store.exited;
    assert.equal(await isFuseMounted(store.dir), true, 'kill -9 leaves the mount behind');
    assert.equal(await errnoOf(stat(join(store.dir, 'x'))), 'ENOTCONN');
    store = await startStore(store.dir, join(work, 'cache'));
    assert.ok(store.log.some((l) => l.includes('stale mount')), 'the stale mount was noticed');
    const digest = expected.get('zstdchunked-skopeo118-layers')!.images[0]!.layers[0]!;
    assert.equal(await errnoOf(stat(join(layerDir('zstdchunked-skopeo118-layers', digest), 'diff'))), '');
    const cli = await runCli(['store', 'status', '--json', join(work, 'nowhere')]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /no tocfs store is running at/);
  });
});

describe('tocfs store over a real registry, images tocfs builds', { skip: await fuseSkipReason() }, () => {
  let registry: TestRegistry;
  let work: string;
  let store: RunningStore;
  const built = new Map<string, BuiltImage>();
  let multi: BuiltMultiArchImage;
  const refOf = (image: string): string => `${registry.host}/${image}:latest`;
  const layerDir = (image: string, key: string): string => join(store.dir, encodeRef(refOf(image)), key);
  const blobOf = (image: string, digest: string): Promise<Buffer> => readFile(join(built.get(image)?.dir ?? multi.dir, 'blobs', 'sha256', digest.slice(7)));

  // Three zstd:chunked layers: a file replaced twice, a whiteout, an opaque directory.
  const LAYERS: FileSpec[][] = [
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=1\n' }, { path: 'etc/keep.conf', content: 'kept\n' }, { path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('store-big', 400_000) }, { path: 'data/old.txt', content: 'old\n' }, { path: 'opt', type: 'dir' }, { path: 'opt/sub', type: 'dir' }, { path: 'opt/sub/x', content: 'x\n' }],
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=2\n' }, { path: 'data', type: 'dir' }, { path: 'data/.wh.old.txt', content: '' }, { path: 'opt', type: 'dir' }, { path: 'opt/.wh..wh..opq', content: '' }, { path: 'opt/new', content: 'new\n' }],
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=3\n' }, { path: 'lib', type: 'dir' }, { path: 'lib/libz.so', content: seededBytes('store-libz', 50_000) }],
  ];
  const MERGED = ['data', 'data/big.bin', 'etc', 'etc/app.conf', 'etc/keep.conf', 'lib', 'lib/libz.so', 'opt', 'opt/new'];
  // eStargz: prioritized files before the landmark in the lower layer; whiteouts in the upper one
  // (big enough that its blob is not all in the tail the TOC probe reads).
  const PREFETCHED = ['etc/motd', 'bin/sh'];
  const ESGZ: FileSpec[][] = [
    [{ path: 'bin', type: 'dir' }, { path: 'bin/sh', content: seededBytes('store-sh', 30_000), mode: 0o755 }, { path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'motd\n' }, { path: 'usr', type: 'dir' }, { path: 'usr/big.bin', content: seededContent('store-esgz-big', 600_000) }, { path: 'usr/gone', content: 'gone\n' }, { path: 'var', type: 'dir' }, { path: 'var/cache', content: 'c\n' }],
    [{ path: 'usr', type: 'dir' }, { path: 'usr/.wh.gone', content: '' }, { path: 'var', type: 'dir' }, { path: 'var/.wh..wh..opq', content: '' }, { path: 'var/fresh', content: 'fresh\n' }, { path: 'etc', type: 'dir' }, { path: 'etc/issue', content: 'issue\n' }, { path: 'etc/upper.bin', content: seededContent('store-upper', 200_000) }],
  ];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-built-'));
    built.set('built-layers', await buildImage(join(work, 'built-layers'), { format: 'zstd:chunked', layers: LAYERS }));
    built.set('built-estargz', await buildImage(join(work, 'built-estargz'), { format: 'estargz', layers: ESGZ, prioritize: PREFETCHED }));
    built.set('built-gzip', await buildImage(join(work, 'built-gzip'), { format: 'gzip', layers: [LAYERS[0]!] }));
    multi = await buildMultiArchImage(join(work, 'built-multiarch'), 'zstd:chunked', [
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [[{ path: 'arch', content: 'amd64\n' }]] },
      { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [[{ path: 'arch', content: 'arm64\n' }]] },
    ]);
    registry = await startRegistry();
    for (const [name, img] of built) await registry.load(img.dir, name);
    await registry.load(multi.dir, 'built-multiarch');
    store = await startStore(join(work, 'store'), join(work, 'cache'));
  });

  after(async () => {
    await store?.stop().catch(() => undefined);
    if (work && (await isFuseMounted(join(work, 'store')))) execFileSync('fusermount', ['-uz', join(work, 'store')]);
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('TOC-digest keys (Podman ≥ 5.1): stat diff/info/blob, use, info with toc-digest and the DiffID flag, rmdir', async () => {
    const img = built.get('built-layers')!;
    const rootInodes = new Set<number>();
    for (const [i, layer] of img.layers.entries()) {
      const tocDigest = layer.annotations!['io.github.containers.zstd-chunked.manifest-checksum']!;
      const dir = layerDir('built-layers', tocDigest);
      for (const name of ['diff', 'info', 'blob']) assert.equal(await errnoOf(stat(join(dir, name))), '', `${name} of layer ${i} by TOC digest`);
      assert.equal(await errnoOf(open(join(dir, 'use'), 'w+')), 'ENOENT', 'creating use answers ENOENT (use counted)');
      const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
      assert.equal(info['toc-digest'], tocDigest, 'toc-digest equals the lookup key');
      assert.equal(info.flags['expected-layer-diffid'], img.diffIds[i]);
      assert.equal(info['diff-digest'], img.diffIds[i]);
      assert.equal(info['compressed-diff-digest'], layer.digest);
      assert.equal(info['compressed-size'], layer.size);
      assert.equal(info['diff-size'], (await zstdDecompress(await blobOf('built-layers', layer.digest))).length);
      assert.equal(info.compression, 4, 'zstd');
      assert.equal(await errnoOf(rmdir(dir)), 'ENOENT', 'rmdir answers ENOENT (release counted) and the directory stays');
      assert.equal(await errnoOf(stat(join(dir, 'diff'))), '');
      rootInodes.add((await stat(join(dir, 'diff'))).ino);
    }
    assert.equal(rootInodes.size, img.layers.length, 'each layer tree has inode numbers of its own (overlayfs sees them on one device)');
  });

  it('blob-digest keys (Podman 4.3.1) on eStargz with whiteouts: info, overlay-native diff tree, exact blob', async () => {
    const img = built.get('built-estargz')!;
    const layer = img.layers[1]!;
    const dir = layerDir('built-estargz', layer.digest);
    const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
    const bytes = await blobOf('built-estargz', layer.digest);
    assert.deepEqual(
      { d: info['diff-digest'], c: info['compressed-diff-digest'], s: info['compressed-size'], z: info.compression, u: info['diff-size'], t: info['toc-digest'] },
      { d: img.diffIds[1], c: layer.digest, s: layer.size, z: 2, u: gunzipSync(bytes).length, t: layer.annotations!['containerd.io/snapshot/stargz/toc.digest'] },
    );
    // Whiteouts: `.wh.NAME` is a 0:0 character device NAME; `.wh..wh..opq` is an opaque directory.
    const diff = join(dir, 'diff');
    const st = await stat(join(diff, 'usr/gone'));
    assert.ok(st.isCharacterDevice() && st.rdev === 0, 'usr/gone is a 0:0 character device');
    for (const d of ['usr', 'var']) assert.ok(!(await readdir(join(diff, d))).some((n) => n.startsWith('.wh.')), `no .wh. names in ${d}`);
    assert.deepEqual((await readdir(join(diff, 'var'))).sort(), ['fresh']);
    assert.equal(xattr(join(diff, 'var'), 'trusted.overlay.opaque'), 'y');
    assert.equal(xattr(join(diff, 'var'), 'user.overlay.opaque'), 'y');
    assert.equal(xattr(join(diff, 'usr'), 'trusted.overlay.opaque'), undefined, 'only the opaque directory says so');
    assert.equal(await readFile(join(diff, 'etc/issue'), 'utf8'), 'issue\n');
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, layer.digest);
    const blob = await readFile(join(dir, 'blob'));
    assert.ok(blob.equals(bytes), 'the blob is the exact compressed layer');
    await registryLogSettled(registry);
    assert.ok(blobBytesServed(registry.log, layer.digest) - before >= layer.size * 0.9, 'blob bytes come from the registry on demand');
  });

  it('eStargz landmark files are prefetched when a layer is looked up; reading them then costs no request', async () => {
    const img = built.get('built-estargz')!;
    const digest = img.layers[0]!.digest;
    const gets = (): number => registry.log.filter((l) => l.includes(`/blobs/${digest}`) && /"GET /.test(l)).length;
    const own = await startStore(join(work, 'prefetch-store'), join(work, 'prefetch-cache'));
    try {
      const dir = join(own.dir, encodeRef(refOf('built-estargz')), digest);
      await registryLogSettled(registry);
      const before = gets();
      assert.equal(await errnoOf(stat(join(dir, 'diff'))), '');
      const deadline = Date.now() + 15_000;
      while (!own.log.some((l) => l.includes('prefetched the files before the eStargz landmark') && l.includes(digest))) {
        assert.ok(Date.now() < deadline, 'the store logs the landmark prefetch');
        await new Promise((r) => setTimeout(r, 50));
      }
      await registryLogSettled(registry);
      const afterLookup = gets();
      assert.ok(afterLookup > before, 'the lookup read the TOC and the landmark span');
      assert.equal(await readFile(join(dir, 'diff', 'etc/motd'), 'utf8'), 'motd\n');
      assert.ok((await readFile(join(dir, 'diff', 'bin/sh'))).equals(seededBytes('store-sh', 30_000)));
      await registryLogSettled(registry);
      assert.equal(gets(), afterLookup, 'the landmark files came from the prefetch');
      assert.ok((await readFile(join(dir, 'diff', 'usr/big.bin'))).length === 600_000);
      await registryLogSettled(registry);
      assert.ok(gets() > afterLookup, 'a file after the landmark is fetched when read (the check above can fail)');
    } finally {
      assert.equal(await own.stop(), 0);
    }
  });

  it('other local users get EACCES: they cannot make the store resolve images with its credentials', async () => {
    const ref = encodeRef(refOf('built-layers'));
    await chmod(work, 0o755);
    const asNobody = (...cmd: string[]): { status: number | null; stderr: string } => {
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd], { encoding: 'utf8' });
      return { status: r.status, stderr: r.stderr };
    };
    const denied = asNobody('cat', join(store.dir, ref, 'manifest'));
    assert.notEqual(denied.status, 0);
    assert.match(denied.stderr, /Permission denied/);
    assert.match(asNobody('ls', store.dir).stderr, /Permission denied/);
    assert.ok((await readFile(join(store.dir, ref, 'manifest'))).length > 0, 'the store user (root) reads it');
  });

  it('chain/, manifest and config views', async () => {
    const img = built.get('built-layers')!;
    const ref = encodeRef(refOf('built-layers'));
    assert.equal(sha256(await readFile(join(store.dir, ref, 'manifest'))), img.manifestDigest);
    assert.equal(sha256(await readFile(join(store.dir, ref, 'config'))), img.configDigest);
    const chain = join(layerDir('built-layers', img.layers[2]!.digest), 'chain');
    const found: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const name of await readdir(join(chain, rel))) {
        const p = rel ? `${rel}/${name}` : name;
        found.push(p);
        if ((await lstat(join(chain, p))).isDirectory()) await walk(p);
      }
    };
    await walk('');
    assert.deepEqual(found.sort(), MERGED);
    assert.equal(await readFile(join(chain, 'etc/app.conf'), 'utf8'), 'version=3\n');
    assert.ok((await readFile(join(chain, 'data/big.bin'))).equals(seededBytes('store-big', 400_000)));
    assert.equal(await readFile(join(layerDir('built-layers', img.layers[1]!.digest), 'chain', 'etc/app.conf'), 'utf8'), 'version=2\n', 'the chain of a lower layer stops there');
  });

  it('a multi-platform image: a blob digest of another platform is served with that platform\'s DiffID', async () => {
    const arm = multi.images.find((i) => i.platform.architecture === 'arm64')!;
    const dir = layerDir('built-multiarch', arm.layers[0]!.digest);
    const info = JSON.parse(await readFile(join(dir, 'info'), 'utf8'));
    assert.equal(info['diff-digest'], arm.diffIds[0]);
    assert.equal(await readFile(join(dir, 'diff', 'arch'), 'utf8'), 'arm64\n');
  });

  it('answers ENOENT for what it cannot serve: plain gzip layers, unknown keys, bad names, use', async () => {
    const gz = built.get('built-gzip')!.layers[0]!.digest;
    for (const name of ['diff', 'info', 'blob']) assert.equal(await errnoOf(stat(join(layerDir('built-gzip', gz), name))), 'ENOENT', `plain gzip ${name}`);
    await registryLogSettled(registry);
    assert.equal(blobBytesServed(registry.log, gz), 0, 'not a byte of the gzip layer was fetched');
    assert.equal(await errnoOf(stat(join(layerDir('built-layers', 'sha256:' + '0'.repeat(64)), 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, 'not-base64!', 'sha256:' + '0'.repeat(64), 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, encodeRef(refOf('built-layers')), 'not-a-digest', 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(store.dir, encodeRef(`${registry.host}/no-such-repo:latest`), 'sha256:' + '0'.repeat(64), 'diff'))), 'ENOENT');
    assert.equal(await errnoOf(stat(join(layerDir('built-layers', built.get('built-layers')!.layers[0]!.digest), 'use'))), 'ENOENT');
  });

  it('a registry that never answers: the lookup gives up after --lookup-timeout with ENOENT, and the miss is remembered', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const quick = await startStore(join(work, 'quick-store'), join(work, 'cache'), ['--lookup-timeout', '1000', '--negative-ttl', '60000']);
    try {
      const ref = `127.0.0.1:${(silent.address() as AddressInfo).port}/silent:latest`;
      const diff = join(quick.dir, encodeRef(ref), 'sha256:' + '1'.repeat(64), 'diff');
      assert.equal(await errnoOf(stat(diff)), 'ENOENT');
      for (let i = 0; i < 50 && !quick.log.some((l) => l.includes('not resolved within 1000 ms')); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(quick.log.some((l) => l.includes('not resolved within 1000 ms')), `the log says why: ${quick.log.slice(-5).join('\n')}`);
      assert.equal(await errnoOf(stat(diff)), 'ENOENT', 'asked again: the remembered miss');
    } finally {
      assert.equal(await quick.stop(), 0);
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('tocfs store status reports served layers, uses and misses', async () => {
    const img = built.get('built-layers')!;
    const digest = img.layers[0]!.digest;
    const dir = layerDir('built-layers', digest);
    await stat(join(dir, 'diff'));
    await errnoOf(open(join(dir, 'use'), 'w+'));
    await errnoOf(open(join(dir, 'use'), 'w+'));
    const gz = built.get('built-gzip')!.layers[0]!.digest;
    assert.equal(await errnoOf(stat(join(layerDir('built-gzip', gz), 'diff'))), 'ENOENT');
    let doc: { images: Array<{ ref: string; manifest: string }>; layers: Array<{ ref: string; key: string; uses: number }>; misses: Array<{ key: string }> } | undefined;
    for (let i = 0; i < 100; i++) {
      const res = await runCli(['store', 'status', '--json', store.dir]);
      if (res.code === 0) {
        doc = JSON.parse(res.stdout.toString());
        if (doc!.layers.some((l) => l.key === digest && l.uses === 2) && doc!.misses.some((m) => m.key === gz)) break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const entry = doc?.layers.find((l) => l.key === digest);
    assert.ok(entry, 'the layer is listed');
    assert.equal(entry.uses, 2);
    assert.ok(doc!.misses.some((m) => m.key === gz), 'the plain gzip layer is listed as not served');
    assert.ok(doc!.images.some((i) => i.ref === refOf('built-layers') && i.manifest === img.manifestDigest), 'the resolved image is listed');
    const table = await runCli(['store', 'status', store.dir]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout.toString(), new RegExp(digest.slice(7, 19)));
  });

  it('SIGTERM unmounts cleanly and exits 0; a stale mount left by kill -9 is cleared by the next start', async () => {
    assert.equal(await store.stop('SIGTERM'), 0);
    assert.equal(await isFuseMounted(store.dir), false, 'unmounted after SIGTERM');
    store = await startStore(store.dir, join(work, 'cache'));
    store.child.kill('SIGKILL');
    await store.exited;
    assert.equal(await isFuseMounted(store.dir), true, 'kill -9 leaves the mount behind');
    assert.equal(await errnoOf(stat(join(store.dir, 'x'))), 'ENOTCONN');
    store = await startStore(store.dir, join(work, 'cache'));
    assert.ok(store.log.some((l) => l.includes('stale mount')), 'the stale mount was noticed');
    assert.equal(await errnoOf(stat(join(layerDir('built-layers', built.get('built-layers')!.layers[0]!.digest), 'diff'))), '');
    const cli = await runCli(['store', 'status', '--json', join(work, 'nowhere')]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /no tocfs store is running at/);
  });
});
