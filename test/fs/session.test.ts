/**
 * tocfs's own FUSE session (daemon.fuse_session = tocfs, src/fs/session/) on real parts: real
 * mounts made by the tocfs CLI with TOCFS_DAEMON_FUSE_SESSION=tocfs, images written by tocfs's
 * own writer, served from OCI layouts or a real docker-registry on loopback. What a user sees:
 * the image as written; files whose whole content is cached read (and map) without a FUSE read
 * reaching tocfs (FUSE passthrough onto one cache file named by the content's digest, shared by
 * every image holding that content); a listing that answers the lookups (READDIRPLUS); a file
 * not yet complete served normally until it is; and the fuse-native fallback when the addon is
 * missing. Needs root, /dev/fuse and the tocfs_fuse_dev addon (scripts/build-native.sh).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { mountFiles } from '../../src/daemon/state.js';
import { FUSE_DEV_ADDON, loadFuseDev } from '../../src/fs/session/native.js';
import { readLayerToc } from '../../src/formats/index.js';
import type { Timestamp } from '../../src/formats/toc.js';
import { OciLayoutSource } from '../../src/source/oci-layout.js';
import { runCli } from '../helpers/cli.js';
import { compareView, mountView } from '../helpers/fs-expected.js';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec } from '../helpers/images.js';
import { parseExposition } from '../helpers/metrics.js';
import { fuseSkipReason, isTocfsMount, Mounts, xattrsUnder } from '../helpers/mounts.js';
import { blobGets, freePort, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedCliEnv } from '../helpers/registry-env.js';
import { expectedEntries, KINDS_LAYER } from '../helpers/spec-expected.js';
import { registryLogSettled } from '../helpers/store.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));

const addon = loadFuseDev();
const skip =
  (await fuseSkipReason()) ||
  (process.getuid?.() !== 0 ? 'needs root: the own session mount(2)s /dev/fuse itself, and passthrough needs CAP_SYS_ADMIN' : false) ||
  ('unavailable' in addon ? `the tocfs_fuse_dev addon is unavailable: ${addon.unavailable}` : false);

const MIB = 1024 * 1024;
const READS = 'tocfs_fuse_operation_duration_seconds_count{op="read"}';
const GETATTRS = 'tocfs_fuse_operation_duration_seconds_count{op="getattr"}';
const PASSTHROUGH = 'tocfs_fuse_passthrough_opens_total';
const MANY = 2000;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** An exact time (the writer takes one; FileSpec's type only states seconds as a number). */
const NANOS: Timestamp = { sec: 1_700_000_001, nsec: 123_456_789 };

/** Every kind of entry (KINDS_LAYER), plus setgid, an exact-nanosecond time and a directory of MANY entries. */
const KINDS: FileSpec[] = [
  ...KINDS_LAYER,
  { path: 'usr/bin/setgid-tool', content: seededBytes('session-setgid', 3000), mode: 0o2755, gid: 50 },
  { path: 'etc/nanos', content: 'exact time\n', mtime: NANOS as unknown as number },
  { path: 'many', type: 'dir' },
  ...Array.from({ length: MANY }, (_, i): FileSpec => ({ path: `many/entry-${String(i).padStart(4, '0')}`, content: i % 100 === 0 ? `entry ${i}\n` : '' })),
];

/**
 * Files for the passthrough cases, of many ~64 KiB zstd:chunked chunks: 12 MiB, because reading
 * the first 100 KiB of a file fetches about 1.6 MB (read-ahead; measured), so a 1 MB file would
 * already be whole in the cache after it.
 */
const BIG = 12 * MIB + 12_345;
const DATA: FileSpec[] = [
  { path: 'data', type: 'dir' },
  { path: 'data/big.bin', content: seededContent('session-big', BIG) },
  { path: 'data/partial.bin', content: seededContent('session-partial', BIG) },
  { path: 'data/small.txt', content: seededBytes('session-small', 3000) },
];

let tmp: string;
/** Mounts through the own session (env TOCFS_DAEMON_FUSE_SESSION=tocfs). */
let own: Mounts;
let kinds: BuiltImage;
let data: BuiltImage;

before(async () => {
  if (skip) return;
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-session-'));
  own = new Mounts(tmp, { ...isolatedCliEnv(tmp), TOCFS_CONFIG: '', TOCFS_DAEMON_FUSE_SESSION: 'tocfs' });
  await writeFile(join(tmp, 'registries.conf'), '');
  kinds = await buildImage(join(tmp, 'kinds'), { format: 'zstd:chunked', layers: [KINDS] });
  data = await buildImage(join(tmp, 'data'), { format: 'zstd:chunked', layers: [DATA] });
});
after(async () => {
  if (skip) return;
  await own?.cleanup();
  await rm(tmp, { recursive: true, force: true });
});

interface Served {
  mnt: string;
  /** host:port of its /metrics. */
  metrics: string;
}

/** A mount with --prefetch none (only what is read is fetched), its metrics on a free port and a debug log. */
async function mountWith(mounts: Mounts, image: string, cache?: string, args: string[] = []): Promise<Served> {
  const metrics = `127.0.0.1:${await freePort()}`;
  const mnt = await mounts.mount(image, ['--prefetch', 'none', '--metrics-address', metrics, '--log-level', 'debug', ...args], cache);
  return { mnt, metrics };
}

async function scrape(s: Served): Promise<(series: string) => number> {
  const values = parseExposition(await (await fetch(`http://${s.metrics}/metrics`)).text());
  return (series) => values.get(series) ?? 0;
}

/** The daemon's log, once it holds `what`. */
async function logWith(mnt: string, what: RegExp): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const log = await readFile(mountFiles(mnt).log, 'utf8').catch(() => '');
    if (what.test(log) || Date.now() > deadline) return log;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The own session is serving (it logs its INIT; fuse-native never does) and whether the kernel
 * agreed to passthrough. Fails if tocfs fell back to fuse-native.
 */
async function ownSession(mnt: string): Promise<{ passthrough: boolean }> {
  // Anything reaching the filesystem waits for INIT to be answered.
  await stat(mnt);
  const log = await logWith(mnt, /"msg":"FUSE session initialised"/);
  assert.doesNotMatch(log, /own FUSE session is unavailable/, 'tocfs fell back to fuse-native');
  const init = log.split('\n').find((l) => l.includes('"msg":"FUSE session initialised"'));
  assert.ok(init, `the own session answered the kernel's INIT (logged at debug):\n${log.slice(-3000)}`);
  assert.match(init, /"readdirplus":true/);
  return { passthrough: /"passthrough":true/.test(init) };
}

/** Skips the rest of a passthrough case on a kernel without FUSE passthrough (Linux < 6.9 or no CONFIG_FUSE_PASSTHROUGH). */
async function needPassthrough(t: TestContext, mnt: string): Promise<boolean> {
  if ((await ownSession(mnt)).passthrough) return true;
  // The daemon says why: the kernel did not offer it (Linux < 6.9, no CONFIG_FUSE_PASSTHROUGH), refused a backing file, or daemon.passthrough is off.
  const reason = /"reason":"([^"]*)"[^\n]*FUSE passthrough is off/.exec(await readFile(mountFiles(mnt).log, 'utf8'))?.[1] ?? 'daemon.passthrough is off';
  t.skip(`FUSE passthrough is off for this mount: ${reason}`);
  return false;
}

/** Empties the page cache (and the dentry and inode caches), so a read has to reach a filesystem again. */
async function dropCaches(): Promise<void> {
  await run('sync');
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

/** The bytes of `file` as a process that mmaps it sees them. */
async function mmapRead(file: string): Promise<Buffer> {
  const script = 'import mmap,sys; f=open(sys.argv[1],"rb"); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.buffer.write(m[:])';
  const { stdout } = await run('python3', ['-c', script, file], { encoding: 'buffer', maxBuffer: 64 * MIB });
  return stdout;
}

/** readdir of `dir`, then lstat of every entry (what `ls -l` does); the number of entries. */
async function listLong(dir: string): Promise<number> {
  const names = await readdir(dir);
  for (const n of names) await lstat(join(dir, n));
  return names.length;
}

/** The chunk digests (not the all-zero ones) of `path` in the one layer of `img`, from its TOC. */
async function chunkDigests(img: BuiltImage, path: string): Promise<string[]> {
  const desc = img.layers[0]!;
  const toc = await readLayerToc(desc, new OciLayoutSource({ transport: 'oci', dir: img.dir }).blob(desc));
  const entry = toc.entries.find((e) => e.path === path);
  assert.ok(entry, `${path} in the TOC`);
  return entry.chunks.filter((c) => !c.zeros).map((c) => c.digest);
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Files under `<cache>/chunks/sha256/` as `ab/hex`, with their sizes. */
async function cacheFiles(cache: string): Promise<Array<{ name: string; size: number }>> {
  const root = join(cache, 'chunks', 'sha256');
  if (!(await stat(root).then(() => true, () => false))) return [];
  const out: Array<{ name: string; size: number }> = [];
  for (const prefix of await readdir(root)) for (const hex of await readdir(join(root, prefix))) out.push({ name: `${prefix}/${hex}`, size: (await stat(join(root, prefix, hex))).size });
  return out;
}

describe('the own FUSE session (daemon.fuse_session = tocfs) on real mounts', { skip }, () => {
  it('shows the image as written: contents, modes, owners, links, devices, xattrs, exact times and a directory of 2000 entries', async () => {
    const { mnt } = await mountWith(own, `oci:${kinds.dir}`);
    await ownSession(mnt);
    assert.ok(await isTocfsMount(mnt), '/proc/self/mountinfo lists it as fuse.tocfs');

    const want = await expectedEntries(KINDS);
    const nanos = want.find((x) => x.path === 'etc/nanos')!;
    Object.assign(nanos, { mtime: NANOS.sec + NANOS.nsec / 1e9, mtime_pax: `${NANOS.sec}.${String(NANOS.nsec).padStart(9, '0')}` });
    const view = await mountView(mnt);
    const xattrs = await xattrsUnder(mnt);
    assert.deepEqual(await compareView(view, want, { xattrs: (p) => xattrs[p] ?? {} }), []);
    for (const x of want) {
      if (x.type !== 'reg' && x.type !== 'hardlink') continue;
      assert.equal(sha256(await readFile(join(mnt, x.path))), x.sha256, `${x.path}: content`);
    }

    // The same, said plainly for what a user would look at first.
    const at = (p: string) => view.find((e) => e.path === p)!;
    assert.equal(at('usr/bin/tool').mode, 0o4755, 'setuid');
    assert.equal(at('usr/bin/setgid-tool').mode, 0o2755, 'setgid');
    assert.equal(at('tmp').mode, 0o1777, 'sticky');
    assert.deepEqual([at('home/big-id').uid, at('home/big-id').gid], [3_000_000, 3_000_001]);
    assert.equal(at('usr/bin/tool').inode, at('usr/bin/tool-hardlink').inode, 'hard links share st_ino');
    assert.equal(at('usr/bin/tool').nlink, 2);
    assert.equal(at('usr/bin/tool-symlink').link, 'tool');
    assert.equal(at('usr/bin/abs-symlink').link, '/etc/hello.txt');
    assert.deepEqual([at('etc/nanos').mtimeSec, at('etc/nanos').mtimeNsec], [NANOS.sec, NANOS.nsec], 'nanoseconds');
    assert.deepEqual(at('dev/null').dev, [1, 3]);
    assert.equal(at('dev/fifo').type, 'fifo');
    assert.equal(at('etc/empty').size, 0);
    assert.equal((await readFile(join(mnt, 'etc/empty'))).length, 0);
    assert.equal(view.filter((e) => e.path.startsWith('many/')).length, MANY);
    assert.equal(xattrs['etc/xattr.txt']?.['user.comment'], Buffer.from('tocfs test').toString('base64'));

    assert.equal((await own.unmount(mnt)).code, 0);
    assert.equal(await isTocfsMount(mnt), false);
  });

  it('passthrough: a file whole in the cache reads (and maps) without a FUSE read reaching tocfs', async (t) => {
    const served = await mountWith(own, `oci:${data.dir}`);
    const { mnt } = served;
    if (!(await needPassthrough(t, mnt))) return;
    assert.ok((await chunkDigests(data, 'data/big.bin')).length > 50, 'big.bin has many chunks');
    assert.equal((await chunkDigests(data, 'data/small.txt')).length, 1, 'small.txt is one chunk');
    const big = join(mnt, 'data/big.bin');
    const bigSha = sha256(seededBytes('session-big', BIG));

    // Nothing is cached yet: the first open is served by tocfs, which fetches.
    const m0 = await scrape(served);
    assert.equal(sha256(await readFile(big)), bigSha);
    const m1 = await scrape(served);
    assert.ok(m1(READS) > m0(READS), 'the first read went through tocfs');
    assert.equal(m1(PASSTHROUGH), m0(PASSTHROUGH), 'no passthrough while the file is not cached');

    await dropCaches();
    assert.equal(sha256(await readFile(big)), bigSha, 'passthrough bytes');
    const m2 = await scrape(served);
    assert.equal(m2(PASSTHROUGH), m1(PASSTHROUGH) + 1, 'the second open passed through');
    assert.equal(m2(READS), m1(READS), 'no FUSE read for the second, uncached-in-memory read');

    // A single-chunk file: its chunk's cache file is the whole file.
    const small = join(mnt, 'data/small.txt');
    const smallBytes = seededBytes('session-small', 3000);
    assert.ok((await readFile(small)).equals(smallBytes));
    const m3 = await scrape(served);
    assert.equal(m3(PASSTHROUGH), m2(PASSTHROUGH), 'its first open is served by tocfs');
    assert.ok(m3(READS) > m2(READS));
    await dropCaches();
    assert.ok((await readFile(small)).equals(smallBytes), 'passthrough bytes');
    const m4 = await scrape(served);
    assert.equal(m4(PASSTHROUGH), m3(PASSTHROUGH) + 1);
    assert.equal(m4(READS), m3(READS));

    // mmap of a passthrough file maps the cache file.
    await dropCaches();
    assert.equal(sha256(await mmapRead(big)), bigSha, 'mmap bytes');
    assert.ok((await mmapRead(small)).equals(smallBytes), 'mmap bytes of the small file');
    const m5 = await scrape(served);
    assert.equal(m5(PASSTHROUGH), m4(PASSTHROUGH) + 2);
    assert.equal(m5(READS), m4(READS), 'no FUSE read for mapped pages');

    assert.equal((await own.unmount(mnt)).code, 0);
  });

  it('a file not yet complete is served by tocfs; once it is, the next open passes through', async (t) => {
    const served = await mountWith(own, `oci:${data.dir}`);
    const { mnt } = served;
    if (!(await needPassthrough(t, mnt))) return;
    const file = join(mnt, 'data/partial.bin');
    const want = seededBytes('session-partial', BIG);

    const fh = await open(file);
    const head = Buffer.alloc(100 * 1024);
    assert.equal((await fh.read(head, 0, head.length, 0)).bytesRead, head.length);
    await fh.close();
    assert.ok(head.equals(want.subarray(0, head.length)));

    const m0 = await scrape(served);
    assert.equal(sha256(await readFile(file)), sha256(want), 'bytes of the second open');
    const m1 = await scrape(served);
    assert.equal(m1(PASSTHROUGH), m0(PASSTHROUGH), 'the second open found the file incomplete: served by tocfs');
    assert.ok(m1(READS) > m0(READS), 'with FUSE reads');

    assert.equal(sha256(await readFile(file)), sha256(want), 'bytes of the third open');
    const m2 = await scrape(served);
    assert.equal(m2(PASSTHROUGH), m1(PASSTHROUGH) + 1, 'the third open passed through');
    assert.equal(m2(READS), m1(READS));
    await dropCaches();
    assert.equal(sha256(await readFile(file)), sha256(want), 'bytes read from the cache file');
    assert.equal((await scrape(served))(READS), m1(READS));

    assert.equal((await own.unmount(mnt)).code, 0);
  });

  it('the same content in two images is one cache file: the second image passes through on its first open and fetches nothing', async (t) => {
    const SIZE = 6 * MIB + 777;
    const shared = () => seededContent('session-shared', SIZE);
    const sharedSha = sha256(seededBytes('session-shared', SIZE));
    const a = await buildImage(join(tmp, 'share-a'), { format: 'zstd:chunked', layers: [[{ path: 'opt', type: 'dir' }, { path: 'opt/shared.bin', content: shared() }]] });
    const b = await buildImage(join(tmp, 'share-b'), {
      format: 'zstd:chunked',
      layers: [[{ path: 'srv', type: 'dir' }, { path: 'srv/extra.txt', content: 'only in b\n' }, { path: 'srv/data', type: 'dir' }, { path: 'srv/data/copy.bin', content: shared(), mode: 0o600 }]],
    });
    assert.notEqual(a.layers[0]!.digest, b.layers[0]!.digest, 'different layers');
    let reg: TestRegistry | undefined;
    try {
      reg = await startRegistry();
      await reg.load(a.dir, 'share-a');
      await reg.load(b.dir, 'share-b');
      const cache = await mkdtemp(join(tmp, 'shared-cache-'));
      const ma = await mountWith(own, `docker://${reg.host}/share-a:latest`, cache, ['--tls-verify=false']);
      const mb = await mountWith(own, `docker://${reg.host}/share-b:latest`, cache, ['--tls-verify=false']);
      if (!(await needPassthrough(t, ma.mnt))) return;
      await ownSession(mb.mnt);

      assert.equal(sha256(await readFile(join(ma.mnt, 'opt/shared.bin'))), sharedSha);
      // A's daemon writes the chunks it fetched to disk in the background (a second or so after
      // the read returns, measured): B, another process, can use them once they are there.
      const chunks = await chunkDigests(a, 'opt/shared.bin');
      assert.ok(chunks.length > 10, `a file of many chunks (${chunks.length})`);
      await waitFor("A's chunks to reach the cache directory", async () => {
        const names = new Set((await cacheFiles(cache)).map((f) => f.name));
        return chunks.every((d) => names.has(`${d.slice(7, 9)}/${d.slice(7)}`));
      });
      await registryLogSettled(reg);
      const getsBefore = blobGets(reg.log).length;
      const b0 = await scrape(mb);

      assert.equal(sha256(await readFile(join(mb.mnt, 'srv/data/copy.bin'))), sharedSha, 'bytes through image B');
      const b1 = await scrape(mb);
      assert.equal(b1(PASSTHROUGH), b0(PASSTHROUGH) + 1, "B's first open passed through");
      assert.equal(b1(READS), b0(READS), 'B served no FUSE read');
      await registryLogSettled(reg);
      assert.deepEqual(blobGets(reg.log).slice(getsBefore), [], 'no blob request for B');

      // A, opened again, passes through onto the same file.
      await dropCaches();
      const a0 = await scrape(ma);
      assert.equal(sha256(await readFile(join(ma.mnt, 'opt/shared.bin'))), sharedSha);
      const a1 = await scrape(ma);
      assert.equal(a1(PASSTHROUGH), a0(PASSTHROUGH) + 1);
      assert.equal(a1(READS), a0(READS));

      const name = `${sharedSha.slice(0, 2)}/${sharedSha}`;
      const whole = (await cacheFiles(cache)).filter((f) => f.size === SIZE);
      assert.deepEqual(whole, [{ name, size: SIZE }], 'exactly one cache file holds the content, named by its sha256');
      assert.equal(sha256(await readFile(join(cache, 'chunks', 'sha256', name))), sharedSha);
      // The page cache that served A is the cache file's own.
      const { stdout } = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', join(cache, 'chunks', 'sha256', name)]);
      assert.ok(Number(stdout.trim()) >= SIZE, `the cache file is resident after a passthrough read (${stdout.trim()} of ${SIZE} bytes, in whole pages)`);

      assert.equal((await own.unmount(ma.mnt)).code, 0);
      assert.equal((await own.unmount(mb.mnt)).code, 0);
    } finally {
      await own.cleanup();
      await reg?.stop();
    }
  });

  it('READDIRPLUS: `ls -l` of 2000 entries costs almost no lookups; through fuse-native it costs one each', async (t) => {
    const served = await mountWith(own, `oci:${kinds.dir}`);
    await ownSession(served.mnt);
    const o0 = await scrape(served);
    assert.equal(await listLong(join(served.mnt, 'many')), MANY);
    const o1 = await scrape(served);
    const ownCost = o1(GETATTRS) - o0(GETATTRS);
    t.diagnostic(`own session: ${ownCost} getattr/lookup requests for ${MANY} entries`);
    assert.ok(ownCost < 100, `the own session answered ${ownCost} getattr/lookup requests for ${MANY} entries`);
    assert.equal((await own.unmount(served.mnt)).code, 0);

    // The same walk where every entry is looked up: the count above can fail.
    const native = new Mounts(tmp, { ...isolatedCliEnv(tmp), TOCFS_CONFIG: '', TOCFS_DAEMON_FUSE_SESSION: 'fuse-native' });
    try {
      const ns = await mountWith(native, `oci:${kinds.dir}`);
      await stat(ns.mnt);
      assert.doesNotMatch(await readFile(mountFiles(ns.mnt).log, 'utf8'), /FUSE session initialised/, 'fuse-native serves this one');
      const n0 = await scrape(ns);
      assert.equal(await listLong(join(ns.mnt, 'many')), MANY);
      const n1 = await scrape(ns);
      const nativeCost = n1(GETATTRS) - n0(GETATTRS);
      t.diagnostic(`fuse-native: ${nativeCost} getattr/lookup requests for ${MANY} entries`);
      assert.ok(nativeCost >= MANY, `fuse-native answered ${nativeCost} getattr/lookup requests for ${MANY} entries`);
      assert.equal((await native.unmount(ns.mnt)).code, 0);
    } finally {
      await native.cleanup();
    }
  });

  it('without the addon, daemon.fuse_session = tocfs falls back to fuse-native (logged) and the mount works', async () => {
    // The addon is found next to the package.json above the running source: a copy of the
    // package's source without native/build is tocfs with the addon not built.
    const pkg = await mkdtemp(join(tmp, 'no-addon-'));
    await cp(join(REPO, 'src'), join(pkg, 'src'), { recursive: true });
    for (const f of ['package.json', 'tsconfig.json']) await cp(join(REPO, f), join(pkg, f));
    await symlink(join(REPO, 'node_modules'), join(pkg, 'node_modules'));
    assert.equal(await stat(join(pkg, FUSE_DEV_ADDON)).then(() => true, () => false), false);

    const mnt = await mkdtemp(join(tmp, 'mnt-'));
    const cache = await mkdtemp(join(tmp, 'cache-'));
    const env = { ...process.env, ...own.env, TOCFS_LOG_JSON: '1' };
    const mounted = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(pkg, 'src', 'cli', 'entry.ts'), 'mount', `oci:${kinds.dir}`, mnt, '--cache-dir', cache, '--prefetch', 'none'], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
    });
    try {
      assert.equal(mounted.code, 0, mounted.stderr);
      assert.ok(await isTocfsMount(mnt));
      assert.equal(await readFile(join(mnt, 'etc/hello.txt'), 'utf8'), 'hello world\n');
      assert.equal((await readdir(join(mnt, 'many'))).length, MANY);
      const log = await logWith(mnt, /own FUSE session is unavailable/);
      assert.match(log, /own FUSE session is unavailable \([^)]*tocfs_fuse_dev\.node is not built/, `the fallback is logged with its reason:\n${log.slice(-3000)}`);
      assert.doesNotMatch(log, /FUSE session initialised/);
    } finally {
      if (await isTocfsMount(mnt)) {
        const r = await runCli(['unmount', mnt], { env: own.env });
        assert.equal(r.code, 0, r.stderr);
      }
      await rm(mountFiles(mnt).log, { force: true });
    }
  });
});
