/**
 * Ground truth for images built by buildImage, computed from the FileSpec list itself (not
 * by any tocfs reader): the same ExpectedEntry shape as the corpus's expected.json, so
 * compareView and the other corpus comparisons apply to images tocfs writes.
 *
 * KINDS_LAYER is one layer holding every kind of entry a user can see — with every parent
 * directory stated, so its entries are also the merged view of an image of that one layer.
 */
import { createHash } from 'node:crypto';
import type { ExpectedEntry } from './corpus.js';
import { concatContent, seededBytes, seededContent, zeroContent, type Content, type FileSpec } from './images.js';

/** A well-formed VFS_CAP_REVISION_2 value (cap_net_bind_service+ep): the kernel refuses to read back a malformed one. */
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
export const KINDS_LONG_PATH = 'usr/share/' + 'a-directory-name-well-past-ustar-'.repeat(4) + '/file-with-a-long-name.txt';

export const KINDS_LAYER: FileSpec[] = [
  { path: 'etc', type: 'dir' },
  { path: 'etc/hello.txt', content: 'hello world\n', mtime: 1700000000.123456 },
  { path: 'etc/xattr.txt', content: 'with xattrs\n', xattrs: { 'user.comment': 'tocfs test', 'security.capability': CAP } },
  { path: 'etc/empty', content: '' },
  { path: 'etc/old', content: 'from 1969\n', mtime: -86400.75 },
  { path: 'tmp', type: 'dir', mode: 0o1777 },
  { path: 'home', type: 'dir' },
  { path: 'home/alice', type: 'dir', uid: 1000, gid: 1000, uname: 'alice', gname: 'alice', mode: 0o700 },
  { path: 'home/alice/notes', content: 'owned by alice\n', uid: 1000, gid: 1000, uname: 'alice', gname: 'alice', mode: 0o600 },
  { path: 'home/big-id', content: 'id beyond ustar\n', uid: 3_000_000, gid: 3_000_001 },
  { path: 'usr', type: 'dir' },
  { path: 'usr/bin', type: 'dir' },
  { path: 'usr/bin/tool', content: seededBytes('kinds-tool', 5000), mode: 0o4755 },
  // A hard link's header carries its target's metadata, as tar writes it (extractors apply it to the shared inode).
  { path: 'usr/bin/tool-hardlink', type: 'hardlink', linkName: 'usr/bin/tool', mode: 0o4755 },
  { path: 'usr/bin/tool-symlink', type: 'symlink', linkName: 'tool' },
  { path: 'usr/bin/abs-symlink', type: 'symlink', linkName: '/etc/hello.txt' },
  { path: 'usr/lib', type: 'dir' },
  { path: 'usr/lib/multi-chunk.bin', content: seededContent('kinds-multi', 1_500_000) },
  { path: 'usr/lib/holes.img', content: concatContent(seededContent('kinds-h1', 70_000), zeroContent(1024 * 1024), seededContent('kinds-h2', 30_000)) },
  { path: 'usr/share', type: 'dir' },
  { path: KINDS_LONG_PATH.slice(0, KINDS_LONG_PATH.lastIndexOf('/')), type: 'dir' },
  { path: KINDS_LONG_PATH, content: 'long path\n' },
  { path: 'usr/share/naïve-日本語.txt', content: 'non-ascii\n' },
  { path: 'dev', type: 'dir' },
  { path: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
  { path: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0, mode: 0o660 },
  { path: 'dev/fifo', type: 'fifo', mode: 0o644 },
];

/** The name as a tar reader reports it: no leading `./` or `/`, no trailing `/`. */
export function specPath(p: string): string {
  return p.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
}

/** The bytes of a content (small and medium contents only: held in memory). */
export async function contentBytes(c: Content | undefined): Promise<Buffer> {
  if (c === undefined) return Buffer.alloc(0);
  if (typeof c === 'string') return Buffer.from(c);
  if (Buffer.isBuffer(c)) return c;
  const parts: Buffer[] = [];
  for await (const b of c.chunks()) parts.push(b);
  return Buffer.concat(parts);
}

/** The entries of a layer built from `spec`, as expected.json would list them (in archive order). */
export async function expectedEntries(spec: FileSpec[]): Promise<ExpectedEntry[]> {
  const out: ExpectedEntry[] = [];
  for (const f of spec) {
    const type = f.type ?? 'reg';
    const mtime = f.mtime ?? 1_700_000_000;
    const x: ExpectedEntry = {
      path: specPath(f.path),
      type,
      mode: f.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: f.uid ?? 0,
      gid: f.gid ?? 0,
      size: 0,
      mtime,
      ...(Number.isInteger(mtime) ? {} : { mtime_pax: String(mtime) }),
      ...(f.uname ? { uname: f.uname } : {}),
      ...(f.gname ? { gname: f.gname } : {}),
    };
    if (type === 'reg') {
      const data = await contentBytes(f.content);
      x.size = data.length;
      x.sha256 = createHash('sha256').update(data).digest('hex');
    }
    if (type === 'symlink') x.linkname = f.linkName!;
    if (type === 'hardlink') {
      // As expected.json gives it: the target's size and content digest.
      x.link_path = specPath(f.linkName!);
      const target = out.find((t) => t.path === x.link_path);
      if (target) Object.assign(x, { size: target.size, ...(target.sha256 ? { sha256: target.sha256 } : {}) });
    }
    if (type === 'char' || type === 'block') Object.assign(x, { devmajor: f.devMajor ?? 0, devminor: f.devMinor ?? 0 });
    if (f.xattrs) x.xattrs = Object.fromEntries(Object.entries(f.xattrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    if (/(^|\/)\.wh\.\.wh\.\.opq$/.test(x.path)) x.whiteout = 'opaque';
    else if (/(^|\/)\.wh\.[^/]+$/.test(x.path)) x.whiteout = 'file';
    out.push(x);
  }
  return out;
}

/** sha256 (bare hex, as expected.json gives it) of a spec file's content. */
export async function specSha256(spec: FileSpec[], path: string): Promise<string> {
  const f = spec.find((s) => specPath(s.path) === path);
  if (!f) throw new Error(`test setup: no ${path} in the spec`);
  return createHash('sha256').update(await contentBytes(f.content)).digest('hex');
}
