/**
 * What a lazy pull must fetch at least: the layer's TOC plus the compressed frames of the
 * files a command opens. The files come from running the command under strace in a chroot of
 * the image's tree; the frames from the layer's own TOC (tocfs's reader).
 */
import { join, normalize } from 'node:path';
import { lstat, readFile, readlink, stat } from 'node:fs/promises';
import { readLayerToc } from '../../../src/formats/index.js';
import { openImageSource } from '../../../src/image/open.js';
import { run } from './proc.js';

/** Absolute paths the command opened successfully (and the executable itself). */
export async function filesOpenedBy(stage: string, cmd: string[], traceFile: string): Promise<string[]> {
  await run(['strace', '-f', '-qq', '-e', 'trace=open,openat,execve', '-o', traceFile, 'chroot', stage, ...cmd]);
  const opened = new Set<string>();
  for (const line of (await readFile(traceFile, 'utf8')).split('\n')) {
    const m = /(?:open|openat|execve)\((?:AT_FDCWD, )?"([^"]+)"[^)]*\)\s*=\s*(\d+)/.exec(line);
    if (m && m[1]!.startsWith('/')) opened.add(m[1]!);
  }
  // The kernel maps an executable's ELF interpreter itself: strace shows no open of it.
  for (const line of (await readFile(traceFile, 'utf8')).split('\n')) {
    const m = /execve\("([^"]+)".*\)\s*=\s*0$/.exec(line);
    const interp = m && (await elfInterpreter(join(stage, m[1]!)));
    if (interp) opened.add(interp);
  }
  return [...opened];
}

/** PT_INTERP of a 64-bit little-endian ELF file (e.g. /lib64/ld-linux-x86-64.so.2), if it has one. */
async function elfInterpreter(path: string): Promise<string | undefined> {
  const f = await readFile(path).catch(() => undefined);
  if (!f || f.length < 64 || f.readUInt32BE(0) !== 0x7f454c46 || f[4] !== 2 || f[5] !== 1) return undefined;
  const phoff = Number(f.readBigUInt64LE(0x20));
  const phentsize = f.readUInt16LE(0x36);
  const phnum = f.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 40 > f.length || f.readUInt32LE(ph) !== 3) continue;
    const off = Number(f.readBigUInt64LE(ph + 8));
    const size = Number(f.readBigUInt64LE(ph + 32));
    return f.subarray(off, off + size).toString('latin1').replace(/\0.*$/s, '');
  }
  return undefined;
}

/** `p` (absolute, inside the tree at `root`) with every symlink resolved inside that tree. */
async function resolveIn(root: string, p: string, depth = 0): Promise<string> {
  const parts = p.split('/').filter(Boolean);
  let cur = '';
  for (let i = 0; i < parts.length; i++) {
    const next = `${cur}/${parts[i]}`;
    const st = await lstat(join(root, next)).catch(() => undefined);
    if (st?.isSymbolicLink() && depth < 40) {
      const target = await readlink(join(root, next));
      const base = target.startsWith('/') ? target : `${cur}/${target}`;
      return resolveIn(root, normalize(`${base}/${parts.slice(i + 1).join('/')}`), depth + 1);
    }
    cur = next;
  }
  return normalize(cur || '/');
}

/** The regular files among `paths` (absolute, inside `root`), symlinks resolved, relative to the root. */
export async function realPathsIn(root: string, paths: string[]): Promise<string[]> {
  const out = new Set<string>();
  for (const p of paths) {
    const real = await resolveIn(root, p);
    if (await stat(join(root, real)).then((s) => s.isFile(), () => false)) out.add(real.replace(/^\/+/, ''));
  }
  return [...out];
}

export interface LazyFloor {
  tocBytes: number;
  frameBytes: number;
  files: number;
}

/** TOC + compressed frames of `paths` (relative, symlinks resolved: see realPathsIn) in the layout's single layer. */
export async function lazyFloor(layoutDir: string, paths: string[]): Promise<LazyFloor> {
  const source = await openImageSource(`oci:${layoutDir}:latest`);
  try {
    const image = await source.resolve();
    const desc = image.layers[0]!;
    const toc = await readLayerToc(desc, source.blob(desc));
    const byPath = new Map(toc.entries.map((e) => [e.path, e]));
    const seen = new Set<string>();
    let frameBytes = 0;
    for (const p of paths) {
      let e = byPath.get(p);
      if (e?.type === 'hardlink' && e.linkName) e = byPath.get(e.linkName);
      if (!e || e.type !== 'reg' || seen.has(e.path)) continue;
      seen.add(e.path);
      const ranges = new Set<number>();
      for (const c of e.chunks) {
        if (c.zeros || ranges.has(c.compressedOffset)) continue;
        ranges.add(c.compressedOffset);
        frameBytes += c.compressedEnd - c.compressedOffset;
      }
    }
    return { tocBytes: toc.tocCompressedLength, frameBytes, files: seen.size };
  } finally {
    await source.close();
  }
}
