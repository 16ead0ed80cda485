/**
 * (5) Reading through the mount: cold sequential over the link, warm (daemon cache, kernel
 * page cache dropped), kernel-cached re-read; beside them the same file from local disk and
 * from the bare in-memory FUSE filesystem (scripts/bench/memfs.ts), `curl | zstd -d` of the
 * layer over the same link, random 4 KiB reads, and `find` + stat of the tree vs a local copy.
 * The loopback figures (localReads) are measured through both FUSE sessions: fuse-native and
 * tocfs's own (TOCFS_DAEMON_FUSE_SESSION=tocfs; figures suffixed `_session`).
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { readFile, stat } from 'node:fs/promises';
import type { LinkProfile } from './link.js';
import { failed, refOf, repoOf, unavailable, measured, type Ctx, type Outcome } from './context.js';
import { dropCaches, run, sleep, startService, waitFor } from './proc.js';
import { repeat } from './stats.js';
import { sessionMissing } from './measure-pss.js';

const HERE = new URL('..', import.meta.url).pathname;
const MB = 1e6;

/** Sequential read rate by dd's own clock (process start-up would dominate at GB/s). */
async function ddMBps(file: string, size: number): Promise<number> {
  const r = await run(['dd', `if=${file}`, 'of=/dev/null', 'bs=1M']);
  const m = /copied, ([\d.e+-]+) s/.exec(r.stderr);
  return size / MB / (m ? Number(m[1]) : r.ms / 1000);
}

async function randomReads(file: string, count: number): Promise<number> {
  const r = await run(['node', '--import', 'tsx', join(HERE, 'randread.ts'), file, String(count)]);
  return JSON.parse(r.stdout.trim()).reads_per_s;
}

/** Milliseconds of a repeated walk (readdir + lstat of every entry) of `dir` and of lstat alone, the first walk untimed. */
async function statTree(dir: string): Promise<{ walk: number; stat: number }> {
  const r = await run(['node', '--import', 'tsx', join(HERE, 'stat-tree.ts'), dir, '2']);
  const o = JSON.parse(r.stdout.trim());
  return { walk: o.ms[1], stat: o.stat_only_ms };
}


/** Cold sequential read of the big file through a fresh mount over `profile`. */
export async function coldRead(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const why = ctx.tocfs.missing('mount') ?? (ctx.images.runtime.layouts['zstd:chunked'] ? undefined : 'no zstd:chunked image');
  if (why) return unavailable(why);
  const side = await ctx.link.use(profile);
  const stage = ctx.images.runtimeStage;
  const size = (await stat(join(stage, ctx.images.bigFile))).size;
  ctx.log(`cold read: ${profile.name} (${(size / MB).toFixed(0)} MB file)`);
  try {
    // The link's own ceiling in uncompressed bytes: the zstd layer streamed and decompressed (once).
    const blob = JSON.parse((await run(['skopeo', 'inspect', '--raw', `oci:${ctx.images.runtime.layouts.zstd}:latest`])).stdout).layers[0].digest;
    const curl = await run(['sh', '-c', `curl -sf http://${side.host}/v2/${repoOf(ctx.images.runtime, 'zstd')}/blobs/${blob} | zstd -dc | wc -c`], { ns: side.ns });
    const curlMBps = Number(curl.stdout.trim()) / MB / (curl.ms / 1000);
    return measured(await repeat(ctx.opts.reps, async () => {
        const dir = await ctx.scratch('cold');
        const mp = join(dir, 'mnt');
        await ctx.tocfs.mount(`docker://${refOf(side.host, ctx.images.runtime, 'zstd:chunked')}`, mp, join(dir, 'cache'), { ns: side.ns, prefetch: 'none' });
        try {
          await dropCaches();
          const mark = ctx.link.mark();
          const mbps = await ddMBps(join(mp, ctx.images.bigFile), size);
          const served = ctx.link.served(mark);
          return { cold_MBps: mbps, cold_registry_bytes: served.bytes, cold_blob_requests: served.blobRequests, curl_zstd_MBps: curlMBps, cold_vs_curl_zstd: mbps / curlMBps };
        } finally {
          await ctx.tocfs.unmount(mp);
        }
      }));
  } catch (e) {
    return failed(e);
  }
}

/** A FUSE session the local group measures: fuse-native and tocfs's own (daemon.fuse_session = tocfs, issue 18; the default since). Each names its session: an older tocfs measured with TOCFS_BENCH_REV has the other default. */
export interface LocalSession {
  id: 'fuse-native' | 'tocfs';
  /** Suffix of this session's figures ('' for fuse-native, whose figures keep their old names). */
  suffix: string;
  env: Record<string, string>;
  /** The mount daemon's metrics port (inside the client namespace): FUSE operation counts, passthrough opens. */
  metricsPort: number;
}

export const LOCAL_SESSIONS: LocalSession[] = [
  { id: 'fuse-native', suffix: '', env: { TOCFS_DAEMON_FUSE_SESSION: 'fuse-native' }, metricsPort: 19471 },
  { id: 'tocfs', suffix: '_session', env: { TOCFS_DAEMON_FUSE_SESSION: 'tocfs' }, metricsPort: 19472 },
];

/** Figures measured through each session; all higher-is-better but the `_ms` ones. */
export const SESSION_FIGURES = [
  'cold_loopback_MBps', 'warm_MBps', 'warm_file_MBps', 'kernel_cached_MBps', 'random_4k_reads_per_s', 'walk_tree_ms', 'stat_tree_ms',
];

/** What the daemon's /metrics says about FUSE: operations by op ("op:read", …) and passthrough opens ("passthrough"). */
async function fuseCounters(ns: string, port: number): Promise<Map<string, number>> {
  const r = await run(['curl', '-sf', '--max-time', '10', `http://127.0.0.1:${port}/metrics`], { ns, label: 'curl /metrics of the mount daemon' });
  const out = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const op = /^tocfs_fuse_operation_duration_seconds_count\{op="(\w+)"\} (\S+)$/.exec(line);
    if (op) out.set(`op:${op[1]}`, Number(op[2]));
    const pt = /^tocfs_fuse_passthrough_opens_total (\S+)$/.exec(line);
    if (pt) out.set('passthrough', Number(pt[1]));
  }
  return out;
}

const delta = (after: Map<string, number>, before: Map<string, number>, key: string): number => (after.get(key) ?? 0) - (before.get(key) ?? 0);

/** The log file of the daemon serving `mountpoint` (src/daemon/state.ts: /run/tocfs/mounts/<sha256(mountpoint)[:16]>.log as root). */
function daemonLog(mountpoint: string): string {
  return join('/run/tocfs/mounts', `${createHash('sha256').update(mountpoint).digest('hex').slice(0, 16)}.log`);
}

/** The super options of the mount at `mountpoint` (/proc/self/mountinfo), '' when not mounted. */
async function superOptions(mountpoint: string): Promise<string> {
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ');
    if (f[4] !== mountpoint) continue;
    const sep = f.indexOf('-');
    return f[sep + 3] ?? '';
  }
  return '';
}

/**
 * Fails loudly when a mount asked for tocfs's own session is served by fuse-native: the daemon
 * then logs "own FUSE session is unavailable" (src/fs/mount.ts) and mounts through fusermount,
 * whose super options carry max_read (the own session's mount(2) passes none).
 */
async function checkSession(session: LocalSession, mountpoint: string): Promise<void> {
  const log = daemonLog(mountpoint);
  let fallback: string | undefined;
  for (let i = 0; i < 10 && !fallback; i++) {
    fallback = (await readFile(log, 'utf8').catch(() => '')).split('\n').find((l) => /own FUSE session is unavailable/.test(l));
    if (i === 0 && session.id !== 'tocfs') break;
    if (!fallback) await sleep(20);
  }
  const opts = await superOptions(mountpoint);
  if (session.id === 'tocfs') {
    if (fallback) throw new Error(`TOCFS_DAEMON_FUSE_SESSION=tocfs did not give tocfs's own FUSE session; the daemon logged (${log}): ${fallback.slice(0, 400)}`);
    if (/(^|,)max_read=/.test(opts)) throw new Error(`TOCFS_DAEMON_FUSE_SESSION=tocfs, but ${mountpoint} was mounted by fusermount (super options ${opts}): fuse-native serves it`);
  } else if (!/(^|,)max_read=/.test(opts)) {
    throw new Error(`${mountpoint} should be a fuse-native mount (max_read in its super options), but its super options are "${opts}"`);
  }
}

/** Evicts the page cache of `file` alone (posix_fadvise DONTNEED through dd): for a mount, the kernel's copy of that one file. */
async function evictFile(file: string): Promise<void> {
  await run(['dd', `if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Bytes of `file` in the page cache (fincore), or -1 when fincore cannot tell. */
async function cachedPages(file: string): Promise<number> {
  const r = await run(['fincore', '--bytes', '--noheadings', '--output', 'RES', file], { check: false });
  return r.code === 0 && r.stdout.trim() !== '' ? Number(r.stdout.trim()) : -1;
}

/**
 * One session's figures from a fresh mount with an empty cache (prefetch none): the cold read
 * that fills the cache; then, for the warm figures, a fresh open of the file once it was read
 * completely (the own session passes such a file through onto its one cache file, which the
 * open after the complete read creates: the opens are repeated until one is passed through).
 *   warm: whole page cache dropped, then a fresh open (the daemon's cache warm, the kernel's not);
 *   kernel_cached: a fresh open right after, the file in the kernel's cache;
 *   warm_file: a fresh open with only the mount's own copy of the file evicted (the cached
 *     file as a container re-opening it meets it: with passthrough, the cache file's pages);
 *   random 4 KiB reads (page cache dropped), and the walk of the tree (page cache dropped,
 *   first pass untimed), with the FUSE operations each made (daemon /metrics).
 */
async function sessionReads(ctx: Ctx, side: { ns: string; host: string }, session: LocalSession, size: number, randCount: number): Promise<Record<string, number>> {
  const dir = await ctx.scratch(`warm-${session.id}`);
  const mp = join(dir, 'mnt');
  const env = { ...process.env, ...session.env };
  await ctx.tocfs.mount(`docker://${refOf(side.host, ctx.images.runtime, 'zstd:chunked')}`, mp, join(dir, 'cache'), {
    ns: side.ns, prefetch: 'none', env, extraArgs: ['--metrics-address', `127.0.0.1:${session.metricsPort}`],
  });
  try {
    await checkSession(session, mp);
    const counters = () => fuseCounters(side.ns, session.metricsPort);
    const file = join(mp, ctx.images.bigFile);
    const mark = ctx.link.mark();
    const cold = await ddMBps(file, size); // the one complete read, which fills the cache
    const coldBytes = ctx.link.served(mark).bytes;
    await run(['sync']);
    // The first open after the complete read joins the cached chunks into one file named by the
    // file's digest; the kernel refuses passthrough while an earlier open of the inode lingers.
    let ready = 0;
    for (let i = 0; i < 20; i++) {
      const b = await counters();
      await run(['dd', `if=${file}`, 'of=/dev/null', 'bs=4k', 'count=1', 'status=none']);
      if (delta(await counters(), b, 'passthrough') > 0) {
        ready = i + 1;
        break;
      }
      if (session.id !== 'tocfs') break;
      await sleep(200);
    }
    if (session.id === 'tocfs' && !ready) ctx.log(`  ${session.id}: no open of ${ctx.images.bigFile} was passed through (daemon log ${daemonLog(mp)}); warm figures are plain FUSE reads`);

    await dropCaches();
    let b = await counters();
    const warm = await ddMBps(file, size);
    let a = await counters();
    const warmReads = delta(a, b, 'op:read');
    const warmPassthrough = delta(a, b, 'passthrough');
    b = a;
    const kernel = await ddMBps(file, size);
    a = await counters();
    const kernelReads = delta(a, b, 'op:read');

    await evictFile(file);
    const leftAfterEvict = await cachedPages(file);
    b = await counters();
    const warmFile = await ddMBps(file, size);
    a = await counters();
    const warmFileReads = delta(a, b, 'op:read');
    const warmFilePassthrough = delta(a, b, 'passthrough');

    await dropCaches();
    const rand = await randomReads(file, randCount);
    await dropCaches();
    b = await counters();
    const st = await statTree(mp);
    a = await counters();
    const ops = (op: string): number => delta(a, b, `op:${op}`);
    const s = session.suffix;
    return {
      [`cold_loopback_MBps${s}`]: cold,
      [`cold_loopback_registry_bytes${s}`]: coldBytes,
      [`passthrough_after_opens${s}`]: ready,
      [`warm_MBps${s}`]: warm,
      [`warm_fuse_reads${s}`]: warmReads,
      [`warm_passthrough_opens${s}`]: warmPassthrough,
      [`kernel_cached_MBps${s}`]: kernel,
      [`kernel_cached_fuse_reads${s}`]: kernelReads,
      [`warm_file_MBps${s}`]: warmFile,
      [`warm_file_evicted_left_bytes${s}`]: leftAfterEvict,
      [`warm_file_fuse_reads${s}`]: warmFileReads,
      [`warm_file_passthrough_opens${s}`]: warmFilePassthrough,
      [`random_4k_reads_per_s${s}`]: rand,
      [`walk_tree_ms${s}`]: st.walk,
      [`stat_tree_ms${s}`]: st.stat,
      // FUSE operations tocfs answered during stat-tree.ts (two walks and one lstat pass; page cache dropped before).
      [`walk_fuse_getattr${s}`]: ops('getattr'),
      [`walk_fuse_readdir${s}`]: ops('readdir'),
      [`walk_fuse_open${s}`]: ops('open'),
    };
  } finally {
    await ctx.tocfs.unmount(mp);
  }
}

/**
 * Warm, kernel-cached, random and stat figures (over loopback) through both FUSE sessions —
 * fuse-native under the old names, tocfs's own with `_session` — with their local and memfs
 * baselines, each repetition measuring both sessions (in turns: fuse-native first in even
 * repetitions), then the baselines, on the same machine state.
 */
export async function localReads(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const why = ctx.tocfs.missing('mount') ?? (ctx.images.runtime.layouts['zstd:chunked'] ? undefined : 'no zstd:chunked image');
  if (why) return unavailable(why);
  const side = await ctx.link.use(profile);
  const stage = ctx.images.runtimeStage;
  const local = join(stage, ctx.images.bigFile);
  const size = (await stat(local)).size;
  const randCount = ctx.opts.quick ? 1000 : 5000;
  // A tocfs without its own session (an older TOCFS_BENCH_REV) is measured through fuse-native alone, and says so.
  const noSession = await sessionMissing(ctx);
  const sessions = noSession ? LOCAL_SESSIONS.filter((s) => s.id === 'fuse-native') : LOCAL_SESSIONS;
  ctx.log(`warm / kernel-cached / random / stat reads, sessions ${sessions.map((s) => s.id).join(' and ')}${noSession ? ` (own session not measured: ${noSession})` : ''}`);
  try {
    return measured(await repeat(ctx.opts.reps, async (rep) => {
        const f: Record<string, number> = {};
        // Which session goes first alternates between repetitions (what ran before weighs on a 2-core machine).
        for (const session of rep % 2 ? [...sessions].reverse() : sessions) {
          Object.assign(f, await sessionReads(ctx, side, session, size, randCount));
          ctx.log(`  ${session.id}: warm ${f[`warm_MBps${session.suffix}`]!.toFixed(0)} MB/s, warm file ${f[`warm_file_MBps${session.suffix}`]!.toFixed(0)} MB/s, kernel-cached ${f[`kernel_cached_MBps${session.suffix}`]!.toFixed(0)} MB/s, walk ${f[`walk_tree_ms${session.suffix}`]!.toFixed(0)} ms`);
        }

        await dropCaches();
        const disk = await ddMBps(local, size);
        const pageCache = await ddMBps(local, size);
        const randLocal = await randomReads(local, randCount);
        const statLocal = await statTree(stage);

        const dir = await ctx.scratch('memfs');
        const memMp = join(dir, 'memfs');
        await run(['mkdir', '-p', memMp]);
        const memfs = startService(['node', '--import', 'tsx', join(HERE, 'memfs.ts'), local, memMp]);
        let mem: number;
        let randMem: number;
        try {
          await waitFor('memfs', async () => memfs.output.includes('ready'));
          const memFile = join(memMp, ctx.images.bigFile.split('/').pop()!);
          await dropCaches();
          mem = await ddMBps(memFile, size);
          await dropCaches();
          randMem = await randomReads(memFile, randCount);
        } finally {
          await memfs.stop();
          await run(['umount', '-l', memMp], { check: false });
        }
        Object.assign(f, {
          local_disk_MBps: disk,
          page_cache_MBps: pageCache,
          local_random_4k_reads_per_s: randLocal,
          local_walk_tree_ms: statLocal.walk,
          local_stat_tree_ms: statLocal.stat,
          memfs_MBps: mem,
          memfs_random_4k_reads_per_s: randMem,
        });
        for (const { suffix: s } of sessions) {
          Object.assign(f, {
            [`warm_vs_memfs${s}`]: f[`warm_MBps${s}`]! / mem,
            [`warm_vs_local_disk${s}`]: f[`warm_MBps${s}`]! / disk,
            [`warm_vs_page_cache${s}`]: f[`warm_file_MBps${s}`]! / pageCache,
            [`kernel_cached_vs_page_cache${s}`]: f[`kernel_cached_MBps${s}`]! / pageCache,
            [`stat_vs_local${s}`]: statLocal.stat / f[`stat_tree_ms${s}`]!,
            [`walk_vs_local${s}`]: statLocal.walk / f[`walk_tree_ms${s}`]!,
          });
        }
        return f;
      }), noSession ? `tocfs's own FUSE session not measured: ${noSession}` : undefined);
  } catch (e) {
    return failed(e);
  }
}
