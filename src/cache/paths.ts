import { homedir } from 'node:os';
import { join } from 'node:path';

/** `/var/lib/tocfs` for root, else `$XDG_CACHE_HOME/tocfs` (or `~/.cache/tocfs`). */
export function defaultCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/tocfs';
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'tocfs');
}
