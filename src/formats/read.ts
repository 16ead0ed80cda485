/**
 * readLayerToc: find, fetch, verify and normalise the TOC of a lazily pullable layer.
 */
import { sha256 } from '../digest.js';
import { DigestMismatchError, FormatError } from '../errors.js';
import type { BlobReader, Descriptor } from '../source/types.js';
import { parseLayerAnnotations, type LayerAnnotations, type ZstdPosition } from './annotations.js';
import { readTail } from './blob-range.js';
import { fetchEstargzToc } from './estargz.js';
import { describeFooter, MAX_FOOTER_LENGTH, parseFooter, zstdFormatVersion, type Footer } from './footer.js';
import { normaliseEntries, normaliseEntriesInto } from './entries.js';
import { decodeParsedToc, ParsedTocBuilder } from './toc-binary.js';
import { looksLikeCStorageSchema, parseTocDocument, type TocDocument } from './toc-json.js';
import { DEFAULT_TOC_LIMITS, type ArrayToc, type LayerToc, type TarSplitInfo, type TocLimits, type TocStore } from './toc.js';
import { tarSplitStreamLength } from './tar-split.js';
import { fetchZstdToc, SAME_REQUEST_SLACK, type ZstdTocBytes } from './zstd-chunked.js';
import { decompressZstdBounded } from './zstd-frames.js';

export interface ReadTocOptions {
  limits?: Partial<TocLimits>;
  tocStore?: TocStore;
  /** Accept a TOC found by footer probing alone (verified=false); the caller must verify the blob. */
  allowUnverified?: boolean;
}

/** The layer has no TOC (plain tar/gzip/zstd): it can only be fetched whole. */
export class NoTocError extends FormatError {
  constructor(layer: string) {
    super(`layer ${layer}: no TOC (not zstd:chunked or eStargz): it cannot be read lazily`);
    this.name = 'NoTocError';
  }
}

/** eStargz: fetch this much of the tail at once so a small TOC needs no second request. */
const TAIL_PROBE = 32 * 1024;
const SKIPPABLE_HEADER_LENGTH = 8;

/** Everything about a TOC except its entries; with the JSON it rebuilds the LayerToc. */
interface TocHeader extends Omit<LayerToc, 'entries' | 'prefetchEnd' | 'noPrefetch'> {
  /** Chunks must end at or before this offset (start of the TOC frame / member). */
  dataEnd: number;
  hideLandmarks: boolean;
}

/** Builds a LayerToc from a verified header and TOC document (as assemble or assembleParsed). */
type Assemble<T> = (layer: string, header: TocHeader, doc: TocDocument, limits: TocLimits) => T;

/** The LayerToc as objects. */
const assemble: Assemble<ArrayToc> = (layer, header, doc, limits) => {
  const { dataEnd, hideLandmarks, ...rest } = header;
  const norm = normaliseEntries(doc.entries, { layer, dataEnd, hideLandmarks, limits });
  return { ...rest, ...norm };
};

/** A TOC in its parsed form (formats/toc-binary.ts), and the LayerToc whose entries are its views. */
export interface ParsedLayerToc {
  toc: LayerToc;
  parsed: Buffer;
}

/** The LayerToc normalised straight into the parsed form's columns: no object per entry, chunk or time on the way. */
function assembleParsed(context: string): Assemble<ParsedLayerToc> {
  return (layer, header, doc, limits) => {
    const { dataEnd, hideLandmarks, ...rest } = header;
    const builder = new ParsedTocBuilder(doc.entries.length);
    const marks = normaliseEntriesInto(doc.entries, { layer, dataEnd, hideLandmarks, limits }, builder);
    const parsed = builder.finish({ ...rest, ...marks }, context);
    const toc = parsed && decodeParsedToc(parsed, context);
    // Every TOC a reader makes fits the form; a failure here is a bug, not bad input.
    if (!parsed || !toc) throw new Error(`layer ${layer}: its TOC does not fit the parsed form`);
    return { toc, parsed };
  };
}

function annotationsOf(desc: Descriptor): LayerAnnotations {
  try {
    return parseLayerAnnotations(desc);
  } catch (e) {
    throw new FormatError(`layer ${desc.digest}: ${(e as Error).message}`);
  }
}

function zstdHeader(layer: string, ann: LayerAnnotations, pos: ZstdPosition, bytes: ZstdTocBytes, doc: TocDocument, verified: boolean): TocHeader {
  const stargz = ann.stargzTocDigest !== undefined || !looksLikeCStorageSchema(doc.entries);
  const where = bytes.footer ? describeFooter(bytes.footer) : `(${ann.zstdPrefix ?? 'no'} annotations)`;
  const header: TocHeader = {
    format: stargz ? 'stargz-zstd' : 'zstd:chunked',
    formatVersion: zstdFormatVersion(stargz, where),
    compression: 'zstd',
    tocOffset: pos.offset,
    tocCompressedLength: pos.compressedLength,
    tocUncompressedLength: pos.uncompressedLength,
    verified,
    dataEnd: pos.offset - SKIPPABLE_HEADER_LENGTH,
    hideLandmarks: stargz,
  };
  const tocDigest = ann.zstdChecksum ?? ann.stargzTocDigest;
  if (tocDigest && verified) header.tocDigest = tocDigest;
  if (ann.uncompressedSize !== undefined) header.uncompressedSize = ann.uncompressedSize;
  const tsDigest = doc.tarSplitDigest ?? ann.tarSplitChecksum;
  const tsPos = bytes.tarSplitPosition;
  if (doc.tarSplitDigest && !tsPos) throw new FormatError(`layer ${layer}: the TOC names tar-split ${doc.tarSplitDigest} but the layer has no tar-split position`);
  if (tsPos) {
    const ts: TarSplitInfo = { offset: tsPos.offset, compressedLength: tsPos.compressedLength, uncompressedLength: tsPos.uncompressedLength };
    if (tsDigest) {
      if (bytes.tarSplit) {
        const actual = sha256(bytes.tarSplit);
        if (actual !== tsDigest) throw new DigestMismatchError(`layer ${layer}: tar-split`, tsDigest, actual);
      }
      ts.digest = tsDigest;
    }
    header.tarSplit = ts;
  }
  return header;
}

/** With a verified tar-split at hand (fetched with the TOC), the layer's uncompressed length is known. */
async function addStreamLength(layer: string, header: TocHeader, bytes: ZstdTocBytes, limits: TocLimits): Promise<void> {
  const ts = header.tarSplit;
  if (header.uncompressedSize !== undefined || !ts?.digest || !bytes.tarSplit) return;
  header.uncompressedSize = await tarSplitStreamLength(layer, bytes.tarSplit, ts.uncompressedLength, limits.maxUncompressedTocBytes);
}

function checkJsonDigest(layer: string, json: Buffer, expected: string | undefined): void {
  if (expected === undefined) return;
  const actual = sha256(json);
  if (actual !== expected) throw new DigestMismatchError(`layer ${layer}: TOC JSON`, expected, actual);
}

interface FreshToc {
  header: TocHeader;
  doc: TocDocument;
  /** What the store keeps: the bytes the vouching digest covers. */
  raw: Buffer;
  rawIsZstd: boolean;
}

async function readFresh(desc: Descriptor, blob: BlobReader, ann: LayerAnnotations, limits: TocLimits, allowUnverified: boolean): Promise<FreshToc> {
  const layer = desc.digest;
  if (ann.zstdPosition) {
    const pos = ann.zstdPosition;
    const req = { position: pos, ...(ann.zstdChecksum ? { compressedDigest: ann.zstdChecksum } : {}), ...(ann.stargzTocDigest ? { jsonDigest: ann.stargzTocDigest } : {}), ...(ann.tarSplitPosition ? { tarSplitPosition: ann.tarSplitPosition } : {}) };
    const bytes = await fetchZstdToc(blob, layer, req, limits);
    const doc = parseTocDocument(bytes.json, layer);
    const header = zstdHeader(layer, ann, pos, bytes, doc, true);
    await addStreamLength(layer, header, bytes, limits);
    return { header, doc, raw: bytes.compressed, rawIsZstd: true };
  }
  const tail = await readTail(blob, TAIL_PROBE);
  const footer: Footer | undefined = parseFooter(tail.bytes.subarray(Math.max(0, tail.bytes.length - MAX_FOOTER_LENGTH)));
  if (!footer) {
    if (ann.stargzTocDigest) throw new FormatError(`layer ${layer}: annotated with a stargz toc.digest but has no eStargz or zstd footer`);
    throw new NoTocError(layer);
  }
  const verified = ann.stargzTocDigest !== undefined;
  if (footer.kind === 'legacy-stargz') throw new FormatError(`layer ${layer}: legacy stargz TOC carries no chunk digests; it cannot be served lazily`);
  if (footer.kind === 'external-toc') throw new FormatError(`layer ${layer}: eStargz with an external TOC (kept in a separate TOC image): not lazily mountable`);
  if (!verified && !allowUnverified)
    throw new FormatError(`layer ${layer}: TOC found by footer probing only (${describeFooter(footer)}); no layer annotation vouches for it, so it is not used unless the whole blob is verified first`);
  if (footer.kind === 'zstd') {
    const pos: ZstdPosition = { offset: footer.tocOffset, compressedLength: footer.tocCompressedLength, uncompressedLength: footer.tocUncompressedLength, manifestType: footer.manifestType };
    const bytes = await fetchZstdToc(blob, layer, { position: pos, ...(ann.stargzTocDigest ? { jsonDigest: ann.stargzTocDigest } : {}), have: tail }, limits);
    const doc = parseTocDocument(bytes.json, layer);
    return verified
      ? { header: zstdHeader(layer, ann, pos, bytes, doc, true), doc, raw: bytes.json, rawIsZstd: false }
      : { header: zstdHeader(layer, ann, pos, bytes, doc, false), doc, raw: bytes.compressed, rawIsZstd: true };
  }
  const { member, json } = await fetchEstargzToc(blob, layer, footer.tocOffset, footer.length, limits, tail);
  checkJsonDigest(layer, json, ann.stargzTocDigest);
  const doc = parseTocDocument(json, layer);
  const header: TocHeader = {
    format: 'estargz',
    formatVersion: describeFooter(footer),
    compression: 'gzip',
    tocOffset: footer.tocOffset,
    tocCompressedLength: member.length,
    tocUncompressedLength: json.length,
    verified,
    dataEnd: footer.tocOffset,
    hideLandmarks: true,
  };
  if (verified) header.tocDigest = ann.stargzTocDigest!;
  if (ann.uncompressedSize !== undefined) header.uncompressedSize = ann.uncompressedSize;
  return { header, doc, raw: json, rawIsZstd: false };
}

// TocStore entries: a line of magic, a line of JSON (the TocHeader and the layer digest:
// offsets are per blob), then the raw bytes the key digest covers.
const STORE_MAGIC = 'tocfs-toc-v1\n';

function encodeStored(layer: string, fresh: FreshToc): Buffer {
  const meta = JSON.stringify({ layer, rawIsZstd: fresh.rawIsZstd, header: fresh.header });
  return Buffer.concat([Buffer.from(STORE_MAGIC + meta + '\n'), fresh.raw]);
}

/**
 * The stored header is not covered by the key digest, so it must agree with what the
 * descriptor says (positions from annotations, the blob size) before it is used.
 */
function storedHeaderFits(h: TocHeader, rawIsZstd: boolean, key: string, ann: LayerAnnotations, blobSize: number): boolean {
  if (h.verified !== true || h.tocDigest !== key || h.uncompressedSize !== (ann.uncompressedSize ?? h.uncompressedSize)) return false;
  if (ann.zstdPosition) {
    const p = ann.zstdPosition;
    return rawIsZstd && h.compression === 'zstd' && h.tocOffset === p.offset && h.tocCompressedLength === p.compressedLength && h.tocUncompressedLength === p.uncompressedLength && h.dataEnd === p.offset - SKIPPABLE_HEADER_LENGTH;
  }
  if (h.format === 'estargz') return h.compression === 'gzip' && h.dataEnd === h.tocOffset && h.tocOffset + h.tocCompressedLength === blobSize - 51;
  return h.compression === 'zstd' && h.dataEnd === h.tocOffset - SKIPPABLE_HEADER_LENGTH && h.tocOffset + h.tocCompressedLength <= blobSize;
}

const HEADER_KEYS = new Set(['format', 'formatVersion', 'compression', 'tocOffset', 'tocCompressedLength', 'tocUncompressedLength', 'verified', 'tocDigest', 'dataEnd', 'hideLandmarks', 'uncompressedSize', 'tarSplit']);
const TAR_SPLIT_KEYS = new Set(['offset', 'compressedLength', 'uncompressedLength', 'digest']);
const ZSTD_FOOTERS = ['v1 footer (40 B)', 'v2 footer (56 B)', 'v3 footer (64 B)'];

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * The stored header rebuilt from what can be checked against the descriptor, the blob size
 * and the verified TOC document (what readFresh would derive), or undefined when anything
 * disagrees or is unknown. Only `uncompressedSize` derived from a tar-split (no annotation
 * states it) is taken on the entry's word: the tar-split itself is not stored.
 */
function trustedHeader(h: TocHeader, ann: LayerAnnotations, doc: TocDocument, blobSize: number): TocHeader | undefined {
  if (Object.keys(h).some((k) => !HEADER_KEYS.has(k))) return undefined;
  const zstd = h.compression === 'zstd';
  const stargz = !zstd || ann.stargzTocDigest !== undefined || !looksLikeCStorageSchema(doc.entries);
  const format = zstd ? (stargz ? 'stargz-zstd' : 'zstd:chunked') : 'estargz';
  const versions = zstd ? [...ZSTD_FOOTERS, `(${ann.zstdPrefix ?? 'no'} annotations)`].map((w) => zstdFormatVersion(stargz, w)) : ['eStargz (51 B footer)'];
  if (h.format !== format || h.hideLandmarks !== stargz || !versions.includes(h.formatVersion)) return undefined;
  const out: TocHeader = {
    format,
    formatVersion: h.formatVersion,
    compression: h.compression,
    tocOffset: h.tocOffset,
    tocCompressedLength: h.tocCompressedLength,
    tocUncompressedLength: h.tocUncompressedLength,
    verified: true,
    tocDigest: h.tocDigest!,
    dataEnd: h.dataEnd,
    hideLandmarks: stargz,
  };
  const tsDigest = doc.tarSplitDigest ?? ann.tarSplitChecksum;
  const t = h.tarSplit as Record<string, unknown> | undefined;
  if (t !== undefined) {
    if (!zstd || typeof t !== 'object' || t === null || Object.keys(t).some((k) => !TAR_SPLIT_KEYS.has(k))) return undefined;
    if (!isCount(t.offset) || !isCount(t.compressedLength) || !isCount(t.uncompressedLength) || t.digest !== tsDigest) return undefined;
    const p = ann.tarSplitPosition;
    if (p && (p.offset !== t.offset || p.compressedLength !== t.compressedLength || p.uncompressedLength !== t.uncompressedLength)) return undefined;
    if (t.offset < h.tocOffset + h.tocCompressedLength + SKIPPABLE_HEADER_LENGTH || t.offset + t.compressedLength > blobSize) return undefined;
    out.tarSplit = { offset: t.offset, compressedLength: t.compressedLength, uncompressedLength: t.uncompressedLength, ...(tsDigest ? { digest: tsDigest } : {}) };
  } else if (doc.tarSplitDigest !== undefined || ann.tarSplitPosition !== undefined) return undefined;
  // readFresh knows the length from the annotation, or from a verified tar-split that came
  // with the TOC (zstd annotations, tar-split within the same request).
  const fromTarSplit = ann.zstdPosition !== undefined && out.tarSplit?.digest !== undefined && blobSize - (h.tocOffset + h.tocCompressedLength) <= SAME_REQUEST_SLACK;
  if (ann.uncompressedSize !== undefined) {
    if (h.uncompressedSize !== ann.uncompressedSize) return undefined;
    out.uncompressedSize = ann.uncompressedSize;
  } else if (fromTarSplit) {
    if (!isCount(h.uncompressedSize)) return undefined;
    out.uncompressedSize = h.uncompressedSize;
  } else if (h.uncompressedSize !== undefined) return undefined;
  return out;
}

async function loadStored<T>(store: TocStore, key: string, desc: Descriptor, ann: LayerAnnotations, blobSize: number, limits: TocLimits, build: Assemble<T>): Promise<T | undefined> {
  const layer = desc.digest;
  const data = await store.get(key);
  if (!data || !data.subarray(0, STORE_MAGIC.length).equals(Buffer.from(STORE_MAGIC))) return undefined;
  const nl = data.indexOf(0x0a, STORE_MAGIC.length);
  if (nl < 0) return undefined;
  let meta: { layer: string; rawIsZstd: boolean; header: TocHeader };
  try {
    meta = JSON.parse(data.toString('utf8', STORE_MAGIC.length, nl));
  } catch {
    return undefined;
  }
  if (typeof meta !== 'object' || meta === null || typeof meta.header !== 'object' || meta.header === null) return undefined;
  // The raw bytes are the compressed TOC exactly when annotations give its position.
  if (meta.layer !== layer || meta.rawIsZstd !== (ann.zstdPosition !== undefined) || !storedHeaderFits(meta.header, meta.rawIsZstd, key, ann, blobSize)) return undefined;
  const raw = data.subarray(nl + 1);
  // The store is outside the chain of trust: check the bytes again.
  if (sha256(raw) !== key) return undefined;
  let json: Buffer;
  try {
    json = meta.rawIsZstd ? await decompressZstdBounded(raw, limits.maxUncompressedTocBytes) : raw;
  } catch {
    return undefined;
  }
  if (json.length !== meta.header.tocUncompressedLength) return undefined;
  const doc = parseTocDocument(json, layer);
  const header = trustedHeader(meta.header, ann, doc, blobSize);
  return header && build(layer, header, doc, limits);
}

/**
 * Reads the TOC of a zstd:chunked, stargz-zstd or eStargz layer: detection by annotations
 * then bytes (docs/formats.md §5), verification against the annotation digest, normalisation
 * and every hostile-input check. Throws NoTocError for plain layers (see probeLayer),
 * FormatError / DigestMismatchError for anything malformed.
 */
export async function readLayerToc(desc: Descriptor, blob: BlobReader, opts: ReadTocOptions = {}): Promise<ArrayToc> {
  return readTocWith(desc, blob, opts, assemble, (toc) => toc.verified);
}

/**
 * readLayerToc's TOC in its parsed form, for the descriptor `context` names (layer/open.ts):
 * the same checks and errors, normalised straight into the form's columns.
 */
export async function readLayerTocParsed(desc: Descriptor, blob: BlobReader, context: string, opts: ReadTocOptions = {}): Promise<ParsedLayerToc> {
  return readTocWith(desc, blob, opts, assembleParsed(context), (r) => r.toc.verified);
}

async function readTocWith<T>(desc: Descriptor, blob: BlobReader, opts: ReadTocOptions, build: Assemble<T>, verified: (toc: T) => boolean): Promise<T> {
  const limits: TocLimits = { ...DEFAULT_TOC_LIMITS, ...opts.limits };
  const ann = annotationsOf(desc);
  const key = ann.zstdPosition ? ann.zstdChecksum : ann.stargzTocDigest;
  if (key && opts.tocStore) {
    const hit = await loadStored(opts.tocStore, key, desc, ann, blob.size, limits, build);
    if (hit) return hit;
  }
  const fresh = await readFresh(desc, blob, ann, limits, opts.allowUnverified === true);
  const toc = build(desc.digest, fresh.header, fresh.doc, limits);
  if (key && opts.tocStore && verified(toc)) await opts.tocStore.put(key, encodeStored(desc.digest, fresh));
  return toc;
}
