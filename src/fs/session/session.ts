/**
 * tocfs's own FUSE session: the kernel's protocol spoken on a /dev/fuse descriptor, over the
 * same path-based operations fuse-native serves (fs/operations.ts, fs/store-operations.ts).
 *
 * - Node ids are the inode numbers the operations report (deterministic: the same TOCs give
 *   the same numbers), so a directory listing can hand out entries with their attributes
 *   (READDIRPLUS) and a successor process can answer for the ids the kernel holds.
 * - Requests are answered as their operations finish, in any order: many are in flight.
 * - A regular file whose whole content is one file in the cache is opened with
 *   FOPEN_PASSTHROUGH onto it: the kernel reads it (and maps it) without asking tocfs, and
 *   every layer and image holding the same content shares one page-cache copy.
 * - `handOver()` stops reading, lets the requests in flight finish and returns what a
 *   successor needs (the node table and the negotiated settings) with the descriptor.
 */
import { closeSync, openSync, constants as fsConstants } from 'node:fs';
import type { Logger } from 'pino';
import { metrics } from '../../metrics/index.js';
import type { FuseOperations, StatInfo } from '../fuse-binding.js';
import type { FuseDev } from './native.js';
import { NodePaths } from './node-paths.js';
import {
  attrReply,
  cString,
  direntSize,
  ENTRY_OUT,
  errorReply,
  Fopen,
  IN_HEADER,
  Init,
  Init2,
  initReply,
  KERNEL_MINOR,
  Op,
  openReply,
  OUT_HEADER,
  putDirent,
  putEntry,
  readHeader,
  readInit,
  reply,
  ROOT_ID,
  statfsReply,
  u64,
} from './protocol.js';

const ENOENT = -2;
const EIO = -5;
const ESTALE = -116;
const EROFS = -30;
const ERANGE = -34;
const ENOSYS = -38;
const EPROTO = -71;
/** d_ino for a listed name without attributes (libfuse's FUSE_UNKNOWN_INO). */
const UNKNOWN_INO = 0xffffffff;

/** Reads and directory pages up to 1 MiB (FUSE_MAX_PAGES). */
const MAX_PAGES = 256;
const MAX_WRITE = 128 * 1024;
/** What one read of /dev/fuse must be able to take: the largest write plus its headers. */
export const REQUEST_BUFFER = MAX_WRITE + 4096;

export interface SessionOptions {
  ops: FuseOperations;
  dev: FuseDev;
  fd: number;
  logger: Logger;
  /** Seconds the kernel keeps names and attributes. */
  validSeconds: number;
  /** Seconds a name found missing stays missing (0: ask again every time). */
  negativeSeconds: number;
  /** Try FUSE passthrough for files the operations can back with a whole cached file. */
  passthrough: boolean;
  /** Called once the kernel has unmounted the filesystem or the device failed. */
  onClosed?: (reason: string) => void;
}

/** What a successor process needs to go on serving a session (JSON, with the descriptor beside it). */
export interface SessionState {
  version: 1;
  minor: number;
  passthrough: boolean;
  nodes: Array<[nodeid: number, path: string, lookups: number]>;
}

/** Node ids a tree could never hand out (0, the root's 1): paths that report them get one from here. */
const SYNTHETIC_BASE = 2 ** 52;

export class FuseSession {
  private readonly ops: FuseOperations;
  private readonly dev: FuseDev;
  readonly fd: number;
  private readonly log: Logger;
  private readonly valid: number;
  private readonly negative: number;
  private passthroughWanted: boolean;
  /** Serving a session a predecessor handed over. */
  private readonly resumed: boolean;
  private passthrough = false;
  private minor = KERNEL_MINOR;
  private initialised = false;
  /**
   * The path of every node id the kernel holds. Its lookup count is in `lookups` only when it is
   * not 1 (a find over ten 10k-entry images left 200k ids, one lookup each: an object per id
   * held 8 MB more).
   */
  private readonly paths = new NodePaths();
  private readonly lookups = new Map<number, number>();
  /** Stats of listings being paged through, by the operations' names array (they keep one per directory). */
  /** Synthetic ids by path (see SYNTHETIC_BASE). */
  private readonly synthetic = new Map<string, number>();
  private nextSynthetic = SYNTHETIC_BASE;
  /** Backing ids registered with the kernel, by node id: all opens of an inode must share one. */
  private readonly backing = new Map<number, number>();
  /** Handles of opens that are not passthrough, by node id: the kernel refuses passthrough beside them. */
  private readonly cachedOpens = new Map<number, Set<number>>();
  private reader: { stop(): void } | undefined;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closed = false;
  private warnedPassthrough = false;
  private readonly onClosed: ((reason: string) => void) | undefined;

  constructor(opts: SessionOptions, resumed?: SessionState) {
    this.ops = opts.ops;
    this.dev = opts.dev;
    this.fd = opts.fd;
    this.log = opts.logger;
    this.valid = opts.validSeconds;
    this.negative = opts.negativeSeconds;
    this.passthroughWanted = opts.passthrough;
    this.onClosed = opts.onClosed;
    this.paths.set(ROOT_ID, '/');
    this.resumed = resumed !== undefined;
    if (resumed) {
      this.initialised = true;
      this.minor = resumed.minor;
      this.passthrough = resumed.passthrough && opts.passthrough;
      for (const [id, path, lookups] of resumed.nodes) {
        this.paths.set(id, path);
        if (lookups !== 1) this.lookups.set(id, lookups);
        if (id >= SYNTHETIC_BASE) {
          this.synthetic.set(path, id);
          this.nextSynthetic = Math.max(this.nextSynthetic, id + 1);
        }
      }
    }
  }

  /** Starts answering the kernel. */
  start(): void {
    this.reader = this.dev.startReading(this.fd, REQUEST_BUFFER, (batch) => {
      if (batch === null) return this.close('the filesystem was unmounted');
      for (const req of batch) this.dispatch(req);
    });
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.reader?.stop();
    this.reader = undefined;
    this.onClosed?.(reason);
  }

  /** Answers again after a hand-over the successor did not take. */
  resume(): void {
    if (this.reader) return;
    this.closed = false;
    this.start();
  }

  /** Stops answering (after an unmount that did not end the session). */
  stop(): void {
    this.close('stopped by tocfs');
  }

  /** Stops reading requests and resolves once those in flight are answered, with what a successor needs. */
  async handOver(): Promise<SessionState> {
    this.reader?.stop();
    this.reader = undefined;
    if (this.inFlight > 0) await new Promise<void>((res) => (this.drained = res));
    this.closed = true;
    // Backing ids stay registered with the connection: the successor inherits them.
    return {
      version: 1,
      minor: this.minor,
      passthrough: this.passthrough,
      nodes: Array.from(this.paths, ([id, path]) => [id, path, this.lookupsOf(id)]),
    };
  }

  private send(buffers: Buffer[]): void {
    const n = this.dev.write(this.fd, buffers);
    // ENOENT: the request was interrupted and its answer is no longer wanted.
    if (n < 0 && n !== ENOENT && !this.closed) this.log.debug({ errno: n }, 'FUSE reply refused by the kernel');
  }

  private finish(): void {
    if (--this.inFlight === 0 && this.drained) {
      const d = this.drained;
      this.drained = undefined;
      d();
    }
  }

  private answer(unique: bigint, b: Buffer | number): void {
    this.send([typeof b === 'number' ? errorReply(unique, b) : b]);
    this.finish();
  }

  private pathOf(nodeid: number): string | undefined {
    return this.paths.get(nodeid);
  }

  private lookupsOf(nodeid: number): number {
    return this.lookups.get(nodeid) ?? 1;
  }

  private childPath(parent: string, name: string): string {
    return parent === '/' ? `/${name}` : `${parent}/${name}`;
  }

  /** The node id for `path`, counting one kernel lookup of it. */
  private remember(path: string, st: StatInfo): number {
    let id = st.ino;
    const known = this.paths.get(id);
    // A successor may number inodes its own way (the store numbers layers in the order they are
    // first used): an id the kernel already holds for another path gets a fresh one instead.
    // (Before a hand-over the same id under two paths is a hard link.)
    const taken = this.resumed && known !== undefined && known !== path;
    if (taken || id <= ROOT_ID || id >= SYNTHETIC_BASE) {
      id = this.synthetic.get(path) ?? this.nextSynthetic++;
      this.synthetic.set(path, id);
    }
    if (this.paths.has(id)) this.lookups.set(id, this.lookupsOf(id) + 1);
    else this.paths.set(id, path);
    return id;
  }

  private forget(nodeid: number, count: number): void {
    if (nodeid === ROOT_ID) return;
    const path = this.paths.get(nodeid);
    if (path === undefined) return;
    const left = this.lookupsOf(nodeid) - count;
    if (left > 0) {
      if (left === 1) this.lookups.delete(nodeid);
      else this.lookups.set(nodeid, left);
      return;
    }
    this.paths.delete(nodeid);
    this.lookups.delete(nodeid);
    if (nodeid >= SYNTHETIC_BASE) this.synthetic.delete(path);
    const backingId = this.backing.get(nodeid);
    if (backingId !== undefined) {
      this.backing.delete(nodeid);
      try {
        this.dev.backingClose(this.fd, backingId);
      } catch (err) {
        this.log.debug({ err, nodeid }, 'cannot close a passthrough backing file');
      }
    }
  }

  private dispatch(req: Buffer): void {
    const h = readHeader(req);
    // Requests that get no answer.
    if (h.opcode === Op.FORGET) return this.forget(h.nodeid, u64(req, IN_HEADER));
    if (h.opcode === Op.BATCH_FORGET) {
      const count = req.readUInt32LE(IN_HEADER);
      for (let i = 0, o = IN_HEADER + 8; i < count && o + 16 <= req.length; i++, o += 16) this.forget(u64(req, o), u64(req, o + 8));
      return;
    }
    if (h.opcode === Op.INTERRUPT) return;
    this.inFlight++;
    const { unique } = h;
    try {
      if (h.opcode === Op.INIT) return this.init(unique, req);
      if (!this.initialised) return this.answer(unique, EPROTO);
      const path = this.pathOf(h.nodeid);
      if (path === undefined) return this.answer(unique, h.opcode === Op.DESTROY ? reply(unique, 0) : ESTALE);
      this.operation(h.opcode, unique, h.nodeid, path, req);
    } catch (err) {
      this.log.error({ err, opcode: h.opcode }, 'FUSE request failed: answering EIO');
      this.answer(unique, EIO);
    }
  }

  private init(unique: bigint, req: Buffer): void {
    const k = readInit(req);
    if (k.major !== 7) {
      this.log.error({ major: k.major }, 'the kernel speaks an unknown FUSE major version');
      return this.answer(unique, EPROTO);
    }
    this.minor = Math.min(k.minor, KERNEL_MINOR);
    const offer = Init.ASYNC_READ | Init.BIG_WRITES | Init.DO_READDIRPLUS | Init.PARALLEL_DIROPS | Init.MAX_PAGES | Init.CACHE_SYMLINKS | Init.INIT_EXT;
    const flags = offer & k.flags;
    let flags2 = 0;
    if (this.passthroughWanted) {
      if (k.flags2 & Init2.PASSTHROUGH) flags2 |= Init2.PASSTHROUGH;
      else this.warnPassthrough('the kernel does not offer FUSE passthrough (needs Linux 6.9 and CONFIG_FUSE_PASSTHROUGH)');
    }
    this.passthrough = (flags2 & Init2.PASSTHROUGH) !== 0;
    this.initialised = true;
    this.log.debug({ minor: this.minor, kernelMinor: k.minor, readdirplus: (flags & Init.DO_READDIRPLUS) !== 0, passthrough: this.passthrough }, 'FUSE session initialised');
    this.answer(
      unique,
      initReply(unique, {
        minor: this.minor,
        maxReadahead: k.maxReadahead,
        flags,
        flags2,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite: MAX_WRITE,
        maxPages: MAX_PAGES,
        maxStackDepth: this.passthrough ? 1 : 0,
      }),
    );
  }

  private warnPassthrough(reason: string): void {
    if (this.warnedPassthrough) return;
    this.warnedPassthrough = true;
    this.log.warn({ reason }, `FUSE passthrough is off: ${reason}; every read goes through tocfs`);
  }

  private operation(opcode: number, unique: bigint, nodeid: number, path: string, req: Buffer): void {
    const ops = this.ops;
    const done = (b: Buffer | number): void => this.answer(unique, b);
    switch (opcode) {
      case Op.LOOKUP: {
        const child = this.childPath(path, cString(req, IN_HEADER));
        return ops.getattr(child, (err, st) => {
          if (err || !st) {
            if (err === ENOENT && this.negative > 0) {
              const b = reply(unique, ENTRY_OUT);
              putEntry(b, OUT_HEADER, 0, undefined, this.negative);
              return done(b);
            }
            return done(err || EIO);
          }
          const b = reply(unique, ENTRY_OUT);
          putEntry(b, OUT_HEADER, this.remember(child, st), st, this.valid);
          done(b);
        });
      }
      case Op.GETATTR:
        return ops.getattr(path, (err, st) => done(err || !st ? err || EIO : attrReply(unique, st, nodeid, this.valid)));
      case Op.READLINK:
        return ops.readlink(path, (err, target) => done(err ? err : this.withData(unique, Buffer.from(target ?? ''))));
      case Op.OPEN:
        return this.open(unique, nodeid, path, req.readUInt32LE(IN_HEADER));
      case Op.READ:
        return this.read(unique, path, req);
      case Op.RELEASE: {
        const fh = u64(req, IN_HEADER);
        this.closedCached(nodeid, fh);
        return ops.release(path, fh, (err) => done(err ? err : reply(unique, 0)));
      }
      case Op.OPENDIR:
        // ENOSYS: the kernel stops sending OPENDIR and RELEASEDIR and opens directories itself,
        // keeping their listings (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR): a repeated walk asks
        // tocfs nothing. Listings are by path here, so no directory handle is needed.
        return done(ENOSYS);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(unique, path, req, opcode === Op.READDIRPLUS);
      case Op.RELEASEDIR:
        return ops.releasedir(path, u64(req, IN_HEADER), (err) => done(err ? err : reply(unique, 0)));
      case Op.GETXATTR: {
        const size = req.readUInt32LE(IN_HEADER);
        return ops.getxattr(path, cString(req, IN_HEADER + 8), (err, value) => done(err ? err : this.sized(unique, size, value ?? Buffer.alloc(0))));
      }
      case Op.LISTXATTR: {
        const size = req.readUInt32LE(IN_HEADER);
        return ops.listxattr(path, (err, names) => done(err ? err : this.sized(unique, size, Buffer.from((names ?? []).map((n) => `${n}\0`).join('')))));
      }
      case Op.STATFS:
        return ops.statfs(path, (err, s) => done(err || !s ? err || EIO : statfsReply(unique, s)));
      case Op.ACCESS:
        return ops.access(path, req.readUInt32LE(IN_HEADER), (err) => done(err ? err : reply(unique, 0)));
      case Op.FLUSH:
      case Op.FSYNC:
      case Op.FSYNCDIR:
      case Op.DESTROY:
        return done(reply(unique, 0));
      case Op.CREATE:
        return this.mutate(unique, 'create', this.childPath(path, cString(req, IN_HEADER + 16)), [req.readUInt32LE(IN_HEADER + 4)]);
      case Op.MKDIR:
        return this.mutate(unique, 'mkdir', this.childPath(path, cString(req, IN_HEADER + 8)), [req.readUInt32LE(IN_HEADER)]);
      case Op.UNLINK:
        return this.mutate(unique, 'unlink', this.childPath(path, cString(req, IN_HEADER)), []);
      case Op.RMDIR:
        return this.mutate(unique, 'rmdir', this.childPath(path, cString(req, IN_HEADER)), []);
      case Op.SETATTR:
      case Op.SYMLINK:
      case Op.MKNOD:
      case Op.RENAME:
      case Op.RENAME2:
      case Op.LINK:
      case Op.WRITE:
      case Op.SETXATTR:
      case Op.REMOVEXATTR:
        return done(EROFS);
      default:
        // The kernel remembers ENOSYS and stops asking (lseek, poll, locks, ioctl, ...).
        return done(ENOSYS);
    }
  }

  private withData(unique: bigint, data: Buffer): Buffer {
    const b = reply(unique, data.length);
    data.copy(b, OUT_HEADER);
    return b;
  }

  /** getxattr/listxattr: the size asked with 0, the data when it fits, else ERANGE. */
  private sized(unique: bigint, size: number, data: Buffer): Buffer | number {
    if (size === 0) {
      const b = reply(unique, 8);
      b.writeUInt32LE(data.length, OUT_HEADER);
      return b;
    }
    return data.length > size ? ERANGE : this.withData(unique, data);
  }

  /** The store's `use` (create) and release (rmdir, unlink) notifications; anything else is refused as read-only. */
  private mutate(unique: bigint, name: 'create' | 'mkdir' | 'unlink' | 'rmdir', path: string, args: unknown[]): void {
    const op = this.ops[name] as ((...a: unknown[]) => void) | undefined;
    if (!op) return this.answer(unique, EROFS);
    op(path, ...args, (err: number) => {
      if (err) return this.answer(unique, err);
      if (name === 'unlink' || name === 'rmdir') return this.answer(unique, reply(unique, 0));
      // Nothing tocfs serves creates a name that stays; should one, its attributes answer.
      this.ops.getattr(path, (e, st) => {
        if (e || !st) return this.answer(unique, e || EIO);
        const b = reply(unique, ENTRY_OUT + (name === 'create' ? 16 : 0));
        putEntry(b, OUT_HEADER, this.remember(path, st), st, this.valid);
        this.answer(unique, b);
      });
    });
  }

  private open(unique: bigint, nodeid: number, path: string, flags: number): void {
    this.ops.open(path, flags, (err, fh) => {
      if (err) return this.answer(unique, err);
      const handle = fh ?? 0;
      const plain = (): void => {
        const handles = this.cachedOpens.get(nodeid) ?? new Set<number>();
        this.cachedOpens.set(nodeid, handles.add(handle));
        this.answer(unique, openReply(unique, handle, Fopen.KEEP_CACHE));
      };
      const passedThrough = (backingId: number): void => {
        metrics.passthroughOpened();
        this.answer(unique, openReply(unique, handle, Fopen.PASSTHROUGH, backingId));
      };
      const known = this.backing.get(nodeid);
      if (known !== undefined) return passedThrough(known);
      // The kernel refuses a passthrough open of an inode that has cached opens.
      if (!this.passthrough || !this.ops.backingFile || this.cachedOpens.has(nodeid)) return plain();
      this.ops.backingFile(path, handle, (file) => {
        const id = file && !this.closed ? this.registerBacking(nodeid, file) : undefined;
        if (id === undefined) return plain();
        passedThrough(id);
      });
    });
  }

  private registerBacking(nodeid: number, file: string): number | undefined {
    const raced = this.backing.get(nodeid);
    if (raced !== undefined) return raced;
    let fd: number | undefined;
    try {
      fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOATIME);
      const id = this.dev.backingOpen(this.fd, fd);
      this.backing.set(nodeid, id);
      return id;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPERM' || code === 'ENOTTY' || code === 'EOPNOTSUPP' || code === 'EINVAL') {
        this.passthrough = false;
        this.warnPassthrough(`the kernel refused a backing file (${code}: ${(err as Error).message})`);
      } else this.log.debug({ err, file }, 'no passthrough for this file');
      return undefined;
    } finally {
      // The kernel holds its own reference once registered.
      if (fd !== undefined) closeSync(fd);
    }
  }

  private closedCached(nodeid: number, fh: number): void {
    const handles = this.cachedOpens.get(nodeid);
    if (handles?.delete(fh) && handles.size === 0) this.cachedOpens.delete(nodeid);
  }

  private read(unique: bigint, path: string, req: Buffer): void {
    const fh = u64(req, IN_HEADER);
    const offset = u64(req, IN_HEADER + 8);
    const size = req.readUInt32LE(IN_HEADER + 16);
    const head = reply(unique, 0);
    const data = Buffer.allocUnsafe(size);
    this.ops.read(path, fh, data, size, offset, (n) => {
      if (n < 0) return this.answer(unique, n);
      head.writeUInt32LE(OUT_HEADER + n, 0);
      this.send(n > 0 ? [head, data.subarray(0, n)] : [head]);
      this.finish();
    });
  }

  private readdir(unique: bigint, path: string, req: Buffer, plus: boolean): void {
    const offset = u64(req, IN_HEADER + 8);
    const size = req.readUInt32LE(IN_HEADER + 16);
    this.ops.readdir(path, (err, names, stats) => {
      if (err || !names) return this.answer(unique, err || EIO);
      const out = Buffer.alloc(size);
      let used = 0;
      for (let i = offset; i < names.length; i++) {
        const name = Buffer.from(names[i]!);
        const entrySize = direntSize(name.length, plus);
        if (used + entrySize > size) break;
        // Only the names of this reply: the kernel pages through a listing a few dozen at a time.
        const st = typeof stats === 'function' ? stats(i) : stats?.[i];
        const dot = names[i] === '.' || names[i] === '..';
        let lookup: { nodeid: number; st: StatInfo | undefined; validSeconds: number } | undefined;
        if (plus) {
          // The kernel takes a lookup of every entry but `.` and `..`, as LOOKUP would.
          lookup = dot || !st ? { nodeid: 0, st: undefined, validSeconds: 0 } : { nodeid: this.remember(this.childPath(path, names[i]!), st), st, validSeconds: this.valid };
        }
        // Node id 0 in a READDIRPLUS entry means no attributes: the kernel skips it without a lookup.
        used += putDirent(out, used, name, st?.ino ?? UNKNOWN_INO, st?.mode ?? 0, i + 1, lookup);
      }
      const b = reply(unique, used);
      out.copy(b, OUT_HEADER, 0, used);
      this.answer(unique, b);
    });
  }
}
