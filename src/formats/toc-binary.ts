/**
 * The parsed form of a verified TOC (docs/formats.md §6.4): a LayerToc laid out as typed-array
 * columns and one string table, so that a later open of the same layer rebuilds it without
 * decompressing, JSON.parse and normaliseEntries. It is derived data that no registry digest
 * covers: the cache authenticates it before decodeParsedToc sees it (cache/toc-store.ts,
 * docs/security.md), and `context` ties it to the descriptor it was made for.
 */
import type { Chunk, EntryType, LayerToc, Timestamp, TocEntry } from './toc.js';

const MAGIC = Buffer.from('tocfsPTC');
/** Bumped whenever the layout or what a reader derives from a TOC changes. */
export const PARSED_TOC_VERSION = 1;

const TYPES: readonly EntryType[] = ['reg', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'];
const TYPE_CODES = new Map<string, number>(TYPES.map((t, i) => [t, i]));
/** Words per entry in the u32 section (see ENTRY_* below). */
const ENTRY_WORDS = 15;
const [E_PATH, E_TYPE, E_MODE, E_UID, E_GID, E_MTIME, E_ATIME, E_CTIME, E_USER, E_GROUP, E_LINK, E_DEV_MINOR, E_DIGEST, E_CHUNKS, E_XATTRS] = Array.from({ length: ENTRY_WORDS }, (_, i) => i) as number[] as [number, number, number, number, number, number, number, number, number, number, number, number, number, number, number];
const HAS_XATTRS = 0x100;
/** Doubles per chunk in the f64 section: offset, size, compressedOffset, compressedEnd, innerOffset. */
const CHUNK_DOUBLES = 5;
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
  return c.entries * ENTRY_WORDS + c.chunks + c.times + c.xattrs * 2 + c.strings + 1;
}

/** Whether the entry is as normaliseEntries makes them (which the decoder rebuilds). */
function encodable(e: TocEntry): boolean {
  const link = e.type === 'symlink' || e.type === 'hardlink';
  const dev = e.type === 'char' || e.type === 'block';
  if (link !== (e.linkName !== undefined) || dev !== (e.devMajor !== undefined) || dev !== (e.devMinor !== undefined)) return false;
  if (e.type !== 'reg' && (e.digest !== undefined || e.chunks.length > 0)) return false;
  for (const c of e.chunks) if (c.resume !== undefined) return false;
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
  const timeIds = new Map<Timestamp, number>();
  const timeValues = new Map<string, number>();
  const times: Timestamp[] = [];
  const time = (t: Timestamp): number => {
    let id = timeIds.get(t);
    if (id === undefined) {
      const key = `${t.sec}.${t.nsec}`;
      id = timeValues.get(key);
      if (id === undefined) {
        id = times.length;
        times.push(t);
        timeValues.set(key, id);
      }
      timeIds.set(t, id);
    }
    return id;
  };
  let chunkCount = 0;
  let xattrCount = 0;
  let xattrBytes = 0;
  for (const e of toc.entries) {
    if (!encodable(e)) return undefined;
    chunkCount += e.chunks.length;
    if (e.xattrs) for (const v of Object.values(e.xattrs)) {
      xattrCount++;
      xattrBytes += v.length;
    }
  }
  const n = toc.entries.length;
  const words = new Uint32Array(n * ENTRY_WORDS);
  const f64 = new Float64Array(n + chunkCount * CHUNK_DOUBLES);
  const chunkDigests = new Uint32Array(chunkCount);
  const zeros = new Uint8Array(chunkCount);
  const xattrWords = new Uint32Array(xattrCount * 2);
  const xattrValues: Buffer[] = [];
  let ci = 0;
  let xi = 0;
  for (let i = 0; i < n; i++) {
    const e = toc.entries[i]!;
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
    const digest = e.digest !== undefined ? str(e.digest) : -1;
    words[w + E_DIGEST] = digest + 1;
    words[w + E_CHUNKS] = e.chunks.length;
    f64[i] = e.size;
    for (const c of e.chunks) {
      const d = n + ci * CHUNK_DOUBLES;
      f64[d] = c.offset;
      f64[d + 1] = c.size;
      f64[d + 2] = c.compressedOffset;
      f64[d + 3] = c.compressedEnd;
      f64[d + 4] = c.innerOffset;
      chunkDigests[ci] = c.digest === e.digest ? digest : str(c.digest);
      zeros[ci] = c.zeros ? 1 : 0;
      ci++;
    }
    if (e.xattrs) {
      const x = Object.entries(e.xattrs);
      words[w + E_XATTRS] = x.length;
      for (const [name, value] of x) {
        xattrWords[xi * 2] = str(name);
        xattrWords[xi * 2 + 1] = value.length;
        xattrValues.push(value);
        xi++;
      }
    }
  }
  const text = stringList.join('');
  const latin1 = !/[^\u0000-\u00ff]/.test(text);
  const offsets = new Uint32Array(stringList.length + 1);
  let at = 0;
  stringList.forEach((s, i) => {
    offsets[i] = at;
    at += s.length;
  });
  offsets[stringList.length] = at;
  const counts: Counts = { entries: n, chunks: chunkCount, xattrs: xattrCount, strings: stringList.length, times: times.length, xattrBytes, textUnits: text.length };
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
  const u8Length = chunkCount + xattrBytes;
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
    // u8 section: chunk zeros flags, xattr values
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

/** The context an encoded parsed TOC was made for, or undefined when `buf` is not one of this version. */
function metaOf(buf: Buffer): { meta: Meta; start: number } | undefined {
  if (buf.length < 16 || !buf.subarray(0, 8).equals(MAGIC) || buf.readUInt32LE(8) !== PARSED_TOC_VERSION) return undefined;
  const len = buf.readUInt32LE(12);
  if (16 + len > buf.length) return undefined;
  const meta = JSON.parse(buf.toString('utf8', 16, 16 + len)) as Meta;
  return { meta, start: align8(16 + len) };
}

/**
 * The LayerToc an encoded parsed TOC holds, or undefined when it is of another version or was
 * made for another context. Throws on a malformed one (which authenticated bytes never are).
 */
export function decodeParsedToc(buf: Buffer, context: string): LayerToc | undefined {
  const head = metaOf(buf);
  if (!head || head.meta.context !== context) return undefined;
  const { meta } = head;
  const c = meta.counts;
  const n = c.entries;
  let at = head.start;
  const f64 = view(Float64Array, buf, at, f64Count(c));
  at += f64.length * 8;
  const u32 = view(Uint32Array, buf, at, u32Count(c));
  at += align8(u32.length * 4);
  const u8 = buf.subarray(at, at + c.chunks + c.xattrBytes);
  at += align8(c.chunks + c.xattrBytes);
  const textBytes = c.textUnits * (meta.text === 'latin1' ? 1 : 2);
  if (u8.length !== c.chunks + c.xattrBytes || at + textBytes !== buf.length) throw new RangeError('parsed TOC has the wrong length');
  const text = buf.toString(meta.text, at, at + textBytes);

  const chunkDigestAt = n * ENTRY_WORDS;
  const nsecAt = chunkDigestAt + c.chunks;
  const xattrAt = nsecAt + c.times;
  const offsetsAt = xattrAt + c.xattrs * 2;
  const strings: string[] = new Array(c.strings);
  for (let i = 0; i < c.strings; i++) strings[i] = text.slice(u32[offsetsAt + i], u32[offsetsAt + i + 1]);
  const timeSecAt = n + c.chunks * CHUNK_DOUBLES;
  const times: Timestamp[] = new Array(c.times);
  for (let i = 0; i < c.times; i++) times[i] = Object.freeze({ sec: f64[timeSecAt + i]!, nsec: u32[nsecAt + i]! });

  const entries: TocEntry[] = new Array(n);
  let ci = 0;
  let xi = 0;
  let valueAt = c.chunks;
  for (let i = 0; i < n; i++) {
    const w = i * ENTRY_WORDS;
    const typeWord = u32[w + E_TYPE]!;
    const type = TYPES[typeWord & 0xff];
    if (type === undefined) throw new RangeError('parsed TOC has an unknown entry type');
    const path = strings[u32[w + E_PATH]!]!;
    const mode = u32[w + E_MODE]!;
    const uid = u32[w + E_UID]!;
    const gid = u32[w + E_GID]!;
    const mtime = times[u32[w + E_MTIME]!]!;
    // One object literal per kind of entry, holding its fields in normaliseEntries' order: the
    // same object shapes as a TOC read afresh, and every field inside the object.
    let entry: TocEntry;
    switch (type) {
      case 'reg': {
        const digest = u32[w + E_DIGEST]!;
        const count = u32[w + E_CHUNKS]!;
        let chunks = NO_CHUNKS;
        if (count > 0) {
          chunks = new Array(count);
          for (let k = 0; k < count; k++, ci++) {
            const d = n + ci * CHUNK_DOUBLES;
            chunks[k] = { offset: f64[d]!, size: f64[d + 1]!, compressedOffset: f64[d + 2]!, compressedEnd: f64[d + 3]!, innerOffset: f64[d + 4]!, digest: strings[u32[chunkDigestAt + ci]!]!, zeros: u8[ci] === 1 };
          }
        }
        entry = digest !== 0 ? { path, type, mode, uid, gid, size: f64[i]!, mtime, digest: strings[digest - 1]!, chunks } : { path, type, mode, uid, gid, size: f64[i]!, mtime, chunks };
        break;
      }
      case 'symlink':
      case 'hardlink':
        entry = { path, type, mode, uid, gid, size: 0, mtime, linkName: strings[u32[w + E_LINK]!]!, chunks: NO_CHUNKS };
        break;
      case 'char':
      case 'block':
        entry = { path, type, mode, uid, gid, size: 0, mtime, devMajor: u32[w + E_LINK]!, devMinor: u32[w + E_DEV_MINOR]!, chunks: NO_CHUNKS };
        break;
      default:
        entry = { path, type, mode, uid, gid, size: 0, mtime, chunks: NO_CHUNKS };
    }
    const user = u32[w + E_USER]!;
    if (user !== 0) entry.userName = strings[user - 1]!;
    const group = u32[w + E_GROUP]!;
    if (group !== 0) entry.groupName = strings[group - 1]!;
    const atime = u32[w + E_ATIME]!;
    if (atime !== 0) entry.atime = times[atime - 1]!;
    const ctime = u32[w + E_CTIME]!;
    if (ctime !== 0) entry.ctime = times[ctime - 1]!;
    if (typeWord & HAS_XATTRS) {
      const xattrs: Record<string, Buffer> = Object.create(null);
      for (let k = u32[w + E_XATTRS]!; k > 0; k--, xi++) {
        const len = u32[xattrAt + xi * 2 + 1]!;
        xattrs[strings[u32[xattrAt + xi * 2]!]!] = Buffer.from(u8.subarray(valueAt, valueAt + len));
        valueAt += len;
      }
      entry.xattrs = xattrs;
    }
    entries[i] = entry;
  }
  if (ci !== c.chunks || xi !== c.xattrs) throw new RangeError('parsed TOC chunk or xattr counts disagree');
  return { ...(meta.toc as unknown as Omit<LayerToc, 'entries'>), entries };
}
