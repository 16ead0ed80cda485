/** The run's results as JSON, a Markdown report and an SVG chart of container-ready times. */
import type { Outcome } from './context.js';
import type { Summary } from './stats.js';
import { ratio } from './stats.js';
import { PSS_IMAGES, PSS_MODES } from './measure-pss.js';
import { SESSION_FIGURES } from './measure-read.js';

type Cell = Outcome;
type Table = Record<string, Cell>;

export interface ProfileResults {
  label: string;
  /** Link rate in bytes/s (none: loopback) and round-trip time. */
  bytes_per_s?: number;
  rtt_ms?: number;
  container_ready?: Table;
  /** `tocfs index --push` of the gzip image, once before the published-index modes (not part of their starts). */
  index_publish?: Cell;
  first_byte?: Table;
  dedupe?: Table;
  cold_read?: Cell;
}

export interface Target {
  id: string;
  goal: string;
  value: number | null;
  met: boolean | null;
  note?: string;
}

export interface Results {
  schema: 'tocfs-bench/1';
  started: string;
  finished?: string;
  /** The run was stopped before every measurement ran. */
  interrupted?: boolean;
  quick: boolean;
  reps: number;
  machine: Record<string, unknown>;
  tocfs: Record<string, unknown>;
  images: Record<string, unknown>;
  ready_command: string[];
  /** What each container-ready mode id means. */
  mode_labels: Record<string, string>;
  profiles: Record<string, ProfileResults>;
  local_reads?: Cell;
  toc_scaling?: Table;
  many_mounted?: Cell;
  many_in_store?: Cell;
  /** PSS of ten containers of ten images sharing their files but no layers, per mode (lib/measure-pss.ts). */
  pss?: Table;
  lazy_floor?: Record<string, number> | { status: string; reason: string };
  /** The same floor from the eStargz layer's TOC. */
  lazy_floor_estargz?: Record<string, number> | { status: string; reason: string };
  peers?: Record<string, unknown>;
  ratios: Record<string, number | null>;
  targets: Target[];
}

export const LAZY_MODES = [
  'tocfs_store_zstd_chunked', 'tocfs_store_estargz', 'tocfs_store_estargz_opt',
  'tocfs_mount_zstd_chunked', 'tocfs_mount_estargz', 'tocfs_mount_estargz_opt',
];

/** The tocfs modes with start-up profile steps, and the steps' id suffixes (lib/measure-ready.ts). */
export const PROFILE_BASES = ['tocfs_store_zstd_chunked', 'tocfs_store_estargz', 'tocfs_mount_zstd_chunked', 'tocfs_mount_estargz'];
export const PROFILE_STEPS = ['_norecord', '_profile_local', '_profile', '_profile_v2'];
export const PEER_MODES = ['stargz_store_estargz', 'stargz_store_estargz_bgfetch'];
/** Plain gzip read through a published seekable index (issue 16; lib/measure-ready.ts). */
export const INDEX_MODES = ['tocfs_store_gzip_index', 'tocfs_store_gzip_index_check_default', 'tocfs_mount_gzip_index', 'tocfs_mount_gzip_index_check_default'];
const PODMAN_MODES = ['gzip_full', 'zstd_full', 'zstd_chunked_partial'];

function floorBytes(f: Results['lazy_floor']): number | null {
  return f && 'frameBytes' in f ? f.tocBytes! + f.frameBytes! : null;
}

/** TOC + frames of the files opened, from the mode's own format. */
function floorOf(r: Results, mode: string): number | null {
  return floorBytes(mode.includes('estargz') ? r.lazy_floor_estargz : r.lazy_floor);
}

/**
 * The physical limit of a lazy start on `link`: the bytes the container needs at the link's
 * rate, plus starting the container from local storage (podman run of the fully pulled gzip
 * image, measured in the same run).
 */
function physicalLimitMs(r: Results, p: ProfileResults, mode: string): number | null {
  const floor = floorOf(r, mode);
  const run = med(p.container_ready?.gzip_full, 'run_ms');
  if (floor === null || run === null) return null;
  return (p.bytes_per_s ? (floor / p.bytes_per_s) * 1000 : 0) + run;
}

/** Per-link ratios of the profile and peer modes; `sfx` is '' for 100 Mbit/s, `_<profile>` otherwise. */
function profileRatios(r: Results, p: ProfileResults, sfx: string): void {
  const R = r.ratios;
  const ready = p.container_ready;
  const m = (id: string, key = 'ready_ms'): number | null => med(ready?.[id], key);
  const gz = m('gzip_full');
  for (const id of Object.keys(ready ?? {})) {
    if (PODMAN_MODES.includes(id) || (sfx === '' && LAZY_MODES.includes(id))) continue;
    R[`container_ready_speedup_vs_gzip_${id}${sfx}`] = ratio(gz, m(id));
  }
  for (const b of PROFILE_BASES) {
    if (!ready?.[b]) continue;
    R[`profile_recording_overhead_${b}${sfx}`] = ratio(m(b), m(`${b}_norecord`));
    for (const step of ['_profile', '_profile_local', '_profile_v2']) {
      R[`bytes_vs_toc_plus_frames_${b}${step}${sfx}`] = ratio(m(`${b}${step}`, 'registry_bytes'), floorOf(r, b));
    }
    R[`bytes_vs_toc_plus_frames_${b}${sfx}`] ??= ratio(m(b, 'registry_bytes'), floorOf(r, b));
    R[`ready_vs_physical_limit_${b}_profile${sfx}`] = ratio(m(`${b}_profile`), physicalLimitMs(r, p, b));
  }
  const peers = PEER_MODES.map((id) => m(id)).filter((v): v is number => v !== null);
  R[`tocfs_store_estargz_vs_stargz_store${sfx}`] = ratio(m('tocfs_store_estargz'), peers.length ? Math.min(...peers) : null);
  R[`tocfs_store_estargz_vs_stargz_store_bgfetch_off${sfx}`] = ratio(m('tocfs_store_estargz'), m('stargz_store_estargz'));
  R[`tocfs_store_estargz_vs_stargz_store_bgfetch_on${sfx}`] = ratio(m('tocfs_store_estargz'), m('stargz_store_estargz_bgfetch'));
  // Resident memory of the store process once the container ran, against stargz-store serving the same image.
  R[`store_rss_vs_stargz_store${sfx}`] = ratio(m('tocfs_store_estargz', 'store_rss_MB'), m('stargz_store_estargz', 'store_rss_MB'));
  R[`store_rss_MB_tocfs_store_estargz${sfx}`] = m('tocfs_store_estargz', 'store_rss_MB');
  R[`store_rss_MB_stargz_store_estargz${sfx}`] = m('stargz_store_estargz', 'store_rss_MB');
}

function med(c: Cell | undefined, key: string): number | null {
  if (!c || c.status !== 'ok') return null;
  return c.figures[key]?.median ?? null;
}

/** The fastest lazy mode (median container-ready time). */
export function headlineLazy(table: Table | undefined): string | undefined {
  const ok = LAZY_MODES.filter((m) => med(table?.[m], 'ready_ms') !== null);
  return ok.sort((a, b) => med(table![a], 'ready_ms')! - med(table![b], 'ready_ms')!)[0];
}

/** Named ratios and where each target stands. */
export function derive(r: Results): void {
  const wan = r.profiles.wan100 ?? Object.values(r.profiles)[0];
  const ready = wan?.container_ready;
  const lazy = headlineLazy(ready);
  const lazyReady = lazy ? med(ready![lazy], 'ready_ms') : null;
  const R = r.ratios;
  R.container_ready_speedup_vs_gzip = ratio(med(ready?.gzip_full, 'ready_ms'), lazyReady);
  R.container_ready_speedup_vs_zstd = ratio(med(ready?.zstd_full, 'ready_ms'), lazyReady);
  R.container_ready_speedup_vs_podman_partial = ratio(med(ready?.zstd_chunked_partial, 'ready_ms'), lazyReady);
  R.podman_partial_speedup_vs_gzip = ratio(med(ready?.gzip_full, 'ready_ms'), med(ready?.zstd_chunked_partial, 'ready_ms'));
  for (const m of LAZY_MODES) R[`container_ready_speedup_vs_gzip_${m}`] = ratio(med(ready?.gzip_full, 'ready_ms'), med(ready?.[m], 'ready_ms'));
  R.bytes_lazy_vs_gzip_pull = ratio(lazy ? med(ready![lazy], 'registry_bytes') : null, med(ready?.gzip_full, 'registry_bytes'));
  // The floor is computed from the zstd:chunked TOC: compare the zstd:chunked lazy mode with it.
  const floor = r.lazy_floor && 'frameBytes' in r.lazy_floor ? r.lazy_floor.tocBytes + r.lazy_floor.frameBytes : null;
  const zc = ['tocfs_store_zstd_chunked', 'tocfs_mount_zstd_chunked'].find((m) => med(ready?.[m], 'registry_bytes') !== null);
  R.bytes_lazy_vs_toc_plus_frames = ratio(zc ? med(ready![zc], 'registry_bytes') : null, floor);
  const fb = wan?.first_byte;
  R.first_byte_speedup_vs_gzip_pull = ratio(med(fb?.podman_pull_gzip, 'first_byte_ms'), med(fb?.tocfs_mount_zstd_chunked, 'first_byte_ms'));
  const dd = wan?.dedupe;
  R.dedupe_second_image_bytes_tocfs_vs_gzip_pull = ratio(med(dd?.tocfs_mount_read_all_zstd_chunked, 'second_registry_bytes'), med(dd?.podman_pull_gzip, 'second_registry_bytes'));
  R.dedupe_second_image_bytes_podman_partial_vs_gzip_pull = ratio(med(dd?.podman_partial_zstd_chunked, 'second_registry_bytes'), med(dd?.podman_pull_gzip, 'second_registry_bytes'));
  R.cold_read_vs_link_wan100 = round(med(r.profiles.wan100?.cold_read, 'cold_vs_curl_zstd'));
  R.cold_read_vs_link_wan1g = round(med(r.profiles.wan1g?.cold_read, 'cold_vs_curl_zstd'));
  R.cold_read_loopback_MBps = round(med(r.profiles.loopback?.cold_read, 'cold_MBps'));
  R.warm_vs_memfs = round(med(r.local_reads, 'warm_vs_memfs'));
  R.kernel_cached_vs_page_cache = round(med(r.local_reads, 'kernel_cached_vs_page_cache'));
  R.stat_vs_local = round(med(r.local_reads, 'stat_vs_local'));
  R.walk_vs_local = round(med(r.local_reads, 'walk_vs_local'));
  // tocfs's own FUSE session (TOCFS_DAEMON_FUSE_SESSION=tocfs) beside fuse-native, from the same repetitions.
  R.warm_vs_page_cache = round(med(r.local_reads, 'warm_vs_page_cache'));
  R.warm_vs_local_disk = round(med(r.local_reads, 'warm_vs_local_disk'));
  for (const k of ['warm_vs_memfs', 'warm_vs_local_disk', 'warm_vs_page_cache', 'kernel_cached_vs_page_cache', 'stat_vs_local', 'walk_vs_local']) {
    R[`${k}_session`] = round(med(r.local_reads, `${k}_session`));
  }
  // session / fuse-native of each figure (medians): above 1 the session is faster, except for the _ms figures.
  for (const k of SESSION_FIGURES) R[`${k}_session_vs_fuse_native`] = ratio(med(r.local_reads, `${k}_session`), med(r.local_reads, k));
  const biggest = r.toc_scaling ? Object.keys(r.toc_scaling).sort((a, b) => Number(a) - Number(b)).pop() : undefined;
  R.mount_ms_largest_toc = biggest ? round(med(r.toc_scaling![biggest], 'mount_ms')) : null;
  R.mount_ms_largest_toc_cached = biggest ? round(med(r.toc_scaling![biggest], 'mount_cached_toc_ms')) : null;
  R.rss_MB_many_mounted = round(med(r.many_mounted, 'rss_total_MB'));
  R.rss_MB_many_in_one_store = round(med(r.many_in_store, 'rss_MB'));
  // Page cache shared between containers: sum of the ten main processes' PSS against the overlay pull's.
  const pssOverlay = med(r.pss?.overlay, 'pss_kB');
  R.pss_vs_overlay = ratio(med(r.pss?.tocfs_store_session, 'pss_kB'), pssOverlay);
  R.pss_vs_overlay_tocfs_store = ratio(med(r.pss?.tocfs_store, 'pss_kB'), pssOverlay);
  if (r.pss) {
    // The best any file sharing can do with this command: the overlay run's anonymous PSS plus a tenth of its file PSS.
    const anonOverlay = med(r.pss.overlay, 'pss_anon_kB');
    const fileOverlayAll = med(r.pss.overlay, 'pss_file_kB');
    R.pss_vs_overlay_if_files_shared = anonOverlay === null || fileOverlayAll === null ? null : ratio(anonOverlay + fileOverlayAll / PSS_IMAGES, pssOverlay);
    R.pss_vs_overlay_podman_partial_hardlinks = ratio(med(r.pss.podman_partial_hardlinks, 'pss_kB'), pssOverlay);
    // The seed article's workload: one small process per container (sleep), mapping its binary and libc.
    const sleepOverlay = med(r.pss.overlay, 'sleep_pss_kB');
    for (const id of ['tocfs_store_session', 'tocfs_store', 'podman_partial_hardlinks']) R[`pss_sleep_vs_overlay_${id}`] = ratio(med(r.pss[id], 'sleep_pss_kB'), sleepOverlay);
    R.pss_sleep_vs_overlay = R.pss_sleep_vs_overlay_tocfs_store_session ?? null;
    const fileOverlay = med(r.pss.overlay, 'pss_file_kB');
    for (const id of ['tocfs_store_session', 'tocfs_store', 'podman_partial_hardlinks']) R[`pss_file_vs_overlay_${id}`] = ratio(med(r.pss[id], 'pss_file_kB'), fileOverlay);
    for (const id of Object.keys(r.pss)) {
      const kB = med(r.pss[id], 'pss_kB');
      R[`pss_sum_MiB_${id}`] = kB === null ? null : round(kB / 1024);
    }
  }

  for (const [name, p] of Object.entries(r.profiles)) profileRatios(r, p, name === 'wan100' ? '' : `_${name}`);

  const t = (id: string, goal: string, value: number | null, ok: (v: number) => boolean, note?: string): Target => ({
    id, goal, value, met: value === null ? null : ok(value), ...(note ? { note } : {}),
  });
  r.targets = [
    t('lazy_ready_10x_gzip', 'lazy container ready ≥ 10× faster than a full gzip pull (100 Mbit/s, 20 ms)', R.container_ready_speedup_vs_gzip, (v) => v >= 10, lazy ? `lazy mode: ${lazy}` : 'no lazy mode measured'),
    t('lazy_bytes_1_2x_floor', 'bytes ≤ 1.2 × (TOC + frames of the files opened)', R.bytes_lazy_vs_toc_plus_frames, (v) => v <= 1.2, zc ? `${zc}, 100 Mbit/s` : undefined),
    t('profile_fresh_node_10x_gzip', 'zstd:chunked, fresh node with a published profile (tocfs store): ready ≥ 10× faster than a full gzip pull (100 Mbit/s, 20 ms)', R.container_ready_speedup_vs_gzip_tocfs_store_zstd_chunked_profile ?? null, (v) => v >= 10),
    t('profile_fresh_node_physical_limit', 'same, ready ≤ 1.3 × the physical limit (bytes needed at link rate + podman run from local storage)', R.ready_vs_physical_limit_tocfs_store_zstd_chunked_profile ?? null, (v) => v <= 1.3),
    t('profile_fresh_node_5x_gzip_wan1g', 'same at 1 Gbit/s, 2 ms: ≥ 5× faster than a full gzip pull', R.container_ready_speedup_vs_gzip_tocfs_store_zstd_chunked_profile_wan1g ?? null, (v) => v >= 5),
    t('first_run_4x_gzip', 'zstd:chunked, first run with no profile (tocfs store, recording): ≥ 4× faster than a full gzip pull (100 Mbit/s)', R.container_ready_speedup_vs_gzip_tocfs_store_zstd_chunked ?? null, (v) => v >= 4),
    t('recording_no_slowdown', 'recording a profile does not slow the first run: ready(recording) / ready(profiles off) ≤ 1.05 (tocfs store, zstd:chunked, 100 Mbit/s)', R.profile_recording_overhead_tocfs_store_zstd_chunked ?? null, (v) => v <= 1.05),
    t('gzip_index_mount_5x_gzip', 'plain gzip with a published index (issue 16), tocfs mount: ready ≥ 5× faster than a full gzip pull (100 Mbit/s, 20 ms; whole-layer check after the start)', R.container_ready_speedup_vs_gzip_tocfs_mount_gzip_index ?? null, (v) => v >= 5),
    t('gzip_index_store_5x_gzip', 'same through tocfs store (Podman 4.3.1; Podman 5 asks the store only for layers with a TOC digest)', R.container_ready_speedup_vs_gzip_tocfs_store_gzip_index ?? null, (v) => v >= 5),
    t('estargz_vs_stargz_store_wan100', 'eStargz, no profile: tocfs store ready ≤ 0.8 × stargz-store (the faster of background fetch off/on), 100 Mbit/s', R.tocfs_store_estargz_vs_stargz_store ?? null, (v) => v <= 0.8),
    t('estargz_vs_stargz_store_loopback', 'same over loopback', R.tocfs_store_estargz_vs_stargz_store_loopback ?? null, (v) => v <= 0.8),
    t('profile_bytes_1_3x_read', 'bytes fetched with a profile (fresh node) ≤ 1.3 × (TOC + frames of the files the container opens), zstd:chunked, 100 Mbit/s', R.bytes_vs_toc_plus_frames_tocfs_store_zstd_chunked_profile ?? null, (v) => v <= 1.3),
    t('cold_90pct_link', 'cold sequential ≥ 90 % of curl | zstd -d over the same link (100 Mbit/s)', R.cold_read_vs_link_wan100, (v) => v >= 0.9),
    t('cold_90pct_link_wan1g', 'cold sequential ≥ 90 % of curl | zstd -d over the same link (1 Gbit/s, 2 ms)', R.cold_read_vs_link_wan1g, (v) => v >= 0.9),
    t('cold_150MBps_loopback', 'cold sequential ≥ 150 MB/s from a loopback registry', R.cold_read_loopback_MBps, (v) => v >= 150),
    t('warm_90pct_memfs', 'warm read ≥ 90 % of the bare in-memory fuse-native ceiling', R.warm_vs_memfs, (v) => v >= 0.9),
    t('kernel_90pct_page_cache', 'kernel-cached re-read ≥ 90 % of a page-cache read', R.kernel_cached_vs_page_cache, (v) => v >= 0.9),
    t('stat_80pct_local', 'repeated stat of the tree ≥ 80 % of local', R.stat_vs_local, (v) => v >= 0.8, `with readdir (like find): ${R.walk_vs_local ?? '—'}`),
    t('mount_100k_1s', `largest TOC (${biggest ?? '?'} entries) mounts in ≤ 1 s`, R.mount_ms_largest_toc, (v) => v <= 1000, biggest !== '100000' ? 'the 100k image was not measured in this run' : undefined),
    t('mount_100k_cached_300ms', `largest TOC (${biggest ?? '?'} entries) mounts in ≤ 300 ms when the TOC is already cached`, R.mount_ms_largest_toc_cached ?? null, (v) => v <= 300, biggest !== '100000' ? 'the 100k image was not measured in this run' : undefined),
    t('store_rss_vs_stargz_store', 'store RSS serving the eStargz runtime image ≤ 1.0 × stargz-store serving the same (100 Mbit/s)', R.store_rss_vs_stargz_store ?? null, (v) => v <= 1.0,
      R.store_rss_MB_tocfs_store_estargz ? `${R.store_rss_MB_tocfs_store_estargz} MB against ${R.store_rss_MB_stargz_store_estargz ?? '—'} MB` : undefined),
    t('pss_shared_0_3_overlay', `${PSS_IMAGES} containers of ${PSS_IMAGES} images sharing their files but no layers: sum of PSS with tocfs's own FUSE session (passthrough onto one file per digest) ≤ 0.3 × the overlay pull's`, R.pss_vs_overlay ?? null, (v) => v <= 0.3,
      [R.pss_vs_overlay_tocfs_store != null ? `tocfs store today: ${R.pss_vs_overlay_tocfs_store}` : '', R.pss_vs_overlay_if_files_shared != null ? `every file shared ten ways, anonymous memory as with overlay: ${R.pss_vs_overlay_if_files_shared}` : ''].filter(Boolean).join('; ') || undefined),
    t('pss_sleep_0_3_overlay', `the seed article's workload, a sleep in each of the ${PSS_IMAGES} containers: sum of their PSS with tocfs's own FUSE session ≤ 0.3 × the overlay pull's`, R.pss_sleep_vs_overlay ?? null, (v) => v <= 0.3,
      R.pss_sleep_vs_overlay_podman_partial_hardlinks != null ? `Podman's hard links: ${R.pss_sleep_vs_overlay_podman_partial_hardlinks}` : undefined),
    t('issue18_warm_vs_page_cache', 'own FUSE session (issue 18): warm read of a cached file — a fresh open after one complete read, only the mount\'s own copy of the file evicted — ≥ 0.95 × a page-cache read of the same file on local disk', R.warm_vs_page_cache_session ?? null, (v) => v >= 0.95,
      [`fuse-native: ${R.warm_vs_page_cache ?? '—'}`, `whole page cache dropped first, vs local disk likewise: session ${R.warm_vs_local_disk_session ?? '—'}, fuse-native ${R.warm_vs_local_disk ?? '—'}`].join('; ')),
    t('issue18_kernel_cached_vs_page_cache', 'own FUSE session (issue 18): kernel-cached re-read ≥ 0.95 × a page-cache read', R.kernel_cached_vs_page_cache_session ?? null, (v) => v >= 0.95, `fuse-native: ${R.kernel_cached_vs_page_cache ?? '—'}`),
    t('issue18_walk_vs_local', 'own FUSE session (issue 18): `find` + stat of the tree (readdir + lstat, repeated) ≥ 0.5 × local', R.walk_vs_local_session ?? null, (v) => v >= 0.5, `fuse-native: ${R.walk_vs_local ?? '—'}`),
    sessionVsNative(R),
    t('rss_150MB_10_images', 'daemon RSS ≤ 150 MB with 10 images mounted', R.rss_MB_many_in_one_store ?? R.rss_MB_many_mounted, (v) => v <= 150,
      R.rss_MB_many_in_one_store !== null ? 'one tocfs store serving all 10' : 'sum over 10 tocfs mount daemons'),
  ];
}

/** The own session is to become the default once it beats fuse-native on every figure: the figures where it does not. */
function sessionVsNative(R: Results['ratios']): Target {
  const measuredFigs = SESSION_FIGURES.filter((k) => R[`${k}_session_vs_fuse_native`] != null);
  const slower = measuredFigs.filter((k) => {
    const v = R[`${k}_session_vs_fuse_native`]!;
    return k.endsWith('_ms') ? v > 1 : v < 1;
  });
  return {
    id: 'session_not_slower_than_fuse_native',
    goal: 'own FUSE session at least as fast as fuse-native on every figure of the local group (figures where it is slower; the condition for making it the default)',
    value: measuredFigs.length ? slower.length : null,
    met: measuredFigs.length ? slower.length === 0 : null,
    ...(measuredFigs.length ? { note: slower.length ? `slower: ${slower.map((k) => `${k} ${R[`${k}_session_vs_fuse_native`]}`).join(', ')}` : `all ${measuredFigs.length} figures` } : {}),
  };
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 100) / 100;
}

// ---- Markdown

const fmt = (v: number, digits = 2): string => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits));
function cell(c: Cell | undefined, key: string, scale = 1, digits = 2): string {
  if (!c) return '—';
  if (c.status !== 'ok') return c.status;
  const s = c.figures[key];
  if (!s) return '—';
  const m = fmt(s.median * scale, digits);
  return s.n > 1 ? `${m} (${fmt(s.min * scale, digits)}–${fmt(s.max * scale, digits)})` : m;
}

function notes(table: Table | undefined): string[] {
  return Object.entries(table ?? {})
    .filter(([, c]) => c.status !== 'ok')
    .map(([k, c]) => `- \`${k}\`: ${c.status} (${c.status === 'ok' ? '' : c.reason})`);
}

/** The published-index modes: the publisher's step, and whether each start had the whole-layer check in it. */
function publishedIndexLines(p: ProfileResults): string[] {
  const rows = Object.entries(p.container_ready ?? {}).filter(([k, c]) => INDEX_MODES.includes(k) && c.status === 'ok');
  const pub = p.index_publish;
  if (!pub && !rows.length) return [];
  const L = ['', '#### Plain gzip with a published index', ''];
  if (pub?.status === 'ok') {
    L.push(`Published once before these modes and timed apart from them (the publisher's one-time cost): \`tocfs index --push\` from an empty cache over this link took ${cell(pub, 'push_ms', 1e-3)} s, reading ${cell(pub, 'registry_bytes', 1e-6, 1)} MB (the whole layer); ${cell(pub, 'layers', 1, 0)} layer(s), ${cell(pub, 'checkpoints', 1, 0)} checkpoints (one per ${cell(pub, 'tar_MiB_per_checkpoint')} MiB of tar), index ${cell(pub, 'index_bytes', 1e-6, 2)} MB.`, '');
  } else if (pub) L.push(`\`tocfs index --push\`: ${pub.status} (${pub.reason}).`, '');
  for (const [k, c] of rows) {
    if (c.status !== 'ok' || !c.figures.check_in_start) continue;
    const inStart = c.figures.check_in_start.samples.filter((x) => x > 0).length;
    const delay = fmt(c.figures.check_delay_ms!.median / 1000, 0);
    const how = inStart === 0
      ? 'never started within the measured start (every start shorter than the delay): lazy reads only, the check neither inflates nor deflates these numbers'
      : `started within the measured start in ${inStart} of ${c.figures.check_in_start.n} repetitions: its whole-layer read is in those numbers`;
    L.push(`- \`${k}\`: whole-layer check (index.check_delay ${delay} s after the layer opens) ${how}; ${cell(c, 'layer_fraction_fetched')} of the layer fetched.`);
  }
  return L;
}

export function markdown(r: Results, chartFile: string): string {
  const L: string[] = [];
  L.push(`# tocfs benchmark — ${r.started}${r.quick ? ' (quick)' : ''}`, '');
  L.push(`Medians of ${r.reps} runs, (min–max) beside them. ${String(r.machine.note ?? '')}`, '');
  if (r.interrupted) L.push(`**This run was interrupted at ${r.finished}: the measurements missing below did not run.**`, '');
  L.push(`Machine: ${r.machine.cpus} CPUs, kernel ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.podman}, ${r.machine.skopeo}. tocfs ${r.tocfs.commit} (${r.tocfs.build}).`, '');
  const img = r.images.runtime as Record<string, unknown>;
  L.push(`Runtime image: ${img.tar_MB} MB uncompressed, ${img.files} files; layer sizes: ${Object.entries(img.layer_MB as Record<string, number>).map(([f, v]) => `${f} ${v} MB`).join(', ')}.`);
  L.push(`Container command: \`${r.ready_command.join(' ')}\``, '');
  if (r.tocfs.built_from) L.push(`tocfs built from: ${String(r.tocfs.built_from)}.`, '');
  const fl = (f: Results['lazy_floor'], name: string): string => (floorBytes(f) === null ? '' : `${name} ${(floorBytes(f)! / 1e6).toFixed(1)} MB (TOC ${((f as Record<string, number>).tocBytes! / 1e6).toFixed(1)} MB)`);
  const floors = [fl(r.lazy_floor, 'zstd:chunked'), fl(r.lazy_floor_estargz, 'eStargz')].filter(Boolean);
  if (floors.length) L.push(`Bytes needed by the container command (TOC + compressed frames of the ${(r.lazy_floor as Record<string, number>)?.files ?? '?'} files it opens): ${floors.join(', ')}.`, '');
  const peer = r.peers?.stargz_store as Record<string, string> | undefined;
  if (peer) L.push(peer.status === 'unavailable' ? `Peer stargz-store: unavailable (${peer.reason}).` : `Peer: stargz-store ${peer.version} (${peer.binary}), with Podman's additional layer store.`, '');
  const v2 = r.images.runtime_v2 as Record<string, unknown> | undefined;
  if (v2) L.push(`App v2 (profile steps \`_profile_v2\`): image ${String(v2.name)}, ${String(v2.changed_files)} files changed, tag v2 in the same repository.`, '');
  L.push(`![container ready](${chartFile})`, '');
  L.push('## Targets', '', '| target | value | met |', '| --- | --- | --- |');
  for (const t of r.targets) L.push(`| ${`${t.goal}${t.note ? ` (${t.note})` : ''}`.replace(/\|/g, '\\|')} | ${t.value ?? '—'} | ${t.met === null ? 'not measured' : t.met ? 'yes' : 'no'} |`);
  L.push('', '## Ratios', '', '| name | value |', '| --- | --- |');
  for (const [k, v] of Object.entries(r.ratios)) L.push(`| \`${k}\` | ${v ?? '—'} |`);
  for (const [name, p] of Object.entries(r.profiles)) {
    L.push('', `## ${p.label}`);
    if (p.container_ready) {
      const gz = med(p.container_ready.gzip_full, 'ready_ms');
      L.push('', '### Container ready (`podman run`), from nothing', '', '| mode | ready s | pull / mount s | run s | registry MB | veth MB | blob GETs | vs gzip pull |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const [k, c] of Object.entries(p.container_ready)) {
        if (c.status !== 'ok') continue;
        L.push(`| ${r.mode_labels[k] ?? k} | ${cell(c, 'ready_ms', 1e-3)} | ${cell(c, 'pull_or_mount_ms', 1e-3)} | ${cell(c, 'run_ms', 1e-3)} | ${cell(c, 'registry_bytes', 1e-6, 1)} | ${name === 'loopback' ? '—' : cell(c, 'wire_bytes', 1e-6, 1)} | ${cell(c, 'blob_requests', 1, 0)} | ${ratio(gz, med(c, 'ready_ms')) ?? '—'}× |`);
      }
      L.push(...notes(p.container_ready));
      L.push(...publishedIndexLines(p));
      const rows = Object.keys(p.container_ready).filter((k) => PROFILE_BASES.some((b) => k.startsWith(b)) || PEER_MODES.includes(k));
      if (rows.some((k) => p.container_ready![k]!.status === 'ok')) {
        L.push('', '#### Start-up profiles and the peer: ready, bytes against the bytes needed', '');
        L.push('Bytes needed: TOC + compressed frames of the files the container opens (strace), from the mode\'s own format. Limit: those bytes at the link rate + `podman run` of the fully pulled gzip image.', '');
        L.push('| mode | ready s | vs gzip pull | registry MB | × bytes needed | blob GETs | × limit |', '| --- | --- | --- | --- | --- | --- | --- |');
        for (const k of rows) {
          const c = p.container_ready[k]!;
          if (c.status !== 'ok') continue;
          const lim = physicalLimitMs(r, p, k);
          L.push(`| \`${k}\` | ${cell(c, 'ready_ms', 1e-3)} | ${ratio(gz, med(c, 'ready_ms')) ?? '—'}× | ${cell(c, 'registry_bytes', 1e-6, 1)} | ${ratio(med(c, 'registry_bytes'), floorOf(r, k)) ?? '—'} | ${cell(c, 'blob_requests', 1, 0)} | ${ratio(med(c, 'ready_ms'), lim) ?? '—'} |`);
        }
      }
    }
    if (p.first_byte) {
      L.push('', '### Time to the first byte of one file', '', '| mode | first byte s | registry MB |', '| --- | --- | --- |');
      for (const [k, c] of Object.entries(p.first_byte)) if (c.status === 'ok') L.push(`| ${k} | ${cell(c, 'first_byte_ms', 1e-3)} | ${cell(c, 'registry_bytes', 1e-6, 2)} |`);
      L.push(...notes(p.first_byte));
    }
    if (p.dedupe) {
      L.push('', '### Second image of the pair after the first (dedupe)', '', '| mode | first s | first MB | second s | second MB |', '| --- | --- | --- | --- | --- |');
      for (const [k, c] of Object.entries(p.dedupe)) if (c.status === 'ok') L.push(`| ${k} | ${cell(c, 'first_ms', 1e-3)} | ${cell(c, 'first_registry_bytes', 1e-6, 1)} | ${cell(c, 'second_ms', 1e-3)} | ${cell(c, 'second_registry_bytes', 1e-6, 1)} |`);
      L.push(...notes(p.dedupe));
    }
    if (p.cold_read) {
      L.push('', '### Cold sequential read through the mount', '');
      if (p.cold_read.status === 'ok') {
        L.push('| tocfs cold MB/s | curl \\| zstd -d MB/s (link ceiling, uncompressed) | ratio | registry MB | blob GETs |', '| --- | --- | --- | --- | --- |');
        L.push(`| ${cell(p.cold_read, 'cold_MBps')} | ${cell(p.cold_read, 'curl_zstd_MBps')} | ${cell(p.cold_read, 'cold_vs_curl_zstd')} | ${cell(p.cold_read, 'cold_registry_bytes', 1e-6, 1)} | ${cell(p.cold_read, 'cold_blob_requests', 1, 0)} |`);
      } else L.push(`${p.cold_read.status}: ${p.cold_read.reason}`);
    }
  }
  if (r.local_reads) {
    L.push('', '## Reads once fetched (loopback registry)', '');
    const c = r.local_reads;
    if (c.status === 'ok') {
      const both = c.figures.warm_MBps_session !== undefined;
      const vs = (k: string): string => (both ? ` ${ratio(med(c, `${k}_session`), med(c, k)) ?? '—'} |` : '');
      L.push(`| | tocfs fuse-native |${both ? ' tocfs own session | session / fuse-native |' : ''} bare memfs (same mount options) | local disk | page cache |`, `| --- | --- |${both ? ' --- | --- |' : ''} --- | --- | --- |`);
      const row = (label: string, k: string, memfs = '', disk = '', pc = ''): string => `| ${label} | ${cell(c, k)} |${both ? ` ${cell(c, `${k}_session`)} |${vs(k)}` : ''} ${memfs} | ${disk} | ${pc} |`;
      if (c.figures.cold_loopback_MBps) L.push(row('sequential MB/s, cold (empty cache, loopback registry)', 'cold_loopback_MBps'));
      L.push(row('sequential MB/s, page cache dropped', 'warm_MBps', cell(c, 'memfs_MBps'), cell(c, 'local_disk_MBps')));
      if (c.figures.warm_file_MBps) L.push(row('sequential MB/s, warm cached file: fresh open, only the mount\'s copy evicted', 'warm_file_MBps', '', '', cell(c, 'page_cache_MBps')));
      L.push(row('sequential MB/s, kernel-cached re-read', 'kernel_cached_MBps', '', '', cell(c, 'page_cache_MBps')));
      L.push(row('random 4 KiB reads/s', 'random_4k_reads_per_s', cell(c, 'memfs_random_4k_reads_per_s'), cell(c, 'local_random_4k_reads_per_s')));
      L.push(row('readdir + lstat of the whole tree (like find), repeated, ms', 'walk_tree_ms', '', cell(c, 'local_walk_tree_ms')));
      L.push(row('lstat of every path, repeated, ms', 'stat_tree_ms', '', cell(c, 'local_stat_tree_ms')));
      if (c.figures.walk_fuse_getattr) {
        L.push('', 'What the daemon answered (its /metrics, per repetition):', '', `| | fuse-native |${both ? ' own session |' : ''}`, `| --- | --- |${both ? ' --- |' : ''}`);
        const ops = (label: string, k: string): string => `| ${label} | ${cell(c, k, 1, 0)} |${both ? ` ${cell(c, `${k}_session`, 1, 0)} |` : ''}`;
        L.push(ops('opens before one was passed through (after the complete read)', 'passthrough_after_opens'));
        L.push(ops('FUSE reads during the read with the page cache dropped', 'warm_fuse_reads'));
        L.push(ops('passthrough opens during it', 'warm_passthrough_opens'));
        L.push(ops('FUSE reads during the kernel-cached re-read', 'kernel_cached_fuse_reads'));
        L.push(ops('bytes of the mount\'s file left in the page cache after evicting it (fincore)', 'warm_file_evicted_left_bytes'));
        L.push(ops('FUSE reads during the warm cached-file read', 'warm_file_fuse_reads'));
        L.push(ops('passthrough opens during it', 'warm_file_passthrough_opens'));
        L.push(ops('getattr (lookups included) during the walk script (2 walks + 1 lstat pass, page cache dropped)', 'walk_fuse_getattr'));
        L.push(ops('readdir during it', 'walk_fuse_readdir'));
      }
      if (c.note) L.push('', c.note);
    } else L.push(`${c.status}: ${c.reason}`);
  }
  if (r.toc_scaling) {
    L.push('', '## Mount time and daemon RSS vs TOC size (loopback)', '', '| entries | mount s (TOC fetched) | mount s (TOC cached) | find walk s | RSS MB mounted | RSS MB after walk |', '| --- | --- | --- | --- | --- | --- |');
    for (const [k, c] of Object.entries(r.toc_scaling)) if (c.status === 'ok') L.push(`| ${k} | ${cell(c, 'mount_ms', 1e-3)} | ${cell(c, 'mount_cached_toc_ms', 1e-3)} | ${cell(c, 'walk_ms', 1e-3)} | ${cell(c, 'rss_mounted_MB', 1, 0)} | ${cell(c, 'rss_after_walk_MB', 1, 0)} |`);
    L.push(...notes(r.toc_scaling));
  }
  if (r.many_mounted) {
    const c = r.many_mounted;
    L.push('', '## Many images mounted', '');
    L.push(c.status === 'ok' ? `${cell(c, 'images', 1, 0)} images, ${cell(c, 'daemons', 1, 0)} daemon process(es): RSS ${cell(c, 'rss_total_MB', 1, 0)} MB in total, ${cell(c, 'rss_max_per_daemon_MB', 1, 0)} MB the largest; mounting all took ${cell(c, 'mount_all_ms', 1e-3)} s.` : `${c.status}: ${c.reason}`);
  }
  if (r.many_in_store) {
    const c = r.many_in_store;
    L.push('', c.status === 'ok' ? `One tocfs store serving ${cell(c, 'images', 1, 0)} images pulled lazily by Podman (trees walked): RSS ${cell(c, 'rss_MB', 1, 0)} MB; pulling all took ${cell(c, 'pull_all_ms', 1e-3)} s.` : `Store with many images: ${c.status}: ${c.reason}`);
  }
  if (r.pss) L.push(...pssLines(r));
  L.push('');
  return L.join('\n');
}

/** The PSS group: one row per mode, sums over the ten containers' main processes. */
function pssLines(r: Results): string[] {
  const t = r.pss!;
  const img = (r.images.pss ?? {}) as Record<string, unknown>;
  const L = ['', '## Page cache shared between containers (PSS, loopback registry)', ''];
  L.push(`${PSS_IMAGES} images, each ${String(img.made_from ?? '')} (${String(img.files_each ?? '?')} files, ${String(img.tar_MB ?? '?')} MB uncompressed; zstd:chunked by ${String(img.written_by ?? '?')}). One container per image, \`podman run -d\` of \`${((img.command as string[] | undefined) ?? []).join(' ')}\`; once every container printed its marker, the sums of /proc/PID/smaps_rollup over the ${PSS_IMAGES} main processes, and apart over the \`sleep\` each started (the seed article's workload). Page cache dropped after the pulls, before the first container.`, '');
  L.push('| mode | PSS MiB | Pss_File MiB | Pss_Anon MiB | RSS MiB | PSS vs overlay | Pss_File vs overlay | sleep PSS MiB | sleep PSS vs overlay | pull s (all) | start s (all) |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const ov = med(t.overlay, 'pss_kB');
  const ovFile = med(t.overlay, 'pss_file_kB');
  const ovSleep = med(t.overlay, 'sleep_pss_kB');
  for (const m of PSS_MODES) {
    const c = t[m.id];
    if (!c || c.status !== 'ok') continue;
    const mib = 1 / 1024;
    L.push(`| \`${m.id}\`: ${m.label} | ${cell(c, 'pss_kB', mib, 1)} | ${cell(c, 'pss_file_kB', mib, 1)} | ${cell(c, 'pss_anon_kB', mib, 1)} | ${cell(c, 'rss_kB', mib, 1)} | ${ratio(med(c, 'pss_kB'), ov) ?? '—'} | ${ratio(med(c, 'pss_file_kB'), ovFile) ?? '—'} | ${cell(c, 'sleep_pss_kB', mib, 1)} | ${ratio(med(c, 'sleep_pss_kB'), ovSleep) ?? '—'} | ${cell(c, 'pull_all_ms', 1e-3)} | ${cell(c, 'start_all_ms', 1e-3)} |`);
  }
  L.push(...notes(t));
  const floor = r.ratios.pss_vs_overlay_if_files_shared;
  if (floor != null) L.push('', `Were every file shared ten ways with anonymous memory as in the overlay run, PSS would be ${floor} of overlay's: the least any way of sharing files reaches with this command.`);
  return L;
}

// ---- SVG chart: container-ready time per mode, one group per link profile

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const COLORS: Record<string, string> = { gzip_full: '#9e9e9e', zstd_full: '#757575', zstd_chunked_partial: '#f0a030', stargz_store_estargz: '#1565c0', stargz_store_estargz_bgfetch: '#1565c0' };
const colorOf = (k: string): string => COLORS[k] ?? (/_profile/.test(k) ? '#66bb6a' : /_gzip_index/.test(k) ? '#00897b' : '#2e7d32');

export function chart(r: Results): string {
  const rows: Array<{ group: string; label: string; s?: Summary; color: string }> = [];
  for (const p of Object.values(r.profiles)) {
    if (!p.container_ready) continue;
    for (const [k, c] of Object.entries(p.container_ready)) {
      if (c.status === 'ok' && c.figures.ready_ms) rows.push({ group: p.label, label: r.mode_labels[k] ?? k, s: c.figures.ready_ms, color: colorOf(k) });
    }
  }
  const W = 1100, left = 470, right = 80, rowH = 22, top = 40;
  const max = Math.max(1, ...rows.map((x) => x.s!.max));
  const scale = (W - left - right) / max;
  const groups = [...new Set(rows.map((x) => x.group))];
  const H = top + rows.length * rowH + groups.length * 26 + 40;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="10" y="22" font-size="15" font-weight="bold">Container ready (podman run from nothing), seconds — median, min–max whiskers</text>`);
  let y = top;
  for (const g of groups) {
    y += 20;
    out.push(`<text x="10" y="${y - 4}" font-weight="bold">${esc(g)}</text>`);
    for (const row of rows.filter((x) => x.group === g)) {
      const s = row.s!;
      const w = Math.max(1, s.median * scale);
      out.push(`<text x="${left - 6}" y="${y + 14}" text-anchor="end">${esc(row.label)}</text>`);
      out.push(`<rect x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${row.color}"/>`);
      const x1 = left + s.min * scale, x2 = left + s.max * scale, cy = y + rowH / 2;
      out.push(`<line x1="${x1.toFixed(1)}" x2="${x2.toFixed(1)}" y1="${cy}" y2="${cy}" stroke="black"/>`);
      out.push(`<text x="${(left + Math.max(w, s.max * scale) + 6).toFixed(1)}" y="${y + 14}">${(s.median / 1000).toFixed(2)} s</text>`);
      y += rowH;
    }
    y += 6;
  }
  const axisY = y + 10;
  out.push(`<line x1="${left}" x2="${W - right}" y1="${axisY}" y2="${axisY}" stroke="#444"/>`);
  const step = niceStep(max / 1000 / 6);
  for (let v = 0; v * 1000 <= max; v += step) {
    const x = left + v * 1000 * scale;
    out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${axisY}" y2="${axisY + 4}" stroke="#444"/><text x="${x.toFixed(1)}" y="${axisY + 16}" text-anchor="middle">${fmt(v, 1)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n');
}

function niceStep(raw: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
