/**
 * The life of the layer store daemon: clear a stale mount, mount the store, tell whoever
 * waits that it answers (the parent `tocfs store`, or systemd), serve until SIGINT/SIGTERM
 * or an external unmount, then unmount cleanly and exit.
 */
import { mkdir, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { notifyFailure, notifyReady } from './daemonize.js';
import { collectGarbageSoon, keepYoungGenerationSmall, returnMemoryWhenIdle } from './memory.js';
import { untilStopped } from './serve-mount.js';
import { removeMountState, writeMountState } from './state.js';
import { mountFs, resumeFs, type FuseSessionKind, type MountedFs } from '../fs/mount.js';
import type { SourceOptions } from '../image/open.js';
import { startMetricsServer, type MetricsServer } from '../metrics/index.js';
import { storeOperations } from '../fs/store-operations.js';
import { mappedCount, rootlessIdMap, SUBGID_FILE, SUBUID_FILE, type IdMap } from '../fs/id-map.js';
import { LayerOpener, type ReadPathSettings } from '../layer/open.js';
import { registryStates } from '../registry/health.js';
import { DEFAULT_PROFILE_SETTINGS, StartupProfiles, type ProfileSettings } from '../profile/session.js';
import { ProfileStore } from '../profile/store.js';
import { findPublishedProfile } from '../profile/publish.js';
import { LayerStore } from '../store/layers.js';
import { UseCounts, useJournalFile } from '../store/use-counts.js';
import { FdStore } from './fd-store.js';
import { sdNotify } from './sd-notify.js';
import { removeStatus, writeStatus } from './store-status.js';
import { HANDED_OVER, requestHandOver, serveUntilStopped } from './takeover.js';

export interface StoreServeOptions extends ReadPathSettings {
  storeDir: string;
  source: SourceOptions;
  logger: Logger;
  /** HOST:PORT for /metrics, or undefined for none. */
  metricsAddress?: string;
  lookupTimeoutMs?: number;
  negativeTtlMs?: number;
  /** Landmark prefetch of each layer when first looked up (default 'landmark'). */
  prefetch?: 'landmark' | 'none';
  /** Start-up profiles (profile.*); DEFAULT_PROFILE_SETTINGS otherwise. */
  profiles?: ProfileSettings;
  allowOther?: boolean;
  /** Take the store over from the tocfs serving it now (daemon/takeover.ts) instead of mounting. */
  takeover?: boolean;
  /** daemon.fuse_session and daemon.passthrough. */
  fuse: { session: FuseSessionKind; passthrough: boolean };
  /** store.id_map: 'auto' (default) maps file owners as rootless Podman does when not run as root; 'none' never. */
  idMap?: 'auto' | 'none';
  /** index.trust: repositories whose published seekable indexes make plain gzip layers servable. */
  indexTrust?: readonly string[];
  /** Where the daemon's log goes, recorded for `tocfs unmount`. */
  logFile?: string;
}

const STATUS_INTERVAL_MS = 2000;

/** The label the store's mount shows in /proc/mounts (`tocfs-store on /var/lib/tocfs/store type fuse.tocfs`). */
export const STORE_LABEL = 'tocfs-store';

/** The owner map of store.id_map: none as root or with 'none'; else rootless Podman's map of this user. */
async function storeIdMap(mode: 'auto' | 'none', log: Logger): Promise<IdMap | undefined> {
  if (mode === 'none' || process.getuid?.() === 0) return undefined;
  const map = await rootlessIdMap();
  const sub = { uids: mappedCount(map.uids) - 1, gids: mappedCount(map.gids) - 1 };
  log.info({ uids: map.uids, gids: map.gids }, 'file owners shown as rootless Podman maps them (store.id_map auto)');
  if (sub.uids === 0 || sub.gids === 0) {
    log.warn({ subuid: SUBUID_FILE, subgid: SUBGID_FILE }, `no subordinate ${sub.uids === 0 ? 'user' : 'group'} IDs for this user: files not owned by container root show as 65534 (rootless Podman needs these ranges too)`);
  }
  return map;
}

export async function serveStore(opts: StoreServeOptions): Promise<void> {
  const log = opts.logger;
  keepYoungGenerationSmall(log);
  returnMemoryWhenIdle(log);
  const storeDir = resolve(opts.storeDir);
  const started = new Date();
  let store: LayerStore | undefined;
  let uses: UseCounts | undefined;
  let mounted: MountedFs | undefined;
  let metricsServer: MetricsServer | undefined;
  let opener: LayerOpener;
  let fdStore: FdStore | undefined;
  try {
    // First: a session systemd kept across a restart must be taken before anything looks at the mount.
    fdStore = opts.takeover ? undefined : await FdStore.open(storeDir, log);
    // A stale mount answers ENOTCONN here; mountFs clears it.
    // (Not on a session kept across a restart: the mount answers only once resumed.)
    if (!fdStore?.inherited) await mkdir(storeDir, { recursive: true, mode: 0o755 }).catch(() => undefined);
    const idMap = await storeIdMap(opts.idMap ?? 'auto', log);
    opener = await LayerOpener.create(opts, log);
    // A successor takes the session before it reads the use counts: its predecessor answered every use it counted.
    const handed = opts.takeover ? await requestHandOver(storeDir, log) : fdStore?.inherited;
    // Read now, written only once mounted: a store already serving this directory keeps its journal.
    uses = await UseCounts.open({ file: useJournalFile(opts.cacheDir, storeDir), storeDir, logger: log });
    store = new LayerStore({
      uses,
      opener,
      profiles: new StartupProfiles(new ProfileStore(opts.cacheDir, log), opts.profiles ?? DEFAULT_PROFILE_SETTINGS, log, (image) => findPublishedProfile(image, opts.source, log)),
      source: opts.source,
      logger: log,
      ...(opts.lookupTimeoutMs !== undefined ? { lookupTimeoutMs: opts.lookupTimeoutMs } : {}),
      ...(opts.negativeTtlMs !== undefined ? { negativeTtlMs: opts.negativeTtlMs } : {}),
      ...(opts.prefetch ? { prefetch: opts.prefetch } : {}),
      ...(opts.indexTrust ? { indexTrust: opts.indexTrust } : {}),
    });
    const ops = storeOperations({ store, logger: log, started, ...(idMap ? { idMap } : {}) });
    const mountOptions = {
      label: STORE_LABEL,
      logger: log,
      writable: true,
      negativeTimeout: 0,
      readAheadKb: 0,
      ...(opts.allowOther !== undefined ? { allowOther: opts.allowOther } : {}),
      ...opts.fuse,
    };
    mounted = handed ? resumeFs(storeDir, ops, mountOptions, handed) : await mountFs(storeDir, ops, mountOptions);
    fdStore?.keep(mounted);
    // Ready means the mount answers, not merely that mount(2) returned.
    const root = await stat(storeDir);
    if (!root.isDirectory()) throw new Error(`${storeDir} does not answer as a directory after mounting`);
    // A full or read-only cache disk must not keep the store from serving: counts stay in memory and every change retries.
    await uses.compact().catch((err: unknown) => log.error({ err }, 'use counts are kept in memory until their journal can be written'));
    if (opts.metricsAddress) metricsServer = await startMetricsServer(opts.metricsAddress);
    await writeMountState({ pid: process.pid, mountpoint: storeDir, image: STORE_LABEL, ...(opts.logFile ? { log: opts.logFile } : {}), started: started.toISOString() });
  } catch (e) {
    await mounted?.unmount().catch(() => undefined);
    await metricsServer?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    await uses?.close().catch(() => undefined);
    notifyFailure((e as Error).message);
    await sdNotify({ status: `failed: ${(e as Error).message}` }, log);
    throw e;
  }
  const liveStore = store;
  const cache = opener.cache;
  // Catch SIGTERM before anyone hears we are ready (see daemon/serve-mount.ts).
  const stopped = untilStopped(storeDir, log);
  log.info({ storeDir, cacheDir: opts.cacheDir, ms: Date.now() - started.getTime() }, 'layer store mounted');
  notifyReady();
  await sdNotify({ ready: true, status: `serving ${storeDir}` }, log);

  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (still serving)'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (still serving)'));

  let layersServed = 0;
  const publish = async (): Promise<void> => {
    // New layers mean TOCs were just parsed: give their garbage back (daemon/memory.ts).
    const served = liveStore.known().length;
    if (served !== layersServed) {
      layersServed = served;
      collectGarbageSoon(log);
    }
    const memory = { rssBytes: process.memoryUsage.rss(), ...cache.memoryUse };
    await writeStatus({ ...(await liveStore.status()), registries: registryStates(), memory, pid: process.pid, storeDir, started: started.toISOString(), updated: new Date().toISOString() });
  };
  const timer = setInterval(() => publish().catch((err: unknown) => log.debug({ err }, 'cannot write the status file')), STATUS_INTERVAL_MS);
  await publish().catch(() => undefined);

  const why = await serveUntilStopped(stopped, () => untilStopped(storeDir, log), mounted, log, async () => {
    await metricsServer?.close();
    metricsServer = undefined;
  }, fdStore);
  clearInterval(timer);
  if (why === HANDED_OVER) {
    // The successor (or the next start, from systemd's fd store) serves the store now: leave it mounted, and its state and status files to it.
    liveStore.forgetMetrics();
    await liveStore.close();
    await uses.close();
    log.info({ storeDir }, 'handed over; exiting');
    return;
  }
  log.info({ storeDir, why }, 'stopping the layer store');
  await sdNotify({ stopping: true }, log);
  await mounted.unmount().catch((err: unknown) => log.warn({ err }, 'unmount failed'));
  await metricsServer?.close().catch(() => undefined);
  liveStore.forgetMetrics();
  await liveStore.close();
  await uses.close();
  await removeStatus(storeDir);
  await removeMountState(storeDir, process.pid);
  log.info({ storeDir }, 'layer store unmounted');
}
