/** The stat(2) answer for a tree node: what FUSE getattr and `tocfs ls -l` show. */
import type { FsNode } from '../image/tree.js';
import type { StatInfo } from './fuse-binding.js';

const TYPE_BITS: Record<string, number> = {
  reg: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

const DIR_SIZE = 4096;

/** Linux makedev(). */
function makedev(major: number, minor: number): number {
  return ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12);
}

export function statOf(node: FsNode, blockSize = 4096): StatInfo {
  const e = node.entry;
  const size = e.type === 'reg' ? e.size : e.type === 'symlink' ? Buffer.byteLength(e.linkName ?? '') : e.type === 'dir' ? DIR_SIZE : 0;
  return {
    mode: (TYPE_BITS[e.type] ?? 0o100000) | (e.mode & 0o7777),
    uid: e.uid,
    gid: e.gid,
    size,
    nlink: node.nlink,
    ino: node.ino,
    rdev: e.type === 'char' || e.type === 'block' ? makedev(e.devMajor ?? 0, e.devMinor ?? 0) : 0,
    blksize: blockSize,
    blocks: Math.ceil(size / 512),
    atime: e.atime ?? e.mtime,
    mtime: e.mtime,
    ctime: e.ctime ?? e.mtime,
  };
}
