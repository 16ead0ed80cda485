/**
 * The ceiling of the FUSE binding: a bare in-memory filesystem holding one file, mounted with
 * exactly the options tocfs mounts with (src/fs/mount.ts) and answering every read straight
 * from a Buffer. Prints "ready" once mounted; unmounts on SIGTERM/SIGINT.
 *
 *   node --import tsx scripts/bench/memfs.ts FILE MOUNTPOINT
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { pino } from 'pino';
import { Errno, type FuseOperations, type StatInfo } from '../../src/fs/fuse-binding.js';
import { mountFs } from '../../src/fs/mount.js';

const [file, mountpoint] = process.argv.slice(2);
if (!file || !mountpoint) {
  console.error('usage: memfs.ts FILE MOUNTPOINT');
  process.exit(2);
}
const data = await readFile(file);
const name = '/' + basename(file);
const now = { sec: Math.floor(Date.now() / 1000), nsec: 0 };
const stat = (mode: number, size: number, ino: number): StatInfo => ({
  mode, uid: 0, gid: 0, size, nlink: 1, ino, rdev: 0, blksize: 4096, blocks: Math.ceil(size / 512), atime: now, mtime: now, ctime: now,
});
const dirStat = stat(0o40755, 4096, 1);
const fileStat = stat(0o100644, data.length, 2);
const ok = (cb: (err: number) => void): void => process.nextTick(cb, 0);

const ops: FuseOperations = {
  getattr: (path, cb) => process.nextTick(() => (path === '/' ? cb(0, dirStat) : path === name ? cb(0, fileStat) : cb(Errno.ENOENT))),
  readdir: (path, cb) => process.nextTick(() => (path === '/' ? cb(0, [name.slice(1)], [fileStat]) : cb(Errno.ENOTDIR))),
  readlink: (_p, cb) => process.nextTick(cb, Errno.EINVAL),
  getxattr: (_p, _n, cb) => process.nextTick(cb, Errno.ENODATA),
  listxattr: (_p, cb) => process.nextTick(cb, 0, []),
  statfs: (_p, cb) => process.nextTick(cb, 0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 2, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }),
  access: (_p, _m, cb) => ok(cb),
  open: (path, _f, cb) => process.nextTick(() => (path === name ? cb(0, 1) : cb(Errno.ENOENT))),
  opendir: (_p, _f, cb) => process.nextTick(cb, 0, 1),
  read: (_p, _fd, buf, len, pos, cb) => {
    const n = Math.max(0, Math.min(len, data.length - pos));
    if (n > 0) data.copy(buf, 0, pos, pos + n);
    process.nextTick(cb, n);
  },
  release: (_p, _fd, cb) => ok(cb),
  releasedir: (_p, _fd, cb) => ok(cb),
};

const mounted = await mountFs(mountpoint, ops, { label: 'bench-memfs', logger: pino({ level: 'warn' }), session: 'fuse-native' });
console.log('ready');
const stop = (): void => {
  void mounted.unmount().finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
