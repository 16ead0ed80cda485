/**
 * The kernel's FUSE protocol as tocfs speaks it on /dev/fuse: request and reply layouts
 * (little-endian, 64-bit aligned), opcodes and the INIT flags tocfs negotiates. The layouts
 * are those of the kernel's uapi header `linux/fuse.h`, protocol 7.40 (passthrough); see
 * docs/fuse-session.md.
 */
import type { StatInfo, StatfsInfo } from '../fuse-binding.js';

export const KERNEL_VERSION = 7;
/** The protocol minor tocfs answers with (7.40 brought passthrough; older kernels get their own). */
export const KERNEL_MINOR = 40;
export const ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  READDIRPLUS: 44,
  RENAME2: 45,
} as const;

/** INIT flags, low word (`flags`). */
export const Init = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  INIT_EXT: 1 << 30,
} as const;
/** INIT flags, high word (`flags2`, bit n = flag 1 << (32 + n)). */
export const Init2 = {
  PASSTHROUGH: 1 << 5,
} as const;

export const Fopen = {
  KEEP_CACHE: 1 << 1,
  CACHE_DIR: 1 << 3,
  PASSTHROUGH: 1 << 7,
} as const;

export const IN_HEADER = 40;
export const OUT_HEADER = 16;
const ATTR = 88;
export const ENTRY_OUT = 40 + ATTR;

export interface RequestHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

/** Node ids are inode numbers below 2^53; read as a double. */
export function u64(b: Buffer, o: number): number {
  return b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 0x1_0000_0000;
}

export function putU64(b: Buffer, o: number, n: number): void {
  b.writeUInt32LE(n >>> 0, o);
  b.writeUInt32LE(Math.floor(n / 0x1_0000_0000) >>> 0, o + 4);
}

/** A signed 64-bit value (times before 1970). */
function putI64(b: Buffer, o: number, n: number): void {
  b.writeUInt32LE(((n % 0x1_0000_0000) + 0x1_0000_0000) % 0x1_0000_0000, o);
  b.writeInt32LE(Math.floor(n / 0x1_0000_0000) | 0, o + 4);
}

export function readHeader(b: Buffer): RequestHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: u64(b, 16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** A NUL-terminated name at `o` (the last one of a request may be the rest of it). */
export function cString(b: Buffer, o: number): string {
  const end = b.indexOf(0, o);
  return b.toString('utf8', o, end < 0 ? b.length : end);
}

/** A reply: the out header followed by `size` bytes for the caller to fill from offset 16. */
export function reply(unique: bigint, size: number): Buffer {
  const b = Buffer.alloc(OUT_HEADER + size);
  b.writeUInt32LE(OUT_HEADER + size, 0);
  b.writeBigUInt64LE(unique, 8);
  return b;
}

export function errorReply(unique: bigint, errno: number): Buffer {
  const b = reply(unique, 0);
  b.writeInt32LE(errno < 0 ? errno : -errno, 4);
  return b;
}

/** struct fuse_attr at `o`. Never throws: a reply built in an operation's callback must always be sent. */
export function putAttr(b: Buffer, o: number, st: StatInfo, nodeid: number): void {
  putU64(b, o, nodeid);
  putU64(b, o + 8, st.size);
  putU64(b, o + 16, st.blocks);
  putI64(b, o + 24, st.atime.sec);
  putI64(b, o + 32, st.mtime.sec);
  putI64(b, o + 40, st.ctime.sec);
  b.writeUInt32LE(st.atime.nsec >>> 0, o + 48);
  b.writeUInt32LE(st.mtime.nsec >>> 0, o + 52);
  b.writeUInt32LE(st.ctime.nsec >>> 0, o + 56);
  b.writeUInt32LE(st.mode >>> 0, o + 60);
  b.writeUInt32LE(st.nlink >>> 0, o + 64);
  b.writeUInt32LE(st.uid >>> 0, o + 68);
  b.writeUInt32LE(st.gid >>> 0, o + 72);
  b.writeUInt32LE(st.rdev >>> 0, o + 76);
  b.writeUInt32LE(st.blksize >>> 0, o + 80);
  // flags (o + 84) stay 0
}

/** struct fuse_entry_out at `o`: nodeid, generation 0, validity in whole seconds, attr. */
export function putEntry(b: Buffer, o: number, nodeid: number, st: StatInfo | undefined, validSeconds: number): void {
  putU64(b, o, nodeid);
  putU64(b, o + 16, validSeconds);
  putU64(b, o + 24, validSeconds);
  if (st) putAttr(b, o + 40, st, nodeid);
}

/** struct fuse_attr_out. */
export function attrReply(unique: bigint, st: StatInfo, nodeid: number, validSeconds: number): Buffer {
  const b = reply(unique, 16 + ATTR);
  putU64(b, OUT_HEADER, validSeconds);
  putAttr(b, OUT_HEADER + 16, st, nodeid);
  return b;
}

/** struct fuse_open_out. */
export function openReply(unique: bigint, fh: number, openFlags: number, backingId = 0): Buffer {
  const b = reply(unique, 16);
  putU64(b, OUT_HEADER, fh);
  b.writeUInt32LE(openFlags, OUT_HEADER + 8);
  b.writeInt32LE(backingId, OUT_HEADER + 12);
  return b;
}

/** struct fuse_statfs_out (struct fuse_kstatfs). */
export function statfsReply(unique: bigint, s: StatfsInfo): Buffer {
  const b = reply(unique, 80);
  const o = OUT_HEADER;
  putU64(b, o, s.blocks);
  putU64(b, o + 8, s.bfree);
  putU64(b, o + 16, s.bavail);
  putU64(b, o + 24, s.files);
  putU64(b, o + 32, s.ffree);
  b.writeUInt32LE(s.bsize >>> 0, o + 40);
  b.writeUInt32LE(s.namemax >>> 0, o + 44);
  b.writeUInt32LE(s.frsize >>> 0, o + 48);
  return b;
}

export interface InitRequest {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
}

export function readInit(b: Buffer): InitRequest {
  const o = IN_HEADER;
  const flags = b.readUInt32LE(o + 12);
  const ext = (flags & Init.INIT_EXT) !== 0 && b.length >= o + 20;
  return { major: b.readUInt32LE(o), minor: b.readUInt32LE(o + 4), maxReadahead: b.readUInt32LE(o + 8), flags, flags2: ext ? b.readUInt32LE(o + 16) : 0 };
}

export interface InitAnswer {
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
  maxStackDepth: number;
}

/** struct fuse_init_out (64 bytes). */
export function initReply(unique: bigint, a: InitAnswer): Buffer {
  const b = reply(unique, 64);
  const o = OUT_HEADER;
  b.writeUInt32LE(KERNEL_VERSION, o);
  b.writeUInt32LE(a.minor, o + 4);
  b.writeUInt32LE(a.maxReadahead, o + 8);
  b.writeUInt32LE(a.flags >>> 0, o + 12);
  b.writeUInt16LE(a.maxBackground, o + 16);
  b.writeUInt16LE(a.congestionThreshold, o + 18);
  b.writeUInt32LE(a.maxWrite, o + 20);
  b.writeUInt32LE(1, o + 24); // time_gran: nanoseconds
  b.writeUInt16LE(a.maxPages, o + 28);
  b.writeUInt32LE(a.flags2 >>> 0, o + 32);
  b.writeUInt32LE(a.maxStackDepth, o + 36);
  return b;
}

const DIRENT_HEADER = 24;
/** DT_* of a mode: the file type bits shifted down. */
export const direntType = (mode: number): number => (mode >>> 12) & 0o17;
export const direntSize = (nameBytes: number, plus: boolean): number => ((plus ? ENTRY_OUT : 0) + DIRENT_HEADER + nameBytes + 7) & ~7;

/**
 * struct fuse_dirent (or fuse_direntplus, the entry first) at `o`; `next` is the offset the
 * kernel asks for to continue after this entry. Returns the padded size written.
 */
export function putDirent(b: Buffer, o: number, name: Buffer, ino: number, mode: number, next: number, plus?: { nodeid: number; st: StatInfo | undefined; validSeconds: number }): number {
  const size = direntSize(name.length, plus !== undefined);
  b.fill(0, o, o + size);
  let d = o;
  if (plus) {
    putEntry(b, o, plus.nodeid, plus.st, plus.validSeconds);
    d += ENTRY_OUT;
  }
  putU64(b, d, ino);
  putU64(b, d + 8, next);
  b.writeUInt32LE(name.length, d + 16);
  b.writeUInt32LE(direntType(mode), d + 20);
  name.copy(b, d + DIRENT_HEADER);
  return size;
}
