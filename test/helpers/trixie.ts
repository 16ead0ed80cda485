/**
 * Debian trixie's Podman 5.4.2 for tests, from the root scripts/setup-trixie.sh builds. The
 * root is entered in a private mount namespace that one holder process keeps alive, so the
 * overlay mounts Podman makes there outlive each `podman` command (a namespace per command
 * would lose them between `run` and `rm`). Directories the tests share with it (the work dir,
 * the store's FUSE mountpoint) are bind-mounted at the same paths inside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { have } from './podman.js';

export const TRIXIE_ROOT = process.env.TOCFS_TRIXIE_ROOT || '/var/lib/tocfs-test/trixie';

/** Why Podman 5 cannot run here, or false. */
export function trixieSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'the trixie root is entered as root';
  if (!have('unshare') || !have('nsenter')) return 'unshare and nsenter (util-linux) are needed';
  const ready = `${TRIXIE_ROOT}/.tocfs-ready`;
  if (!existsSync(ready) || !readFileSync(ready, 'utf8').includes('podman')) return `no trixie root with Podman at ${TRIXIE_ROOT}: run scripts/setup-trixie.sh (npm test does)`;
  return false;
}

/**
 * Shell lines making root $R usable for Podman inside a private mount namespace, and
 * rbind-mounting the host directories "$@" at the same paths in it (a FUSE mount under one is
 * carried along).
 */
export const ROOT_MOUNTS = `
mount --bind "$R" "$R"            # / of the root must be a mount point: runc pivots out of it
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
for d in "$@"; do mkdir -p "$R$d"; mount --rbind "$d" "$R$d"; done
`;

/**
 * A process holding a private mount namespace, set up by `script` (run by bash with `args`),
 * which prints "ready" and then sleeps. The namespace and its mounts last while it or any
 * process started in it lives.
 */
export class NamespaceHolder {
  private constructor(private readonly holder: ChildProcess) {}

  static async start(script: string, args: string[], what: string): Promise<NamespaceHolder> {
    const holder = spawn('unshare', ['-m', '--propagation', 'private', 'bash', '-c', `set -e\n${script}\necho ready\nexec sleep infinity\n`, '_', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    holder.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) resolve();
      });
      holder.once('exit', (code) => reject(new Error(`${what} failed (${code}): ${out}`)));
    });
    return new NamespaceHolder(holder);
  }

  get pid(): number {
    return this.holder.pid!;
  }

  /** Ends the namespace: its mounts go once no process is left in it (stop containers first). */
  async close(): Promise<void> {
    if (this.holder.exitCode !== null || this.holder.signalCode !== null) return;
    const gone = new Promise((r) => this.holder.once('exit', r));
    this.holder.kill('SIGKILL');
    await gone;
  }
}

export class TrixieNamespace {
  private constructor(private readonly holder: NamespaceHolder, readonly root: string) {}

  /**
   * Enters a fresh namespace with `binds` (host directories, rbind-mounted at the same paths:
   * a FUSE mount under one is carried along). Mount the store before this: later host mounts
   * do not reach a private namespace.
   */
  static async enter(binds: string[], root = TRIXIE_ROOT): Promise<TrixieNamespace> {
    const holder = await NamespaceHolder.start(`R=$1; shift\n${ROOT_MOUNTS}`, [root, ...binds], 'entering the trixie root');
    return new TrixieNamespace(holder, root);
  }

  /** argv that runs `command` (a program inside the root, with `env` only) in the namespace. */
  argv(command: string[], env: Record<string, string>): string[] {
    const vars = Object.entries({ PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8', ...env }).map(([k, v]) => `${k}=${v}`);
    return ['nsenter', '-t', String(this.holder.pid), '-m', '--', 'chroot', this.root, '/usr/bin/env', '-i', ...vars, ...command];
  }

  /** Ends the namespace: its mounts go once no process is left in it (stop containers first). */
  close(): Promise<void> {
    return this.holder.close();
  }
}
