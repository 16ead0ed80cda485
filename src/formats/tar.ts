/**
 * Tar at the byte level: a streaming scanner that keeps every raw header byte (the layer
 * writers must reproduce the source stream exactly, and tar-split records it), and a header
 * encoder for writing entries (PAX for long/non-ASCII names, binary xattrs, fractional and
 * pre-1970 times). tar-stream hides raw header bytes and cannot write binary PAX values or
 * mode 0, so both directions are done here (formats.md §1.3).
 */
import { FormatError } from '../errors.js';
import type { EntryType, Timestamp } from './toc.js';

export const BLOCK = 512;
/** End-of-archive marker: two zero blocks. */
export const TAR_EOA: Buffer = Buffer.alloc(2 * BLOCK);

export function tarPadding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

// ---------------------------------------------------------------------------------------
// Reading

/** One tar member after PAX / GNU long-name resolution. */
export interface TarHeader {
  /** Name as the archive spells it (may start with `./`; directories may end in `/`). */
  name: string;
  /** `other` for types no TOC can describe (contiguous files, unknown flags). */
  type: EntryType | 'other';
  typeflag: string;
  /** The mode field as written (may carry file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Bytes of data that follow the header in the archive. */
  size: number;
  mtime: Timestamp;
  atime?: Timestamp;
  ctime?: Timestamp;
  linkName: string;
  devMajor: number;
  devMinor: number;
  xattrs: Record<string, Buffer>;
  /** Every PAX record that applied to this member (raw values). */
  pax: Record<string, Buffer>;
  /** GNU sparse file (PAX 1.0 or old GNU `S`): the data is a map of the real content. */
  sparse?: SparseInfo;
}

export interface SparseInfo {
  realSize: number;
  /** Regions of real data in the expanded file; everything else is zeros. */
  map: Array<{ offset: number; length: number }>;
  /** PAX 1.0: the map is a text block at the start of the data; old GNU: in the headers. */
  mapInData: boolean;
}

export type TarEvent =
  | {
      kind: 'entry';
      header: TarHeader;
      /** The raw bytes before the content: padding of the previous member + every header block of this one. */
      raw: Buffer;
      /** How many leading bytes of `raw` are the previous member's padding. */
      padding: number;
      /** The member's data (`header.size` bytes, in pieces). Read it or not: the scanner skips what is left. */
      content: AsyncIterable<Buffer>;
    }
  /** Padding of the last member + the end-of-archive blocks (empty when the archive just stops). */
  | { kind: 'end'; raw: Buffer; padding: number }
  /** Whatever follows the end-of-archive blocks (record padding), in pieces. */
  | { kind: 'trailing'; data: Buffer };

/** A tar stream: a Node stream, an async generator, or simply `[buffer]`. */
export type ByteSource = AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>;

const MAX_PIECE = 1024 * 1024;
/** PAX headers and GNU long names are untrusted: cap what is held in memory for them. */
const MAX_META = 16 * 1024 * 1024;

/** Reads exact byte counts from an async byte stream. */
class ByteReader {
  private bufs: Buffer[] = [];
  private len = 0;
  private done = false;
  private it: AsyncIterator<Buffer | Uint8Array | string> | Iterator<Buffer | Uint8Array | string>;
  /** Bytes consumed so far (offset in the stream). */
  position = 0;

  constructor(src: ByteSource) {
    this.it = Symbol.asyncIterator in src ? src[Symbol.asyncIterator]() : src[Symbol.iterator]();
  }

  /** Buffers until `n` bytes are available or the stream ends; returns how many are. */
  async fill(n: number): Promise<number> {
    while (this.len < n && !this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const v = r.value;
      const b = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      if (b.length) {
        this.bufs.push(b);
        this.len += b.length;
      }
    }
    return Math.min(this.len, n);
  }

  /** Takes up to `n` buffered bytes. */
  private take(n: number): Buffer {
    n = Math.min(n, this.len);
    let out: Buffer;
    const first = this.bufs[0];
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.bufs.shift();
      else this.bufs[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let o = 0;
      while (o < n) {
        const b = this.bufs[0]!;
        const k = Math.min(b.length, n - o);
        b.copy(out, o, 0, k);
        o += k;
        if (k === b.length) this.bufs.shift();
        else this.bufs[0] = b.subarray(k);
      }
    }
    this.len -= n;
    this.position += n;
    return out;
  }

  async readExact(n: number, what: string): Promise<Buffer> {
    const have = await this.fill(n);
    if (have < n) throw new FormatError(`tar: truncated ${what} at offset ${this.position + have}`);
    return this.take(n);
  }

  /** Up to `n` bytes (fewer only at end of stream). */
  async readUpTo(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.take(n);
  }

  /** `n` bytes in pieces of at most MAX_PIECE, without joining them. */
  async *pieces(n: number, what: string): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.len === 0 && (await this.fill(1)) === 0) throw new FormatError(`tar: truncated ${what} at offset ${this.position}`);
      const b = this.take(Math.min(left, MAX_PIECE, this.bufs[0]!.length));
      left -= b.length;
      yield b;
    }
  }

  async *rest(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.len === 0 && (await this.fill(1)) === 0) return;
      yield this.take(Math.min(MAX_PIECE, this.bufs[0]!.length));
    }
  }
}

function cstring(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 || end > at + len ? at + len : end);
}

/** Octal (NUL/space terminated) or base-256 numeric field. */
function numeric(b: Buffer, at: number, len: number, what: string): number {
  const first = b[at]!;
  if (first & 0x80) {
    // base-256, two's complement; 0xff marks negative
    const neg = first === 0xff;
    let v = BigInt(first & 0x7f) - (neg ? 0x80n : 0n);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(b[at + i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`tar: ${what} out of range`);
    return Number(v);
  }
  const s = b.toString('latin1', at, at + len).replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new FormatError(`tar: bad ${what} field ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function checksumOk(block: Buffer): boolean {
  const stored = numeric(block, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 32 : block[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

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

function typeOf(flag: string, name: string): EntryType | 'other' {
  switch (flag) {
    case '0':
    case '\0':
      return name.endsWith('/') && flag === '\0' ? 'dir' : 'reg';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'dir';
    case '6':
      return 'fifo';
    case 'S':
      return 'reg';
    default:
      return 'other';
  }
}

function paxNumber(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(Number(s))) throw new FormatError(`tar: bad PAX ${key} ${JSON.stringify(s.slice(0, 40))}`);
  return Number(s);
}

/** Old GNU sparse entries: 24-byte (offset, numbytes) pairs of 12-byte numeric fields. */
function gnuSparsePairs(b: Buffer, at: number, count: number, into: SparseInfo['map']): void {
  for (let i = 0; i < count; i++) {
    const o = at + i * 24;
    if (b[o] === 0) return;
    into.push({ offset: numeric(b, o, 12, 'sparse offset'), length: numeric(b, o + 12, 12, 'sparse length') });
  }
}

function decodeHeader(block: Buffer, pax: Record<string, Buffer>, longName?: string, longLink?: string): TarHeader {
  const magic = block.toString('latin1', 257, 263);
  const ustar = magic === 'ustar\0';
  let name = cstring(block, 0, 100);
  if (ustar && block[345] !== 0) name = cstring(block, 345, 155) + '/' + name;
  const typeflag = String.fromCharCode(block[156]!);
  const h: TarHeader = {
    name: longName ?? name,
    type: 'other',
    typeflag,
    mode: numeric(block, 100, 8, 'mode'),
    uid: numeric(block, 108, 8, 'uid'),
    gid: numeric(block, 116, 8, 'gid'),
    uname: cstring(block, 265, 32),
    gname: cstring(block, 297, 32),
    size: numeric(block, 124, 12, 'size'),
    mtime: { sec: numeric(block, 136, 12, 'mtime'), nsec: 0 },
    linkName: longLink ?? cstring(block, 157, 100),
    devMajor: magic.startsWith('ustar') ? numeric(block, 329, 8, 'devmajor') : 0,
    devMinor: magic.startsWith('ustar') ? numeric(block, 337, 8, 'devminor') : 0,
    xattrs: {},
    pax,
  };
  for (const [k, v] of Object.entries(pax)) {
    if (k === 'path') h.name = v.toString('utf8');
    else if (k === 'linkpath') h.linkName = v.toString('utf8');
    else if (k === 'uid') h.uid = paxNumber(v, k);
    else if (k === 'gid') h.gid = paxNumber(v, k);
    else if (k === 'uname') h.uname = v.toString('utf8');
    else if (k === 'gname') h.gname = v.toString('utf8');
    else if (k === 'size') h.size = paxNumber(v, k);
    else if (k === 'mtime') h.mtime = parsePaxTime(v.toString('latin1'));
    else if (k === 'atime') h.atime = parsePaxTime(v.toString('latin1'));
    else if (k === 'ctime') h.ctime = parsePaxTime(v.toString('latin1'));
    else if (k.startsWith('SCHILY.xattr.')) h.xattrs[k.slice('SCHILY.xattr.'.length)] = v;
  }
  h.type = typeOf(typeflag, h.name);
  if (typeflag === 'S') {
    const map: SparseInfo['map'] = [];
    gnuSparsePairs(block, 386, 4, map);
    h.sparse = { realSize: numeric(block, 483, 12, 'sparse realsize'), map, mapInData: false };
  } else if (pax['GNU.sparse.major']?.toString() === '1' && pax['GNU.sparse.minor']?.toString() === '0') {
    if (pax['GNU.sparse.name']) h.name = pax['GNU.sparse.name'].toString('utf8');
    const real = pax['GNU.sparse.realsize'];
    h.sparse = { realSize: real ? paxNumber(real, 'GNU.sparse.realsize') : 0, map: [], mapInData: true };
  } else if (pax['GNU.sparse.map'] || pax['GNU.sparse.offset']) {
    throw new FormatError(`tar: ${h.name}: GNU sparse format 0.x is not supported`);
  }
  return h;
}

/** Types whose data, if the header claims any, is not in the archive (Go's archive/tar rule). */
function headerOnly(type: EntryType | 'other'): boolean {
  return type !== 'reg' && type !== 'other';
}

/**
 * Scans a tar stream member by member, keeping raw header bytes. Each event must be handled
 * before the next is requested; unread content is skipped.
 */
export async function* scanTar(src: ByteSource): AsyncGenerator<TarEvent> {
  const r = new ByteReader(src);
  let pending: Buffer[] = [];
  let global: Record<string, Buffer> = {};
  for (;;) {
    const raw = pending;
    const padding = raw.reduce((n, b) => n + b.length, 0);
    pending = [];
    let pax: Record<string, Buffer> = {};
    let longName: string | undefined;
    let longLink: string | undefined;
    let block: Buffer;
    for (;;) {
      const at = r.position;
      if ((await r.fill(BLOCK)) === 0) {
        yield { kind: 'end', raw: Buffer.concat(raw), padding };
        return;
      }
      block = await r.readExact(BLOCK, 'header');
      raw.push(block);
      if (block.every((x) => x === 0)) {
        const second = await r.readUpTo(BLOCK);
        if (second.length > 0) {
          if (second.length < BLOCK) throw new FormatError(`tar: truncated end-of-archive at offset ${at + BLOCK}`);
          if (!second.every((x) => x === 0)) throw new FormatError(`tar: zero block followed by a non-zero block at offset ${at}`);
          raw.push(second);
        }
        yield { kind: 'end', raw: Buffer.concat(raw), padding };
        for await (const data of r.rest()) yield { kind: 'trailing', data };
        return;
      }
      if (!checksumOk(block)) throw new FormatError(`tar: bad header checksum at offset ${at}`);
      const flag = String.fromCharCode(block[156]!);
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        const size = numeric(block, 124, 12, 'size');
        if (size > MAX_META) throw new FormatError(`tar: ${flag} header of ${size} bytes at offset ${at} is too large`);
        const data = await r.readExact(size, 'extended header');
        const pad = await r.readExact(tarPadding(size), 'extended header padding');
        raw.push(data, pad);
        if (flag === 'x') pax = { ...pax, ...parsePaxRecords(data) };
        else if (flag === 'g') global = { ...global, ...parsePaxRecords(data) };
        else if (flag === 'L') longName = cstring(data, 0, data.length);
        else longLink = cstring(data, 0, data.length);
        continue;
      }
      break;
    }
    const header = decodeHeader(block, { ...global, ...pax }, longName, longLink);
    if (header.sparse && !header.sparse.mapInData && block[482]) {
      // old GNU sparse: extension blocks of 21 pairs each
      let more = true;
      while (more) {
        const ext = await r.readExact(BLOCK, 'sparse extension header');
        raw.push(ext);
        gnuSparsePairs(ext, 0, 21, header.sparse.map);
        more = ext[504] !== 0;
      }
    }
    const dataSize = headerOnly(header.type) ? 0 : header.size;
    if (dataSize !== header.size) header.size = 0;
    let consumed = 0;
    const content = (async function* () {
      for await (const piece of r.pieces(dataSize, `data of ${header.name}`)) {
        consumed += piece.length;
        yield piece;
      }
    })();
    yield { kind: 'entry', header, raw: Buffer.concat(raw), padding, content };
    // Skip whatever the consumer did not read.
    while (consumed < dataSize) {
      const piece = await r.readExact(Math.min(MAX_PIECE, dataSize - consumed), `data of ${header.name}`);
      consumed += piece.length;
    }
    pending = [await r.readExact(tarPadding(dataSize), `padding of ${header.name}`)];
  }
}

/** Reads a whole async byte stream into one buffer (small data only). */
export async function collect(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of src) parts.push(p);
  return Buffer.concat(parts);
}

/**
 * The PAX 1.0 sparse map text at the start of the data: count, then offset/length pairs,
 * padded to a block. Undefined while `data` does not yet hold all of it.
 */
export function parseSparseMapText(data: Buffer, name: string): { map: SparseInfo['map']; length: number } | undefined {
  const lines: number[] = [];
  let p = 0;
  let need = 1;
  while (lines.length < need) {
    const nl = data.indexOf(0x0a, p);
    if (nl < 0) {
      if (data.length - p > 32) throw new FormatError(`tar: ${name}: bad sparse map`);
      return undefined;
    }
    const s = data.toString('latin1', p, nl);
    if (!/^[0-9]+$/.test(s)) throw new FormatError(`tar: ${name}: bad sparse map line ${JSON.stringify(s.slice(0, 40))}`);
    lines.push(Number(s));
    if (lines.length === 1) need = 1 + 2 * lines[0]!;
    p = nl + 1;
  }
  const map: SparseInfo['map'] = [];
  for (let i = 1; i < lines.length; i += 2) map.push({ offset: lines[i]!, length: lines[i + 1]! });
  return { map, length: p + tarPadding(p) };
}

// ---------------------------------------------------------------------------------------
// Writing

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

const TYPEFLAG: Record<EntryType, string> = { reg: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };
const DEFAULT_MTIME = 1_700_000_000;

export function toTimestamp(t: number | Timestamp): Timestamp {
  if (typeof t !== 'number') return t;
  // A double near 1.7e9 s is exact only to ~0.2 µs: keep microseconds.
  const sec = Math.floor(t);
  const usec = Math.round((t - sec) * 1e6);
  return usec >= 1e6 ? { sec: sec + 1, nsec: 0 } : { sec, nsec: usec * 1000 };
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

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let n = body.length + 1;
  while (String(n).length + body.length !== n) n = String(n).length + body.length;
  return Buffer.concat([Buffer.from(String(n)), body]);
}

const isAscii = (s: string): boolean => /^[\x20-\x7e]*$/.test(s);

function octal(buf: Buffer, at: number, len: number, value: number): boolean {
  const s = value.toString(8);
  if (value < 0 || s.length > len - 1) return false;
  buf.write(s.padStart(len - 1, '0') + '\0', at, 'latin1');
  return true;
}

/** Splits a long ASCII name into ustar prefix/name, or returns undefined. */
function splitUstar(name: string): { prefix: string; name: string } | undefined {
  if (name.length <= 100) return { prefix: '', name };
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] === '/' && i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return { prefix: name.slice(0, i), name: name.slice(i + 1) };
  }
  return undefined;
}

function ustarBlock(fields: { name: string; prefix: string; mode: number; uid: number; gid: number; size: number; mtime: number; flag: string; linkName: string; uname: string; gname: string; devMajor: number; devMinor: number }): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(fields.name, 0, 100, 'utf8');
  octal(b, 100, 8, fields.mode);
  octal(b, 108, 8, fields.uid);
  octal(b, 116, 8, fields.gid);
  octal(b, 124, 12, fields.size);
  octal(b, 136, 12, fields.mtime);
  b.write(fields.flag, 156, 'latin1');
  b.write(fields.linkName, 157, 100, 'utf8');
  b.write('ustar\x0000', 257, 'latin1');
  b.write(fields.uname, 265, 32, 'utf8');
  b.write(fields.gname, 297, 32, 'utf8');
  octal(b, 329, 8, fields.devMajor);
  octal(b, 337, 8, fields.devMinor);
  b.write(fields.prefix, 345, 155, 'utf8');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
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
  if (!split) records.push(paxRecord('path', Buffer.from(name)));
  if (linkName.length > 100 || !isAscii(linkName)) records.push(paxRecord('linkpath', Buffer.from(linkName)));
  const mtimeFits = mtime.nsec === 0 && mtime.sec >= 0 && mtime.sec < 8 ** 11;
  if (!mtimeFits) records.push(paxRecord('mtime', Buffer.from(formatPaxTime(mtime))));
  if (uid >= 8 ** 7) records.push(paxRecord('uid', Buffer.from(String(uid))));
  if (gid >= 8 ** 7) records.push(paxRecord('gid', Buffer.from(String(gid))));
  if (!isAscii(uname) || uname.length > 32) records.push(paxRecord('uname', Buffer.from(uname)));
  if (!isAscii(gname) || gname.length > 32) records.push(paxRecord('gname', Buffer.from(gname)));
  if (size >= 8 ** 11) records.push(paxRecord('size', Buffer.from(String(size))));
  for (const k of Object.keys(spec.xattrs ?? {}).sort()) {
    const v = spec.xattrs![k]!;
    records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)));
  }
  const asciiCut = (s: string, n: number): string => (isAscii(s) ? s.slice(0, n) : s.replace(/[^\x20-\x7e]/g, '_').slice(0, n));
  const fields = {
    name: split ? split.name : asciiCut(name, 100),
    prefix: split ? split.prefix : '',
    mode,
    uid: uid < 8 ** 7 ? uid : 0,
    gid: gid < 8 ** 7 ? gid : 0,
    size: size < 8 ** 11 ? size : 0,
    mtime: mtimeFits ? mtime.sec : Math.max(0, Math.min(mtime.sec, 8 ** 11 - 1)),
    flag: TYPEFLAG[type],
    linkName: asciiCut(linkName, 100),
    uname: asciiCut(uname, 32),
    gname: asciiCut(gname, 32),
    devMajor: spec.devMajor ?? 0,
    devMinor: spec.devMinor ?? 0,
  };
  const header = ustarBlock(fields);
  if (records.length === 0) return header;
  const paxData = Buffer.concat(records);
  const base = name.replace(/\/$/, '').split('/').pop() ?? 'x';
  const paxHeader = ustarBlock({ ...fields, name: asciiCut(`PaxHeaders/${base}`, 100), prefix: '', size: paxData.length, flag: 'x', linkName: '', mode: 0o644 });
  return Buffer.concat([paxHeader, paxData, Buffer.alloc(tarPadding(paxData.length)), header]);
}
