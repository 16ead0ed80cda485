/**
 * (7) The page cache shared between containers: ten images that hold the same files in
 * different layers (one squashed layer each: the Python runtime plus an /etc/variant of their
 * own, so no layer digest is shared), one long-lived container per image, and the sum of the
 * main processes' PSS (/proc/PID/smaps_rollup), and apart that of a `sleep` each starts. With a normal overlay pull each layer is its
 * own set of files, read into the page cache once per layer: ten copies of python3.11 and its
 * libraries, each counted whole by the one process mapping it. Files served from ONE
 * content-addressed file per digest (FUSE passthrough: TOCFS_DAEMON_FUSE_SESSION=tocfs) would
 * be one page-cache copy, its PSS split ten ways. The zstd:chunked seed article measured 10
 * `sleep` containers at 2.6 MB of PSS with hard-linked files against 15.5 MB with copies.
 */
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LinkProfile } from './link.js';
import { failed, measured, refOf, unavailable, type Ctx, type Outcome } from './context.js';
import { plainLayout, stageRuntime, type BuiltImage } from './images.js';
import { Podman, type PodmanMode } from './podman.js';
import { dropCaches, run, sleep, waitFor } from './proc.js';
import { startStore } from './measure-ready.js';
import { repeat } from './stats.js';
import { rssBytes, type Tocfs } from './tocfs.js';

export const PSS_IMAGES = 10;

/** The environment variable that selects tocfs's own FUSE session (passthrough of fully cached files). */
const SESSION_ENV = { TOCFS_DAEMON_FUSE_SESSION: 'tocfs' };

export interface PssMode {
  id: string;
  label: string;
  kind: 'overlay' | 'partial-hardlinks' | 'store';
  env?: Record<string, string>;
}

export const PSS_MODES: PssMode[] = [
  { id: 'overlay', label: 'podman pull (overlay: every layer its own files)', kind: 'overlay' },
  { id: 'tocfs_store', label: 'tocfs store through fuse-native (TOCFS_DAEMON_FUSE_SESSION=fuse-native)', kind: 'store', env: { TOCFS_DAEMON_FUSE_SESSION: 'fuse-native' } },
  { id: 'tocfs_store_session', label: 'tocfs store, TOCFS_DAEMON_FUSE_SESSION=tocfs (own FUSE session, passthrough onto one file per digest)', kind: 'store', env: SESSION_ENV },
  // Reference: what one copy per file digest gives on this machine, by Podman's own means (the seed article's hard links).
  // Podman 4.3.1's partial pull gives every file the time of the pull as its mtime, so Python finds every .pyc stale
  // and compiles each module from source at start: more anonymous memory than the other modes.
  { id: 'podman_partial_hardlinks', label: 'podman partial pull with use_hard_links (reference: files deduplicated across layers by hard links; Podman 4.3.1 stamps every file with the pull time, so Python recompiles every .pyc and holds more anonymous memory)', kind: 'partial-hardlinks' },
];

/**
 * What each container runs: imports that map python3.11 and most of its shared libraries, a
 * marker, then sleep. Before the marker it starts /usr/bin/sleep beside itself: the seed
 * article's workload, a small process that maps little but its binary and libc, measured apart.
 */
export const PSS_SCRIPT =
  'import os, json, decimal, ssl, sqlite3, hashlib, lzma, bz2, ctypes, time; ' +
  'os.posix_spawn("/usr/bin/sleep", ["sleep", "3600"], {}); ' +
  'v = open("/etc/variant").read().strip(); print("pss-ready", v, flush=True); time.sleep(3600)';

/** The host's coreutils sleep, copied into every PSS image (it needs only libc, which Python brings). */
const SLEEP = '/usr/bin/sleep';

const PSS_RECIPE = 'pss recipe 2: py stage hard-linked, /usr/bin/sleep, /etc/variant = i, tar, tocfs convert --format zstd:chunked --legacy-annotations';

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/** The one layer of a one-image OCI layout. */
async function layerOf(layout: string): Promise<{ digest: string; size: number }> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  const m = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  if (m.layers.length !== 1) throw new Error(`${layout}: ${m.layers.length} layers, expected one`);
  return { digest: m.layers[0].digest, size: m.layers[0].size };
}

/**
 * The ten images: the pair's Python runtime tree (`baseStage`, staged again when missing) hard-linked
 * into a stage of its own with /etc/variant = i, tarred into one layer (plainLayout), written by tocfs's
 * own zstd:chunked writer (`tocfs convert`; with the legacy annotation keys too, which Podman 4.3.1's
 * partial pull reads). Kept between runs under `<root>/pss` (keyed by the recipe and the base's size).
 */
export async function buildPssImages(
  root: string, baseStage: string, tocfs: Tocfs, log: (m: string) => void,
): Promise<{ images: BuiltImage[]; unavailable?: string }> {
  const missing = tocfs.missing('convert');
  if (missing) return { images: [], unavailable: missing };
  const dir = join(root, 'pss');
  await mkdir(dir, { recursive: true });
  if (!(await exists(join(baseStage, 'usr', 'bin', 'python3.11')))) {
    log(`staging ${baseStage} again (the PSS images are made from it)`);
    await stageRuntime(baseStage, false);
  }
  const baseFiles = Number((await run(['sh', '-c', `find '${baseStage}' -type f | wc -l`])).stdout.trim());
  const baseBytes = Number((await run(['du', '-sb', baseStage])).stdout.split('\t')[0]);
  const definition = `${PSS_RECIPE}; base ${baseFiles} files, ${baseBytes} bytes`;
  const cacheFile = join(dir, 'built.json');
  const cached = JSON.parse(await readFile(cacheFile, 'utf8').catch(() => '{}')) as { definition?: string; images?: BuiltImage[] };
  if (cached.definition === definition && cached.images?.length === PSS_IMAGES) {
    const all = await Promise.all(cached.images.map((i) => exists(join(i.layouts['zstd:chunked']!, 'index.json'))));
    if (all.every(Boolean)) return { images: cached.images };
  }
  const images: BuiltImage[] = [];
  for (let i = 0; i < PSS_IMAGES; i++) {
    const name = `pss${i}`;
    log(`building image ${name} (the Python runtime + /etc/variant ${i}, one layer, tocfs convert zstd:chunked)`);
    const stage = join(dir, 'stage', name);
    const plain = join(dir, `${name}-plain`);
    const tar = join(dir, `${name}.tar`);
    const dst = join(dir, `${name}-zstd-chunked`);
    await rm(stage, { recursive: true, force: true });
    await mkdir(join(dir, 'stage'), { recursive: true });
    // Hard links: no data copied, mtimes kept (so the .pyc files stay valid); the new file is the only difference.
    await run(['cp', '-al', baseStage, stage]);
    await writeFile(join(stage, 'etc', 'variant'), `${i}\n`);
    await copyFile(SLEEP, join(stage, 'usr', 'bin', 'sleep'));
    const base = await plainLayout(stage, plain, tar);
    await rm(dst, { recursive: true, force: true });
    await tocfs.exec(['convert', `oci:${plain}:latest`, `oci:${dst}:latest`, '--format', 'zstd:chunked', '--legacy-annotations'], { timeoutMs: 1_800_000 });
    const layer = await layerOf(dst);
    images.push({
      name, ...base, layouts: { 'zstd:chunked': dst }, layerBytes: { 'zstd:chunked': layer.size }, unavailable: {},
      writtenBy: { 'zstd:chunked': 'tocfs convert --format zstd:chunked --legacy-annotations' },
    });
    await rm(tar, { force: true });
    await rm(plain, { recursive: true, force: true });
    await rm(stage, { recursive: true, force: true });
  }
  const digests = new Set(await Promise.all(images.map(async (i) => (await layerOf(i.layouts['zstd:chunked']!)).digest)));
  if (digests.size !== PSS_IMAGES) throw new Error(`the ${PSS_IMAGES} PSS images share layers (${digests.size} distinct layer digests)`);
  await writeFile(cacheFile, JSON.stringify({ definition, images }, null, 1));
  return { images };
}

/** Sums of /proc/PID/smaps_rollup fields (kB) over `pids`. */
async function smapsRollup(pids: number[]): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  for (const pid of pids) {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    for (const m of text.matchAll(/^(\w+):\s+(\d+) kB$/gm)) sum[m[1]!] = (sum[m[1]!] ?? 0) + Number(m[2]);
  }
  return sum;
}

/** The files that make up one process's PSS, largest first (kB): where the shared pages are. */
async function pssByFile(pid: number, top = 6): Promise<string> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8').catch(() => '');
  const by = new Map<string, number>();
  let file = '';
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) file = head[1]!.trim() || '[anon]';
    const pss = /^Pss:\s+(\d+) kB/.exec(line);
    if (pss) by.set(file, (by.get(file) ?? 0) + Number(pss[1]));
  }
  return [...by].sort((a, b) => b[1] - a[1]).slice(0, top).map(([f, kB]) => `${f.split('/').pop()} ${kB}`).join(', ');
}

/** Whether this tocfs knows TOCFS_DAEMON_FUSE_SESSION (the setting is unknown until tocfs's own FUSE session lands). */
export async function sessionMissing(ctx: Ctx): Promise<string | undefined> {
  const r = await ctx.tocfs.exec(['config', 'show'], { env: { ...process.env, ...SESSION_ENV }, check: false });
  const out = `${r.stdout}\n${r.stderr}`;
  if (/TOCFS_DAEMON_FUSE_SESSION is not a tocfs setting/.test(out)) {
    return `TOCFS_DAEMON_FUSE_SESSION is unknown to this tocfs ("environment variable TOCFS_DAEMON_FUSE_SESSION is not a tocfs setting"): tocfs's own FUSE session is not in this checkout yet`;
  }
  if (r.code !== 0) return `tocfs config show with TOCFS_DAEMON_FUSE_SESSION=tocfs exited ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
  return undefined;
}

/** Waits until container `name` printed its marker (imports done, about to sleep); returns the marker line. */
async function waitReady(podman: Podman, name: string, timeoutMs = 180_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (let n = 0; ; n++) {
    const logs = await podman.exec(['logs', name]).catch((e: Error) => ({ stdout: '', stderr: e.message }));
    const line = logs.stdout.split('\n').find((l) => l.startsWith('pss-ready'));
    if (line) return line;
    if (n % 8 === 7 || Date.now() > deadline) {
      const st = await podman.exec(['inspect', '--format', '{{.State.Status}}', name]).catch((e: Error) => ({ stdout: e.message }));
      if (!/running/.test(st.stdout) || Date.now() > deadline) {
        throw new Error(`container ${name} never printed its marker (${st.stdout.trim()}): ${(logs.stdout + logs.stderr).trim().split('\n').slice(-3).join(' | ')}`);
      }
    }
    await sleep(250);
  }
}

/** One measurement of `mode`: pull the ten images, drop the page cache, run ten containers, sum their PSS. Everything removed after. */
async function pssOnce(ctx: Ctx, profile: LinkProfile, mode: PssMode, images: BuiltImage[]): Promise<Record<string, number>> {
  const side = await ctx.link.use(profile);
  const dir = await ctx.scratch(`pss-${mode.id}`);
  const refs = images.map((img) => refOf(side.host, img, 'zstd:chunked'));
  const names = images.map((_, i) => `pss-${i}`);
  const layerBytes = images.reduce((n, i) => n + i.layerBytes['zstd:chunked']!, 0);
  let store: Awaited<ReturnType<typeof startStore>> | undefined;
  let podmanMode: PodmanMode = {};
  if (mode.kind === 'store') {
    const storeDir = join(dir, 'store');
    await mkdir(storeDir, { recursive: true });
    store = await startStore(ctx, side, storeDir, join(dir, 'cache'), mode.env ? { ...process.env, ...mode.env } : undefined);
    // An unknown setting, or an own session that could not start (the daemon then serves through fuse-native): not this mode.
    const unknown = store.output.find((l) => Object.keys(mode.env ?? {}).some((k) => l.includes(`${k} is not a tocfs setting`)))
      ?? (mode.env ? store.output.find((l) => /own FUSE session is unavailable/.test(l)) : undefined);
    if (unknown) {
      await store.stop();
      throw new Error(`the store did not take the setting: ${unknown}`);
    }
    podmanMode = { additionalLayerStore: `${storeDir}:ref` };
  } else if (mode.kind === 'partial-hardlinks') {
    podmanMode = { partial: true, hardLinks: true };
  }
  let podman: Podman | undefined;
  try {
    podman = await Podman.create(join(dir, 'podman'), side.ns, side.host, podmanMode);
    const pullMark = ctx.link.mark();
    const t0 = performance.now();
    for (const ref of refs) await podman.pull(ref);
    const pullMs = performance.now() - t0;
    const pulled = ctx.link.served(pullMark);
    // Podman pulls a layer itself when the store declines it: then nothing here would be the store's.
    if (mode.kind === 'store' && pulled.bytes > 0.5 * layerBytes) {
      throw new Error(`the store did not serve the layers: Podman fetched ${(pulled.bytes / 1e6).toFixed(0)} of ${(layerBytes / 1e6).toFixed(0)} MB itself (store: ${store!.output.slice(-3).join(' | ')})`);
    }
    await dropCaches();
    const runMark = ctx.link.mark();
    const t1 = performance.now();
    for (const [i, ref] of refs.entries()) {
      await podman.exec(['run', '-d', '--name', names[i]!, '--network', 'none', ...Podman.ULIMITS, '--pull', 'never', ref, '/usr/bin/python3', '-c', PSS_SCRIPT]);
      const line = await waitReady(podman, names[i]!);
      if (line.trim() !== `pss-ready ${i}`) throw new Error(`container ${names[i]} saw the wrong image: "${line}" (expected "pss-ready ${i}")`);
    }
    const startMs = performance.now() - t1;
    const ran = ctx.link.served(runMark);
    const inspect = await podman.exec(['inspect', '--format', '{{.State.Pid}}', ...names]);
    const pids = inspect.stdout.trim().split('\n').map(Number);
    if (pids.length !== names.length || pids.some((p) => !(p > 0))) throw new Error(`podman inspect gave pids "${inspect.stdout.trim()}"`);
    for (const pid of pids) {
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
      if (!comm.startsWith('python')) throw new Error(`pid ${pid} is ${comm}, not the container's python`);
    }
    // Each python's one child: the sleep it started.
    const sleepPids = await Promise.all(pids.map(async (pid) => Number((await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/)[0])));
    for (const pid of sleepPids) {
      const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
      if (!(pid > 0) || comm !== 'sleep') throw new Error(`the python's child ${pid} is ${comm}, not sleep`);
    }
    // The marker is printed just before sleep(): wait until every process is in it.
    await waitFor('every container asleep (wchan hrtimer_nanosleep)', async () => {
      const w = await Promise.all([...pids, ...sleepPids].map((pid) => readFile(`/proc/${pid}/wchan`, 'utf8').catch(() => '')));
      return w.every((x) => x.includes('nanosleep'));
    }, 30_000);
    const s = await smapsRollup(pids);
    const z = await smapsRollup(sleepPids);
    ctx.log(`  ${mode.id}: PSS ${s.Pss} kB (file ${s.Pss_File}, anon ${s.Pss_Anon}), RSS ${s.Rss} kB over ${pids.length} containers; container 0 by file (kB): ${await pssByFile(pids[0]!)}; sleep processes: PSS ${z.Pss} kB (file ${z.Pss_File}, anon ${z.Pss_Anon})`);
    return {
      containers: pids.length,
      pss_kB: s.Pss ?? NaN,
      pss_file_kB: s.Pss_File ?? NaN,
      pss_anon_kB: s.Pss_Anon ?? NaN,
      rss_kB: s.Rss ?? NaN,
      shared_clean_kB: s.Shared_Clean ?? NaN,
      private_clean_kB: s.Private_Clean ?? NaN,
      sleep_pss_kB: z.Pss ?? NaN,
      sleep_pss_file_kB: z.Pss_File ?? NaN,
      sleep_pss_anon_kB: z.Pss_Anon ?? NaN,
      pull_all_ms: pullMs,
      start_all_ms: startMs,
      pull_registry_bytes: pulled.bytes,
      run_registry_bytes: ran.bytes,
      ...(store ? { store_rss_MB: (await rssBytes(store.pid)) / 1e6 } : {}),
    };
  } finally {
    if (podman) {
      await podman.exec(['rm', '-f', '-t', '0', ...names]).catch(() => undefined);
      await podman.destroy();
    }
    await store?.stop();
    await dropCaches();
  }
}

/** Every PSS mode over `profile` (loopback: the link does not matter here), one failing mode never stopping the others. */
export async function pssShared(ctx: Ctx, profile: LinkProfile): Promise<Record<string, Outcome>> {
  const images = ctx.images.pss ?? [];
  const picked = ctx.opts.modes && PSS_MODES.some((m) => ctx.opts.modes!.has(m.id)) ? PSS_MODES.filter((m) => ctx.opts.modes!.has(m.id)) : PSS_MODES;
  const out: Record<string, Outcome> = {};
  for (const mode of picked) {
    let why = images.length !== PSS_IMAGES ? `the ${PSS_IMAGES} PSS images were not built: ${ctx.images.pssUnavailable ?? 'unknown reason'}` : undefined;
    if (!why && mode.kind === 'store') why = ctx.tocfs.missing('store');
    if (!why && mode.env) why = await sessionMissing(ctx);
    if (why) {
      out[mode.id] = unavailable(why);
      ctx.log(`pss ${mode.id}: unavailable (${why})`);
      continue;
    }
    ctx.log(`pss ${mode.id}: ${PSS_IMAGES} containers of ${PSS_IMAGES} images`);
    try {
      out[mode.id] = measured(await repeat(ctx.opts.reps, () => pssOnce(ctx, profile, mode, images)));
    } catch (e) {
      out[mode.id] = failed(e);
      ctx.log(`  failed: ${(out[mode.id] as { reason: string }).reason}`);
    }
  }
  return out;
}
