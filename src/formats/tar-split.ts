/**
 * tar-split (vbatts/tar-split JSON lines, formats.md §2.10): only what readers need from it,
 * the length of the uncompressed layer stream it rebuilds.
 */
import { FormatError, preview } from '../errors.js';
import { decompressionAllowance, decompressZstdBounded } from './zstd-frames.js';

const SEGMENT = 2;
const FILE = 1;

function base64Length(s: string): number {
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  return (s.length / 4) * 3 - pad;
}

/**
 * Length of the tar stream the tar-split describes: raw segments (headers, padding, EOA,
 * trailing bytes) plus file contents. `compressed` must already be verified.
 */
export async function tarSplitStreamLength(layer: string, compressed: Buffer, uncompressedLength: number, maxBytes: number): Promise<number> {
  let text: string;
  try {
    const raw = await decompressZstdBounded(compressed, decompressionAllowance(uncompressedLength, maxBytes));
    if (raw.length !== uncompressedLength) throw new Error(`${raw.length} bytes, the position says ${uncompressedLength}`);
    text = raw.toString('utf8');
  } catch (e) {
    throw new FormatError(`layer ${layer}: cannot decompress tar-split: ${(e as Error).message}`, { cause: e });
  }
  let total = 0;
  let line = 0;
  for (let start = 0; start < text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const l = text.slice(start, end);
    start = end + 1;
    if (l.trim() === '') continue;
    let rec: { type?: unknown; size?: unknown; payload?: unknown };
    try {
      rec = JSON.parse(l);
    } catch {
      throw new FormatError(`layer ${layer}: tar-split line ${line + 1} is not JSON`);
    }
    if (typeof rec !== 'object' || rec === null) throw new FormatError(`layer ${layer}: tar-split line ${line + 1} is not a JSON object`);
    if (rec.type === SEGMENT) {
      if (typeof rec.payload !== 'string' || rec.payload.length % 4 !== 0) throw new FormatError(`layer ${layer}: tar-split line ${line + 1}: bad segment payload`);
      total += base64Length(rec.payload);
    } else if (rec.type === FILE) {
      const size = rec.size ?? 0;
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new FormatError(`layer ${layer}: tar-split line ${line + 1}: bad size`);
      total += size;
    } else throw new FormatError(`layer ${layer}: tar-split line ${line + 1}: unknown type ${preview(rec.type)}`);
  }
  if (!Number.isSafeInteger(total)) throw new FormatError(`layer ${layer}: tar-split stream length overflows`);
  return total;
}
