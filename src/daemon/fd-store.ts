/**
 * Restarts under systemd that running containers never notice, through systemd's file
 * descriptor store (`FileDescriptorStoreMax=` in the unit): systemd keeps the mount's
 * /dev/fuse descriptor while the service restarts and passes it to the next start in
 * $LISTEN_FDS, so the kernel connection, and the mount on it, never end.
 *
 * - Once mounted, the daemon stores its descriptor (FDNAME=tocfs-fuse).
 * - On SIGTERM it asks systemd whether its unit is restarting (the unit's job is a restart:
 *   `systemctl restart`, or an upgrade's `try-restart`). A stop and a restart both arrive as
 *   SIGTERM; only the job tells them apart. When restarting, it drains like a hand-over
 *   (daemon/takeover.ts), stores the session state as a deleted file's descriptor
 *   (FDNAME=tocfs-state) and exits without unmounting. A stop unmounts as before; systemd
 *   then closes what it kept.
 * - The next start finds both and answers on the same connection; requests made in between
 *   waited in the kernel's queue. A descriptor without state (the daemon died) belongs to a
 *   session nobody can go on serving: that mount is detached and mounted afresh.
 */
import { execFile } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, readSync, unlinkSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import type { MountedFs } from '../fs/mount.js';
import { isMounted } from '../fs/mount-table.js';
import { unmountOwnSession } from '../fs/session/mount.js';
import { loadFuseDev, type FuseDev } from '../fs/session/native.js';
import type { SessionState } from '../fs/session/session.js';
import { ensureRuntimeDir, mountFiles } from './state.js';

export const FUSE_FD_NAME = 'tocfs-fuse';
export const STATE_FD_NAME = 'tocfs-state';
/** $LISTEN_FDS numbers passed descriptors from here (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;
const SYSTEMCTL_TIMEOUT_MS = 10_000;

/** What a restarting daemon leaves for the next start, beside the descriptor. */
interface StoredSession {
  mountpoint: string;
  session: SessionState;
}

/** Descriptors systemd passed to this process, by name (sd_listen_fds_with_names). Clears the variables, as children must not take them for theirs. */
export function passedFds(env: NodeJS.ProcessEnv = process.env): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const count = Number(env.LISTEN_FDS);
  const forUs = Number(env.LISTEN_PID) === process.pid;
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (!forUs || !Number.isInteger(count) || count <= 0) return out;
  for (let i = 0; i < count; i++) {
    const name = names[i] || 'unknown';
    out.set(name, [...(out.get(name) ?? []), LISTEN_FDS_START + i]);
  }
  return out;
}

/** A systemd unit: its name, and whether a user's manager (systemctl --user) runs it. */
export interface Unit {
  name: string;
  user: boolean;
}

/** The systemd unit this process runs in, from its cgroup (`…/tocfs-store.service`; under `user@UID.service/` for a user's manager). */
export function ownUnit(cgroupFile = '/proc/self/cgroup'): Unit | undefined {
  let text: string;
  try {
    text = readFileSync(cgroupFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const m = /\/([^/]+\.service)$/.exec(line.trim());
    if (m) return { name: m[1]!, user: /\/user@\d+\.service\//.test(line) };
  }
  return undefined;
}

function systemctl(unit: Unit, args: string[]): Promise<string> {
  const all = ['--no-pager', ...(unit.user ? ['--user'] : []), ...args];
  return new Promise((res, rej) =>
    execFile('systemctl', all, { timeout: SYSTEMCTL_TIMEOUT_MS }, (err, stdout, stderr) =>
      err ? rej(new Error(`systemctl ${all.join(' ')}: ${String(stderr).trim() || err.message}`)) : res(String(stdout)),
    ),
  );
}

/** True when `unit`'s pending job is a restart, in `systemctl list-jobs` output (JOB UNIT TYPE STATE). */
export function restartJobIn(listJobs: string, unit: string): boolean {
  return listJobs.split('\n').some((line) => {
    const [, name, type] = line.trim().split(/\s+/);
    return name === unit && type !== undefined && type.includes('restart');
  });
}

/** Detaches a mount whose connection nobody answers (anything that looked at it would hang); the kernel then ends the connection, and systemd drops the copy it kept. */
async function detach(mnt: string, log: Logger): Promise<void> {
  if (await isMounted(mnt)) await unmountOwnSession(mnt, true).catch((err: unknown) => log.warn({ err, mountpoint: mnt }, 'cannot detach the mount of the kept FUSE session'));
}

function readWhole(fd: number): Buffer {
  const buf = Buffer.alloc(fstatSync(fd).size);
  for (let at = 0; at < buf.length; ) {
    const n = readSync(fd, buf, at, buf.length - at, at);
    if (n === 0) break;
    at += n;
  }
  return buf;
}

function parseStored(bytes: Buffer, mountpoint: string): SessionState | string {
  let s: StoredSession;
  try {
    s = JSON.parse(bytes.toString('utf8')) as StoredSession;
  } catch (err) {
    return `its state is not JSON (${(err as Error).message})`;
  }
  if (s?.mountpoint !== mountpoint) return `it was kept for ${String(s?.mountpoint)}, not ${mountpoint}`;
  const st = s.session;
  if (st?.version !== 1 || !Array.isArray(st.nodes) || typeof st.minor !== 'number') return 'its state is of a version this tocfs cannot read';
  return st;
}

export class FdStore {
  private storedFuse = false;

  private constructor(
    private readonly dev: FuseDev,
    private readonly notifySocket: string,
    private readonly systemdUnit: Unit,
    private readonly mountpoint: string,
    private readonly log: Logger,
    /** The session the previous start of this unit left to go on serving. */
    readonly inherited: { fd: number; state: SessionState } | undefined,
  ) {
    this.storedFuse = inherited !== undefined;
  }

  /**
   * The unit's fd store, when this daemon runs under systemd with one (FileDescriptorStoreMax
   * above 0) and the own FUSE session can be used; undefined otherwise. Takes over what a
   * previous start left: a session to resume (`inherited`), or one nobody can serve, detached.
   */
  static async open(mountpoint: string, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<FdStore | undefined> {
    const passed = passedFds(env);
    const notifySocket = env.NOTIFY_SOCKET;
    const dev = loadFuseDev();
    const own = ownUnit();
    const mnt = resolve(mountpoint);
    if (!notifySocket || 'unavailable' in dev || !own) {
      for (const fds of passed.values()) for (const fd of fds) closeSync(fd);
      if (passed.has(FUSE_FD_NAME)) {
        // Say, an upgrade without the native piece: nobody here can answer that connection.
        const why = 'unavailable' in dev ? dev.unavailable : 'not run by systemd';
        log.warn({ mountpoint: mnt }, `cannot go on serving the FUSE session systemd kept (${why}): mounting afresh`);
        await detach(mnt, log);
      }
      return undefined;
    }
    const unit = own.name;
    // systemd 254 and later say it in $FDSTORE; earlier ones are asked.
    const max = env.FDSTORE !== undefined ? Number(env.FDSTORE) : Number((await systemctl(own, ['show', '-P', 'FileDescriptorStoreMax', unit]).catch(() => '0')).trim());
    if (!(max > 0)) {
      log.info({ unit }, `systemd keeps no descriptors for ${unit} (FileDescriptorStoreMax=0): a restart of the unit unmounts, and running containers see errors`);
      return undefined;
    }
    const take = (name: string): number | undefined => {
      const fds = passed.get(name) ?? [];
      for (const extra of fds.slice(1)) closeSync(extra);
      passed.delete(name);
      return fds[0];
    };
    const fuseFd = take(FUSE_FD_NAME);
    const stateFd = take(STATE_FD_NAME);
    for (const [name, fds] of passed) {
      log.warn({ name, fds }, 'systemd passed descriptors tocfs did not store: closing them');
      for (const fd of fds) closeSync(fd);
    }
    const store = (inherited?: { fd: number; state: SessionState }): FdStore => new FdStore(dev, notifySocket, own, mnt, log, inherited);
    const remove = (name: string): void => {
      try {
        dev.notifyFdStore(notifySocket, `FDSTOREREMOVE=1\nFDNAME=${name}`, null);
      } catch (err) {
        log.warn({ err, unit, name }, 'cannot tell systemd to drop a descriptor it keeps');
      }
    };
    let state: SessionState | string = 'the last run of the unit left no session state (it did not stop cleanly)';
    if (stateFd !== undefined) {
      state = parseStored(readWhole(stateFd), mnt);
      closeSync(stateFd);
      remove(STATE_FD_NAME);
    }
    if (fuseFd === undefined) return store();
    if (typeof state !== 'string' && (await isMounted(mnt))) {
      log.info({ unit, mountpoint: mnt, nodes: state.nodes.length }, 'serving on the FUSE session systemd kept across the restart');
      return store({ fd: fuseFd, state });
    }
    // The mount (if still there) hangs on a connection nobody answers: detach it before anything looks at it.
    const why = typeof state === 'string' ? state : 'its mount is gone';
    log.warn({ unit, mountpoint: mnt }, `cannot go on serving the FUSE session systemd kept (${why}): mounting afresh`);
    await detach(mnt, log);
    closeSync(fuseFd);
    remove(FUSE_FD_NAME);
    return store();
  }

  private notify(message: string, fd: number | null = null): void {
    this.dev.notifyFdStore(this.notifySocket, message, fd);
  }

  get unit(): string {
    return this.systemdUnit.name;
  }

  /** Hands the mount's descriptor to systemd to keep (a fresh mount; a resumed one is kept already). */
  keep(mounted: MountedFs): void {
    if (this.storedFuse || mounted.deviceFd === undefined) return;
    try {
      this.notify(`FDSTORE=1\nFDNAME=${FUSE_FD_NAME}`, mounted.deviceFd);
      this.storedFuse = true;
      this.log.info({ unit: this.unit }, "the FUSE session is kept in systemd's fd store: systemctl restart keeps the mount serving");
    } catch (err) {
      this.log.warn({ err, unit: this.unit }, 'cannot store the FUSE descriptor with systemd: a restart of the unit will unmount');
    }
  }

  /** Whether systemd is restarting this unit (asked on SIGTERM). */
  async restarting(): Promise<boolean> {
    try {
      return restartJobIn(await systemctl(this.systemdUnit, ['list-jobs', '--no-legend']), this.unit);
    } catch (err) {
      this.log.warn({ err, unit: this.unit }, 'cannot ask systemd whether the unit restarts: taking SIGTERM for a stop');
      return false;
    }
  }

  /**
   * On SIGTERM: when systemd restarts the unit, drains the session and stores its state for the
   * next start, leaving the mount; true then. False (nothing changed) for a stop.
   */
  async keepForRestart(mounted: MountedFs): Promise<boolean> {
    if (!this.storedFuse || !mounted.handOver || !(await this.restarting())) return false;
    const started = Date.now();
    const { state, resume } = await mounted.handOver();
    try {
      await ensureRuntimeDir();
      // A deleted file: the state lives exactly as long as systemd keeps its descriptor.
      const file = mountFiles(this.mountpoint).state.replace(/\.json$/, `.restart-${process.pid}.json`);
      writeFileSync(file, JSON.stringify({ mountpoint: this.mountpoint, session: state } satisfies StoredSession), { mode: 0o600 });
      const fd = openSync(file, 'r');
      unlinkSync(file);
      try {
        this.notify(`FDSTOREREMOVE=1\nFDNAME=${STATE_FD_NAME}`);
        this.notify(`FDSTORE=1\nFDNAME=${STATE_FD_NAME}`, fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      resume();
      this.log.error({ err, unit: this.unit }, 'cannot keep the session state with systemd: unmounting as for a stop');
      return false;
    }
    this.log.info({ unit: this.unit, mountpoint: this.mountpoint, nodes: state.nodes.length, ms: Date.now() - started }, 'systemd restarts the unit: leaving the mount to the next start');
    return true;
  }
}
