/**
 * (1) container ready, (2) bytes over the wire, (3) time to the first byte of one file and
 * (4) the second image of a pair after the first — for full pulls, Podman's partial pull and
 * tocfs's lazy modes.
 */
import { basename, dirname, join } from 'node:path';
import type { ClientSide, LinkProfile } from './link.js';
import { failed, refOf, unavailable, measured, type Ctx, type Options, type Outcome } from './context.js';
import { READY_COMMAND, type BuiltImage, type LayerFormat } from './images.js';
import { Podman } from './podman.js';
import { startService, waitFor, run } from './proc.js';
import { startStargzStore } from './stargz.js';
import { rssBytes } from './tocfs.js';
import { repeat, summarize, type Summary } from './stats.js';
import { repoOf } from './context.js';

export type ModeKind = 'podman-full' | 'podman-partial' | 'tocfs-store' | 'tocfs-rootfs' | 'stargz-store';

/**
 * Start-up profile steps (docs/profiles.md), measured together per format and kind, one
 * repetition after another (lib/measure-ready.ts profileScenario):
 * - norecord: today's lazy start with profiles off (profile.record and profile.replay false);
 * - (none: the base mode) the first run with no profile anywhere — it records one;
 * - local: the same node again after `tocfs cache clear` (profile kept), fresh Podman storage;
 * - published: a fresh node (new cache dir, new Podman storage) that finds the profile
 *   `tocfs profile push` published to the registry after the first run;
 * - v2: the app's v2 (same repository, tag v2: 1 file in 20 changed) on the first node after
 *   `tocfs cache clear`, replaying v1's profile (matched by repository).
 */
export type ProfileStep = 'norecord' | 'local' | 'published' | 'v2';

export interface ReadyMode {
  id: string;
  label: string;
  format: LayerFormat;
  kind: ModeKind;
  /** For a profile mode: which step; `base` is the mode of its first run. */
  profile?: ProfileStep;
  base?: string;
  /** stargz-store: background fetch on (false: `no_background_fetch = true`). */
  backgroundFetch?: boolean;
  /** Plain gzip read lazily through the index `tocfs index --push` published (issue 16; publishIndex). */
  index?: IndexUse;
}

/** How a published-index mode's reader is set up (its repository is always in index.trust). */
export interface IndexUse {
  /** index.check_delay of the reader; undefined: the setting's default. */
  checkDelayMs?: number;
}

/** index.check_delay's default (src/config/schema.ts). */
const INDEX_CHECK_DELAY_DEFAULT_MS = 30_000;
/** A check delay no start here comes near: the whole-layer check begins after the measurement. */
const CHECK_AFTER_START_MS = 3_600_000;

const STEP_LABEL: Record<ProfileStep, string> = {
  norecord: 'profiles off (no recording)',
  local: 'same node after cache clear, own profile',
  published: 'fresh node, profile from the registry',
  v2: 'app v2 with v1\'s profile',
};

function profileModes(base: ReadyMode): ReadyMode[] {
  const id = (s: ProfileStep): string => (s === 'published' ? `${base.id}_profile` : s === 'norecord' ? `${base.id}_norecord` : `${base.id}_profile_${s}`);
  return (['norecord', 'local', 'published', 'v2'] as ProfileStep[]).map((s) => ({ ...base, id: id(s), label: `${base.label}: ${STEP_LABEL[s]}`, profile: s, base: base.id }));
}

export const READY_MODES: ReadyMode[] = [
  { id: 'gzip_full', label: 'podman pull, gzip', format: 'gzip', kind: 'podman-full' },
  { id: 'zstd_full', label: 'podman pull, zstd', format: 'zstd', kind: 'podman-full' },
  { id: 'zstd_chunked_partial', label: 'podman partial pull, zstd:chunked', format: 'zstd:chunked', kind: 'podman-partial' },
  { id: 'tocfs_store_zstd_chunked', label: 'tocfs store (lazy), zstd:chunked', format: 'zstd:chunked', kind: 'tocfs-store' },
  { id: 'tocfs_store_estargz', label: 'tocfs store (lazy), eStargz', format: 'estargz', kind: 'tocfs-store' },
  { id: 'tocfs_store_estargz_opt', label: 'tocfs store (lazy), eStargz with start-up files first', format: 'estargz-opt', kind: 'tocfs-store' },
  { id: 'tocfs_store_gzip_index', label: 'tocfs store (lazy), plain gzip with a published index, whole-layer check after the start', format: 'gzip', kind: 'tocfs-store', index: { checkDelayMs: CHECK_AFTER_START_MS } },
  { id: 'tocfs_store_gzip_index_check_default', label: 'tocfs store (lazy), plain gzip with a published index, index.check_delay at its default (30 s)', format: 'gzip', kind: 'tocfs-store', index: {} },
  { id: 'tocfs_mount_zstd_chunked', label: 'tocfs mount + podman --rootfs, zstd:chunked', format: 'zstd:chunked', kind: 'tocfs-rootfs' },
  { id: 'tocfs_mount_estargz', label: 'tocfs mount + podman --rootfs, eStargz', format: 'estargz', kind: 'tocfs-rootfs' },
  { id: 'tocfs_mount_estargz_opt', label: 'tocfs mount + podman --rootfs, eStargz with start-up files first (prefetched)', format: 'estargz-opt', kind: 'tocfs-rootfs' },
  { id: 'tocfs_mount_gzip_index', label: 'tocfs mount + podman --rootfs, plain gzip with a published index, whole-layer check after the start', format: 'gzip', kind: 'tocfs-rootfs', index: { checkDelayMs: CHECK_AFTER_START_MS } },
  { id: 'tocfs_mount_gzip_index_check_default', label: 'tocfs mount + podman --rootfs, plain gzip with a published index, index.check_delay at its default (30 s)', format: 'gzip', kind: 'tocfs-rootfs', index: {} },
  { id: 'stargz_store_estargz', label: 'stargz-store (peer), eStargz, background fetch off', format: 'estargz', kind: 'stargz-store', backgroundFetch: false },
  { id: 'stargz_store_estargz_bgfetch', label: 'stargz-store (peer), eStargz, background fetch on', format: 'estargz', kind: 'stargz-store', backgroundFetch: true },
];
/** The lazy tocfs modes that have profile steps (the base mode's runs are each scenario's first run). */
export const PROFILE_BASES = ['tocfs_store_zstd_chunked', 'tocfs_store_estargz', 'tocfs_mount_zstd_chunked', 'tocfs_mount_estargz'];
for (const b of PROFILE_BASES) READY_MODES.push(...profileModes(READY_MODES.find((m) => m.id === b)!));


/** Traffic of one measured step: registry response bytes, bytes on the veth, blob GETs. */
async function traffic<T>(ctx: Ctx, side: ClientSide, step: () => Promise<T>): Promise<{ value: T; registry_bytes: number; wire_bytes: number; blob_requests: number }> {
  const mark = ctx.link.mark();
  const rx0 = await ctx.link.wireRx();
  const value = await step();
  const served = ctx.link.served(mark);
  const wire = side.ns === 'tocfsbench-cli' ? (await ctx.link.wireRx()) - rx0 : 0;
  return { value, registry_bytes: served.bytes, wire_bytes: wire, blob_requests: served.blobRequests };
}

function whyUnavailable(ctx: Ctx, mode: ReadyMode, img: BuiltImage, published?: Outcome): string | undefined {
  if (!img.layouts[mode.format]) return `no ${mode.format} image: ${img.unavailable[mode.format] ?? 'not built'}`;
  if (mode.kind === 'stargz-store') return ctx.opts.stargzStoreMissing;
  if (mode.index && published?.status !== 'ok') return `no published index (tocfs index --push: ${published ? `${published.status}, ${published.reason}` : 'not run'})`;
  const profiles = mode.profile && (ctx.tocfs.missing('profile') ?? (mode.profile === 'published' ? ctx.tocfs.missing('profile push') : undefined));
  if (profiles) return profiles;
  if (mode.profile === 'v2' && !ctx.images.runtimeV2.layouts[mode.format]) return `no v2 ${mode.format} image: ${ctx.images.runtimeV2.unavailable[mode.format] ?? 'not built'}`;
  if (mode.kind === 'tocfs-store') return ctx.tocfs.missing('store');
  if (mode.kind === 'tocfs-rootfs') return ctx.tocfs.missing('mount');
  return undefined;
}

/** A running `tocfs store` (the Podman additional layer store). */
export async function startStore(ctx: Ctx, side: ClientSide, dir: string, cacheDir: string, env?: NodeJS.ProcessEnv): Promise<{ pid: number; output: string[]; stop(): Promise<void> }> {
  const svc = startService(ctx.tocfs.argv(['store', '--foreground', '--tls-verify=false', '--cache-dir', cacheDir, dir]), { ns: side.ns, ...(env ? { env } : {}) });
  const exited = (): boolean => svc.child.exitCode !== null;
  try {
    // A probe of a mount that does not answer hangs: each is cut short, so the deadline holds.
    await waitFor('tocfs store mount', async () => exited() || (await run(['mountpoint', '-q', dir], { check: false, timeoutMs: 5_000 })).code === 0, 30_000);
    if (exited()) throw new Error(`tocfs store exited: ${svc.output.slice(-5).join(' | ')}`);
  } catch (e) {
    await svc.stop();
    await run(['umount', '-l', dir], { check: false });
    const said = svc.output.slice(-3).join(' | ');
    throw said && !(e as Error).message.includes(said) ? new Error(`${(e as Error).message} (the store said: ${said})`) : e;
  }
  return {
    // nsenter execs the command in place: this is the store's own pid.
    pid: svc.child.pid!,
    output: svc.output,
    async stop() {
      await svc.stop();
      await run(['umount', '-l', dir], { check: false });
    },
  };
}

function checkReady(stdout: string): void {
  if (!stdout.includes('ready')) throw new Error(`the container did not print "ready": ${stdout.slice(0, 200)}`);
}

/** Environment of tocfs processes with start-up profiles off. */
const PROFILES_OFF = { TOCFS_PROFILE_RECORD: 'false', TOCFS_PROFILE_REPLAY: 'false' };

/** One container start from nothing: a fresh podman store, a fresh tocfs cache. */
async function readyOnce(ctx: Ctx, side: ClientSide, mode: ReadyMode, img: BuiltImage, cmd: string[], check: (out: string) => void): Promise<Record<string, number>> {
  const dir = await ctx.scratch(`ready-${mode.id}`);
  const ref = refOf(side.host, img, mode.format);
  if (mode.kind === 'tocfs-store' || mode.kind === 'tocfs-rootfs') {
    if (mode.index) return indexedOnce(ctx, side, mode.kind, mode.index, img, ref, dir, cmd, check);
    const env = mode.profile === 'norecord' ? { ...process.env, ...PROFILES_OFF } : undefined;
    return lazyOnce(ctx, side, mode.kind, ref, join(dir, 'podman'), join(dir, 'cache'), cmd, check, env);
  }
  if (mode.kind === 'stargz-store') {
    const storeDir = join(dir, 'store');
    const store = await startStargzStore(ctx.opts.stargzStore!, side, dir, storeDir, mode.backgroundFetch === true);
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { additionalLayerStore: `${storeDir}:ref` });
    try {
      const r = await pullAndRun(ctx, side, podman, ref, cmd, check);
      // Podman falls back to pulling the layer itself when the store does not serve it: that is no lazy start.
      if (r.registry_bytes > 0.8 * (img.layerBytes[mode.format] ?? Infinity) && mode.backgroundFetch !== true) throw new Error(`stargz-store did not serve the layer lazily (${(r.registry_bytes / 1e6).toFixed(0)} MB fetched): ${store.output.slice(-3).join(' | ')}`);
      return { ...r, store_rss_MB: (await rssBytes(store.pid)) / 1e6 };
    } finally {
      await podman.destroy();
      await store.stop();
    }
  }
  if (mode.kind === 'podman-full' || mode.kind === 'podman-partial') {
    const podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, { partial: mode.kind === 'podman-partial' });
    try {
      return await pullAndRun(ctx, side, podman, ref, cmd, check);
    } finally {
      await podman.destroy();
    }
  }
  throw new Error(`unknown mode kind ${mode.kind}`);
}

/**
 * One lazy container start of `ref` through tocfs (`kind`), with Podman storage at `podmanDir`
 * (made afresh, removed after) and the tocfs cache at `cacheDir` (kept: a node's cache).
 * The store is stopped / the mount unmounted at the end, which ends a profile recording.
 */
async function lazyOnce(
  ctx: Ctx, side: ClientSide, kind: 'tocfs-store' | 'tocfs-rootfs', ref: string, podmanDir: string, cacheDir: string,
  cmd: string[], check: (out: string) => void, env?: NodeJS.ProcessEnv, awaitProfile = false,
): Promise<Record<string, number>> {
  if (kind === 'tocfs-rootfs') {
    // Not beside podmanDir with its name as a prefix: Podman.create/destroy unmount everything under that prefix.
    const mp = join(dirname(podmanDir), `mnt-${basename(podmanDir)}`);
    const podman = await Podman.create(podmanDir, side.ns, side.host, {});
    try {
      const mount = await traffic(ctx, side, () => ctx.tocfs.mount(`docker://${ref}`, mp, cacheDir, { ns: side.ns, ...(env ? { env } : {}) }));
      const r = await traffic(ctx, side, () => podman.exec(['run', '--rm', '--network', 'none', ...Podman.ULIMITS, '--rootfs', `${mp}:O`, ...cmd]));
      check(r.value.stdout);
      return sum(mount.value.ms, r.value.ms, mount, r);
    } finally {
      await podman.destroy();
      await ctx.tocfs.unmount(mp);
    }
  }
  const storeDir = join(dirname(podmanDir), `store-${basename(podmanDir)}`);
  await run(['mkdir', '-p', storeDir]);
  const store = await startStore(ctx, side, storeDir, cacheDir, env);
  const podman = await Podman.create(podmanDir, side.ns, side.host, { additionalLayerStore: `${storeDir}:ref` });
  try {
    const before = await profileFiles(cacheDir);
    const r = { ...(await pullAndRun(ctx, side, podman, ref, cmd, check)), store_rss_MB: (await rssBytes(store.pid)) / 1e6 };
    // After the measurement: `tocfs store` saves a recording when reads go idle (profile.idle,
    // 10 s). Stopping the store does not save it (LayerStore.close() skips every image: its
    // Promise.race against an already-resolved promise always takes the latter), so wait.
    if (awaitProfile) await waitFor('the store to save its start-up profile', async () => (await profileFiles(cacheDir)) > before, 30_000).catch(() => undefined);
    return r;
  } finally {
    await podman.destroy();
    await store.stop();
  }
}

/** Whether `opts` selects a mode that reads through a published index (then publishIndex runs first). */
export function wantsPublishedIndex(opts: Options): boolean {
  return READY_MODES.some((m) => m.index && (!opts.modes || opts.modes.has(m.id)));
}

/**
 * The publisher's one-time step of the published-index modes: `tocfs index --push` of the
 * runtime image's gzip tag from an empty cache over the link measured (it reads each gzip
 * layer once, whole). Timed on its own, outside every container start. An index published
 * by an earlier run is removed first.
 */
export async function publishIndex(ctx: Ctx, profile: LinkProfile): Promise<Outcome> {
  const missing = ctx.tocfs.missing('index');
  if (missing) return unavailable(missing);
  const side = await ctx.link.use(profile);
  const img = ctx.images.runtime;
  ctx.log(`container ready: ${profile.name} tocfs index --push (the publisher's one-time step, not part of any start)`);
  try {
    await ctx.link.removeReferrersTags(repoOf(img, 'gzip'));
    const dir = await ctx.scratch('index-publish');
    const r = await traffic(ctx, side, () =>
      ctx.tocfs.exec(['index', '--push', '--json', '--tls-verify=false', '--cache-dir', join(dir, 'cache'), `docker://${refOf(side.host, img, 'gzip')}`], { ns: side.ns, timeoutMs: 1_200_000 }),
    );
    const layers = (JSON.parse(r.value.stdout) as { layers: Array<{ checkpoints?: number; indexBytes?: number }> }).layers.filter((l) => l.checkpoints);
    if (!layers.length) throw new Error(`tocfs index --push indexed no gzip layer: ${r.value.stdout.slice(0, 300)}`);
    const checkpoints = layers.reduce((n, l) => n + l.checkpoints!, 0);
    const one = (v: number): Summary => summarize([v]);
    return measured({
      push_ms: one(r.value.ms),
      registry_bytes: one(r.registry_bytes),
      layers: one(layers.length),
      checkpoints: one(checkpoints),
      index_bytes: one(layers.reduce((n, l) => n + (l.indexBytes ?? 0), 0)),
      tar_MiB_per_checkpoint: one(img.tarBytes / checkpoints / 2 ** 20),
    });
  } catch (e) {
    const f = failed(e);
    ctx.log(`  failed: ${f.reason}`);
    return f;
  }
}

/**
 * One lazy start of the gzip image through the index publishIndex published: the reader trusts
 * the repository (index.trust) and checks the layer whole `use.checkDelayMs` after opening it.
 * The layer opens after the measured start begins, so a start shorter than the delay had no
 * check in it (`check_in_start` 0); one that had says so (1), its numbers then include the
 * check's whole-layer read. A start that fetched most of the layer with no check in it did
 * not use the index: an error, not a number.
 */
async function indexedOnce(
  ctx: Ctx, side: ClientSide, kind: 'tocfs-store' | 'tocfs-rootfs', use: IndexUse, img: BuiltImage, ref: string, dir: string,
  cmd: string[], check: (out: string) => void,
): Promise<Record<string, number>> {
  const { TOCFS_INDEX_CHECK_DELAY: _inherited, ...env } = process.env;
  const trust = { TOCFS_INDEX_TRUST: `${side.host}/${repoOf(img, 'gzip')}`, ...(use.checkDelayMs !== undefined ? { TOCFS_INDEX_CHECK_DELAY: `${use.checkDelayMs}ms` } : {}) };
  const r = await lazyOnce(ctx, side, kind, ref, join(dir, 'podman'), join(dir, 'cache'), cmd, check, { ...env, ...trust });
  const delay = use.checkDelayMs ?? INDEX_CHECK_DELAY_DEFAULT_MS;
  const checkInStart = r.ready_ms! >= delay ? 1 : 0;
  const layer = img.layerBytes.gzip!;
  if (!checkInStart && r.registry_bytes! > 0.8 * layer) {
    throw new Error(`the gzip layer was fetched whole (${(r.registry_bytes! / 1e6).toFixed(0)} of ${(layer / 1e6).toFixed(0)} MB) with no whole-layer check in the start: the published index was not used`);
  }
  return { ...r, check_delay_ms: delay, check_in_start: checkInStart, layer_fraction_fetched: r.registry_bytes! / layer };
}

async function profileFiles(cacheDir: string): Promise<number> {
  const r = await run(['sh', '-c', 'ls "$0"/profiles/*.json 2>/dev/null | wc -l', cacheDir], { check: false });
  return Number(r.stdout.trim()) || 0;
}

/**
 * The profile steps of one lazy mode (`base`), each repetition in this order: profiles off;
 * first run (records); same node after `tocfs cache clear`; `tocfs profile push` then a fresh
 * node; app v2 on the first node after `tocfs cache clear`. The published profile is removed
 * from the registry after each repetition, so every first run starts with none anywhere.
 */
async function profileScenario(ctx: Ctx, side: ClientSide, base: ReadyMode, steps: ReadyMode[], cmd: string[], check: (out: string) => void): Promise<Record<string, Outcome>> {
  const img = ctx.images.runtime;
  const ref = refOf(side.host, img, base.format);
  const refV2 = `${side.host}/${repoOf(img, base.format)}:v2`;
  const repo = repoOf(img, base.format);
  const runs: Record<string, Array<Record<string, number>>> = {};
  const out: Record<string, Outcome> = {};
  const add = (id: string, r: Record<string, number>): void => void (runs[id] ??= []).push(r);
  const has = (s: ProfileStep): ReadyMode | undefined => steps.find((m) => m.profile === s);
  const tocfs = (args: string[]) => ctx.tocfs.exec([...args], { ns: side.ns });
  const stepFailed: Record<string, Outcome> = {};
  // One step failing (a push refused, a replay gone wrong) fails that step only.
  const attempt = async (m: ReadyMode | undefined, fn: () => Promise<Record<string, number>>): Promise<void> => {
    if (!m || stepFailed[m.id]) return;
    try {
      add(m.id, await fn());
    } catch (e) {
      stepFailed[m.id] = failed(e);
      ctx.log(`  ${m.id} failed: ${(stepFailed[m.id] as { reason: string }).reason}`);
    }
  };
  const kind = base.kind as 'tocfs-store' | 'tocfs-rootfs';
  for (let i = 0; i < ctx.opts.reps; i++) {
    await ctx.link.removeReferrersTags(repo);
    const dir = await ctx.scratch(`ready-${base.id}-profiles`);
    const nodeA = join(dir, 'node-a');
    const cacheA = join(nodeA, 'cache');
    await attempt(has('norecord'), () => lazyOnce(ctx, side, kind, ref, join(dir, 'off', 'podman'), join(dir, 'off', 'cache'), cmd, check, { ...process.env, ...PROFILES_OFF }));
    const needProfile = Boolean(has('local') || has('published') || has('v2'));
    add(base.id, await lazyOnce(ctx, side, kind, ref, join(nodeA, 'podman1'), cacheA, cmd, check, undefined, needProfile));
    if (needProfile && !(await profileFiles(cacheA))) {
      const why = failed(new Error(`the first run recorded no start-up profile in ${cacheA}/profiles`));
      for (const s of ['local', 'published', 'v2'] as ProfileStep[]) if (has(s)) stepFailed[has(s)!.id] ??= why;
    }
    await attempt(has('local'), async () => {
      await tocfs(['cache', 'clear', '--cache-dir', cacheA]);
      return lazyOnce(ctx, side, kind, ref, join(nodeA, 'podman2'), cacheA, cmd, check);
    });
    await attempt(has('published'), async () => {
      const push = await tocfs(['profile', 'push', '--tls-verify=false', '--cache-dir', cacheA, `docker://${ref}`]);
      if (i === 0) ctx.log(`  profile push: ${(push.stdout + push.stderr).trim().split('\n').filter((l) => !l.includes('is not a tocfs setting')).slice(-2).join(' | ')}`);
      try {
        const r = await lazyOnce(ctx, side, kind, ref, join(dir, 'node-b', 'podman'), join(dir, 'node-b', 'cache'), cmd, check);
        return { ...r, push_ms: push.ms };
      } finally {
        await ctx.link.removeReferrersTags(repo);
      }
    });
    await attempt(has('v2'), async () => {
      await tocfs(['cache', 'clear', '--cache-dir', cacheA]);
      return lazyOnce(ctx, side, kind, refV2, join(nodeA, 'podman3'), cacheA, cmd, check);
    });
    await ctx.scratch(`ready-${base.id}-profiles`);
  }
  Object.assign(out, stepFailed);
  for (const [id, rs] of Object.entries(runs)) {
    if (stepFailed[id]) continue;
    const figures: Record<string, Summary> = {};
    for (const k of Object.keys(rs[0]!)) figures[k] = summarize(rs.map((r) => r[k]!));
    out[id] = measured(figures);
  }
  return out;
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

/** Container ready of every selected mode; `published`: the outcome of publishIndex, which the published-index modes need. */
export async function containerReady(ctx: Ctx, profile: LinkProfile, published?: Outcome): Promise<Record<string, Outcome>> {
  const side = await ctx.link.use(profile);
  const img = ctx.images.runtime;
  const modes = READY_MODES.filter((m) => !ctx.opts.modes || ctx.opts.modes.has(m.id) || (m.base && ctx.opts.modes.has(m.base)));
  // A base mode with profile steps is measured by its scenario (its first runs), the others one by one.
  const scenarioOf = (m: ReadyMode): string | undefined => m.base ?? (PROFILE_BASES.includes(m.id) && modes.some((x) => x.base === m.id) ? m.id : undefined);
  const out = await eachMode(ctx, `container ready: ${profile.name}`, modes.filter((m) => !scenarioOf(m)), (m) => whyUnavailable(ctx, m, img, published), ctx.opts.reps, (m) =>
    readyOnce(ctx, side, m, img, READY_COMMAND, checkReady),
  );
  for (const baseId of PROFILE_BASES) {
    const base = modes.find((m) => m.id === baseId);
    if (!base) continue;
    const steps: ReadyMode[] = [];
    for (const m of modes.filter((x) => x.base === baseId)) {
      const why = whyUnavailable(ctx, m, img);
      if (why) out[m.id] = unavailable(why);
      else steps.push(m);
    }
    const why = whyUnavailable(ctx, base, img);
    if (why) {
      out[base.id] = unavailable(why);
      for (const m of steps) out[m.id] = unavailable(why);
      continue;
    }
    ctx.log(`container ready: ${profile.name} ${base.id} with profile steps (${steps.map((m) => m.profile).join(', ') || 'none'})`);
    try {
      Object.assign(out, await profileScenario(ctx, side, base, steps, READY_COMMAND, checkReady));
    } catch (e) {
      const f = failed(e);
      ctx.log(`  failed: ${f.reason}`);
      for (const m of [base, ...steps]) out[m.id] ??= f;
    }
  }
  // In READY_MODES order, for the tables.
  return Object.fromEntries(READY_MODES.filter((m) => out[m.id]).map((m) => [m.id, out[m.id]!]));
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
