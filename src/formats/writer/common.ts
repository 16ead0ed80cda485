/** Pieces shared by the layer writers. */
import { FormatError } from '../../errors.js';
import type { TarHeader } from '../tar/read.js';
import type { Timestamp } from '../toc.js';

/** RFC 3339 in UTC as Go's time.MarshalJSON writes it (fraction without trailing zeros). */
export function formatRfc3339(t: Timestamp): string {
  const d = new Date(t.sec * 1000);
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() < 0 || d.getUTCFullYear() > 9999) throw new FormatError(`time ${t.sec} cannot be written as RFC 3339`);
  const base = d.toISOString().slice(0, 19);
  const frac = t.nsec ? '.' + String(t.nsec).padStart(9, '0').replace(/0+$/, '') : '';
  return `${base}${frac}Z`;
}

/** zstd skippable frame (magic 0x184D2A50) around `payload`. */
export function skippableFrame(payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

export function u64le(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 8);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), i * 8));
  return b;
}

/** TOC writers describe only the types a TOC has; sparse and exotic members are refused (c/storage and stargz refuse them too). */
export function checkWritable(h: TarHeader): asserts h is TarHeader & { type: Exclude<TarHeader['type'], 'other'> } {
  if (h.type === 'other') throw new FormatError(`tar: ${JSON.stringify(h.name)}: member type ${JSON.stringify(h.typeflag)} cannot be described in a TOC`);
  if (h.sparse) throw new FormatError(`tar: ${JSON.stringify(h.name)}: GNU sparse members cannot be written as a lazy layer (expand the file first)`);
}

/** xattrs as TOCs carry them: name -> base64, names sorted (Go map order). */
export function xattrsBase64(x: Record<string, Buffer>): Record<string, string> | undefined {
  const keys = Object.keys(x).sort();
  if (keys.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const k of keys) out[k] = x[k]!.toString('base64');
  return out;
}
