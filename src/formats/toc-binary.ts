/**
 * The parsed form of a verified TOC (docs/formats.md §6.4): a LayerToc laid out as typed-array
 * columns, a digest table and one string table. It is also the in-memory form of every TOC a
 * layer is opened with (layer/open.ts): decodeParsedToc checks its bounds once and hands out
 * entries as views over the columns (ColumnEntry), made when asked for, so an opened TOC costs
 * about a third of the heap of one object per entry, chunk and string, and a later open of the
 * same layer maps it instead of decompressing, JSON.parse and normaliseEntries.
 *
 * On disk it is derived data that no registry digest covers: the cache authenticates it
 * before decodeParsedToc sees it (cache/toc-store.ts, docs/security.md), and `context` ties it
 * to the descriptor it was made for.
 */
import { inspect } from 'node:util';
import { plainEntry, type Chunk, type EntryType, type LayerToc, type TocEntries, type TocEntry, type Timestamp } from './toc.js';

const MAGIC = Buffer.from('tocfsPTC');
/** Bumped whenever the layout or what a reader derives from a TOC changes. */
export const PARSED_TOC_VERSION = 2;

const TYPES: readonly EntryType[] = ['reg', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'];
const TYPE_CODES = new Map<string, number>(TYPES.map((t, i) => [t, i]));
/** Words per entry in the u32 section (see E_* below). */
const ENTRY_WORDS = 17;
const E_PATH = 0;
const E_TYPE = 1;
const E_MODE = 2;
const E_UID = 3;
const E_GID = 4;
const E_MTIME = 5;
/** Time index + 1, 0 = none. */
const E_ATIME = 6;
const E_CTIME = 7;
/** String index + 1, 0 = none. */
const E_USER = 8;
const E_GROUP = 9;
/** linkName's string index (symlink, hardlink) or devMajor (char, block). */
const E_LINK = 10;
const E_DEV_MINOR = 11;
/** Digest index + 1, 0 = none. */
const E_DIGEST = 12;
const E_CHUNK_COUNT = 13;
const E_FIRST_CHUNK = 14;
const E_XATTR_COUNT = 15;
const E_FIRST_XATTR = 16;
const HAS_XATTRS = 0x100;
/** Doubles per chunk in the f64 section: offset, size, compressedOffset, compressedEnd, innerOffset. */
const CHUNK_DOUBLES = 5;
/** Words per xattr: name (string index), value offset and length in the xattr value bytes. */
const XATTR_WORDS = 3;
const DIGEST_BYTES = 32;
const DIGEST_PREFIX = 'sha256:';
/**
 * Every field of the model and whether the form holds it: a field added to formats/toc.ts does
 * not compile here until the form learns it (and PARSED_TOC_VERSION is bumped).
 */
const TOC_FIELDS: Record<Exclude<keyof LayerToc, 'entries'>, boolean> = {
  format: true,
  formatVersion: true,
  compression: true,
  tocOffset: true,
  tocCompressedLength: true,
  tocUncompressedLength: true,
  tocDigest: true,
  verified: true,
  prefetchEnd: true,
  noPrefetch: true,
  tarSplit: true,
  uncompressedSize: true,
  uncompressedDigest: true,
  checkpoints: false,
};
const ENTRY_FIELDS: Record<keyof TocEntry, true> = { path: true, type: true, mode: true, uid: true, gid: true, userName: true, groupName: true, size: true, mtime: true, atime: true, ctime: true, linkName: true, devMajor: true, devMinor: true, xattrs: true, digest: true, chunks: true };
const CHUNK_FIELDS: Record<keyof Chunk, boolean> = { offset: true, size: true, compressedOffset: true, compressedEnd: true, innerOffset: true, digest: true, zeros: true, resume: false };
void ENTRY_FIELDS;
void CHUNK_FIELDS;
/** Shared by every entry without chunks, as normaliseEntries shares its own. */
const NO_CHUNKS: Chunk[] = Object.freeze([]) as unknown as Chunk[];

interface Counts {
  entries: number;
  chunks: number;
  xattrs: number;
  strings: number;
  times: number;
  digests: number;
  xattrBytes: number;
  textUnits: number;
}

interface Meta {
  context: string;
  toc: Record<string, unknown>;
  counts: Counts;
  /** How the string table is stored: one byte per UTF-16 unit when every unit fits, else two. */
  text: 'latin1' | 'utf16le';
}

const align8 = (n: number): number => (n + 7) & ~7;

function f64Count(c: Counts): number {
  return c.entries + c.chunks * CHUNK_DOUBLES + c.times;
}
function u32Count(c: Counts): number {
  return c.entries * ENTRY_WORDS + c.chunks + c.times + c.xattrs * XATTR_WORDS + c.strings + 1;
}
function u8Count(c: Counts): number {
  return c.digests * DIGEST_BYTES + c.chunks + c.xattrBytes;
}

/** Whether the entry is as normaliseEntries makes them (which the views give back). */
function encodable(e: TocEntry): boolean {
  const link = e.type === 'symlink' || e.type === 'hardlink';
  const dev = e.type === 'char' || e.type === 'block';
  if (link !== (e.linkName !== undefined) || dev !== (e.devMajor !== undefined) || dev !== (e.devMinor !== undefined)) return false;
  if (e.type !== 'reg' && (e.digest !== undefined || e.chunks.length > 0)) return false;
  if (e.digest !== undefined && !e.digest.startsWith(DIGEST_PREFIX)) return false;
  for (const c of e.chunks) if (c.resume !== undefined || !c.digest.startsWith(DIGEST_PREFIX)) return false;
  return TYPE_CODES.has(e.type);
}

/**
 * The parsed form of `toc`, for the descriptor `context` names; undefined for a TOC the form
 * does not hold (a plain layer's index with gzip checkpoints, fields it does not know).
 */
export function encodeParsedToc(toc: LayerToc, context: string): Buffer | undefined {
  if (toc.checkpoints !== undefined || toc.format === 'none') return undefined;
  const tocFields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(toc)) {
    if (k === 'entries' || v === undefined) continue;
    if (TOC_FIELDS[k as keyof typeof TOC_FIELDS] !== true) return undefined;
    tocFields[k] = v;
  }
  const strings = new Map<string, number>();
  const stringList: string[] = [];
  /** A string of its own (paths are unique: not worth a lookup). */
  const add = (s: string): number => {
    stringList.push(s);
    return stringList.length - 1;
  };
  const str = (s: string): number => {
    let id = strings.get(s);
    if (id === undefined) {
      id = stringList.length;
      strings.set(s, id);
      stringList.push(s);
    }
    return id;
  };
  // Times by value: whole seconds (most TOCs) keyed by the number, others by text (never equal to a number key).
  const timeIds = new Map<number | string, number>();
  const times: Timestamp[] = [];
  const time = (t: Timestamp): number => {
    const key = t.nsec === 0 ? t.sec : `${t.sec}.${t.nsec}`;
    let id = timeIds.get(key);
    if (id === undefined) {
      id = times.length;
      times.push(t);
      timeIds.set(key, id);
    }
    return id;
  };
  const entries = Array.isArray(toc.entries) ? (toc.entries as readonly TocEntry[]) : Array.from(toc.entries);
  let chunkCount = 0;
  let digestCount = 0;
  let xattrCount = 0;
  let xattrBytes = 0;
  for (const e of entries) {
    if (!encodable(e)) return undefined;
    chunkCount += e.chunks.length;
    if (e.digest !== undefined) digestCount++;
    for (const c of e.chunks) if (c.digest !== e.digest) digestCount++;
    if (e.xattrs)
      for (const v of Object.values(e.xattrs)) {
        xattrCount++;
        xattrBytes += v.length;
      }
  }
  const n = entries.length;
  const words = new Uint32Array(n * ENTRY_WORDS);
  const f64 = new Float64Array(n + chunkCount * CHUNK_DOUBLES);
  const chunkDigests = new Uint32Array(chunkCount);
  const zeros = new Uint8Array(chunkCount);
  const xattrWords = new Uint32Array(xattrCount * XATTR_WORDS);
  const xattrValues: Buffer[] = [];
  const digestBytes = Buffer.alloc(digestCount * DIGEST_BYTES);
  let digests = 0;
  /** A digest whose hex is not 32 bytes (never from normaliseEntries) makes the TOC one the form does not hold. */
  let badDigest = false;
  const digestOf = (d: string): number => {
    const hex = d.slice(DIGEST_PREFIX.length);
    if (hex.length !== DIGEST_BYTES * 2 || digestBytes.write(hex, digests * DIGEST_BYTES, DIGEST_BYTES, 'hex') !== DIGEST_BYTES) badDigest = true;
    return digests++;
  };
  let ci = 0;
  let xi = 0;
  let valueAt = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    const w = i * ENTRY_WORDS;
    words[w + E_PATH] = add(e.path);
    words[w + E_TYPE] = TYPE_CODES.get(e.type)! | (e.xattrs ? HAS_XATTRS : 0);
    words[w + E_MODE] = e.mode;
    words[w + E_UID] = e.uid;
    words[w + E_GID] = e.gid;
    words[w + E_MTIME] = time(e.mtime);
    words[w + E_ATIME] = e.atime ? time(e.atime) + 1 : 0;
    words[w + E_CTIME] = e.ctime ? time(e.ctime) + 1 : 0;
    words[w + E_USER] = e.userName !== undefined ? str(e.userName) + 1 : 0;
    words[w + E_GROUP] = e.groupName !== undefined ? str(e.groupName) + 1 : 0;
    words[w + E_LINK] = e.linkName !== undefined ? str(e.linkName) : (e.devMajor ?? 0);
    words[w + E_DEV_MINOR] = e.devMinor ?? 0;
    const digest = e.digest !== undefined ? digestOf(e.digest) : -1;
    words[w + E_DIGEST] = digest + 1;
    words[w + E_CHUNK_COUNT] = e.chunks.length;
    words[w + E_FIRST_CHUNK] = ci;
    f64[i] = e.size;
    for (const c of e.chunks) {
      const d = n + ci * CHUNK_DOUBLES;
      f64[d] = c.offset;
      f64[d + 1] = c.size;
      f64[d + 2] = c.compressedOffset;
      f64[d + 3] = c.compressedEnd;
      f64[d + 4] = c.innerOffset;
      chunkDigests[ci] = c.digest === e.digest ? digest : digestOf(c.digest);
      zeros[ci] = c.zeros ? 1 : 0;
      ci++;
    }
    words[w + E_FIRST_XATTR] = xi;
    if (e.xattrs) {
      const x = Object.entries(e.xattrs);
      words[w + E_XATTR_COUNT] = x.length;
      for (const [name, value] of x) {
        xattrWords[xi * XATTR_WORDS] = str(name);
        xattrWords[xi * XATTR_WORDS + 1] = valueAt;
        xattrWords[xi * XATTR_WORDS + 2] = value.length;
        xattrValues.push(value);
        valueAt += value.length;
        xi++;
      }
    }
  }
  if (badDigest) return undefined;
  const text = stringList.join('');
  const latin1 = !/[^\u0000-\u00ff]/.test(text);
  const offsets = new Uint32Array(stringList.length + 1);
  let at = 0;
  stringList.forEach((s, i) => {
    offsets[i] = at;
    at += s.length;
  });
  offsets[stringList.length] = at;
  const counts: Counts = { entries: n, chunks: chunkCount, xattrs: xattrCount, strings: stringList.length, times: times.length, digests, xattrBytes, textUnits: text.length };
  const timeSec = new Float64Array(times.map((t) => t.sec));
  const timeNsec = new Uint32Array(times.map((t) => t.nsec));
  const meta: Meta = { context, toc: tocFields, counts, text: latin1 ? 'latin1' : 'utf16le' };
  const metaBytes = Buffer.from(JSON.stringify(meta));
  const head = Buffer.alloc(align8(16 + metaBytes.length));
  MAGIC.copy(head, 0);
  head.writeUInt32LE(PARSED_TOC_VERSION, 8);
  head.writeUInt32LE(metaBytes.length, 12);
  metaBytes.copy(head, 16);
  const bytesOf = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const u8Length = u8Count(counts);
  const parts = [
    head,
    // f64 section: entry sizes, chunks, time seconds
    bytesOf(f64),
    bytesOf(timeSec),
    // u32 section: entries, chunk digests, time nanoseconds, xattrs, string offsets
    bytesOf(words),
    bytesOf(chunkDigests),
    bytesOf(timeNsec),
    bytesOf(xattrWords),
    bytesOf(offsets),
    Buffer.alloc(align8(u32Count(counts) * 4) - u32Count(counts) * 4),
    // u8 section: digests, chunk zeros flags, xattr values
    digestBytes,
    bytesOf(zeros),
    ...xattrValues,
    Buffer.alloc(align8(u8Length) - u8Length),
    Buffer.from(text, latin1 ? 'latin1' : 'utf16le'),
  ];
  return Buffer.concat(parts);
}

/** A view of `count` elements at `offset` (8-aligned when the buffer is), copying when it is not. */
function view<T extends Float64Array | Uint32Array>(Kind: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }, buf: Buffer, offset: number, count: number): T {
  const end = offset + count * Kind.BYTES_PER_ELEMENT;
  if (end > buf.length) throw new RangeError('parsed TOC is truncated');
  const abs = buf.byteOffset + offset;
  if (abs % Kind.BYTES_PER_ELEMENT === 0) return new Kind(buf.buffer as ArrayBuffer, abs, count);
  const copy = new Uint8Array(count * Kind.BYTES_PER_ELEMENT);
  copy.set(buf.subarray(offset, end));
  return new Kind(copy.buffer, 0, count);
}

/** Whether `head` (at least the first 12 bytes of an encoded parsed TOC) is of this version of the form. */
export function isCurrentParsedToc(head: Buffer): boolean {
  return head.length >= 12 && head.subarray(0, 8).equals(MAGIC) && head.readUInt32LE(8) === PARSED_TOC_VERSION;
}

/** The context an encoded parsed TOC was made for, or undefined when `buf` is not one of this version. */
function metaOf(buf: Buffer): { meta: Meta; start: number } | undefined {
  if (buf.length < 16 || !isCurrentParsedToc(buf)) return undefined;
  const len = buf.readUInt32LE(12);
  if (16 + len > buf.length) return undefined;
  const meta = JSON.parse(buf.toString('utf8', 16, 16 + len)) as Meta;
  return { meta, start: align8(16 + len) };
}

/** The sections of a parsed TOC, bounds checked: what every ColumnEntry reads. */
class Columns {
  readonly n: number;
  /** Entry sizes, then chunk doubles, then time seconds. */
  readonly f64: Float64Array;
  /** Entry words, then chunk digests, time nanoseconds, xattrs, string offsets. */
  readonly u32: Uint32Array;
  readonly chunkDigestAt: number;
  readonly nsecAt: number;
  readonly xattrAt: number;
  readonly offsetsAt: number;
  readonly timeSecAt: number;
  /** Digests, then chunk zeros flags, then xattr values. */
  readonly u8: Buffer;
  readonly zerosAt: number;
  readonly valuesAt: number;
  readonly text: string;

  constructor(buf: Buffer, start: number, readonly c: Counts, encoding: Meta['text']) {
    this.n = c.entries;
    let at = start;
    this.f64 = view(Float64Array, buf, at, f64Count(c));
    at += this.f64.length * 8;
    this.u32 = view(Uint32Array, buf, at, u32Count(c));
    at += align8(this.u32.length * 4);
    this.u8 = buf.subarray(at, at + u8Count(c));
    at += align8(u8Count(c));
    const textBytes = c.textUnits * (encoding === 'latin1' ? 1 : 2);
    if (this.u8.length !== u8Count(c) || at + textBytes !== buf.length) throw new RangeError('parsed TOC has the wrong length');
    this.text = buf.toString(encoding, at, at + textBytes);
    this.chunkDigestAt = this.n * ENTRY_WORDS;
    this.nsecAt = this.chunkDigestAt + c.chunks;
    this.xattrAt = this.nsecAt + c.times;
    this.offsetsAt = this.xattrAt + c.xattrs * XATTR_WORDS;
    this.timeSecAt = this.n + c.chunks * CHUNK_DOUBLES;
    this.zerosAt = c.digests * DIGEST_BYTES;
    this.valuesAt = this.zerosAt + c.chunks;
    this.check();
  }

  /** Every index inside its table, so that no view reads past one (the bytes are authenticated, yet a view must not make up values). */
  private check(): void {
    const { u32, c, n } = this;
    const bad = (what: string): never => {
      throw new RangeError(`parsed TOC has ${what} out of range`);
    };
    let prev = 0;
    for (let i = 0; i <= c.strings; i++) {
      const o = u32[this.offsetsAt + i]!;
      if (o < prev || o > c.textUnits) bad('a string offset');
      prev = o;
    }
    if (u32[this.offsetsAt + c.strings] !== c.textUnits) bad('the string table end');
    let chunks = 0;
    let xattrs = 0;
    for (let i = 0; i < n; i++) {
      const w = i * ENTRY_WORDS;
      const type = TYPES[u32[w + E_TYPE]! & 0xff];
      if (type === undefined) bad('an entry type');
      if (u32[w + E_PATH]! >= c.strings || u32[w + E_USER]! > c.strings || u32[w + E_GROUP]! > c.strings) bad('a string index');
      if ((type === 'symlink' || type === 'hardlink') && u32[w + E_LINK]! >= c.strings) bad('a link name');
      if (u32[w + E_MTIME]! >= c.times || u32[w + E_ATIME]! > c.times || u32[w + E_CTIME]! > c.times) bad('a time index');
      if (u32[w + E_DIGEST]! > c.digests) bad('a digest index');
      if (u32[w + E_FIRST_CHUNK] !== chunks || (type !== 'reg' && u32[w + E_CHUNK_COUNT] !== 0)) bad('a chunk list');
      chunks += u32[w + E_CHUNK_COUNT]!;
      if (u32[w + E_FIRST_XATTR] !== xattrs) bad('an xattr list');
      xattrs += u32[w + E_XATTR_COUNT]!;
    }
    if (chunks !== c.chunks || xattrs !== c.xattrs) bad('a chunk or xattr count');
    for (let k = 0; k < c.chunks; k++) if (u32[this.chunkDigestAt + k]! >= c.digests) bad('a chunk digest');
    for (let k = 0; k < c.xattrs; k++) {
      const x = this.xattrAt + k * XATTR_WORDS;
      if (u32[x]! >= c.strings || u32[x + 1]! + u32[x + 2]! > c.xattrBytes) bad('an xattr');
    }
  }

  word(entry: number, field: number): number {
    return this.u32[entry * ENTRY_WORDS + field]!;
  }

  string(id: number): string {
    return this.text.slice(this.u32[this.offsetsAt + id], this.u32[this.offsetsAt + id + 1]);
  }

  time(id: number): Timestamp {
    return { sec: this.f64[this.timeSecAt + id]!, nsec: this.u32[this.nsecAt + id]! };
  }

  digest(id: number): string {
    return DIGEST_PREFIX + this.u8.toString('hex', id * DIGEST_BYTES, (id + 1) * DIGEST_BYTES);
  }

  chunks(entry: number): Chunk[] {
    const count = this.word(entry, E_CHUNK_COUNT);
    if (count === 0) return NO_CHUNKS;
    const first = this.word(entry, E_FIRST_CHUNK);
    const digestOfEntry = this.word(entry, E_DIGEST) - 1;
    const entryDigest = digestOfEntry >= 0 ? this.digest(digestOfEntry) : undefined;
    const out: Chunk[] = new Array(count);
    for (let k = 0; k < count; k++) {
      const ci = first + k;
      const d = this.n + ci * CHUNK_DOUBLES;
      const digestId = this.u32[this.chunkDigestAt + ci]!;
      const f = this.f64;
      out[k] = { offset: f[d]!, size: f[d + 1]!, compressedOffset: f[d + 2]!, compressedEnd: f[d + 3]!, innerOffset: f[d + 4]!, digest: digestId === digestOfEntry ? entryDigest! : this.digest(digestId), zeros: this.u8[this.zerosAt + ci] === 1 };
    }
    return out;
  }

  xattrs(entry: number): Record<string, Buffer> {
    const out: Record<string, Buffer> = Object.create(null);
    const first = this.word(entry, E_FIRST_XATTR);
    for (let k = 0, count = this.word(entry, E_XATTR_COUNT); k < count; k++) {
      const x = this.xattrAt + (first + k) * XATTR_WORDS;
      const from = this.valuesAt + this.u32[x + 1]!;
      out[this.string(this.u32[x]!)] = this.u8.subarray(from, from + this.u32[x + 2]!);
    }
    return out;
  }
}

/**
 * One entry of a parsed TOC, read from its columns on each access (a spread or Object.keys
 * sees no fields: use plainEntry). Its chunk list is made on first use and kept, since a
 * file's reads ask for it again and again.
 */
class ColumnEntry implements TocEntry {
  private chunkList: Chunk[] | undefined = undefined;

  constructor(
    private readonly cols: Columns,
    private readonly i: number,
  ) {}

  get path(): string {
    return this.cols.string(this.cols.word(this.i, E_PATH));
  }
  get type(): EntryType {
    return TYPES[this.cols.word(this.i, E_TYPE) & 0xff]!;
  }
  get mode(): number {
    return this.cols.word(this.i, E_MODE);
  }
  get uid(): number {
    return this.cols.word(this.i, E_UID);
  }
  get gid(): number {
    return this.cols.word(this.i, E_GID);
  }
  get userName(): string | undefined {
    return this.stringPlusOne(E_USER);
  }
  get groupName(): string | undefined {
    return this.stringPlusOne(E_GROUP);
  }
  get size(): number {
    return this.cols.f64[this.i]!;
  }
  get mtime(): Timestamp {
    return this.cols.time(this.cols.word(this.i, E_MTIME));
  }
  get atime(): Timestamp | undefined {
    return this.timePlusOne(E_ATIME);
  }
  get ctime(): Timestamp | undefined {
    return this.timePlusOne(E_CTIME);
  }
  get linkName(): string | undefined {
    const type = this.type;
    return type === 'symlink' || type === 'hardlink' ? this.cols.string(this.cols.word(this.i, E_LINK)) : undefined;
  }
  get devMajor(): number | undefined {
    const type = this.type;
    return type === 'char' || type === 'block' ? this.cols.word(this.i, E_LINK) : undefined;
  }
  get devMinor(): number | undefined {
    const type = this.type;
    return type === 'char' || type === 'block' ? this.cols.word(this.i, E_DEV_MINOR) : undefined;
  }
  get xattrs(): Record<string, Buffer> | undefined {
    return this.cols.word(this.i, E_TYPE) & HAS_XATTRS ? this.cols.xattrs(this.i) : undefined;
  }
  get digest(): string | undefined {
    const id = this.cols.word(this.i, E_DIGEST);
    return id === 0 ? undefined : this.cols.digest(id - 1);
  }
  get chunks(): Chunk[] {
    return (this.chunkList ??= this.cols.chunks(this.i));
  }

  /** The string a `+ 1` word names, undefined for 0. */
  private stringPlusOne(field: number): string | undefined {
    const id = this.cols.word(this.i, field);
    return id === 0 ? undefined : this.cols.string(id - 1);
  }
  /** The time a `+ 1` word names, undefined for 0. */
  private timePlusOne(field: number): Timestamp | undefined {
    const id = this.cols.word(this.i, field);
    return id === 0 ? undefined : this.cols.time(id - 1);
  }

  toJSON(): TocEntry {
    return plainEntry(this);
  }
  [inspect.custom](): TocEntry {
    return plainEntry(this);
  }
}

/** The entries of a parsed TOC: one ColumnEntry made per ask. */
class ColumnEntries implements TocEntries {
  constructor(private readonly cols: Columns) {}

  get length(): number {
    return this.cols.n;
  }

  at(index: number): TocEntry | undefined {
    const i = index < 0 ? index + this.cols.n : index;
    return i >= 0 && i < this.cols.n ? new ColumnEntry(this.cols, i) : undefined;
  }

  *[Symbol.iterator](): Iterator<TocEntry> {
    for (let i = 0; i < this.cols.n; i++) yield new ColumnEntry(this.cols, i);
  }

  toJSON(): TocEntry[] {
    return Array.from(this, plainEntry);
  }
  [inspect.custom](): string {
    return `TocEntries(${this.cols.n})`;
  }
}

/**
 * The LayerToc an encoded parsed TOC holds, its entries read from `buf` (kept), or undefined
 * when it is of another version or was made for another context. Throws on a malformed one
 * (which authenticated bytes never are).
 */
export function decodeParsedToc(buf: Buffer, context: string): LayerToc | undefined {
  const head = metaOf(buf);
  if (!head || head.meta.context !== context) return undefined;
  const cols = new Columns(buf, head.start, head.meta.counts, head.meta.text);
  return { ...(head.meta.toc as unknown as Omit<LayerToc, 'entries'>), entries: new ColumnEntries(cols) };
}

/** Whether `toc`'s entries are views over a parsed form (and so cost no object per entry). */
export function isColumnar(toc: LayerToc): boolean {
  return toc.entries instanceof ColumnEntries;
}
