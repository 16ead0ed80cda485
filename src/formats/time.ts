import type { Timestamp } from './toc.js';

/** Go's zero time (0001-01-01T00:00:00Z) in Unix seconds: old c/storage writes it for "unknown". */
const GO_ZERO_TIME_SEC = -62135596800;

function digits(s: string, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/**
 * Parses an RFC 3339 time as c/storage and stargz write it (`2023-11-15T07:13:20.5+09:00`).
 * Returns undefined for Go's zero time (unknown) and null when malformed. Hand-rolled
 * because it runs once per TOC entry and Date cannot keep nanoseconds.
 */
export function parseRfc3339(s: string): Timestamp | undefined | null {
  if (s.length < 20 || s.charCodeAt(4) !== 0x2d || s.charCodeAt(7) !== 0x2d || s.charCodeAt(13) !== 0x3a || s.charCodeAt(16) !== 0x3a) return null;
  const t = s.charCodeAt(10);
  if (t !== 0x54 && t !== 0x74 && t !== 0x20) return null;
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  const second = digits(s, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return null;
  let p = 19;
  let nsec = 0;
  if (s.charCodeAt(p) === 0x2e) {
    p++;
    let n = 0;
    while (p < s.length) {
      const c = s.charCodeAt(p) - 48;
      if (c < 0 || c > 9) break;
      if (n < 9) nsec = nsec * 10 + c;
      n++;
      p++;
    }
    if (n === 0) return null;
    for (let k = n; k < 9; k++) nsec *= 10;
  }
  let offset = 0;
  const z = s.charCodeAt(p);
  if ((z === 0x5a || z === 0x7a) && p + 1 === s.length) {
    // UTC
  } else if ((z === 0x2b || z === 0x2d) && p + 6 === s.length && s.charCodeAt(p + 3) === 0x3a) {
    const oh = digits(s, p + 1, 2);
    const om = digits(s, p + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return null;
    offset = (oh * 3600 + om * 60) * (z === 0x2b ? 1 : -1);
  } else return null;
  const sec = daysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
  if (sec === GO_ZERO_TIME_SEC && nsec === 0) return undefined;
  return { sec, nsec };
}
