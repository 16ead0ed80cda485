/**
 * Turns TOC JSON entries (c/storage and stargz schemas, which overlap: docs/formats.md §2.7, §3.3)
 * into checked TocEntry records with their chunk lists. Everything here treats the JSON as
 * hostile: every number, name, link and range is checked, and each error names the layer
 * and the entry.
 */
import { EMPTY_SHA256, isDigest } from '../digest.js';
import { FormatError, preview } from '../errors.js';
import { normaliseName } from './path.js';
import { parseRfc3339 } from './time.js';
import type { Chunk, EntryFields, EntrySink, EntryType, Timestamp, TocEntry, TocLimits } from './toc.js';
import type { RawEntries } from './toc-json.js';

export interface EntryContext {
  /** Layer digest, for errors. */
  layer: string;
  /** Where the TOC region starts: every chunk's compressed range must end at or before it. */
  dataEnd: number;
  /** Whether landmark files are tool metadata (stargz-snapshotter writers) to hide. */
  hideLandmarks: boolean;
  limits: TocLimits;
}

export interface NormalisedEntries {
  entries: TocEntry[];
  prefetchEnd?: number;
  noPrefetch?: boolean;
}

const PREFETCH_LANDMARK = '.prefetch.landmark';
const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
export const ENTRY_TYPES = new Set<string>(['reg', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo']);
/** Largest uid, gid or device number. */
export const MAX_ID = 0xffffffff;
export const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const EPOCH: Timestamp = Object.freeze({ sec: 0, nsec: 0 });
/**
 * A TOC may hold millions of entries: they share their type string, their times (one
 * frozen object per distinct time), their user and group names, and one frozen empty chunk
 * list (non-files and empty files), instead of a copy each.
 */
const NO_CHUNKS: Chunk[] = Object.freeze([]) as unknown as Chunk[];
const TYPE_NAMES = new Map<string, EntryType>((['reg', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'] as const).map((t) => [t, t]));

/** One piece of a regular file as the TOC states it, before its compressed range is known. */
interface Piece {
  offset: number;
  chunkOffset: number;
  chunkSize: number;
  innerOffset: number;
  digest: string | undefined;
  zeros: boolean;
  /** Index of the TOC entry that stated it (for errors). */
  at: number;
}

interface PendingFile {
  /** Its index in the sink. */
  index: number;
  path: string;
  size: number;
  digest: string | undefined;
  rawName: string;
  at: number;
  endOffset: number | undefined;
  pieces: Piece[];
}

type Raw = Record<string, unknown>;

class EntryErrors {
  constructor(private readonly layer: string) {}
  fail(at: number, name: unknown, msg: string): never {
    const n = typeof name === 'string' ? JSON.stringify(name.length > 200 ? name.slice(0, 200) + '…' : name) : `#${at}`;
    throw new FormatError(`layer ${this.layer}: TOC entry ${n}: ${msg}`);
  }
}

/** What normaliseEntriesInto finds besides the entries. */
export interface EntryMarks {
  prefetchEnd?: number;
  noPrefetch?: boolean;
}

/** The entries as objects in an array (what readLayerToc returns). */
export function normaliseEntries(rawEntries: RawEntries, ctx: EntryContext): NormalisedEntries {
  const sink = new EntryArray();
  const marks = normaliseEntriesInto(rawEntries, ctx, sink);
  return { entries: sink.result(), ...marks };
}

/**
 * Checks the raw entries and puts each into `sink` (objects, or straight into the parsed
 * form's columns: formats/toc-binary.ts), its chunks after it; what the sink holds is only
 * complete when this returns.
 */
export function normaliseEntriesInto(rawEntries: RawEntries, ctx: EntryContext, sink: EntrySink): EntryMarks {
  const err: EntryErrors = new EntryErrors(ctx.layer);
  if (rawEntries.length > ctx.limits.maxEntries)
    throw new FormatError(`layer ${ctx.layer}: TOC has ${rawEntries.length} entries, more than the limit of ${ctx.limits.maxEntries}`);

  const index = new Map<string, number>();
  const files: PendingFile[] = [];
  const hardLinks: HardLink[] = [];
  /** The fields of the entry being read, handed to the sink (which copies what it keeps). */
  const f: EntryFields = { path: '', type: 'reg', mode: 0, uid: 0, gid: 0, size: 0, mtime: EPOCH };
  const userNames = new Map<number, string>();
  const groupNames = new Map<number, string>();
  /** Every compressed start that ends the previous payload's range (stargz rule). */
  const starts: number[] = [];
  let current: PendingFile | undefined;
  let prefetchEnd: number | undefined;
  let noPrefetch = false;

  // The helpers take the field's value (named property loads at the call sites are much
  // cheaper than keyed loads here) and the field name only for the error.
  const uint = (v: unknown, field: string, r: Raw, at: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (v === undefined || v === null) return 0;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max)
      err.fail(at, r.name, `${field} is not an integer in [0, ${max}]: ${preview(v, 40)}`);
    return v;
  };
  const str = (v: unknown, field: string, r: Raw, at: number): string | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') err.fail(at, r.name, `${field} is not a string`);
    return v;
  };
  const digestField = (v: unknown, field: string, r: Raw, at: number): string | undefined => {
    const d = str(v, field, r, at);
    if (d === undefined || d === '') return undefined;
    if (!isDigest(d)) err.fail(at, r.name, `${field} is not a sha256 digest: ${JSON.stringify(String(d).slice(0, 80))}`);
    return d;
  };
  let lastTimeText = '';
  let lastTime: Timestamp | undefined;
  const times = new Map<string, Timestamp | undefined>();
  const time = (v: unknown, field: string, r: Raw, at: number): Timestamp | undefined => {
    const text = str(v, field, r, at);
    if (text === undefined || text === '') return undefined;
    // Most entries of a layer share a few times: parse each distinct string once, and keep
    // one object per time (modtime and accesstime alternate, so the last one is not enough).
    if (text !== lastTimeText) {
      let t = times.get(text);
      if (t === undefined && !times.has(text)) {
        const parsed = parseRfc3339(text);
        if (parsed === null) err.fail(at, r.name, `${field} is not an RFC 3339 time: ${JSON.stringify(text.slice(0, 60))}`);
        t = parsed && Object.freeze(parsed);
        times.set(text, t);
      }
      lastTimeText = text;
      lastTime = t;
    }
    return lastTime;
  };
  /** `fileDigest`: the entry's digest, already checked; a chunk digest equal to it needs no second check. */
  const piece = (r: Raw, at: number, fileDigest?: string): Piece => {
    const chunkType = str(r.chunkType, 'chunkType', r, at);
    if (chunkType !== undefined && chunkType !== '' && chunkType !== 'zeros') err.fail(at, r.name, `unknown chunkType ${JSON.stringify(chunkType.slice(0, 40))}`);
    const p: Piece = {
      offset: uint(r.offset, 'offset', r, at),
      chunkOffset: uint(r.chunkOffset, 'chunkOffset', r, at),
      chunkSize: uint(r.chunkSize, 'chunkSize', r, at),
      innerOffset: uint(r.innerOffset, 'innerOffset', r, at),
      digest: fileDigest !== undefined && r.chunkDigest === fileDigest ? fileDigest : digestField(r.chunkDigest, 'chunkDigest', r, at),
      zeros: chunkType === 'zeros',
      at,
    };
    if (p.innerOffset === 0) starts.push(p.offset);
    return p;
  };

  /**
   * A file whose last piece has been read: one that states where its data ends (c/storage)
   * gets its chunks now, so that its pieces die young; a stargz file waits for every start in
   * the blob.
   */
  const settle = (file: PendingFile): void => {
    if (file.endOffset !== undefined) chunksOf(file, starts, ctx, err, sink);
    else files.push(file);
  };

  let at = -1;
  for (const raw of rawEntries) {
    at++;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) err.fail(at, undefined, 'not a JSON object');
    const r = raw as Raw;
    const type = r.type;
    const name = r.name;
    if (typeof name !== 'string') err.fail(at, undefined, 'has no name');
    if (typeof type !== 'string') err.fail(at, name, 'has no type');

    if (type === 'chunk') {
      if (!current || (name !== current.rawName && pathOf(name) !== current.path))
        err.fail(at, name, 'chunk entry does not follow the regular file it belongs to');
      current.pieces.push(piece(r, at));
      continue;
    }
    if (current) settle(current);
    current = undefined;
    if (!ENTRY_TYPES.has(type)) err.fail(at, name, `unknown entry type ${JSON.stringify(type.slice(0, 40))}`);

    const norm = normaliseName(name);
    if ('error' in norm) err.fail(at, name, norm.error);
    const path = norm.path;

    if (ctx.hideLandmarks && type === 'reg' && (path === PREFETCH_LANDMARK || path === NO_PREFETCH_LANDMARK)) {
      const p = piece(r, at);
      if (path === PREFETCH_LANDMARK) prefetchEnd = p.offset;
      else noPrefetch = true;
      continue;
    }

    const uid = uint(r.uid, 'uid', r, at, MAX_ID);
    const gid = uint(r.gid, 'gid', r, at, MAX_ID);
    const mode = uint(r.mode, 'mode', r, at) & 0o7777;
    const mtime = time(r.modtime, 'modtime', r, at) ?? EPOCH;
    let userName = str(r.userName, 'userName', r, at);
    if (userName) {
      if (userNames.get(uid) === userName) userName = userNames.get(uid)!;
      else userNames.set(uid, userName);
    }
    let groupName = str(r.groupName, 'groupName', r, at);
    if (groupName) {
      if (groupNames.get(gid) === groupName) groupName = groupNames.get(gid)!;
      else groupNames.set(gid, groupName);
    }
    const un = userName || userNames.get(uid);
    const gn = groupName || groupNames.get(gid);
    const atime = time(r.accesstime, 'accesstime', r, at);
    const ctime = time(r.changetime, 'changetime', r, at);
    const xattrs = r.xattrs !== undefined && r.xattrs !== null ? xattrsOf(r, at, err) : undefined;

    f.path = path;
    f.type = TYPE_NAMES.get(type)!;
    f.mode = mode;
    f.uid = uid;
    f.gid = gid;
    f.size = 0;
    f.mtime = mtime;
    f.userName = un || undefined;
    f.groupName = gn || undefined;
    f.atime = atime;
    f.ctime = ctime;
    f.xattrs = xattrs;
    f.linkName = undefined;
    f.devMajor = undefined;
    f.devMinor = undefined;
    f.digest = undefined;
    let file: PendingFile | undefined;
    switch (type) {
      case 'reg': {
        const size = uint(r.size, 'size', r, at);
        const digest = digestField(r.digest, 'digest', r, at);
        f.size = size;
        if (size === 0) {
          if (digest !== undefined && digest !== EMPTY_SHA256) err.fail(at, name, `empty file with digest ${digest}`);
          f.digest = EMPTY_SHA256;
        } else {
          f.digest = digest;
          if (r.offset === undefined) err.fail(at, name, 'regular file with data has no offset');
          file = {
            index: -1,
            path,
            size,
            digest,
            rawName: name,
            at,
            endOffset: r.endOffset === undefined || r.endOffset === null ? undefined : uint(r.endOffset, 'endOffset', r, at),
            pieces: [piece(r, at, digest)],
          };
        }
        break;
      }
      case 'symlink':
      case 'hardlink': {
        const link = str(r.linkName, 'linkName', r, at);
        if (!link) err.fail(at, name, `${type} without linkName`);
        if (link.indexOf('\0') >= 0) err.fail(at, name, 'linkName contains a NUL byte');
        let linkName = link;
        if (type === 'hardlink') {
          const target = normaliseName(link);
          if ('error' in target) err.fail(at, name, `hard link target ${JSON.stringify(link.slice(0, 200))}: ${target.error}`);
          linkName = flat(target.path);
        }
        f.linkName = linkName;
        break;
      }
      case 'char':
      case 'block':
        f.devMajor = uint(r.devMajor, 'devMajor', r, at, MAX_ID);
        f.devMinor = uint(r.devMinor, 'devMinor', r, at, MAX_ID);
        break;
    }
    if (path === '' && type !== 'dir') err.fail(at, name, `the root is a ${type}, not a directory`);

    const prev = index.get(path);
    if (prev !== undefined) {
      const oldType = sink.typeOf(prev);
      // A directory stated twice is merged the tar way (the later metadata wins). Anything
      // else is rejected like containers/storage ≥ 1.55 does: two different files under one
      // name is what an attack that shows different content to different readers looks like.
      if (oldType === 'dir' && type === 'dir') {
        sink.restate(prev, f);
        continue;
      }
      const what = oldType === 'reg' && type === 'reg' && sink.digestOf(prev) !== f.digest ? 'duplicate regular file with different content' : 'duplicate path';
      err.fail(at, name, `${what} (first stated as a ${oldType})`);
    }
    const pos = sink.entry(f);
    index.set(path, pos);
    if (type === 'hardlink') hardLinks.push({ pos, at, path, linkName: f.linkName! });
    if (file) {
      file.index = pos;
      current = file;
    }
  }

  if (current) settle(current);
  if (files.length > 0) starts.sort((a, b) => a - b);
  for (const file of files) chunksOf(file, starts, ctx, err, sink);
  checkHardLinks(sink, index, hardLinks, err);

  const out: EntryMarks = {};
  if (prefetchEnd !== undefined) out.prefetchEnd = prefetchEnd;
  if (noPrefetch) out.noPrefetch = true;
  return out;
}

/**
 * A copy of `s` that holds its own characters. A path cut out of a longer TOC name (`./` or a
 * trailing `/` dropped) is otherwise a slice that keeps the whole name alive as well. Only
 * ASCII is copied through latin1 (exact for it); other names stay as they are.
 */
function flat(s: string): string {
  if (s.length < 13 || Buffer.byteLength(s, 'utf8') !== s.length) return s; // V8 copies shorter slices anyway
  return Buffer.from(s, 'latin1').toString('latin1');
}

function pathOf(name: string): string | undefined {
  const n = normaliseName(name);
  return 'path' in n ? n.path : undefined;
}

function xattrsOf(r: Raw, at: number, err: EntryErrors): Record<string, Buffer> {
  const x = r.xattrs;
  if (typeof x !== 'object' || x === null || Array.isArray(x)) err.fail(at, r.name, 'xattrs is not an object');
  const out: Record<string, Buffer> = Object.create(null);
  for (const [k, v] of Object.entries(x as Raw)) {
    if (k === '' || k.indexOf('\0') >= 0) err.fail(at, r.name, `bad xattr name ${JSON.stringify(k.slice(0, 80))}`);
    if (typeof v !== 'string' || !BASE64.test(v)) err.fail(at, r.name, `xattr ${JSON.stringify(k.slice(0, 80))} is not base64`);
    out[k] = Buffer.from(v, 'base64');
  }
  return out;
}

/** The smallest start greater than `offset`, or `end` (binary search over sorted `starts`). */
function nextStart(starts: number[], offset: number, end: number): number {
  let lo = 0;
  let hi = starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (starts[mid]! <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo < starts.length ? starts[lo]! : end;
}

/**
 * docs/formats.md §2.8 (c/storage: a piece ends where the next piece of the file starts, the last
 * at `endOffset`) and §3.3/§4 (stargz: a payload ends at the next payload start anywhere in
 * the blob, the last at the TOC).
 */
function chunksOf(f: PendingFile, starts: number[], ctx: EntryContext, err: EntryErrors, sink: EntrySink): void {
  const { pieces, size } = f;
  let covered = 0;
  let p: Piece = pieces[0]!;
  const fail: (msg: string) => never = (msg) => err.fail(p.at, f.rawName, msg);
  for (let i = 0; i < pieces.length; i++) {
    p = pieces[i]!;
    if (p.chunkOffset !== covered) fail(`chunks do not cover the file contiguously: chunk ${i} starts at ${p.chunkOffset}, expected ${covered}`);
    if (covered >= size) fail(`chunk ${i} starts at ${p.chunkOffset}, at or past the end of the ${size}-byte file`);
    const rest = size - covered;
    const chunkSize = p.chunkSize > 0 && p.chunkSize < rest ? p.chunkSize : rest;
    let end: number;
    if (f.endOffset !== undefined) {
      end = i + 1 < pieces.length ? pieces[i + 1]!.offset : f.endOffset;
    } else end = nextStart(starts, p.offset, ctx.dataEnd);
    if (!(p.offset < end)) fail(`chunk ${i} has an empty or reversed compressed range [${p.offset}, ${end})`);
    if (end > ctx.dataEnd) fail(`chunk ${i} compressed range [${p.offset}, ${end}) reaches into the TOC region at ${ctx.dataEnd}`);
    let digest = p.digest;
    if (pieces.length === 1) {
      if (digest === undefined || digest === f.digest) digest = f.digest;
      else if (f.digest !== undefined) fail(`single chunk digest ${digest} differs from file digest ${f.digest}`);
    }
    if (digest === undefined) fail(`chunk ${i} (file offset ${covered}) has no digest`);
    // The file's own digest is passed as such: one string, not two equal ones.
    sink.chunk(f.index, covered, chunkSize, p.offset, end, p.innerOffset, digest === f.digest ? null : digest, p.zeros);
    covered += chunkSize;
  }
  if (covered !== size) err.fail(f.at, f.rawName, `chunks cover ${covered} of ${size} bytes`);
}

interface HardLink {
  /** Its index in the sink. */
  pos: number;
  /** The TOC entry that stated it (for errors). */
  at: number;
  path: string;
  linkName: string;
}

function checkHardLinks(sink: EntrySink, index: Map<string, number>, links: HardLink[], err: EntryErrors): void {
  let linkAt: Map<number, string> | undefined;
  for (const { pos, at, path, linkName } of links) {
    const target = index.get(linkName);
    const fail: (msg: string) => never = (msg) => err.fail(at, path, `hard link to ${preview(linkName, 200)}: ${msg}`);
    if (target === undefined) fail('target does not exist in the layer');
    if (target === pos) fail('links to itself');
    if (target > pos) {
      // Follow the chain from the later target: coming back here is a cycle.
      linkAt ??= new Map(links.map((l) => [l.pos, l.linkName]));
      let t: number | undefined = target;
      for (let hops = 0; t !== undefined && sink.typeOf(t) === 'hardlink' && hops < links.length; hops++) {
        t = index.get(linkAt.get(t)!);
        if (t === pos) fail('hard link cycle');
      }
      fail('target comes later in the archive');
    }
    if (sink.typeOf(target) === 'dir') fail('target is a directory');
  }
}

/**
 * The entries as objects. Each kind of entry is made by one object literal holding every field
 * it has, so that V8 keeps them all inside the object (a field added later costs an extra array).
 */
class EntryArray implements EntrySink {
  private readonly entries: TocEntry[] = [];
  /** Entries given more than one chunk, whose lists are trimmed at the end. */
  private readonly longChunkLists: TocEntry[] = [];

  entry(f: EntryFields): number {
    this.entries.push(entryObject(f));
    return this.entries.length - 1;
  }

  restate(index: number, f: EntryFields): void {
    this.entries[index] = entryObject(f);
  }

  typeOf(index: number): EntryType {
    return this.entries[index]!.type;
  }

  digestOf(index: number): string | undefined {
    return this.entries[index]!.digest;
  }

  chunk(index: number, offset: number, size: number, compressedOffset: number, compressedEnd: number, innerOffset: number, digest: string | null, zeros: boolean): void {
    const e = this.entries[index]!;
    const c: Chunk = { offset, size, compressedOffset, compressedEnd, innerOffset, digest: digest ?? e.digest!, zeros };
    if (e.chunks === NO_CHUNKS) e.chunks = [c];
    else {
      if (e.chunks.length === 1) this.longChunkLists.push(e);
      e.chunks.push(c);
    }
  }

  result(): TocEntry[] {
    // push() leaves room for 16 more; a copy is exactly as long (most files have one chunk).
    for (const e of this.longChunkLists) e.chunks = e.chunks.slice();
    return this.entries;
  }
}

function entryObject(f: EntryFields): TocEntry {
  const { type, mode, uid, gid, size, mtime } = f;
  const path = flat(f.path);
  let entry: TocEntry;
  switch (type) {
    case 'reg':
      entry = f.digest !== undefined ? { path, type, mode, uid, gid, size, mtime, digest: f.digest, chunks: NO_CHUNKS } : { path, type, mode, uid, gid, size, mtime, chunks: NO_CHUNKS };
      break;
    case 'symlink':
    case 'hardlink':
      entry = { path, type, mode, uid, gid, size: 0, mtime, linkName: f.linkName!, chunks: NO_CHUNKS };
      break;
    case 'char':
    case 'block':
      entry = { path, type, mode, uid, gid, size: 0, mtime, devMajor: f.devMajor!, devMinor: f.devMinor!, chunks: NO_CHUNKS };
      break;
    default:
      entry = { path, type, mode, uid, gid, size: 0, mtime, chunks: NO_CHUNKS };
  }
  if (f.userName) entry.userName = f.userName;
  if (f.groupName) entry.groupName = f.groupName;
  if (f.atime) entry.atime = f.atime;
  if (f.ctime) entry.ctime = f.ctime;
  if (f.xattrs) entry.xattrs = f.xattrs;
  return entry;
}
