/**
 * `tocfs ls IMAGE [PATH]`: a directory (or one name) of an image's merged root filesystem,
 * or of one layer's own tree with `--layer`, without mounting and without reading contents.
 */
import type { Argv, CommandModule } from 'yargs';
import { TocfsError } from '../../errors.js';
import type { Timestamp } from '../../formats/toc.js';
import { statOf } from '../../fs/stat.js';
import type { OpenedImage } from '../../image/image.js';
import { sortedNames, type FsNode } from '../../image/tree.js';
import { withExamples } from '../help.js';
import { openImageOptions, withCacheOptions, withImageOptions } from '../options.js';

interface LsArgs {
  image: string;
  path: string;
  long: boolean;
  json: boolean;
  layer?: string;
  'tls-verify'?: boolean;
  platform?: string;
}

/** One name in `--json` output. */
export interface LsEntry {
  name: string;
  path: string;
  type: string;
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  /** As ls -l shows it, e.g. `-rwsr-xr-x`. */
  modeString: string;
  uid: number;
  gid: number;
  user: string | null;
  group: string | null;
  size: number;
  /** RFC 3339 with nanoseconds, UTC. */
  mtime: string;
  mtimeSec: number;
  mtimeNsec: number;
  nlink: number;
  ino: number;
  link: string | null;
  device: { major: number; minor: number } | null;
  xattrs: Record<string, string>;
  /** Digest of the layer that provides the entry. */
  layer: string;
}

const TYPE_CHAR: Record<string, string> = { dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', reg: '-' };

export function modeString(type: string, mode: number): string {
  const rwx = (bits: number, special: boolean, specialChar: string): string =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? specialChar : specialChar.toUpperCase()) : bits & 1 ? 'x' : '-');
  return (
    (TYPE_CHAR[type] ?? '?') +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't')
  );
}

/** `2023-11-14T22:13:20.123456789Z` (also before 1970). */
export function formatTime(t: Timestamp): string {
  const iso = new Date(t.sec * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const base = iso.startsWith('+') || iso.startsWith('-') ? iso.slice(0, iso.indexOf('.')) : iso.slice(0, 19);
  return t.nsec === 0 ? `${base}Z` : `${base}.${String(t.nsec).padStart(9, '0')}Z`;
}

function describe(image: OpenedImage, name: string, path: string, node: FsNode): LsEntry {
  const e = node.entry;
  const st = statOf(node);
  return {
    name,
    path: `/${path}`,
    type: e.type,
    mode: e.mode & 0o7777,
    modeString: modeString(e.type, e.mode),
    uid: e.uid,
    gid: e.gid,
    user: e.userName || null,
    group: e.groupName || null,
    size: e.type === 'dir' ? 0 : st.size,
    mtime: formatTime(e.mtime),
    mtimeSec: e.mtime.sec,
    mtimeNsec: e.mtime.nsec,
    nlink: node.nlink,
    ino: node.ino,
    link: e.type === 'symlink' ? e.linkName ?? '' : null,
    device: e.type === 'char' || e.type === 'block' ? { major: e.devMajor ?? 0, minor: e.devMinor ?? 0 } : null,
    xattrs: Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')])),
    layer: image.layers[node.layer]?.descriptor.digest ?? '',
  };
}

function longLines(entries: LsEntry[]): string {
  const rows = entries.map((x) => [
    x.modeString,
    String(x.nlink),
    x.user ?? String(x.uid),
    x.group ?? String(x.gid),
    x.device ? `${x.device.major}, ${x.device.minor}` : String(x.size),
    x.mtime,
    x.link !== null ? `${x.name} -> ${x.link}` : x.name,
  ]);
  const widths = [1, 2, 3, 4].map((c) => Math.max(0, ...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) => [r[0], r[1]!.padStart(widths[0]!), r[2]!.padEnd(widths[1]!), r[3]!.padEnd(widths[2]!), r[4]!.padStart(widths[3]!), r[5], r[6]].join(' '))
    .map((l) => `${l}\n`)
    .join('');
}

const RESOLVE_ERRORS = { ENOENT: 'no such file or directory', ENOTDIR: 'not a directory', ELOOP: 'too many levels of symbolic links' } as const;

/** Where in which image (and layer) a path was looked up, for error messages. */
export function whereIn(image: OpenedImage, layer?: string): string {
  return `${image.reference}${layer ? ` layer ${layer}` : ''}`;
}

/** The error for a path that does not resolve inside an image. */
export function notFound(image: OpenedImage, path: string, error: keyof typeof RESOLVE_ERRORS, layer?: string): TocfsError {
  return new TocfsError(`${path}: ${RESOLVE_ERRORS[error]} in ${whereIn(image, layer)}`);
}

/** The entries `ls` shows for a path: a directory's children, or the name itself. */
export function listPath(image: OpenedImage, path: string, layer?: string): LsEntry[] {
  const tree = image.tree(layer);
  const found = tree.resolve(path, false);
  if ('error' in found) throw notFound(image, path, found.error, layer);
  let { node } = found;
  let at = found.path;
  // Like ls: a symlink to a directory named as the argument is listed through.
  if (node.entry.type === 'symlink') {
    const through = tree.resolve(path, true);
    if (!('error' in through) && through.node.children) ({ node, path: at } = through);
  }
  if (!node.children) return [describe(image, at.slice(at.lastIndexOf('/') + 1) || '/', at, node)];
  return sortedNames(node.children).map((name) => describe(image, name, at === '' ? name : `${at}/${name}`, node.children!.get(name)!));
}

export const lsCommand: CommandModule<object, LsArgs> = {
  command: 'ls <image> [path]',
  describe: 'List a directory of an image (merged view, or one layer with --layer) without mounting it',
  builder: (y: Argv) =>
    withExamples(
      withCacheOptions(withImageOptions(y))
        .positional('image', { type: 'string', demandOption: true, describe: 'oci:DIR[:TAG] or [docker://]HOST/REPO[:TAG][@DIGEST]' })
        .positional('path', { type: 'string', default: '/', describe: 'Directory or file inside the image' })
        .option('long', { alias: 'l', type: 'boolean', default: false, describe: 'Mode, links, owner, size, mtime and link target, like ls -l' })
        .option('json', { type: 'boolean', default: false, describe: 'Machine-readable output (one object per name)' })
        .option('layer', { type: 'string', describe: 'List this layer\'s own tree (digest or unique prefix) instead of the merged view; whiteouts show as .wh.* files' }) as unknown as Argv<LsArgs>,
      [
        ['$0 ls oci:./myimage /etc', 'Names in /etc of the merged image'],
        ['$0 ls -l docker://quay.io/podman/hello /', 'Long listing of the root'],
        ['$0 ls --layer sha256:0123abcd oci:./myimage /', 'What one layer adds, changes and whites out'],
      ],
    ),
  handler: async (argv) => {
    const { openImage } = await import('../../image/image.js');
    const image = await openImage(argv.image, openImageOptions(argv));
    try {
      const entries = listPath(image, argv.path, argv.layer);
      if (argv.json) process.stdout.write(JSON.stringify(entries, null, 2) + '\n');
      else if (argv.long) process.stdout.write(longLines(entries));
      else process.stdout.write(entries.map((e) => `${e.name}\n`).join(''));
    } finally {
      await image.close();
    }
  },
};
