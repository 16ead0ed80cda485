/**
 * tar-split (vbatts/tar-split JSON packer, formats.md §2.10): JSON lines that rebuild the exact
 * tar stream from raw segments and file contents. Written into zstd:chunked layers; parsed
 * here too, to check a layer rebuilds to its source.
 */
import { FormatError } from '../../errors.js';

// CRC-64/ISO as Go's hash/crc64 computes it (reflected poly 0xD800000000000000, init and
// xorout all ones), slicing-by-8 on 32-bit halves (BigInt per byte is far too slow).
// TABLES_HI[k * 256 + i] / TABLES_LO[...]: table k of the slicing scheme.
// Int32Array and signed arithmetic keep every value a small integer for V8 (uint32 values
// above 2^31 become doubles, several times slower).
const TABLES_HI = new Int32Array(8 * 256);
const TABLES_LO = new Int32Array(8 * 256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const bit = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (bit) hi = (hi ^ 0xd8000000) >>> 0;
  }
  TABLES_HI[i] = hi;
  TABLES_LO[i] = lo;
}
for (let k = 1; k < 8; k++) {
  for (let i = 0; i < 256; i++) {
    const phi = TABLES_HI[(k - 1) * 256 + i]!;
    const plo = TABLES_LO[(k - 1) * 256 + i]!;
    const idx = plo & 0xff;
    TABLES_LO[k * 256 + i] = (((plo >>> 8) | (phi << 24)) ^ TABLES_LO[idx]!) >>> 0;
    TABLES_HI[k * 256 + i] = ((phi >>> 8) ^ TABLES_HI[idx]!) >>> 0;
  }
}

export class Crc64 {
  private hi = -1;
  private lo = -1;

  update(data: Uint8Array): this {
    const TH = TABLES_HI;
    const TL = TABLES_LO;
    let hi = this.hi;
    let lo = this.lo;
    let i = 0;
    const end8 = data.length - (data.length % 8);
    for (; i < end8; i += 8) {
      const a = lo ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      const b = hi ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24));
      const i7 = 7 * 256 + (a & 0xff), i6 = 6 * 256 + ((a >>> 8) & 0xff), i5 = 5 * 256 + ((a >>> 16) & 0xff), i4 = 4 * 256 + (a >>> 24);
      const i3 = 3 * 256 + (b & 0xff), i2 = 2 * 256 + ((b >>> 8) & 0xff), i1 = 256 + ((b >>> 16) & 0xff), i0 = b >>> 24;
      lo = TL[i7]! ^ TL[i6]! ^ TL[i5]! ^ TL[i4]! ^ TL[i3]! ^ TL[i2]! ^ TL[i1]! ^ TL[i0]!;
      hi = TH[i7]! ^ TH[i6]! ^ TH[i5]! ^ TH[i4]! ^ TH[i3]! ^ TH[i2]! ^ TH[i1]! ^ TH[i0]!;
    }
    for (; i < data.length; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ TL[idx]!;
      hi = (hi >>> 8) ^ TH[idx]!;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  /** Big-endian, as Go's Sum(nil). */
  digest(): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32BE(~this.hi >>> 0, 0);
    b.writeUInt32BE(~this.lo >>> 0, 4);
    return b;
  }
}

export const SEGMENT = 2;
export const FILE = 1;

export type TarSplitEntry =
  | { type: typeof SEGMENT; payload: Buffer; position: number }
  | { type: typeof FILE; name: string; size: number; crc: Buffer | null; position: number };

function isValidUtf8Name(name: string): boolean {
  return !name.includes('\ufffd');
}

/** Accumulates tar-split lines in stream order. */
export class TarSplitBuilder {
  private lines: string[] = [];
  private position = 0;
  private seen = new Set<string>();
  uncompressedLength = 0;

  private add(line: string): void {
    const l = line + '\n';
    this.lines.push(l);
    this.uncompressedLength += Buffer.byteLength(l);
  }

  segment(raw: Buffer): void {
    if (raw.length === 0) return;
    this.add(`{"type":2,"payload":"${raw.toString('base64')}","position":${this.position++}}`);
  }

  /** One tar member's content marker; throws on a duplicate name, as the tar-split packer does. */
  file(name: string, size: number, crc: Buffer | null): void {
    const clean = cleanPath(name);
    if (this.seen.has(clean)) throw new FormatError(`tar: duplicate entry ${JSON.stringify(name)}: zstd:chunked layers need unique names`);
    this.seen.add(clean);
    const nameField = isValidUtf8Name(name) ? `"name":${JSON.stringify(name)}` : `"name_raw":"${Buffer.from(name).toString('base64')}"`;
    const sizeField = size > 0 ? `,"size":${size}` : '';
    const payload = crc ? `"${crc.toString('base64')}"` : 'null';
    this.add(`{"type":1,${nameField}${sizeField},"payload":${payload},"position":${this.position++}}`);
  }

  text(): Buffer {
    return Buffer.from(this.lines.join(''));
  }
}

/** Go's filepath.Clean for the duplicate check. */
function cleanPath(p: string): string {
  const abs = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else if (!abs) out.push('..');
    } else out.push(part);
  }
  const s = (abs ? '/' : '') + out.join('/');
  return s || (abs ? '/' : '.');
}

export function parseTarSplit(text: Buffer): TarSplitEntry[] {
  const out: TarSplitEntry[] = [];
  for (const [i, line] of text.toString('utf8').split('\n').entries()) {
    if (line === '') continue;
    let j: { type?: unknown; name?: unknown; name_raw?: unknown; size?: unknown; payload?: unknown; position?: unknown };
    try {
      j = JSON.parse(line);
    } catch {
      throw new FormatError(`tar-split line ${i + 1}: not JSON`);
    }
    const position = typeof j.position === 'number' ? j.position : -1;
    if (j.type === SEGMENT && typeof j.payload === 'string') out.push({ type: SEGMENT, payload: Buffer.from(j.payload, 'base64'), position });
    else if (j.type === FILE) {
      const name = typeof j.name === 'string' ? j.name : typeof j.name_raw === 'string' ? Buffer.from(j.name_raw, 'base64').toString('utf8') : undefined;
      if (name === undefined) throw new FormatError(`tar-split line ${i + 1}: file entry without a name`);
      const size = typeof j.size === 'number' ? j.size : 0;
      out.push({ type: FILE, name, size, crc: typeof j.payload === 'string' ? Buffer.from(j.payload, 'base64') : null, position });
    } else throw new FormatError(`tar-split line ${i + 1}: unknown entry type ${JSON.stringify(j.type)}`);
  }
  return out;
}

/**
 * Rebuilds the tar stream: segments verbatim, file contents from `content(name)` checked
 * against their CRC-64.
 */
export async function* rebuildTar(entries: TarSplitEntry[], content: (name: string, size: number) => Promise<Buffer>): AsyncGenerator<Buffer> {
  for (const e of entries) {
    if (e.type === SEGMENT) {
      yield e.payload;
      continue;
    }
    if (e.size === 0) continue;
    const data = await content(e.name, e.size);
    if (data.length !== e.size) throw new FormatError(`tar-split: ${e.name}: content has ${data.length} bytes, expected ${e.size}`);
    const crc = new Crc64().update(data).digest();
    if (!e.crc || !crc.equals(e.crc)) throw new FormatError(`tar-split: ${e.name}: CRC-64 mismatch`);
    yield data;
  }
}
