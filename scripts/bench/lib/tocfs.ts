/**
 * tocfs as a user runs it: the CLI built into a private directory (so the run measures
 * compiled JavaScript, not tsx, and never touches the checkout's dist/), with the commands
 * this checkout has detected up front so missing ones are reported, not failed.
 */
import { mkdir, readdir, readFile, rm, symlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type RunResult } from './proc.js';

const REPO = new URL('../../..', import.meta.url).pathname.replace(/\/$/, '');

export class Tocfs {
  /** When set, every tocfs process writes a `node --cpu-prof` profile here (daemons inherit Node's flags). */
  profileDir?: string;

  private constructor(
    readonly entry: string,
    readonly commands: Set<string>,
    readonly buildNote: string,
  ) {}

  /**
   * Compiles the committed sources (HEAD, not other people's work in progress in the working
   * tree; TOCFS_BENCH_REV names another commit, for a before/after pair) into `dir`; type
   * errors do not stop the emit.
   */
  static async build(dir: string): Promise<Tocfs> {
    await rm(dir, { recursive: true, force: true });
    const src = join(dir, 'checkout');
    await mkdir(src, { recursive: true });
    const rev = process.env.TOCFS_BENCH_REV || 'HEAD';
    if (rev === 'worktree') {
      // Work in progress (uncommitted sources): the results say so (built_from).
      await run(['sh', '-c', 'cd "$0" && tar -cf - src tsconfig.json | tar -x -C "$1"', REPO, src]);
    } else {
      await run(['sh', '-c', 'git -C "$0" archive "$2" src tsconfig.json | tar -x -C "$1"', REPO, src, rev]);
    }
    await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'));
    await symlink(join(REPO, 'package.json'), join(dir, 'package.json'));
    const native = await Tocfs.buildNative(src, dir, rev);
    const tsc = await run(['npx', 'tsc', '-p', join(src, 'tsconfig.json'), '--outDir', join(dir, 'dist')], { cwd: REPO, check: false });
    const errors = (tsc.stdout.match(/error TS/g) ?? []).length;
    // As `npm run build` makes it: bundled (scripts/bundle.mjs), where the measured sources have that step.
    const bundled = await Tocfs.bundle(src, dir, rev);
    const entry = bundled ? join(dir, 'dist', 'bundle', 'entry.js') : join(dir, 'dist', 'cli', 'entry.js');
    const help = await run(['node', entry, '--help'], { check: false });
    const commands = new Set<string>();
    for (const m of help.stdout.matchAll(/^\s+tocfs (\w+)/gm)) commands.add(m[1]!);
    if (commands.has('profile')) {
      // Subcommands (`profile push` may land later than the rest): "profile push" etc.
      const sub = await run(['node', entry, 'profile', '--help'], { check: false });
      for (const m of sub.stdout.matchAll(/^\s+tocfs profile (\w+)/gm)) commands.add(`profile ${m[1]!}`);
    }
    return new Tocfs(entry, commands, (errors ? `built with ${errors} type errors in work in progress` : 'built cleanly') + (bundled ? ', bundled' : '') + native);
  }

  /** Runs the measured sources' scripts/bundle.mjs on `<dir>/dist` when they have one; whether they did. */
  private static async bundle(src: string, dir: string, rev: string): Promise<boolean> {
    const script = join(src, 'scripts', 'bundle.mjs');
    if (rev === 'worktree') {
      if (!(await exists(join(REPO, 'scripts', 'bundle.mjs')))) return false;
      await run(['sh', '-c', 'cd "$0" && tar -cf - scripts/bundle.mjs | tar -x -C "$1"', REPO, src]);
    } else {
      if ((await run(['git', '-C', REPO, 'cat-file', '-e', `${rev}:scripts/bundle.mjs`], { check: false })).code !== 0) return false;
      await run(['sh', '-c', 'git -C "$0" archive "$2" scripts/bundle.mjs | tar -x -C "$1"', REPO, src, rev]);
    }
    await run(['node', script, join(dir, 'dist')], { cwd: REPO });
    return true;
  }

  /**
   * tocfs's own addon (native/, for its own FUSE session), when the measured sources have one:
   * built by their scripts/build-native.sh in `src` and linked to `<dir>/native`, where the
   * daemon looks for it (beside the package.json above dist/). Without it the daemon would
   * serve through fuse-native whatever daemon.fuse_session says. Returns a note for the results.
   */
  private static async buildNative(src: string, dir: string, rev: string): Promise<string> {
    const has = rev === 'worktree'
      ? await exists(join(REPO, 'native', 'binding.gyp'))
      : (await run(['git', '-C', REPO, 'cat-file', '-e', `${rev}:native/binding.gyp`], { check: false })).code === 0;
    if (!has) return '';
    if (rev === 'worktree') {
      await run(['sh', '-c', 'cd "$0" && tar -cf - --exclude=native/build native scripts/build-native.sh | tar -x -C "$1"', REPO, src]);
    } else {
      await run(['sh', '-c', 'git -C "$0" archive "$2" native scripts/build-native.sh | tar -x -C "$1"', REPO, src, rev]);
    }
    const b = await run(['bash', join(src, 'scripts', 'build-native.sh')], { check: false, timeoutMs: 600_000 });
    if (b.code !== 0) return `; native addon not built (${(b.stderr || b.stdout).trim().split('\n').pop()}): no own FUSE session`;
    await symlink(join(src, 'native'), join(dir, 'native'));
    return '; native addon built';
  }

  has(command: string): boolean {
    return this.commands.has(command);
  }

  /** Why `command` cannot be measured, or undefined when it can. */
  missing(command: string): string | undefined {
    return this.has(command) ? undefined : `tocfs ${command} is not in this checkout yet`;
  }

  /** argv of a tocfs command. */
  argv(args: string[]): string[] {
    const prof = this.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${this.profileDir}`] : [];
    return ['node', ...prof, this.entry, '--log-level', 'warn', ...args];
  }

  exec(args: string[], opts: { ns?: string; timeoutMs?: number; check?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return run(this.argv(args), { ...opts, label: `tocfs ${args[0]}` });
  }

  /** `tocfs mount` (`extraArgs` before the image, e.g. --metrics-address); returns when the mount is ready (the CLI's own contract). */
  async mount(image: string, mountpoint: string, cacheDir: string, opts: { ns?: string; prefetch?: string; env?: NodeJS.ProcessEnv; extraArgs?: string[] } = {}): Promise<RunResult> {
    await mkdir(mountpoint, { recursive: true });
    const { extraArgs = [], ...rest } = opts;
    return this.exec(['mount', '--tls-verify=false', '--cache-dir', cacheDir, ...(opts.prefetch ? ['--prefetch', opts.prefetch] : []), ...extraArgs, image, mountpoint], rest);
  }

  async unmount(mountpoint: string): Promise<void> {
    const r = await this.exec(['unmount', mountpoint], { check: false });
    if (r.code !== 0) await run(['umount', '-l', mountpoint], { check: false });
  }

  async convert(src: string, dst: string, format: string, prioritize?: string[]): Promise<void> {
    const prio = prioritize?.length ? ['--prioritize', ...prioritize] : [];
    await this.exec(['convert', `oci:${src}:latest`, `oci:${dst}:latest`, '--format', format, ...prio], { timeoutMs: 1_800_000 });
  }
}

/** Processes whose command line names `needle` (the daemons serving a mountpoint or store). */
export async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    const cmd = await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '');
    const args = cmd.split('\0');
    if (args.includes(needle) && args.some((a) => a.endsWith('entry.js'))) pids.push(Number(d));
  }
  return pids;
}

/** Resident set size of `pid` in bytes (VmRSS). */
export async function rssBytes(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmRSS:\s+(\d+) kB/.exec(s);
  return m ? Number(m[1]) * 1024 : 0;
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}
