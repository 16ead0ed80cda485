/**
 * How a mount behaves beyond its contents: a corrupt chunk gives EIO for that file only,
 * concurrent readers get exact bytes, a registry mount reads lazily and a remount over the
 * same cache fetches nothing again, prefetch, stale mounts and --foreground. On images tocfs
 * builds (needs only FUSE and docker-registry) and on corpus images.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { cp, mkdtemp, open, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mountFiles, readMountState, runtimeDir } from '../src/daemon/state.js';
import { readLayerToc } from '../src/formats/index.js';
import { OciLayoutSource } from '../src/source/oci-layout.js';
import { runCli } from './helpers/cli.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './helpers/corpus.js';
import { compareView, mountView } from './helpers/fs-expected.js';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from './helpers/images.js';
import { fuseSkipReason, isTocfsMount, Mounts } from './helpers/mounts.js';
import { OVERLAY_LAYERS } from './helpers/overlay-image.js';
import { startFaultProxy } from './helpers/registry-fault-proxy.js';
import { blobBytesServed, startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';
import { registryLogSettled } from './helpers/store.js';

const noFuse = await fuseSkipReason();
const skip = !HAVE_CORPUS ? `no corpus at ${CORPUS_DIR}` : noFuse;
const BASIC = 'zstdchunked-skopeo118-basic';
const ENTRY = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));

let tmp: string;
let mounts: Mounts;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-mountb-'));
  mounts = new Mounts(tmp);
});
after(async () => {
  await mounts?.cleanup();
  await rm(tmp, { recursive: true, force: true });
});

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function readFileIfAny(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function expectedFile(image: string, path: string): { sha256: string; size: number } {
  const x = loadExpected(image).images[0]!.merged.find((e) => e.path === path)!;
  return { sha256: x.sha256!, size: x.size };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('mount: faults, inodes, errors and prefetch on images tocfs builds', { skip: noFuse }, () => {
  const BIG = 2_500_000;
  const FILES: FileSpec[] = [
    { path: 'big', type: 'dir' },
    { path: 'big/large.bin', content: seededContent('mountb-large', BIG) },
    { path: 'data', type: 'dir' },
    { path: 'data/other.bin', content: seededBytes('mountb-other', 100_000) },
    { path: 'etc', type: 'dir' },
    { path: 'etc/motd', content: 'hello\n' },
  ];
  let img: BuiltImage;
  before(async () => {
    img = await buildImage(join(tmp, 'built-zc'), { format: 'zstd:chunked', layers: [FILES] });
  });

  it('a corrupt chunk gives EIO for that file (logged with image, layer and path); other files and later reads still work', async () => {
    const layout = join(tmp, 'built-corrupt');
    await cp(img.dir, layout, { recursive: true });
    const desc = img.layers[0]!;
    const toc = await readLayerToc(desc, new OciLayoutSource({ transport: 'oci', dir: layout }).blob(desc));
    const victim = toc.entries.find((e) => e.path === 'big/large.bin')!;
    assert.ok(victim.chunks.length > 4, 'a file of many chunks');
    const chunk = victim.chunks[Math.floor(victim.chunks.length / 2)]!;
    const blobPath = join(layout, 'blobs', 'sha256', desc.digest.slice(7));
    const bytes = await readFile(blobPath);
    const at = chunk.compressedOffset + Math.floor((chunk.compressedEnd - chunk.compressedOffset) / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    await writeFile(blobPath, bytes);

    const mnt = await mounts.mount(`oci:${layout}`);
    await assert.rejects(readFile(join(mnt, 'big/large.bin')), { code: 'EIO' });
    const want = seededBytes('mountb-large', BIG);
    const fh = await open(join(mnt, 'big/large.bin'));
    const head = Buffer.alloc(4096);
    assert.equal((await fh.read(head, 0, 4096, 0)).bytesRead, 4096);
    assert.ok(head.equals(want.subarray(0, 4096)), 'the part before the bad chunk reads right');
    await assert.rejects(fh.read(Buffer.alloc(4096), 0, 4096, chunk.offset), { code: 'EIO' }, 'a later read retries, and fails again');
    await fh.close();
    assert.ok((await readFile(join(mnt, 'data/other.bin'))).equals(seededBytes('mountb-other', 100_000)));
    const log = await readFile(mountFiles(mnt).log, 'utf8');
    const line = log.split('\n').find((l) => l.includes('read failed') && l.includes('big/large.bin'));
    assert.ok(line, `the daemon log names the failed read:\n${log.slice(-2000)}`);
    assert.match(line, new RegExp(desc.digest));
    assert.match(line, /oci:/);
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('inode numbers are the same after a remount', async () => {
    const overlay = await buildImage(join(tmp, 'built-overlay'), { format: 'estargz', layers: OVERLAY_LAYERS });
    const inodes = async (): Promise<string[]> => {
      const mnt = await mounts.mount(`oci:${overlay.dir}`);
      const view = (await mountView(mnt)).map((e) => `${e.path}=${e.inode}`);
      assert.equal((await mounts.unmount(mnt)).code, 0);
      return view;
    };
    const first = await inodes();
    assert.ok(first.length >= 12, first.join(' '));
    assert.deepEqual(await inodes(), first);
  });

  it('a mount that cannot start reports the daemon\'s error and exits non-zero; unmount of a non-mount fails clearly', async () => {
    const mnt = await mkdtemp(join(tmp, 'built-fail-'));
    const noImage = await runCli(['mount', `oci:${join(tmp, 'no-such-layout')}`, mnt, '--cache-dir', join(tmp, 'built-fail-cache')]);
    assert.equal(noImage.code, 1);
    assert.match(noImage.stderr, /tocfs: .*not an OCI image layout/);
    assert.equal(await isTocfsMount(mnt), false);
    const noDir = await runCli(['mount', `oci:${img.dir}`, join(tmp, 'no-such-dir'), '--cache-dir', join(tmp, 'built-fail-cache')]);
    assert.equal(noDir.code, 1);
    assert.match(noDir.stderr, /mountpoint .*no-such-dir: does not exist/);
    const notMounted = await runCli(['unmount', mnt]);
    assert.equal(notMounted.code, 1);
    assert.match(notMounted.stderr, /is not a tocfs mount/);
  });

  it('tocfs mount spawns its daemon before it parses: bad usage leaves neither a daemon nor a log behind; a mount is served by `tocfs mount … --foreground` in /', async () => {
    const marker = join(tmp, `early-${randomInt(1e9)}`);
    const cli = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'mount', marker], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => cli.on('close', resolve));
    assert.equal(code, 2, stderr);
    assert.match(stderr, /Not enough non-option arguments/);
    assert.equal(existsSync(join(runtimeDir(), 'mounts', `.starting-${cli.pid}.log`)), false, 'the early daemon\'s log is removed');
    const mentioning = (): string[] =>
      readdirSync('/proc').filter((pid) => /^\d+$/.test(pid) && (readFileIfAny(`/proc/${pid}/cmdline`) ?? '').includes(marker));
    const deadline = Date.now() + 10_000;
    while (mentioning().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(mentioning(), [], 'the early daemon ends with its parent');

    const mnt = await mounts.mount(`oci:${img.dir}`);
    const state = await readMountState(mnt);
    assert.ok(state, 'the daemon wrote its state');
    const cmdline = readFileSync(`/proc/${state.pid}/cmdline`, 'utf8').split('\0');
    assert.deepEqual(cmdline.slice(cmdline.indexOf('mount'), cmdline.indexOf('mount') + 3), ['mount', `oci:${img.dir}`, mnt]);
    assert.equal(cmdline.at(-2), '--foreground');
    assert.equal(readlinkSync(`/proc/${state.pid}/cwd`), '/', 'the daemon holds no directory busy');
    assert.equal(state.log, mountFiles(mnt).log);
    assert.ok(existsSync(mountFiles(mnt).log), 'its log has its name under the runtime directory');
    assert.equal(readFileSync(join(mnt, 'etc/motd'), 'utf8'), 'hello\n');
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('--prefetch all fetches every layer from the registry in the background (logged), after which reads fetch nothing', async () => {
    const esgz = await buildImage(join(tmp, 'built-prefetch'), { format: 'estargz', layers: [FILES, [{ path: 'etc', type: 'dir' }, { path: 'etc/motd', content: 'upper\n' }]] });
    const reg = await startRegistry();
    const regMounts = new Mounts(tmp, isolatedCliEnv(tmp));
    try {
      await writeFile(join(tmp, 'registries.conf'), '');
      await reg.load(esgz.dir, 'prefetch');
      const layerBytes = (): number => esgz.layers.reduce((n, l) => n + blobBytesServed(reg.log, l.digest), 0);
      const mnt = await regMounts.mount(`docker://${reg.host}/prefetch:latest`, ['--tls-verify=false', '--prefetch', 'all']);
      await waitFor('prefetch to finish', async () => (await readFile(mountFiles(mnt).log, 'utf8')).includes('"msg":"prefetch done"'), 60_000);
      assert.match(await readFile(mountFiles(mnt).log, 'utf8'), /"percent":100,.*"msg":"fetching the whole layer in the background [0-9a-f]{12}: done"/);
      await registryLogSettled(reg);
      const afterPrefetch = layerBytes();
      assert.ok(afterPrefetch >= esgz.layers.reduce((n, l) => n + l.size, 0) * 0.9, `the prefetch fetched the layers (${afterPrefetch} bytes)`);
      assert.ok((await readFile(join(mnt, 'big/large.bin'))).equals(seededBytes('mountb-large', BIG)));
      assert.equal(await readFile(join(mnt, 'etc/motd'), 'utf8'), 'upper\n');
      await registryLogSettled(reg);
      assert.equal(layerBytes() - afterPrefetch, 0, 'reads after the prefetch fetched nothing');
      assert.equal((await regMounts.unmount(mnt)).code, 0);
    } finally {
      await regMounts.cleanup();
      await reg.stop();
    }
  });
});

describe('mount: faults and concurrency', { skip }, () => {
  it('a corrupt chunk gives EIO for that file (logged with image, layer and path); other files and later reads still work', async () => {
    const layout = join(tmp, 'corrupt-layout');
    await cp(join(CORPUS_DIR, BASIC), layout, { recursive: true });
    const expected = loadExpected(BASIC);
    const digest = expected.images[0]!.layers[0]!;
    const l = expected.layers[digest]!;
    const desc = { mediaType: l.mediaType, digest, size: l.size, annotations: l.annotations! };
    const toc = await readLayerToc(desc, new OciLayoutSource({ transport: 'oci', dir: layout }).blob(desc));
    const victim = toc.entries.find((e) => e.path === 'big/large-7m.txt')!;
    const chunk = victim.chunks[Math.floor(victim.chunks.length / 2)]!;
    const blobPath = join(layout, 'blobs', 'sha256', digest.slice(7));
    const bytes = await readFile(blobPath);
    const at = chunk.compressedOffset + Math.floor((chunk.compressedEnd - chunk.compressedOffset) / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    await writeFile(blobPath, bytes);

    const mnt = await mounts.mount(`oci:${layout}`);
    await assert.rejects(readFile(join(mnt, 'big/large-7m.txt')), { code: 'EIO' });
    // The part before the bad chunk is fine.
    const fh = await open(join(mnt, 'big/large-7m.txt'));
    const head = Buffer.alloc(4096);
    assert.equal((await fh.read(head, 0, 4096, 0)).bytesRead, 4096);
    await assert.rejects(fh.read(Buffer.alloc(4096), 0, 4096, chunk.offset), { code: 'EIO' }, 'a later read retries, and fails again');
    await fh.close();
    const other = expectedFile(BASIC, 'data/medium-random.bin');
    assert.equal(sha256(await readFile(join(mnt, 'data/medium-random.bin'))), other.sha256);
    const log = await readFile(mountFiles(mnt).log, 'utf8');
    const line = log.split('\n').find((s) => s.includes('read failed') && s.includes('big/large-7m.txt'));
    assert.ok(line, `the daemon log names the failed read:\n${log.slice(-2000)}`);
    assert.match(line, new RegExp(digest));
    assert.match(line, /oci:/);
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('32 concurrent readers of random ranges of large files get exact bytes', async () => {
    const files = ['big/large-7m.txt', 'sparse/zero-hole-16m.img', 'sparse/zero-hole-3m.bin'];
    // Reference bytes through `tocfs cat`, checked against the corpus digests first.
    const reference = new Map<string, Buffer>();
    for (const f of files) {
      const r = await runCli(['cat', `oci:${join(CORPUS_DIR, BASIC)}`, f, '--cache-dir', join(tmp, 'ref-cache')]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), expectedFile(BASIC, f).sha256, f);
      reference.set(f, r.stdout);
    }
    const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, BASIC)}`, ['--prefetch', 'none']);
    const mismatches: string[] = [];
    await Promise.all(
      Array.from({ length: 32 }, async (_, worker) => {
        const f = files[worker % files.length]!;
        const want = reference.get(f)!;
        const fh = await open(join(mnt, f));
        try {
          for (let i = 0; i < 12; i++) {
            const offset = randomInt(0, want.length);
            const length = Math.min(randomInt(1, 300 * 1024), want.length - offset);
            const buf = Buffer.alloc(length);
            const { bytesRead } = await fh.read(buf, 0, length, offset);
            if (bytesRead !== length || !buf.equals(want.subarray(offset, offset + length))) mismatches.push(`${f} [${offset}, +${length}): ${bytesRead} bytes, ${buf.equals(want.subarray(offset, offset + length)) ? 'equal' : 'different'}`);
          }
        } finally {
          await fh.close();
        }
      }),
    );
    assert.deepEqual(mismatches, []);
    assert.equal((await mounts.unmount(mnt)).code, 0);
  });

  it('inode numbers are the same after a remount', async () => {
    const inodes = async (): Promise<string[]> => {
      const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, 'zstdchunked-skopeo118-layers')}`);
      const view = (await mountView(mnt)).map((e) => `${e.path}=${e.inode}`);
      assert.equal((await mounts.unmount(mnt)).code, 0);
      return view;
    };
    const first = await inodes();
    assert.ok(first.length > 20);
    assert.deepEqual(await inodes(), first);
  });

  it('a mount that cannot start reports the daemon\'s error and exits non-zero; unmount of a non-mount fails clearly', async () => {
    const mnt = await mkdtemp(join(tmp, 'fail-'));
    const noImage = await runCli(['mount', `oci:${join(tmp, 'no-such-layout')}`, mnt, '--cache-dir', join(tmp, 'fail-cache')]);
    assert.equal(noImage.code, 1);
    assert.match(noImage.stderr, /tocfs: .*not an OCI image layout/);
    assert.equal(await isTocfsMount(mnt), false);
    const noDir = await runCli(['mount', `oci:${join(CORPUS_DIR, BASIC)}`, join(tmp, 'no-such-dir'), '--cache-dir', join(tmp, 'fail-cache')]);
    assert.equal(noDir.code, 1);
    assert.match(noDir.stderr, /mountpoint .*no-such-dir: does not exist/);
    const notMounted = await runCli(['unmount', mnt]);
    assert.equal(notMounted.code, 1);
    assert.match(notMounted.stderr, /is not a tocfs mount/);
  });

  it('a stale mount (daemon killed) is cleaned by tocfs unmount, and a new mount may take its place', async () => {
    const mnt = await mounts.mount(`oci:${join(CORPUS_DIR, BASIC)}`);
    const state = await readMountState(mnt);
    assert.ok(state, 'the daemon recorded its state');
    process.kill(state.pid, 'SIGKILL');
    await waitFor('the daemon to die', async () => statfs(mnt).then(() => false, (e: NodeJS.ErrnoException) => e.code === 'ENOTCONN'));
    // Mounting over the stale mount cleans it first.
    const r = await runCli(['mount', `oci:${join(CORPUS_DIR, BASIC)}`, mnt, '--cache-dir', join(tmp, 'stale-cache')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(await readFile(join(mnt, 'data/medium-random.bin'))), expectedFile(BASIC, 'data/medium-random.bin').sha256);
    const again = await readMountState(mnt);
    process.kill(again!.pid, 'SIGKILL');
    await waitFor('the second daemon to die', async () => statfs(mnt).then(() => false, (e: NodeJS.ErrnoException) => e.code === 'ENOTCONN'));
    const u = await mounts.unmount(mnt);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(await isTocfsMount(mnt), false);
  });

  it('--foreground serves until SIGTERM, then unmounts cleanly; --metrics-address serves its FUSE metrics', async () => {
    const mnt = await mkdtemp(join(tmp, 'fg-'));
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'mount', `oci:${join(CORPUS_DIR, BASIC)}`, mnt, '--foreground', '--cache-dir', join(tmp, 'fg-cache'), '--metrics-address', '127.0.0.1:0'], {
      env: { ...process.env, TOCFS_LOG_JSON: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // A foreground daemon logs to stdout (journald's stream under systemd); stderr is kept for crashes.
    let logs = '';
    child.stdout.on('data', (d: Buffer) => (logs += d.toString()));
    child.stderr.on('data', (d: Buffer) => (logs += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor('the foreground mount', () => isTocfsMount(mnt));
      const f = expectedFile(BASIC, 'data/medium-random.bin');
      assert.equal(sha256(await readFile(join(mnt, 'data/medium-random.bin'))), f.sha256);
      await assert.rejects(readFile(join(mnt, 'no-such-file')), { code: 'ENOENT' });
      const address = /"address":"([^"]+)","msg":"serving metrics at \/metrics"/.exec(logs)?.[1];
      assert.ok(address, logs);
      const text = await (await fetch(`http://${address}/metrics`)).text();
      const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
      assert.ok(value(/^tocfs_served_bytes_total (\d+)/m) >= f.size, 'served bytes counted');
      assert.ok(value(/^tocfs_fuse_operation_duration_seconds_count\{op="read"\} (\d+)/m) > 0, 'FUSE reads timed');
      assert.ok(value(/^tocfs_fuse_errors_total\{op="getattr",errno="ENOENT"\} (\d+)/m) >= 1, 'the failed lookup counted');
      child.kill('SIGTERM');
      assert.equal(await exited, 0, logs);
      assert.equal(await isTocfsMount(mnt), false);
      assert.match(logs, /"msg":"unmounted"/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      mounts.forget(mnt);
      if (await isTocfsMount(mnt)) await runCli(['unmount', '--lazy', mnt]);
    }
  });
});

describe('mount: from a real registry', { skip }, () => {
  const IMAGES = ['zstdchunked-podman54-app-v1', 'estargz-ctrremote-basic'];
  let reg: TestRegistry;
  let regMounts: Mounts;
  let regEnv: NodeJS.ProcessEnv;

  before(async () => {
    reg = await startRegistry();
    for (const image of IMAGES) await reg.load(join(CORPUS_DIR, image));
    await writeFile(join(tmp, 'registries.conf'), '');
    regEnv = isolatedCliEnv(tmp);
    regMounts = new Mounts(tmp, regEnv);
  });
  after(async () => {
    await regMounts?.cleanup();
    await reg?.stop();
  });

  const layerBytes = (image: string): number => loadExpected(image).images[0]!.layers.reduce((n, d) => n + blobBytesServed(reg.log, d), 0);

  it('a registry mount equals the merged view; a remount over the same cache fetches no layer byte again', async () => {
    const image = 'zstdchunked-podman54-app-v1';
    const expected = loadExpected(image);
    const ref = `docker://${reg.host}/${image}:latest`;
    const cache = await mkdtemp(join(tmp, 'reg-cache-'));
    let mnt = await regMounts.mount(ref, ['--tls-verify=false', '--prefetch', 'none'], cache);
    const before = layerBytes(image);
    assert.deepEqual(await compareView(await mountView(mnt), expected.images[0]!.merged), []);
    const files = expected.images[0]!.merged.filter((x) => x.type === 'reg');
    for (const x of files) assert.equal(sha256(await readFile(join(mnt, x.path))), x.sha256, x.path);
    const fetched = layerBytes(image) - before;
    assert.ok(fetched > 0, 'reading the files fetched chunks from the registry');
    assert.equal((await regMounts.unmount(mnt)).code, 0);

    const beforeRemount = layerBytes(image);
    mnt = await regMounts.mount(ref, ['--tls-verify=false', '--prefetch', 'none'], cache);
    for (const x of files) assert.equal(sha256(await readFile(join(mnt, x.path))), x.sha256, x.path);
    assert.equal(layerBytes(image) - beforeRemount, 0, 'TOCs from the TOC store, contents from the chunk cache');
    assert.equal((await regMounts.unmount(mnt)).code, 0);
  });

  it('registry faults: a failed fetch is EIO and a later read retries; a read that waits past fetch.timeout is EIO; other files, and that file once the registry is fast again, read', async () => {
    const image = 'estargz-ctrremote-basic';
    const merged = loadExpected(image).images[0]!.merged;
    const proxy = await startFaultProxy(reg.host);
    const faultMounts = new Mounts(tmp, { ...regEnv, TOCFS_REGISTRY_RETRIES: '0', TOCFS_FETCH_TIMEOUT: '2s' });
    try {
      const mnt = await faultMounts.mount(`docker://${proxy.host}/${image}:latest`, ['--tls-verify=false', '--prefetch', 'none']);
      const [victim, slow, other] = ['data/medium-random.bin', 'data/medium-text.txt', 'data/exactly-65536.bin'].map((p) => merged.find((x) => x.path === p)!);
      proxy.inject({ kind: 'reset' }, { times: 50 });
      await assert.rejects(readFile(join(mnt, victim.path)), { code: 'EIO' });
      proxy.clear();
      assert.equal(sha256(await readFile(join(mnt, victim.path))), victim.sha256, 'the next read fetched again');

      // Every fetch trickles until cleared (one slow fetch would be given up at fetch.timeout and the kernel's retry of the page would fetch afresh).
      proxy.inject({ kind: 'trickle', bytesPerSecond: 64 }, { times: 1000 });
      await assert.rejects(readFile(join(mnt, slow.path)), { code: 'EIO' });
      proxy.clear();
      assert.equal(sha256(await readFile(join(mnt, other.path))), other.sha256, 'other files read after a fetch timed out');
      assert.equal(sha256(await readFile(join(mnt, slow.path))), slow.sha256, 'the timed-out file reads once the registry is fast again');
      const log = await readFile(mountFiles(mnt).log, 'utf8');
      assert.match(log, new RegExp(`"path":"/${slow.path}".*read failed`));
      assert.equal((await faultMounts.unmount(mnt)).code, 0);
    } finally {
      await faultMounts.cleanup();
      await proxy.close();
    }
  });

  it('--prefetch all fetches every layer in the background (logged), after which reads fetch nothing', async () => {
    const image = 'estargz-ctrremote-basic';
    const expected = loadExpected(image);
    const mnt = await regMounts.mount(`docker://${reg.host}/${image}:latest`, ['--tls-verify=false', '--prefetch', 'all']);
    await waitFor('prefetch to finish', async () => (await readFile(mountFiles(mnt).log, 'utf8')).includes('"msg":"prefetch done"'), 60_000);
    const log = await readFile(mountFiles(mnt).log, 'utf8');
    assert.match(log, /"percent":100,.*"msg":"fetching the whole layer in the background [0-9a-f]{12}: done"/);
    const afterPrefetch = layerBytes(image);
    for (const x of expected.images[0]!.merged.filter((e) => e.type === 'reg')) assert.equal(sha256(await readFile(join(mnt, x.path))), x.sha256, x.path);
    assert.equal(layerBytes(image) - afterPrefetch, 0);
    assert.equal((await regMounts.unmount(mnt)).code, 0);
  });
});
