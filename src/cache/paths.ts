import { homedir, totalmem } from 'node:os';
import { join } from 'node:path';

/** `/var/lib/tocfs` for root, else `$XDG_CACHE_HOME/tocfs` (or `~/.cache/tocfs`). */
export function defaultCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/tocfs';
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'tocfs');
}

/**
 * Memory tier budget when none is set: 1/16 of the machine's RAM, at least 128 MiB and at
 * most 1 GiB (a file read twice should come from memory, without the daemon crowding out
 * the containers it serves).
 */
export function defaultMemoryBytes(): number {
  return clampToMiB(totalmem() / 16, 128 * 1024 ** 2, 1024 ** 3);
}

/** daemon.memory when none is set: 1/8 of the machine's RAM, at least 256 MiB and at most 2 GiB. */
export function defaultDaemonMemoryBytes(): number {
  return clampToMiB(totalmem() / 8, 256 * 1024 ** 2, 2 * 1024 ** 3);
}

function clampToMiB(bytes: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.floor(bytes / 1024 ** 2) * 1024 ** 2));
}
