/**
 * Mounting with tocfs's own FUSE session: mount(2) with a /dev/fuse descriptor as root (the
 * native piece, native.ts), or for a user through fusermount, which sends the descriptor
 * back; then FuseSession answers on it. Unmounting runs umount(8) or fusermount -u in a child
 * process: the kernel sends DESTROY during umount and waits for the answer, which this
 * process's event loop must stay free to give.
 */
import { execFile, spawnSync } from 'node:child_process';
import { closeSync } from 'node:fs';
import type { Logger } from 'pino';
import type { FuseOperations } from '../fuse-binding.js';
import { FS_TYPE, isMounted } from '../mount-table.js';
import { loadFuseDev, type FuseDev } from './native.js';
import { FuseSession, type SessionState } from './session.js';

export interface OwnSessionOptions {
  /** The mount's source, as the mount table shows it (no commas or spaces). */
  label: string;
  logger: Logger;
  readOnly: boolean;
  allowOther: boolean;
  validSeconds: number;
  negativeSeconds: number;
  passthrough: boolean;
}

export interface OwnSessionMount {
  readonly mountpoint: string;
  readonly session: 'tocfs';
  readonly fuse: FuseSession;
  readonly deviceFd: number;
  unmount(): Promise<void>;
  /** Stops answering, lets requests in flight finish, and gives the descriptor and state to a successor; the mount stays. */
  handOver(): Promise<HandedOver>;
}

export interface HandedOver {
  fd: number;
  state: SessionState;
  /** Serves on after all, when the successor did not take the session. */
  resume(): void;
}

/** How long fusermount may take to mount and send the descriptor back. */
const FUSERMOUNT_TIMEOUT_MS = 30_000;

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((res, rej) => execFile(cmd, args, { timeout: 30_000 }, (err, _o, stderr) => (err ? rej(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`)) : res())));
}

/**
 * Unmounts `mnt` in a child process: umount as root (-i: no umount.fuse helper), fusermount
 * as a user. A busy mount, or any with `detach`, is detached and goes when its last user does.
 */
export function unmountOwnSession(mnt: string, detach = false): Promise<void> {
  const [cmd, plain, lazy] = isRoot() ? ['umount', ['-i'], ['-i', '-l']] : ['fusermount', ['-u'], ['-u', '-z']];
  if (detach) return run(cmd, [...lazy, mnt]);
  return run(cmd, [...plain, mnt]).catch(() => run(cmd, [...lazy, mnt]));
}

function serve(mnt: string, dev: FuseDev, fd: number, ops: FuseOperations, opts: OwnSessionOptions, resumed?: SessionState): OwnSessionMount {
  let closedReason: string | undefined;
  let onClosed: (() => void) | undefined;
  const closed = new Promise<void>((res) => (onClosed = res));
  const fuse = new FuseSession(
    {
      ops,
      dev,
      fd,
      logger: opts.logger,
      validSeconds: opts.validSeconds,
      negativeSeconds: opts.negativeSeconds,
      passthrough: opts.passthrough,
      onClosed: (reason) => {
        closedReason = reason;
        opts.logger.debug({ mountpoint: mnt, reason }, 'FUSE session ended');
        onClosed?.();
      },
    },
    resumed,
  );
  fuse.start();
  let unmounted: Promise<void> | undefined;
  let handedOver = false;
  return {
    mountpoint: mnt,
    session: 'tocfs',
    fuse,
    deviceFd: fd,
    unmount() {
      unmounted ??= (async () => {
        if (handedOver) return;
        if (await isMounted(mnt)) await unmountOwnSession(mnt);
        // The kernel ends the session (ENODEV) once the mount is gone; a detached one may linger.
        await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
        if (closedReason === undefined) fuse.stop();
        closeSync(fd);
      })();
      return unmounted;
    },
    async handOver() {
      handedOver = true;
      const state = await fuse.handOver();
      return {
        fd,
        state,
        resume: () => {
          handedOver = false;
          fuse.resume();
        },
      };
    },
  };
}

/**
 * A user's mount: fusermount (setuid root) opens /dev/fuse, mounts, and sends the descriptor
 * back over the socket named by `_FUSE_COMMFD`, as libfuse does for fuse-native.
 */
function mountWithFusermount(mnt: string, dev: FuseDev, opts: OwnSessionOptions): number | { unavailable: string } {
  const [ours, theirs] = dev.socketPair();
  try {
    const options = ['default_permissions', `fsname=${opts.label}`, `subtype=${FS_TYPE.replace(/^fuse\./, '')}`, ...(opts.readOnly ? ['ro'] : []), ...(opts.allowOther ? ['allow_other'] : [])].join(',');
    // The child gets `theirs` as its fd 3; it exits once it has sent the descriptor.
    const child = spawnSync('fusermount', ['-o', options, '--', mnt], { stdio: ['ignore', 'ignore', 'pipe', theirs], env: { ...process.env, _FUSE_COMMFD: '3' }, timeout: FUSERMOUNT_TIMEOUT_MS });
    closeSync(theirs);
    if (child.error) return { unavailable: `fusermount: ${child.error.message}` };
    if (child.status !== 0) return { unavailable: `fusermount -o ${options} ${mnt}: ${String(child.stderr).trim() || `exit ${child.status}`}` };
    return dev.receiveFd(ours, FUSERMOUNT_TIMEOUT_MS).fd;
  } catch (err) {
    return { unavailable: `fusermount did not send the FUSE descriptor: ${(err as Error).message}` };
  } finally {
    closeSync(ours);
  }
}

/**
 * Mounts `ops` at `mnt` with the own session: mount(2) as root, fusermount otherwise; or says
 * why it cannot (the caller falls back to fuse-native).
 */
export async function mountOwnSession(mnt: string, ops: FuseOperations, opts: OwnSessionOptions): Promise<OwnSessionMount | { unavailable: string; unprivileged?: boolean }> {
  const dev = loadFuseDev();
  if ('unavailable' in dev) return dev;
  if (!isRoot()) {
    const fd = mountWithFusermount(mnt, dev, opts);
    if (typeof fd !== 'number') return { ...fd, unprivileged: true };
    // The kernel lets only CAP_SYS_ADMIN register backing files.
    return serve(mnt, dev, fd, ops, { ...opts, passthrough: false });
  }
  const options = ['default_permissions', ...(opts.allowOther ? ['allow_other'] : [])].join(',');
  let fd: number;
  try {
    fd = dev.mount(mnt, opts.label, FS_TYPE, opts.readOnly, options);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EPERM' || code === 'EACCES') return { unavailable: `mount(2) needs root (CAP_SYS_ADMIN): ${(err as Error).message}`, unprivileged: true };
    throw err;
  }
  return serve(mnt, dev, fd, ops, opts);
}

/** Serves a session handed over by a predecessor (same mount, same kernel connection). */
export function resumeOwnSession(mnt: string, fd: number, state: SessionState, ops: FuseOperations, opts: OwnSessionOptions): OwnSessionMount {
  const dev = loadFuseDev();
  if ('unavailable' in dev) throw new Error(`cannot take over ${mnt}: ${dev.unavailable}`);
  return serve(mnt, dev, fd, ops, opts, state);
}
