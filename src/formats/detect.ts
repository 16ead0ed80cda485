/**
 * What kind of layer a blob is, from its descriptor and a few bytes at each end
 * (docs/formats.md §5), without reading or trusting any TOC.
 */
import type { BlobReader, Descriptor } from '../source/types.js';
import { parseLayerAnnotations, type LayerAnnotations } from './annotations.js';
import { readTail } from './blob-range.js';
import { describeFooter, MAX_FOOTER_LENGTH, parseFooter, zstdFormatVersion, type Footer } from './footer.js';
import type { Compression, LayerFormat } from './toc.js';

/** The codec of the layer stream, sniffed from its first bytes; `tar` = uncompressed. */
export type Codec = Compression | 'tar' | 'unknown';

export interface LayerProbe {
  format: LayerFormat;
  codec: Codec;
  /** e.g. `c/storage v3 footer (64 B)`, `eStargz footer (51 B)`, `plain gzip`. */
  formatVersion: string;
  footer?: Footer;
  /** A layer annotation carries a digest that vouches for the TOC. */
  verifiable: boolean;
  /** readLayerToc can serve the layer lazily (possibly only with allowUnverified). */
  lazy: boolean;
  /** Why the layer cannot be served lazily, or why only unverified. */
  reason?: string;
}

export function sniffCodec(head: Buffer): Codec {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip';
  if (head.length >= 4) {
    const m = head.readUInt32LE(0);
    if (m === 0xfd2fb528 || (m & 0xfffffff0) >>> 0 === 0x184d2a50) return 'zstd';
  }
  if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') return 'tar';
  return 'unknown';
}

function annotationsOrError(desc: Descriptor): LayerAnnotations | string {
  try {
    return parseLayerAnnotations(desc);
  } catch (e) {
    return (e as Error).message;
  }
}

/** Two small reads: the first 512 bytes and the last 72. */
export async function probeLayer(desc: Descriptor, blob: BlobReader): Promise<LayerProbe> {
  const head = await blob.read(0, Math.min(512, blob.size));
  const codec = sniffCodec(head);
  const footer = parseFooter((await readTail(blob, MAX_FOOTER_LENGTH)).bytes);
  const ann = annotationsOrError(desc);
  const footerDesc = footer ? describeFooter(footer) : undefined;
  if (typeof ann === 'string') return { format: 'none', codec, formatVersion: footerDesc ?? `plain ${codec}`, verifiable: false, lazy: false, reason: ann };
  const verifiable = ann.zstdChecksum !== undefined || ann.stargzTocDigest !== undefined;
  const base = { codec, verifiable, ...(footer ? { footer } : {}) };
  const unverifiedReason = verifiable ? {} : { reason: 'TOC found by footer only: no layer annotation vouches for it (verify the whole blob first)' };
  if (ann.zstdPosition) {
    const stargz = ann.stargzTocDigest !== undefined;
    const where = footerDesc ?? `(${ann.zstdPrefix} annotations)`;
    return { ...base, format: stargz ? 'stargz-zstd' : 'zstd:chunked', formatVersion: zstdFormatVersion(stargz, where), lazy: true };
  }
  if (!footer) {
    if (verifiable) return { ...base, format: 'none', formatVersion: `plain ${codec}`, lazy: false, reason: 'toc.digest annotation but no stargz footer' };
    return { ...base, format: 'none', formatVersion: `plain ${codec}`, lazy: false, reason: 'no TOC: the whole layer must be fetched' };
  }
  switch (footer.kind) {
    case 'zstd': {
      // Without annotations the schema tells c/storage and stargz-snapshotter apart; only readLayerToc sees it.
      const stargz = ann.stargzTocDigest !== undefined;
      return { ...base, format: stargz ? 'stargz-zstd' : 'zstd:chunked', formatVersion: zstdFormatVersion(stargz, footerDesc!), lazy: true, ...unverifiedReason };
    }
    case 'estargz':
      return { ...base, format: 'estargz', formatVersion: footerDesc!, lazy: true, ...unverifiedReason };
    case 'legacy-stargz':
      return { ...base, format: 'estargz', formatVersion: footerDesc!, lazy: false, reason: 'legacy stargz TOCs carry no chunk digests: nothing can verify a lazily read chunk' };
    case 'external-toc':
      return { ...base, format: 'estargz', formatVersion: footerDesc!, lazy: false, reason: 'the TOC lives in a separate TOC image, which tocfs does not fetch: not lazily mountable' };
  }
}
