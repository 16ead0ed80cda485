/**
 * What a running mount daemon leaves behind for `tocfs unmount`: one small JSON file per
 * mountpoint (pid, image, log file) in tocfs's runtime directory.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface MountState {
  pid: number;
  mountpoint: string;
  image: string;
  layer?: string;
  log?: string;
  started: string;
}

/** `/run/tocfs` for root, else `$XDG_RUNTIME_DIR/tocfs` (or a private dir under the temp dir). */
export function runtimeDir(): string {
  if (process.getuid?.() === 0) return '/run/tocfs';
  const xdg = process.env.XDG_RUNTIME_DIR;
  return xdg && xdg.startsWith('/') ? join(xdg, 'tocfs') : join(tmpdir(), `tocfs-${process.getuid?.() ?? 'user'}`);
}

function key(mountpoint: string): string {
  return createHash('sha256').update(mountpoint).digest('hex').slice(0, 16);
}

export function mountFiles(mountpoint: string): { state: string; log: string } {
  const dir = join(runtimeDir(), 'mounts');
  const k = key(mountpoint);
  return { state: join(dir, `${k}.json`), log: join(dir, `${k}.log`) };
}

export async function ensureRuntimeDir(): Promise<void> {
  await mkdir(join(runtimeDir(), 'mounts'), { recursive: true, mode: 0o700 });
}

export async function writeMountState(s: MountState): Promise<void> {
  await ensureRuntimeDir();
  await writeFile(mountFiles(s.mountpoint).state, JSON.stringify(s) + '\n', { mode: 0o600 });
}

export async function readMountState(mountpoint: string): Promise<MountState | undefined> {
  try {
    const s = JSON.parse(await readFile(mountFiles(mountpoint).state, 'utf8')) as MountState;
    return s.mountpoint === mountpoint && Number.isInteger(s.pid) ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Removes the state file if it still belongs to `pid` (a newer daemon may have replaced it). */
export async function removeMountState(mountpoint: string, pid: number): Promise<void> {
  const s = await readMountState(mountpoint);
  if (s && s.pid !== pid) return;
  await rm(mountFiles(mountpoint).state, { force: true });
}

