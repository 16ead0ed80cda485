/** (6) Mount time and daemon RSS against TOC size, and with many images mounted at once. */
import { join } from 'node:path';
import type { LinkProfile } from './link.js';
import { failed, refOf, unavailable, measured, type Ctx, type NotMeasured, type Outcome } from './context.js';
import { run, sleep } from './proc.js';
import { repeat, summarize, type Summary } from './stats.js';
import { pidsMentioning, rssBytes } from './tocfs.js';
import { startStore } from './measure-ready.js';
import { Podman } from './podman.js';
import { mkdir } from 'node:fs/promises';


async function daemonRss(mountpoint: string): Promise<number> {
  let total = 0;
  for (const pid of await pidsMentioning(mountpoint)) total += await rssBytes(pid);
  return total;
}

export async function tocScaling(ctx: Ctx, profile: LinkProfile): Promise<Record<string, Outcome>> {
  const out: Record<string, Outcome> = {};
  const why = ctx.tocfs.missing('mount');
  const side = await ctx.link.use(profile);
  for (const [entries, img] of Object.entries(ctx.images.toc)) {
    if (why) {
      out[entries] = unavailable(why);
      continue;
    }
    ctx.log(`toc scaling: ${entries} entries`);
    try {
      out[entries] = measured(await repeat(ctx.opts.reps, async () => {
          const dir = await ctx.scratch(`toc-${entries}`);
          const mp = join(dir, 'mnt');
          const cache = join(dir, 'cache');
          const ref = `docker://${refOf(side.host, img, 'zstd:chunked')}`;
          const cold = await ctx.tocfs.mount(ref, mp, cache, { ns: side.ns, prefetch: 'none' });
          const rssMounted = await daemonRss(mp);
          const walk = await run(['find', mp, '-printf', '%s\n']);
          const rssWalked = await daemonRss(mp);
          await ctx.tocfs.unmount(mp);
          // Again with the TOC already in tocfs's cache: the mount itself, without the fetch.
          const warm = await ctx.tocfs.mount(ref, mp, cache, { ns: side.ns, prefetch: 'none' });
          await ctx.tocfs.unmount(mp);
          return { mount_ms: cold.ms, mount_cached_toc_ms: warm.ms, walk_ms: walk.ms, rss_mounted_MB: rssMounted / 1e6, rss_after_walk_MB: rssWalked / 1e6 };
        }));
    } catch (e) {
      out[entries] = failed(e);
      ctx.log(`  failed: ${(out[entries] as NotMeasured).reason}`);
    }
  }
  return out;
}

/** Every image of `ctx.images.many` mounted at once (one daemon each), each tree walked. */
export async function manyMounted(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const why = ctx.tocfs.missing('mount');
  if (why) return unavailable(why);
  const side = await ctx.link.use(profile);
  ctx.log(`${ctx.images.many.length} images mounted`);
  const dir = await ctx.scratch('many');
  const mps: string[] = [];
  try {
    const t0 = performance.now();
    for (const [i, img] of ctx.images.many.entries()) {
      const mp = join(dir, `m${i}`);
      await ctx.tocfs.mount(`docker://${refOf(side.host, img, 'zstd:chunked')}`, mp, join(dir, 'cache'), { ns: side.ns, prefetch: 'none' });
      mps.push(mp);
    }
    const mountAll = performance.now() - t0;
    for (const mp of mps) await run(['find', mp, '-printf', '%s\n']);
    await sleep(500);
    const rss = await Promise.all(mps.map(daemonRss));
    const pids = new Set((await Promise.all(mps.map(pidsMentioning))).flat());
    const total = pids.size === 1 ? rss[0]! : rss.reduce((a, b) => a + b, 0);
    const one = (v: number): Summary => summarize([v]);
    return measured({
      images: one(mps.length),
      daemons: one(pids.size),
      mount_all_ms: one(mountAll),
      rss_total_MB: one(total / 1e6),
      rss_max_per_daemon_MB: one(Math.max(...rss) / 1e6),
    });
  } catch (e) {
    return failed(e);
  } finally {
    for (const mp of mps) await ctx.tocfs.unmount(mp);
  }
}

/** One `tocfs store` serving every image of `ctx.images.many`, pulled lazily by Podman, each tree walked. */
export async function manyInStore(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const why = ctx.tocfs.missing('store');
  if (why) return unavailable(why);
  const side = await ctx.link.use(profile);
  ctx.log(`${ctx.images.many.length} images in one tocfs store`);
  const dir = await ctx.scratch('many-store');
  const storeDir = join(dir, 'store');
  await mkdir(storeDir, { recursive: true });
  const store = await startStore(ctx, side, storeDir, join(dir, 'cache'));
  const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { additionalLayerStore: `${storeDir}:ref` });
  try {
    const t0 = performance.now();
    for (const img of ctx.images.many) await podman.pull(refOf(side.host, img, 'zstd:chunked'));
    const pullAll = performance.now() - t0;
    await run(['find', storeDir, '-printf', '%s\n']);
    const rss = await rssBytes(store.pid);
    const one = (v: number): Summary => summarize([v]);
    return measured({ images: one(ctx.images.many.length), pull_all_ms: one(pullAll), rss_MB: one(rss / 1e6) });
  } catch (e) {
    return failed(e);
  } finally {
    await podman.destroy();
    await store.stop();
  }
}
