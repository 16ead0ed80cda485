/**
 * Load: 64 concurrent readers of random ranges over three mounted images (zstd:chunked and
 * eStargz, from a real docker-registry) plus `find` and lstat storms, for a bounded time.
 * Every byte read is checked; nothing may fail; each daemon's resident memory stays within
 * its daemon.memory budget all along; the caches verify clean afterwards.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { mountFiles, readMountState } from '../src/daemon/state.js';
import { isAlive } from '../src/process-alive.js';
import { runCli } from './helpers/cli.js';
import { buildImage, seededBytes, seededContent, type FileSpec, type ImageFormat } from './helpers/images.js';
import { seededSlice, type LoadResult, type LoadSpec } from './helpers/load-readers.js';
import { fuseSkipReason, isTocfsMount, Mounts } from './helpers/mounts.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';

const run = promisify(execFile);
const skip = await fuseSkipReason();
const READERS_SCRIPT = fileURLToPath(new URL('./helpers/load-readers.ts', import.meta.url));

const READERS = 64;
const DURATION_MS = 15_000;
const MiB = 1024 * 1024;
/**
 * daemon.memory of each daemon. Besides its memory tier a daemon holds Node and V8 (the tests
 * run tocfs from source under tsx: ~105-120 MiB at rest), fuse-native, undici's pools, and the
 * bytes in flight: up to fetch.concurrency (8) ranges of up to 1 MiB per layer, their
 * decompressed chunks, FUSE read buffers, chunks queued for the disk. The memory tier
 * (cache.memory_size: its default, far above this) must give way for the daemon to keep within.
 */
const DAEMON_MEMORY = 224 * MiB;
const IMAGES: Array<{ name: string; format: ImageFormat }> = [
  { name: 'load-a', format: 'zstd:chunked' },
  { name: 'load-b', format: 'estargz' },
  { name: 'load-c', format: 'zstd:chunked' },
];
const BIG_FILES = 16;
const BIG_SIZE = 12 * MiB;
const DIRS = 20;
const FILES_PER_DIR = 12;

interface Expected {
  files: Array<{ path: string; seed: string; size: number }>;
  /** `find -printf '%P %s %m %y'` lines, sorted (tocfs gives directories a size of 4096). */
  listing: string[];
}

function imageContent(name: string): { layers: FileSpec[][]; expected: Expected } {
  const files: Expected['files'] = [];
  const listing: string[] = [];
  const dir = (path: string): FileSpec => {
    listing.push(`${path} 4096 755 d`);
    return { path, type: 'dir', mode: 0o755 };
  };
  const file = (path: string, size: number): FileSpec => {
    const seed = `${name}:${path}`;
    files.push({ path, seed, size });
    listing.push(`${path} ${size} 644 f`);
    return { path, mode: 0o644, content: seededContent(seed, size) };
  };
  const big = [dir('data'), ...Array.from({ length: BIG_FILES }, (_, i) => file(`data/big-${i}.bin`, BIG_SIZE - i * 4099))];
  const tree: FileSpec[] = [dir('tree')];
  for (let d = 0; d < DIRS; d++) {
    tree.push(dir(`tree/d${d}`));
    for (let f = 0; f < FILES_PER_DIR; f++) tree.push(file(`tree/d${d}/f${f}.dat`, 1 + ((d * FILES_PER_DIR + f) * 7919) % (48 * 1024)));
  }
  return { layers: [big, tree], expected: { files, listing: listing.sort() } };
}

function statusField(pid: number, field: string): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024);
}

const mib = (n: number): string => (n / MiB).toFixed(1);

describe('load', { skip, timeout: 180_000 }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let mounts: Mounts;
  let env: NodeJS.ProcessEnv;
  const mounted: Array<{ name: string; mnt: string; cache: string; pid: number; expected: Expected }> = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-load-'));
    reg = await startRegistry();
    await writeFile(join(tmp, 'registries.conf'), '');
    env = {
      TOCFS_CONFIG: '',
      XDG_CONFIG_HOME: join(tmp, 'xdg'),
      ...isolatedCliEnv(tmp),
      TOCFS_DAEMON_MEMORY: String(DAEMON_MEMORY),
    };
    mounts = new Mounts(tmp, env);
    for (const { name, format } of IMAGES) {
      const { layers, expected } = imageContent(name);
      const img = await buildImage(join(tmp, name), { format, layers, chunkSize: 256 * 1024 });
      await rm(join(img.dir, '.source'), { recursive: true, force: true });
      await reg.load(img.dir, name);
      await rm(img.dir, { recursive: true, force: true });
      const cache = await mkdtemp(join(tmp, 'cache-'));
      const mnt = await mounts.mount(`docker://${reg.host}/${name}:latest`, ['--tls-verify=false', '--prefetch', 'none'], cache);
      const state = await readMountState(mnt);
      assert.ok(state, `${name}: the daemon recorded its state`);
      mounted.push({ name, mnt, cache, pid: state.pid, expected });
    }
  });

  after(async () => {
    await mounts?.cleanup();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it(`${READERS} readers of random ranges and find/stat storms over ${IMAGES.length} mounts: every byte right, RSS within daemon.memory`, async (t) => {
    assert.ok(seededSlice('check', 1000, 5000).equals(seededBytes('check', 6000).subarray(1000)), 'range expectations match the image content');
    const baseline = await Promise.all(mounted.map((m) => statusField(m.pid, 'VmRSS')));

    // Readers in a child process with a thread pool big enough for all of them at once.
    const spec: LoadSpec = {
      files: mounted.flatMap((m) => m.expected.files.map((f) => ({ ...f, path: join(m.mnt, f.path) }))),
      readers: READERS,
      durationMs: DURATION_MS,
      maxRead: 256 * 1024,
    };
    const child = spawn(process.execPath, ['--import', 'tsx', READERS_SCRIPT], { env: { ...process.env, UV_THREADPOOL_SIZE: String(READERS + 4) }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    child.stdin.end(JSON.stringify(spec));
    const until = Date.now() + DURATION_MS;

    // Meanwhile: `find` over each mount (a readdir and lstat of every entry), lstat of random paths, RSS samples.
    const storms = { finds: 0, entries: 0, lstats: 0, mismatches: [] as string[] };
    const findStorm = async (): Promise<void> => {
      while (Date.now() < until) {
        for (const m of mounted) {
          const { stdout: out } = await run('find', [m.mnt, '-mindepth', '1', '-printf', '%P %s %m %y\\n'], { maxBuffer: 16 * MiB });
          const lines = out.trim().split('\n').sort();
          storms.finds++;
          storms.entries += lines.length;
          if (lines.join('\n') !== m.expected.listing.join('\n')) storms.mismatches.push(`${m.name}: find listed ${lines.length} entries, expected ${m.expected.listing.length}`);
        }
      }
    };
    const lstatStorm = async (): Promise<void> => {
      while (Date.now() < until) {
        const m = mounted[storms.lstats % mounted.length]!;
        const f = m.expected.files[(storms.lstats * 31) % m.expected.files.length]!;
        const st = await lstat(join(m.mnt, f.path));
        storms.lstats++;
        if (st.size !== f.size || !st.isFile()) storms.mismatches.push(`${m.name} ${f.path}: lstat size ${st.size}`);
      }
    };
    const peakSampled = new Array<number>(mounted.length).fill(0);
    const sampler = setInterval(() => {
      mounted.forEach((m, i) => void statusField(m.pid, 'VmRSS').then((v) => (peakSampled[i] = Math.max(peakSampled[i]!, v || 0)), () => undefined));
    }, 250);
    try {
      await Promise.all([findStorm(), findStorm(), lstatStorm(), lstatStorm()]);
    } finally {
      clearInterval(sampler);
    }
    const code = await exited;
    assert.equal(code, 0, `the readers failed: ${stderr}`);
    const res = JSON.parse(stdout) as LoadResult;

    // Peak resident set since each daemon started (the kernel's high-water mark covers between samples).
    const peaks = await Promise.all(mounted.map((m) => statusField(m.pid, 'VmHWM')));
    const worstPeak = Math.max(...peaks);
    for (const m of mounted) {
      assert.ok(isAlive(m.pid), `${m.name}: the daemon is alive`);
      assert.ok(await isTocfsMount(m.mnt), `${m.name}: still mounted`);
      assert.doesNotMatch(await readFile(mountFiles(m.mnt).log, 'utf8'), /uncaught exception|unhandled rejection|"level":50/, `${m.name}: the daemon logged an error`);
    }
    const line =
      `# load: ${READERS} readers x ${DURATION_MS / 1000} s over ${mounted.length} mounts: ${res.reads} reads (${mib(res.bytes)} MiB) checked, ${res.wrong.length} wrong bytes, ${res.errors.length} errors, ` +
      `${storms.finds} find storms (${storms.entries} entries) + ${storms.lstats} lstats, worst read latency ${res.worstMs} ms; ` +
      `daemon RSS ${baseline.map(mib).join('/')} MiB at rest, peak ${peaks.map(mib).join('/')} MiB (daemon.memory ${mib(DAEMON_MEMORY)} MiB)`;
    t.diagnostic(line);
    console.log(line);

    assert.deepEqual(res.wrong, []);
    assert.deepEqual(res.errors, []);
    assert.deepEqual(storms.mismatches, []);
    assert.ok(res.reads >= READERS, `every reader read (${res.reads} reads)`);
    assert.ok(storms.finds >= mounted.length, 'every mount was walked');
    assert.ok(worstPeak <= DAEMON_MEMORY, `peak RSS ${mib(worstPeak)} MiB exceeds daemon.memory (${mib(DAEMON_MEMORY)} MiB)`);

    for (const m of mounted) {
      assert.equal((await mounts.unmount(m.mnt)).code, 0);
      const v = await runCli(['cache', 'verify', '--cache-dir', m.cache, '--json'], { env });
      assert.equal(v.code, 0, `${m.name}: tocfs cache verify: ${v.stderr}`);
      const verified = JSON.parse(v.stdout.toString()) as { checked: number; bad: string[] };
      assert.deepEqual(verified.bad, []);
      assert.ok(verified.checked > 0);
    }
  });
});
