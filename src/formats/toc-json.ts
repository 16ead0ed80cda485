import { isDigest } from '../digest.js';
import { FormatError, preview } from '../errors.js';

export interface TocDocument {
  entries: unknown[];
  tarSplitDigest?: string;
}

/**
 * Parses TOC JSON bytes (already size-checked by the caller against the limit, so the parse
 * is bounded). JSON.parse refuses anything after the top-level value, which is what
 * containers/storage requires so that the digest covers the whole document.
 */
export function parseTocDocument(json: Buffer, layer: string): TocDocument {
  let doc: unknown;
  try {
    doc = JSON.parse(json.toString('utf8'));
  } catch (e) {
    throw new FormatError(`layer ${layer}: TOC is not valid JSON: ${(e as Error).message.slice(0, 200)}`, { cause: e });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FormatError(`layer ${layer}: TOC is not a JSON object`);
  const d = doc as Record<string, unknown>;
  if (d.version !== 1) throw new FormatError(`layer ${layer}: unsupported TOC version ${preview(d.version, 40)} (expected 1)`);
  if (!Array.isArray(d.entries)) throw new FormatError(`layer ${layer}: TOC has no "entries" array`);
  const out: TocDocument = { entries: d.entries };
  if (d.tarSplitDigest !== undefined && d.tarSplitDigest !== '') {
    if (!isDigest(d.tarSplitDigest)) throw new FormatError(`layer ${layer}: TOC tarSplitDigest is not a sha256 digest`);
    out.tarSplitDigest = d.tarSplitDigest;
  }
  return out;
}

/** A c/storage TOC states `endOffset` on files with data; the stargz schema never does. */
export function looksLikeCStorageSchema(entries: unknown[]): boolean {
  for (const e of entries) {
    const r = e as Record<string, unknown> | null;
    if (r && typeof r === 'object' && r.type === 'reg' && typeof r.size === 'number' && r.size > 0) return r.endOffset !== undefined;
  }
  return true;
}
