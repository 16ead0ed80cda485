/**
 * Writing tar: the header blocks of one entry, with a PAX header for long/non-ASCII names,
 * binary xattrs, fractional and pre-1970 times.
 */
import type { EntryType, Timestamp } from '../toc.js';
import { encodeHeaderBlock, tarPadding, typeflagOf, type HeaderBlock } from './header.js';
import { encodePaxRecord, formatPaxTime } from './pax.js';

export interface TarEntrySpec {
  /** Name as it goes into the archive; a `/` is appended to directories that lack one. */
  path: string;
  type?: EntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch, may be fractional or negative; or an exact timestamp. */
  mtime?: number | Timestamp;
  linkName?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, Buffer | string>;
  /** Content length (reg only). */
  size?: number;
}

const DEFAULT_MTIME = 1_700_000_000;

export function toTimestamp(t: number | Timestamp): Timestamp {
  if (typeof t !== 'number') return t;
  // A double near 1.7e9 s is exact only to ~0.2 µs: keep microseconds.
  const sec = Math.floor(t);
  const usec = Math.round((t - sec) * 1e6);
  return usec >= 1e6 ? { sec: sec + 1, nsec: 0 } : { sec, nsec: usec * 1000 };
}

const isAscii = (s: string): boolean => /^[\x20-\x7e]*$/.test(s);

/** Splits a long ASCII name into ustar prefix/name, or returns undefined. */
function splitUstar(name: string): { prefix: string; name: string } | undefined {
  if (name.length <= 100) return { prefix: '', name };
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] === '/' && i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return { prefix: name.slice(0, i), name: name.slice(i + 1) };
  }
  return undefined;
}

/**
 * The header blocks of one member: a PAX header when anything does not fit ustar (long or
 * non-ASCII names, xattrs, sub-second or pre-1970 times, large ids), then the ustar header.
 */
export function encodeTarHeader(spec: TarEntrySpec): Buffer {
  const type = spec.type ?? 'reg';
  let name = spec.path;
  if (type === 'dir' && !name.endsWith('/')) name += '/';
  const size = type === 'reg' ? spec.size ?? 0 : 0;
  const mode = spec.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644);
  const uid = spec.uid ?? 0;
  const gid = spec.gid ?? 0;
  const uname = spec.uname ?? '';
  const gname = spec.gname ?? '';
  const linkName = spec.linkName ?? '';
  const mtime = toTimestamp(spec.mtime ?? DEFAULT_MTIME);
  const records: Buffer[] = [];
  const split = isAscii(name) ? splitUstar(name) : undefined;
  if (!split) records.push(encodePaxRecord('path', Buffer.from(name)));
  if (linkName.length > 100 || !isAscii(linkName)) records.push(encodePaxRecord('linkpath', Buffer.from(linkName)));
  const mtimeFits = mtime.nsec === 0 && mtime.sec >= 0 && mtime.sec < 8 ** 11;
  if (!mtimeFits) records.push(encodePaxRecord('mtime', Buffer.from(formatPaxTime(mtime))));
  if (uid >= 8 ** 7) records.push(encodePaxRecord('uid', Buffer.from(String(uid))));
  if (gid >= 8 ** 7) records.push(encodePaxRecord('gid', Buffer.from(String(gid))));
  if (!isAscii(uname) || uname.length > 32) records.push(encodePaxRecord('uname', Buffer.from(uname)));
  if (!isAscii(gname) || gname.length > 32) records.push(encodePaxRecord('gname', Buffer.from(gname)));
  if (size >= 8 ** 11) records.push(encodePaxRecord('size', Buffer.from(String(size))));
  for (const k of Object.keys(spec.xattrs ?? {}).sort()) {
    const v = spec.xattrs![k]!;
    records.push(encodePaxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)));
  }
  const asciiCut = (s: string, n: number): string => (isAscii(s) ? s.slice(0, n) : s.replace(/[^\x20-\x7e]/g, '_').slice(0, n));
  const fields: HeaderBlock = {
    name: split ? split.name : asciiCut(name, 100),
    prefix: split ? split.prefix : '',
    mode,
    uid: uid < 8 ** 7 ? uid : 0,
    gid: gid < 8 ** 7 ? gid : 0,
    size: size < 8 ** 11 ? size : 0,
    mtime: mtimeFits ? mtime.sec : Math.max(0, Math.min(mtime.sec, 8 ** 11 - 1)),
    typeflag: typeflagOf(type),
    linkName: asciiCut(linkName, 100),
    uname: asciiCut(uname, 32),
    gname: asciiCut(gname, 32),
    devMajor: spec.devMajor ?? 0,
    devMinor: spec.devMinor ?? 0,
  };
  const header = encodeHeaderBlock(fields);
  if (records.length === 0) return header;
  const paxData = Buffer.concat(records);
  const base = name.replace(/\/$/, '').split('/').pop() ?? 'x';
  const paxHeader = encodeHeaderBlock({ ...fields, name: asciiCut(`PaxHeaders/${base}`, 100), prefix: '', size: paxData.length, typeflag: 'x', linkName: '', mode: 0o644 });
  return Buffer.concat([paxHeader, paxData, Buffer.alloc(tarPadding(paxData.length)), header]);
}
