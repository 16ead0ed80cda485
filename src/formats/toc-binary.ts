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
import { plainEntry, type Chunk, type EntryFields, type EntrySink, type EntryType, type LayerToc, type TocEntries, type TocEntry, type Timestamp } from './toc.js';

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

/** A typed array (or Buffer) that grows by doubling; `make` makes one of `n` zeroed elements. */
class Growing<T extends Float64Array | Uint32Array | Uint8Array> {
  length = 0;
  array: T;
  constructor(
    private readonly make: (n: number) => T,
    initial = 0,
  ) {
    this.array = make(initial);
  }
  /** Room for `more` elements; returns where they start. */
  reserve(more: number): number {
    const at = this.length;
    if (at + more > this.array.length) {
      const next = this.make(Math.max(2 * this.array.length, at + more, 16));
      next.set(this.array.subarray(0, at));
      this.array = next;
    }
    this.length = at + more;
    return at;
  }
  view(): T {
    return this.array.subarray(0, this.length) as T;
  }
  /** A new, empty table of `n` elements of the same kind. */
  blank(n: number): T {
    return this.make(n);
  }
}

/** A table whose rows belong to entries, `width` elements each. */
type RowTable = [Growing<Float64Array | Uint32Array | Uint8Array>, number];

/**
 * Writes the parsed form (the layout decodeParsedToc reads) as entries come: normaliseEntries
 * fills it straight from a TOC's JSON (no object per entry, chunk or time), encodeParsedToc
 * from a LayerToc's entries. Entries are rows in the order given; a row may be stated again
 * (a directory's later metadata); a row's chunks are given at once, in row order.
 */
export class ParsedTocBuilder implements EntrySink {
  private rows = 0;
  private readonly words: Growing<Uint32Array>;
  private readonly sizes: Growing<Float64Array>;
  private readonly chunkDoubles = new Growing((n) => new Float64Array(n));
  private readonly chunkDigests = new Growing((n) => new Uint32Array(n));
  private readonly zeros = new Growing((n) => new Uint8Array(n));
  private readonly digestBytes = new Growing((n) => Buffer.alloc(n));
  private readonly xattrWords = new Growing((n) => new Uint32Array(n));
  private readonly xattrValues: Buffer[] = [];
  private xattrBytes = 0;
  private readonly stringList: string[] = [];
  private readonly strings = new Map<string, number>();
  private readonly times: Timestamp[] = [];
  /** Times by value: whole seconds (most TOCs) keyed by the number, others by text (never equal to a number key). */
  private readonly timeIds = new Map<number | string, number>();
  private lastTime: Timestamp | undefined;
  private lastTimeId = 0;
  /** A digest whose hex is not 32 bytes (never from normaliseEntries) makes the TOC one the form does not hold. */
  private badDigest = false;

  /** `entries`: about how many rows will come (room is made for them at once). */
  constructor(entries = 0) {
    this.words = new Growing((n) => new Uint32Array(n), entries * ENTRY_WORDS);
    this.sizes = new Growing((n) => new Float64Array(n), entries);
  }

  /** Appends a row; returns its index. */
  entry(f: EntryFields): number {
    const row = this.rows++;
    this.words.reserve(ENTRY_WORDS);
    this.sizes.reserve(1);
    this.words.array[row * ENTRY_WORDS + E_PATH] = this.add(f.path);
    this.set(row, f);
    return row;
  }

  /** States row `row` again (its path stays); its chunks, if any, are given again too. */
  restate(row: number, f: EntryFields): void {
    this.set(row, f);
  }

  private set(row: number, f: EntryFields): void {
    const words = this.words.array;
    const w = row * ENTRY_WORDS;
    words[w + E_TYPE] = TYPE_CODES.get(f.type)! | (f.xattrs ? HAS_XATTRS : 0);
    words[w + E_MODE] = f.mode;
    words[w + E_UID] = f.uid;
    words[w + E_GID] = f.gid;
    words[w + E_MTIME] = this.time(f.mtime);
    words[w + E_ATIME] = f.atime ? this.time(f.atime) + 1 : 0;
    words[w + E_CTIME] = f.ctime ? this.time(f.ctime) + 1 : 0;
    words[w + E_USER] = f.userName !== undefined ? this.str(f.userName) + 1 : 0;
    words[w + E_GROUP] = f.groupName !== undefined ? this.str(f.groupName) + 1 : 0;
    words[w + E_LINK] = f.linkName !== undefined ? this.str(f.linkName) : (f.devMajor ?? 0);
    words[w + E_DEV_MINOR] = f.devMinor ?? 0;
    words[w + E_DIGEST] = f.digest !== undefined ? this.digest(f.digest) + 1 : 0;
    words[w + E_CHUNK_COUNT] = 0;
    words[w + E_FIRST_XATTR] = this.xattrWords.length / XATTR_WORDS;
    words[w + E_XATTR_COUNT] = 0;
    this.sizes.array[row] = f.size;
    if (f.xattrs) {
      let count = 0;
      for (const [name, value] of Object.entries(f.xattrs)) {
        const x = this.xattrWords.reserve(XATTR_WORDS);
        const xw = this.xattrWords.array;
        xw[x] = this.str(name);
        xw[x + 1] = this.xattrBytes;
        xw[x + 2] = value.length;
        this.xattrValues.push(value);
        this.xattrBytes += value.length;
        count++;
      }
      words[w + E_XATTR_COUNT] = count;
    }
  }

  /** Appends a chunk of row `row` (a row's chunks follow each other); `digest` null: the row's own. */
  chunk(row: number, offset: number, size: number, compressedOffset: number, compressedEnd: number, innerOffset: number, digest: string | null, zeros: boolean): void {
    const w = row * ENTRY_WORDS;
    const words = this.words.array;
    const ci = this.chunkDigests.reserve(1);
    if (words[w + E_CHUNK_COUNT] === 0) words[w + E_FIRST_CHUNK] = ci;
    else if (words[w + E_FIRST_CHUNK]! + words[w + E_CHUNK_COUNT]! !== ci) throw new Error(`ParsedTocBuilder: the chunks of row ${row} do not follow each other`);
    words[w + E_CHUNK_COUNT]!++;
    const d = this.chunkDoubles.reserve(CHUNK_DOUBLES);
    const f = this.chunkDoubles.array;
    f[d] = offset;
    f[d + 1] = size;
    f[d + 2] = compressedOffset;
    f[d + 3] = compressedEnd;
    f[d + 4] = innerOffset;
    const entryDigest = words[w + E_DIGEST]! - 1;
    if (digest === null && entryDigest < 0) this.badDigest = true;
    this.chunkDigests.array[ci] = digest === null ? entryDigest : this.digest(digest);
    this.zeros.reserve(1);
    this.zeros.array[ci] = zeros ? 1 : 0;
  }

  /** A path: its own string (paths are unique, not worth a lookup). */
  private add(s: string): number {
    this.stringList.push(s);
    return this.stringList.length - 1;
  }

  private str(s: string): number {
    let id = this.strings.get(s);
    if (id === undefined) {
      id = this.stringList.length;
      this.strings.set(s, id);
      this.stringList.push(s);
    }
    return id;
  }

  private time(t: Timestamp): number {
    if (t === this.lastTime) return this.lastTimeId;
    const key = t.nsec === 0 ? t.sec : `${t.sec}.${t.nsec}`;
    let id = this.timeIds.get(key);
    if (id === undefined) {
      id = this.times.length;
      this.times.push(t);
      this.timeIds.set(key, id);
    }
    this.lastTime = t;
    this.lastTimeId = id;
    return id;
  }

  private digest(d: string): number {
    const hex = d.startsWith(DIGEST_PREFIX) ? d.slice(DIGEST_PREFIX.length) : '';
    const id = this.digestBytes.reserve(DIGEST_BYTES) / DIGEST_BYTES;
    if (hex.length !== DIGEST_BYTES * 2 || this.digestBytes.array.write(hex, id * DIGEST_BYTES, DIGEST_BYTES, 'hex') !== DIGEST_BYTES) this.badDigest = true;
    return id;
  }

  /** The type row `row` was last stated with. */
  typeOf(row: number): EntryType {
    return TYPES[this.words.array[row * ENTRY_WORDS + E_TYPE]! & 0xff]!;
  }

  digestOf(row: number): string | undefined {
    const id = this.words.array[row * ENTRY_WORDS + E_DIGEST]! - 1;
    if (id < 0) return undefined;
    return DIGEST_PREFIX + this.digestBytes.array.toString('hex', id * DIGEST_BYTES, (id + 1) * DIGEST_BYTES);
  }

  /**
   * The parsed form, for the descriptor `context` names, with the TOC's other fields; undefined
   * for a TOC the form does not hold (fields it does not know, a digest that is not sha256).
   */
  finish(toc: Omit<LayerToc, 'entries'>, context: string): Buffer | undefined {
    const tocFields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(toc)) {
      if (v === undefined) continue;
      if (TOC_FIELDS[k as keyof typeof TOC_FIELDS] !== true) return undefined;
      tocFields[k] = v;
    }
    if (this.badDigest) return undefined;
    this.inEntryOrder(E_CHUNK_COUNT, E_FIRST_CHUNK, [[this.chunkDoubles, CHUNK_DOUBLES], [this.chunkDigests, 1], [this.zeros, 1]]);
    this.inEntryOrder(E_XATTR_COUNT, E_FIRST_XATTR, [[this.xattrWords, XATTR_WORDS]]);
    const n = this.rows;
    const stringList = this.stringList;
    const text = stringList.join('');
    const latin1 = !/[^\u0000-\u00ff]/.test(text);
    const offsets = new Uint32Array(stringList.length + 1);
    let at = 0;
    for (let i = 0; i < stringList.length; i++) {
      offsets[i] = at;
      at += stringList[i]!.length;
    }
    offsets[stringList.length] = at;
    const chunkCount = this.chunkDigests.length;
    const counts: Counts = {
      entries: n,
      chunks: chunkCount,
      xattrs: this.xattrWords.length / XATTR_WORDS,
      strings: stringList.length,
      times: this.times.length,
      digests: this.digestBytes.length / DIGEST_BYTES,
      xattrBytes: this.xattrBytes,
      textUnits: text.length,
    };
    const timeSec = new Float64Array(this.times.map((t) => t.sec));
    const timeNsec = new Uint32Array(this.times.map((t) => t.nsec));
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
      bytesOf(this.sizes.view()),
      bytesOf(this.chunkDoubles.view()),
      bytesOf(timeSec),
      // u32 section: entries, chunk digests, time nanoseconds, xattrs, string offsets
      bytesOf(this.words.view()),
      bytesOf(this.chunkDigests.view()),
      bytesOf(timeNsec),
      bytesOf(this.xattrWords.view()),
      bytesOf(offsets),
      Buffer.alloc(align8(u32Count(counts) * 4) - u32Count(counts) * 4),
      // u8 section: digests, chunk zeros flags, xattr values
      bytesOf(this.digestBytes.view()),
      bytesOf(this.zeros.view()),
      ...this.xattrValues,
      Buffer.alloc(align8(u8Length) - u8Length),
      Buffer.from(text, latin1 ? 'latin1' : 'utf16le'),
    ];
    return Buffer.concat(parts);
  }

  /**
   * The form keeps each entry's chunks, and its xattrs, in entry order, each entry naming where
   * its own start (one without any: where they would). normaliseEntries gives a stargz file's
   * chunks only once it has read every entry, after files that state their end, and a
   * directory stated again states its xattrs anew after later entries': the tables are then
   * copied in entry order, without the rows no entry names any more.
   */
  private inEntryOrder(countAt: number, firstAt: number, tables: RowTable[]): void {
    const words = this.words.array;
    const end = this.rows * ENTRY_WORDS;
    let next = 0;
    let inOrder = true;
    for (let w = 0; w < end; w += ENTRY_WORDS) {
      const count = words[w + countAt]!;
      if (count === 0) words[w + firstAt] = next;
      else if (words[w + firstAt] !== next) inOrder = false;
      next += count;
    }
    if (inOrder && tables.every(([table, width]) => table.length === next * width)) return;
    const copies = tables.map(([table, width]) => table.blank(next * width));
    next = 0;
    for (let w = 0; w < end; w += ENTRY_WORDS) {
      const first = words[w + firstAt]!;
      const count = words[w + countAt]!;
      tables.forEach(([table, width], t) => copies[t]!.set(table.array.subarray(first * width, (first + count) * width), next * width));
      words[w + firstAt] = next;
      next += count;
    }
    tables.forEach(([table], t) => {
      table.array = copies[t]!;
      table.length = copies[t]!.length;
    });
  }
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
  const { entries, ...rest } = toc;
  const builder = new ParsedTocBuilder(entries.length);
  for (const e of entries) {
    if (!encodable(e)) return undefined;
    const row = builder.entry(e);
    for (const c of e.chunks) builder.chunk(row, c.offset, c.size, c.compressedOffset, c.compressedEnd, c.innerOffset, c.digest === e.digest ? null : c.digest, c.zeros);
  }
  return builder.finish(rest, context);
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
