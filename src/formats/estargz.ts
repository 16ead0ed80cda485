/**
 * Fetching the eStargz / legacy stargz TOC: a gzip member holding a tar entry
 * `stargz.index.json` between the TOC offset and the footer (formats.md §3.2, §3.3).
 */
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import { FormatError } from '../errors.js';
import type { BlobReader } from '../source/types.js';
import { readRange } from './blob-range.js';
import type { TocLimits } from './toc.js';

const gunzip = promisify(gunzipCb);
const TOC_TAR_NAME = 'stargz.index.json';
const BLOCK = 512;

export interface EstargzTocBytes {
  /** The TOC gzip member [tocOffset, footer start). */
  member: Buffer;
  json: Buffer;
}

function tarString(h: Buffer, at: number, len: number): string {
  const field = h.subarray(at, at + len);
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul < 0 ? len : nul);
}

function tarOctal(h: Buffer, at: number, len: number): number | undefined {
  const s = tarString(h, at, len).trim();
  return /^[0-7]{1,11}$/.test(s) ? parseInt(s, 8) : undefined;
}

/** The JSON inside the tar stream a TOC member decompresses to. */
export function tocJsonFromTar(tar: Buffer, layer: string, limits: TocLimits): Buffer {
  if (tar.length < BLOCK) throw new FormatError(`layer ${layer}: TOC member holds no tar header`);
  const h = tar.subarray(0, BLOCK);
  const prefix = h.toString('latin1', 257, 262) === 'ustar' ? tarString(h, 345, 155) : '';
  const name = (prefix ? prefix + '/' : '') + tarString(h, 0, 100);
  if (name !== TOC_TAR_NAME) throw new FormatError(`layer ${layer}: TOC member holds ${JSON.stringify(name.slice(0, 100))}, not ${TOC_TAR_NAME}`);
  const typeflag = h[156];
  if (typeflag !== 0x30 && typeflag !== 0) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} is not a regular tar entry`);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  if (tarOctal(h, 148, 8) !== sum) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} tar header checksum is wrong`);
  const size = tarOctal(h, 124, 12);
  if (size === undefined) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} has an unreadable size`);
  if (size > limits.maxUncompressedTocBytes) throw new FormatError(`layer ${layer}: uncompressed TOC of ${size} bytes exceeds the limit of ${limits.maxUncompressedTocBytes}`);
  if (BLOCK + size > tar.length) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} is truncated (${tar.length - BLOCK} of ${size} bytes)`);
  return tar.subarray(BLOCK, BLOCK + size);
}

export async function fetchEstargzToc(blob: BlobReader, layer: string, tocOffset: number, footerLength: number, limits: TocLimits, have?: { offset: number; bytes: Buffer }): Promise<EstargzTocBytes> {
  const end = blob.size - footerLength;
  if (!(tocOffset < end)) throw new FormatError(`layer ${layer}: footer puts the TOC at ${tocOffset}, outside the ${blob.size}-byte blob`);
  if (end - tocOffset > limits.maxCompressedTocBytes)
    throw new FormatError(`layer ${layer}: compressed TOC of ${end - tocOffset} bytes exceeds the limit of ${limits.maxCompressedTocBytes}`);
  const member = await readRange(blob, layer, tocOffset, end, 'TOC', have);
  let tar: Buffer;
  try {
    // The member holds the tar header, the JSON, padding and the end-of-archive blocks.
    tar = await gunzip(member, { maxOutputLength: limits.maxUncompressedTocBytes + 4 * BLOCK + 2 * BLOCK });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE')
      throw new FormatError(`layer ${layer}: TOC member at ${tocOffset} decompresses to more than the limit of ${limits.maxUncompressedTocBytes} bytes`, { cause: e });
    throw new FormatError(`layer ${layer}: cannot decompress TOC member at ${tocOffset}: ${(e as Error).message}`, { cause: e });
  }
  return { member, json: tocJsonFromTar(tar, layer, limits) };
}
