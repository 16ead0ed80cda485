/**
 * Podman (Debian's 4.3.1) with private storage per run: its own --root/--runroot/--tmpdir,
 * storage.conf and registries.conf, so each measurement starts from an empty store and an
 * empty blob-info cache (which lives under the root), and nothing is shared with other users
 * of podman on this machine.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, unmountUnder, type RunResult } from './proc.js';

const SYSTEM_BLOB_INFO_CACHE = '/var/lib/containers/cache';

export interface PodmanMode {
  /** Podman's partial pull of zstd:chunked (`enable_partial_images`). */
  partial?: boolean;
  /** With `partial`: `use_hard_links`, files found in other layers by digest are hard-linked, not copied. */
  hardLinks?: boolean;
  /** An additional layer store (`DIR:ref`) such as `tocfs store`. */
  additionalLayerStore?: string;
}

export class Podman {
  /** Podman's default rlimits exceed this machine's hard limits: ask for ones runc can set. */
  static readonly ULIMITS = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096'];

  private constructor(
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly ns: string,
    /** Podman refuses a runroot path longer than 50 characters: this one lives under /tmp. */
    private readonly runroot: string,
  ) {}

  static async create(dir: string, ns: string, registryHost: string, mode: PodmanMode): Promise<Podman> {
    await unmountUnder(dir);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const runroot = await mkdtemp('/tmp/tbp-');
    const storageConf = join(dir, 'storage.conf');
    const pullOptions = `pull_options = {enable_partial_images = "${mode.partial ? 'true' : 'false'}", use_hard_links = "${mode.hardLinks ? 'true' : 'false'}", ostree_repos = ""}`;
    await writeFile(
      storageConf,
      `[storage]
driver = "overlay"
graphroot = "${join(dir, 'root')}"
runroot = "${runroot}"

[storage.options]
${pullOptions}
${mode.additionalLayerStore ? `additionallayerstores = ["${mode.additionalLayerStore}"]` : ''}
`,
    );
    const registriesConf = join(dir, 'registries.conf');
    await writeFile(registriesConf, `[[registry]]\nlocation = "${registryHost}"\ninsecure = true\n`);
    const env = {
      ...process.env,
      CONTAINERS_STORAGE_CONF: storageConf,
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      TMPDIR: join(dir, 'tmp'),
    };
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await mkdir(join(dir, 'blob-info-cache'), { recursive: true });
    await mkdir(SYSTEM_BLOB_INFO_CACHE, { recursive: true });
    return new Podman(dir, env, ns, runroot);
  }

  private argv(args: string[]): string[] {
    return [
      // A private mount namespace whose /var/lib/containers/cache (podman 4.3's blob-info
      // cache, which ignores --root) is this run's own directory.
      'unshare', '-m', '--propagation', 'slave', 'sh', '-c', `mount --bind "$0" ${SYSTEM_BLOB_INFO_CACHE} && exec "$@"`, join(this.dir, 'blob-info-cache'),
      'podman',
      // Root, runroot and driver come from storage.conf only: podman drops storage.conf's driver
      // options (additionallayerstores among them) when --storage-driver is given.
      '--tmpdir', join(this.dir, 'libpod'),
      '--runtime', 'runc',
      '--cgroup-manager', 'cgroupfs',
      '--events-backend', 'file',
      ...args,
    ];
  }

  exec(args: string[], timeoutMs = 240_000): Promise<RunResult> {
    return run(this.argv(args), { ns: this.ns, env: this.env, timeoutMs, label: `podman ${args[0]}` });
  }

  pull(image: string): Promise<RunResult> {
    return this.exec(['pull', '-q', '--tls-verify=false', image]);
  }

  /** `podman run --rm` of `cmd` (no network: the container needs none). */
  runRm(image: string, cmd: string[]): Promise<RunResult> {
    return this.exec(['run', '--rm', '--network', 'none', ...Podman.ULIMITS, '--pull', 'never', image, ...cmd]);
  }

  /** Removes everything this podman stored (its overlay mounts first). */
  async destroy(): Promise<void> {
    await this.exec(['system', 'reset', '--force']).catch(() => undefined);
    await unmountUnder(this.dir);
    await unmountUnder(this.runroot);
    await rm(this.dir, { recursive: true, force: true });
    await rm(this.runroot, { recursive: true, force: true });
  }
}

