/**
 * (5) Reading through the mount: cold sequential over the link, warm (daemon cache, kernel
 * page cache dropped), kernel-cached re-read; beside them the same file from local disk and
 * from the bare in-memory FUSE filesystem (scripts/bench/memfs.ts), `curl | zstd -d` of the
 * layer over the same link, random 4 KiB reads, and `find` + stat of the tree vs a local copy.
 */
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import type { LinkProfile } from './link.js';
import { failed, refOf, repoOf, unavailable, measured, type Ctx, type Outcome } from './context.js';
import { dropCaches, run, startService, waitFor } from './proc.js';
import { repeat } from './stats.js';

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

/** Warm, kernel-cached, random and stat figures (over loopback), with their local and memfs baselines. */
export async function localReads(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const why = ctx.tocfs.missing('mount') ?? (ctx.images.runtime.layouts['zstd:chunked'] ? undefined : 'no zstd:chunked image');
  if (why) return unavailable(why);
  const side = await ctx.link.use(profile);
  const stage = ctx.images.runtimeStage;
  const local = join(stage, ctx.images.bigFile);
  const size = (await stat(local)).size;
  const randCount = ctx.opts.quick ? 1000 : 5000;
  ctx.log('warm / kernel-cached / random / stat reads');
  try {
    return measured(await repeat(ctx.opts.reps, async () => {
        const dir = await ctx.scratch('warm');
        const mp = join(dir, 'mnt');
        const memMp = join(dir, 'memfs');
        await run(['mkdir', '-p', memMp]);
        await ctx.tocfs.mount(`docker://${refOf(side.host, ctx.images.runtime, 'zstd:chunked')}`, mp, join(dir, 'cache'), { ns: side.ns, prefetch: 'none' });
        const memfs = startService(['node', '--import', 'tsx', join(HERE, 'memfs.ts'), local, memMp]);
        try {
          const file = join(mp, ctx.images.bigFile);
          await run(['sh', '-c', 'cat "$0" > /dev/null', file]); // fill the daemon cache
          await dropCaches();
          const warm = await ddMBps(file, size);
          const kernel = await ddMBps(file, size);
          await dropCaches();
          const rand = await randomReads(file, randCount);
          await dropCaches();
          const statMount = await statTree(mp);

          await dropCaches();
          const disk = await ddMBps(local, size);
          const pageCache = await ddMBps(local, size);
          const randLocal = await randomReads(local, randCount);
          const statLocal = await statTree(stage);

          await waitFor('memfs', async () => memfs.output.includes('ready'));
          const memFile = join(memMp, ctx.images.bigFile.split('/').pop()!);
          await dropCaches();
          const mem = await ddMBps(memFile, size);
          await dropCaches();
          const randMem = await randomReads(memFile, randCount);
          return {
            warm_MBps: warm,
            kernel_cached_MBps: kernel,
            random_4k_reads_per_s: rand,
            walk_tree_ms: statMount.walk,
            stat_tree_ms: statMount.stat,
            local_disk_MBps: disk,
            page_cache_MBps: pageCache,
            local_random_4k_reads_per_s: randLocal,
            local_walk_tree_ms: statLocal.walk,
            local_stat_tree_ms: statLocal.stat,
            memfs_MBps: mem,
            memfs_random_4k_reads_per_s: randMem,
            warm_vs_memfs: warm / mem,
            kernel_cached_vs_page_cache: kernel / pageCache,
            stat_vs_local: statLocal.stat / statMount.stat,
            walk_vs_local: statLocal.walk / statMount.walk,
          };
        } finally {
          await memfs.stop();
          await run(['umount', '-l', memMp], { check: false });
          await ctx.tocfs.unmount(mp);
        }
      }));
  } catch (e) {
    return failed(e);
  }
}
