/**
 * A real systemd as PID 1, for tests of what only systemd does (its file descriptor store,
 * `systemctl restart`): this machine's own root booted with systemd-nspawn, through an
 * overlay so that nothing the container writes reaches the host. It boots basic.target only
 * (none of the host's services), shares the host's network (a registry on loopback), and gets
 * /dev/fuse. Commands run inside with nsenter.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const SYSTEMD = '/lib/systemd/systemd';
export const NSPAWN = '/usr/bin/systemd-nspawn';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code) || 1 : 0, stdout: String(stdout), stderr: String(stderr) }),
    ),
  );
}

/** Why a systemd container cannot run here, or false. */
export function systemdContainerSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (systemd-nspawn, overlay mounts)';
  if (!existsSync(SYSTEMD)) return `no ${SYSTEMD} (Debian: systemd)`;
  if (!existsSync(NSPAWN)) return `no ${NSPAWN} (Debian: systemd-container; scripts/setup.sh installs it)`;
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  return false;
}

async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    out.push(...text.split(/\s+/).filter(Boolean).map(Number));
  }
  return out;
}

/** One service manager in the container: the system's (as root) or a user's (`systemctl --user`, as that user). */
export interface ServiceManager {
  /** systemctl inside; rejects with its output when it fails. */
  systemctl(...args: string[]): Promise<string>;
  /** One property of a unit (`systemctl show -P`). */
  property(unit: string, name: string): Promise<string>;
  /** What the unit logged. */
  journal(unit: string): Promise<string>;
  /** Starts a long-running command as this manager's user. */
  spawn(args: string[]): ChildProcess;
  /** Runs a command as this manager's user. */
  exec(args: string[], timeoutMs?: number): Promise<RunResult>;
}

export class SystemdContainer implements ServiceManager {
  private constructor(
    /** The container's root as the host sees it (an overlay over /). */
    readonly root: string,
    private readonly dir: string,
    private readonly nspawn: ChildProcess,
    /** The container's PID 1, as the host numbers it. */
    readonly leader: number,
    private readonly output: () => string,
  ) {}

  /** Boots a container in `dir` (on a disk filesystem: the overlay's upper layer lives there); `binds` are host directories it sees as they are. */
  static async boot(dir: string, name: string, binds: string[] = []): Promise<SystemdContainer> {
    const root = join(dir, 'root');
    for (const d of ['upper', 'work', 'root']) await mkdir(join(dir, d), { recursive: true });
    const mounted = await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/,upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`, root]);
    if (mounted.code !== 0) throw new Error(`cannot make the container's root (overlay over /): ${mounted.stderr}`);
    let log = '';
    // --register=no --keep-unit: no systemd on the host to register with. Arguments after -- go to the container's systemd.
    const nspawn = spawn(NSPAWN, ['-D', root, '--boot', '--register=no', '--keep-unit', '--bind=/dev/fuse', ...binds.map((b) => `--bind=${b}`), '--console=passive', `--machine=${name}`, '--', '--unit=basic.target'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    nspawn.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    nspawn.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const cleanupMount = async (): Promise<void> => {
      await run('umount', ['-l', root]);
    };
    let leader: number | undefined;
    const deadline = Date.now() + 60_000;
    while (leader === undefined) {
      if (nspawn.exitCode !== null || Date.now() > deadline) {
        nspawn.kill('SIGKILL');
        await cleanupMount();
        throw new Error(`systemd-nspawn did not boot the container: ${log.trim().split('\n').slice(-10).join('\n')}`);
      }
      // nspawn's child (or grandchild) that runs systemd.
      const queue = await childrenOf(nspawn.pid!);
      for (let i = 0; i < queue.length && leader === undefined; i++) {
        const comm = (await readFile(`/proc/${queue[i]}/comm`, 'utf8').catch(() => '')).trim();
        if (comm === 'systemd') leader = queue[i];
        else queue.push(...(await childrenOf(queue[i]!)));
      }
      if (leader === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    const c = new SystemdContainer(root, dir, nspawn, leader, () => log);
    // systemctl cannot connect until systemd has made its private socket.
    let up = await c.exec(['systemctl', 'is-system-running', '--wait'], 120_000);
    while (!/running|degraded/.test(up.stdout) && /Failed to connect/.test(up.stderr) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      up = await c.exec(['systemctl', 'is-system-running', '--wait'], 120_000);
    }
    if (!/running|degraded/.test(up.stdout)) {
      await c.stop();
      throw new Error(`the container's systemd did not come up (${up.stdout.trim()} ${up.stderr.trim()}): ${log.trim().split('\n').slice(-10).join('\n')}`);
    }
    return c;
  }

  /** Runs a command inside the container (all its namespaces). */
  exec(args: string[], timeoutMs = 60_000): Promise<RunResult> {
    return run('nsenter', ['-t', String(this.leader), '-a', '--', ...args], timeoutMs);
  }

  /** Starts a long-running command inside the container. */
  spawn(args: string[]): ChildProcess {
    return spawn('nsenter', ['-t', String(this.leader), '-a', '--', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  }

  /** systemctl inside; rejects with its output when it fails. */
  async systemctl(...args: string[]): Promise<string> {
    const r = await this.exec(['systemctl', '--no-pager', ...args], 120_000);
    if (r.code !== 0) {
      const journal = await this.exec(['journalctl', '--no-pager', '-n', '40']);
      throw new Error(`systemctl ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}\n--- journal ---\n${journal.stdout}`);
    }
    return r.stdout;
  }

  /** One property of a unit (`systemctl show -P`). */
  async property(unit: string, name: string): Promise<string> {
    return (await this.systemctl('show', '-P', name, unit)).trim();
  }

  async journal(unit: string): Promise<string> {
    return (await this.exec(['journalctl', '--no-pager', '-o', 'cat', '-u', unit])).stdout;
  }

  /**
   * A user `name` (made inside the container) and their own service manager (user@UID.service,
   * started by the system manager as a login would), driven with `systemctl --user`.
   */
  async userManager(name: string): Promise<ServiceManager & { uid: number; home: string }> {
    const made = await this.exec(['useradd', '--create-home', name]);
    if (made.code !== 0) throw new Error(`useradd ${name}: ${made.stderr}`);
    const uid = Number((await this.exec(['id', '-u', name])).stdout.trim());
    const home = `/home/${name}`;
    await this.systemctl('start', `user@${uid}.service`);
    const as = (args: string[]): string[] => ['runuser', '-u', name, '--', 'env', `HOME=${home}`, `XDG_RUNTIME_DIR=/run/user/${uid}`, ...args];
    const container = this;
    const manager: ServiceManager & { uid: number; home: string } = {
      uid,
      home,
      async systemctl(...args) {
        const r = await container.exec(as(['systemctl', '--user', '--no-pager', ...args]), 120_000);
        if (r.code !== 0) {
          const journal = await container.exec(['journalctl', '--no-pager', '-n', '40', `_UID=${uid}`]);
          throw new Error(`systemctl --user ${args.join(' ')} (as ${name}) failed (${r.code}): ${r.stderr.trim()}\n--- journal ---\n${journal.stdout}`);
        }
        return r.stdout;
      },
      async property(unit, prop) {
        return (await manager.systemctl('show', '-P', prop, unit)).trim();
      },
      async journal(unit) {
        return (await container.exec(['journalctl', '--no-pager', '-o', 'cat', `_SYSTEMD_USER_UNIT=${unit}`, `_UID=${uid}`])).stdout;
      },
      spawn: (args) => container.spawn(as(args)),
      exec: (args, timeoutMs) => container.exec(as(args), timeoutMs),
    };
    return manager;
  }

  /** Powers the container off (falls back to SIGKILL) and removes its root. */
  async stop(): Promise<void> {
    if (this.nspawn.exitCode === null) {
      const exited = new Promise<void>((r) => this.nspawn.once('exit', () => r()));
      // SIGTERM asks nspawn for a clean power-off of the container.
      this.nspawn.kill('SIGTERM');
      const t = setTimeout(() => this.nspawn.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
    await run('umount', ['-l', this.root]);
    await rm(this.dir, { recursive: true, force: true });
  }

  get bootLog(): string {
    return this.output();
  }
}
