/** PAX extended header records (`len key=value\n`) and PAX times. */
import { FormatError } from '../../errors.js';
import type { Timestamp } from '../toc.js';

/** `len key=value\n` records; values stay raw (xattrs are binary). */
export function parsePaxRecords(data: Buffer): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  let p = 0;
  while (p < data.length) {
    if (data[p] === 0) break; // some writers pad the data with NULs
    const sp = data.indexOf(0x20, p);
    if (sp < 0) throw new FormatError(`tar: malformed PAX record at ${p}`);
    const len = Number(data.toString('latin1', p, sp));
    if (!Number.isSafeInteger(len) || len <= sp - p + 1 || p + len > data.length || data[p + len - 1] !== 0x0a)
      throw new FormatError(`tar: malformed PAX record length at ${p}`);
    const rec = data.subarray(sp + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new FormatError(`tar: PAX record without '=' at ${p}`);
    out[rec.toString('utf8', 0, eq)] = Buffer.from(rec.subarray(eq + 1));
    p += len;
  }
  return out;
}

export function encodePaxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n = String(n).length + body.length;
  return Buffer.concat([Buffer.from(String(n)), body]);
}

/** A PAX decimal value (uid, gid, size, GNU.sparse.realsize). */
export function parsePaxNumber(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(Number(s))) throw new FormatError(`tar: bad PAX ${key} ${JSON.stringify(s.slice(0, 40))}`);
  return Number(s);
}

/** PAX time `sec[.frac]`, possibly negative (Go's format: `-1.5` is 1.5 s before the epoch). */
export function parsePaxTime(s: string): Timestamp {
  const m = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(s);
  if (!m) throw new FormatError(`tar: bad PAX time ${JSON.stringify(s)}`);
  let sec = Number(m[2]);
  let nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1]) {
    sec = -sec;
    nsec = -nsec;
    if (nsec < 0) {
      sec -= 1;
      nsec += 1e9;
    }
  }
  return { sec, nsec };
}

/** Go's formatPAXTime. */
export function formatPaxTime(t: Timestamp): string {
  if (t.nsec === 0) return String(t.sec);
  let { sec, nsec } = t;
  let sign = '';
  if (sec < 0) {
    sign = '-';
    sec = -(sec + 1);
    nsec = 1e9 - nsec;
  }
  return `${sign}${sec}.${String(nsec).padStart(9, '0')}`.replace(/0+$/, '');
}
