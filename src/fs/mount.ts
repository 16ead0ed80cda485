/**
 * Mounting a FUSE filesystem with the options an immutable image wants:
 * read-only, st_ino passed through, kernel page cache kept across
 * opens, long entry/attribute timeouts, more reads in flight and a larger read-ahead.
 */
import { stat, statfs, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { TocfsError } from '../errors.js';
import { Fuse, type FuseOperations } from './fuse-binding.js';
import { FS_SUBTYPE, isMounted } from './mount-table.js';
import { mountOwnSession, resumeOwnSession, type HandedOver, type OwnSessionOptions } from './session/mount.js';
import type { SessionState } from './session/session.js';

/** The image never changes under a mount: cache names and attributes for an hour. */
const CACHE_TIMEOUT_S = 3600;
/** The kernel's largest FUSE read without max_pages (which libfuse 2 cannot negotiate). */
const MAX_READ = 128 * 1024;
const DEFAULT_READ_AHEAD_KB = 4096;

export interface MountOptions {
  /** Shown as the mount's source (e.g. the image reference). */
  label: string;
  logger: Logger;
  /** /sys/class/bdi/<dev>/read_ahead_kb after mounting (0: leave the kernel default). */
  readAheadKb?: number;
  /** Let other users in (with default_permissions the kernel still checks modes). Default: when root. */
  allowOther?: boolean;
  debug?: boolean;
  /**
   * Writable mount (default false = `ro`). The layer store needs it: Podman's `use` (create)
   * and release (rmdir) notifications must reach the daemon instead of failing with EROFS.
   */
  writable?: boolean;
  /** Seconds the kernel remembers that a name does not exist (default: CACHE_TIMEOUT_S; the store wants 0 so a later success is seen). */
  negativeTimeout?: number;
  /** Who speaks FUSE (daemon.fuse_session, whose default is the caller's to pass): fuse-native (libfuse 2), or tocfs's own session on /dev/fuse. */
  session: FuseSessionKind;
  /** With tocfs's own session: open completely cached files with FUSE passthrough (daemon.passthrough). */
  passthrough?: boolean;
}

export type FuseSessionKind = 'fuse-native' | 'tocfs';

export interface MountedFs {
  readonly mountpoint: string;
  /** Who answers the kernel: 'tocfs' when the own session serves this mount. */
  readonly session: FuseSessionKind;
  /**
   * Own session only: stops answering, lets the requests in flight finish and returns the
   * /dev/fuse descriptor with what a successor needs (daemon/takeover.ts); `resume` serves
   * on if the successor never took it. The mount stays.
   */
  handOver?(): Promise<HandedOver>;
  /** Own session only: the /dev/fuse descriptor the session answers on (kept by systemd across restarts, daemon/fd-store.ts). */
  readonly deviceFd?: number;
  /** Unmounts (lazily if busy) and stops serving. */
  unmount(): Promise<void>;
}

/** libfuse splits options on commas: a label must not carry any (nor spaces). */
function optionSafe(s: string): string {
  return s.replace(/[,\s\\=]/g, '_').slice(0, 200);
}

/**
 * Options fuse-native does not expose ride inside `fsname`, which it passes through
 * unescaped: libfuse splits the whole string on commas.
 */
function fsnameWithOptions(label: string, options: MountOptions): string {
  return [
    optionSafe(label) || 'tocfs',
    ...(options.writable ? [] : ['ro']),
    'use_ino',
    `negative_timeout=${options.negativeTimeout ?? CACHE_TIMEOUT_S}`,
    'max_background=64',
    'congestion_threshold=48',
    `max_readahead=${DEFAULT_READ_AHEAD_KB * 1024}`,
  ].join(',');
}

function ownSessionOptions(options: MountOptions): OwnSessionOptions {
  return {
    label: optionSafe(options.label) || 'tocfs',
    logger: options.logger,
    readOnly: !options.writable,
    allowOther: options.allowOther ?? process.getuid?.() === 0,
    validSeconds: CACHE_TIMEOUT_S,
    negativeSeconds: options.negativeTimeout ?? CACHE_TIMEOUT_S,
    passthrough: options.passthrough ?? true,
  };
}

/** Serves a mount whose FUSE session a predecessor handed over (daemon/takeover.ts): no mount(2), same kernel connection. */
export function resumeFs(mountpoint: string, ops: FuseOperations, options: MountOptions, handed: { fd: number; state: SessionState }): MountedFs {
  return resumeOwnSession(resolve(mountpoint), handed.fd, handed.state, ops, ownSessionOptions(options));
}

export async function mountFs(mountpoint: string, ops: FuseOperations, options: MountOptions): Promise<MountedFs> {
  const mnt = resolve(mountpoint);
  const log = options.logger;
  const st = await stat(mnt).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOTCONN') return undefined; // a stale mount (its daemon died)
    throw new TocfsError(`mountpoint ${mnt}: ${e.code === 'ENOENT' ? 'does not exist' : e.message}`);
  });
  if (st && !st.isDirectory()) throw new TocfsError(`mountpoint ${mnt} is not a directory`);
  if (await isMounted(mnt)) {
    // statfs always reaches the daemon; stat may come from the kernel's attribute cache.
    const alive = await statfs(mnt).then(
      () => true,
      (e: NodeJS.ErrnoException) => e.code !== 'ENOTCONN',
    );
    if (alive) throw new TocfsError(`mountpoint ${mnt} is already a tocfs mount; run tocfs unmount ${mnt} first`);
    log.warn({ mountpoint: mnt }, 'cleaning up a stale mount (Transport endpoint is not connected)');
    await Fuse.unmountLazy(mnt);
  }
  if (options.session === 'tocfs') {
    const own = await mountOwnSession(mnt, ops, ownSessionOptions(options));
    if (!('unavailable' in own)) {
      await raiseReadAhead(mnt, options.readAheadKb ?? DEFAULT_READ_AHEAD_KB, log);
      return own;
    }
    // Without root that is expected (fusermount mounts for fuse-native); anything else is worth a warning.
    log[own.unprivileged ? 'info' : 'warn']({ reason: own.unavailable }, `tocfs's own FUSE session is unavailable (${own.unavailable}): serving through fuse-native`);
  }

  const fuse = new Fuse(
    mnt,
    ops,
    {
      fsname: fsnameWithOptions(options.label, options),
      subtype: FS_SUBTYPE,
      kernelCache: true,
      entryTimeout: CACHE_TIMEOUT_S,
      attrTimeout: CACHE_TIMEOUT_S,
      maxRead: MAX_READ,
      defaultPermissions: true,
      allowOther: options.allowOther ?? process.getuid?.() === 0,
      force: false,
      mkdir: false,
      timeout: false,
      debug: options.debug ?? false,
    },
    log,
  );
  await new Promise<void>((res, rej) =>
    fuse.mount((err) => (err ? rej(new TocfsError(`cannot mount at ${mnt}: ${err.message} (is /dev/fuse available and fusermount installed?)`, 'EMOUNT', { cause: err })) : res())),
  );
  await raiseReadAhead(mnt, options.readAheadKb ?? DEFAULT_READ_AHEAD_KB, log);

  let unmounted: Promise<void> | undefined;
  return {
    mountpoint: mnt,
    session: 'fuse-native',
    unmount() {
      unmounted ??= (async () => {
        if (!(await isMounted(mnt))) return; // someone unmounted it already
        await new Promise<void>((res, rej) => fuse.unmount((err) => (err ? rej(err) : res())));
      })();
      return unmounted;
    },
  };
}

/** Linux's major/minor of a dev_t. */
function devName(dev: number): string {
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return `${major}:${minor}`;
}

async function raiseReadAhead(mnt: string, kb: number, log: Logger): Promise<void> {
  if (kb <= 0) return;
  const file = `/sys/class/bdi/${devName((await stat(mnt)).dev)}/read_ahead_kb`;
  try {
    await writeFile(file, `${kb}\n`);
    log.debug({ file, kb }, 'raised read-ahead');
  } catch (e) {
    log.info({ file, err: (e as Error).message }, 'cannot raise read-ahead (needs root); sequential reads will be slower');
  }
}
