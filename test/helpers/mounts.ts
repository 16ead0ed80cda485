/**
 * Real FUSE mounts made through the CLI (`tocfs mount` daemonises), tracked so an after hook
 * can always take them down, even when a test failed half-way.
 */
import { execFile } from 'node:child_process';
import { access, constants, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { mountFiles } from '../../src/daemon/state.js';
import { runCli, type CliResult } from './cli.js';

const run = promisify(execFile);

export class Mounts {
  private readonly active = new Set<string>();

  constructor(
    readonly tmp: string,
    readonly env: NodeJS.ProcessEnv = {},
  ) {}

  /** Mounts `image` on a fresh directory; returns the mountpoint. Fails the test with the CLI's stderr. */
  async mount(image: string, args: string[] = [], cacheDir?: string): Promise<string> {
    const mnt = await mkdtemp(join(this.tmp, 'mnt-'));
    const cache = cacheDir ?? (await mkdtemp(join(this.tmp, 'cache-')));
    const r = await runCli(['mount', image, mnt, '--cache-dir', cache, ...args], { env: this.env, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`tocfs mount ${image} failed (${r.code}): ${r.stderr}`);
    this.active.add(mnt);
    return mnt;
  }

  async unmount(mnt: string): Promise<CliResult> {
    const r = await runCli(['unmount', mnt], { env: this.env, timeoutMs: 60_000 });
    if (r.code === 0) {
      this.active.delete(mnt);
      await rm(mountFiles(mnt).log, { force: true });
    }
    return r;
  }

  /** Forget a mount another path already ended. */
  forget(mnt: string): void {
    this.active.delete(mnt);
  }

  /** Takes down whatever is still mounted: tocfs unmount, then a lazy fusermount as the last resort. */
  async cleanup(): Promise<void> {
    for (const mnt of this.active) {
      const r = await runCli(['unmount', '--lazy', mnt], { env: this.env, timeoutMs: 30_000 }).catch(() => undefined);
      if (r?.code !== 0) await run('fusermount', ['-uz', mnt]).catch(() => undefined);
    }
    this.active.clear();
  }
}

/** Every tocfs mount of this machine's mount table at `mnt`. */
export async function isTocfsMount(mnt: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === mnt && l.includes(' - fuse.tocfs '));
}

/** xattrs of every name under `root` (not following symlinks), name -> base64, via Python's os.listxattr/getxattr. */
export async function xattrsUnder(root: string): Promise<Record<string, Record<string, string>>> {
  const script = `
import os, sys, json, base64
root = sys.argv[1]
out = {}
for d, ds, fs in os.walk(root):
    for n in ds + fs:
        p = os.path.join(d, n)
        out[os.path.relpath(p, root)] = {k: base64.b64encode(os.getxattr(p, k, follow_symlinks=False)).decode() for k in os.listxattr(p, follow_symlinks=False)}
print(json.dumps(out))
`;
  const { stdout } = await run('python3', ['-c', script, root], { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout) as Record<string, Record<string, string>>;
}

export async function removeTree(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Why FUSE mount tests cannot run here, or false when they can. */
export async function fuseSkipReason(): Promise<string | false> {
  return access('/dev/fuse', constants.R_OK | constants.W_OK).then(
    () => false,
    (e: NodeJS.ErrnoException) => `no usable /dev/fuse (${e.code})`,
  );
}
