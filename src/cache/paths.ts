import { homedir } from 'node:os';
import { join } from 'node:path';

/** `/var/lib/tocfs` for root, else `$XDG_CACHE_HOME/tocfs` (or `~/.cache/tocfs`). */
export function defaultCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/tocfs';
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'tocfs');
}

/** Parses sizes like `10G`, `500M`, `64k`, `1.5GiB`, `4096` (binary units) into bytes. */
export function parseSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(s);
  if (!m) throw new Error(`not a size: ${JSON.stringify(s)} (use e.g. 10G, 500M, 4096)`);
  const exp = ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
  return Math.floor(Number(m[1]) * 1024 ** exp);
}

export function formatSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
