/**
 * Mount benchmarks (not a test: figures vary with the machine). Prints JSON lines:
 * - mount: wall time of `tocfs mount` (CLI start + daemon start + TOC read + tree + FUSE
 *   mount) and the daemon's own open-to-mounted time, for the biggest corpus images and a
 *   generated 50 000-file image;
 * - seqread: `dd bs=1M` through the mount of a 256 MiB incompressible file from an oci:
 *   layout: cold (empty cache), warm (chunk cache on disk, fresh mount) and page cache
 *   (same mount again, kernel_cache);
 * - stat: names per second of `find -printf` (lstat of every name) over 50 000 files, first
 *   walk (every lookup reaches the daemon) and second (entry/attr cache).
 *
 *   node --import tsx scripts/bench-mount.ts [--keep]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mountFiles } from '../src/daemon/state.js';
import { buildImage, seededContent, type FileSpec } from '../test/helpers/images.js';

const ROOT = resolve(import.meta.dirname, '..');
const CORPUS = process.env.TOCFS_CORPUS ?? resolve(ROOT, '..', 'shared', 'corpus');
const tmp = mkdtempSync(join(tmpdir(), 'tocfs-bench-mount-'));

function cli(args: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/entry.ts'), ...args], { stdio: ['ignore', 'inherit', 'pipe'], env: { ...process.env, TOCFS_LOG_JSON: '1' } });
  if (r.status !== 0) throw new Error(`tocfs ${args.join(' ')}: ${r.stderr.toString()}`);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function daemonMountMs(mnt: string): number | undefined {
  const line = readFileSync(mountFiles(mnt).log, 'utf8').split('\n').reverse().find((l) => l.includes('"msg":"mounted"'));
  return line ? (JSON.parse(line) as { ms: number }).ms : undefined;
}

function mount(image: string, cache: string, extra: string[] = []): { mnt: string; wallMs: number; daemonMs: number | undefined } {
  const mnt = mkdtempSync(join(tmp, 'mnt-'));
  const wallMs = cli(['mount', image, mnt, '--cache-dir', cache, '--prefetch', 'none', ...extra]);
  return { mnt, wallMs, daemonMs: daemonMountMs(mnt) };
}

function unmount(mnt: string): void {
  cli(['unmount', mnt]);
}

function report(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function dd(file: string): number {
  const t = process.hrtime.bigint();
  execFileSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M'], { stdio: 'ignore' });
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function timedFind(dir: string): { names: number; seconds: number } {
  const t = process.hrtime.bigint();
  const out = execFileSync('find', [dir, '-printf', '%i %m %s %T@\n'], { maxBuffer: 256 * 1024 * 1024 });
  return { names: out.toString().split('\n').length - 1, seconds: Number(process.hrtime.bigint() - t) / 1e9 };
}

try {
  for (const image of ['zstdchunked-podman4-basic', 'estargz-ctrremote-many', 'zstdchunked-skopeo118-many']) {
    const m = mount(`oci:${join(CORPUS, image)}`, join(tmp, `cache-${image}`));
    report({ bench: 'mount', image, wallMs: Math.round(m.wallMs), daemonOpenToMountedMs: m.daemonMs });
    unmount(m.mnt);
  }

  const SIZE = 256 * 1024 * 1024;
  const big = await buildImage(join(tmp, 'big'), { format: 'zstd:chunked', layers: [[{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('bench', SIZE) }]] });
  const cache = join(tmp, 'cache-big');
  let m = mount(`oci:${big.dir}`, cache);
  const cold = dd(join(m.mnt, 'data/big.bin'));
  const pageCache = dd(join(m.mnt, 'data/big.bin'));
  unmount(m.mnt);
  m = mount(`oci:${big.dir}`, cache);
  const warm = dd(join(m.mnt, 'data/big.bin'));
  unmount(m.mnt);
  const mbps = (s: number): number => Math.round(SIZE / 1024 / 1024 / s);
  report({ bench: 'seqread', source: 'oci', fileMiB: SIZE / 1024 / 1024, coldMBps: mbps(cold), warmChunkCacheMBps: mbps(warm), pageCacheMBps: mbps(pageCache) });

  const files: FileSpec[] = [];
  for (let d = 0; d < 100; d++) {
    files.push({ path: `tree/d${d}`, type: 'dir' });
    for (let f = 0; f < 500; f++) files.push({ path: `tree/d${d}/f${f}.txt`, content: `${d}/${f}\n` });
  }
  mkdirSync(join(tmp, 'many'), { recursive: true });
  const many = await buildImage(join(tmp, 'many'), { format: 'zstd:chunked', layers: [files] });
  m = mount(`oci:${many.dir}`, join(tmp, 'cache-many'));
  report({ bench: 'mount', image: 'generated 50k files (zstd:chunked)', wallMs: Math.round(m.wallMs), daemonOpenToMountedMs: m.daemonMs });
  const first = timedFind(m.mnt);
  const second = timedFind(m.mnt);
  unmount(m.mnt);
  report({ bench: 'stat', names: first.names, firstWalkPerSec: Math.round(first.names / first.seconds), secondWalkPerSec: Math.round(second.names / second.seconds) });
} finally {
  if (!process.argv.includes('--keep')) rmSync(tmp, { recursive: true, force: true });
}
