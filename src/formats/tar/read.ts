/**
 * Reading tar: a streaming scanner that keeps every raw header byte (the layer writers must
 * reproduce the source stream exactly, and tar-split records it).
 */
import { FormatError } from '../../errors.js';
import type { EntryType, Timestamp } from '../toc.js';
import { blockPath, BLOCK, checksumOk, cstring, decodeHeaderBlock, entryTypeOf, FIELD, numericField, tarPadding, type HeaderFields } from './header.js';
import { parsePaxNumber, parsePaxRecords, parsePaxTime } from './pax.js';
import { hasSparseExtension, oldGnuSparse, readSparseExtension, type SparseInfo } from './sparse.js';

/** One tar member after PAX / GNU long-name resolution. */
export interface TarHeader extends HeaderFields {
  /** Name as the archive spells it (may start with `./`; directories may end in `/`). */
  name: string;
  /** `other` for types no TOC can describe (contiguous files, unknown flags). */
  type: EntryType | 'other';
  /** Bytes of data that follow the header in the archive. */
  size: number;
  mtime: Timestamp;
  atime?: Timestamp;
  ctime?: Timestamp;
  xattrs: Record<string, Buffer>;
  /** Every PAX record that applied to this member (raw values). */
  pax: Record<string, Buffer>;
  /** GNU sparse file (PAX 1.0 or old GNU `S`): the data is a map of the real content. */
  sparse?: SparseInfo;
}

export type TarEvent =
  | {
      kind: 'entry';
      header: TarHeader;
      /** The raw bytes before the content: padding of the previous member + every header block of this one. */
      raw: Buffer;
      /** How many leading bytes of `raw` are the previous member's padding. */
      padding: number;
      /** Offset of the member's data in the tar stream. */
      dataOffset: number;
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

/** The member a header block describes once PAX records and GNU long names apply. */
function resolveHeader(block: Buffer, pax: Record<string, Buffer>, longName?: string, longLink?: string): TarHeader {
  const b = decodeHeaderBlock(block);
  const h: TarHeader = {
    name: longName ?? blockPath(b),
    type: 'other',
    typeflag: b.typeflag,
    mode: b.mode,
    uid: b.uid,
    gid: b.gid,
    uname: b.uname,
    gname: b.gname,
    size: b.size,
    mtime: { sec: b.mtime, nsec: 0 },
    linkName: longLink ?? b.linkName,
    devMajor: b.devMajor,
    devMinor: b.devMinor,
    xattrs: {},
    pax,
  };
  for (const [k, v] of Object.entries(pax)) {
    if (k === 'path') h.name = v.toString('utf8');
    else if (k === 'linkpath') h.linkName = v.toString('utf8');
    else if (k === 'uid') h.uid = parsePaxNumber(v, k);
    else if (k === 'gid') h.gid = parsePaxNumber(v, k);
    else if (k === 'uname') h.uname = v.toString('utf8');
    else if (k === 'gname') h.gname = v.toString('utf8');
    else if (k === 'size') h.size = parsePaxNumber(v, k);
    else if (k === 'mtime') h.mtime = parsePaxTime(v.toString('latin1'));
    else if (k === 'atime') h.atime = parsePaxTime(v.toString('latin1'));
    else if (k === 'ctime') h.ctime = parsePaxTime(v.toString('latin1'));
    else if (k.startsWith('SCHILY.xattr.')) h.xattrs[k.slice('SCHILY.xattr.'.length)] = v;
  }
  h.type = entryTypeOf(h.typeflag, h.name);
  if (h.typeflag === 'S') {
    h.sparse = oldGnuSparse(block);
  } else if (pax['GNU.sparse.major']?.toString() === '1' && pax['GNU.sparse.minor']?.toString() === '0') {
    if (pax['GNU.sparse.name']) h.name = pax['GNU.sparse.name'].toString('utf8');
    const real = pax['GNU.sparse.realsize'];
    h.sparse = { realSize: real ? parsePaxNumber(real, 'GNU.sparse.realsize') : 0, map: [], mapInData: true };
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
      const flag = String.fromCharCode(block[FIELD.typeflag.at]!);
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        const size = numericField(block, 'size');
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
    const header = resolveHeader(block, { ...global, ...pax }, longName, longLink);
    if (header.sparse && !header.sparse.mapInData && hasSparseExtension(block)) {
      // old GNU sparse: extension blocks of 21 pairs each
      let more = true;
      while (more) {
        const ext = await r.readExact(BLOCK, 'sparse extension header');
        raw.push(ext);
        more = readSparseExtension(ext, header.sparse.map);
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
    yield { kind: 'entry', header, raw: Buffer.concat(raw), padding, dataOffset: r.position, content };
    // Skip whatever the consumer did not read.
    while (consumed < dataSize) {
      const piece = await r.readExact(Math.min(MAX_PIECE, dataSize - consumed), `data of ${header.name}`);
      consumed += piece.length;
    }
    pending = [await r.readExact(tarPadding(dataSize), `padding of ${header.name}`)];
  }
}
