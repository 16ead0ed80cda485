/**
 * The read-only filesystem over an inode tree: FUSE operations by path. Metadata comes from
 * the tree (in memory); file content from `read`, which fetches lazily. Every handler answers
 * through its callback without blocking: content reads are promises, the rest is lookups.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { FsNode, FsTree } from '../image/tree.js';
import { sortedNames } from '../image/tree.js';
import { metrics } from '../metrics/index.js';
import { registryDownCause } from '../registry/health.js';
import { Errno, type FuseOperations, type StatfsInfo } from './fuse-binding.js';
import { statOf } from './stat.js';

/**
 * Copies `length` bytes at `offset` of a regular file (exactly, within the file's size) into
 * `into` and returns the count: at once when the bytes are in memory, else when fetched,
 * bounded in time by registry.stall_timeout and, as a backstop, fetch.timeout.
 */
export type ContentReader = (node: FsNode, offset: number, length: number, into: Buffer) => number | Promise<number>;

export interface FsOptions {
  tree: FsTree;
  read: ContentReader;
  logger: Logger;
  /** What to say about a node in an error log (image, layer digest, …). */
  describe?: (node: FsNode) => Record<string, unknown>;
  /** The cache file holding a regular file's whole content, when it is complete (FuseOperations.backingFile). */
  wholeFile?: (node: FsNode) => Promise<string | undefined>;
  /** Preferred I/O size reported in st_blksize. */
  blockSize?: number;
}

/** Operations timed in tocfs_fuse_operation_duration_seconds (with errors by errno name). */
const TIMED_OPS = ['getattr', 'readdir', 'readlink', 'getxattr', 'listxattr', 'open', 'read'] as const;
const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([name, n]) => [n, name]));

const O_ACCMODE = 3;
/**
 * Directory listings kept (sorted names arrays) for the readdir calls that page through one:
 * the kernel asks for a listing a few dozen entries at a time, and the fuse-native binding
 * keeps its packed stats by names array (fs/fuse-binding.ts). Stats themselves are made per
 * name when asked (ReaddirStat). Kept for the whole process, not per tree: a store has two
 * trees per layer (diff/ and chain/). Keyed by tree and inode: trees sharing a directory (a
 * chain/ view over a layer without whiteouts) still get names arrays of their own, as the
 * store shows each tree's inodes moved by an offset of its own (fs/store-operations.ts).
 */
const LISTINGS_KEPT = 64;
const listings = new LRUCache<string, string[]>({ max: LISTINGS_KEPT });
let nextTreeKey = 1;
const W_OK = 2;

/** Aborts a read after `ms` with an error that says so (AbortSignal.timeout's reason names no setting). */
/** The FUSE operations of one mounted tree. */
export function fsOperations(opts: FsOptions): FuseOperations {
  const { tree, read, logger: log } = opts;
  const blockSize = opts.blockSize ?? 128 * 1024;
  const handles = new Map<number, FsNode>();
  const treeKey = `${nextTreeKey++}:`;
  let nextHandle = 1;

  const withNode = (path: string, fail: (errno: number) => void, then: (node: FsNode) => void): void => {
    const node = tree.lookup(path);
    if (!node) return fail(Errno.ENOENT);
    then(node);
  };
  const readOnly = (...args: unknown[]): void => (args[args.length - 1] as (e: number) => void)(Errno.EROFS);

  const ops: FuseOperations = {
    getattr(path, cb) {
      withNode(path, cb, (node) => cb(0, statOf(node, blockSize)));
    },
    fgetattr(path, _fd, cb) {
      withNode(path, cb, (node) => cb(0, statOf(node, blockSize)));
    },
    readdir(path, cb) {
      withNode(path, cb, (node) => {
        if (!node.children) return cb(Errno.ENOTDIR);
        const key = treeKey + node.ino;
        let names = listings.get(key);
        if (!names) {
          // The tree never changes under a mount: a listing made again is the same.
          names = ['.', '..', ...sortedNames(node.children)];
          listings.set(key, names);
        }
        const children = node.children;
        const listed = names;
        cb(0, names, (i) => statOf(i < 2 ? node : children.get(listed[i]!)!, blockSize));
      });
    },
    readlink(path, cb) {
      withNode(path, cb, (node) => (node.entry.type === 'symlink' ? cb(0, node.entry.linkName ?? '') : cb(Errno.EINVAL)));
    },
    getxattr(path, name, cb) {
      withNode(path, cb, (node) => {
        const value = node.entry.xattrs?.[name];
        if (value === undefined) return cb(Errno.ENODATA);
        cb(0, value);
      });
    },
    listxattr(path, cb) {
      withNode(path, cb, (node) => cb(0, Object.keys(node.entry.xattrs ?? {})));
    },
    statfs(_path, cb) {
      const info: StatfsInfo = {
        bsize: 4096,
        frsize: 4096,
        blocks: Math.ceil(tree.contentBytes / 4096),
        bfree: 0,
        bavail: 0,
        files: tree.inodeCount,
        ffree: 0,
        favail: 0,
        fsid: 0,
        flag: 1, // ST_RDONLY
        namemax: 255,
      };
      cb(0, info);
    },
    access(path, mode, cb) {
      withNode(path, cb, () => cb(mode & W_OK ? Errno.EROFS : 0));
    },
    open(path, flags, cb) {
      withNode(path, cb, (node) => {
        if ((flags & O_ACCMODE) !== 0) return cb(Errno.EROFS);
        if (node.children) return cb(Errno.EISDIR);
        const fh = nextHandle++;
        handles.set(fh, node);
        cb(0, fh);
      });
    },
    opendir(path, _flags, cb) {
      withNode(path, cb, (node) => (node.children ? cb(0, 0) : cb(Errno.ENOTDIR)));
    },
    read(path, fd, buf, len, pos, cb) {
      const node = handles.get(fd) ?? tree.lookup(path);
      if (!node) return cb(Errno.EBADF);
      const size = node.entry.type === 'reg' ? node.entry.size : 0;
      if (pos >= size || len === 0) return cb(0);
      const length = Math.min(len, size - pos);
      const failed = (err: unknown): void => {
        // While a registry is down, reads of what is not cached fail at once: that was logged once, when it went down.
        log[registryDownCause(err) ? 'debug' : 'error']({ err, path, offset: pos, length, ...opts.describe?.(node) }, 'read failed: answering EIO');
        cb(Errno.EIO);
      };
      let n: number | Promise<number>;
      try {
        n = read(node, pos, length, buf);
      } catch (err) {
        return failed(err);
      }
      if (typeof n === 'number') return cb(n);
      n.then(cb, failed);
    },
    backingFile(path, fd, cb) {
      const node = handles.get(fd) ?? tree.lookup(path);
      if (!node || !opts.wholeFile || node.entry.type !== 'reg') return cb(undefined);
      opts.wholeFile(node).then(cb, (err: unknown) => {
        log.debug({ err, path }, 'no whole cached file for passthrough');
        cb(undefined);
      });
    },
    release(_path, fd, cb) {
      handles.delete(fd);
      cb(0);
    },
    releasedir(_path, _fd, cb) {
      cb(0);
    },
  };
  for (const name of TIMED_OPS) {
    const op = ops[name] as (...args: unknown[]) => void;
    ops[name] = (...args: unknown[]): void => {
      const done = metrics.startFuseOp(name);
      const cb = args[args.length - 1] as (...r: unknown[]) => void;
      args[args.length - 1] = (...r: unknown[]): void => {
        const res = r[0] as number;
        done(res < 0 ? ERRNO_NAMES.get(res) ?? String(-res) : undefined);
        if (name === 'read' && res > 0) metrics.served(res);
        cb(...r);
      };
      op(...args);
    };
  }
  // The mount is read-only (`ro`), so the kernel refuses these first; answer EROFS regardless.
  for (const name of ['write', 'create', 'truncate', 'ftruncate', 'utimens', 'chown', 'chmod', 'mknod', 'setxattr', 'removexattr', 'unlink', 'rename', 'link', 'symlink', 'mkdir', 'rmdir']) {
    ops[name] = readOnly;
  }
  return ops;
}
