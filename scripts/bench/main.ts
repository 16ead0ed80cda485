/**
 * The tocfs benchmark: how much sooner a container starts with lazy pulling, and what reads
 * cost, on this machine, measured in one run. Started by scripts/bench/run.sh (root, network
 * namespaces); see the README's "Benchmarks" section.
 *
 *   node --import tsx scripts/bench/main.ts [--quick] [--reps N] [--profiles wan100,wan1g,loopback]
 *        [--only ready,firstbyte,dedupe,cold,local,toc,many,pss] [--work DIR] [--out DIR] [--note TEXT] [--build-only] [--cpu-prof]
 *        [--modes gzip_full,…,tocfs_mount_estargz] [--stargz-store PATH]
 *        (group pss: --modes picks among overlay,tocfs_store,tocfs_store_session,podman_partial_hardlinks when it names any;
 *        group local measures both FUSE sessions, fuse-native and TOCFS_DAEMON_FUSE_SESSION=tocfs: figures `…_session`)
 *
 * Env: TOCFS_BENCH_REV (a commit to measure, or `worktree` for the uncommitted working tree),
 *      TOCFS_BENCH_STARGZ_STORE (the peer stargz-store binary, as --stargz-store).
 */
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freshDir, repoOf, type BenchImages, type Ctx, type Options } from './lib/context.js';
import { filesOpenedBy, lazyFloor, realPathsIn } from './lib/frames.js';
import {
  buildFormats, changeEveryNth, plainLayout, READY_COMMAND, stageRuntime, stageSynthetic,
  type BuiltImage, type Converter, type LayerFormat,
} from './lib/images.js';
import { Link, PROFILES } from './lib/link.js';
import { stargzStoreMissing, stargzStoreVersion } from './lib/stargz.js';
import { containerReady, dedupe, firstByte, publishIndex, READY_MODES, wantsPublishedIndex } from './lib/measure-ready.js';
import { coldRead, localReads } from './lib/measure-read.js';
import { manyInStore, manyMounted, tocScaling } from './lib/measure-toc.js';
import { buildPssImages, PSS_SCRIPT, pssShared } from './lib/measure-pss.js';
import { run, unmountUnder } from './lib/proc.js';
import { chart, derive, markdown, type Results } from './lib/report.js';
import { Tocfs } from './lib/tocfs.js';

const HERE = new URL('.', import.meta.url).pathname;
const GROUPS = ['ready', 'firstbyte', 'dedupe', 'cold', 'local', 'toc', 'many', 'pss'];

function parseOptions(): Options & { note: string; buildOnly: boolean; cpuProf: boolean } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      reps: { type: 'string' },
      profiles: { type: 'string' },
      only: { type: 'string' },
      work: { type: 'string', default: '/var/tmp/tocfs-bench' },
      out: { type: 'string', default: join(HERE, 'results') },
      note: { type: 'string', default: '' },
      'build-only': { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      modes: { type: 'string' },
      'stargz-store': { type: 'string' },
    },
  });
  const quick = values.quick!;
  const names = (values.profiles ?? (quick ? 'wan100,loopback' : 'wan100,loopback,wan1g')).split(',');
  for (const n of names) if (!PROFILES[n]) throw new Error(`unknown profile ${n} (${Object.keys(PROFILES).join(', ')})`);
  const only = new Set((values.only ?? GROUPS.join(',')).split(','));
  for (const g of only) if (!GROUPS.includes(g)) throw new Error(`unknown group ${g} (${GROUPS.join(', ')})`);
  return {
    quick,
    reps: Number(values.reps ?? (quick ? 2 : 5)),
    profiles: names.map((n) => PROFILES[n]!),
    only,
    work: values.work!,
    out: values.out!,
    note: values.note!,
    buildOnly: values['build-only']!,
    cpuProf: values['cpu-prof']!,
    ...(values.modes ? { modes: new Set(values.modes.split(',')) } : {}),
    stargzStore: values['stargz-store'] ?? (process.env.TOCFS_BENCH_STARGZ_STORE || undefined),
  };
}

const stampOf = (started: string, quick: boolean): string => started.replace(/[:]/g, '').replace(/\..*/, '') + (quick ? '-quick' : '');

const log = (msg: string): void => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** Bumped when the way images are made changes (every image is then rebuilt). */
const IMAGE_RECIPE = 'recipe 2: staged mtimes kept';

/** Built images survive between runs (keyed by name and definition); missing formats are retried. */
class ImageCache {
  private entries: Record<string, BuiltImage & { definition: string }> = {};
  constructor(private readonly file: string) {}
  async load(): Promise<void> {
    this.entries = JSON.parse(await readFile(this.file, 'utf8').catch(() => '{}'));
  }
  get(name: string, definition: string): BuiltImage | undefined {
    const e = this.entries[name];
    return e && e.definition === definition ? e : undefined;
  }
  async put(img: BuiltImage, definition: string): Promise<void> {
    this.entries[img.name] = { ...img, definition };
    await writeFile(this.file, JSON.stringify(this.entries, null, 1));
  }
}

async function buildImages(opts: Options, tocfs: Tocfs): Promise<BenchImages> {
  const root = join(opts.work, 'images');
  await mkdir(root, { recursive: true });
  const cache = new ImageCache(join(root, 'built.json'));
  await cache.load();
  const convert: Converter = tocfs.has('convert') ? (src, dst, f, prioritize) => tocfs.convert(src, dst, f, prioritize) : undefined;
  const noConvert = tocfs.missing('convert') ?? '';

  const image = async (name: string, definition: string, stage: (dir: string) => Promise<void>, formats?: LayerFormat[]): Promise<BuiltImage> => {
    const stageDir = join(root, 'stage', name);
    definition = `${definition}; ${IMAGE_RECIPE}`;
    const previous = cache.get(name, definition);
    if (previous && formats?.every((f) => previous.layouts[f]) !== false && (formats || Object.keys(previous.unavailable).length === 0)) return previous;
    log(`building image ${name}`);
    const plain = join(root, `${name}-plain`);
    let base = previous && { tarBytes: previous.tarBytes, files: previous.files };
    if (!base) {
      await stage(stageDir);
      base = await plainLayout(stageDir, plain, join(root, 'tar', `${name}.tar`));
    }
    const img = await buildFormats(name, plain, join(root, 'oci'), base, convert, noConvert, formats, previous);
    await cache.put(img, definition);
    for (const [f, why] of Object.entries(img.unavailable)) log(`  ${name} ${f}: unavailable (${why})`);
    return img;
  };

  const pairA = await image('py', 'python runtime v1', (d) => stageRuntime(d, false));
  const pairBStage = join(root, 'stage', 'py2');
  let changed = 0;
  const pairB = await image('py2', 'python runtime, 1 file in 20 changed (.py only)', async (d) => {
    await rm(d, { recursive: true, force: true });
    await cp(join(root, 'stage', 'py'), d, { recursive: true, verbatimSymlinks: true });
    changed = await changeEveryNth(d, 20);
  });
  let runtime = opts.quick ? pairA : await image('rt', 'python runtime + packages + JDK', (d) => stageRuntime(d, true));
  const runtimeStage = join(root, 'stage', runtime.name);
  // The app's v2 for start-up profiles (matched by repository): the runtime with 1 file in 20 changed, as the pair's.
  let changedV2 = 0;
  const runtimeV2 = opts.quick
    ? pairB
    : await image('rt2', 'python runtime + packages + JDK, 1 file in 20 changed (.py only), other mtimes kept', async (d) => {
        await rm(d, { recursive: true, force: true });
        // cp -a: mtimes kept, as a rebuild keeps its unchanged files' (fs.cp would make every .pyc older than
        // its .py, and Python would then read and recompile every module's source at start).
        await run(['cp', '-a', runtimeStage, d]);
        changedV2 = await changeEveryNth(d, 20);
      }, ['zstd:chunked', 'estargz']);
  if (!opts.quick && !changedV2) {
    // Built by an earlier run: count the changed files in its staged tree.
    const g = await run(['sh', '-c', `grep -rlF --include='*.py' '# changed in v2' '${join(root, 'stage', 'rt2')}' | wc -l`], { check: false });
    changedV2 = Number(g.stdout.trim()) || 0;
  }
  const startupFiles = await realPathsIn(runtimeStage, await filesOpenedBy(runtimeStage, READY_COMMAND, join(opts.work, 'ready.strace')));
  if (!runtime.layouts['estargz-opt'] && convert) {
    // eStargz "optimized" the way ctr-remote does: the files the command opens go first and are prefetched at mount.
    log(`building image ${runtime.name} estargz-opt (${startupFiles.length} prioritized files)`);
    const definition = opts.quick ? 'python runtime v1' : 'python runtime + packages + JDK';
    const base = { tarBytes: runtime.tarBytes, files: runtime.files };
    const opt = await buildFormats(runtime.name, join(root, `${runtime.name}-plain`), join(root, 'oci'), base, convert, noConvert, ['estargz-opt'], undefined, startupFiles);
    runtime = { ...runtime, layouts: { ...runtime.layouts, ...opt.layouts }, layerBytes: { ...runtime.layerBytes, ...opt.layerBytes }, unavailable: { ...runtime.unavailable, ...opt.unavailable } };
    // The key image() uses, recipe included (without it every run rebuilt the runtime image).
    await cache.put(runtime, `${definition}; ${IMAGE_RECIPE}`);
  }
  const counts = opts.quick ? [1000, 10000] : [1000, 10000, 100000];
  const toc: Record<string, BuiltImage> = {};
  for (const n of counts) toc[String(n)] = await image(`toc${n}`, `synthetic ${n}`, (d) => stageSynthetic(d, n, 'toc'), ['zstd:chunked']);
  const manyEntries = opts.quick ? 1000 : 10000;
  const many: BuiltImage[] = [];
  for (let i = 0; i < 10; i++) many.push(await image(`many${i}-${manyEntries}`, `synthetic ${manyEntries} salt ${i}`, (d) => stageSynthetic(d, manyEntries, `image ${i}`), ['zstd:chunked']));
  // Only when measured: ten one-layer images of the pair's Python runtime, each with its own /etc/variant.
  const pss = opts.only.has('pss') ? await buildPssImages(root, join(root, 'stage', 'py'), tocfs, log) : undefined;
  const largest = await run(['sh', '-c', `cd '${runtimeStage}' && find . -type f -printf '%s %P\\n' | sort -n | tail -1`]);
  return {
    ...(pss ? { pss: pss.images, ...(pss.unavailable ? { pssUnavailable: pss.unavailable } : {}) } : {}),
    runtime, runtimeStage, pairA, pairB, pairBStage,
    pairChangedFiles: changed || (pairB as BuiltImage & { changed?: number }).changed || 0,
    runtimeV2, runtimeV2ChangedFiles: opts.quick ? changed : changedV2,
    toc, many, startupFiles,
    bigFile: largest.stdout.trim().split(' ').slice(1).join(' '),
    smallFile: 'usr/lib/python3.11/os.py',
  };
}

async function loadAll(link: Link, images: BenchImages): Promise<void> {
  const all = [images.runtime, images.pairA, images.pairB, images.runtimeV2, ...Object.values(images.toc), ...images.many, ...(images.pss ?? [])];
  for (const img of new Set(all)) {
    for (const [f, dir] of Object.entries(img.layouts)) await link.load(dir!, repoOf(img, f as LayerFormat));
  }
  // v2 beside v1 in the runtime's repositories; no profile published by an earlier run.
  for (const f of Object.keys(images.runtimeV2.layouts) as LayerFormat[]) {
    if (images.runtime.layouts[f]) await link.tagInto(repoOf(images.runtimeV2, f), repoOf(images.runtime, f), 'v2');
  }
  for (const f of Object.keys(images.runtime.layouts) as LayerFormat[]) await link.removeReferrersTags(repoOf(images.runtime, f));
}

async function machineInfo(note: string): Promise<Record<string, unknown>> {
  const v = async (argv: string[]) => (await run(argv, { check: false })).stdout.trim().split('\n')[0];
  return {
    cpus: cpus().length,
    kernel: release(),
    node: process.version,
    podman: await v(['podman', '--version']),
    skopeo: await v(['skopeo', '--version']),
    loadavg_start: loadavg().map((x) => Math.round(x * 100) / 100),
    note,
  };
}

/** Reads once fetched, TOC scaling and many images: all against the loopback registry. */
async function loopbackGroups(ctx: Ctx, results: Results): Promise<void> {
  const loop = PROFILES.loopback!;
  const only = ctx.opts.only;
  if (only.has('local')) results.local_reads = await localReads(ctx, loop);
  if (only.has('toc')) results.toc_scaling = await tocScaling(ctx, loop);
  if (only.has('many')) {
    results.many_mounted = await manyMounted(ctx, loop);
    results.many_in_store = await manyInStore(ctx, loop);
  }
  if (only.has('pss')) results.pss = await pssShared(ctx, loop);
}

async function main(): Promise<void> {
  const opts = parseOptions();
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, FUSE, podman)');
  const started = new Date().toISOString();
  const scratchRoot = join(opts.work, 'run');
  await unmountUnder(scratchRoot);
  await rm(scratchRoot, { recursive: true, force: true });
  await mkdir(opts.out, { recursive: true });

  log('building tocfs into a private directory');
  const tocfs = await Tocfs.build(join(opts.work, 'tocfs'));
  log(`tocfs: ${tocfs.buildNote}; commands: ${[...tocfs.commands].join(' ')}`);
  const images = await buildImages(opts, tocfs);
  log(`runtime image ${images.runtime.name}: ${(images.runtime.tarBytes / 1e6).toFixed(0)} MB, ${images.runtime.files} files; big file ${images.bigFile}`);
  if (opts.buildOnly) return;

  if (opts.cpuProf) {
    tocfs.profileDir = join(opts.out, `${stampOf(started, opts.quick)}-cpuprof`);
    await mkdir(tocfs.profileDir, { recursive: true });
  }
  opts.stargzStoreMissing = await stargzStoreMissing(opts.stargzStore);
  if (opts.stargzStoreMissing) log(`stargz-store modes unavailable: ${opts.stargzStoreMissing}`);
  const link = await Link.start(opts.work);
  const rev = process.env.TOCFS_BENCH_REV && process.env.TOCFS_BENCH_REV !== 'worktree' ? process.env.TOCFS_BENCH_REV : 'HEAD';
  const commit = (await run(['git', 'rev-parse', '--short', rev], { cwd: HERE, check: false })).stdout.trim();
  const results: Results = {
    schema: 'tocfs-bench/1',
    started,
    quick: opts.quick,
    reps: opts.reps,
    machine: await machineInfo(opts.note),
    tocfs: {
      commit,
      built_from: process.env.TOCFS_BENCH_REV === 'worktree'
        ? `the working tree on top of ${commit}, uncommitted work in progress included (TOCFS_BENCH_REV=worktree)`
        : `${process.env.TOCFS_BENCH_REV || 'HEAD'} (committed sources only)`,
      build: tocfs.buildNote,
      commands: [...tocfs.commands],
    },
    peers: { stargz_store: opts.stargzStoreMissing ? { status: 'unavailable', reason: opts.stargzStoreMissing } : { binary: opts.stargzStore!, version: await stargzStoreVersion(opts.stargzStore!) } },
    images: {
      runtime: {
        name: images.runtime.name,
        tar_MB: Math.round(images.runtime.tarBytes / 1e5) / 10,
        files: images.runtime.files,
        layer_MB: Object.fromEntries(Object.entries(images.runtime.layerBytes).map(([f, b]) => [f, Math.round(b! / 1e5) / 10])),
        unavailable: images.runtime.unavailable,
        big_file: images.bigFile,
        small_file: images.smallFile,
      },
      pair: { files: images.pairA.files, changed_files: images.pairChangedFiles, tar_MB: Math.round(images.pairA.tarBytes / 1e5) / 10 },
      runtime_v2: { name: images.runtimeV2.name, changed_files: images.runtimeV2ChangedFiles, tag: 'v2 in the runtime image\'s repositories', unavailable: images.runtimeV2.unavailable },
      toc: Object.fromEntries(Object.entries(images.toc).map(([n, i]) => [n, { files: i.files, layer_MB: Math.round(i.layerBytes['zstd:chunked']! / 1e4) / 100 }])),
      many: { images: images.many.length, files_each: images.many[0]?.files },
      ...(opts.only.has('pss') ? {
        pss: {
          images: images.pss?.length ?? 0,
          ...(images.pssUnavailable ? { unavailable: images.pssUnavailable } : {}),
          made_from: 'the pair\'s Python runtime tree (image py), squashed into one layer with /etc/variant = i: no layer shared, every other file identical',
          files_each: images.pss?.[0]?.files,
          tar_MB: images.pss?.[0] ? Math.round(images.pss[0].tarBytes / 1e5) / 10 : undefined,
          layer_MB: images.pss?.map((i) => Math.round(i.layerBytes['zstd:chunked']! / 1e5) / 10),
          written_by: images.pss?.[0]?.writtenBy?.['zstd:chunked'],
          command: ['/usr/bin/python3', '-c', PSS_SCRIPT],
        },
      } : {}),
    },
    ready_command: READY_COMMAND,
    mode_labels: Object.fromEntries(READY_MODES.map((m) => [m.id, m.label])),
    profiles: {},
    ratios: {},
    targets: [],
  };
  const ctx: Ctx = { opts, link, tocfs, images, log, scratch: (name) => freshDir(scratchRoot, name) };
  const stamp = stampOf(started, opts.quick);
  // A full run (or any run written outside the committed results folder) also becomes latest.*.
  const publish = !opts.quick || opts.out !== join(HERE, 'results');
  const save = async (final = false): Promise<void> => {
    results.finished = new Date().toISOString();
    results.machine.loadavg_end = loadavg().map((x) => Math.round(x * 100) / 100);
    derive(results);
    const names = final && publish ? [stamp, 'latest'] : [stamp];
    for (const name of names) {
      await writeFile(join(opts.out, `${name}.json`), JSON.stringify(results, null, 1) + '\n');
      await writeFile(join(opts.out, `${name}-ready.svg`), chart(results));
      await writeFile(join(opts.out, `${name}.md`), markdown(results, `${name}-ready.svg`));
    }
  };
  // Interrupted (Ctrl-C, or run.sh stopped): keep what was measured; run.sh's trap tears down.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`${sig}: saving what was measured`);
      results.interrupted = true;
      void save(true).finally(() => process.exit(130));
    });
  }
  try {
    await loadAll(link, images);
    try {
      const floor = await lazyFloor(images.runtime.layouts['zstd:chunked']!, images.startupFiles);
      results.lazy_floor = { ...floor };
    } catch (e) {
      results.lazy_floor = { status: 'failed', reason: (e as Error).message.split('\n')[0]! };
    }
    try {
      if (images.runtime.layouts.estargz) results.lazy_floor_estargz = { ...(await lazyFloor(images.runtime.layouts.estargz, images.startupFiles)) };
    } catch (e) {
      results.lazy_floor_estargz = { status: 'failed', reason: (e as Error).message.split('\n')[0]! };
    }
    for (const p of opts.profiles) {
      const pr = (results.profiles[p.name] = { label: p.label, rtt_ms: p.rttMs, ...(p.bytesPerSec ? { bytes_per_s: p.bytesPerSec } : {}) });
      if (opts.only.has('ready')) {
        // The publisher's one-time `tocfs index --push`, before the modes that read through its index.
        const index_publish = wantsPublishedIndex(opts) ? await publishIndex(ctx, p) : undefined;
        Object.assign(pr, { ...(index_publish ? { index_publish } : {}), container_ready: await containerReady(ctx, p, index_publish) });
      }
      await save();
      if (opts.only.has('firstbyte')) Object.assign(pr, { first_byte: await firstByte(ctx, p) });
      if (opts.only.has('dedupe') && p.name === opts.profiles[0]!.name) Object.assign(pr, { dedupe: await dedupe(ctx, p) });
      if (opts.only.has('cold')) Object.assign(pr, { cold_read: await coldRead(ctx, p) });
      await save();
      // The loopback-only groups run with the loopback profile (or after the last profile without it).
      if (p.name === 'loopback' || (p === opts.profiles.at(-1) && !opts.profiles.some((x) => x.name === 'loopback'))) {
        await loopbackGroups(ctx, results);
        await save();
      }
    }
    if (!opts.profiles.length) await loopbackGroups(ctx, results);
  } finally {
    await save(true);
    await link.stop();
    await unmountUnder(scratchRoot);
  }
  log(`results: ${join(opts.out, stamp)}.{json,md} and ${stamp}-ready.svg`);
  console.log(await readFile(join(opts.out, `${stamp}.md`), 'utf8'));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
