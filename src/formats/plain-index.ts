/**
 * The index of a TOC-less layer (see plain.ts), kept in the TOC store under its blob digest
 * so that opening the layer again needs neither the whole blob nor a probe of it: only
 * the pieces the chunk cache lost, which are fetched by indexing again.
 *
 * Only an index built from a blob whose digest checked out is stored. Nothing vouches for
 * the stored bytes afterwards, so reading one checks its own sha256, that it names this
 * blob, and every field, as for any untrusted TOC; file contents stay verified by the
 * chunk cache against each piece's digest.
 */
import { isDigest, sha256 } from '../digest.js';
import { FormatError } from '../errors.js';
import type { Descriptor } from '../source/types.js';
import { BASE64, ENTRY_TYPES, MAX_ID } from './entries.js';
import { normaliseName } from './path.js';
import { WINDOW_SIZE, type GzipCheckpoint } from './gzip/checkpoints.js';
import { locateInGzip, PLAIN_CHUNK_SIZE, plainLayerToc, type StreamPiece } from './plain.js';
import { plainEntry, type Chunk, type EntryType, type ArrayToc, type LayerToc, type Timestamp, type TocEntry, type TocStore } from './toc.js';

// v2 added gzip checkpoints and the stream offsets of pieces; a v1 index is indexed again.
const MAGIC = 'tocfs-plain-index-v2\n';

/** The store key: not a digest, so the store hashes it into a name no TOC digest can take. */
export function plainIndexKey(layer: string): string {
  return `plain-index:${layer}`;
}

/**
 * A stored piece: [size, digest, all zeros, offset in the tar stream]; offsets in the file follow
 * from the sizes. The stream offset is there for pieces a gzip checkpoint can reach (not sparse).
 */
type StoredPiece = [number, string, 0 | 1] | [number, string, 0 | 1, number];
/** A gzip checkpoint: [blob offset, skip bits, stream offset, window (base64)]. */
type StoredCheckpoint = [number, number, number, string];
type StoredEntry = Omit<TocEntry, 'chunks' | 'xattrs'> & { xattrs?: Record<string, string>; pieces?: StoredPiece[] };

interface StoredBody {
  formatVersion: string;
  compression: LayerToc['compression'];
  uncompressedSize?: number;
  /** The layer's DiffID, as computed when it was indexed. */
  uncompressedDigest?: string;
  entries: StoredEntry[];
  checkpoints?: StoredCheckpoint[];
}

export function encodePlainIndex(desc: Descriptor, toc: LayerToc): Buffer {
  const cps = toc.checkpoints ?? [];
  const outAt = new Map(cps.map((cp) => [cp.window, cp.out]));
  const piece = (c: Chunk): StoredPiece => {
    const from = c.resume && outAt.get(c.resume.window);
    return from === undefined ? [c.size, c.digest, c.zeros ? 1 : 0] : [c.size, c.digest, c.zeros ? 1 : 0, from + c.innerOffset];
  };
  const entries = Array.from(toc.entries, (e): StoredEntry => {
    const { chunks, xattrs, ...rest } = plainEntry(e);
    const out: StoredEntry = { ...rest };
    if (xattrs) out.xattrs = Object.fromEntries(Object.entries(xattrs).map(([k, v]) => [k, v.toString('base64')]));
    if (chunks.length) out.pieces = chunks.map(piece);
    return out;
  });
  const body: StoredBody = {
    formatVersion: toc.formatVersion,
    compression: toc.compression,
    entries,
    ...(toc.uncompressedSize !== undefined ? { uncompressedSize: toc.uncompressedSize } : {}),
    ...(toc.uncompressedDigest !== undefined ? { uncompressedDigest: toc.uncompressedDigest } : {}),
    ...(cps.length ? { checkpoints: cps.map((cp): StoredCheckpoint => [cp.offset, cp.skipBits, cp.out, cp.window.toString('base64')]) } : {}),
  };
  const json = Buffer.from(JSON.stringify(body));
  const meta = JSON.stringify({ layer: desc.digest, size: desc.size, body: sha256(json) });
  return Buffer.concat([Buffer.from(MAGIC + meta + '\n'), json]);
}

/** The stored index of `desc`'s blob; throws FormatError for anything that does not check out. */
export function decodePlainIndex(desc: Descriptor, data: Buffer): ArrayToc {
  if (!data.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC))) throw new FormatError('not a stored plain-layer index');
  const nl = data.indexOf(0x0a, MAGIC.length);
  if (nl < 0) throw new FormatError('stored index has no header line');
  let meta: { layer?: unknown; size?: unknown; body?: unknown };
  let body: StoredBody;
  try {
    meta = JSON.parse(data.toString('utf8', MAGIC.length, nl));
  } catch {
    throw new FormatError('stored index header is not JSON');
  }
  if (meta.layer !== desc.digest || meta.size !== desc.size) throw new FormatError('stored index is for another blob');
  const json = data.subarray(nl + 1);
  if (sha256(json) !== meta.body) throw new FormatError('stored index is damaged (checksum mismatch)');
  try {
    body = JSON.parse(json.toString('utf8'));
  } catch {
    throw new FormatError('stored index is not JSON');
  }
  if (!body || typeof body !== 'object' || !Array.isArray(body.entries) || typeof body.formatVersion !== 'string' || (body.compression !== 'gzip' && body.compression !== 'zstd'))
    throw new FormatError('stored index has no entries list');
  const inStream: StreamPiece[] = [];
  const entries = body.entries.map((e, i) => entryFrom(e, i, inStream));
  const uncompressedSize = isCount(body.uncompressedSize) ? body.uncompressedSize : undefined;
  const toc = plainLayerToc(body.formatVersion, body.compression, entries, uncompressedSize);
  if (body.uncompressedDigest !== undefined) {
    if (!isDigest(body.uncompressedDigest)) throw new FormatError('stored index: bad uncompressed digest');
    toc.uncompressedDigest = body.uncompressedDigest;
  }
  if (body.checkpoints !== undefined) {
    const cps = checkpointsFrom(body.checkpoints, desc.size, uncompressedSize);
    for (let i = 1; i < inStream.length; i++) if (inStream[i]!.at < inStream[i - 1]!.at) throw new FormatError('stored index: piece stream offsets out of order');
    const last = inStream.at(-1);
    if (last && uncompressedSize !== undefined && last.at + last.chunk.size > uncompressedSize) throw new FormatError('stored index: a piece lies past the end of the stream');
    locateInGzip(inStream, cps, desc.size);
    toc.checkpoints = cps;
  }
  return toc;
}

function checkpointsFrom(raw: unknown, blobSize: number, uncompressedSize: number | undefined): GzipCheckpoint[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new FormatError('stored index: bad checkpoints');
  const cps: GzipCheckpoint[] = [];
  for (const [i, c] of raw.entries()) {
    const what = `stored index: checkpoint ${i}`;
    if (!Array.isArray(c) || !isCount(c[0], blobSize - 1) || !isCount(c[1], 7) || !isCount(c[2], uncompressedSize ?? Number.MAX_SAFE_INTEGER) || typeof c[3] !== 'string' || !BASE64.test(c[3])) throw new FormatError(`${what}: malformed`);
    const window = Buffer.from(c[3], 'base64');
    const prev = cps.at(-1);
    if (prev ? c[0] <= prev.offset || c[2] <= prev.out : c[2] !== 0) throw new FormatError(`${what}: out of order`);
    // A window is the output just before the checkpoint: all of it when there is that much.
    if (window.length !== Math.min(WINDOW_SIZE, c[2])) throw new FormatError(`${what}: window of ${window.length} bytes`);
    cps.push({ offset: c[0], skipBits: c[1], out: c[2], window });
  }
  return cps;
}

const zeroDigests = new Map<number, string>();
function zerosDigest(size: number): string {
  let d = zeroDigests.get(size);
  if (!d) zeroDigests.set(size, (d = sha256(Buffer.alloc(size))));
  return d;
}

function isCount(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
}

function timestamp(v: unknown, what: string): Timestamp {
  const t = v as Timestamp | null;
  if (!t || typeof t !== 'object' || !Number.isSafeInteger(t.sec) || !isCount(t.nsec, 999_999_999)) throw new FormatError(`${what}: bad timestamp`);
  return { sec: t.sec, nsec: t.nsec };
}

function entryFrom(raw: StoredEntry, i: number, inStream: StreamPiece[]): TocEntry {
  const what = `entry ${i}`;
  if (!raw || typeof raw !== 'object') throw new FormatError(`${what}: not an object`);
  const n = typeof raw.path === 'string' ? normaliseName(raw.path) : { error: 'no path' };
  if ('error' in n || n.path !== raw.path) throw new FormatError(`${what}: bad path`);
  if (!ENTRY_TYPES.has(raw.type)) throw new FormatError(`${what}: bad type`);
  if (!isCount(raw.mode, 0o7777) || !isCount(raw.uid, MAX_ID) || !isCount(raw.gid, MAX_ID)) throw new FormatError(`${what}: bad mode or owner`);
  const e: TocEntry = { path: raw.path, type: raw.type as EntryType, mode: raw.mode, uid: raw.uid, gid: raw.gid, size: 0, mtime: timestamp(raw.mtime, what), chunks: [] };
  for (const k of ['userName', 'groupName', 'linkName'] as const) {
    if (raw[k] === undefined) continue;
    if (typeof raw[k] !== 'string') throw new FormatError(`${what}: bad ${k}`);
    e[k] = raw[k];
  }
  if ((e.type === 'symlink' || e.type === 'hardlink') && !e.linkName) throw new FormatError(`${what}: link without a target`);
  if (e.type === 'hardlink') {
    const t = normaliseName(e.linkName!);
    if ('error' in t || t.path !== e.linkName) throw new FormatError(`${what}: bad hard link target`);
  }
  if (raw.atime !== undefined) e.atime = timestamp(raw.atime, what);
  if (raw.ctime !== undefined) e.ctime = timestamp(raw.ctime, what);
  for (const k of ['devMajor', 'devMinor'] as const) {
    if (raw[k] === undefined) continue;
    if (!isCount(raw[k], MAX_ID)) throw new FormatError(`${what}: bad ${k}`);
    e[k] = raw[k];
  }
  if (raw.xattrs !== undefined) {
    if (!raw.xattrs || typeof raw.xattrs !== 'object') throw new FormatError(`${what}: bad xattrs`);
    e.xattrs = {};
    for (const [k, v] of Object.entries(raw.xattrs)) {
      if (typeof v !== 'string' || !BASE64.test(v)) throw new FormatError(`${what}: bad xattr value`);
      e.xattrs[k] = Buffer.from(v, 'base64');
    }
  }
  if (e.type === 'reg') {
    if (!isDigest(raw.digest)) throw new FormatError(`${what}: bad content digest`);
    e.digest = raw.digest;
    const pieces = raw.pieces ?? [];
    if (!Array.isArray(pieces)) throw new FormatError(`${what}: bad pieces`);
    let offset = 0;
    for (const p of pieces) {
      if (!Array.isArray(p) || !isCount(p[0], PLAIN_CHUNK_SIZE) || p[0] === 0 || !isDigest(p[1]) || (p[2] !== 0 && p[2] !== 1) || (p.length > 3 && !isCount(p[3])) || p.length > 4) throw new FormatError(`${what}: bad piece`);
      // A zeros piece is served without reading the cache: its digest must say zeros.
      if (p[2] === 1 && p[1] !== zerosDigest(p[0])) throw new FormatError(`${what}: a piece marked zeros is not`);
      const chunk: Chunk = { offset, size: p[0], compressedOffset: -1, compressedEnd: -1, innerOffset: 0, digest: p[1], zeros: p[2] === 1 };
      e.chunks.push(chunk);
      if (p.length > 3) inStream.push({ chunk, at: p[3]! });
      offset += p[0];
    }
    e.size = offset;
  } else if (raw.pieces !== undefined || raw.digest !== undefined) throw new FormatError(`${what}: content on a ${e.type}`);
  return e;
}

/** The stored index of `desc`'s blob, if there is one that checks out (else undefined, with the reason). */
export async function loadPlainIndex(store: TocStore, desc: Descriptor): Promise<{ toc?: LayerToc; rejected?: string }> {
  const data = await store.get(plainIndexKey(desc.digest));
  if (!data) return {};
  try {
    return { toc: decodePlainIndex(desc, data) };
  } catch (e) {
    return { rejected: (e as Error).message };
  }
}

export function savePlainIndex(store: TocStore, desc: Descriptor, toc: LayerToc): Promise<void> {
  return store.put(plainIndexKey(desc.digest), encodePlainIndex(desc, toc));
}
