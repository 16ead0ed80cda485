/**
 * The tocfs_fuse_dev addon (native/fuse_dev.c, built by scripts/build-native.sh into
 * native/build/Release/tocfs_fuse_dev.node): what the own FUSE session needs on /dev/fuse and
 * Node cannot do itself. Typed here, and loaded relative to the package root, which is found by
 * walking up to package.json (this file runs as src/fs/session/native.ts under tsx and as
 * dist/fs/session/native.js when compiled).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The addon version this code is written against (the addon's `version` export). */
export const FUSE_DEV_VERSION = 4;

/** The addon inside the package root. */
export const FUSE_DEV_ADDON = join('native', 'build', 'Release', 'tocfs_fuse_dev.node');

const BUILD_HINT = "run bash scripts/build-native.sh (needs make, g++ and Node's headers)";

/**
 * What the addon throws when a system call fails: `code` is the errno's name ('EPERM'),
 * `errno` the positive errno, `syscall` the call, and the message names the call and its
 * argument, e.g. "mount(/mnt/x): Operation not permitted". Bad arguments throw a TypeError
 * (code ERR_INVALID_ARG_TYPE) instead.
 */
export interface FuseDevError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** A running startReading. */
export interface FuseDevReading {
  /** Stops polling and closes the poll handle (the fd stays open). Idempotent; onRequests hears nothing after it. */
  stop(): void;
}

/** Everything is synchronous; failures throw a FuseDevError unless said otherwise. */
export interface FuseDev {
  /** The addon's interface version: FUSE_DEV_VERSION. */
  readonly version: number;

  /**
   * Opens /dev/fuse (O_RDWR | O_CLOEXEC) and mount(2)s it: `source` at `mountpoint`, type
   * `fsType` (e.g. "fuse.tocfs"), MS_NOSUID | MS_NODEV (| MS_RDONLY), with the data
   * `fd=N,rootmode=40000,user_id=<uid>,group_id=<gid>` plus `,options` when not empty (e.g.
   * "default_permissions,allow_other"). Returns the /dev/fuse fd (the caller closes it);
   * on failure the fd is closed again. Needs CAP_SYS_ADMIN.
   */
  mount(mountpoint: string, source: string, fsType: string, readOnly: boolean, options: string): number;

  /** umount2(2), with MNT_DETACH when `lazy`. */
  unmount(mountpoint: string, lazy: boolean): void;

  /**
   * Sets O_NONBLOCK on `fd` and polls it on Node's event loop (the poll keeps the loop alive
   * until stop()). When it is readable, reads requests into one `bufferSize`-byte scratch
   * buffer until EAGAIN, up to 64, and calls `onRequests` once with a copy of each (each
   * Buffer exactly one request long). For /dev/fuse `bufferSize` must be at least 8192 and
   * max_write + 4096 (the kernel answers EINVAL otherwise). Interrupted requests (ENOENT) are
   * skipped. `onRequests(null)`: the filesystem was unmounted (ENODEV) or the fd reached EOF;
   * `onRequests(null, error)`: reading failed with `error` (a FuseDevError). Either way
   * polling has stopped. An exception thrown by `onRequests` becomes an uncaught exception.
   * One reading per fd at a time.
   */
  startReading(fd: number, bufferSize: number, onRequests: (batch: Buffer[] | null, error?: FuseDevError) => void): FuseDevReading;

  /**
   * writev(2) of `buffers` (one reply) to `fd`. Returns the bytes written or, instead of
   * throwing, the NEGATIVE errno (the kernel answers -ENOENT when the request was interrupted,
   * -EINVAL for a malformed reply, -ENODEV once the connection is gone).
   */
  write(fd: number, buffers: Buffer[]): number;

  /**
   * FUSE_DEV_IOC_BACKING_OPEN: registers `fileFd` as a passthrough backing file with the
   * connection on `devFd`; returns its backing id (> 0) for FOPEN_PASSTHROUGH open replies.
   * Only after INIT negotiated FUSE_PASSTHROUGH and with CAP_SYS_ADMIN (EPERM otherwise).
   */
  backingOpen(devFd: number, fileFd: number): number;

  /** FUSE_DEV_IOC_BACKING_CLOSE: drops the connection's reference to a backing id. */
  backingClose(devFd: number, backingId: number): void;

  /**
   * A listening AF_UNIX stream socket (close-on-exec) at `path`, mode 0600; a stale socket
   * there is removed first (anything else there fails with EADDRINUSE). Returns its fd.
   */
  listenUnix(path: string): number;

  /**
   * Waits up to `timeoutMs` for a connection on `listenFd` (ETIMEDOUT after), then reads to
   * EOF the payload and the one fd sent with it (received close-on-exec), waiting at most
   * `timeoutMs` for each further piece. EPROTO when no fd, or more than one, came. Blocks
   * the event loop: meant for start-up, before serving.
   */
  acceptFd(listenFd: number, timeoutMs: number): { fd: number; payload: Buffer };

  /**
   * Reads the connected socket `socketFd` to its EOF: what was sent and the one descriptor
   * attached (fusermount's answer on `_FUSE_COMMFD`), with `timeoutMs` for each piece. Blocks
   * the event loop: meant for start-up.
   */
  receiveFd(socketFd: number, timeoutMs: number): { fd: number; payload: Buffer };

  /** Two connected Unix stream sockets, both close-on-exec (a child gets its end through spawn's stdio). */
  socketPair(): [number, number];

  /**
   * Connects to `path` and sends `payload` (not empty) with `fd` attached to its first bytes,
   * then shuts the connection down. Blocks until the receiver has taken what its socket
   * buffer cannot hold.
   */
  sendFd(path: string, fd: number, payload: Buffer): void;

  /**
   * Sends `message` (e.g. "FDSTORE=1\nFDNAME=fuse") with `fd` attached (none when null) to
   * systemd's notify socket `notifySocket` ($NOTIFY_SOCKET: a path, or '@name' in the
   * abstract namespace). Sent from this process, so it is the unit's main process sending.
   */
  notifyFdStore(notifySocket: string, message: string, fd: number | null): void;

  /** mallopt(M_ARENA_MAX, n): at most `n` glibc malloc arenas from now on. True when glibc took it. */
  limitMallocArenas(n: number): boolean;

  /** mallopt(M_MMAP_THRESHOLD, bytes): blocks of `bytes` or more get their own mapping, given back when freed. True when glibc took it. */
  setMallocMmapThreshold(bytes: number): boolean;

  /** malloc_trim(0): gives the free memory of every glibc arena back to the system. True when some was. */
  mallocTrim(): boolean;

  /** The free bytes glibc's arenas hold (mallinfo2's fordblks): what mallocTrim could give back, at most. */
  mallocFreeBytes(): number;
}

/** The nearest directory at or above `from` holding a package.json. */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

let loaded: FuseDev | undefined;

/** The addon, or why it cannot be used (not built, does not load, another version). */
export function loadFuseDev(): FuseDev | { unavailable: string } {
  if (loaded) return loaded;
  const root = packageRoot();
  if (root === undefined) return { unavailable: `no package.json above ${fileURLToPath(import.meta.url)} to find ${FUSE_DEV_ADDON} in` };
  const file = join(root, FUSE_DEV_ADDON);
  if (!existsSync(file)) return { unavailable: `${file} is not built: ${BUILD_HINT}` };
  let addon: FuseDev;
  try {
    addon = createRequire(join(root, 'package.json'))(file) as FuseDev;
  } catch (err) {
    return { unavailable: `${file} does not load (${(err as Error).message}): ${BUILD_HINT}` };
  }
  if (addon.version !== FUSE_DEV_VERSION) return { unavailable: `${file} is version ${String(addon.version)}, this tocfs needs ${FUSE_DEV_VERSION}: ${BUILD_HINT}` };
  return (loaded = addon);
}
