/**
 * The one table-of-contents model every layer format is read into.
 *
 * Readers (zstd:chunked, eStargz, stargz-zstd) turn their own JSON into this shape,
 * checked and normalised; everything above formats/ (trees, fetch, FUSE, the store)
 * works only with it.
 */
import type { GzipCheckpoint } from './gzip/checkpoints.js';

export type EntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** How the frames of a layer are compressed (sniffed from the bytes, not the media type). */
export type Compression = 'zstd' | 'gzip';

/**
 * - `zstd:chunked`: containers/storage (Podman, Buildah, Skopeo, CRI-O)
 * - `estargz`: stargz-snapshotter eStargz (gzip), incl. legacy CRFS stargz
 * - `stargz-zstd`: stargz-snapshotter's zstd variant (`ctr-remote --zstdchunked`)
 * - `none`: a plain tar/tar+gzip/tar+zstd layer without a TOC
 */
export type LayerFormat = 'zstd:chunked' | 'estargz' | 'stargz-zstd' | 'none';

export interface Timestamp {
  /** Whole seconds since the epoch (may be negative). */
  sec: number;
  /** 0..999_999_999 */
  nsec: number;
}

/** One independently decompressible piece of a regular file. */
export interface Chunk {
  /** Offset of the chunk inside the file (uncompressed). */
  offset: number;
  /** Uncompressed length of the chunk. */
  size: number;
  /** Start of the compressed range in the blob that holds the chunk. */
  compressedOffset: number;
  /** End (exclusive) of that range. The range may hold trailing headers/padding after the chunk. */
  compressedEnd: number;
  /** Bytes to skip after decompressing the range before the chunk starts (eStargz innerOffset). */
  innerOffset: number;
  /** sha256 of the chunk's uncompressed bytes. Always present: readers fill it from the file digest for single-chunk files. */
  digest: string;
  /** The chunk is all zeros and may be served without fetching. */
  zeros: boolean;
  /**
   * Gzip stream without members of its own (a plain gzip layer with checkpoints,
   * gzip/checkpoints.ts): the range starts at a deflate block boundary `skipBits` into its
   * first byte, and decompresses with `window` as the history before it; `out` is the
   * checkpoint's offset in the uncompressed stream.
   */
  resume?: { skipBits: number; window: Buffer; out: number };
}

export interface TocEntry {
  /** Normalised path relative to the root: no leading `/` or `./`, no trailing `/`; `''` is the root. */
  path: string;
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  userName?: string;
  groupName?: string;
  /** File size (reg); 0 otherwise. */
  size: number;
  mtime: Timestamp;
  atime?: Timestamp;
  ctime?: Timestamp;
  /** Symlink: the target verbatim. Hard link: the normalised path of the target entry. */
  linkName?: string;
  devMajor?: number;
  devMinor?: number;
  /** xattr name -> raw value */
  xattrs?: Record<string, Buffer>;
  /** sha256 of the whole content (reg). */
  digest?: string;
  /** reg: the file's chunks in file order, covering [0, size) without gaps. Empty for empty files. */
  chunks: Chunk[];
}

/** An entry's fields without its chunks: what a reader states for each entry before its chunks are known. */
export type EntryFields = Omit<TocEntry, 'chunks'>;

/**
 * Where entries are put as a reader makes them (formats/entries.ts): an array of objects
 * (EntryArray), or the columns of the parsed form (ParsedTocBuilder, formats/toc-binary.ts).
 */
export interface EntrySink {
  /** Appends an entry; returns its index. `f` is the caller's to reuse. */
  entry(f: EntryFields): number;
  /** Entry `index` stated again (a directory's later metadata; its path stays). */
  restate(index: number, f: EntryFields): void;
  typeOf(index: number): EntryType;
  digestOf(index: number): string | undefined;
  /** Appends a chunk of entry `index`: all of an entry's chunks follow each other. `digest` null: the entry's own. */
  chunk(index: number, offset: number, size: number, compressedOffset: number, compressedEnd: number, innerOffset: number, digest: string | null, zeros: boolean): void;
}

/**
 * The entries of a TOC, read by position or in order: an array as readers make them, or the
 * columns of a TOC's parsed form (formats/toc-binary.ts), which make an entry object only
 * when one is asked for. Such an entry is a view: its fields are getters (a spread or
 * `Object.keys` sees none; plainEntry copies them), and asking twice gives two objects, so
 * keep the one you got.
 */
export interface TocEntries extends Iterable<TocEntry> {
  readonly length: number;
  at(index: number): TocEntry | undefined;
}

/** The entry as a plain object with only its defined fields (what a reader makes), for spreads, JSON and comparisons. */
export function plainEntry(e: TocEntry): TocEntry {
  const out: TocEntry = { path: e.path, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime, chunks: e.chunks };
  if (e.userName !== undefined) out.userName = e.userName;
  if (e.groupName !== undefined) out.groupName = e.groupName;
  if (e.atime !== undefined) out.atime = e.atime;
  if (e.ctime !== undefined) out.ctime = e.ctime;
  if (e.linkName !== undefined) out.linkName = e.linkName;
  if (e.devMajor !== undefined) out.devMajor = e.devMajor;
  if (e.devMinor !== undefined) out.devMinor = e.devMinor;
  if (e.xattrs !== undefined) out.xattrs = e.xattrs;
  if (e.digest !== undefined) out.digest = e.digest;
  return out;
}

export interface TarSplitInfo {
  offset: number;
  compressedLength: number;
  uncompressedLength: number;
  /** sha256 of the compressed tar-split, if anything vouches for it. */
  digest?: string;
}

export interface LayerToc {
  format: LayerFormat;
  /** Human-readable generation, e.g. `c/storage v3 footer (64 B)`, `eStargz`, `legacy stargz`. */
  formatVersion: string;
  compression: Compression;
  /**
   * Entries in archive order, whiteouts (`.wh.*`) included as the plain empty files they are,
   * tool metadata (landmarks, `stargz.index.json`) excluded.
   */
  entries: TocEntries;
  /** Byte range of the TOC itself in the blob (payload, not skippable-frame header). */
  tocOffset: number;
  tocCompressedLength: number;
  tocUncompressedLength: number;
  /** Digest that vouched for the TOC (annotation), and what it covers. */
  tocDigest?: string;
  /**
   * true when the TOC was checked against a digest from the layer descriptor's annotations
   * (which the manifest digest covers); false when found by probing the footer only.
   */
  verified: boolean;
  /** eStargz `.prefetch.landmark`: blob bytes [0, prefetchEnd) are worth fetching at mount. */
  prefetchEnd?: number;
  /** `.no.prefetch.landmark` was present. */
  noPrefetch?: boolean;
  tarSplit?: TarSplitInfo;
  /** Length of the fully decompressed stream, when known (annotation or tar-split). */
  uncompressedSize?: number;
  /** sha256 of the decompressed stream (the layer's DiffID), when the whole stream was read. */
  uncompressedDigest?: string;
  /** A plain gzip layer indexed whole: where its stream can be entered (chunks' `resume`). */
  checkpoints?: GzipCheckpoint[];
}

/** A TOC as a reader makes it (readLayerToc, plain-layer indexes): one object per entry, in an array. */
export type ArrayToc = LayerToc & { entries: TocEntry[] };

/** Limits applied to every TOC (it is untrusted input). */
export interface TocLimits {
  maxCompressedTocBytes: number;
  maxUncompressedTocBytes: number;
  maxEntries: number;
}

export const DEFAULT_TOC_LIMITS: TocLimits = {
  // containers/storage caps both at 150 MiB.
  maxCompressedTocBytes: 150 * 1024 * 1024,
  maxUncompressedTocBytes: 150 * 1024 * 1024,
  maxEntries: 2_000_000,
};

/**
 * Where verified raw TOC bytes are kept between runs, keyed by the digest that vouched
 * for them, so a second open of the same layer needs no TOC fetch. Implemented by cache/.
 */
export interface TocStore {
  get(key: string): Promise<Buffer | undefined>;
  put(key: string, raw: Buffer): Promise<void>;
}
