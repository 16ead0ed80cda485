/**
 * Podman 4.3.1 against a tocfs store, for tests: its own graph root and runroot, a private
 * storage.conf naming the store as an additional layer store, runc and cgroupfs.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { trixieSkipReason, TrixieNamespace } from './trixie.js';

export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The host's dynamic loader: containers of images without programs run the host's through it from a bind mount of / at /host. */
export const LOADER = existsSync('/lib64/ld-linux-x86-64.so.2') ? realpathSync('/lib64/ld-linux-x86-64.so.2') : undefined;

/** Why the Podman tests cannot run here, or false (for `describe(…, { skip })`). */
export function podmanSkipReason(): string | false {
  if (!have('podman') || !have('runc')) return 'podman and runc are needed';
  if (!LOADER) return 'needs an x86-64 host (the containers borrow its loader)';
  if (process.getuid?.() !== 0) return 'runs podman as root';
  return false;
}

/** `podman run` options every test container gets (runc cannot raise these limits here). */
export const RUN_LIMITS = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096'];

export interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/**
 * Which Podman a suite runs: Debian bookworm's 4.3.1 on the host (layers keyed by blob digest),
 * or trixie's 5.4.2 from the root scripts/setup-trixie.sh builds (keyed by TOC digest).
 */
export interface PodmanFlavor {
  name: string;
  skip: string | false;
  /** Starts what the flavor needs around `binds` (after the store is mounted); null on the host. */
  enter(binds: string[]): Promise<TrixieNamespace | null>;
}

export const PODMAN_FLAVORS: PodmanFlavor[] = [
  { name: 'Podman 4.3.1', skip: podmanSkipReason(), enter: async () => null },
  { name: 'Podman 5.4.2', skip: podmanSkipReason() || trixieSkipReason(), enter: (binds) => TrixieNamespace.enter(binds) },
];

const TOC_DIGEST_ANNOTATIONS = ['io.github.containers.zstd-chunked.manifest-checksum', 'containerd.io/snapshot/stargz/toc.digest'];

/**
 * The digest Podman names `layer` by in an additional layer store: with `byToc` (Podman 5,
 * containers/storage ≥ 1.54) the TOC digest from the layer's annotations where there is one,
 * else (4.3.1) the blob digest.
 */
export function storeKeyOf(layer: { digest: string; annotations?: Record<string, string> }, byToc: boolean): string {
  if (!byToc) return layer.digest;
  return TOC_DIGEST_ANNOTATIONS.map((a) => layer.annotations?.[a]).find((d) => d !== undefined) ?? layer.digest;
}

/** The layers of a Podman graph root that point into an additional layer store (their `additionallayer` files). */
export async function storeLayersIn(graphRoot: string): Promise<string[]> {
  const dir = join(graphRoot, 'overlay');
  const out: string[] = [];
  for (const id of await readdir(dir).catch(() => [] as string[])) {
    const link = await readFile(join(dir, id, 'additionallayer'), 'utf8').catch(() => undefined);
    if (link) out.push(link);
  }
  return out;
}

export class Podman {
  constructor(
    private readonly root: string,
    private readonly runroot: string,
    private readonly env: Record<string, string>,
    private readonly ns: TrixieNamespace | null = null,
  ) {}

  /**
   * `storeDir`: the additional layer store to name, or null for a Podman without one.
   * `ns`: run Podman 5 inside that trixie namespace (whose binds must include `work` and `storeDir`).
   */
  static async create(work: string, storeDir: string | null, registryHost: string, ns: TrixieNamespace | null = null): Promise<Podman> {
    await mkdir(work, { recursive: true });
    const root = join(work, 'podman-root');
    // Podman refuses a runroot path longer than 50 characters.
    const runroot = await mkdtemp('/tmp/tsp-');
    const storageConf = join(work, 'storage.conf');
    await writeFile(storageConf, `[storage]\ndriver = "overlay"\ngraphroot = "${root}"\nrunroot = "${runroot}"\n\n[storage.options]\nadditionallayerstores = [${storeDir ? `"${storeDir}:ref"` : ''}]\n`);
    const registriesConf = join(work, 'registries.conf');
    await writeFile(registriesConf, `[[registry]]\nlocation = "${registryHost}"\ninsecure = true\n`);
    await mkdir(join(work, 'podman-tmp'), { recursive: true });
    // libpod's state directory (/run/libpod) and its SHM locks are shared by every Podman on
    // the machine by default: another suite's `podman system reset` would make this one
    // "refresh" its containers and clash on lock numbers. File locks in a private tmp_dir.
    const containersConf = join(work, 'containers.conf');
    await writeFile(containersConf, `[engine]\ntmp_dir = "${runroot}/libpod"\nlock_type = "file"\n`);
    return new Podman(root, runroot, { CONTAINERS_CONF: containersConf, CONTAINERS_STORAGE_CONF: storageConf, CONTAINERS_REGISTRIES_CONF: registriesConf, TMPDIR: join(work, 'podman-tmp') }, ns);
  }

  /** The program and arguments that run `podman ARGS` for this flavor. */
  private command(args: string[]): { file: string; argv: string[]; env: NodeJS.ProcessEnv } {
    // Root and runroot come from the private storage.conf: with --root on the command line
    // Podman 4.3 drops the file's storage options, additionallayerstores among them.
    const podman = ['podman', '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args];
    if (!this.ns) return { file: podman[0]!, argv: podman.slice(1), env: { ...process.env, ...this.env } };
    const [file, ...argv] = this.ns.argv(podman, this.env);
    return { file: file!, argv, env: process.env };
  }

  run(args: string[]): Promise<Run> {
    const { file, argv, env } = this.command(args);
    return new Promise((resolve) => {
      execFile(file, argv, { env, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr: stderr.toString() });
      });
    });
  }

  /** Starts `podman ARGS` with its stdio piped, for a container the test talks to while it runs. */
  spawn(args: string[]): ChildProcessWithoutNullStreams {
    const { file, argv, env } = this.command(args);
    return spawn(file, argv, { env, stdio: 'pipe' });
  }

  async ok(args: string[]): Promise<Buffer> {
    const r = await this.run(args);
    assert.equal(r.code, 0, `podman ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  }

  /** Runs a host program (through the host's loader) in a container of `image`. */
  exec(image: string, program: string, ...args: string[]): Promise<Buffer> {
    return this.ok(['run', '--rm', '--net=none', ...RUN_LIMITS, '-v', '/:/host:ro', image, `/host${LOADER}`, '--library-path', `/host${dirname(LOADER!)}`, `/host${program}`, ...args]);
  }

  /**
   * The digest this Podman names `layer` by in an additional layer store: Podman 5 (containers/
   * storage ≥ 1.54) uses the TOC digest from the layer's annotations where there is one, 4.3.1
   * the blob digest.
   */
  storeKey(layer: { digest: string; annotations?: Record<string, string> }): string {
    return storeKeyOf(layer, this.ns !== null);
  }

  /** Layers of the graph root that point into an additional layer store. */
  storeLayers(): Promise<string[]> {
    return storeLayersIn(this.root);
  }

  async cleanup(): Promise<void> {
    await this.run(['rm', '-a', '-f', '-t', '0']);
    await this.run(['rmi', '-a', '-f']);
    await this.run(['system', 'reset', '-f']);
    await rm(this.runroot, { recursive: true, force: true });
  }
}

/** Lazily unmounts whatever is mounted under `dir` (overlays Podman left behind). */
export async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir + '/')).sort().reverse();
  for (const m of mounts) execFileSync('umount', ['-l', m], { stdio: 'ignore' });
}
