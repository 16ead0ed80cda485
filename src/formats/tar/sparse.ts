/**
 * GNU sparse files: the map of data regions, in old GNU `S` headers (and their extension
 * blocks) or, for PAX 1.0, as text at the start of the member's data.
 */
import { FormatError } from '../../errors.js';
import { parseNumeric, tarPadding } from './header.js';

export interface SparseInfo {
  realSize: number;
  /** Regions of real data in the expanded file; everything else is zeros. */
  map: Array<{ offset: number; length: number }>;
  /** PAX 1.0: the map is a text block at the start of the data; old GNU: in the headers. */
  mapInData: boolean;
}

/** Old GNU `S` header: 4 pairs at 386, the is-extended flag at 482, the real size at 483. */
const OLD_GNU = { pairsAt: 386, pairs: 4, isExtended: 482, realSize: { at: 483, len: 12 } } as const;
/** Old GNU sparse extension block: 21 pairs at 0, the is-extended flag at 504. */
const EXTENSION = { pairsAt: 0, pairs: 21, isExtended: 504 } as const;

/** Old GNU sparse entries: 24-byte (offset, numbytes) pairs of 12-byte numeric fields. */
function gnuSparsePairs(b: Buffer, at: number, count: number, into: SparseInfo['map']): void {
  for (let i = 0; i < count; i++) {
    const o = at + i * 24;
    if (b[o] === 0) return;
    into.push({ offset: parseNumeric(b, o, 12, 'sparse offset'), length: parseNumeric(b, o + 12, 12, 'sparse length') });
  }
}

/** The sparse map an old GNU `S` header holds itself. */
export function oldGnuSparse(block: Buffer): SparseInfo {
  const map: SparseInfo['map'] = [];
  gnuSparsePairs(block, OLD_GNU.pairsAt, OLD_GNU.pairs, map);
  return { realSize: parseNumeric(block, OLD_GNU.realSize.at, OLD_GNU.realSize.len, 'sparse realsize'), map, mapInData: false };
}

/** Whether extension blocks with more of the map follow this `S` header. */
export function hasSparseExtension(block: Buffer): boolean {
  return block[OLD_GNU.isExtended] !== 0;
}

/** Adds an extension block's pairs to the map; true when another extension block follows. */
export function readSparseExtension(ext: Buffer, into: SparseInfo['map']): boolean {
  gnuSparsePairs(ext, EXTENSION.pairsAt, EXTENSION.pairs, into);
  return ext[EXTENSION.isExtended] !== 0;
}

/**
 * The PAX 1.0 sparse map text at the start of the data: count, then offset/length pairs,
 * padded to a block. Undefined while `data` does not yet hold all of it.
 */
export function parseSparseMapText(data: Buffer, name: string): { map: SparseInfo['map']; length: number } | undefined {
  const lines: number[] = [];
  let p = 0;
  let need = 1;
  while (lines.length < need) {
    const nl = data.indexOf(0x0a, p);
    if (nl < 0) {
      if (data.length - p > 32) throw new FormatError(`tar: ${name}: bad sparse map`);
      return undefined;
    }
    const s = data.toString('latin1', p, nl);
    if (!/^[0-9]+$/.test(s)) throw new FormatError(`tar: ${name}: bad sparse map line ${JSON.stringify(s.slice(0, 40))}`);
    lines.push(Number(s));
    if (lines.length === 1) need = 1 + 2 * lines[0]!;
    p = nl + 1;
  }
  const map: SparseInfo['map'] = [];
  for (let i = 1; i < lines.length; i += 2) map.push({ offset: lines[i]!, length: lines[i + 1]! });
  return { map, length: p + tarPadding(p) };
}
