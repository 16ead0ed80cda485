/**
 * Fault suite: real FUSE mounts (`tocfs mount`) of zstd:chunked and eStargz images served by
 * a real docker-registry, behind a fault-injecting proxy the test controls. For every fault a
 * read returns the right bytes or EIO within a bound — never wrong bytes, never a hang past
 * the fetch timeout — the daemon survives, the cache verifies clean, and reads succeed once
 * the fault clears. mount-behaviour.test.ts covers the simplest mount-level faults (resets
 * with no retries, a body trickling past the timeout); this suite covers the rest. Its second
 * part meets a registry that stalls or dies with default settings, through a mount and through
 * Podman on the store, and a mirror taking over.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { ChunkCache } from '../src/cache/chunk-cache.js';
import { mountFiles, readMountState } from '../src/daemon/state.js';
import { isAlive } from '../src/process-alive.js';
import { runCli } from './helpers/cli.js';
import { buildImage, seededBytes, seededContent, type BuiltImage, type FileSpec, type ImageFormat } from './helpers/images.js';
import { fuseSkipReason, isTocfsMount, Mounts } from './helpers/mounts.js';
import { LOADER, Podman, podmanSkipReason, RUN_LIMITS, unmountUnder } from './helpers/podman.js';
import { startFaultProxy, type Fault, type FaultProxy } from './helpers/registry-fault-proxy.js';
import { freePort, startRegistry, type TestRegistry } from './helpers/registry.js';
import { isolatedCliEnv } from './helpers/registry-env.js';
import { isFuseMounted, registryLogSettled, startStore, type RunningStore } from './helpers/store.js';

const run = promisify(execFile);
const skip = await fuseSkipReason();

/** fetch.timeout of the fault mounts. */
const TIMEOUT_MS = 3000;
/** registry.stall_timeout of the fault mounts. */
const STALL_MS = 1000;
/**
 * The longest a read may take under a fault: the kernel turns one read() into up to three
 * FUSE reads when they fail — the read-ahead request, then its retries of the page (seen:
 * 64 KiB, 4 KiB, 4 KiB) — each bounded by fetch.timeout; plus scheduling slack on a loaded
 * machine. A correctness bound, not a performance figure.
 */
const BOUND_MS = 3 * TIMEOUT_MS + 4000;
/** Reads of uncached data succeed again at most this long after a registry that was down answers again. */
const RECOVERY_MS = 5000;
const FORMATS: ImageFormat[] = ['zstd:chunked', 'estargz'];
/** Files of 384 KiB, one (or a few) per fault case so no case sees another's cached chunks. */
const FAULT_FILES = 28;
const FAULT_FILE_SIZE = 384 * 1024;
const BIG_SIZE = 8 * 1024 * 1024;
const READ_SIZE = 64 * 1024;

const faultFile = (i: number): string => `faults/${String(i).padStart(2, '0')}.bin`;
const seedOf = (format: ImageFormat, path: string): string => `${format}:${path}`;

function imageFiles(format: ImageFormat): FileSpec[][] {
  return [
    [
      { path: 'big', type: 'dir', mode: 0o755 },
      { path: 'big/large.bin', mode: 0o644, content: seededContent(seedOf(format, 'big/large.bin'), BIG_SIZE) },
      { path: 'big/other.bin', mode: 0o644, content: seededContent(seedOf(format, 'big/other.bin'), 3 * 1024 * 1024) },
    ],
    [
      { path: 'faults', type: 'dir', mode: 0o755 },
      ...Array.from({ length: FAULT_FILES }, (_, i): FileSpec => ({ path: faultFile(i), mode: 0o644, content: seededContent(seedOf(format, faultFile(i)), FAULT_FILE_SIZE) })),
    ],
  ];
}

interface Tally {
  injected: number;
  reads: number;
  ok: number;
  eio: number;
  wrong: string[];
  /** Errors other than EIO (ENOTCONN would mean the daemon died). */
  unexpected: string[];
  worstMs: number;
  /** Reads after a fault cleared that needed a second try. */
  secondTries: number;
}

const newTally = (): Tally => ({ injected: 0, reads: 0, ok: 0, eio: 0, wrong: [], unexpected: [], worstMs: 0, secondTries: 0 });
const total = newTally();

function summary(t: Tally): string {
  return `${t.injected} injected, ${t.reads} reads checked (${t.ok} correct, ${t.eio} EIO), ${t.wrong.length} wrong bytes, ${t.unexpected.length} other errors, worst latency ${t.worstMs} ms${t.secondTries ? `, ${t.secondTries} read(s) after a fault cleared needed a second try` : ''}`;
}

interface FaultMount {
  format: ImageFormat;
  mnt: string;
  cache: string;
  image: BuiltImage;
  /** Next unused fault file. */
  next: number;
}

describe('faults under real mounts', { skip, timeout: 240_000 }, () => {
  let tmp: string;
  let regRoot: string;
  let regPort: number;
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let env: NodeJS.ProcessEnv;
  let mounts: Mounts;
  const images = new Map<ImageFormat, BuiltImage>();
  const live = new Map<ImageFormat, FaultMount>();
  const repo = (format: ImageFormat): string => `faults-${format.replace(':', '-')}`;
  const ref = (host: string, format: ImageFormat): string => `docker://${host}/${repo(format)}:latest`;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-faults-'));
    regRoot = join(tmp, 'registry');
    await mkdir(regRoot);
    regPort = await freePort();
    reg = await startRegistry({ root: regRoot, port: regPort });
    for (const format of FORMATS) {
      const img = await buildImage(join(tmp, `img-${repo(format)}`), { format, layers: imageFiles(format), chunkSize: 128 * 1024 });
      await rm(join(img.dir, '.source'), { recursive: true, force: true });
      await reg.load(img.dir, repo(format));
      images.set(format, img);
    }
    proxy = await startFaultProxy(reg.host);
    await writeFile(join(tmp, 'registries.conf'), '');
    env = {
      TOCFS_CONFIG: '',
      XDG_CONFIG_HOME: join(tmp, 'xdg'),
      ...isolatedCliEnv(tmp),
      TOCFS_FETCH_TIMEOUT: `${TIMEOUT_MS}ms`,
      TOCFS_REGISTRY_RETRIES: '3',
      TOCFS_REGISTRY_STALL_TIMEOUT: `${STALL_MS}ms`,
      // Only the chunks a read asks for are fetched, so each fault hits the read it is meant for.
      TOCFS_FETCH_READ_AHEAD: '0',
    };
    mounts = new Mounts(tmp, env);
    await Promise.all(
      FORMATS.map(async (format) => {
        const cache = await mkdtemp(join(tmp, 'cache-'));
        const mnt = await mounts.mount(ref(proxy.host, format), ['--tls-verify=false', '--prefetch', 'none'], cache);
        live.set(format, { format, mnt, cache, image: images.get(format)!, next: 0 });
      }),
    );
  });

  after(async () => {
    console.log(`# faults: ${summary(total)}`);
    await mounts?.cleanup();
    await proxy?.close();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** One pread of `length` bytes at `offset`, timed and classified. */
  async function checkedRead(t: Tally, mnt: string, path: string, offset: number, length: number, format: ImageFormat): Promise<'ok' | 'EIO' | 'other'> {
    const want = seededBytes(seedOf(format, path), offset + length).subarray(offset);
    const started = Date.now();
    let outcome: 'ok' | 'EIO' | 'other';
    const fh = await open(join(mnt, path));
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (!buf.subarray(0, bytesRead).equals(want.subarray(0, bytesRead))) {
        t.wrong.push(`${format} ${path} [${offset}, +${length}): ${bytesRead} bytes differ`);
        outcome = 'other';
      } else if (bytesRead === length) {
        outcome = 'ok';
      } else {
        // A short read is a failed read of the rest (its bytes were right).
        outcome = 'EIO';
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EIO') outcome = 'EIO';
      else {
        t.unexpected.push(`${format} ${path}: ${code ?? (e as Error).message}`);
        outcome = 'other';
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
    const ms = Date.now() - started;
    t.reads++;
    t.worstMs = Math.max(t.worstMs, ms);
    if (outcome === 'ok') t.ok++;
    if (outcome === 'EIO') t.eio++;
    assert.ok(ms <= BOUND_MS, `${format} ${path}: a read under a fault took ${ms} ms (bound ${BOUND_MS} ms)`);
    return outcome;
  }

  async function daemonAlive(m: FaultMount): Promise<void> {
    const state = await readMountState(m.mnt);
    assert.ok(state, `${m.format}: the daemon's state is there`);
    assert.ok(isAlive(state.pid), `${m.format}: the daemon (pid ${state.pid}) is alive`);
    assert.ok(await isTocfsMount(m.mnt), `${m.format}: still mounted`);
    await statfs(m.mnt);
    // The daemon logs and survives an uncaught error; the suite counts it as a crash all the same.
    const log = await readFile(mountFiles(m.mnt).log, 'utf8');
    assert.doesNotMatch(log, /uncaught exception|unhandled rejection/, `${m.format}: the daemon hit an uncaught error`);
  }

  /** The error messages the daemon logged for failed reads of `file`. */
  async function failedReads(m: FaultMount, file: string): Promise<string[]> {
    const lines = (await readFile(mountFiles(m.mnt).log, 'utf8')).split('\n').filter((l) => l.startsWith('{'));
    return lines
      .map((l) => JSON.parse(l) as { msg?: string; path?: string; err?: { message?: string } })
      .filter((e) => e.msg === 'read failed: answering EIO' && e.path === `/${file}`)
      .map((e) => e.err?.message ?? '');
  }

  /** What `tocfs cache verify` does (re-hash every chunk file), in-process: after every case, the disk tier must be clean. */
  async function cacheClean(dir: string): Promise<number> {
    const cache = await ChunkCache.open({ dir, memoryBytes: 1 });
    const res = await cache.verify();
    assert.deepEqual(res.bad, [], `chunk files in ${dir} that do not match their digests`);
    return res.checked;
  }

  /** `tocfs cache verify` itself: exit status 0 and every chunk matching. */
  async function cliVerify(dir: string): Promise<number> {
    const r = await runCli(['cache', 'verify', '--cache-dir', dir, '--json'], { env });
    assert.equal(r.code, 0, `tocfs cache verify: ${r.stderr}${r.stdout}`);
    const res = JSON.parse(r.stdout.toString()) as { checked: number; bad: string[] };
    assert.deepEqual(res.bad, []);
    return res.checked;
  }

  /**
   * Runs a network fault case against both formats' mounts: `during` reads under the fault
   * (each read right or EIO, bounded), then with the fault cleared the same reads must succeed.
   */
  type Read = (file: string, offset?: number, length?: number) => Promise<'ok' | 'EIO' | 'other'>;
  function networkCase(name: string, body: (ctx: { m: FaultMount; t: Tally; read: Read; file: () => string }) => Promise<void>) {
    it(name, async (tc: TestContext) => {
      const t = newTally();
      const before = proxy.faulted();
      proxy.clear();
      for (const format of FORMATS) {
        const m = live.get(format)!;
        const touched: Array<[string, number, number]> = [];
        const read: Read = (file, offset = 4096 * 7, length = READ_SIZE) => {
          touched.push([file, offset, length]);
          return checkedRead(t, m.mnt, file, offset, length, format);
        };
        const file = (): string => {
          assert.ok(m.next < FAULT_FILES, 'enough fault files for every case');
          return faultFile(m.next++);
        };
        try {
          await body({ m, t, read, file });
        } finally {
          proxy.clear();
        }
        // The fault has cleared: every read made under it now succeeds — at the latest on a
        // second try (a read arriving within milliseconds of the last timeout may still catch
        // the fetch being given up, and fail as that fetch's read did).
        for (const [f, offset, length] of touched) {
          let outcome = await checkedRead(t, m.mnt, f, offset, length, format);
          if (outcome === 'EIO') {
            t.secondTries++;
            outcome = await checkedRead(t, m.mnt, f, offset, length, format);
          }
          if (outcome !== 'ok') assert.fail(`${format} ${f}: read after the fault cleared: ${outcome}; the daemon logged: ${(await failedReads(m, f)).join(' | ')}`);
        }
        await daemonAlive(m);
        await cacheClean(m.cache);
      }
      t.injected += proxy.faulted() - before;
      addTo(total, t);
      tc.diagnostic(`# faults (${name}): ${summary(t)}`);
      assert.deepEqual(t.wrong, []);
      assert.deepEqual(t.unexpected, []);
    });
  }

  function addTo(sum: Tally, t: Tally): void {
    sum.injected += t.injected;
    sum.reads += t.reads;
    sum.ok += t.ok;
    sum.eio += t.eio;
    sum.wrong.push(...t.wrong);
    sum.unexpected.push(...t.unexpected);
    sum.worstMs = Math.max(sum.worstMs, t.worstMs);
    sum.secondTries += t.secondTries;
  }

  const inject = (fault: Fault, times = 1): void => proxy.inject(fault, { times });

  networkCase('connection resets and cuts mid-body are retried: right bytes', async ({ read, file }) => {
    inject({ kind: 'reset' }, 2);
    assert.equal(await read(file()), 'ok');
    inject({ kind: 'cut', afterBytes: 1000 }, 2);
    assert.equal(await read(file()), 'ok');
  });

  networkCase('a 5xx burst within the retries is ridden out; a longer one is EIO within the timeout', async ({ read, file }) => {
    inject({ kind: 'status', status: 503 }, 2);
    assert.equal(await read(file()), 'ok');
    inject({ kind: 'status', status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' }, 1000);
    assert.equal(await read(file()), 'EIO');
  });

  networkCase('429 with Retry-After is honoured; a Retry-After beyond the timeout is EIO, and the next read after it clears fetches afresh', async ({ m, read, file }) => {
    const f = file();
    const at = proxy.requests.length;
    inject({ kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    assert.equal(await read(f), 'ok');
    // The retry is the next request for the same range (the kernel's read-ahead may ask for others meanwhile).
    const first = proxy.requests.slice(at).find((r) => r.fault === 'status')!;
    const retry = proxy.requests.slice(at).find((r) => r !== first && r.path === first.path && r.headers.range === first.headers.range);
    assert.ok(retry && retry.at - first.at >= 900, `the retry waited for Retry-After: ${retry ? retry.at - first.at : 'no retry'} ms`);
    // Until it clears, every request is told to come back in 30 s.
    inject({ kind: 'status', status: 429, headers: { 'retry-after': '30' } }, 1000);
    const waited = file();
    assert.equal(await read(waited), 'EIO');
    const logged = await failedReads(m, waited);
    assert.ok(logged.length > 0 && logged.every((msg) => msg.includes(`no data within fetch.timeout (${TIMEOUT_MS / 1000}s)`)), `the log says the read timed out: ${logged.join(' | ')}`);
  });

  networkCase('slow bodies: a trickle within the timeout gives the right bytes; one past it is EIO', async ({ read, file }) => {
    inject({ kind: 'trickle', bytesPerSecond: 1024 * 1024 });
    assert.equal(await read(file()), 'ok');
    inject({ kind: 'trickle', bytesPerSecond: 2048 }, 1000);
    assert.equal(await read(file()), 'EIO');
  });

  networkCase('a body that stalls is resumed where it stopped (the registry answers the check, so it stays up); one that stalls every time is EIO', async ({ read, file }) => {
    inject({ kind: 'stall', afterBytes: 1000 });
    assert.equal(await read(file()), 'ok');
    inject({ kind: 'stall', afterBytes: 1000 }, 1000);
    assert.equal(await read(file()), 'EIO');
  });

  networkCase('truncated bodies (Content-Length cut, clean end) are retried; truncation every time is EIO', async ({ read, file }) => {
    inject({ kind: 'truncate', keep: 1000 }, 2);
    assert.equal(await read(file()), 'ok');
    inject({ kind: 'truncate', keep: 5000 }, 1000);
    assert.equal(await read(file()), 'EIO');
  });

  networkCase('a flipped byte in a frame fails verification: EIO, never the corrupt bytes', async ({ m, read, file }) => {
    // Once: the kernel retries the failed page, which fetches afresh — right bytes or EIO.
    inject({ kind: 'flip' });
    assert.notEqual(await read(file(), 0, FAULT_FILE_SIZE), 'other');
    // Every time until it clears: EIO.
    inject({ kind: 'flip', at: 17 }, 1000);
    const flipped = file();
    assert.equal(await read(flipped, 0, FAULT_FILE_SIZE), 'EIO');
    const logged = await failedReads(m, flipped);
    assert.ok(logged.length > 0, 'the failed read is logged');
    for (const msg of logged) {
      assert.match(msg, /digest mismatch|cannot decompress/, 'the log says the chunk failed verification');
      assert.equal(msg.split(`entry ${flipped}`).length, 2, `the message names the file once: ${msg}`);
    }
  });

  networkCase("the wrong blob's bytes are EIO, whether or not its Content-Range gives it away", async ({ m, read, file }) => {
    const wrong = m.image.layers[0]!.digest;
    inject({ kind: 'wrong-blob', digest: wrong, hideTotal: true }, 1000);
    assert.equal(await read(file()), 'EIO');
    proxy.clear();
    inject({ kind: 'wrong-blob', digest: wrong }, 1000);
    assert.equal(await read(file()), 'EIO');
  });

  it('connection refused (the registry address stops answering) is EIO at once; reads resume within seconds of it being back', async (tc) => {
    const t = newTally();
    const port = proxy.port;
    await proxy.close();
    const files = new Map<ImageFormat, string>();
    for (const format of FORMATS) {
      const m = live.get(format)!;
      const f = faultFile(m.next++);
      files.set(format, f);
      const started = Date.now();
      assert.equal(await checkedRead(t, m.mnt, f, 8192, READ_SIZE, format), 'EIO');
      assert.ok(Date.now() - started < 2000, `refused: EIO after ${Date.now() - started} ms`);
      t.injected++;
    }
    proxy = await startFaultProxy(reg.host, { port });
    const back = Date.now();
    for (const format of FORMATS) {
      const m = live.get(format)!;
      // The daemon learns that the registry is back from its background check (every 2 s at most).
      while ((await checkedRead(t, m.mnt, files.get(format)!, 8192, READ_SIZE, format)) !== 'ok') {
        assert.ok(Date.now() - back < RECOVERY_MS, `${format}: reads still fail ${Date.now() - back} ms after the registry is back`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await daemonAlive(m);
      await cacheClean(m.cache);
    }
    addTo(total, t);
    tc.diagnostic(`# faults (connection refused): ${summary(t)}`);
    assert.deepEqual(t.wrong, []);
    assert.deepEqual(t.unexpected, []);
  });

  it('the registry killed mid-body: right bytes or EIO within the timeout; reads resume once it restarts', async (tc) => {
    const t = newTally();
    for (const format of FORMATS) {
      const m = live.get(format)!;
      const f = faultFile(m.next++);
      // Slow the body so the kill lands in the middle of it.
      proxy.inject({ kind: 'trickle', bytesPerSecond: 64 * 1024 });
      const reading = checkedRead(t, m.mnt, f, 0, FAULT_FILE_SIZE, format);
      await new Promise((r) => setTimeout(r, 700));
      await reg.stop('SIGKILL');
      t.injected++;
      assert.notEqual(await reading, 'other');
      reg = await startRegistry({ root: regRoot, port: regPort });
      proxy.clear();
      assert.equal(await checkedRead(t, m.mnt, f, 0, FAULT_FILE_SIZE, format), 'ok', 'after the registry restarted');
      await daemonAlive(m);
      await cacheClean(m.cache);
    }
    addTo(total, t);
    tc.diagnostic(`# faults (registry killed): ${summary(t)}`);
    assert.deepEqual(t.wrong, []);
    assert.deepEqual(t.unexpected, []);
  });

  it('disk full: on a 2 MiB tmpfs cache directory every read is right (the cache goes memory-only) and nothing corrupt stays', async (tc) => {
    const t = newTally();
    // A small memory tier too, so chunks are evicted and fetched again.
    const small = new Mounts(tmp, { ...env, TOCFS_CACHE_MEMORY_SIZE: '4M' });
    for (const format of FORMATS) {
      const dir = await mkdtemp(join(tmp, 'tmpfs-'));
      await run('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
      try {
        const mnt = await small.mount(ref(reg.host, format), ['--tls-verify=false', '--prefetch', 'none'], dir);
        t.injected++;
        const m: FaultMount = { format, mnt, cache: dir, image: images.get(format)!, next: 0 };
        for (let round = 0; round < 2; round++) {
          for (let i = 0; i < FAULT_FILES; i += 3) assert.equal(await checkedRead(t, mnt, faultFile(i), 0, FAULT_FILE_SIZE, format), 'ok');
          assert.equal(await checkedRead(t, mnt, 'big/large.bin', BIG_SIZE / 2, 1024 * 1024, format), 'ok');
        }
        await daemonAlive(m);
        const log = await readFile(mountFiles(mnt).log, 'utf8');
        assert.match(log, /ENOSPC/, 'the daemon noticed the full disk');
        assert.match(log, /continuing with the memory cache only/);
        assert.equal((await small.unmount(mnt)).code, 0);
        assert.ok((await cliVerify(dir)) > 0, 'what fit on the disk is there and whole');
        assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'no partial files left behind');
      } finally {
        await small.cleanup();
        await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      }
    }
    addTo(total, t);
    tc.diagnostic(`# faults (disk full): ${summary(t)}`);
    assert.deepEqual(t.wrong, []);
    assert.deepEqual(t.unexpected, []);
  });

  it('kill -9 of the daemon while a big read is fetching: the stale mount is cleared, a remount on the same cache verifies clean and reads right', async (tc) => {
    const t = newTally();
    for (const format of FORMATS) {
      const cache = await mkdtemp(join(tmp, 'cache-kill-'));
      const chunksDir = join(cache, 'chunks', 'sha256');
      let mnt = await mounts.mount(ref(reg.host, format), ['--tls-verify=false', '--prefetch', 'none'], cache);
      const state = await readMountState(mnt);
      assert.ok(state);
      const want = seededBytes(seedOf(format, 'big/large.bin'), BIG_SIZE);
      const reading = readFile(join(mnt, 'big/large.bin')).then(
        (got) => {
          t.reads++;
          if (got.equals(want)) t.ok++;
          else t.wrong.push(`${format} big/large.bin: ${got.length} bytes differ before the kill`);
        },
        (e: NodeJS.ErrnoException) => {
          // The daemon is gone: the read fails (ENOTCONN, ECONNABORTED or EIO), it never returns bytes.
          t.reads++;
          t.eio++;
          assert.ok(['ENOTCONN', 'ECONNABORTED', 'EIO'].includes(e.code ?? ''), `read failed with ${e.code}`);
        },
      );
      // Kill as soon as the first chunk files land: writes are under way.
      const deadline = Date.now() + 20_000;
      while ((await readdir(chunksDir).catch(() => [])).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      process.kill(state.pid, 'SIGKILL');
      t.injected++;
      await reading;
      const dead = Date.now() + 10_000;
      while (await statfs(mnt).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOTCONN')) {
        assert.ok(Date.now() < dead, 'the mount went stale');
        await new Promise((r) => setTimeout(r, 50));
      }
      const u = await mounts.unmount(mnt);
      assert.equal(u.code, 0, `tocfs unmount of the stale mount: ${u.stderr}`);
      assert.equal(await isTocfsMount(mnt), false);
      await cliVerify(cache);
      mnt = await mounts.mount(ref(reg.host, format), ['--tls-verify=false', '--prefetch', 'none'], cache);
      assert.equal(await checkedRead(t, mnt, 'big/large.bin', 0, BIG_SIZE, format), 'ok');
      const leftovers = (await readdir(join(cache, 'tmp'))).filter((n) => n.includes(`.${state.pid}.`));
      assert.deepEqual(leftovers, [], 'temp files of the killed daemon are cleaned when the cache is opened again');
      await daemonAlive({ format, mnt, cache, image: images.get(format)!, next: 0 });
      assert.equal((await mounts.unmount(mnt)).code, 0);
      assert.ok((await cliVerify(cache)) > 0);
    }
    addTo(total, t);
    tc.diagnostic(`# faults (kill -9 of the daemon): ${summary(t)}`);
    assert.deepEqual(t.wrong, []);
    assert.deepEqual(t.unexpected, []);
  });

  it('an unresolvable registry host: tocfs mount fails at once, naming the host', async () => {
    const mnt = await mkdtemp(join(tmp, 'dns-'));
    const started = Date.now();
    const r = await runCli(['mount', 'docker://registry.invalid/faults:latest', mnt, '--cache-dir', join(tmp, 'dns-cache')], { env });
    total.injected++;
    total.worstMs = Math.max(total.worstMs, Date.now() - started);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /registry\.invalid: host not found/);
    assert.equal(await isTocfsMount(mnt), false);
  });

  it('every cache after the network faults passes tocfs cache verify; the mounts unmount cleanly', async () => {
    for (const m of live.values()) {
      await daemonAlive(m);
      assert.ok((await cliVerify(m.cache)) > 0, 'the cache holds chunks');
      assert.equal((await mounts.unmount(m.mnt)).code, 0);
    }
    live.clear();
  });
});

/**
 * A registry that stalls (frozen by SIGSTOP: it accepts connections and answers nothing) or
 * dies (killed: connections refused), met with DEFAULT settings through a mount and through
 * `podman run` on the store: the first read of uncached data is EIO within 30 s, later ones
 * within 1 s, cached files are served, reads succeed within 5 s of the registry answering
 * again, never a wrong byte, and each daemon logs one line per change of the registry's state.
 * A mirror in registries.conf takes the reads over without an error.
 */
describe('a registry that stalls or dies, with default settings: mount and store', { skip: skip || podmanSkipReason(), timeout: 600_000 }, () => {
  const FIRST_EIO_MS = 30_000;
  const LATER_EIO_MS = 1000;
  const FILES = 40;
  const FILE_SIZE = 256 * 1024;
  const REPO = 'down-zstd';
  const file = (i: number): string => `down/${String(i).padStart(2, '0')}.bin`;
  const want = (path: string): Buffer => seededBytes(`down:${path}`, FILE_SIZE);
  let tmp: string;
  let regRoot: string;
  let regPort: number;
  let reg: TestRegistry;
  let img: BuiltImage;
  let env: NodeJS.ProcessEnv;
  let mounts: Mounts;
  let mnt: string;
  let store: RunningStore;
  let podman: Podman;
  let reader: ContainerReader;
  /**
   * Files nobody has read yet; each case takes its own. Files to cache come from the end of the
   * layer, uncached ones from its start: a read may bring the small files after it along.
   */
  let next = 0;
  let last = FILES - 1;
  const fresh = (): string => {
    assert.ok(next <= last, 'enough files for every case');
    return file(next++);
  };
  const toCache = (): string => {
    assert.ok(next <= last, 'enough files for every case');
    return file(last--);
  };
  const measured: string[] = [];

  /** A reader through one path: the mount (pread in this process) or a container on the store. */
  interface Path {
    name: 'mount' | 'store';
    read(path: string, offset: number, length: number): Promise<{ outcome: 'ok' | 'EIO' | 'other'; ms: number; detail: string }>;
    /** The daemon's log lines (JSON). */
    log(): Promise<Array<Record<string, unknown>>>;
    alive(): Promise<void>;
  }
  let paths: Path[];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-down-'));
    regRoot = join(tmp, 'registry');
    await mkdir(regRoot);
    regPort = await freePort();
    reg = await startRegistry({ root: regRoot, port: regPort });
    img = await buildImage(join(tmp, 'img'), {
      format: 'zstd:chunked',
      chunkSize: 128 * 1024,
      layers: [[{ path: 'down', type: 'dir', mode: 0o755 }, ...Array.from({ length: FILES }, (_, i): FileSpec => ({ path: file(i), mode: 0o644, content: seededContent(`down:${file(i)}`, FILE_SIZE) }))]],
    });
    await rm(join(img.dir, '.source'), { recursive: true, force: true });
    await reg.load(img.dir, REPO);
    await writeFile(join(tmp, 'registries.conf'), '');
    // Default settings: only what isolates the test from the machine's files.
    env = { TOCFS_CONFIG: '', XDG_CONFIG_HOME: join(tmp, 'xdg'), ...isolatedCliEnv(tmp) };
    mounts = new Mounts(tmp, env);
    mnt = await mounts.mount(`docker://${reg.host}/${REPO}:latest`, ['--tls-verify=false']);
    store = await startStore(join(tmp, 'store'), join(tmp, 'store-cache'), [], { ...env, TOCFS_LOG_LEVEL: 'info' });
    podman = await Podman.create(join(tmp, 'podman'), store.dir, reg.host);
    await podman.ok(['pull', '--tls-verify=false', `${reg.host}/${REPO}:latest`]);
    reader = await ContainerReader.start(podman, `${reg.host}/${REPO}:latest`);
    paths = [
      {
        name: 'mount',
        read: (path, offset, length) => preadChecked(join(mnt, path), offset, length, want(path)),
        log: async () => jsonLines((await readFile(mountFiles(mnt).log, 'utf8')).split('\n')),
        alive: async () => {
          const state = await readMountState(mnt);
          assert.ok(state && isAlive(state.pid), 'the mount daemon is alive');
          await statfs(mnt);
        },
      },
      {
        name: 'store',
        read: (path, offset, length) => reader.read(`/${path}`, offset, length, want(path)),
        log: async () => jsonLines(store.log),
        alive: async () => {
          assert.equal(store.child.exitCode, null, 'the store daemon is alive');
          assert.ok(await isFuseMounted(store.dir));
        },
      },
    ];
  });

  after(async () => {
    for (const line of measured) console.log(`# registry down: ${line}`);
    reg?.signal('SIGCONT');
    await reader?.stop();
    await podman?.cleanup().catch(() => undefined);
    await store?.stop();
    await mounts?.cleanup();
    await reg?.stop();
    if (tmp) {
      await unmountUnder(tmp);
      await rm(tmp, { recursive: true, force: true });
    }
  });

  const stateChanges = async (p: Path, host: string): Promise<{ down: number; up: number; readErrors: number }> => {
    const lines = (await p.log()).filter((l) => l.registry === host);
    const all = await p.log();
    return {
      down: lines.filter((l) => String(l.msg).startsWith('registry not answering')).length,
      up: lines.filter((l) => String(l.msg).startsWith('registry answers again')).length,
      readErrors: all.filter((l) => l.msg === 'read failed: answering EIO' && Number(l.level) >= 50).length,
    };
  };

  /** `tocfs store status --json`'s entry for `host`, once the store has written one in `state`. */
  const storeStatus = async (host: string, state: 'healthy' | 'down'): Promise<{ state: string; since: string; lastError?: string; failedFast: number; text: string }> => {
    const deadline = Date.now() + 6000;
    for (;;) {
      const r = await runCli(['store', 'status', '--json', store.dir], { env });
      const doc = JSON.parse(r.stdout.toString()) as { registries?: Array<{ registry: string; state: string; since: string; lastError?: string; failedFast: number }> };
      const entry = doc.registries?.find((x) => x.registry === host);
      if (entry?.state === state) return { ...entry, text: (await runCli(['store', 'status', store.dir], { env })).stdout.toString() };
      assert.ok(Date.now() < deadline, `tocfs store status shows ${host} ${state}: ${JSON.stringify(doc.registries)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  /**
   * One outage through both paths at once (each daemon finds it on its own): `stop` takes the
   * registry away, `resume` brings it back and resolves when it answers.
   */
  async function outage(what: string, stop: () => Promise<void>, resume: () => Promise<void>, tc: TestContext): Promise<void> {
    const files = new Map(paths.map((p) => [p.name, { cached: toCache(), first: fresh(), later: [fresh(), fresh()] }]));
    for (const p of paths) {
      const f = files.get(p.name)!;
      const r = await p.read(f.cached, 0, FILE_SIZE);
      assert.equal(r.outcome, 'ok', `${p.name}: ${f.cached} before the fault: ${r.detail}`);
    }
    const before = new Map(await Promise.all(paths.map(async (p) => [p.name, await stateChanges(p, reg.host)] as const)));
    await stop();
    // Cached files must come from tocfs's cache, not the kernel's page cache.
    await writeFile('/proc/sys/vm/drop_caches', '1');
    let resumedAt = 0;
    try {
      await Promise.all(
        paths.map(async (p) => {
          const f = files.get(p.name)!;
          const first = await p.read(f.first, 4096 * 3, 64 * 1024);
          measured.push(`${what}, ${p.name}: first read of uncached data ${first.outcome} after ${first.ms} ms`);
          assert.equal(first.outcome, 'EIO', `${p.name}: first read: ${first.detail}`);
          assert.ok(first.ms <= FIRST_EIO_MS, `${p.name}: the first read took ${first.ms} ms (bound ${FIRST_EIO_MS} ms)`);
          for (const path of [f.first, ...f.later]) {
            const later = await p.read(path, 0, 64 * 1024);
            measured.push(`${what}, ${p.name}: later read of uncached data ${later.outcome} after ${later.ms} ms`);
            assert.equal(later.outcome, 'EIO', `${p.name}: ${path} while the registry is down: ${later.detail}`);
            assert.ok(later.ms <= LATER_EIO_MS, `${p.name}: a later read took ${later.ms} ms (bound ${LATER_EIO_MS} ms)`);
          }
          const cached = await p.read(f.cached, 1000, FILE_SIZE - 2000);
          measured.push(`${what}, ${p.name}: cached file ${cached.outcome} in ${cached.ms} ms`);
          assert.equal(cached.outcome, 'ok', `${p.name}: the cached file while the registry is down: ${cached.detail}`);
        }),
      );
      const status = await storeStatus(reg.host, 'down');
      assert.ok(status.failedFast >= 2, `requests failed at once: ${status.failedFast}`);
      assert.match(status.text, new RegExp(`registry ${reg.host}: DOWN since \\S+ \\(\\d+ s, \\d+ requests failed at once\\): `));
      // A fresh container on the store: uncached data is EIO, promptly.
      const started = Date.now();
      const run = await podman.run(['run', '--rm', '--net=none', ...RUN_LIMITS, '-v', '/:/host:ro', `${reg.host}/${REPO}:latest`, `/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, '/host/usr/bin/cat', `/${fresh()}`]);
      measured.push(`${what}, store: a fresh podman run of cat on uncached data exited ${run.code} after ${Date.now() - started} ms`);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /Input\/output error/);
    } finally {
      await resume();
      resumedAt = Date.now();
    }
    await Promise.all(
      paths.map(async (p) => {
        const f = files.get(p.name)!;
        for (;;) {
          const r = await p.read(f.first, 0, FILE_SIZE);
          if (r.outcome === 'ok') break;
          assert.notEqual(r.outcome, 'other', r.detail);
          assert.ok(Date.now() - resumedAt <= RECOVERY_MS, `${p.name}: reads still fail ${Date.now() - resumedAt} ms after the registry answers again: ${r.detail}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        measured.push(`${what}, ${p.name}: reads right again ${Date.now() - resumedAt} ms after the registry answers`);
        for (const path of f.later) assert.equal((await p.read(path, 0, FILE_SIZE)).outcome, 'ok', `${p.name}: ${path} after the registry is back`);
        await p.alive();
        const now = await stateChanges(p, reg.host);
        const was = before.get(p.name)!;
        assert.deepEqual({ down: now.down - was.down, up: now.up - was.up }, { down: 1, up: 1 }, `${p.name}: one log line when the registry went down, one when it came back`);
        assert.equal(now.readErrors, was.readErrors, `${p.name}: no error line per failed read`);
      }),
    );
    const status = await storeStatus(reg.host, 'healthy');
    assert.match(status.text, new RegExp(`registry ${reg.host}: answering \\(down \\d+ times?; last down at `));
    tc.diagnostic(measured.filter((m) => m.startsWith(what)).join('; '));
  }

  it('the registry frozen (SIGSTOP): EIO within 30 s, then within 1 s; cached files served; reads right within 5 s of SIGCONT', async (tc) => {
    await outage(
      'frozen',
      async () => reg.signal('SIGSTOP'),
      async () => reg.signal('SIGCONT'),
      tc,
    );
  });

  it('the registry killed (connection refused): the same bounds; reads right within 5 s of its restart', async (tc) => {
    await outage(
      'killed',
      () => reg.stop('SIGKILL'),
      async () => {
        reg = await startRegistry({ root: regRoot, port: regPort });
      },
      tc,
    );
  });

  it('a transfer trickling at 20 KB/s, longer than the stall timeout, completes in one request per range', async (tc) => {
    const proxy = await startFaultProxy(reg.host);
    const slow = new Mounts(tmp, env);
    try {
      const m = await slow.mount(`docker://${proxy.host}/${REPO}:latest`, ['--tls-verify=false']);
      proxy.inject({ kind: 'trickle', bytesPerSecond: 20_000 }, { times: Infinity });
      const path = fresh();
      const r = await preadChecked(join(m, path), 0, FILE_SIZE, want(path));
      measured.push(`trickle of 20 KB/s: a ${FILE_SIZE / 1024} KiB read ${r.outcome} in ${r.ms} ms`);
      assert.equal(r.outcome, 'ok', r.detail);
      assert.ok(r.ms > 10_000, `the read took ${r.ms} ms: longer than registry.stall_timeout (10s), so the stall timeout was put to the test`);
      const ranges = proxy.requests.filter((x) => x.fault === 'trickle').map((x) => x.headers.range);
      assert.deepEqual(ranges, [...new Set(ranges)], 'no range was asked for twice: nothing was cut and retried');
      tc.diagnostic(measured.at(-1)!);
    } finally {
      await slow.cleanup();
      await proxy.close();
    }
  });

  it('a mirror in registries.conf serves the reads while the registry is frozen or killed: no error at all', async (tc) => {
    const mirrorPort = await freePort();
    const mirrorRoot = await mkdtemp(join(tmp, 'mirror-'));
    await writeFile(join(tmp, 'mirror-registries.conf'), `[[registry]]\nlocation = "${reg.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "127.0.0.1:${mirrorPort}"\ninsecure = true\n`);
    const mirrorEnv = { ...env, CONTAINERS_REGISTRIES_CONF: join(tmp, 'mirror-registries.conf') };
    const withMirror = new Mounts(tmp, mirrorEnv);
    let mirror: TestRegistry | undefined;
    try {
      for (const fault of ['frozen', 'killed'] as const) {
        // The mirror is down when the image is mounted, so the registry itself serves it and is
        // read from first; then the mirror comes up, and the mount's background check sees it.
        await mirror?.stop('SIGKILL');
        const m = await withMirror.mount(`docker://${reg.host}/${REPO}:latest`, ['--tls-verify=false']);
        mirror = await startRegistry({ root: mirrorRoot, port: mirrorPort });
        await mirror.load(img.dir, REPO);
        const upAt = Date.now();
        const logged = async (): Promise<boolean> => jsonLines((await readFile(mountFiles(m).log, 'utf8')).split('\n')).some((l) => l.registry === mirror!.host && String(l.msg).startsWith('registry answers again'));
        while (!(await logged())) {
          assert.ok(Date.now() - upAt < RECOVERY_MS, 'the mount noticed the mirror is up');
          await new Promise((r) => setTimeout(r, 100));
        }
        if (fault === 'frozen') reg.signal('SIGSTOP');
        else await reg.stop('SIGKILL');
        try {
          for (const [i, path] of [fresh(), fresh(), fresh()].entries()) {
            const r = await preadChecked(join(m, path), 0, FILE_SIZE, want(path));
            measured.push(`mirror, registry ${fault}: read ${i + 1} ${r.outcome} in ${r.ms} ms`);
            assert.equal(r.outcome, 'ok', `${path} from the mirror: ${r.detail}`);
            assert.ok(r.ms <= (i === 0 ? FIRST_EIO_MS : LATER_EIO_MS), `${path}: ${r.ms} ms`);
          }
        } finally {
          if (fault === 'frozen') reg.signal('SIGCONT');
          else reg = await startRegistry({ root: regRoot, port: regPort });
        }
        await registryLogSettled(mirror);
        assert.ok(mirror.log.some((l) => l.includes(`"GET /v2/${REPO}/blobs/${img.layers[0]!.digest} `)), 'the mirror served the layer');
        const log = jsonLines((await readFile(mountFiles(m).log, 'utf8')).split('\n'));
        assert.deepEqual(log.filter((l) => l.msg === 'read failed: answering EIO'), [], 'no read failed');
        assert.equal((await withMirror.unmount(m)).code, 0);
      }
      tc.diagnostic(measured.filter((x) => x.startsWith('mirror')).join('; '));
    } finally {
      await withMirror.cleanup();
      await mirror?.stop();
    }
  });
});

function jsonLines(lines: string[]): Array<Record<string, unknown>> {
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** One pread through a mount, timed: right bytes, EIO (a short read is a failed read of the rest), or anything else. */
async function preadChecked(file: string, offset: number, length: number, whole: Buffer): Promise<{ outcome: 'ok' | 'EIO' | 'other'; ms: number; detail: string }> {
  const started = Date.now();
  const fh = await open(file);
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    const ms = Date.now() - started;
    if (!buf.subarray(0, bytesRead).equals(whole.subarray(offset, offset + bytesRead))) return { outcome: 'other', ms, detail: `wrong bytes in [${offset}, +${bytesRead})` };
    return bytesRead === Math.min(length, whole.length - offset) ? { outcome: 'ok', ms, detail: 'right bytes' } : { outcome: 'EIO', ms, detail: `short read: ${bytesRead} of ${length}` };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { outcome: code === 'EIO' ? 'EIO' : 'other', ms: Date.now() - started, detail: code ?? (e as Error).message };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * A container on the store that reads files on request: `podman run -i` of the host's Python
 * (through the host's loader, from a read-only bind mount of /), which preads a range per line
 * of stdin and answers with its sha256 or errno and how long it took — the same overlayfs and
 * FUSE path as any program in the container.
 */
class ContainerReader {
  private buffered = '';
  private waiting: Array<(line: string) => void> = [];

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.on('data', (d: Buffer) => {
      this.buffered += d.toString();
      let i: number;
      while ((i = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, i);
        this.buffered = this.buffered.slice(i + 1);
        this.waiting.shift()?.(line);
      }
    });
  }

  static async start(podman: Podman, image: string): Promise<ContainerReader> {
    const script = [
      'import os, sys, time, hashlib, json',
      'print("ready", flush=True)',
      'for line in sys.stdin:',
      '    path, off, n = line.split()',
      '    t = time.monotonic()',
      '    try:',
      '        fd = os.open(path, os.O_RDONLY)',
      '        try:',
      '            data = os.pread(fd, int(n), int(off))',
      '        finally:',
      '            os.close(fd)',
      '        r = {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}',
      '    except OSError as e:',
      '        r = {"errno": e.errno, "error": os.strerror(e.errno)}',
      '    r["ms"] = (time.monotonic() - t) * 1000',
      '    print(json.dumps(r), flush=True)',
    ].join('\n');
    const libs = `/host${dirname(LOADER!)}`;
    const child = podman.spawn(['run', '-i', '--rm', '--net=none', ...RUN_LIMITS, '-v', '/:/host:ro', '-e', 'PYTHONHOME=/host/usr', image, `/host${LOADER}`, '--library-path', libs, '/host/usr/bin/python3', '-S', '-u', '-c', script]);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const r = new ContainerReader(child);
    const ready = await Promise.race([r.nextLine(), new Promise<string>((resolve) => child.once('exit', () => resolve(`exited: ${stderr}`))), new Promise<string>((resolve) => setTimeout(() => resolve(`no answer: ${stderr}`), 60_000))]);
    assert.equal(ready, 'ready', `the reader container started: ${ready}`);
    return r;
  }

  private nextLine(): Promise<string> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Reads [offset, +length) of `path` in the container, checked against `whole` (the file's content). */
  async read(path: string, offset: number, length: number, whole: Buffer): Promise<{ outcome: 'ok' | 'EIO' | 'other'; ms: number; detail: string }> {
    const answer = this.nextLine();
    this.child.stdin.write(`${path} ${offset} ${length}\n`);
    const r = JSON.parse(await answer) as { len?: number; sha256?: string; errno?: number; error?: string; ms: number };
    const ms = Math.round(r.ms);
    if (r.errno !== undefined) return { outcome: r.errno === 5 ? 'EIO' : 'other', ms, detail: `${r.error} (errno ${r.errno})` };
    const expected = whole.subarray(offset, offset + length);
    const prefix = whole.subarray(offset, offset + r.len!);
    if (createHash('sha256').update(prefix).digest('hex') !== r.sha256) return { outcome: 'other', ms, detail: `wrong bytes in [${offset}, +${r.len})` };
    return r.len === expected.length ? { outcome: 'ok', ms, detail: 'right bytes' } : { outcome: 'EIO', ms, detail: `short read: ${r.len} of ${length}` };
  }

  async stop(): Promise<void> {
    this.child.stdin.end();
    await new Promise((resolve) => {
      if (this.child.exitCode !== null) return resolve(undefined);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
  }
}
