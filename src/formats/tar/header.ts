/**
 * Tar at the byte level: one 512-byte header block (field layout, checksum, octal and
 * base-256 numbers, typeflags), encoded and decoded. The scanner (read.ts) keeps every raw
 * header byte (the layer writers must reproduce the source stream exactly, and tar-split
 * records it); the encoder (write.ts) writes entries (PAX for long/non-ASCII names, binary
 * xattrs, fractional and pre-1970 times). tar-stream hides raw header bytes and cannot write
 * binary PAX values or mode 0, so both directions are done here (docs/formats.md §1.3).
 */
import { FormatError } from '../../errors.js';
import type { EntryType } from '../toc.js';

export const BLOCK = 512;
/** End-of-archive marker: two zero blocks. */
export const TAR_EOA: Buffer = Buffer.alloc(2 * BLOCK);

export function tarPadding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** Where each ustar field sits in a header block. */
export const FIELD = {
  name: { at: 0, len: 100 },
  mode: { at: 100, len: 8 },
  uid: { at: 108, len: 8 },
  gid: { at: 116, len: 8 },
  size: { at: 124, len: 12 },
  mtime: { at: 136, len: 12 },
  checksum: { at: 148, len: 8 },
  typeflag: { at: 156, len: 1 },
  linkname: { at: 157, len: 100 },
  magic: { at: 257, len: 6 },
  uname: { at: 265, len: 32 },
  gname: { at: 297, len: 32 },
  devmajor: { at: 329, len: 8 },
  devminor: { at: 337, len: 8 },
  prefix: { at: 345, len: 155 },
} as const;

type NumericField = 'mode' | 'uid' | 'gid' | 'size' | 'mtime' | 'checksum' | 'devmajor' | 'devminor';

/** What a header block says and a resolved member keeps. */
export interface HeaderFields {
  typeflag: string;
  /** The mode field as written (may carry file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  linkName: string;
  devMajor: number;
  devMinor: number;
}

/** The fields of one header block as stored, before PAX records or GNU long names apply. */
export interface HeaderBlock extends HeaderFields {
  name: string;
  /** The ustar prefix, '' in other formats. The member's path is `prefix/name` when it is set. */
  prefix: string;
  /** Whole seconds since the epoch. */
  mtime: number;
}

const TYPEFLAG: Record<EntryType, string> = { reg: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

export function typeflagOf(type: EntryType): string {
  return TYPEFLAG[type];
}

export function entryTypeOf(flag: string, name: string): EntryType | 'other' {
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

export function cstring(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 || end > at + len ? at + len : end);
}

/** Octal (NUL/space terminated) or base-256 numeric field. */
export function parseNumeric(b: Buffer, at: number, len: number, what: string): number {
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

export function numericField(block: Buffer, field: NumericField): number {
  return parseNumeric(block, FIELD[field].at, FIELD[field].len, field);
}

/** Zero-padded octal with a NUL; leaves the field zero when the value does not fit. */
function writeOctal(block: Buffer, field: NumericField, value: number): void {
  const { at, len } = FIELD[field];
  const s = value.toString(8);
  if (value < 0 || s.length > len - 1) return;
  block.write(s.padStart(len - 1, '0') + '\0', at, 'latin1');
}

function writeString(block: Buffer, field: 'name' | 'typeflag' | 'linkname' | 'uname' | 'gname' | 'prefix', value: string, encoding: BufferEncoding): void {
  block.write(value, FIELD[field].at, FIELD[field].len, encoding);
}

/** Byte sums with the checksum field counted as spaces: unsigned (POSIX) and signed (old writers). */
function checksums(block: Buffer): { unsigned: number; signed: number } {
  const { at, len } = FIELD.checksum;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= at && i < at + len ? 32 : block[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return { unsigned, signed };
}

export function checksumOk(block: Buffer): boolean {
  const stored = numericField(block, 'checksum');
  const { unsigned, signed } = checksums(block);
  return stored === unsigned || stored === signed;
}

/** The member's path as the block spells it: `prefix/name`, or just the name. */
export function blockPath(h: HeaderBlock): string {
  return h.prefix ? h.prefix + '/' + h.name : h.name;
}

export function decodeHeaderBlock(block: Buffer): HeaderBlock {
  const magic = block.toString('latin1', FIELD.magic.at, FIELD.magic.at + FIELD.magic.len);
  const ustar = magic.startsWith('ustar');
  const text = (field: keyof typeof FIELD): string => cstring(block, FIELD[field].at, FIELD[field].len);
  return {
    name: text('name'),
    prefix: magic === 'ustar\0' ? text('prefix') : '',
    typeflag: String.fromCharCode(block[FIELD.typeflag.at]!),
    mode: numericField(block, 'mode'),
    uid: numericField(block, 'uid'),
    gid: numericField(block, 'gid'),
    uname: text('uname'),
    gname: text('gname'),
    size: numericField(block, 'size'),
    mtime: numericField(block, 'mtime'),
    linkName: text('linkname'),
    devMajor: ustar ? numericField(block, 'devmajor') : 0,
    devMinor: ustar ? numericField(block, 'devminor') : 0,
  };
}

/** A ustar header block (magic `ustar\0`, version `00`). */
export function encodeHeaderBlock(h: HeaderBlock): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeString(b, 'name', h.name, 'utf8');
  writeOctal(b, 'mode', h.mode);
  writeOctal(b, 'uid', h.uid);
  writeOctal(b, 'gid', h.gid);
  writeOctal(b, 'size', h.size);
  writeOctal(b, 'mtime', h.mtime);
  writeString(b, 'typeflag', h.typeflag, 'latin1');
  writeString(b, 'linkname', h.linkName, 'utf8');
  b.write('ustar\x0000', FIELD.magic.at, 'latin1');
  writeString(b, 'uname', h.uname, 'utf8');
  writeString(b, 'gname', h.gname, 'utf8');
  writeOctal(b, 'devmajor', h.devMajor);
  writeOctal(b, 'devminor', h.devMinor);
  writeString(b, 'prefix', h.prefix, 'utf8');
  b.write(checksums(b).unsigned.toString(8).padStart(6, '0') + '\0 ', FIELD.checksum.at, 'latin1');
  return b;
}
