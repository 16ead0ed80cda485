/**
 * Compares a filesystem view (an FsTree, or a FUSE mount walked with node fs) with the
 * corpus ground truth (expected.json `merged` or a layer's `entries`), field by field,
 * returning readable differences instead of failing on the first one.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { FsTree } from '../../src/image/tree.js';
import type { ExpectedEntry } from './corpus.js';

/** What a user can observe of one name in a filesystem. */
export interface ViewEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  link?: string;
  dev?: [number, number];
  /** Inode identity: names that share one are hard links of each other. */
  inode: number | bigint;
  nlink: number;
  layer?: number;
  implicit?: boolean;
}

export function treeView(tree: FsTree): ViewEntry[] {
  const out: ViewEntry[] = [];
  for (const { path, node } of tree.walk()) {
    if (path === '') continue;
    const e = node.entry;
    out.push({
      path,
      type: e.type,
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      size: e.type === 'reg' ? e.size : 0,
      mtimeSec: e.mtime.sec,
      mtimeNsec: e.mtime.nsec,
      ...(e.type === 'symlink' ? { link: e.linkName! } : {}),
      ...(e.type === 'char' || e.type === 'block' ? { dev: [e.devMajor ?? 0, e.devMinor ?? 0] as [number, number] } : {}),
      inode: node.ino,
      nlink: node.nlink,
      layer: node.layer,
      implicit: node.implicit,
    });
  }
  return out;
}

function typeOfMode(mode: number): string {
  switch (mode & 0o170000) {
    case 0o040000: return 'dir';
    case 0o100000: return 'reg';
    case 0o120000: return 'symlink';
    case 0o020000: return 'char';
    case 0o060000: return 'block';
    case 0o010000: return 'fifo';
    default: return `mode ${mode.toString(8)}`;
  }
}

/** Walks a mounted directory with lstat/readdir/readlink (bigint stats: exact nanoseconds). */
export async function mountView(root: string): Promise<ViewEntry[]> {
  const out: ViewEntry[] = [];
  const visit = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(join(root, path), { bigint: true });
      const type = typeOfMode(Number(st.mode));
      const ns = st.mtimeNs;
      let sec = ns / 1_000_000_000n;
      let nsec = ns % 1_000_000_000n;
      if (nsec < 0n) {
        nsec += 1_000_000_000n;
        sec -= 1n;
      }
      out.push({
        path,
        type,
        mode: Number(st.mode) & 0o7777,
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'reg' ? Number(st.size) : 0,
        mtimeSec: Number(sec),
        mtimeNsec: Number(nsec),
        ...(type === 'symlink' ? { link: await readlink(join(root, path)) } : {}),
        ...(type === 'char' || type === 'block' ? { dev: [Number(st.rdev >> 8n) & 0xfff, Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & 0xfff00n))] as [number, number] } : {}),
        inode: st.ino,
        nlink: Number(st.nlink),
      });
      if (type === 'dir') await visit(path);
    }
  };
  await visit('');
  return out;
}

/** Exact seconds/nanoseconds of an expected entry (from the pax string when there is one). */
export function expectedMtime(x: ExpectedEntry): { sec: number; nsec: number } {
  if (x.mtime_pax !== undefined) {
    const negative = x.mtime_pax.startsWith('-');
    const [s, f = ''] = x.mtime_pax.replace('-', '').split('.');
    const frac = Number(f.padEnd(9, '0').slice(0, 9));
    return negative ? { sec: -Number(s) - (frac > 0 ? 1 : 0), nsec: frac > 0 ? 1e9 - frac : 0 } : { sec: Number(s), nsec: frac };
  }
  const sec = Math.floor(x.mtime);
  return { sec, nsec: Math.round((x.mtime - sec) * 1e9) };
}

export interface CompareOptions {
  /** eStargz TOCs keep whole seconds only: compare mtimes to the second (within 0.5 s). */
  wholeSecondTimes?: boolean;
  /** Compare `layer_index` (merged views built from an FsTree). */
  layers?: boolean;
  /** Compare xattrs: name -> base64 value, from a per-path source. */
  xattrs?: (path: string) => Promise<Record<string, string>> | Record<string, string>;
}

/** Differences between a view and expected entries; [] when they agree. Metadata entries are not part of a view. */
export async function compareView(got: ViewEntry[], expected: ExpectedEntry[], options: CompareOptions = {}): Promise<string[]> {
  const want = expected.filter((x) => !x.meta);
  const problems: string[] = [];
  const byPath = new Map(got.map((g) => [g.path, g]));
  const wantByPath = new Map(want.map((x) => [x.path, x]));
  const missing = want.filter((x) => !byPath.has(x.path)).map((x) => x.path);
  const extra = got.filter((g) => !wantByPath.has(g.path)).map((g) => g.path);
  if (missing.length) problems.push(`missing: ${missing.join(', ')}`);
  if (extra.length) problems.push(`unexpected: ${extra.join(', ')}`);
  // Inodes shared by several names, as groups of paths.
  const namesOf = new Map<number | bigint, string[]>();
  for (const g of got) if (g.type !== 'dir') namesOf.set(g.inode, [...(namesOf.get(g.inode) ?? []), g.path]);
  const groups = expectedLinkGroups(want);
  for (const x of want) {
    const g = byPath.get(x.path);
    if (!g) continue;
    const bad = (field: string, a: unknown, b: unknown): void => {
      problems.push(`${x.path}: ${field}: got ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`);
    };
    // A hard link is its target's inode: type, content and metadata come from the target.
    const src = x.type === 'hardlink' ? linkTarget(x, wantByPath) : x;
    const type = src.type;
    if (g.type !== type) bad('type', g.type, type);
    if (g.mode !== src.mode) bad('mode', g.mode, src.mode);
    if (g.uid !== src.uid) bad('uid', g.uid, src.uid);
    if (g.gid !== src.gid) bad('gid', g.gid, src.gid);
    if (type === 'reg' && g.size !== src.size) bad('size', g.size, src.size);
    const m = expectedMtime(src);
    if (options.wholeSecondTimes) {
      if (g.mtimeNsec !== 0 || Math.abs(g.mtimeSec - src.mtime) > 0.5) bad('mtime', [g.mtimeSec, g.mtimeNsec], src.mtime);
    } else if (g.mtimeSec !== m.sec || g.mtimeNsec !== m.nsec) bad('mtime', [g.mtimeSec, g.mtimeNsec], [m.sec, m.nsec]);
    if (type === 'symlink' && g.link !== src.linkname) bad('link', g.link, src.linkname);
    if ((type === 'char' || type === 'block') && (g.dev?.[0] !== src.devmajor || g.dev?.[1] !== src.devminor)) bad('device', g.dev, [src.devmajor, src.devminor]);
    if (options.layers && x.layer_index !== undefined && g.layer !== x.layer_index) bad('layer', g.layer, x.layer_index);
    if ((g.implicit ?? false) !== (x.implicit ?? false) && g.implicit !== undefined) bad('implicit', g.implicit, x.implicit ?? false);
    if (g.type !== 'dir') {
      const group = (namesOf.get(g.inode) ?? []).slice().sort();
      const wantGroup = groups.get(x.path) ?? [x.path];
      if (JSON.stringify(group) !== JSON.stringify(wantGroup)) bad('names sharing the inode', group, wantGroup);
      if (g.nlink !== wantGroup.length) bad('nlink', g.nlink, wantGroup.length);
    }
    if (options.xattrs) {
      const xa = await options.xattrs(x.path);
      if (JSON.stringify(sortKeys(xa)) !== JSON.stringify(sortKeys(src.xattrs ?? {}))) bad('xattrs', xa, src.xattrs ?? {});
    }
  }
  return problems;
}

function linkTarget(x: ExpectedEntry, byPath: Map<string, ExpectedEntry>): ExpectedEntry {
  let t: ExpectedEntry | undefined = x;
  for (let hops = 0; t && t.type === 'hardlink' && hops < 64; hops++) t = byPath.get(t.hardlink_to ?? t.link_path ?? '');
  // The merged view may have lost the target to a later whiteout; the link then carries the target's fields itself.
  return t && t.type !== 'hardlink' ? t : x;
}

/** Path -> sorted names of its inode: `hardlink_group` in merged views, derived from `link_path` in layer entries. */
function expectedLinkGroups(want: ExpectedEntry[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  if (want.some((x) => x.hardlink_group !== undefined)) {
    for (const x of want) if (Array.isArray(x.hardlink_group)) groups.set(x.path, [...x.hardlink_group].sort());
    return groups;
  }
  const byPath = new Map(want.map((x) => [x.path, x]));
  const members = new Map<string, string[]>();
  for (const x of want) {
    if (x.type === 'dir') continue;
    const root = linkTarget(x, byPath).path;
    members.set(root, [...(members.get(root) ?? []), x.path]);
  }
  for (const names of members.values()) for (const n of names) groups.set(n, [...names].sort());
  return groups;
}

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
