/**
 * Footers at the end of a layer blob (docs/formats.md §2.4, §3.2, §3.6, §3.7): what a tail of the
 * blob says about where the TOC is, without any trust in it.
 */

export type Footer =
  | {
      kind: 'zstd';
      /** 1: 40-byte payload `GnUlInUx`; 2: 56-byte (c/storage 1.47–1.49); 3: 64-byte `GNUlInUx`. */
      version: 1 | 2 | 3;
      /** Bytes of the footer frame incl. its 8-byte skippable header. */
      length: number;
      tocOffset: number;
      tocCompressedLength: number;
      tocUncompressedLength: number;
      manifestType: number;
      tarSplit?: { offset: number; compressedLength: number; uncompressedLength: number };
    }
  | { kind: 'estargz'; length: 51; tocOffset: number }
  | { kind: 'legacy-stargz'; length: 47; tocOffset: number }
  | { kind: 'external-toc'; length: 46 };

/** Bytes to read from the end of a blob to see any footer. */
export const MAX_FOOTER_LENGTH = 72;

const SKIPPABLE_HEADER = Buffer.from([0x50, 0x2a, 0x4d, 0x18]);
const MAGIC_V1 = Buffer.from('GnUlInUx', 'latin1');
const MAGIC_V3 = Buffer.from('GNUlInUx', 'latin1');
const GZIP_FEXTRA_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]);
const EMPTY_STORED_BLOCK_AND_TRAILER = Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
const STARGZ = Buffer.from('STARGZ', 'latin1');
const EXTERNAL_TOC = Buffer.from('STARGZEXTERNALTOC', 'latin1');

function u64(b: Buffer, at: number): number {
  const v = b.readBigUInt64LE(at);
  // Anything beyond 2^53 cannot be a real offset; make it fail the range checks later.
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function hexOffset(b: Buffer, at: number): number | undefined {
  const s = b.toString('latin1', at, at + 16);
  return /^[0-9a-f]{16}$/.test(s) ? parseInt(s, 16) : undefined;
}

function zstdFooter(tail: Buffer): Footer | undefined {
  const n = tail.length;
  const at = (len: number): number => n - 8 - len;
  for (const [len, version] of [[64, 3], [56, 2], [40, 1]] as const) {
    const start = at(len);
    if (start < 0) continue;
    if (!tail.subarray(start, start + 4).equals(SKIPPABLE_HEADER) || tail.readUInt32LE(start + 4) !== len) continue;
    const p = tail.subarray(start + 8);
    if (version === 3 && !p.subarray(56, 64).equals(MAGIC_V3)) continue;
    if (version === 2 && (!p.subarray(32, 40).equals(MAGIC_V1) || p.subarray(40, 56).some((x) => x !== 0))) continue;
    if (version === 1 && !p.subarray(32, 40).equals(MAGIC_V1)) continue;
    return {
      kind: 'zstd',
      version,
      length: len + 8,
      tocOffset: u64(p, 0),
      tocCompressedLength: u64(p, 8),
      tocUncompressedLength: u64(p, 16),
      manifestType: u64(p, 24),
      ...(version === 3 ? { tarSplit: { offset: u64(p, 32), compressedLength: u64(p, 40), uncompressedLength: u64(p, 48) } } : {}),
    };
  }
  return undefined;
}

function gzipFooter(tail: Buffer): Footer | undefined {
  const n = tail.length;
  if (n < 46 || !tail.subarray(n - 13).equals(EMPTY_STORED_BLOCK_AND_TRAILER)) return undefined;
  if (n >= 51 && tail.subarray(n - 51, n - 41).equals(GZIP_FEXTRA_HEADER) && tail.readUInt16LE(n - 41) === 26 &&
      tail[n - 39] === 0x53 && tail[n - 38] === 0x47 && tail.readUInt16LE(n - 37) === 22 && tail.subarray(n - 19, n - 13).equals(STARGZ)) {
    const tocOffset = hexOffset(tail, n - 35);
    if (tocOffset !== undefined) return { kind: 'estargz', length: 51, tocOffset };
  }
  if (n >= 47 && tail.subarray(n - 47, n - 37).equals(GZIP_FEXTRA_HEADER) && tail.readUInt16LE(n - 37) === 22 && tail.subarray(n - 19, n - 13).equals(STARGZ)) {
    const tocOffset = hexOffset(tail, n - 35);
    if (tocOffset !== undefined) return { kind: 'legacy-stargz', length: 47, tocOffset };
  }
  if (tail.subarray(n - 46, n - 36).equals(GZIP_FEXTRA_HEADER) && tail.readUInt16LE(n - 36) === 21 &&
      tail[n - 34] === 0x53 && tail[n - 33] === 0x47 && tail.readUInt16LE(n - 32) === 17 && tail.subarray(n - 30, n - 13).equals(EXTERNAL_TOC)) {
    return { kind: 'external-toc', length: 46 };
  }
  return undefined;
}

/** Parses whatever footer ends `tail` (the last bytes of the blob). */
export function parseFooter(tail: Buffer): Footer | undefined {
  return zstdFooter(tail) ?? gzipFooter(tail);
}

/** `v3 footer (64 B)` for zstd footers (the caller names the producer); the whole format name for gzip ones. */
export function describeFooter(f: Footer): string {
  switch (f.kind) {
    case 'zstd':
      return `v${f.version} footer (${f.length - 8} B)`;
    case 'estargz':
      return 'eStargz (51 B footer)';
    case 'legacy-stargz':
      return 'legacy stargz (47 B footer)';
    case 'external-toc':
      return 'eStargz with external TOC (46 B footer)';
  }
}

/** formatVersion of a zstd-framed TOC layer. */
export function zstdFormatVersion(stargz: boolean, where: string): string {
  return stargz ? `stargz-snapshotter zstd, ${where}` : `c/storage ${where}`;
}
