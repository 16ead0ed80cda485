/**
 * The `info` file of a store layer: the containers/storage Layer record c/storage decodes
 * (README.md, "Podman additional layer store"). Every value comes from the manifest, the
 * verified config and the verified TOC; nothing is guessed — a value that is not known is left out.
 */
import { tocDigestsOf } from '../layer/open.js';
import type { LayerToc } from '../formats/toc.js';
import type { Descriptor } from '../source/types.js';

/** pkg/archive's Compression enum. */
const COMPRESSION_ID = { gzip: 2, zstd: 4 } as const;

export interface LayerInfo {
  'compressed-diff-digest': string;
  'compressed-size': number;
  'diff-digest': string;
  'diff-size'?: number;
  compression: number;
  'toc-digest'?: string;
  flags: { 'expected-layer-diffid': string };
  uidset: number[];
  gidset: number[];
}

/**
 * The TOC digests a layer can be looked up by (Podman ≥ 5.1 keys): the eStargz
 * `toc.digest` and the zstd:chunked manifest checksum (c/storage reads the
 * `io.github.…` spelling; the older `io.containers.…` one is accepted too).
 */
function idSet(values: Iterable<number>): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

/**
 * `diffId` is the config's rootfs.diff_ids entry for the layer (c/image builds the layer ID
 * from it). `key` is the name the layer was looked up by: when it is a TOC digest, that is
 * the `toc-digest` c/image expects back.
 */
export function layerInfo(desc: Descriptor, diffId: string, toc: LayerToc, key: string): LayerInfo {
  const tocDigests = tocDigestsOf(desc);
  const tocDigest = tocDigests.includes(key) ? key : tocDigests[0];
  const uids: number[] = [];
  const gids: number[] = [];
  for (const e of toc.entries) {
    uids.push(e.uid);
    gids.push(e.gid);
  }
  return {
    'compressed-diff-digest': desc.digest,
    'compressed-size': desc.size,
    'diff-digest': diffId,
    ...(toc.uncompressedSize !== undefined ? { 'diff-size': toc.uncompressedSize } : {}),
    compression: COMPRESSION_ID[toc.compression],
    ...(tocDigest ? { 'toc-digest': tocDigest } : {}),
    flags: { 'expected-layer-diffid': diffId },
    uidset: idSet(uids),
    gidset: idSet(gids),
  };
}
