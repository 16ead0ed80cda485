/** Values as people write them in config files, environment and flags: sizes, durations, addresses. */

const SIZE_UNITS = ['', 'k', 'm', 'g', 't', 'p'];

/** `10G`, `512M`, `64k`, `1.5GiB`, `4096` → bytes (binary units: K = 1024). Undefined if malformed. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const exp = SIZE_UNITS.indexOf((m[2] ?? '').toLowerCase());
  return Math.floor(Number(m[1]) * 1024 ** exp);
}

/** Bytes → the shortest exact form `parseSize` reads back (`10G`, `1536K`, `4097`). */
export function formatSize(bytes: number): string {
  for (let exp = SIZE_UNITS.length - 1; exp > 0; exp--) {
    const unit = 1024 ** exp;
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${SIZE_UNITS[exp]!.toUpperCase()}`;
  }
  return String(bytes);
}

/** Bytes for people reading progress and logs: `1.5 GiB`, `12.0 MiB`, `512 B`. */
export function humanBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30s`, `250ms`, `5m`, `1h`, `1.5s` → milliseconds. A unit is required. Undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(text);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_MS[m[2]!.toLowerCase()]!);
}

/** Milliseconds → the shortest exact form `parseDuration` reads back (`30s`, `1500ms`, `2h`). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const n = DURATION_MS[unit]!;
    if (ms >= n && ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}

/** `HOST:PORT` (`[::1]:9100` for IPv6, port 0 for any free port) split into its parts. */
export function parseAddress(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}
