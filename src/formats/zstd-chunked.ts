/**
 * Fetching and verifying a TOC kept in a zstd skippable frame: containers/storage
 * zstd:chunked (every generation) and stargz-snapshotter's zstd variant (docs/formats.md §2, §4).
 */
import { sha256 } from '../digest.js';
import { DigestMismatchError, FormatError } from '../errors.js';
import type { BlobReader } from '../source/types.js';
import type { ZstdPosition } from './annotations.js';
import { readRange } from './blob-range.js';
import { MAX_FOOTER_LENGTH, parseFooter, type Footer } from './footer.js';
import type { TocLimits } from './toc.js';
import { decompressionAllowance, decompressZstdBounded, isSkippableMagic } from './zstd-frames.js';

/** Up to this many bytes after the TOC (tar-split + footer) are fetched in the same request. */
export const SAME_REQUEST_SLACK = 1024 * 1024;
const SKIPPABLE_HEADER_LENGTH = 8;

export interface ZstdTocRequest {
  position: ZstdPosition;
  /** sha256 of the compressed TOC payload (zstd:chunked annotation). */
  compressedDigest?: string;
  /** sha256 of the TOC JSON (stargz `toc.digest`). */
  jsonDigest?: string;
  tarSplitPosition?: ZstdPosition;
  /** Bytes of the blob already fetched (a probed tail). */
  have?: { offset: number; bytes: Buffer };
}

export interface ZstdTocBytes {
  compressed: Buffer;
  json: Buffer;
  /** The footer, if the fetched bytes reached the end of the blob. */
  footer?: Extract<Footer, { kind: 'zstd' }>;
  /** Compressed tar-split, if it was inside the fetched range. */
  tarSplit?: Buffer;
  tarSplitPosition?: ZstdPosition;
}

/** Checks a TOC position (from annotations or a footer) against the blob and the limits. */
export function checkZstdPosition(layer: string, pos: ZstdPosition, blobSize: number, limits: TocLimits): void {
  const bad = (msg: string): never => {
    throw new FormatError(`layer ${layer}: TOC position ${pos.offset}:${pos.compressedLength}:${pos.uncompressedLength}: ${msg}`);
  };
  if (pos.manifestType !== undefined && pos.manifestType !== 1) bad(`unknown manifest type ${pos.manifestType} (expected 1)`);
  if (pos.compressedLength > limits.maxCompressedTocBytes) bad(`compressed TOC of ${pos.compressedLength} bytes exceeds the limit of ${limits.maxCompressedTocBytes}`);
  if (pos.uncompressedLength > limits.maxUncompressedTocBytes) bad(`uncompressed TOC of ${pos.uncompressedLength} bytes exceeds the limit of ${limits.maxUncompressedTocBytes}`);
  if (pos.compressedLength === 0) bad('empty TOC');
  if (pos.offset < SKIPPABLE_HEADER_LENGTH || pos.offset + pos.compressedLength > blobSize) bad(`outside the ${blobSize}-byte blob`);
}

export async function fetchZstdToc(blob: BlobReader, layer: string, req: ZstdTocRequest, limits: TocLimits): Promise<ZstdTocBytes> {
  const pos = req.position;
  checkZstdPosition(layer, pos, blob.size, limits);
  const tocEnd = pos.offset + pos.compressedLength;
  // One request (docs/formats.md §6): the TOC, and the tar-split and footer that follow it when small.
  const end = blob.size - tocEnd <= SAME_REQUEST_SLACK ? blob.size : tocEnd;
  // From the skippable frame header on, so the frame is checked to be what the position says.
  const framed = await readRange(blob, layer, pos.offset - SKIPPABLE_HEADER_LENGTH, end, 'TOC', req.have);
  if (!isSkippableMagic(framed.readUInt32LE(0)) || framed.readUInt32LE(4) !== pos.compressedLength)
    throw new FormatError(`layer ${layer}: no skippable frame of ${pos.compressedLength} bytes holds the TOC at ${pos.offset}`);
  const bytes = framed.subarray(SKIPPABLE_HEADER_LENGTH);
  const compressed = bytes.subarray(0, pos.compressedLength);
  if (req.compressedDigest) {
    const actual = sha256(compressed);
    if (actual !== req.compressedDigest) throw new DigestMismatchError(`layer ${layer}: compressed TOC`, req.compressedDigest, actual);
  }
  let json: Buffer;
  try {
    json = await decompressZstdBounded(compressed, decompressionAllowance(pos.uncompressedLength, limits.maxUncompressedTocBytes));
  } catch (e) {
    throw new FormatError(`layer ${layer}: cannot decompress TOC: ${(e as Error).message}`, { cause: e });
  }
  if (json.length !== pos.uncompressedLength) throw new FormatError(`layer ${layer}: TOC decompresses to ${json.length} bytes, the position says ${pos.uncompressedLength}`);
  if (json.length > limits.maxUncompressedTocBytes) throw new FormatError(`layer ${layer}: uncompressed TOC of ${json.length} bytes exceeds the limit`);
  if (req.jsonDigest) {
    const actual = sha256(json);
    if (actual !== req.jsonDigest) throw new DigestMismatchError(`layer ${layer}: TOC JSON`, req.jsonDigest, actual);
  }
  const out: ZstdTocBytes = { compressed, json };
  if (end === blob.size) {
    const footer = parseFooter(bytes.subarray(Math.max(0, bytes.length - MAX_FOOTER_LENGTH)));
    if (footer?.kind === 'zstd') {
      out.footer = footer;
      if (footer.version !== 2 && (footer.tocOffset !== pos.offset || footer.tocCompressedLength !== pos.compressedLength || footer.tocUncompressedLength !== pos.uncompressedLength))
        throw new FormatError(`layer ${layer}: footer says TOC ${footer.tocOffset}:${footer.tocCompressedLength}:${footer.tocUncompressedLength}, annotations say ${pos.offset}:${pos.compressedLength}:${pos.uncompressedLength}`);
    }
  }
  const ts = req.tarSplitPosition ?? (out.footer?.tarSplit ? { offset: out.footer.tarSplit.offset, compressedLength: out.footer.tarSplit.compressedLength, uncompressedLength: out.footer.tarSplit.uncompressedLength } : undefined);
  if (ts) {
    const footerStart = blob.size - (out.footer?.length ?? 0);
    if (ts.offset < tocEnd + SKIPPABLE_HEADER_LENGTH || ts.offset + ts.compressedLength > footerStart)
      throw new FormatError(`layer ${layer}: tar-split position ${ts.offset}:${ts.compressedLength} is not between the TOC and the footer`);
    out.tarSplitPosition = ts;
    if (ts.offset + ts.compressedLength <= end) out.tarSplit = bytes.subarray(ts.offset - pos.offset, ts.offset - pos.offset + ts.compressedLength);
  }
  return out;
}
