/**
 * Whether a published index says what a layer holds: its entries (names, types, modes, owners,
 * times, link targets, devices, xattrs, sizes, digests) and file pieces (offsets, sizes,
 * digests), compared with the index rebuilt from the whole layer. Blob ranges and checkpoints
 * are not compared: a publisher may space checkpoints differently, and a wrong one only makes
 * reads fail their piece digests.
 */
import type { LayerToc, TocEntry } from '../formats/toc.js';

function entryFacts(e: TocEntry): string {
  const xattrs = Object.entries(e.xattrs ?? {})
    .map(([k, v]) => [k, v.toString('base64')])
    .sort();
  const pieces = e.chunks.map((c) => [c.offset, c.size, c.digest, c.zeros]);
  return JSON.stringify([e.path, e.type, e.mode, e.uid, e.gid, e.userName ?? '', e.groupName ?? '', e.size, e.digest ?? '', e.linkName ?? '', e.devMajor ?? 0, e.devMinor ?? 0, e.mtime, e.atime ?? null, e.ctime ?? null, xattrs, pieces]);
}

/** The first way `published` differs from `actual`, in words, or undefined when they agree. */
export function firstDifference(published: LayerToc, actual: LayerToc): string | undefined {
  if (published.uncompressedSize !== undefined && published.uncompressedSize !== actual.uncompressedSize) return `uncompressed size ${published.uncompressedSize}, the layer has ${actual.uncompressedSize}`;
  if (published.uncompressedDigest !== undefined && published.uncompressedDigest !== actual.uncompressedDigest) return `DiffID ${published.uncompressedDigest}, the layer's is ${actual.uncompressedDigest}`;
  const n = Math.max(published.entries.length, actual.entries.length);
  for (let i = 0; i < n; i++) {
    const p = published.entries.at(i);
    const a = actual.entries.at(i);
    if (!p || !a) return `${published.entries.length} entries, the layer has ${actual.entries.length}`;
    if (entryFacts(p) !== entryFacts(a)) return `entry ${i} (${JSON.stringify(a.path)}) differs`;
  }
  return undefined;
}
