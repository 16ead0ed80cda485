/**
 * A two-layer image exercising the overlay rules: a whiteout, an opaque directory, a file
 * replaced by a directory and a directory by a symlink, a replaced hard-link target, a path
 * whose parents no layer states, and a pre-1970 fractional mtime. Built by buildImage in any
 * format, so every reader and writer meets the same cases.
 */
import type { FileSpec } from './images.js';

export const OVERLAY_LAYERS: FileSpec[][] = [
  [
    { path: 'a', type: 'dir', mode: 0o755 },
    { path: 'a/keep', content: 'keep v0\n', mode: 0o644 },
    { path: 'a/gone', content: 'whited out\n' },
    { path: 'a/hl', type: 'hardlink', linkName: 'a/keep' },
    { path: 'd', type: 'dir', mode: 0o755 },
    { path: 'd/old', content: 'hidden by the opaque dir\n' },
    { path: 'd/sub', type: 'dir', mode: 0o755 },
    { path: 'd/sub/x', content: 'also hidden\n' },
    { path: 'f', content: 'a file that becomes a directory\n' },
    { path: 'g', type: 'dir', mode: 0o755 },
    { path: 'g/inner', content: 'gone with g\n' },
    { path: 'ln', type: 'symlink', linkName: 'a/keep' },
  ],
  [
    { path: 'a', type: 'dir', mode: 0o750, mtime: 1_700_000_500 },
    { path: 'a/.wh.gone', content: '' },
    { path: 'a/keep', content: 'keep v1\n', mode: 0o600, uid: 1000, gid: 1000, mtime: -0.75 },
    { path: 'd', type: 'dir', mode: 0o755 },
    { path: 'd/.wh..wh..opq', content: '' },
    { path: 'd/new', content: 'new in the opaque dir\n' },
    { path: 'f', type: 'dir', mode: 0o755 },
    { path: 'f/child', content: 'child\n' },
    { path: 'g', type: 'symlink', linkName: '/a' },
    { path: 'deep/er/file', content: 'parents are implicit\n' },
  ],
];

/** The merged view: path -> content (regular files), `dir`, or `-> target` (symlinks). */
export const OVERLAY_MERGED: Record<string, string> = {
  a: 'dir',
  'a/hl': 'keep v0\n', // the hard link keeps the inode the replaced target had
  'a/keep': 'keep v1\n',
  d: 'dir',
  'd/new': 'new in the opaque dir\n',
  deep: 'dir',
  'deep/er': 'dir',
  'deep/er/file': 'parents are implicit\n',
  f: 'dir',
  'f/child': 'child\n',
  g: '-> /a',
  ln: '-> a/keep',
};
