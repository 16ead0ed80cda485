/**
 * Mounting with tocfs's own FUSE session: mount(2) with a /dev/fuse descriptor (the native
 * piece, native.ts), then FuseSession answers on it. Unmounting runs umount(8) in a child
 * process: the kernel sends DESTROY during umount and waits for the answer, which this
 * process's event loop must stay free to give.
 */
import { execFile } from 'node:child_process';
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

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((res, rej) => execFile(cmd, args, { timeout: 30_000 }, (err, _o, stderr) => (err ? rej(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`)) : res())));
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
        if (await isMounted(mnt)) {
          // -i: no umount.fuse helper; a busy mount is detached and goes when its last user does.
          await run('umount', ['-i', mnt]).catch(() => run('umount', ['-i', '-l', mnt]));
        }
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

/** Mounts `ops` at `mnt` with the own session, or says why it cannot (the caller falls back to fuse-native). */
export async function mountOwnSession(mnt: string, ops: FuseOperations, opts: OwnSessionOptions): Promise<OwnSessionMount | { unavailable: string; unprivileged?: boolean }> {
  const dev = loadFuseDev();
  if ('unavailable' in dev) return dev;
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
