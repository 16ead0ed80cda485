/**
 * What a lazy pull must fetch at least: the layer's TOC plus the compressed frames of the
 * files a command opens. The files come from running the command under strace in a chroot of
 * the image's tree; the frames from the layer's own TOC (tocfs's reader).
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
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
  return [...opened];
}

export interface LazyFloor {
  tocBytes: number;
  frameBytes: number;
  files: number;
}

/** TOC + compressed frames of `paths` (symlinks followed inside the TOC) in the layout's single layer. */
export async function lazyFloor(layoutDir: string, paths: string[]): Promise<LazyFloor> {
  const source = await openImageSource(`oci:${layoutDir}:latest`);
  try {
    const image = await source.resolve();
    const desc = image.layers[0]!;
    const toc = await readLayerToc(desc, source.blob(desc));
    const byPath = new Map(toc.entries.map((e) => [e.path, e]));
    const resolveLink = (p: string, depth = 0): string => {
      const parts = p.split('/').filter(Boolean);
      for (let i = 1; i <= parts.length && depth < 40; i++) {
        const e = byPath.get(parts.slice(0, i).join('/'));
        if (e?.type === 'symlink' && e.linkName) {
          const base = e.linkName.startsWith('/') ? e.linkName : join('/', ...parts.slice(0, i - 1), e.linkName);
          return resolveLink(join(base, ...parts.slice(i)), depth + 1);
        }
      }
      return parts.join('/');
    };
    const seen = new Set<string>();
    let frameBytes = 0;
    for (const p of paths) {
      let e = byPath.get(resolveLink(p));
      if (e?.type === 'hardlink' && e.linkName) e = byPath.get(e.linkName);
      if (!e || e.type !== 'reg' || seen.has(e.path)) continue;
      seen.add(e.path);
      const ranges = new Set<string>();
      for (const c of e.chunks) {
        if (c.zeros || ranges.has(`${c.compressedOffset}`)) continue;
        ranges.add(`${c.compressedOffset}`);
        frameBytes += c.compressedEnd - c.compressedOffset;
      }
    }
    return { tocBytes: toc.tocCompressedLength, frameBytes, files: seen.size };
  } finally {
    await source.close();
  }
}
