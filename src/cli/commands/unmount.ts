/**
 * `tocfs unmount MOUNTPOINT`: unmounts a tocfs mount and waits for its daemon to exit. A
 * stale mount (its daemon died: "Transport endpoint is not connected") is detached lazily.
 */
import { execFile } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Argv, CommandModule } from 'yargs';
import { readMountState, removeMountState } from '../../daemon/state.js';
import { isAlive } from '../../process-alive.js';
import { TocfsError } from '../../errors.js';
import { FS_TYPE, mountsAt } from '../../fs/mount-table.js';
import { withExamples } from '../help.js';

const run = promisify(execFile);

interface UnmountArgs {
  mountpoint: string;
  lazy: boolean;
}

const DAEMON_EXIT_TIMEOUT_MS = 10_000;

async function fusermount(mountpoint: string, lazy: boolean): Promise<void> {
  try {
    await run('fusermount', [lazy ? '-uz' : '-u', '--', mountpoint]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') {
      // No fusermount (root may still umount).
      await run('umount', lazy ? ['-l', mountpoint] : [mountpoint]);
      return;
    }
    throw new TocfsError((err.stderr || err.message).trim().replace(/^fusermount: /, ''), 'EUNMOUNT', { cause: e });
  }
}

/** statfs always reaches the daemon (stat may be answered from the kernel's attribute cache). */
async function isStale(mountpoint: string): Promise<boolean> {
  try {
    await statfs(mountpoint);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

export async function unmount(mountpointArg: string, lazy = false): Promise<void> {
  const mountpoint = resolve(mountpointArg);
  const state = await readMountState(mountpoint);
  const daemon = state && isAlive(state.pid) ? state.pid : undefined;
  const types = await mountsAt(mountpoint);
  const top = types[types.length - 1];
  if (top !== undefined && top !== FS_TYPE) throw new TocfsError(`${mountpoint} is a ${top} mount, not a tocfs one`);
  if (top === FS_TYPE) {
    const stale = daemon === undefined || (await isStale(mountpoint));
    try {
      await fusermount(mountpoint, lazy || stale);
    } catch (e) {
      if (!/not connected/i.test((e as Error).message)) {
        throw new TocfsError(`cannot unmount ${mountpoint}: ${(e as Error).message}${/busy/i.test((e as Error).message) ? ' (files are open there; close them or use --lazy)' : ''}`, 'EUNMOUNT', { cause: e });
      }
      await fusermount(mountpoint, true);
    }
  } else if (daemon === undefined) {
    throw new TocfsError(`${mountpoint} is not a tocfs mount`);
  }
  if (daemon !== undefined) {
    // It notices the unmount by itself; the signal makes it prompt.
    try {
      process.kill(daemon, 'SIGTERM');
    } catch {
      // already gone
    }
    if (!(await waitForExit(daemon, DAEMON_EXIT_TIMEOUT_MS))) throw new TocfsError(`unmounted ${mountpoint}, but its daemon (pid ${daemon}) did not exit${state?.log ? `; see ${state.log}` : ''}`);
  }
  if (state) await removeMountState(mountpoint, state.pid);
}

export const unmountCommand: CommandModule<object, UnmountArgs> = {
  command: 'unmount <mountpoint>',
  aliases: ['umount'],
  describe: 'Unmount a tocfs mount and stop its daemon',
  builder: (y: Argv) =>
    withExamples(
      y
        .positional('mountpoint', { type: 'string', demandOption: true, describe: 'Where the image is mounted' })
        .option('lazy', { type: 'boolean', default: false, describe: 'Detach now even if files are open there (like umount -l)' }) as unknown as Argv<UnmountArgs>,
      [['$0 unmount /mnt/hello', 'End a mount made by tocfs mount']],
    ),
  handler: async (argv) => {
    await unmount(argv.mountpoint, argv.lazy);
  },
};
