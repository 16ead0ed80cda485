/**
 * fuse-native, typed for what tocfs uses, with the stat, xattr and readdir handoffs done by
 * tocfs itself:
 * - stat times in the layout of the patched addon (scripts/patch-fuse-native.sh): signed
 *   seconds (two words) + nanoseconds. With an unpatched addon times are clamped to what it
 *   can carry (unsigned milliseconds) with one warning.
 * - getxattr/listxattr answer ERANGE when the caller's buffer is too small (fuse-native
 *   would truncate silently).
 */
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Timestamp } from '../formats/toc.js';

const require = createRequire(import.meta.url);

export type Callback<T = void> = (errno: number, value?: T) => void;

export interface StatInfo {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: Timestamp;
  mtime: Timestamp;
  ctime: Timestamp;
}

export interface StatfsInfo {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/** The operations tocfs implements; every callback takes a negative errno (0 = success). */
/**
 * The stat of a listing's `index`-th name, made when asked: a reader pages through a big
 * listing a few dozen names at a time, and stats kept for whole listings held more memory
 * than the trees they came from (a walk of ten 10k-entry images: 54,000 kept, 6.5 MB).
 */
export type ReaddirStat = (index: number) => StatInfo;

export interface FuseOperations {
  init?(cb: (err: number) => void): void;
  getattr(path: string, cb: (err: number, stat?: StatInfo) => void): void;
  fgetattr?(path: string, fd: number, cb: (err: number, stat?: StatInfo) => void): void;
  /** `stats` may be a function: it is called only when the binding has not packed this `names` listing yet. */
  readdir(path: string, cb: (err: number, names?: string[], stats?: StatInfo[] | ReaddirStat) => void): void;
  readlink(path: string, cb: (err: number, target?: string) => void): void;
  getxattr(path: string, name: string, cb: (err: number, value?: Buffer) => void): void;
  listxattr(path: string, cb: (err: number, names?: string[]) => void): void;
  statfs(path: string, cb: (err: number, statfs?: StatfsInfo) => void): void;
  access(path: string, mode: number, cb: (err: number) => void): void;
  open(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
  opendir(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
  read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void;
  release(path: string, fd: number, cb: (err: number) => void): void;
  releasedir(path: string, fd: number, cb: (err: number) => void): void;
  /**
   * The whole content of an open regular file as one verified file in the cache, when it is
   * complete there (tocfs's own FUSE session passes reads through to it); undefined otherwise.
   */
  backingFile?(path: string, fd: number, cb: (file: string | undefined) => void): void;
  [mutating: string]: unknown;
}

export interface FuseOptions {
  fsname?: string;
  subtype?: string;
  kernelCache?: boolean;
  entryTimeout?: number;
  attrTimeout?: number;
  maxRead?: number;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  force?: boolean;
  mkdir?: boolean;
  timeout?: number | false;
  debug?: boolean;
}

interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
type Signal = (res: number, ...args: unknown[]) => void;
interface FuseClass {
  new (mnt: string, ops: FuseOperations, opts: FuseOptions): FuseInstance & { ops: FuseOperations };
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  [errno: string]: unknown;
}

const FuseBase = require('fuse-native') as FuseClass;
const binding = require('node-gyp-build')(dirname(require.resolve('fuse-native/package.json'))) as { stat_times_sec_nsec?: number };

/** Linux errno values, negative as FUSE wants them. */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EACCES: -13,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EROFS: -30,
  ERANGE: -34,
  ENOSYS: -38,
  ENODATA: -61,
} as const;

/** true when the loaded addon carries signed seconds + nanoseconds (the tocfs patch). */
export const PRECISE_TIMES = binding.stat_times_sec_nsec === 1;

let clampWarned = false;

function setTime(ints: Uint32Array, at: number, t: Timestamp, log: Logger | undefined): void {
  if (PRECISE_TIMES) {
    ints[at] = t.sec >>> 0;
    ints[at + 1] = Math.floor(t.sec / 4294967296) >>> 0;
    ints[at + 2] = t.nsec;
    return;
  }
  // Stock fuse-native: unsigned milliseconds as two words.
  let ms = t.sec * 1000 + Math.floor(t.nsec / 1e6);
  if (ms < 0) {
    if (!clampWarned) log?.warn('fuse-native is not patched (run scripts/patch-fuse-native.sh): times before 1970 are shown as 1970 and sub-millisecond precision is lost');
    clampWarned = true;
    ms = 0;
  }
  ints[at] = ms % 4294967296;
  ints[at + 1] = Math.floor(ms / 4294967296);
}

function setWide(ints: Uint32Array, at: number, n: number): void {
  ints[at] = n % 4294967296;
  ints[at + 1] = Math.floor(n / 4294967296);
}

/** The Uint32Array fuse-native's C layer reads a struct stat from. */
export function statArray(s: StatInfo, log?: Logger): Uint32Array {
  const ints = new Uint32Array(STAT_INTS);
  statInto(s, ints, 0, log);
  return ints;
}

/** Writes statArray's words at `at` of `ints`. */
function statInto(s: StatInfo, ints: Uint32Array, at: number, log: Logger | undefined): void {
  ints[at] = s.mode;
  ints[at + 1] = s.uid;
  ints[at + 2] = s.gid;
  setWide(ints, at + 3, s.size);
  ints[at + 5] = 0;
  ints[at + 6] = s.nlink;
  ints[at + 7] = s.ino;
  ints[at + 8] = s.rdev;
  ints[at + 9] = s.blksize;
  setWide(ints, at + 10, s.blocks);
  const step = PRECISE_TIMES ? 3 : 2;
  setTime(ints, at + 12, s.atime, log);
  setTime(ints, at + 12 + step, s.mtime, log);
  setTime(ints, at + 12 + 2 * step, s.ctime, log);
}

function statfsArray(s: StatfsInfo): Uint32Array {
  return Uint32Array.from([s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.fsid, s.flag, s.namemax].map((n) => Math.min(n, 0xffffffff)));
}

const EMPTY_STAT = new Uint32Array(21);
/** Length of statArray's output. */
const STAT_INTS = PRECISE_TIMES ? 21 : 18;
/** Bytes of packed readdir stats kept for listings asked for again (about 12,000 names). */
const PACKED_LISTINGS_BYTES = 1 << 20;

/** fuse-native with tocfs's stat/statfs/readdir/xattr handoffs (see the module comment). */
export class Fuse extends FuseBase {
  private readonly log: Logger | undefined;
  /**
   * Converted readdir stats, one flat array per listing (keyed by its names array): a few
   * dozen bytes per name instead of a StatInfo and a Uint32Array each. Only the listings used
   * last are kept (PACKED_LISTINGS_BYTES): kept for every directory, a walk of a big tree left
   * more here than the tree itself holds, to save work that costs microseconds per name.
   */
  private readonly packedListings = new Map<string[], Uint32Array>();
  private packedBytes = 0;

  constructor(mountpoint: string, ops: FuseOperations, options: FuseOptions, log?: Logger) {
    super(mountpoint, ops, options);
    this.log = log;
  }

  static unmountLazy(mountpoint: string): Promise<void> {
    return new Promise((resolve, reject) => FuseBase.unmount(mountpoint, (err) => (err ? reject(err) : resolve())));
  }

  private get tocfsOps(): FuseOperations {
    return (this as unknown as { ops: FuseOperations }).ops;
  }

  _op_getattr(signal: Signal, path: string): void {
    this.tocfsOps.getattr(path, (err, st) => (err || !st ? signal(err || Errno.EIO, EMPTY_STAT) : signal(0, statArray(st, this.log))));
  }

  _op_fgetattr(signal: Signal, path: string): void {
    this._op_getattr(signal, path);
  }

  _op_statfs(signal: Signal, path: string): void {
    this.tocfsOps.statfs(path, (err, st) => (err || !st ? signal(err || Errno.EIO) : signal(0, statfsArray(st))));
  }

  _op_readdir(signal: Signal, path: string): void {
    this.tocfsOps.readdir(path, (err, names, stats) => {
      if (err || !names) return signal(err || Errno.EIO);
      if (!stats) return signal(0, names, []);
      let packed = this.packedListings.get(names);
      if (packed) {
        // Most recently used last.
        this.packedListings.delete(names);
        this.packedListings.set(names, packed);
      } else {
        packed = new Uint32Array(names.length * STAT_INTS);
        // Straight into the listing's array: a Uint32Array of a stat each is a malloc each (over V8's 64-byte on-heap limit).
        for (let i = 0; i < names.length; i++) statInto(typeof stats === 'function' ? stats(i) : stats[i]!, packed, i * STAT_INTS, this.log);
        this.keepPacked(names, packed);
      }
      // Views for this call only (the C side reads each element as a struct stat).
      const views = new Array<Uint32Array>(names.length);
      for (let i = 0; i < names.length; i++) views[i] = packed.subarray(i * STAT_INTS, (i + 1) * STAT_INTS);
      return signal(0, names, views);
    });
  }

  private keepPacked(names: string[], packed: Uint32Array): void {
    this.packedListings.set(names, packed);
    this.packedBytes += packed.byteLength;
    for (const [oldest, p] of this.packedListings) {
      if (this.packedBytes <= PACKED_LISTINGS_BYTES || oldest === names) break;
      this.packedListings.delete(oldest);
      this.packedBytes -= p.byteLength;
    }
  }

  _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer): void {
    this.tocfsOps.getxattr(path, name, (err, value) => {
      if (err || !value) return signal(err || Errno.ENODATA, valueBuf.buffer);
      if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer);
      if (value.length > valueBuf.length) return signal(Errno.ERANGE, valueBuf.buffer);
      value.copy(valueBuf);
      return signal(value.length, valueBuf.buffer);
    });
  }

  _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void {
    this.tocfsOps.listxattr(path, (err, names) => {
      if (err || !names) return signal(err || Errno.EIO, listBuf.buffer);
      const list = Buffer.concat(names.map((n) => Buffer.from(`${n}\0`)));
      if (listBuf.length === 0) return signal(list.length, listBuf.buffer);
      if (list.length > listBuf.length) return signal(Errno.ERANGE, listBuf.buffer);
      list.copy(listBuf);
      return signal(list.length, listBuf.buffer);
    });
  }
}
