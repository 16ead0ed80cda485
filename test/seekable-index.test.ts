/**
 * Lazy pulls of plain gzip images through seekable indexes, end to end: an image of plain
 * tar+gzip layers (tocfs's own writer) in a real docker-registry on loopback; `tocfs index
 * --push` publishes its indexes beside it; mounts on fresh caches then read the image lazily
 * when index.trust names the repository, whole when it does not, and stop a layer whose
 * published index lies once the background check of the whole layer catches it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OciLayoutWriter } from '../src/convert/layout.js';
import { decodePlainIndex, encodePlainIndex } from '../src/formats/plain-index.js';
import { pushIndexes } from '../src/layer/published-index.js';
import { runCli } from './helpers/cli.js';
import { buildImage, seededBytes, seededContent, type BuiltImage } from './helpers/images.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { compareView, mountView } from './helpers/fs-expected.js';
import { Mounts } from './helpers/mounts.js';
import { isolatedCliEnv, isolatedRegistryOptions } from './helpers/registry-env.js';
import { blobBytesServed, blobGets, startRegistry, wholeBlobGetsByOthers, type TestRegistry } from './helpers/registry.js';
import { registryLogSettled, startStore } from './helpers/store.js';
import { Podman, PODMAN_FLAVORS, podmanSkipReason } from './helpers/podman.js';
import { sha256 } from '../src/digest.js';
import { mountFiles } from '../src/daemon/state.js';

const BIG = 24 * 1024 * 1024;
const MOTD = 'a plain gzip layer, read lazily\n';
const skip = podmanSkipReason() && process.getuid?.() !== 0 ? 'needs root for FUSE mounts' : false;

describe('seekable indexes of plain gzip layers', { skip, timeout: 600_000 }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let img: BuiltImage;
  let env: NodeJS.ProcessEnv;
  let mounts: Mounts;
  const ref = (repo: string): string => `${reg.host}/${repo}:latest`;
  const medium = seededBytes('seekable-medium', 300_000);
  let wrongDiffIdManifest: string;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-seekable-'));
    img = await buildImage(join(tmp, 'image'), {
      format: 'gzip',
      layers: [
        [
          { path: 'etc', type: 'dir' },
          { path: 'etc/motd', content: MOTD, mode: 0o640, uid: 0, gid: 42 },
          { path: 'usr', type: 'dir' },
          { path: 'usr/lib', type: 'dir' },
          // Incompressible: the layer is about as large as its files.
          { path: 'usr/lib/big.bin', content: seededContent('seekable-big', BIG) },
          { path: 'usr/lib/medium.bin', content: medium },
        ],
      ],
    });
    reg = await startRegistry();
    for (const repo of ['app', 'untrusted', 'lying', 'garbage', 'self-published']) await reg.load(img.dir, repo);
    // The same layer under a config whose DiffID is not the layer's (a broken or lying image).
    const layout = new OciLayoutWriter(img.dir);
    const config = JSON.parse(await readFile(join(img.dir, 'blobs', 'sha256', img.configDigest.slice(7)), 'utf8'));
    config.rootfs.diff_ids = [`sha256:${'e'.repeat(64)}`];
    const wrong = await layout.writeImage({ config, layers: img.layers, tag: 'wrong-diffid' });
    wrongDiffIdManifest = wrong.manifestDigest;
    await reg.load(img.dir, 'wrong-diffid');
    const envDir = join(tmp, 'env');
    await isolatedRegistryOptions(envDir);
    env = { ...isolatedCliEnv(envDir), TOCFS_CONFIG: '' };
    mounts = new Mounts(tmp, env);
  });

  after(async () => {
    await mounts?.cleanup();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const layer = (): { digest: string; size: number } => img.layers[0]!;

  it('tocfs index --push reads each gzip layer once and publishes its index beside the image', async () => {
    const r = await runCli(['index', '--push', '--tls-verify=false', '--cache-dir', join(tmp, 'indexer-cache'), ref('app')], { env, timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, new RegExp(`${layer().digest} \\(.*\\): indexed: 6 entries, [0-9]+ checkpoints, index .*, DiffID ${img.diffIds[0]}`));
    assert.match(out, new RegExp(`published 1 index to ${reg.host}/app as sha256:[0-9a-f]{64}, found through`));
    // Again: the index kept in the cache is published as is, without reading the layer.
    await registryLogSettled(reg);
    const before = blobBytesServed(reg.log, layer().digest);
    const again = await runCli(['index', '--tls-verify=false', '--cache-dir', join(tmp, 'indexer-cache'), ref('app')], { env, timeoutMs: 60_000 });
    assert.match(again.stdout.toString(), /index kept from before/);
    await registryLogSettled(reg);
    assert.equal(blobBytesServed(reg.log, layer().digest), before, 'the layer was not read again');
  });

  it('a mount that trusts the repository reads the image lazily from the published index', async () => {
    await registryLogSettled(reg);
    const before = blobBytesServed(reg.log, layer().digest);
    // Without index.trust the published index is not looked up.
    await mounts.unmount(await mounts.mount(`docker://${ref('app')}`, ['--tls-verify=false']));
    // No read-ahead: what is fetched is what the reads need.
    const trusted = new Mounts(tmp, { ...env, TOCFS_INDEX_TRUST: `${reg.host}/app`, TOCFS_INDEX_CHECK_DELAY: '1h', TOCFS_FETCH_READ_AHEAD: '0' });
    try {
      // The mount above (no trust) fetched the layer whole: measure from here.
      await registryLogSettled(reg);
      const whole = blobBytesServed(reg.log, layer().digest) - before;
      assert.ok(whole >= layer().size, `without index.trust the mount fetched the layer whole (${whole} of ${layer().size} bytes)`);
      const start = blobBytesServed(reg.log, layer().digest);
      const m = await trusted.mount(`docker://${ref('app')}`, ['--tls-verify=false']);
      assert.equal(await readFile(join(m, 'etc/motd'), 'utf8'), MOTD);
      // The span that held motd was decompressed whole and kept: the start of big.bin, in the same span, costs nothing.
      await registryLogSettled(reg);
      const afterMotd = blobBytesServed(reg.log, layer().digest);
      const fd = await open(join(m, 'usr/lib/big.bin'), 'r');
      const head = Buffer.alloc(1024 * 1024);
      await fd.read(head, 0, head.length, 0);
      await fd.close();
      assert.ok(head.equals(Buffer.concat(await collect(seededContent('seekable-big', BIG).chunks())).subarray(0, head.length)), 'big.bin starts right');
      await registryLogSettled(reg);
      assert.equal(blobBytesServed(reg.log, layer().digest), afterMotd, 'a file in a span already fetched is read without a request');
      const st = await stat(join(m, 'etc/motd'));
      assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o640, 0, 42], 'mode and owner as the index says');
      assert.ok((await readFile(join(m, 'usr/lib/medium.bin'))).equals(medium));
      await registryLogSettled(reg);
      const lazy = blobBytesServed(reg.log, layer().digest) - start;
      process.stdout.write(`# plain gzip layer of ${layer().size} B: mount + two reads fetched ${lazy} B (${((100 * lazy) / layer().size).toFixed(1)} %)\n`);
      // Each file is in another 4 MiB checkpoint span of incompressible data: two spans at most.
      assert.ok(lazy < 2 * 4.5 * 1024 * 1024, `mount and two small reads fetched ${lazy} of ${layer().size} bytes: more than the two checkpoint spans they are in`);
      assert.ok(blobGets(reg.log, layer().digest).slice(-3).every((g) => g.status === 206), 'range requests only');
      // The big file reads right too, through several checkpoints.
      assert.equal(sha256(await readFile(join(m, 'usr/lib/big.bin'))), sha256(Buffer.concat(await collect(seededContent('seekable-big', BIG).chunks()))));
      await trusted.unmount(m);
    } finally {
      await trusted.cleanup();
    }
  });

  it('a published index that lies: served until the whole-layer check, then the layer stops with EIO', async () => {
    // The honest index, with one file's mode changed: a liar with push rights to the repository.
    const opts = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env')) };
    const honest = await runCli(['index', '--tls-verify=false', '--json', '--cache-dir', join(tmp, 'liar-cache'), ref('lying')], { env, timeoutMs: 180_000 });
    assert.equal(honest.code, 0, honest.stderr);
    const { DiskTocStore } = await import('../src/cache/toc-store.js');
    const { loadPlainIndex } = await import('../src/formats/plain-index.js');
    const stored = await loadPlainIndex(new DiskTocStore(join(tmp, 'liar-cache')), layer() as never);
    const toc = stored.toc!;
    Array.from(toc.entries).find((e) => e.path === 'etc/motd')!.mode = 0o4755;
    await pushIndexes({ reference: `docker://${ref('lying')}`, manifestDigest: img.manifestDigest }, [{ layer: layer().digest, bytes: encodePlainIndex(layer() as never, toc) }], opts);
    const trusting = new Mounts(tmp, { ...env, TOCFS_INDEX_TRUST: `${reg.host}/*`, TOCFS_INDEX_CHECK_DELAY: '1ms' });
    try {
      const m = await trusting.mount(`docker://${ref('lying')}`, ['--tls-verify=false']);
      assert.equal((await stat(join(m, 'etc/motd'))).mode & 0o7777, 0o4755, 'until the check, the mount shows what the index says');
      // Each read at a new offset of a file not read before reaches tocfs (not the page cache).
      const big = await open(join(m, 'usr/lib/big.bin'), 'r');
      let stopped: NodeJS.ErrnoException | undefined;
      try {
        for (let i = 0; i < 600 && !stopped; i++) {
          await big.read(Buffer.alloc(1), 0, 1, (i * 40_009) % BIG).catch((e: NodeJS.ErrnoException) => (stopped = e));
          if (!stopped) await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        await big.close();
      }
      const log = await readFile(mountFiles(m).log, 'utf8');
      assert.equal(stopped?.code, 'EIO', `reads fail with EIO once the check found the index wrong; the daemon said:\n${log.split('\n').filter((l) => /index|check/.test(l)).join('\n')}`);
      assert.match(log, /PUBLISHED INDEX DOES NOT MATCH THE LAYER/);
      assert.match(log, /entry 1 \(\\"etc\/motd\\"\) differs/);
      await trusting.unmount(m);
    } finally {
      await trusting.cleanup();
    }
  });

  for (const flavor of PODMAN_FLAVORS) {
    it(`tocfs store with a published index: ${flavor.name} ${flavor.name.startsWith('Podman 5') ? 'pulls the plain gzip layer itself (it asks additional layer stores only by TOC digest)' : 'pulls the plain gzip layer lazily from the store'}`, { skip: flavor.skip }, async () => {
      const work = await mkdtemp(join(tmp, 'store-'));
      const store = await startStore(join(work, 'store'), join(work, 'cache'), [], { ...env, TOCFS_INDEX_TRUST: `${reg.host}/app`, TOCFS_INDEX_CHECK_DELAY: '1h' });
      const ns = await flavor.enter([work]);
      const podman = await Podman.create(work, store.dir, reg.host, ns);
      try {
        await registryLogSettled(reg);
        const start = blobBytesServed(reg.log, layer().digest);
        const podmanGets = wholeBlobGetsByOthers(reg.log, layer().digest).length;
        await podman.ok(['pull', '--tls-verify=false', ref('app')]);
        assert.ok((await podman.exec(ref('app'), '/usr/bin/cat', '/usr/lib/medium.bin')).equals(medium), 'the container reads the file');
        await registryLogSettled(reg);
        const downloads = wholeBlobGetsByOthers(reg.log, layer().digest).length - podmanGets;
        const linked = (await podman.storeLayers()).some((l) => l.endsWith(layer().digest));
        if (flavor.name.startsWith('Podman 5')) {
          assert.equal(downloads, 1, 'Podman 5 downloaded the layer itself');
          assert.equal(linked, false);
          return;
        }
        assert.equal(downloads, 0, 'Podman did not download the layer');
        assert.ok(linked, 'the layer comes from the store');
        const fetched = blobBytesServed(reg.log, layer().digest) - start;
        assert.ok(fetched < layer().size / 2, `pull and run fetched ${fetched} of ${layer().size} bytes`);
        assert.equal((await podman.exec(ref('app'), '/usr/bin/stat', '-c', '%a %u %g', '/etc/motd')).toString().trim(), '640 0 42');
      } finally {
        await podman.cleanup().catch(() => undefined);
        await ns?.close();
        assert.equal(await store.stop('SIGTERM'), 0);
      }
    });
  }

  it('index.publish: a mount that fetched a layer whole publishes its index, and the next machine reads lazily', async () => {
    const publisher = new Mounts(tmp, { ...env, TOCFS_INDEX_PUBLISH: 'true' });
    try {
      const m = await publisher.mount(`docker://${ref('self-published')}`, ['--tls-verify=false']);
      assert.equal(await readFile(join(m, 'etc/motd'), 'utf8'), MOTD);
      const log = mountFiles(m).log;
      const deadline = Date.now() + 60_000;
      while (!/published the seekable indexes/.test(await readFile(log, 'utf8').catch(() => '')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      assert.match(await readFile(log, 'utf8'), /published the seekable indexes of the layers indexed whole/);
      await publisher.unmount(m);
    } finally {
      await publisher.cleanup();
    }
    const reader = new Mounts(tmp, { ...env, TOCFS_INDEX_TRUST: `${reg.host}/self-published`, TOCFS_INDEX_CHECK_DELAY: '1h' });
    try {
      await registryLogSettled(reg);
      const start = blobBytesServed(reg.log, layer().digest);
      const m = await reader.mount(`docker://${ref('self-published')}`, ['--tls-verify=false']);
      assert.ok((await readFile(join(m, 'usr/lib/medium.bin'))).equals(medium));
      await registryLogSettled(reg);
      assert.ok(blobBytesServed(reg.log, layer().digest) - start < 4.5 * 1024 * 1024, 'read lazily (one checkpoint span) through the index the first mount published');
      await reader.unmount(m);
    } finally {
      await reader.cleanup();
    }
  });

  it('tocfs store declines a gzip layer whose config DiffID is not the one its index computed (Podman 4.3.1 would take it on trust)', { skip: PODMAN_FLAVORS[0]!.skip }, async () => {
    const r = await runCli(['index', '--push', '--tls-verify=false', '--cache-dir', join(tmp, 'wrong-indexer'), `${reg.host}/wrong-diffid:wrong-diffid`], { env, timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    const work = await mkdtemp(join(tmp, 'store-wrong-'));
    const store = await startStore(join(work, 'store'), join(work, 'cache'), [], { ...env, TOCFS_INDEX_TRUST: `${reg.host}/wrong-diffid`, TOCFS_INDEX_CHECK_DELAY: '1h' });
    const podman = await Podman.create(work, store.dir, reg.host);
    try {
      await registryLogSettled(reg);
      const podmanGets = wholeBlobGetsByOthers(reg.log, layer().digest).length;
      await podman.ok(['pull', '--tls-verify=false', `${reg.host}/wrong-diffid@${wrongDiffIdManifest}`]);
      await registryLogSettled(reg);
      assert.equal(wholeBlobGetsByOthers(reg.log, layer().digest).length - podmanGets, 1, 'the store declined the layer, so Podman downloaded it itself');
      assert.ok(!(await podman.storeLayers()).some((l) => l.endsWith(layer().digest)), 'the layer is not linked to the store');
      assert.ok(store.log.some((l) => l.includes(`but the layer's index says its DiffID is ${img.diffIds[0]}`)), 'the store says why');
    } finally {
      await podman.cleanup().catch(() => undefined);
      assert.equal(await store.stop('SIGTERM'), 0);
    }
  });

  it('a malformed published index is a warning, and the layer is fetched whole and read right', async () => {
    const opts = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env')) };
    const garbage = Buffer.from('tocfs-plain-index-v2\n{"layer":"' + layer().digest + '","size":' + layer().size + ',"body":"sha256:' + '0'.repeat(64) + '"}\n{}');
    await pushIndexes({ reference: `docker://${ref('garbage')}`, manifestDigest: img.manifestDigest }, [{ layer: layer().digest, bytes: garbage }], opts);
    assert.throws(() => decodePlainIndex(layer() as never, garbage), /damaged/);
    const trusting = new Mounts(tmp, { ...env, TOCFS_INDEX_TRUST: `${reg.host}/garbage` });
    try {
      await registryLogSettled(reg);
      const start = blobBytesServed(reg.log, layer().digest);
      const m = await trusting.mount(`docker://${ref('garbage')}`, ['--tls-verify=false']);
      assert.equal(await readFile(join(m, 'etc/motd'), 'utf8'), MOTD);
      await registryLogSettled(reg);
      assert.ok(blobBytesServed(reg.log, layer().digest) - start >= layer().size, 'fetched whole');
      await trusting.unmount(m);
    } finally {
      await trusting.cleanup();
    }
  });
});

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('seekable indexes of real plain gzip images (podman, skopeo)', { skip: skip || (!HAVE_CORPUS && `corpus not found at ${CORPUS_DIR}`), timeout: 600_000 }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let env: NodeJS.ProcessEnv;
  const IMAGES = ['gzip-plain-basic', 'gzip-plain-layers', 'gzip-plain-gnusparse'];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-seekable-corpus-'));
    reg = await startRegistry();
    for (const image of IMAGES) await reg.load(join(CORPUS_DIR, image));
    await isolatedRegistryOptions(join(tmp, 'env'));
    env = { ...isolatedCliEnv(join(tmp, 'env')), TOCFS_CONFIG: '', TOCFS_INDEX_TRUST: `${reg.host}/**`, TOCFS_INDEX_CHECK_DELAY: '1h' };
  });
  after(async () => {
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  for (const image of IMAGES) {
    it(`${image}: indexed and published, then mounted from a fresh cache: the merged view and every file byte for byte`, async () => {
      const expected = loadExpected(image);
      const ref = `${reg.host}/${image}:latest`;
      const r = await runCli(['index', '--push', '--tls-verify=false', '--cache-dir', join(tmp, `indexer-${image}`), ref], { env, timeoutMs: 180_000 });
      assert.equal(r.code, 0, r.stderr);
      const mounts = new Mounts(tmp, env);
      try {
        await registryLogSettled(reg);
        const logStart = reg.log.length;
        const mnt = await mounts.mount(`docker://${ref}`, ['--tls-verify=false', '--prefetch', 'none']);
        assert.deepEqual(await compareView(await mountView(mnt), expected.images[0]!.merged), []);
        for (const x of expected.images[0]!.merged.filter((e) => e.type === 'reg')) assert.equal(sha256(await readFile(join(mnt, x.path))), `sha256:${x.sha256}`, x.path);
        await registryLogSettled(reg);
        const log = await readFile(mountFiles(mnt).log, 'utf8');
        for (const d of expected.images[0]!.layers) assert.match(log, new RegExp(`"layer":"${d}"[^\n]*serving a plain gzip layer lazily from its published seekable index`), `layer ${d} is served from its published index`);
        assert.doesNotMatch(log, /fetching and verifying the whole blob/, 'no layer fell back to the whole-layer path');
        // Reading every file costs about the layer: spans overlap where a piece crosses a checkpoint.
        for (const d of expected.images[0]!.layers) process.stdout.write(`# ${image} ${d.slice(7, 19)}: reading every file fetched ${blobBytesServed(reg.log.slice(logStart), d)} B of a ${expected.layers[d]!.size} B layer\n`);
        await mounts.unmount(mnt);
      } finally {
        await mounts.cleanup();
      }
    });
  }
});
