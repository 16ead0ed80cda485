/**
 * The life of one mount: open the image, build its tree, mount, report ready, prefetch in
 * the background, serve until SIGINT/SIGTERM or until someone unmounts it, then unmount
 * cleanly and exit.
 */
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { fetchAll, prefetchLandmark, type FetchProgress } from '../fetch/prefetch.js';
import { fsOperations } from '../fs/operations.js';
import { startMetricsServer, type MetricsServer } from '../metrics/index.js';
import { mountFs, resumeFs, type FuseSessionKind, type MountedFs } from '../fs/mount.js';
import { isMounted } from '../fs/mount-table.js';
import { openImage, type ImageLayer, type OpenedImage, type OpenImageOptions } from '../image/image.js';
import { recordedImage } from '../profile/recorder.js';
import { ProfileStore } from '../profile/store.js';
import { findPublishedProfile } from '../profile/publish.js';
import { DEFAULT_PROFILE_SETTINGS, StartupProfiles, type ImageProfiles, type ProfileSettings } from '../profile/session.js';
import { createProgress, type Progress } from '../progress.js';
import { defaultCacheDir } from '../cache/paths.js';
import { notifyFailure, notifyReady } from './daemonize.js';
import { collectGarbageSoon, keepYoungGenerationSmall, returnMemoryWhenIdle } from './memory.js';
import { FdStore } from './fd-store.js';
import { sdNotify } from './sd-notify.js';
import { removeMountState, writeMountState } from './state.js';
import { HANDED_OVER, requestHandOver, serveUntilStopped, TAKEOVER_REQUESTED } from './takeover.js';

export type PrefetchMode = 'landmark' | 'all' | 'none';

export interface ServeOptions {
  image: string;
  mountpoint: string;
  /** Mount this layer's own tree instead of the merged view. */
  layer?: string;
  prefetch: PrefetchMode;
  open: OpenImageOptions;
  logger: Logger;
  /** Where the daemon's log goes, recorded for `tocfs unmount`. */
  logFile?: string;
  /** Serve Prometheus metrics (/metrics, /healthz) at HOST:PORT. */
  metricsAddress?: string;
  /** Start-up profiles (profile.*); DEFAULT_PROFILE_SETTINGS otherwise. */
  profiles?: ProfileSettings;
  /** Take the mount over from the tocfs serving it now (daemon/takeover.ts) instead of mounting. */
  takeover?: boolean;
  /** FUSE mount settings (mount.read_ahead, mount.allow_other); fs/mount.ts defaults otherwise. */
  mount: { readAheadKb?: number; allowOther?: boolean; session: FuseSessionKind; passthrough?: boolean };
}

/** How often the daemon checks that its mount still exists (someone may run fusermount -u). */
const WATCH_INTERVAL_MS = 1000;

/**
 * Progress of one layer's prefetch: a bar when the daemon's log stream (stdout) is a terminal
 * (`mount --foreground` by hand), log lines at every 10 % and 10 s otherwise.
 */
function progressLogger(log: Logger, layer: ImageLayer, what: string): (p: FetchProgress) => void {
  let bar: Progress | undefined;
  return (p) => {
    bar ??= createProgress({ label: `${what} ${layer.descriptor.digest.slice(7, 19)}`, total: p.total, logger: log.child({ layer: layer.descriptor.digest }), stream: process.stdout });
    bar.update(p.done);
    if (p.done >= p.total) bar.done();
  };
}

async function prefetch(image: OpenedImage, layers: ImageLayer[], mode: PrefetchMode, signal: AbortSignal, log: Logger): Promise<void> {
  if (mode === 'none') return;
  const started = Date.now();
  for (const layer of layers) {
    if (signal.aborted) return;
    if (!layer.lazy) continue; // indexed from the whole blob: everything is cached already
    if (mode === 'landmark') {
      const bytes = await prefetchLandmark(layer.reader, progressLogger(log, layer, 'prefetching landmark files'));
      if (bytes > 0) log.info({ layer: layer.descriptor.digest, bytes }, 'prefetched the files before the eStargz landmark');
    } else {
      await fetchAll(layer.reader, { signal, onProgress: progressLogger(log, layer, 'fetching the whole layer in the background') });
    }
  }
  log.info({ mode, ms: Date.now() - started, image: image.reference }, 'prefetch done');
}

/** The image's start-up profile: replayed on every layer at once, recorded when it has none of its own. */
function startProfiles(image: OpenedImage, opts: ServeOptions, log: Logger): ImageProfiles {
  const settings = opts.profiles ?? DEFAULT_PROFILE_SETTINGS;
  const store = new ProfileStore(opts.open.cacheDir ?? defaultCacheDir(), log);
  const session = new StartupProfiles(store, settings, log, (published) => findPublishedProfile(published, opts.open, log)).begin(recordedImage(image.reference, image.resolved));
  for (const layer of image.layers) if (layer.lazy) session.layerOpened(layer);
  return session;
}

/** What answers SIGTERM and SIGINT once a daemon is stopping (see untilStopped). */
let whileStopping: { onTerm: () => void; onInt: () => void } | undefined;

function stopAbsorbing(): void {
  if (!whileStopping) return;
  process.off('SIGTERM', whileStopping.onTerm);
  process.off('SIGINT', whileStopping.onInt);
  whileStopping = undefined;
}

/**
 * Resolves when a signal arrives or the mount disappears; 'takeover' when a successor asks for
 * the session (SIGUSR2). From then on a SIGTERM no longer ends the process as Node's default
 * would: the shutdown (the cache's writes, the parsed TOCs kept) finishes first. A daemon that
 * noticed its unmount by itself meets `tocfs unmount`'s SIGTERM just then, and was cut short by
 * it: the next mount parsed its TOC again. A second SIGINT (^C ^C) still ends it at once.
 */
export function untilStopped(mountpoint: string, log: Logger): Promise<string> {
  stopAbsorbing();
  return new Promise((resolveStop) => {
    let stopped = false;
    const stop = (why: string): void => {
      if (stopped) return; // a mount-table check under way when a signal came
      stopped = true;
      clearInterval(timer);
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGUSR2', onTakeover);
      whileStopping = {
        onTerm: () => log.info('already stopping: the shutdown finishes first'),
        onInt: () => {
          log.warn('interrupted again: exiting at once; writes under way are lost');
          process.exit(130);
        },
      };
      process.on('SIGTERM', whileStopping.onTerm);
      process.on('SIGINT', whileStopping.onInt);
      resolveStop(why);
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    const onTakeover = (): void => stop(TAKEOVER_REQUESTED);
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    process.on('SIGUSR2', onTakeover);
    const timer = setInterval(() => {
      isMounted(mountpoint).then(
        (mounted) => {
          if (!mounted) stop('unmounted');
        },
        (err: unknown) => log.debug({ err }, 'cannot read the mount table'),
      );
    }, WATCH_INTERVAL_MS);
  });
}

/** Runs one mount to its end. Rejects (after telling a waiting parent) if it cannot mount. */
export async function serveMount(opts: ServeOptions): Promise<void> {
  const log = opts.logger;
  keepYoungGenerationSmall(log);
  const mountpoint = resolve(opts.mountpoint);
  const started = Date.now();
  let image: OpenedImage | undefined;
  let profiles: ImageProfiles | undefined;
  let mounted: MountedFs | undefined;
  let metricsServer: MetricsServer | undefined;
  let fdStore: FdStore | undefined;
  try {
    // First: a session systemd kept across a restart must be taken before anything looks at the mount.
    fdStore = opts.takeover ? undefined : await FdStore.open(mountpoint, log);
    if (opts.metricsAddress) metricsServer = await startMetricsServer(opts.metricsAddress);
    image = await openImage(opts.image, { ...opts.open, logger: log });
    profiles = startProfiles(image, opts, log);
    const tree = image.tree(opts.layer);
    const opened = image;
    log.info({ image: image.reference, layers: image.layers.length, inodes: tree.inodeCount, ms: Date.now() - started }, 'image opened');
    const ops = fsOperations({
      tree,
      read: (node, offset, length, into) => opened.readFileInto(node, offset, length, into),
      wholeFile: (node) => opened.wholeFile(node),
      logger: log,
      describe: (node) => ({ image: opened.reference, layer: opened.layers[node.layer]?.descriptor.digest }),
    });
    const mountOptions = { label: image.reference, logger: log, ...opts.mount };
    const handed = opts.takeover ? await requestHandOver(mountpoint, log) : fdStore?.inherited;
    mounted = handed ? resumeFs(mountpoint, ops, mountOptions, handed) : await mountFs(mountpoint, ops, mountOptions);
    fdStore?.keep(mounted);
    await writeMountState({ pid: process.pid, mountpoint, image: image.reference, ...(opts.layer ? { layer: opts.layer } : {}), ...(opts.logFile ? { log: opts.logFile } : {}), started: new Date().toISOString() });
  } catch (e) {
    await mounted?.unmount().catch(() => undefined);
    await image?.close().catch(() => undefined);
    await metricsServer?.close().catch(() => undefined);
    notifyFailure((e as Error).message);
    throw e;
  }
  // Catch SIGTERM before anyone hears we are ready: a `tocfs unmount` right after would
  // otherwise meet node's default handler and leave the mount behind.
  const stopped = untilStopped(mountpoint, log);
  // processMs: since this process started (its module loading included), for start-up profiling.
  log.info({ image: image.reference, mountpoint, layer: opts.layer, ms: Date.now() - started, processMs: Math.round(performance.now()) }, 'mounted');
  notifyReady();
  collectGarbageSoon(log);
  // Not before: a trim while the TOC loads gives back memory the load takes again at once.
  returnMemoryWhenIdle(log);
  await sdNotify({ ready: true, status: `serving ${image.reference} at ${mountpoint}` }, log);

  // The mount keeps serving whatever goes wrong elsewhere in the process.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (still serving)'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (still serving)'));

  const abort = new AbortController();
  const layers = opts.layer ? [image.layer(opts.layer)] : image.layers;
  const background = prefetch(image, layers, opts.prefetch, abort.signal, log).catch((err: unknown) => {
    if (!abort.signal.aborted) log.warn({ err }, 'prefetch stopped (reads still fetch what they need)');
  });

  const why = await serveUntilStopped(stopped, () => untilStopped(mountpoint, log), mounted, log, async () => {
    await metricsServer?.close();
    metricsServer = undefined;
  }, fdStore);
  if (why === HANDED_OVER) {
    // The successor (or the next start, from systemd's fd store) serves the mount now: leave it mounted.
    abort.abort();
    await profiles?.stop();
    await background;
    await image.close().catch(() => undefined);
    await metricsServer?.close().catch(() => undefined);
    // The state file is the successor's now.
    log.info({ mountpoint }, 'handed over; exiting');
    return;
  }
  log.info({ mountpoint, why }, 'stopping');
  await sdNotify({ stopping: true }, log);
  abort.abort();
  const profileSaved = profiles?.stop();
  await mounted.unmount().catch((err: unknown) => log.warn({ err }, 'unmount failed'));
  await background;
  await profileSaved;
  await image.close().catch(() => undefined);
  await metricsServer?.close().catch(() => undefined);
  await removeMountState(mountpoint, process.pid);
  log.info({ mountpoint }, 'unmounted');
}
