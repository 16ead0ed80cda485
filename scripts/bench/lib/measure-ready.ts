/**
 * (1) container ready, (2) bytes over the wire, (3) time to the first byte of one file and
 * (4) the second image of a pair after the first — for full pulls, Podman's partial pull and
 * tocfs's lazy modes.
 */
import { join } from 'node:path';
import type { ClientSide, LinkProfile } from './link.js';
import { failed, refOf, unavailable, measured, type Ctx, type Outcome } from './context.js';
import { READY_COMMAND, type BuiltImage, type LayerFormat } from './images.js';
import { Podman } from './podman.js';
import { startService, waitFor, run } from './proc.js';
import { repeat } from './stats.js';

export type ModeKind = 'podman-full' | 'podman-partial' | 'tocfs-store' | 'tocfs-rootfs';

export interface ReadyMode {
  id: string;
  label: string;
  format: LayerFormat;
  kind: ModeKind;
}

export const READY_MODES: ReadyMode[] = [
  { id: 'gzip_full', label: 'podman pull, gzip', format: 'gzip', kind: 'podman-full' },
  { id: 'zstd_full', label: 'podman pull, zstd', format: 'zstd', kind: 'podman-full' },
  { id: 'zstd_chunked_partial', label: 'podman partial pull, zstd:chunked', format: 'zstd:chunked', kind: 'podman-partial' },
  { id: 'tocfs_store_zstd_chunked', label: 'tocfs store (lazy), zstd:chunked', format: 'zstd:chunked', kind: 'tocfs-store' },
  { id: 'tocfs_store_estargz', label: 'tocfs store (lazy), eStargz', format: 'estargz', kind: 'tocfs-store' },
  { id: 'tocfs_store_estargz_opt', label: 'tocfs store (lazy), eStargz with start-up files first', format: 'estargz-opt', kind: 'tocfs-store' },
  { id: 'tocfs_mount_zstd_chunked', label: 'tocfs mount + podman --rootfs, zstd:chunked', format: 'zstd:chunked', kind: 'tocfs-rootfs' },
  { id: 'tocfs_mount_estargz', label: 'tocfs mount + podman --rootfs, eStargz', format: 'estargz', kind: 'tocfs-rootfs' },
  { id: 'tocfs_mount_estargz_opt', label: 'tocfs mount + podman --rootfs, eStargz with start-up files first (prefetched)', format: 'estargz-opt', kind: 'tocfs-rootfs' },
];


/** Traffic of one measured step: registry response bytes, bytes on the veth, blob GETs. */
async function traffic<T>(ctx: Ctx, side: ClientSide, step: () => Promise<T>): Promise<{ value: T; registry_bytes: number; wire_bytes: number; blob_requests: number }> {
  const mark = ctx.link.mark();
  const rx0 = await ctx.link.wireRx();
  const value = await step();
  const served = ctx.link.served(mark);
  const wire = side.ns === 'tocfsbench-cli' ? (await ctx.link.wireRx()) - rx0 : 0;
  return { value, registry_bytes: served.bytes, wire_bytes: wire, blob_requests: served.blobRequests };
}

function whyUnavailable(ctx: Ctx, mode: ReadyMode, img: BuiltImage): string | undefined {
  if (!img.layouts[mode.format]) return `no ${mode.format} image: ${img.unavailable[mode.format] ?? 'not built'}`;
  if (mode.kind === 'tocfs-store') return ctx.tocfs.missing('store');
  if (mode.kind === 'tocfs-rootfs') return ctx.tocfs.missing('mount');
  return undefined;
}

/** A running `tocfs store` (the Podman additional layer store). */
export async function startStore(ctx: Ctx, side: ClientSide, dir: string, cacheDir: string): Promise<{ pid: number; stop(): Promise<void> }> {
  const svc = startService(ctx.tocfs.argv(['store', '--foreground', '--tls-verify=false', '--cache-dir', cacheDir, dir]), { ns: side.ns });
  const exited = (): boolean => svc.child.exitCode !== null;
  try {
    await waitFor('tocfs store mount', async () => exited() || (await run(['mountpoint', '-q', dir], { check: false })).code === 0, 30_000);
    if (exited()) throw new Error(`tocfs store exited: ${svc.output.slice(-5).join(' | ')}`);
  } catch (e) {
    await svc.stop();
    throw e;
  }
  return {
    // nsenter execs the command in place: this is the store's own pid.
    pid: svc.child.pid!,
    async stop() {
      await svc.stop();
      await run(['umount', '-l', dir], { check: false });
    },
  };
}

function checkReady(stdout: string): void {
  if (!stdout.includes('ready')) throw new Error(`the container did not print "ready": ${stdout.slice(0, 200)}`);
}

/** One container start from nothing: a fresh podman store, a fresh tocfs cache. */
async function readyOnce(ctx: Ctx, side: ClientSide, mode: ReadyMode, img: BuiltImage, cmd: string[], check: (out: string) => void): Promise<Record<string, number>> {
  const dir = await ctx.scratch(`ready-${mode.id}`);
  const ref = refOf(side.host, img, mode.format);
  if (mode.kind === 'podman-full' || mode.kind === 'podman-partial') {
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { partial: mode.kind === 'podman-partial' });
    try {
      return await pullAndRun(ctx, side, podman, ref, cmd, check);
    } finally {
      await podman.destroy();
    }
  }
  if (mode.kind === 'tocfs-rootfs') {
    const mp = join(dir, 'mnt');
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, {});
    try {
      const mount = await traffic(ctx, side, () => ctx.tocfs.mount(`docker://${ref}`, mp, join(dir, 'cache'), { ns: side.ns }));
      const r = await traffic(ctx, side, () => podman.exec(['run', '--rm', '--network', 'none', ...Podman.ULIMITS, '--rootfs', `${mp}:O`, ...cmd]));
      check(r.value.stdout);
      return sum(mount.value.ms, r.value.ms, mount, r);
    } finally {
      await podman.destroy();
      await ctx.tocfs.unmount(mp);
    }
  }
  // tocfs-store
  const storeDir = join(dir, 'store');
  await run(['mkdir', '-p', storeDir]);
  const store = await startStore(ctx, side, storeDir, join(dir, 'cache'));
  const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { additionalLayerStore: `${storeDir}:ref` });
  try {
    return await pullAndRun(ctx, side, podman, ref, cmd, check);
  } finally {
    await podman.destroy();
    await store.stop();
  }
}

async function pullAndRun(ctx: Ctx, side: ClientSide, podman: Podman, ref: string, cmd: string[], check: (out: string) => void): Promise<Record<string, number>> {
  const pull = await traffic(ctx, side, () => podman.pull(ref));
  const r = await traffic(ctx, side, () => podman.runRm(ref, cmd));
  check(r.value.stdout);
  return sum(pull.value.ms, r.value.ms, pull, r);
}

type Traffic = { registry_bytes: number; wire_bytes: number; blob_requests: number };
function sum(fetchMs: number, runMs: number, a: Traffic, b: Traffic): Record<string, number> {
  return {
    ready_ms: fetchMs + runMs,
    pull_or_mount_ms: fetchMs,
    run_ms: runMs,
    registry_bytes: a.registry_bytes + b.registry_bytes,
    wire_bytes: a.wire_bytes + b.wire_bytes,
    blob_requests: a.blob_requests + b.blob_requests,
  };
}

/**
 * Measures each mode `reps` times with `once`, or records why it cannot be measured
 * (`why`) or why it failed — one failing mode never stops the others.
 */
async function eachMode<M extends { id: string }>(
  ctx: Ctx,
  title: string,
  modes: M[],
  why: (m: M) => string | undefined,
  reps: number,
  once: (m: M) => Promise<Record<string, number>>,
): Promise<Record<string, Outcome>> {
  const out: Record<string, Outcome> = {};
  for (const m of modes) {
    const reason = why(m);
    if (reason) {
      out[m.id] = unavailable(reason);
      continue;
    }
    ctx.log(`${title} ${m.id}`);
    try {
      out[m.id] = measured(await repeat(reps, () => once(m)));
    } catch (e) {
      const f = failed(e);
      out[m.id] = f;
      ctx.log(`  failed: ${f.reason}`);
    }
  }
  return out;
}

export async function containerReady(ctx: Ctx, profile: LinkProfile): Promise<Record<string, Outcome>> {
  const side = await ctx.link.use(profile);
  const img = ctx.images.runtime;
  const modes = READY_MODES.filter((m) => !ctx.opts.modes || ctx.opts.modes.has(m.id));
  return eachMode(ctx, `container ready: ${profile.name}`, modes, (m) => whyUnavailable(ctx, m, img), ctx.opts.reps, (m) =>
    readyOnce(ctx, side, m, img, READY_COMMAND, checkReady),
  );
}

/** A mode of the first-byte and dedupe measurements. */
interface FetchMode {
  id: string;
  format: LayerFormat;
  kind: 'tocfs-mount' | 'podman-full' | 'podman-partial';
}

function whyNot(ctx: Ctx, m: FetchMode, images: BuiltImage[]): string | undefined {
  const missing = images.find((i) => !i.layouts[m.format]);
  if (missing) return `no ${m.format} image ${missing.name}: ${missing.unavailable[m.format] ?? 'not built'}`;
  return m.kind === 'tocfs-mount' ? ctx.tocfs.missing('mount') : undefined;
}

/** (3) One small file: `tocfs mount` + `cat` against `podman pull` + `podman run cat`. */
export async function firstByte(ctx: Ctx, profile: LinkProfile): Promise<Record<string, Outcome>> {
  const side = await ctx.link.use(profile);
  const img = ctx.images.runtime;
  const file = ctx.images.smallFile;
  const modes: FetchMode[] = [
    { id: 'podman_pull_gzip', format: 'gzip', kind: 'podman-full' },
    { id: 'podman_partial_zstd_chunked', format: 'zstd:chunked', kind: 'podman-partial' },
    { id: 'tocfs_mount_zstd_chunked', format: 'zstd:chunked', kind: 'tocfs-mount' },
    { id: 'tocfs_mount_estargz', format: 'estargz', kind: 'tocfs-mount' },
  ];
  return eachMode(ctx, `first byte: ${profile.name}`, modes, (m) => whyNot(ctx, m, [img]), ctx.opts.reps, async (m): Promise<Record<string, number>> => {
    const dir = await ctx.scratch(`first-byte-${m.id}`);
    const ref = refOf(side.host, img, m.format);
    if (m.kind === 'tocfs-mount') {
      const mp = join(dir, 'mnt');
      try {
        const mount = await traffic(ctx, side, () => ctx.tocfs.mount(`docker://${ref}`, mp, join(dir, 'cache'), { ns: side.ns, prefetch: 'none' }));
        const cat = await traffic(ctx, side, () => run(['cat', join(mp, file)]));
        if (!cat.value.stdout.length) throw new Error(`empty ${file}`);
        return { first_byte_ms: mount.value.ms + cat.value.ms, mount_ms: mount.value.ms, cat_ms: cat.value.ms, registry_bytes: mount.registry_bytes + cat.registry_bytes };
      } finally {
        await ctx.tocfs.unmount(mp);
      }
    }
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { partial: m.kind === 'podman-partial' });
    try {
      const pull = await traffic(ctx, side, () => podman.pull(ref));
      const cat = await traffic(ctx, side, () => podman.runRm(ref, ['/usr/bin/python3', '-c', `import sys; sys.stdout.write(open("/${file}").read(1))`]));
      if (!cat.value.stdout.length) throw new Error(`empty ${file}`);
      return { first_byte_ms: pull.value.ms + cat.value.ms, pull_ms: pull.value.ms, cat_ms: cat.value.ms, registry_bytes: pull.registry_bytes + cat.registry_bytes };
    } finally {
      await podman.destroy();
    }
  });
}

/** (4) Image B of the pair right after image A, in the same store / cache. */
export async function dedupe(ctx: Ctx, profile: LinkProfile): Promise<Record<string, Outcome>> {
  const side = await ctx.link.use(profile);
  const { pairA, pairB } = ctx.images;
  const modes: FetchMode[] = [
    { id: 'podman_pull_gzip', format: 'gzip', kind: 'podman-full' },
    { id: 'podman_partial_zstd_chunked', format: 'zstd:chunked', kind: 'podman-partial' },
    { id: 'tocfs_mount_read_all_zstd_chunked', format: 'zstd:chunked', kind: 'tocfs-mount' },
    { id: 'tocfs_mount_read_all_estargz', format: 'estargz', kind: 'tocfs-mount' },
  ];
  // At most two repetitions: reading a whole image file by file over the slow link is long.
  return eachMode(ctx, `dedupe: ${profile.name}`, modes, (m) => whyNot(ctx, m, [pairA, pairB]), Math.min(ctx.opts.reps, 2), async (m) => {
    const dir = await ctx.scratch(`dedupe-${m.id}`);
    if (m.kind === 'tocfs-mount') {
      const cache = join(dir, 'cache');
      const readAll = async (img: BuiltImage, name: string) => {
        const mp = join(dir, name);
        try {
          return await traffic(ctx, side, async () => {
            const mount = await ctx.tocfs.mount(`docker://${refOf(side.host, img, m.format)}`, mp, cache, { ns: side.ns, prefetch: 'none' });
            const read = await run(['sh', '-c', `find . -type f -print0 | xargs -0 cat | wc -c`], { cwd: mp });
            return mount.ms + read.ms;
          });
        } finally {
          await ctx.tocfs.unmount(mp);
        }
      };
      const a = await readAll(pairA, 'a');
      const b = await readAll(pairB, 'b');
      return { first_ms: a.value, first_registry_bytes: a.registry_bytes, second_ms: b.value, second_registry_bytes: b.registry_bytes };
    }
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { partial: m.kind === 'podman-partial' });
    try {
      const a = await traffic(ctx, side, () => podman.pull(refOf(side.host, pairA, m.format)));
      const b = await traffic(ctx, side, () => podman.pull(refOf(side.host, pairB, m.format)));
      return { first_ms: a.value.ms, first_registry_bytes: a.registry_bytes, second_ms: b.value.ms, second_registry_bytes: b.registry_bytes };
    } finally {
      await podman.destroy();
    }
  });
}
