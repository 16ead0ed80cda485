/**
 * A real non-root user for rootless tests, made by root: useradd with a home, subordinate
 * ID ranges in /etc/subuid and /etc/subgid, an XDG_RUNTIME_DIR as a login would have;
 * `tocfs store` run as that user; rootless Podman run as that user (runuser), reading the
 * user's ~/.config/containers/. Everything is undone by `remove()`.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile, chown } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { have, LOADER, storeKeyOf, storeLayersIn } from './podman.js';
import { storeArgs, superviseStore, type RunningStore } from './store.js';
import { NamespaceHolder, ROOT_MOUNTS } from './trixie.js';

/** The checkout: `--import tsx` resolves from the working directory. */
export const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Why rootless Podman tests cannot run here, or false. */
export function rootlessSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to create a user (the test then runs everything as that user)';
  if (!have('podman') || !have('runc')) return 'podman and runc are needed';
  if (!LOADER) return 'needs an x86-64 host (the containers borrow its loader)';
  return false;
}

/** One subordinate range as /etc/subuid holds it. */
export interface SubRange {
  start: number;
  count: number;
}

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** XDG_RUNTIME_DIR (/run/user/UID). */
  runtimeDir: string;
  /** The same ranges in /etc/subuid and /etc/subgid, in file order. */
  ranges: SubRange[];
  /** The environment a login of the user would have (for podman and tocfs). */
  env: NodeJS.ProcessEnv;
  /** Runs `cmd args` as the user (runuser, the user's environment); never throws. */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; cwd?: string }): Promise<{ code: number; stdout: Buffer; stderr: string }>;
  remove(): Promise<void>;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * useradd with a home under `homeParent` and the given subordinate ranges (useradd's own
 * automatic allocation is turned off so the ranges are exactly these).
 */
export async function createTestUser(homeParent: string, ranges: SubRange[]): Promise<TestUser> {
  const name = `tocfsrl${randomBytes(4).toString('hex')}`;
  const home = join(homeParent, name);
  sh('useradd', ['--create-home', '--home-dir', home, '--shell', '/bin/sh', '--user-group', '-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0', name]);
  const removeUser = (): void => {
    try {
      sh('userdel', ['--remove', name]);
    } catch {
      /* already gone */
    }
    // userdel removes the subordinate ranges too; make sure no line of ours is left.
    for (const file of ['/etc/subuid', '/etc/subgid']) {
      const text = readFileSync(file, 'utf8');
      const kept = text.split('\n').filter((l) => !l.startsWith(`${name}:`));
      if (kept.length !== text.split('\n').length) execFileSync('sh', ['-c', `printf '%s' "$1" > "$2"`, 'sh', kept.join('\n'), file]);
    }
  };
  try {
    for (const r of ranges) sh('usermod', ['--add-subuids', `${r.start}-${r.start + r.count - 1}`, '--add-subgids', `${r.start}-${r.start + r.count - 1}`, name]);
    const uid = Number(sh('id', ['-u', name]).trim());
    const gid = Number(sh('id', ['-g', name]).trim());
    const runtimeDir = `/run/user/${uid}`;
    await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
    await chown(runtimeDir, uid, gid);
    const env: NodeJS.ProcessEnv = {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: home,
      USER: name,
      LOGNAME: name,
      XDG_RUNTIME_DIR: runtimeDir,
      LANG: 'C.UTF-8',
    };
    const run: TestUser['run'] = (cmd, args, opts = {}) =>
      new Promise((resolve) => {
        const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
        execFile('runuser', ['-u', name, '--', 'env', '-i', ...envArgs, cmd, ...args], { cwd: opts.cwd ?? home, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000 }, (err, stdout, stderr) => {
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) || 1 : 0, stdout, stderr: stderr.toString() });
        });
      });
    return {
      name,
      uid,
      gid,
      home,
      runtimeDir,
      ranges,
      env,
      run,
      async remove() {
        removeUser();
        await rm(runtimeDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    removeUser();
    throw e;
  }
}

/** Writes `content` to `path` under the user's home, the file and the directories made for it owned by the user. */
export async function writeUserFile(user: TestUser, path: string, content: string): Promise<void> {
  let dir = user.home;
  for (const part of relative(user.home, dirname(path)).split('/').filter(Boolean)) {
    dir = join(dir, part);
    await mkdir(dir, { recursive: true });
    await chown(dir, user.uid, user.gid);
  }
  await writeFile(path, content);
  await chown(path, user.uid, user.gid);
}

/** Makes /dev/fuse usable by every user (Debian's 0666) and gives back a function restoring its mode. */
export function openFuseToAll(): () => void {
  const mode = statSync('/dev/fuse').mode & 0o7777;
  chmodSync('/dev/fuse', 0o666);
  return () => chmodSync('/dev/fuse', mode);
}

/** After ROOT_MOUNTS: the user's account files and runtime directory, then the root becomes / (pivot_root). */
const USER_ROOT = `
R=$1; ETC=$2; RUNTIME=$3; OWNER=$4; shift 4
${ROOT_MOUNTS}
for f in passwd group subuid subgid; do mount --bind "$ETC/$f" "$R/etc/$f"; done
mkdir -p "$R$RUNTIME"; chown "$OWNER" "$R$RUNTIME"; chmod 700 "$R$RUNTIME"
cd "$R"
pivot_root . mnt
umount -l /mnt
`;

/**
 * Debian trixie's Podman 5.4.2 (the root scripts/setup-trixie.sh builds) for a rootless user:
 * a private mount namespace whose root is the trixie root by pivot_root, not chroot (the
 * kernel refuses a chrooted process a new user namespace: rootless Podman fails with "cannot
 * clone: Operation not permitted"), with the user in its /etc/passwd, /etc/group,
 * /etc/subuid and /etc/subgid (copies bound over the root's, which stay untouched), the
 * user's runtime directory, and `binds` (host directories at the same paths, submounts such
 * as the store's FUSE mount carried along: mount the store first).
 */
export class RootlessRoot {
  private constructor(private readonly holder: NamespaceHolder) {}

  static async enter(user: TestUser, root: string, etcDir: string, binds: string[]): Promise<RootlessRoot> {
    await mkdir(etcDir, { recursive: true });
    for (const f of ['passwd', 'group', 'subuid', 'subgid']) {
      const theirs = await readFile(join(root, 'etc', f), 'utf8').catch(() => '');
      const ours = readFileSync(`/etc/${f}`, 'utf8').split('\n').filter((l) => l.startsWith(`${user.name}:`));
      await writeFile(join(etcDir, f), [...theirs.split('\n').filter((l) => l && !l.startsWith(`${user.name}:`)), ...ours, ''].join('\n'));
    }
    const holder = await NamespaceHolder.start(USER_ROOT, [root, etcDir, user.runtimeDir, `${user.uid}:${user.gid}`, ...binds], `entering ${root}`);
    return new RootlessRoot(holder);
  }

  /** Where a path inside is seen from the host. */
  hostPath(path: string): string {
    return `/proc/${this.holder.pid}/root${path}`;
  }

  /** argv running `command` as the user inside (setpriv, the user's environment only). */
  argv(user: TestUser, command: string[]): string[] {
    const vars = Object.entries(user.env).map(([k, v]) => `${k}=${v}`);
    return ['nsenter', '-t', String(this.holder.pid), '-m', '--', '/usr/bin/env', '-i', ...vars, 'setpriv', '--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', ...command];
  }

  close(): Promise<void> {
    return this.holder.close();
  }
}

/** `tocfs store --foreground` from source, run as the user (its uid and gid, its environment); waits until it answers. */
export async function startStoreAs(user: TestUser, dir: string, cacheDir: string, env: NodeJS.ProcessEnv = {}): Promise<RunningStore> {
  const child: ChildProcess = spawn(process.execPath, storeArgs(dir, cacheDir), {
    cwd: REPO,
    uid: user.uid,
    gid: user.gid,
    env: { ...user.env, TOCFS_LOG_JSON: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return superviseStore(child, dir, `tocfs store (as ${user.name})`);
}

/**
 * Rootless Podman of `user`: its own ~/.config/containers/{storage,registries,containers}.conf
 * (the store in additionallayerstores with :ref), graph root and run root where rootless
 * Podman puts them by default.
 */
export class RootlessPodman {
  private constructor(
    readonly user: TestUser,
    private readonly root: RootlessRoot | null,
  ) {}

  /** `root`: run Podman 5.4.2 inside that trixie root, else the host's 4.3.1. */
  static async create(user: TestUser, storeDir: string, registryHost: string, root: RootlessRoot | null = null): Promise<RootlessPodman> {
    const conf = join(user.home, '.config', 'containers');
    await writeUserFile(user, join(conf, 'storage.conf'), `[storage]\ndriver = "overlay"\n\n[storage.options]\nadditionallayerstores = ["${storeDir}:ref"]\n`);
    await writeUserFile(user, join(conf, 'registries.conf'), `[[registry]]\nlocation = "${registryHost}"\ninsecure = true\n`);
    // runc and cgroupfs: crun and the systemd cgroup manager do not work on this machine's cgroups.
    await writeUserFile(user, join(conf, 'containers.conf'), `[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n`);
    return new RootlessPodman(user, root);
  }

  /** The graph root rootless Podman uses by default. */
  get graphRoot(): string {
    return join(this.user.home, '.local', 'share', 'containers', 'storage');
  }

  run(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
    const podman = ['podman', '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args];
    if (!this.root) return this.user.run(podman[0]!, podman.slice(1));
    const [file, ...argv] = this.root.argv(this.user, podman);
    return new Promise((resolve) => {
      execFile(file!, argv, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) || 1 : 0, stdout, stderr: stderr.toString() });
      });
    });
  }

  /**
   * The key this Podman looks a layer up by in the store: Podman 5 (containers/storage ≥ 1.54)
   * the TOC digest from the layer's annotations, 4.3.1 the blob digest.
   */
  storeKey(layer: { digest: string; annotations?: Record<string, string> }): string {
    return storeKeyOf(layer, this.root !== null);
  }

  async ok(args: string[]): Promise<{ stdout: Buffer; stderr: string }> {
    const r = await this.run(args);
    assert.equal(r.code, 0, `podman ${args.join(' ')} (as ${this.user.name}) failed: ${r.stderr}`);
    return r;
  }

  /** Runs a host program (through the host's loader, from a bind mount of / at /host) in a container of `image`; `runArgs` go before the image. */
  exec(image: string, runArgs: string[], program: string, ...args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
    return this.run(['run', '--rm', '--net=none', '-v', '/:/host:ro', ...runArgs, image, `/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, `/host${program}`, ...args]);
  }

  /** Layers of the graph root that point into an additional layer store. */
  storeLayers(): Promise<string[]> {
    return storeLayersIn(this.graphRoot);
  }

  /** Removes containers, images and storage, and ends the user's pause process (it holds the user and mount namespaces). */
  async cleanup(): Promise<void> {
    await this.run(['rm', '-a', '-f', '-t', '0']);
    await this.run(['rmi', '-a', '-f']);
    await this.run(['system', 'reset', '-f']);
    const pauseFile = join(this.user.runtimeDir, 'libpod', 'tmp', 'pause.pid');
    const pid = Number(await readFile(this.root ? this.root.hostPath(pauseFile) : pauseFile, 'utf8').catch(() => ''));
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}
