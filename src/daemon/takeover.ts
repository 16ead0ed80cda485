/**
 * Live hand-over of a mount between two tocfs processes (daemon.fuse_session = tocfs), so a
 * restart or an upgrade never fails a running container:
 *
 * 1. The successor (`--takeover`) opens what it will serve, listens on a socket beside the
 *    mount's state file and sends the running daemon SIGUSR2.
 * 2. The running daemon stops reading /dev/fuse, lets the requests in flight finish, and
 *    sends the descriptor (SCM_RIGHTS) with its node table; then it exits without unmounting.
 * 3. The successor answers on the same kernel connection. Requests made in between wait in
 *    the kernel's queue.
 */
import { closeSync, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { TocfsError } from '../errors.js';
import type { MountedFs } from '../fs/mount.js';
import { loadFuseDev } from '../fs/session/native.js';
import type { SessionState } from '../fs/session/session.js';
import { isAlive } from '../process-alive.js';
import type { FdStore } from './fd-store.js';
import { mountFiles, readMountState } from './state.js';

/** How long a successor waits for the running daemon to drain and hand over. */
const HANDOVER_TIMEOUT_MS = 60_000;

export function takeoverSocket(mountpoint: string): string {
  return mountFiles(mountpoint).state.replace(/\.json$/, '.takeover.sock');
}

function parseState(payload: Buffer, pid: number): SessionState {
  const s = JSON.parse(payload.toString('utf8')) as SessionState & { refused?: string };
  if (typeof s?.refused === 'string') throw new TocfsError(`the running tocfs (pid ${pid}) refused to hand over: ${s.refused}`, 'ETAKEOVER');
  if (s?.version !== 1 || !Array.isArray(s.nodes) || typeof s.minor !== 'number') throw new TocfsError('the running tocfs handed over a session state this version cannot read');
  return s;
}

/** Asks the daemon serving `mountpoint` for its FUSE session; resolves with the descriptor and state. */
export async function requestHandOver(mountpoint: string, log: Logger): Promise<{ fd: number; state: SessionState; pid: number }> {
  const dev = loadFuseDev();
  if ('unavailable' in dev) throw new TocfsError(`cannot take over ${mountpoint}: ${dev.unavailable}`);
  const running = await readMountState(mountpoint);
  if (!running || !isAlive(running.pid)) throw new TocfsError(`no running tocfs serves ${mountpoint}: start it without --takeover`);
  const socket = takeoverSocket(mountpoint);
  const listening = dev.listenUnix(socket);
  try {
    process.kill(running.pid, 'SIGUSR2');
    log.info({ mountpoint, pid: running.pid }, 'asked the running tocfs to hand its FUSE session over');
    // Blocks the event loop; nothing is served by this process yet.
    const { fd, payload } = (() => {
      try {
        return dev.acceptFd(listening, HANDOVER_TIMEOUT_MS);
      } catch (err) {
        throw new TocfsError(
          `the running tocfs (pid ${running.pid}) did not hand over ${mountpoint} (${(err as Error).message}): is it serving with daemon.fuse_session = tocfs? Its log: ${running.log ?? mountFiles(mountpoint).log}`,
          'ETAKEOVER',
          { cause: err },
        );
      }
    })();
    try {
      return { fd, state: parseState(payload, running.pid), pid: running.pid };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  } finally {
    closeSync(listening);
    await rm(socket, { force: true });
  }
}

/** What untilStopped resolves with when a successor asks for the session (SIGUSR2). */
export const TAKEOVER_REQUESTED = 'takeover';
export const HANDED_OVER = 'handed over';

/**
 * Waits for `stopped`; while that is a successor asking for the session, hands the session over
 * (`release` first) and resolves with HANDED_OVER, or, when that fails, serves on and waits
 * for `again()`. A SIGTERM while systemd restarts the unit leaves the session in `fdStore`,
 * also HANDED_OVER. Otherwise resolves with why the daemon stops.
 */
export async function serveUntilStopped(stopped: Promise<string>, again: () => Promise<string>, mounted: MountedFs, log: Logger, release: () => Promise<void>, fdStore?: FdStore): Promise<string> {
  let why = await stopped;
  while (why === TAKEOVER_REQUESTED) {
    try {
      await handOver(mounted, log, release);
      return HANDED_OVER;
    } catch (err) {
      log.error({ err }, 'hand-over failed: still serving');
      why = await again();
    }
  }
  // systemd restarting the unit: the next start takes the session from systemd's fd store.
  if (why === 'SIGTERM' && fdStore && (await fdStore.keepForRestart(mounted))) {
    await release().catch((err: unknown) => log.warn({ err }, 'could not release everything before the restart'));
    return HANDED_OVER;
  }
  return why;
}

/**
 * The running daemon's side: hands `mounted` over to the successor waiting on the socket.
 * `release` runs once requests have drained, before the successor is let in: it gives up
 * what the successor takes next (the metrics port).
 */
export async function handOver(mounted: MountedFs, log: Logger, release?: () => Promise<void>): Promise<void> {
  const dev = loadFuseDev();
  if ('unavailable' in dev) throw new TocfsError(dev.unavailable);
  if (!mounted.handOver) {
    const reason = `${mounted.mountpoint} is served through fuse-native, which cannot hand a session over: restart it with daemon.fuse_session = tocfs`;
    // Tell the successor at once rather than let it wait out its timeout (an fd must ride along).
    const devNull = openSync('/dev/null', 'r');
    try {
      dev.sendFd(takeoverSocket(mounted.mountpoint), devNull, Buffer.from(JSON.stringify({ version: 1, refused: reason })));
    } finally {
      closeSync(devNull);
    }
    throw new TocfsError(reason);
  }
  const started = Date.now();
  const { fd, state, resume } = await mounted.handOver();
  await release?.().catch((err: unknown) => log.warn({ err }, 'could not release everything before handing over'));
  try {
    dev.sendFd(takeoverSocket(mounted.mountpoint), fd, Buffer.from(JSON.stringify(state)));
  } catch (err) {
    resume();
    throw new TocfsError(`the successor did not take ${mounted.mountpoint} (${(err as Error).message}): serving on`, 'ETAKEOVER', { cause: err });
  }
  log.info({ mountpoint: mounted.mountpoint, nodes: state.nodes.length, ms: Date.now() - started }, 'handed the FUSE session over');
}
