/**
 * Atomic files in a content-addressed directory: write a private temp file in `<dir>/tmp`,
 * then rename it into place, so a reader never sees a partial file. No fsync: every file is
 * named by the sha256 of its content and checked against that name when read, so a file
 * torn by a power loss is detected and dropped like any other corrupt file, and the cache
 * is only a cache.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isAlive } from '../process-alive.js';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** Names of the files tocfs keeps (a sha256 in hex); anything else in its directories is left alone. */
export const OWN_FILE_NAME = /^[0-9a-f]{64}$/;
/** `<hex>.<pid>.<random>` temp files written by writeAtomic. */
const TEMP_NAME = /^[0-9a-f]{64}\.(\d+)\.[0-9a-f]{8}$/;

/** Errors after which writing to the cache directory is pointless until restart. */
const DISK_UNUSABLE = new Set(['ENOSPC', 'EROFS', 'EDQUOT']);

export function isDiskUnusable(e: unknown): boolean {
  return DISK_UNUSABLE.has((e as NodeJS.ErrnoException)?.code ?? '');
}

export function isNotFound(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** A private temp file name in `tmpDir` for writing `path` (cleanStaleTemps knows its writer by the pid in it). */
export function tempPathFor(tmpDir: string, path: string): string {
  return join(tmpDir, `${path.slice(path.lastIndexOf('/') + 1)}.${process.pid}.${randomBytes(4).toString('hex')}`);
}

/** Writes `data` to `path` via a temp file in `tmpDir` (same filesystem). */
export async function writeAtomic(tmpDir: string, path: string, data: Uint8Array, mtimeSec?: number): Promise<void> {
  const tmp = tempPathFor(tmpDir, path);
  try {
    await writeFile(tmp, data, { mode: FILE_MODE, flag: 'wx' });
    if (mtimeSec !== undefined) await utimes(tmp, mtimeSec, mtimeSec);
    try {
      await rename(tmp, path);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      await mkdir(dirname(path), { recursive: true, mode: DIR_MODE });
      await rename(tmp, path);
    }
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** A temp file is stale when its writer is gone (or it is older than an hour, e.g. pid reuse). */
const STALE_TEMP_MS = 3600_000;

/** Removes temp files left by writers that crashed (only names writeAtomic makes). Returns how many were removed. */
export async function cleanStaleTemps(tmpDir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(tmpDir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    const path = join(tmpDir, name);
    let stale = !isAlive(pid);
    if (!stale) {
      const st = await stat(path).catch(() => undefined);
      stale = st !== undefined && Date.now() - st.mtimeMs > STALE_TEMP_MS;
    }
    if (stale && (await unlink(path).then(() => true, () => false))) removed++;
  }
  return removed;
}
