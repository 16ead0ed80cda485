/**
 * tar-split (vbatts/tar-split JSON packer, docs/formats.md §2.10): JSON lines that rebuild the exact
 * tar stream from raw segments and file contents. Written into zstd:chunked layers; readers
 * need only the length of the uncompressed layer stream it rebuilds; parsed in full to check
 * a layer rebuilds to its source.
 */
import { FormatError, preview } from '../errors.js';
import { Crc64 } from './crc64.js';
import { decompressionAllowance, decompressZstdBounded } from './zstd-frames.js';

/** Entry types: raw bytes of the stream (headers, padding), and a member's content. */
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
    this.add(`{"type":${SEGMENT},"payload":"${raw.toString('base64')}","position":${this.position++}}`);
  }

  /** One tar member's content marker; throws on a duplicate name, as the tar-split packer does. */
  file(name: string, size: number, crc: Buffer | null): void {
    const clean = cleanPath(name);
    if (this.seen.has(clean)) throw new FormatError(`tar: duplicate entry ${JSON.stringify(name)}: zstd:chunked layers need unique names`);
    this.seen.add(clean);
    const nameField = isValidUtf8Name(name) ? `"name":${JSON.stringify(name)}` : `"name_raw":"${Buffer.from(name).toString('base64')}"`;
    const sizeField = size > 0 ? `,"size":${size}` : '';
    const payload = crc ? `"${crc.toString('base64')}"` : 'null';
    this.add(`{"type":${FILE},${nameField}${sizeField},"payload":${payload},"position":${this.position++}}`);
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
