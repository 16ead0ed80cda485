/**
 * End to end with Debian's Podman 4.3.1: a real docker-registry on 127.0.0.1 holding
 * zstd:chunked and eStargz images (built here — never skipped for want of the corpus — and
 * from the corpus), `tocfs store` running, and
 * Podman (runc, cgroupfs, overlay, its own root/runroot and a private storage.conf naming
 * the store) pulling and running them. The registry's access log shows what was fetched.
 *
 * The corpus images hold no programs, so containers run the host's `cat`/`ls` through the
 * host's dynamic loader from a read-only bind mount of / at /host: what they read is the
 * container's root filesystem, i.e. overlayfs over the store's `diff` trees.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { blobBytesServed, startRegistry, wholeBlobGetsByOthers, type TestRegistry } from './helpers/registry.js';
import { isFuseMounted, registryLogSettled, startStore, type RunningStore } from './helpers/store.js';
import { Podman, PODMAN_FLAVORS, unmountUnder } from './helpers/podman.js';
import type { TrixieNamespace } from './helpers/trixie.js';

const noCorpus = !HAVE_CORPUS && `corpus not found at ${CORPUS_DIR}`;

/** Files Podman itself puts into a container's /etc. */
const PODMAN_ETC_FILES = ['hostname', 'hosts', 'mtab', 'resolv.conf'];

const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

for (const flavor of PODMAN_FLAVORS) describe(`tocfs store with ${flavor.name}, corpus images`, { skip: noCorpus || flavor.skip, timeout: 300_000 }, () => {
  let registry: TestRegistry;
  let store: RunningStore;
  let ns: TrixieNamespace | null = null;
  let podman: Podman;
  let work: string;
  let built: { digest: string; size: number };
  const cleanups: Array<() => Promise<void>> = [];
  const ref = (repo: string): string => `${registry.host}/${repo}:latest`;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-podman-'));
    registry = await startRegistry();
    for (const image of ['zstdchunked-skopeo118-basic', 'zstdchunked-skopeo118-layers', 'estargz-ctrremote-prefetch', 'gzip-plain-basic', 'zstdchunked-podman4-basic']) await registry.load(join(CORPUS_DIR, image));
    // An eStargz image made by tocfs's own writer: a big incompressible file, a small one, and a whiteout in the upper layer.
    const img = await buildImage(join(work, 'built'), {
      format: 'estargz',
      layers: [
        [{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('big', 8 * 1024 * 1024) }, { path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'old motd\n' }, { path: 'etc/gone', content: 'to be deleted\n' }],
        [{ path: 'etc', type: 'dir' }, { path: 'etc/.wh.gone', content: '' }, { path: 'etc/motd', content: 'hello from a tocfs-built eStargz layer\n' }],
      ],
    });
    built = { digest: img.layers[0]!.digest, size: img.layers[0]!.size };
    await registry.load(img.dir, 'built-estargz');
    store = await startStore(join(work, 'store'), join(work, 'cache'));
    ns = await flavor.enter([work]);
    podman = await Podman.create(work, store.dir, registry.host, ns);
  });

  after(async () => {
    for (const c of cleanups) await c().catch(() => undefined);
    await podman?.cleanup().catch(() => undefined);
    await ns?.close();
    const code = await store?.stop('SIGTERM');
    if (store) assert.equal(code, 0, `tocfs store exited ${code} on SIGTERM:\n${store.log.slice(-20).join('\n')}`);
    if (store) assert.equal(await isFuseMounted(store.dir), false, 'the store unmounted cleanly on SIGTERM');
    if (work) {
      await unmountUnder(work);
      await rm(work, { recursive: true, force: true });
    }
    await registry?.stop();
  });

  it('pulls a zstd:chunked image without downloading its layer, and runs cat from it', async () => {
    const exp = loadExpected('zstdchunked-skopeo118-basic');
    const image = exp.images[0]!;
    const digest = image.layers[0]!;
    const layer = exp.layers[digest]!;
    await podman.ok(['pull', '--tls-verify=false', ref('zstdchunked-skopeo118-basic')]);
    await registryLogSettled(registry);
    const pulled = blobBytesServed(registry.log, digest);
    assert.deepEqual(wholeBlobGetsByOthers(registry.log, digest), [], 'Podman did not download the layer itself');
    const tocStart = Number((layer.format.footer as Record<string, number>).manifest_offset) - 8;
    assert.ok(pulled <= layer.size - tocStart + 1024, `the pull fetched ${pulled} bytes of the ${layer.size}-byte layer: more than its TOC, tar-split and footer (${layer.size - tocStart})`);
    assert.ok((await podman.storeLayers()).some((l) => l.endsWith(podman.storeKey(layer))), 'the layer is linked to the store');

    const file = image.merged.filter((m) => m.type === 'reg' && m.size > 50_000 && m.size < 1_000_000).sort((a, b) => b.size - a.size)[0]!;
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, digest);
    const out = await podman.exec(ref('zstdchunked-skopeo118-basic'), '/usr/bin/cat', `/${file.path}`);
    assert.equal(hex(out), file.sha256, `cat /${file.path} prints the file`);
    await registryLogSettled(registry);
    const ran = blobBytesServed(registry.log, digest) - before;
    const total = pulled + ran;
    process.stdout.write(`# zstd:chunked ${layer.size} B layer: pull fetched ${pulled} B, cat of a ${file.size} B file fetched ${ran} B; total ${total} B = ${((100 * total) / layer.size).toFixed(1)} % of the layer\n`);
    assert.ok(total < layer.size / 4, `pull + run fetched ${total} of ${layer.size} bytes`);
  });

  it('exporting a store layer (podman push to dir:) reads the store\'s blob and yields the layer\'s DiffID', async () => {
    const exp = loadExpected('zstdchunked-skopeo118-basic');
    const image = exp.images[0]!;
    const out = join(work, 'export');
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, image.layers[0]!);
    await podman.ok(['push', ref('zstdchunked-skopeo118-basic'), `dir:${out}`]);
    await registryLogSettled(registry);
    assert.ok(blobBytesServed(registry.log, image.layers[0]!) - before >= exp.layers[image.layers[0]!]!.size, 'the store read the whole blob from the registry for the export');
    // c/image asks storage for the layer uncompressed: c/storage decompresses the store's blob.
    const names = await readdir(out);
    const diffId = image.diff_ids[0]!.slice('sha256:'.length);
    assert.ok(names.includes(diffId), `the exported layer hashes to the DiffID (dir: names blobs by digest): ${names.join(' ')}`);
    assert.equal(hex(await readFile(join(out, diffId))), diffId);
  });

  for (const repo of ['zstdchunked-skopeo118-layers', 'estargz-ctrremote-prefetch']) {
    it(`${repo}: whiteouts and opaque directories as Podman shows them`, async () => {
      const exp = loadExpected(repo);
      const image = exp.images[0]!;
      await podman.ok(['pull', '--tls-verify=false', ref(repo)]);
      await registryLogSettled(registry);
      for (const d of image.layers) assert.equal(blobBytesServed(registry.log, d) <= exp.layers[d]!.size, true);
      for (const d of image.layers) assert.deepEqual(wholeBlobGetsByOthers(registry.log, d), [], 'Podman did not download a layer itself');
      assert.equal((await podman.storeLayers()).filter((l) => image.layers.some((d) => l.endsWith(podman.storeKey(exp.layers[d]!)))).length, image.layers.length, 'every layer comes from the store');
      // Directories touched by whiteouts: the listing is exactly the merged view of expected.json.
      const dirs = new Set<string>();
      for (const d of image.layers) for (const e of exp.layers[d]!.entries) if (e.whiteout) dirs.add(e.path.slice(0, e.path.lastIndexOf('/')));
      for (const dir of dirs) {
        const want = image.merged.filter((m) => m.path.startsWith(dir + '/') && !m.path.slice(dir.length + 1).includes('/')).map((m) => m.path.slice(dir.length + 1)).sort();
        const got = (await podman.exec(ref(repo), '/usr/bin/ls', '-A1', `/${dir}`)).toString().split('\n').filter((n) => n && !(dir === 'etc' && PODMAN_ETC_FILES.includes(n))).sort();
        assert.deepEqual(got, want, `ls /${dir}`);
      }
      const file = image.merged.find((m) => m.type === 'reg' && m.size > 0 && m.layer_index === image.layers.length - 1)!;
      assert.equal(hex(await podman.exec(ref(repo), '/usr/bin/cat', `/${file.path}`)), file.sha256, `cat /${file.path}`);
    });
  }

  it('an eStargz image built by tocfs: whiteout applied, small file read, the big one never fetched', async () => {
    await podman.ok(['pull', '--tls-verify=false', ref('built-estargz')]);
    assert.equal((await podman.exec(ref('built-estargz'), '/usr/bin/cat', '/etc/motd')).toString(), 'hello from a tocfs-built eStargz layer\n');
    const etc = (await podman.exec(ref('built-estargz'), '/usr/bin/ls', '-A1', '/etc')).toString().split('\n');
    assert.ok(etc.includes('motd') && !etc.includes('gone'), `/etc lists motd and not the whited-out file: ${etc.join(' ')}`);
    await registryLogSettled(registry);
    const fetched = blobBytesServed(registry.log, built.digest);
    process.stdout.write(`# tocfs-built eStargz ${built.size} B layer: ${fetched} B fetched for pull + 2 runs\n`);
    assert.ok(fetched < built.size / 10, `fetched ${fetched} of ${built.size} bytes of the layer holding the 8 MiB file`);
  });

  it('an image of plain gzip layers still pulls and runs (Podman downloads it itself)', async () => {
    const exp = loadExpected('gzip-plain-basic');
    const image = exp.images[0]!;
    // Its own Podman storage: the image has the same config and DiffIDs as zstdchunked-skopeo118-basic, which another storage would reuse.
    const podman = await Podman.create(join(work, 'gzip'), store.dir, registry.host, ns);
    cleanups.push(() => podman.cleanup());
    await podman.ok(['pull', '--tls-verify=false', ref('gzip-plain-basic')]);
    await registryLogSettled(registry);
    assert.equal(blobBytesServed(registry.log, image.layers[0]!), exp.layers[image.layers[0]!]!.size, 'Podman fetched the whole layer once');
    assert.equal(wholeBlobGetsByOthers(registry.log, image.layers[0]!).length, 1, 'the one download was Podman\'s own');
    assert.ok(!(await podman.storeLayers()).some((l) => l.endsWith(image.layers[0]!)), 'the layer is not linked to the store');
    const file = image.merged.find((m) => m.type === 'reg' && m.size > 1000 && m.size < 100_000)!;
    assert.equal(hex(await podman.exec(ref('gzip-plain-basic'), '/usr/bin/cat', `/${file.path}`)), file.sha256);
  });

  it('an image whose config DiffID does not match its layer (Podman 4\'s zstd:chunked): 4.3.1 runs it from the store; Podman 5 refuses it, store or not', async () => {
    const exp = loadExpected('zstdchunked-podman4-basic');
    const image = exp.images[0]!;
    const layer = exp.layers[image.layers[0]!]!;
    assert.equal(layer.diff_id_matches, false, 'the corpus says the config DiffID is not the layer\'s');
    // Its own Podman storage: its config DiffID is zstdchunked-skopeo118-basic's, which another storage would reuse.
    const own = await Podman.create(join(work, 'diffid'), store.dir, registry.host, ns);
    cleanups.push(() => own.cleanup());
    const pull = await own.run(['pull', '--tls-verify=false', ref('zstdchunked-podman4-basic')]);
    if (!flavor.name.startsWith('Podman 5')) {
      assert.equal(pull.code, 0, pull.stderr);
      assert.ok((await own.storeLayers()).some((l) => l.endsWith(layer.digest)), 'the layer is linked to the store');
      const file = image.merged.find((m) => m.type === 'reg' && m.size > 1000 && m.size < 100_000)!;
      assert.equal(hex(await own.exec(ref('zstdchunked-podman4-basic'), '/usr/bin/cat', `/${file.path}`)), file.sha256);
      return;
    }
    // Podman 5 checks the DiffID of a layer it unpacks itself (it does not know the old
    // io.containers.… TOC annotation, so it never asks the store): the same refusal without a store.
    const refusal = /does not match config's DiffID/;
    assert.notEqual(pull.code, 0, 'Podman 5 refused the image');
    assert.match(pull.stderr, refusal);
    const alone = await Podman.create(join(work, 'no-store'), null, registry.host, ns);
    cleanups.push(() => alone.cleanup());
    const without = await alone.run(['pull', '--tls-verify=false', ref('zstdchunked-podman4-basic')]);
    assert.notEqual(without.code, 0);
    assert.match(without.stderr, refusal, 'Podman 5 with no additional layer store refuses it the same way: the image, not tocfs');
  });

  it('podman rmi releases the store layers (rmdir) and the store keeps serving', async () => {
    await podman.ok(['rmi', '-f', ref('built-estargz')]);
    const released = store.log.some((l) => l.includes('"msg":"release"'));
    assert.ok(released, 'the store saw a release');
    await podman.ok(['pull', '--tls-verify=false', ref('built-estargz')]);
    assert.equal((await podman.exec(ref('built-estargz'), '/usr/bin/cat', '/etc/motd')).toString(), 'hello from a tocfs-built eStargz layer\n');
  });
});

for (const flavor of PODMAN_FLAVORS) describe(`tocfs store with ${flavor.name}, images tocfs builds`, { skip: flavor.skip, timeout: 300_000 }, () => {
  let registry: TestRegistry;
  let store: RunningStore;
  let ns: TrixieNamespace | null = null;
  let podman: Podman;
  let work: string;
  const images = new Map<string, BuiltImage>();
  const cleanups: Array<() => Promise<void>> = [];
  const ref = (repo: string): string => `${registry.host}/${repo}:latest`;
  const MEDIUM = seededBytes('podman-medium', 300_000);
  // One zstd:chunked layer: a big file the test never reads, and a medium one it cats.
  const BASIC: FileSpec[] = [
    { path: 'data', type: 'dir' },
    { path: 'data/big.bin', content: seededContent('podman-big', 8 * 1024 * 1024) },
    { path: 'data/medium.bin', content: MEDIUM },
    { path: 'etc', type: 'dir' },
    { path: 'etc/app.conf', content: 'version=1\n' },
  ];
  // Whiteouts and an opaque directory across two layers.
  const LAYERS: FileSpec[][] = [
    [{ path: 'etc', type: 'dir' }, { path: 'etc/app.conf', content: 'version=1\n' }, { path: 'etc/gone.conf', content: 'gone\n' }, { path: 'opt', type: 'dir' }, { path: 'opt/old-a', content: 'a\n' }, { path: 'opt/old-b', content: 'b\n' }, { path: 'srv', type: 'dir' }, { path: 'srv/keep', content: 'keep\n' }],
    [{ path: 'etc', type: 'dir' }, { path: 'etc/.wh.gone.conf', content: '' }, { path: 'etc/app.conf', content: 'version=2\n' }, { path: 'opt', type: 'dir' }, { path: 'opt/.wh..wh..opq', content: '' }, { path: 'opt/new', content: 'new\n' }, { path: 'srv', type: 'dir' }, { path: 'srv/added', content: 'added\n' }],
  ];
  const MERGED_DIRS: Record<string, string[]> = { etc: ['app.conf'], opt: ['new'], srv: ['added', 'keep'] };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-store-podman-built-'));
    images.set('built-basic', await buildImage(join(work, 'built-basic'), { format: 'zstd:chunked', layers: [BASIC] }));
    images.set('built-layers-zc', await buildImage(join(work, 'built-layers-zc'), { format: 'zstd:chunked', layers: LAYERS }));
    images.set('built-layers-esgz', await buildImage(join(work, 'built-layers-esgz'), { format: 'estargz', layers: LAYERS }));
    images.set('built-estargz', await buildImage(join(work, 'built-estargz'), {
      format: 'estargz',
      layers: [
        [{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('big', 8 * 1024 * 1024) }, { path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'old motd\n' }, { path: 'etc/gone', content: 'to be deleted\n' }],
        [{ path: 'etc', type: 'dir' }, { path: 'etc/.wh.gone', content: '' }, { path: 'etc/motd', content: 'hello from a tocfs-built eStargz layer\n' }],
      ],
    }));
    // Two versions of an app: the same base layer (byte for byte) under a different top layer.
    const base: FileSpec[] = [{ path: 'usr', type: 'dir' }, { path: 'usr/lib', type: 'dir' }, { path: 'usr/lib/runtime.so', content: seededBytes('podman-runtime', 200_000) }];
    images.set('app-v1', await buildImage(join(work, 'app-v1'), { format: 'zstd:chunked', layers: [base, [{ path: 'app', type: 'dir' }, { path: 'app/VERSION', content: '1\n' }]] }));
    images.set('app-v2', await buildImage(join(work, 'app-v2'), { format: 'zstd:chunked', layers: [base, [{ path: 'app', type: 'dir' }, { path: 'app/VERSION', content: '2\n' }]] }));
    images.set('built-gzip', await buildImage(join(work, 'built-gzip'), { format: 'gzip', layers: [[{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'plain gzip\n' }, { path: 'data', type: 'dir' }, { path: 'data/medium.bin', content: MEDIUM }]] }));
    registry = await startRegistry();
    for (const [name, img] of images) await registry.load(img.dir, name);
    store = await startStore(join(work, 'store'), join(work, 'cache'));
    ns = await flavor.enter([work]);
    podman = await Podman.create(work, store.dir, registry.host, ns);
  });

  after(async () => {
    for (const c of cleanups) await c().catch(() => undefined);
    await podman?.cleanup().catch(() => undefined);
    await ns?.close();
    const code = await store?.stop('SIGTERM');
    if (store) assert.equal(code, 0, `tocfs store exited ${code} on SIGTERM:\n${store.log.slice(-20).join('\n')}`);
    if (store) assert.equal(await isFuseMounted(store.dir), false, 'the store unmounted cleanly on SIGTERM');
    if (work) {
      await unmountUnder(work);
      await rm(work, { recursive: true, force: true });
    }
    await registry?.stop();
  });

  it('pulls a zstd:chunked image without downloading its layer, and runs cat from it', async () => {
    const layer = images.get('built-basic')!.layers[0]!;
    await podman.ok(['pull', '--tls-verify=false', ref('built-basic')]);
    await registryLogSettled(registry);
    const pulled = blobBytesServed(registry.log, layer.digest);
    assert.deepEqual(wholeBlobGetsByOthers(registry.log, layer.digest), [], 'Podman did not download the layer itself');
    const tocStart = Number(layer.annotations!['io.github.containers.zstd-chunked.manifest-position']!.split(':')[0]) - 8;
    assert.ok(pulled <= layer.size - tocStart + 1024, `the pull fetched ${pulled} bytes of the ${layer.size}-byte layer: more than its TOC, tar-split and footer (${layer.size - tocStart})`);
    assert.ok((await podman.storeLayers()).some((l) => l.endsWith(podman.storeKey(layer))), 'the layer is linked to the store');
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, layer.digest);
    assert.ok((await podman.exec(ref('built-basic'), '/usr/bin/cat', '/data/medium.bin')).equals(MEDIUM), 'cat /data/medium.bin prints the file');
    await registryLogSettled(registry);
    const total = pulled + blobBytesServed(registry.log, layer.digest) - before;
    assert.ok(total < layer.size / 4, `pull + run fetched ${total} of ${layer.size} bytes`);
  });

  it('exporting a store layer (podman push to dir:) reads the store\'s blob and yields the layer\'s DiffID', async () => {
    const img = images.get('built-basic')!;
    const out = join(work, 'export');
    await registryLogSettled(registry);
    const before = blobBytesServed(registry.log, img.layers[0]!.digest);
    await podman.ok(['push', ref('built-basic'), `dir:${out}`]);
    await registryLogSettled(registry);
    assert.ok(blobBytesServed(registry.log, img.layers[0]!.digest) - before >= img.layers[0]!.size, 'the store read the whole blob from the registry for the export');
    const diffId = img.diffIds[0]!.slice('sha256:'.length);
    const names = await readdir(out);
    assert.ok(names.includes(diffId), `the exported layer hashes to the DiffID (dir: names blobs by digest): ${names.join(' ')}`);
    assert.equal(hex(await readFile(join(out, diffId))), diffId);
  });

  for (const repo of ['built-layers-zc', 'built-layers-esgz']) {
    it(`${repo}: whiteouts and opaque directories as Podman shows them`, async () => {
      const img = images.get(repo)!;
      await podman.ok(['pull', '--tls-verify=false', ref(repo)]);
      await registryLogSettled(registry);
      for (const l of img.layers) assert.ok(blobBytesServed(registry.log, l.digest) <= l.size);
      for (const l of img.layers) assert.deepEqual(wholeBlobGetsByOthers(registry.log, l.digest), [], 'Podman did not download a layer itself');
      assert.equal((await podman.storeLayers()).filter((l) => img.layers.some((d) => l.endsWith(podman.storeKey(d)))).length, img.layers.length, 'every layer comes from the store');
      for (const [dir, want] of Object.entries(MERGED_DIRS)) {
        const got = (await podman.exec(ref(repo), '/usr/bin/ls', '-A1', `/${dir}`)).toString().split('\n').filter((n) => n && !(dir === 'etc' && PODMAN_ETC_FILES.includes(n))).sort();
        assert.deepEqual(got, want, `ls /${dir}`);
      }
      assert.equal((await podman.exec(ref(repo), '/usr/bin/cat', '/etc/app.conf')).toString(), 'version=2\n');
    });
  }

  it('an eStargz image built by tocfs: whiteout applied, small file read, the big one never fetched', async () => {
    const layer = images.get('built-estargz')!.layers[0]!;
    await podman.ok(['pull', '--tls-verify=false', ref('built-estargz')]);
    assert.equal((await podman.exec(ref('built-estargz'), '/usr/bin/cat', '/etc/motd')).toString(), 'hello from a tocfs-built eStargz layer\n');
    const etc = (await podman.exec(ref('built-estargz'), '/usr/bin/ls', '-A1', '/etc')).toString().split('\n');
    assert.ok(etc.includes('motd') && !etc.includes('gone'), `/etc lists motd and not the whited-out file: ${etc.join(' ')}`);
    await registryLogSettled(registry);
    const fetched = blobBytesServed(registry.log, layer.digest);
    assert.ok(fetched < layer.size / 10, `fetched ${fetched} of ${layer.size} bytes of the layer holding the 8 MiB file`);
  });

  it('an image of plain gzip layers still pulls and runs (Podman downloads it itself)', async () => {
    const layer = images.get('built-gzip')!.layers[0]!;
    const own = await Podman.create(join(work, 'gzip'), store.dir, registry.host, ns);
    cleanups.push(() => own.cleanup());
    await own.ok(['pull', '--tls-verify=false', ref('built-gzip')]);
    await registryLogSettled(registry);
    assert.equal(blobBytesServed(registry.log, layer.digest), layer.size, 'Podman fetched the whole layer once');
    assert.equal(wholeBlobGetsByOthers(registry.log, layer.digest).length, 1, 'the one download was Podman\'s own');
    assert.ok(!(await own.storeLayers()).some((l) => l.endsWith(layer.digest)), 'the layer is not linked to the store');
    assert.ok((await own.exec(ref('built-gzip'), '/usr/bin/cat', '/data/medium.bin')).equals(MEDIUM));
  });

  it('two versions of an image sharing a layer: one store layer under both, and removing one keeps the other running', async () => {
    const [v1, v2] = [images.get('app-v1')!, images.get('app-v2')!];
    assert.equal(v1.layers[0]!.digest, v2.layers[0]!.digest, 'the writer made the shared base layer byte for byte the same');
    await podman.ok(['pull', '--tls-verify=false', ref('app-v1')]);
    await podman.ok(['pull', '--tls-verify=false', ref('app-v2')]);
    await registryLogSettled(registry);
    for (const l of [...v1.layers, v2.layers[1]!]) assert.deepEqual(wholeBlobGetsByOthers(registry.log, l.digest), [], 'Podman did not download a layer itself');
    const links = await podman.storeLayers();
    assert.equal(links.filter((l) => l.endsWith(podman.storeKey(v1.layers[0]!))).length, 1, 'the base layer is one Podman layer, from the store');
    for (const top of [v1.layers[1]!, v2.layers[1]!]) assert.ok(links.some((l) => l.endsWith(podman.storeKey(top))), 'each top layer comes from the store');
    const runtime = seededBytes('podman-runtime', 200_000);
    for (const [tag, version] of [['app-v1', '1\n'], ['app-v2', '2\n']] as const) {
      assert.equal((await podman.exec(ref(tag), '/usr/bin/cat', '/app/VERSION')).toString(), version);
      assert.ok((await podman.exec(ref(tag), '/usr/bin/cat', '/usr/lib/runtime.so')).equals(runtime), `${tag}: the shared file reads right`);
    }
    await podman.ok(['rmi', ref('app-v1')]);
    assert.ok((await podman.exec(ref('app-v2'), '/usr/bin/cat', '/usr/lib/runtime.so')).equals(runtime), 'v2 still runs from the shared layer after v1 is removed');
    assert.ok((await podman.storeLayers()).some((l) => l.endsWith(podman.storeKey(v1.layers[0]!))), 'the shared layer stays linked');
  });

  it('podman rmi releases the store layers (rmdir) and the store keeps serving', async () => {
    await podman.ok(['rmi', '-f', ref('built-estargz')]);
    assert.ok(store.log.some((l) => l.includes('"msg":"release"')), 'the store saw a release');
    await podman.ok(['pull', '--tls-verify=false', ref('built-estargz')]);
    assert.equal((await podman.exec(ref('built-estargz'), '/usr/bin/cat', '/etc/motd')).toString(), 'hello from a tocfs-built eStargz layer\n');
  });
});
