/**
 * Fetching the eStargz / legacy stargz TOC: a gzip member holding a tar entry
 * `stargz.index.json` between the TOC offset and the footer (docs/formats.md §3.2, §3.3).
 */
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';
import { FormatError } from '../errors.js';
import type { BlobReader } from '../source/types.js';
import { readRange } from './blob-range.js';
import { blockPath, BLOCK, checksumOk, decodeHeaderBlock, type HeaderBlock } from './tar/header.js';
import type { TocLimits } from './toc.js';

const gunzip = promisify(gunzipCb);
const TOC_TAR_NAME = 'stargz.index.json';

export interface EstargzTocBytes {
  /** The TOC gzip member [tocOffset, footer start). */
  member: Buffer;
  json: Buffer;
}

/** The stargz.index.json header block, with the fields the TOC depends on checked. */
function tocHeader(block: Buffer, layer: string): HeaderBlock {
  let h: HeaderBlock;
  let checksumMatches: boolean;
  try {
    h = decodeHeaderBlock(block);
    checksumMatches = checksumOk(block);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    throw new FormatError(`layer ${layer}: TOC member holds no readable tar header: ${e.message}`, { cause: e });
  }
  const name = blockPath(h);
  if (name !== TOC_TAR_NAME) throw new FormatError(`layer ${layer}: TOC member holds ${JSON.stringify(name.slice(0, 100))}, not ${TOC_TAR_NAME}`);
  if (h.typeflag !== '0' && h.typeflag !== '\0') throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} is not a regular tar entry`);
  if (!checksumMatches) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} tar header checksum is wrong`);
  if (h.size < 0) throw new FormatError(`layer ${layer}: ${TOC_TAR_NAME} has an unreadable size`);
  return h;
}

/** The JSON inside the tar stream a TOC member decompresses to. */
export function tocJsonFromTar(tar: Buffer, layer: string, limits: TocLimits): Buffer {
  if (tar.length < BLOCK) throw new FormatError(`layer ${layer}: TOC member holds no tar header`);
  const { size } = tocHeader(tar.subarray(0, BLOCK), layer);
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
