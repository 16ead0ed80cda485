import { isDigest } from '../digest.js';
import type { Descriptor } from '../source/types.js';

/** Layer annotation keys of the lazy formats (docs/formats.md §2.5, §3.5). */
export const Annotations = {
  zstdChecksumNew: 'io.github.containers.zstd-chunked.manifest-checksum',
  zstdPositionNew: 'io.github.containers.zstd-chunked.manifest-position',
  tarSplitPosition: 'io.github.containers.zstd-chunked.tarsplit-position',
  tarSplitChecksum: 'io.github.containers.zstd-chunked.tarsplit-checksum',
  zstdChecksumOld: 'io.containers.zstd-chunked.manifest-checksum',
  zstdPositionOld: 'io.containers.zstd-chunked.manifest-position',
  stargzTocDigest: 'containerd.io/snapshot/stargz/toc.digest',
  uncompressedSize: 'io.containers.estargz.uncompressed-size',
} as const;

export interface ZstdPosition {
  offset: number;
  compressedLength: number;
  uncompressedLength: number;
  manifestType?: number;
}

/** What a layer descriptor's annotations say about its TOC (each value checked for shape). */
export interface LayerAnnotations {
  /** `io.github...` (c/storage ≥ 1.44) or `io.containers...` (≤ 1.43, stargz zstd). */
  zstdPrefix?: 'io.github' | 'io.containers';
  zstdPosition?: ZstdPosition;
  zstdChecksum?: string;
  tarSplitPosition?: ZstdPosition;
  tarSplitChecksum?: string;
  stargzTocDigest?: string;
  uncompressedSize?: number;
}

/** Thrown as `Error` with a reason; the caller wraps it in a FormatError naming the layer. */
function parsePosition(value: string, key: string, fields: 3 | 4): ZstdPosition {
  const parts = value.split(':');
  if (parts.length !== fields || !parts.every((p) => /^[0-9]{1,16}$/.test(p)))
    throw new Error(`annotation ${key} is malformed: ${JSON.stringify(value.slice(0, 100))}`);
  const n = parts.map(Number);
  if (!n.every(Number.isSafeInteger)) throw new Error(`annotation ${key} is out of range: ${JSON.stringify(value.slice(0, 100))}`);
  return { offset: n[0]!, compressedLength: n[1]!, uncompressedLength: n[2]!, ...(fields === 4 ? { manifestType: n[3]! } : {}) };
}

function digestAnnotation(value: string | undefined, key: string): string | undefined {
  if (value === undefined) return undefined;
  if (!isDigest(value)) throw new Error(`annotation ${key} is not a sha256 digest: ${JSON.stringify(String(value).slice(0, 100))}`);
  return value;
}

export function parseLayerAnnotations(desc: Descriptor): LayerAnnotations {
  const a = desc.annotations ?? {};
  const out: LayerAnnotations = {};
  const family = a[Annotations.zstdPositionNew] !== undefined || a[Annotations.zstdChecksumNew] !== undefined ? 'io.github'
    : a[Annotations.zstdPositionOld] !== undefined || a[Annotations.zstdChecksumOld] !== undefined ? 'io.containers' : undefined;
  if (family) {
    const posKey = family === 'io.github' ? Annotations.zstdPositionNew : Annotations.zstdPositionOld;
    const sumKey = family === 'io.github' ? Annotations.zstdChecksumNew : Annotations.zstdChecksumOld;
    out.zstdPrefix = family;
    const pos = a[posKey];
    if (pos === undefined) throw new Error(`annotation ${sumKey} without ${posKey}`);
    out.zstdPosition = parsePosition(pos, posKey, 4);
    const sum = digestAnnotation(a[sumKey], sumKey);
    if (sum === undefined) throw new Error(`annotation ${posKey} without ${sumKey}: nothing vouches for the TOC`);
    out.zstdChecksum = sum;
    if (a[Annotations.tarSplitPosition] !== undefined) out.tarSplitPosition = parsePosition(a[Annotations.tarSplitPosition]!, Annotations.tarSplitPosition, 3);
    const ts = digestAnnotation(a[Annotations.tarSplitChecksum], Annotations.tarSplitChecksum);
    if (ts) out.tarSplitChecksum = ts;
  }
  const toc = digestAnnotation(a[Annotations.stargzTocDigest], Annotations.stargzTocDigest);
  if (toc) out.stargzTocDigest = toc;
  const us = a[Annotations.uncompressedSize];
  if (us !== undefined) {
    if (!/^[0-9]{1,16}$/.test(us) || !Number.isSafeInteger(Number(us))) throw new Error(`annotation ${Annotations.uncompressedSize} is malformed: ${JSON.stringify(us.slice(0, 100))}`);
    out.uncompressedSize = Number(us);
  }
  return out;
}
