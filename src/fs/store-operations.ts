/**
 * The FUSE namespace of the layer store:
 *
 *   /<base64 ref>/                       image directory (no I/O until something inside is looked up)
 *   /<base64 ref>/manifest, config       the resolved manifest and config (debug views)
 *   /<base64 ref>/<key>/diff/            the layer's own tree, overlayfs form (tree operations of fs/)
 *   /<base64 ref>/<key>/info             containers/storage Layer JSON
 *   /<base64 ref>/<key>/blob             the exact compressed blob
 *   /<base64 ref>/<key>/use              creating it counts a use (answered ENOENT)
 *   /<base64 ref>/<key>/chain/           merged tree of layers bottom..this one (debug view)
 *   rmdir /<base64 ref>/<key>            counts a release (answered ENOENT)
 *
 * Trees are served by fs/'s operations (fsOperations) with each tree's inode numbers
 * moved into a range of its own and, for a store run by a user other than root, owners
 * mapped as rootless Podman maps them (fs/id-map.ts); this module only routes paths and
 * answers the control nodes, which belong to the store's own user.
 */
import type { Logger } from 'pino';
import { Errno, type FuseOperations, type StatInfo, type StatfsInfo } from './fuse-binding.js';
import { toHost, type IdMap } from './id-map.js';
import { fsOperations, type FsOptions } from './operations.js';
import type { FsNode, FsTree } from '../image/tree.js';
import { OVERLAY_OPAQUE_XATTR } from '../image/tree.js';
import { BlobFileReader } from '../store/blob-file.js';
import type { LayerContent, LayerStore, StoreLayer } from '../store/layers.js';
import { INODE_SLOT_BITS, StoreMiss } from '../store/layers.js';
import { encodeRef, parseStorePath, type StorePath } from '../store/names.js';

/** Rootless overlayfs (`userxattr`) and fuse-overlayfs read this one. */
export const USER_OPAQUE_XATTR = 'user.overlay.opaque';

const O_ACCMODE = 3;
const W_OK = 2;
const CONTROL_INODES = 2 ** INODE_SLOT_BITS;

type TreePath = Extract<StorePath, { kind: 'tree' }>;
type Handle = { data: Buffer } | { blob: BlobFileReader };

export interface StoreFsOptions {
  store: LayerStore;
  logger: Logger;
  /** Times of the control nodes. */
  started?: Date;
  /** Owner of the control nodes (directories, info, blob): the one Podman must be to create `use` and rmdir a layer. Default: this process's user and group. */
  owner?: { uid: number; gid: number };
  /** Tree owners: container IDs to the host IDs shown (rootless Podman's map); undefined shows the TOC's IDs as they are. */
  idMap?: IdMap;
}

/** fs/ operations over one tree, with st_ino moved by `inoBase`, owners mapped by `idMap`, and the opaque marker answered under both xattr names. */
function treeOperations(tree: FsTree, content: Pick<FsOptions, 'read' | 'wholeFile'>, inoBase: number, idMap: IdMap | undefined, logger: Logger, describe: (node: FsNode) => Record<string, unknown>): FuseOperations {
  const ops = fsOperations({ tree, ...content, logger, describe });
  const moved = idMap
    ? (st: StatInfo): StatInfo => ({ ...st, ino: inoBase + st.ino, uid: toHost(idMap.uids, st.uid), gid: toHost(idMap.gids, st.gid) })
    : (st: StatInfo): StatInfo => ({ ...st, ino: inoBase + st.ino });
  return {
    ...ops,
    getattr: (path, cb) => ops.getattr(path, (err, st) => cb(err, st && moved(st))),
    fgetattr: (path, fd, cb) => ops.getattr(path, (err, st) => cb(err, st && moved(st))),
    readdir: (path, cb) => ops.readdir(path, (err, names, stats) => cb(err, names, typeof stats === 'function' ? (i) => moved(stats(i)) : stats?.map(moved))),
    getxattr: (path, name, cb) => ops.getxattr(path, name === USER_OPAQUE_XATTR ? OVERLAY_OPAQUE_XATTR : name, cb),
    listxattr: (path, cb) =>
      ops.listxattr(path, (err, names) => cb(err, names && (names.includes(OVERLAY_OPAQUE_XATTR) ? [...names, USER_OPAQUE_XATTR] : names))),
  };
}

export function storeOperations(opts: StoreFsOptions): FuseOperations {
  const { store, logger: log, idMap } = opts;
  const owner = opts.owner ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const t = (opts.started ?? new Date()).getTime();
  const time = { sec: Math.floor(t / 1000), nsec: (t % 1000) * 1e6 };
  const controlInodes = new Map<string, number>([['/', 1]]);
  let nextControlIno = 2;
  const handles = new Map<number, Handle>();
  let nextHandle = 1;
  const diffOps = new WeakMap<LayerContent, FuseOperations>();
  const chainOps = new WeakMap<StoreLayer, FuseOperations>();

  const ino = (path: string): number => {
    let n = controlInodes.get(path);
    if (n === undefined) {
      n = nextControlIno;
      nextControlIno = nextControlIno + 1 >= CONTROL_INODES ? 2 : nextControlIno + 1;
      controlInodes.set(path, n);
    }
    return n;
  };
  const base = { uid: owner.uid, gid: owner.gid, rdev: 0, blksize: 4096, atime: time, mtime: time, ctime: time };
  const dirStat = (path: string): StatInfo => ({ ...base, mode: 0o040755, size: 4096, nlink: 2, ino: ino(path), blocks: 0 });
  const fileStat = (path: string, size: number): StatInfo => ({ ...base, mode: 0o100444, size, nlink: 1, ino: ino(path), blocks: Math.ceil(size / 512) });

  /** The layer, without a promise when it is already resolved (every lookup inside a tree). */
  const withLayer = (p: { ref: string; key: string }, fail: (errno: number) => void, then: (layer: StoreLayer) => void): void => {
    const ready = store.peek(p.ref, p.key);
    if (ready) return then(ready);
    store.lookup(p.ref, p.key).then(then, (e: unknown) => {
      if (!(e instanceof StoreMiss)) log.warn({ err: e, ref: p.ref, key: p.key }, 'layer lookup failed');
      fail(Errno.ENOENT);
    });
  };

  /** Answers a use or release once the count is durable; ENOENT either way (c/storage only warns about any other answer). */
  const counted = (p: { ref: string; key: string }, what: 'use' | 'release', done: Promise<void>, cb: (err: number) => void): void => {
    done.then(
      () => cb(Errno.ENOENT),
      (err: unknown) => {
        log.error({ err, image: p.ref, layer: p.key }, `${what} counted in memory only: the use-count journal cannot be written`);
        cb(Errno.ENOENT);
      },
    );
  };

  const diffOf = (layer: StoreLayer): FuseOperations => {
    const c = layer.content;
    let ops = diffOps.get(c);
    if (!ops) {
      ops = treeOperations(c.diff, { read: (node, o, l, into) => c.readInto(node.entry, o, l, into), wholeFile: (node) => c.wholeFile(node.entry) }, c.inoBase, idMap, log, () => ({ layer: c.descriptor.digest }));
      diffOps.set(c, ops);
    }
    return ops;
  };

  /** Runs `then` with the operations of the tree a path is in. */
  const withTree = (p: TreePath, fail: (errno: number) => void, then: (ops: FuseOperations) => void): void =>
    withLayer(p, fail, (layer) => {
      if (p.tree === 'diff') return then(diffOf(layer));
      const ready = chainOps.get(layer);
      if (ready) return then(ready);
      store.chainOf(layer).then(
        (chain) => {
          let ops = chainOps.get(layer);
          if (!ops) {
            ops = treeOperations(
              chain.tree,
              { read: (node, o, l, into) => chain.contents[node.layer]!.readInto(node.entry, o, l, into), wholeFile: (node) => chain.contents[node.layer]?.wholeFile(node.entry) ?? Promise.resolve(undefined) },
              chain.inoBase, idMap, log, (node) => ({ layer: chain.contents[node.layer]?.descriptor.digest }));
            chainOps.set(layer, ops);
          }
          then(ops);
        },
        (e: unknown) => {
          log.info({ ref: p.ref, key: p.key, reason: (e as Error).message }, 'no chain view for this layer');
          fail(Errno.ENOENT);
        },
      );
    });

  const imageFile = (p: Extract<StorePath, { kind: 'imageFile' }>, fail: (errno: number) => void, then: (data: Buffer) => void): void => {
    store.image(p.ref).then(
      (img) => then(p.file === 'manifest' ? img.manifestBytes : img.configBytes),
      (e: unknown) => {
        log.info({ ref: p.ref, reason: (e as Error).message }, 'cannot resolve image');
        fail(Errno.ENOENT);
      },
    );
  };

  const ops: FuseOperations = {
    getattr(path, cb) {
      const p = parseStorePath(path);
      switch (p.kind) {
        case 'root':
        case 'image':
        case 'layer':
          return cb(0, dirStat(path));
        case 'imageFile':
          return imageFile(p, cb, (data) => cb(0, fileStat(path, data.length)));
        case 'layerFile':
          return withLayer(p, cb, (layer) => cb(0, fileStat(path, p.file === 'info' ? layer.infoBytes.length : layer.content.descriptor.size)));
        case 'tree':
          return withTree(p, cb, (tops) => tops.getattr(p.sub, cb));
        default:
          return cb(Errno.ENOENT);
      }
    },
    fgetattr(path, _fd, cb) {
      ops.getattr(path, cb);
    },
    readdir(path, cb) {
      const p = parseStorePath(path);
      switch (p.kind) {
        case 'root':
          return cb(0, ['.', '..', ...store.refs().map(encodeRef)]);
        case 'image':
          return cb(0, ['.', '..', 'manifest', 'config', ...store.known().filter((l) => l.ref === p.ref).map((l) => l.key)]);
        case 'layer':
          return withLayer(p, () => cb(0, ['.', '..']), () => cb(0, ['.', '..', 'diff', 'info', 'blob', 'chain']));
        case 'tree':
          return withTree(p, cb, (tops) => tops.readdir(p.sub, cb));
        default:
          return cb(Errno.ENOENT);
      }
    },
    readlink(path, cb) {
      const p = parseStorePath(path);
      if (p.kind !== 'tree') return cb(Errno.EINVAL);
      withTree(p, cb, (tops) => tops.readlink(p.sub, cb));
    },
    getxattr(path, name, cb) {
      const p = parseStorePath(path);
      if (p.kind !== 'tree') return cb(Errno.ENODATA);
      withTree(p, cb, (tops) => tops.getxattr(p.sub, name, cb));
    },
    listxattr(path, cb) {
      const p = parseStorePath(path);
      if (p.kind !== 'tree') return cb(0, []);
      withTree(p, cb, (tops) => tops.listxattr(p.sub, cb));
    },
    statfs(_path, cb) {
      const info: StatfsInfo = { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 };
      cb(0, info);
    },
    access(path, mode, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, cb, (tops) => tops.access(p.sub, mode, cb));
      if (p.kind === 'invalid' || p.kind === 'use') return cb(Errno.ENOENT);
      // Creating `use` in a layer directory is the one write the store accepts.
      if (mode & W_OK && p.kind !== 'layer') return cb(Errno.EROFS);
      if (p.kind === 'layerFile') return withLayer(p, cb, () => cb(0));
      cb(0);
    },
    open(path, flags, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, cb, (tops) => tops.open(p.sub, flags, cb));
      if (p.kind !== 'imageFile' && p.kind !== 'layerFile') return cb(p.kind === 'invalid' || p.kind === 'use' ? Errno.ENOENT : Errno.EISDIR);
      if ((flags & O_ACCMODE) !== 0) return cb(Errno.EROFS);
      const opened = (h: Handle): void => {
        const fh = nextHandle++;
        handles.set(fh, h);
        cb(0, fh);
      };
      if (p.kind === 'imageFile') return imageFile(p, cb, (data) => opened({ data }));
      withLayer(p, cb, (layer) => opened(p.file === 'info' ? { data: layer.infoBytes } : { blob: new BlobFileReader(layer.content) }));
    },
    opendir(path, flags, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, cb, (tops) => tops.opendir(p.sub, flags, cb));
      cb(p.kind === 'root' || p.kind === 'image' || p.kind === 'layer' ? 0 : Errno.ENOTDIR, 0);
    },
    read(path, fd, buf, len, pos, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, () => cb(Errno.EIO), (tops) => tops.read(p.sub, fd, buf, len, pos, cb));
      const h = handles.get(fd);
      if (!h) return cb(Errno.EBADF);
      if ('data' in h) {
        if (pos >= h.data.length) return cb(0);
        return cb(h.data.copy(buf, 0, pos, Math.min(h.data.length, pos + len)));
      }
      h.blob.read(pos, len).then(
        (data) => cb(data.copy(buf, 0, 0, Math.min(len, data.length))),
        (err: unknown) => {
          log.error({ err, path, ...(p.kind === 'layerFile' ? { image: p.ref, layer: p.key } : {}), offset: pos, length: len }, 'blob read failed: answering EIO');
          cb(Errno.EIO);
        },
      );
    },
    backingFile(path, fd, cb) {
      const p = parseStorePath(path);
      if (p.kind !== 'tree') return cb(undefined);
      withTree(p, () => cb(undefined), (tops) => (tops.backingFile ? tops.backingFile(p.sub, fd, cb) : cb(undefined)));
    },
    release(path, fd, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, cb, (tops) => tops.release(p.sub, fd, cb));
      handles.delete(fd);
      cb(0);
    },
    releasedir(path, fd, cb) {
      const p = parseStorePath(path);
      if (p.kind === 'tree') return withTree(p, cb, (tops) => tops.releasedir(p.sub, fd, cb));
      cb(0);
    },
    /** `use`: containers/storage creates <key>/use; the answer ENOENT tells it the use was counted. */
    create(path: string, _mode: number, cb: (err: number, fd?: number) => void) {
      const p = parseStorePath(path);
      if (p.kind !== 'use') return cb(p.kind === 'invalid' ? Errno.ENOENT : Errno.EROFS);
      counted(p, 'use', store.use(p.ref, p.key), cb);
    },
    /** Release: containers/storage removes <key>; the answer ENOENT tells it the release was counted (the directory stays). */
    rmdir(path: string, cb: (err: number) => void) {
      const p = parseStorePath(path);
      if (p.kind !== 'layer') return cb(p.kind === 'invalid' ? Errno.ENOENT : Errno.EROFS);
      counted(p, 'release', store.release(p.ref, p.key), cb);
    },
    unlink(path: string, cb: (err: number) => void) {
      const p = parseStorePath(path);
      cb(p.kind === 'use' || p.kind === 'invalid' ? Errno.ENOENT : Errno.EROFS);
    },
  };
  const readOnly = (...args: unknown[]): void => (args[args.length - 1] as (e: number) => void)(Errno.EROFS);
  for (const name of ['write', 'truncate', 'ftruncate', 'utimens', 'chown', 'chmod', 'mknod', 'setxattr', 'removexattr', 'rename', 'link', 'symlink', 'mkdir']) {
    ops[name] = readOnly;
  }
  return ops;
}
