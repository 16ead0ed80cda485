import { isDigest } from '../digest.js';
import { FormatError, preview } from '../errors.js';

/** A TOC's raw JSON entries, read in order (an array will do). */
export interface RawEntries extends Iterable<unknown> {
  readonly length: number;
}

export interface TocDocument {
  entries: RawEntries;
  tarSplitDigest?: string;
}

/**
 * Entries parsed per JSON.parse call. Parsing the whole document at once makes the text one
 * string and every entry an object, all alive until the last entry is normalised: for a 100k
 * entry TOC some 30 MB of text and 100 MB of objects, most of it promoted to V8's old
 * generation on the way (where collecting it is slow and its pages stay resident). A batch
 * this size dies young.
 */
const ENTRIES_PER_BATCH = 512;

/**
 * Parses TOC JSON bytes (already size-checked by the caller against the limit, so the parse
 * is bounded). JSON.parse refuses anything after the top-level value, which is what
 * containers/storage requires so that the digest covers the whole document.
 *
 * The entries array is parsed a batch at a time as it is read (BatchedEntries). What they
 * accept is what one JSON.parse of the whole document accepts: the rest of the document is
 * parsed with an empty array in its place, and any document whose structure the scan is not
 * sure of (no "entries" key, two of them, a nesting it cannot follow) is parsed whole.
 */
export function parseTocDocument(json: Buffer, layer: string): TocDocument {
  const spans = findEntries(json);
  if (spans) {
    const rest = parseJson(json.toString('utf8', 0, spans.open + 1) + json.toString('utf8', spans.close), layer);
    const d = rest as Record<string, unknown> | undefined;
    // An "entries" key the scan did not see (written with escapes) would have replaced the placeholder.
    if (d && typeof d === 'object' && Array.isArray(d.entries) && d.entries.length === 0) return checkDocument({ ...d, entries: new BatchedEntries(json, spans, layer) }, layer);
  }
  return checkDocument(parseJson(json.toString('utf8'), layer), layer);
}

function parseJson(text: string, layer: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(`layer ${layer}: TOC is not valid JSON: ${(e as Error).message.slice(0, 200)}`, { cause: e });
  }
}

function checkDocument(doc: unknown, layer: string): TocDocument {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FormatError(`layer ${layer}: TOC is not a JSON object`);
  const d = doc as Record<string, unknown>;
  if (d.version !== 1) throw new FormatError(`layer ${layer}: unsupported TOC version ${preview(d.version, 40)} (expected 1)`);
  if (!Array.isArray(d.entries) && !(d.entries instanceof BatchedEntries)) throw new FormatError(`layer ${layer}: TOC has no "entries" array`);
  const out: TocDocument = { entries: d.entries as RawEntries };
  if (d.tarSplitDigest !== undefined && d.tarSplitDigest !== '') {
    if (!isDigest(d.tarSplitDigest)) throw new FormatError(`layer ${layer}: TOC tarSplitDigest is not a sha256 digest`);
    out.tarSplitDigest = d.tarSplitDigest;
  }
  return out;
}

/** Where the top-level "entries" array is in the JSON bytes, and where its batches start. */
interface EntrySpans {
  /** Offset of the array's `[` and of its `]`. */
  open: number;
  close: number;
  /** Offset of the first element of every batch; a batch ends at the comma before the next one. */
  batchStarts: number[];
  count: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const ENTRIES_KEY = Buffer.from('"entries"');

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/**
 * One pass over the bytes (structural characters are ASCII, which no UTF-8 sequence contains)
 * that follows strings and nesting only; undefined when it meets anything it does not expect.
 * Grammar inside values is JSON.parse's to check.
 */
function findEntries(b: Buffer): EntrySpans | undefined {
  const n = b.length;
  let depth = 0;
  /** At depth 1, the next string is a key. */
  let keyNext = false;
  /** The last key at depth 1 was "entries" and its value has not started. */
  let entriesValueNext = false;
  let spans: EntrySpans | undefined;
  /** Inside the entries array (depth 2 is its elements' level). */
  let inEntries = false;
  let empty = true;
  for (let i = 0; i < n; i++) {
    const c = b[i]!;
    if (c === QUOTE) {
      const start = i;
      for (i++; i < n; i++) {
        const s = b[i]!;
        if (s === QUOTE) break;
        if (s === BACKSLASH) i++;
      }
      if (i >= n) return undefined;
      if (depth === 1 && keyNext) {
        keyNext = false;
        if (i - start + 1 === ENTRIES_KEY.length && b.compare(ENTRIES_KEY, 0, ENTRIES_KEY.length, start, i + 1) === 0) {
          if (spans) return undefined; // two "entries" keys: JSON.parse's last-one-wins, whole
          entriesValueNext = true;
        }
      } else if (inEntries && depth === 2) empty = false;
      continue;
    }
    if (isSpace(c) || c === COLON) continue;
    if (entriesValueNext) {
      entriesValueNext = false;
      if (c !== 0x5b || depth !== 1) return undefined;
      depth++;
      spans = { open: i, close: -1, batchStarts: [i + 1], count: 0 };
      inEntries = true;
      continue;
    }
    switch (c) {
      case 0x7b: // {
      case 0x5b: // [
        if (inEntries && depth === 2) empty = false;
        depth++;
        if (depth === 1) keyNext = c === 0x7b;
        break;
      case 0x7d: // }
      case 0x5d: // ]
        if (depth === 0) return undefined;
        if (inEntries && depth === 2) {
          if (c !== 0x5d) return undefined;
          inEntries = false;
          if (empty && spans!.count > 0) return undefined; // commas and nothing else
          spans!.close = i;
          spans!.count = empty ? 0 : spans!.count + 1;
        }
        depth--;
        break;
      case COMMA:
        if (depth === 1) keyNext = true;
        else if (inEntries && depth === 2) {
          const s = spans!;
          if (++s.count % ENTRIES_PER_BATCH === 0) s.batchStarts.push(i + 1);
        }
        break;
      default:
        if (inEntries && depth === 2) empty = false;
    }
  }
  return depth === 0 && spans && spans.close > 0 ? spans : undefined;
}

/** The entries array, parsed a batch (ENTRIES_PER_BATCH) at a time as it is iterated. */
class BatchedEntries implements RawEntries {
  readonly length: number;

  constructor(
    private readonly json: Buffer,
    private readonly spans: EntrySpans,
    private readonly layer: string,
  ) {
    this.length = spans.count;
  }

  *[Symbol.iterator](): Iterator<unknown> {
    const { json, spans, layer } = this;
    if (this.length === 0) return;
    let seen = 0;
    const starts = spans.batchStarts;
    for (let k = 0; k < starts.length; k++) {
      const end = k + 1 < starts.length ? starts[k + 1]! - 1 : spans.close;
      const batch = parseJson(`[${json.toString('utf8', starts[k], end)}]`, layer);
      const expected = Math.min(ENTRIES_PER_BATCH, this.length - seen);
      // The scan counted the commas: a batch that parses to another count is not this document.
      if (!Array.isArray(batch) || batch.length !== expected) throw new FormatError(`layer ${layer}: TOC entries ${seen}-${seen + expected - 1} are not ${expected} JSON values`);
      seen += expected;
      yield* batch;
    }
  }
}

/** A c/storage TOC states `endOffset` on files with data; the stargz schema never does. */
export function looksLikeCStorageSchema(entries: RawEntries): boolean {
  for (const e of entries) {
    const r = e as Record<string, unknown> | null;
    if (r && typeof r === 'object' && r.type === 'reg' && typeof r.size === 'number' && r.size > 0) return r.endOffset !== undefined;
  }
  return true;
}
