/**
 * Hostile layers (GitHub issue #2 item 7): each case takes a layer, changes one thing
 * (re-packing the TOC with correct digests so nothing else is wrong), and checks that
 * readLayerToc refuses it with an error that names the layer, the entry and the fault. One
 * suite body runs the cases of layers tocfs's own writers make (always), and those of real
 * corpus layers (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { sha256 } from '../src/digest.js';
import { TocfsError } from '../src/errors.js';
import { extractChunk, readLayerToc, readLayerTocParsed, type ReadTocOptions } from '../src/formats/index.js';
import { HAVE_CORPUS, CORPUS_DIR } from './helpers/corpus.js';
import { seededContent, type FileSpec } from './helpers/images.js';
import { corpusLayer, memoryBlob, repack, repackRaw, tocText, withoutAnnotations, type TestLayer, type TocJson } from './helpers/toc-repack.js';
import type { BlobReader, Descriptor } from '../src/source/types.js';
import { asV1Footer, copyLayer, writerLayer } from './helpers/writer-layers.js';

interface Case {
  name: string;
  make: () => Promise<TestLayer>;
  error: RegExp;
  /** The message must name this entry. */
  entry?: string;
  opts?: ReadTocOptions;
}

// c/storage 1.43 (v1 footer, no tar-split), c/storage 1.57 (v3 footer + tar-split), eStargz.

/** readLayerToc's path into the parsed form (layer/open.ts). */
const readParsed = (desc: Descriptor, blob: BlobReader, opts?: ReadTocOptions) => readLayerTocParsed(desc, blob, 'ctx', opts);
const zc = (): TestLayer => corpusLayer('zstdchunked-skopeo19-layers', 0);
const zcNew = (): TestLayer => corpusLayer('zstdchunked-skopeo118-layers', 0);
const esgz = (): TestLayer => corpusLayer('estargz-ctrremote-basic', 0);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Entry = any;
const firstReg = (doc: TocJson): Entry => doc.entries.find((x: Entry) => x.type === 'reg' && x.size > 0 && !String(x.name).includes('landmark'));
const chunked = (doc: TocJson): { reg: Entry; chunks: Entry[] } => {
  const i = doc.entries.findIndex((x: Entry, k: number) => x.type === 'reg' && doc.entries[k + 1]?.type === 'chunk');
  const chunks: Entry[] = [];
  for (let k = i + 1; doc.entries[k]?.type === 'chunk'; k++) chunks.push(doc.entries[k]);
  return { reg: doc.entries[i], chunks };
};
const edit = (base: () => TestLayer, change: (doc: TocJson) => void | string | Buffer) => () => repack(base(), change);
const editAnnotations = (base: () => TestLayer, change: (a: Record<string, string>) => void) => async (): Promise<TestLayer> => {
  const l = base();
  change(l.desc.annotations!);
  return l;
};
const editBytes = (base: () => TestLayer, change: (b: Buffer) => Buffer) => async (): Promise<TestLayer> => {
  const l = base();
  const bytes = change(Buffer.from(l.bytes));
  return { bytes, desc: { ...l.desc, size: bytes.length, digest: sha256(bytes) } };
};
const addEntries = (base: () => TestLayer, ...entries: Entry[]) => edit(base, (d) => void d.entries.push(...entries));
const reg = { type: 'reg', mode: 420, modtime: '2023-11-14T22:13:20Z' };

const cases: Case[] = [
  // Footers, positions, digests, limits
  { name: 'truncated footer, no annotations', make: async () => withoutAnnotations(await editBytes(zc, (b) => b.subarray(0, b.length - 5))()), error: /no TOC/, opts: { allowUnverified: true } },
  { name: 'wrong footer magic, no annotations', make: async () => withoutAnnotations(await editBytes(zc, (b) => (b.write('X', b.length - 8, 'latin1'), b))()), error: /no TOC/, opts: { allowUnverified: true } },
  { name: 'eStargz footer magic wrong though toc.digest is annotated', make: editBytes(esgz, (b) => (b.write('STARGX', b.length - 19, 'latin1'), b)), error: /annotated with a stargz toc\.digest but has no eStargz or zstd footer/ },
  { name: 'eStargz footer pointing at the start of the blob', make: editBytes(esgz, (b) => (b.write('0'.repeat(16), b.length - 35, 'latin1'), b)), error: /TOC member holds "\.no\.prefetch\.landmark", not stargz\.index\.json/ },
  { name: 'eStargz footer pointing past the TOC', make: editBytes(esgz, (b) => (b.write((b.length - 40).toString(16).padStart(16, '0'), b.length - 35, 'latin1'), b)), error: /footer puts the TOC at \d+, outside the \d+-byte blob/ },
  { name: 'blob truncated: TOC position past the end', make: editBytes(zc, (b) => b.subarray(0, b.length - 100)), error: /TOC position .*outside the \d+-byte blob/ },
  { name: 'footer disagrees with the annotations', make: editBytes(zc, (b) => (b.writeBigUInt64LE(b.readBigUInt64LE(b.length - 40) - 1n, b.length - 40), b)), error: /footer says TOC .* annotations say/ },
  { name: 'position that does not point at a skippable frame', make: editAnnotations(zc, (a) => (a['io.containers.zstd-chunked.manifest-position'] = a['io.containers.zstd-chunked.manifest-position']!.replace(/^(\d+)/, (m) => String(Number(m) - 3)))), error: /no skippable frame of \d+ bytes holds the TOC at \d+/ },
  { name: 'unknown manifest type in the position annotation', make: editAnnotations(zc, (a) => (a['io.containers.zstd-chunked.manifest-position'] = a['io.containers.zstd-chunked.manifest-position']!.replace(/:1$/, ':2'))), error: /unknown manifest type 2/ },
  { name: 'malformed position annotation', make: editAnnotations(zc, (a) => (a['io.containers.zstd-chunked.manifest-position'] = '12:-3:x:1')), error: /manifest-position is malformed/ },
  { name: 'position without checksum', make: editAnnotations(zc, (a) => delete a['io.containers.zstd-chunked.manifest-checksum']), error: /without .*manifest-checksum: nothing vouches for the TOC/ },
  { name: 'bad TOC digest (zstd:chunked, compressed TOC)', make: editAnnotations(zc, (a) => (a['io.containers.zstd-chunked.manifest-checksum'] = sha256(Buffer.from('other')))), error: /compressed TOC: digest mismatch: expected sha256:[0-9a-f]{64}, got sha256:/ },
  { name: 'bad TOC digest (eStargz, TOC JSON)', make: editAnnotations(esgz, (a) => (a['containerd.io/snapshot/stargz/toc.digest'] = sha256(Buffer.from('other')))), error: /TOC JSON: digest mismatch/ },
  { name: 'stargz-zstd: right compressed-TOC checksum, wrong toc.digest', make: editAnnotations(() => corpusLayer('zstdchunked-ctrremote-basic', 0), (a) => (a['containerd.io/snapshot/stargz/toc.digest'] = sha256(Buffer.from('other')))), error: /TOC JSON: digest mismatch/ },
  { name: 'oversized compressed TOC (zstd)', make: async () => zc(), opts: { limits: { maxCompressedTocBytes: 100 } }, error: /compressed TOC of \d+ bytes exceeds the limit of 100/ },
  { name: 'oversized uncompressed TOC (zstd)', make: async () => zc(), opts: { limits: { maxUncompressedTocBytes: 1000 } }, error: /uncompressed TOC of \d+ bytes exceeds the limit of 1000/ },
  { name: 'oversized compressed TOC (eStargz)', make: async () => esgz(), opts: { limits: { maxCompressedTocBytes: 100 } }, error: /compressed TOC of \d+ bytes exceeds the limit of 100/ },
  { name: 'oversized uncompressed TOC (eStargz)', make: async () => esgz(), opts: { limits: { maxUncompressedTocBytes: 1000 } }, error: /decompresses to more than the limit of 1000 bytes/ },
  { name: 'too many entries', make: async () => zc(), opts: { limits: { maxEntries: 5 } }, error: /TOC has \d+ entries, more than the limit of 5/ },
  { name: 'declared uncompressed length is wrong', make: async () => { const l = await repack(zc(), () => {}); const k = 'io.containers.zstd-chunked.manifest-position'; const [o, c, u] = l.desc.annotations![k]!.split(':'); l.desc.annotations![k] = `${o}:${c}:${Number(u) + 1}:1`; return l; }, error: /TOC decompresses to \d+ bytes, the position says \d+/ },
  {
    name: 'decompression bomb (zstd TOC far larger than declared)',
    make: async () => {
      const json = Buffer.from(await tocText(zc()));
      const { compress } = await import('@mongodb-js/zstd');
      return repackRaw(zc(), json, await compress(Buffer.concat([json, Buffer.alloc(64 << 20, 0x20)]), 3));
    },
    error: /cannot decompress TOC: may decompress to up to \d+ bytes, more than the limit of \d+/,
  },
  { name: 'decompression bomb (eStargz member)', make: edit(esgz, (d) => JSON.stringify(d) + ' '.repeat(8 << 20)), opts: { limits: { maxUncompressedTocBytes: 1 << 20 } }, error: /decompresses to more than the limit of 1048576 bytes/ },
  // JSON
  { name: 'malformed JSON', make: edit(zc, () => '{"version":1,"entries":['), error: /TOC is not valid JSON/ },
  { name: 'trailing garbage after the JSON', make: edit(zc, (d) => JSON.stringify(d) + ' {}'), error: /TOC is not valid JSON/ },
  { name: 'unsupported TOC version', make: edit(zc, (d) => void (d.version = 2)), error: /unsupported TOC version 2 \(expected 1\)/ },
  { name: 'deeply nested JSON entries', make: edit(zc, () => `{"version":1,"entries":${'['.repeat(500_000)}${']'.repeat(500_000)}}`), error: /TOC entry #0: not a JSON object/ },
  { name: 'deeply nested JSON document', make: edit(esgz, () => `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`), error: /TOC is not a JSON object/ },
  // Names
  { name: 'name escaping the root', make: addEntries(zc, { ...reg, name: '../../etc/passwd' }), error: /climbs out of the root/, entry: '../../etc/passwd' },
  { name: 'name escaping the root after cleaning', make: addEntries(esgz, { ...reg, name: 'etc/../../x' }), error: /climbs out of the root/, entry: 'etc/../../x' },
  { name: 'absolute name', make: addEntries(zc, { ...reg, name: '/etc/shadow' }), error: /absolute name/, entry: '/etc/shadow' },
  { name: 'NUL in a name', make: addEntries(zc, { ...reg, name: 'etc/a\u0000b' }), error: /name contains a NUL byte/ },
  { name: 'root entry that is not a directory', make: addEntries(zc, { ...reg, name: './' }), error: /the root is a reg, not a directory/ },
  { name: 'duplicate regular file with different content', make: edit(zc, (d) => void d.entries.push({ ...firstReg(d), digest: sha256(Buffer.from('evil')) })), error: /duplicate regular file with different content/, entry: 'etc/app.conf' },
  { name: 'duplicate path (symlink over a file)', make: edit(zc, (d) => void d.entries.push({ type: 'symlink', name: firstReg(d).name, linkName: '/etc/shadow', modtime: '2023-11-14T22:13:20Z' })), error: /duplicate path \(first stated as a reg\)/ },
  // Hard links
  { name: 'hard link to a missing target', make: addEntries(zc, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/nope' }), error: /hard link to "etc\/nope": target does not exist/, entry: 'etc/hl' },
  { name: 'hard link to a later entry', make: addEntries(zc, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/later' }, { ...reg, name: 'etc/later' }), error: /target comes later in the archive/ },
  { name: 'hard link cycle', make: addEntries(zc, { type: 'hardlink', name: 'etc/a', linkName: 'etc/b' }, { type: 'hardlink', name: 'etc/b', linkName: './etc/a' }), error: /hard link cycle/ },
  { name: 'hard link to itself', make: addEntries(zc, { type: 'hardlink', name: 'etc/self', linkName: 'etc/self' }), error: /links to itself/ },
  { name: 'hard link to a directory', make: addEntries(zc, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/' }), error: /target is a directory/ },
  { name: 'hard link escaping the root', make: addEntries(zc, { type: 'hardlink', name: 'etc/hl', linkName: '../x' }), error: /hard link target "..\/x": name climbs out of the root/ },
  // Numbers, chunks, ranges
  { name: 'chunk range reaching into the TOC', make: edit(zc, (d) => { const r = d.entries.filter((e: Entry) => e.endOffset).at(-1); r.endOffset = Number(zc().desc.annotations!['io.containers.zstd-chunked.manifest-position']!.split(':')[0]); }), error: /reaches into the TOC region/ },
  { name: 'chunk range outside the blob', make: edit(zc, (d) => { const r = firstReg(d); r.offset = 1e12; r.endOffset = 1e12 + 5; }), error: /reaches into the TOC region/, entry: 'etc/app.conf' },
  { name: 'eStargz chunk starting inside the TOC member', make: edit(esgz, (d) => void (firstReg(d).offset = esgz().bytes.length - 60)), error: /reaches into the TOC region|empty or reversed compressed range/ },
  { name: 'negative offset', make: edit(zc, (d) => void (firstReg(d).offset = -5)), error: /offset is not an integer in \[0, \d+\]: -5/ },
  { name: 'fractional size', make: edit(zc, (d) => void (firstReg(d).size = 1.5)), error: /size is not an integer/ },
  { name: 'offset beyond 2^53', make: edit(zc, (d) => `${JSON.stringify(d).slice(0, -2)},{"type":"reg","name":"big","size":1,"offset":1152921504606846976,"endOffset":1152921504606846980,"digest":"${sha256(Buffer.from('x'))}"}]}`), error: /endOffset is not an integer in \[0, 9007199254740991\]: 1152921504606847000/, entry: 'big' },
  { name: 'mode as a string', make: edit(zc, (d) => void (firstReg(d).mode = '420')), error: /mode is not an integer/ },
  { name: 'reversed compressed range', make: edit(zc, (d) => { const r = firstReg(d); [r.offset, r.endOffset] = [r.endOffset, r.offset]; }), error: /empty or reversed compressed range/ },
  { name: 'chunks with a gap', make: edit(zc, (d) => void (chunked(d).chunks[0].chunkOffset += 1)), error: /chunks do not cover the file contiguously: chunk 1 starts at \d+, expected \d+/ },
  { name: 'chunks shorter than the file', make: edit(zc, (d) => void (chunked(d).reg.size += 10)), error: /chunks cover \d+ of \d+ bytes/ },
  { name: 'chunk without a digest', make: edit(zc, (d) => void delete chunked(d).chunks[0].chunkDigest), error: /chunk 1 \(file offset \d+\) has no digest/ },
  { name: 'eStargz file without any digest', make: edit(esgz, (d) => { const r = firstReg(d); delete r.digest; delete r.chunkDigest; }), error: /chunk 0 \(file offset 0\) has no digest/, entry: 'etc/hostname' },
  { name: 'chunk entry without its file', make: edit(zc, (d) => void d.entries.unshift({ type: 'chunk', name: 'etc/app.conf', offset: 112, chunkOffset: 0, chunkSize: 10 })), error: /chunk entry does not follow the regular file it belongs to/ },
  { name: 'unknown entry type', make: addEntries(zc, { ...reg, type: 'sparse', name: 'x' }), error: /unknown entry type "sparse"/ },
  { name: 'unknown chunkType', make: edit(zc, (d) => void (chunked(d).chunks[0].chunkType = 'holes')), error: /unknown chunkType "holes"/ },
  { name: 'malformed modtime', make: edit(zc, (d) => void (firstReg(d).modtime = 'yesterday')), error: /modtime is not an RFC 3339 time/ },
  { name: 'xattr value that is not base64', make: edit(zc, (d) => void (firstReg(d).xattrs = { 'user.x': '!!!' })), error: /xattr "user.x" is not base64/ },
  { name: 'tar-split digest mismatch', make: edit(zcNew, (d) => void (d.tarSplitDigest = sha256(Buffer.from('other')))), error: /tar-split: digest mismatch/ },
  { name: 'empty file claiming content', make: addEntries(zc, { ...reg, name: 'etc/empty', digest: sha256(Buffer.from('x')) }), error: /empty file with digest/ },
];

// The faults on layers written by tocfs's writers: zstd:chunked as c/storage 1.57 writes it
// (v3 footer, tar-split, io.github annotations) and with the v1 footer of c/storage 1.43, and
// eStargz. These never need the corpus.
const WRITER_FILES: FileSpec[] = [
  { path: 'etc', type: 'dir' },
  { path: 'etc/app.conf', content: 'version=3\n' },
  { path: 'data', type: 'dir' },
  { path: 'data/multi.bin', content: seededContent('hostile-multi', 600_000) },
  { path: 'data/shared.txt', content: 'shared by two layers\n'.repeat(200) },
];
const POS = 'io.github.containers.zstd-chunked.manifest-position';
const SUM = 'io.github.containers.zstd-chunked.manifest-checksum';
const written: { zc?: TestLayer; zc1?: TestLayer; esgz?: TestLayer } = {};
const wzc = (): TestLayer => copyLayer(written.zc!);
const wzc1 = (): TestLayer => copyLayer(written.zc1!);
const wesgz = (): TestLayer => copyLayer(written.esgz!);

const writerCases: Case[] = [
  // Footers, positions, digests, limits
  { name: 'truncated footer, no annotations', make: async () => withoutAnnotations(await editBytes(wzc, (b) => b.subarray(0, b.length - 5))()), error: /no TOC/, opts: { allowUnverified: true } },
  { name: 'wrong v3 footer magic, no annotations', make: async () => withoutAnnotations(await editBytes(wzc, (b) => (b.write('X', b.length - 8, 'latin1'), b))()), error: /no TOC/, opts: { allowUnverified: true } },
  { name: 'wrong v1 footer magic, no annotations', make: async () => withoutAnnotations(await editBytes(wzc1, (b) => (b.write('X', b.length - 8, 'latin1'), b))()), error: /no TOC/, opts: { allowUnverified: true } },
  { name: 'eStargz footer magic wrong though toc.digest is annotated', make: editBytes(wesgz, (b) => (b.write('STARGX', b.length - 19, 'latin1'), b)), error: /annotated with a stargz toc\.digest but has no eStargz or zstd footer/ },
  { name: 'eStargz footer pointing at the start of the blob', make: editBytes(wesgz, (b) => (b.write('0'.repeat(16), b.length - 35, 'latin1'), b)), error: /TOC member holds "\.no\.prefetch\.landmark", not stargz\.index\.json/ },
  { name: 'eStargz footer pointing past the TOC', make: editBytes(wesgz, (b) => (b.write((b.length - 40).toString(16).padStart(16, '0'), b.length - 35, 'latin1'), b)), error: /footer puts the TOC at \d+, outside the \d+-byte blob/ },
  { name: 'blob truncated: TOC position past the end', make: editBytes(wzc1, (b) => b.subarray(0, b.length - 100)), error: /TOC position .*outside the \d+-byte blob/ },
  { name: 'v3 footer disagrees with the annotations', make: editBytes(wzc, (b) => (b.writeBigUInt64LE(b.readBigUInt64LE(b.length - 64) - 1n, b.length - 64), b)), error: /footer says TOC .* annotations say/ },
  { name: 'v1 footer disagrees with the annotations', make: editBytes(wzc1, (b) => (b.writeBigUInt64LE(b.readBigUInt64LE(b.length - 40) - 1n, b.length - 40), b)), error: /footer says TOC .* annotations say/ },
  { name: 'position that does not point at a skippable frame', make: editAnnotations(wzc, (a) => (a[POS] = a[POS]!.replace(/^(\d+)/, (m) => String(Number(m) - 3)))), error: /no skippable frame of \d+ bytes holds the TOC at \d+/ },
  { name: 'unknown manifest type in the position annotation', make: editAnnotations(wzc, (a) => (a[POS] = a[POS]!.replace(/:1$/, ':2'))), error: /unknown manifest type 2/ },
  { name: 'malformed position annotation', make: editAnnotations(wzc, (a) => (a[POS] = '12:-3:x:1')), error: /manifest-position is malformed/ },
  { name: 'position without checksum', make: editAnnotations(wzc, (a) => delete a[SUM]), error: /without .*manifest-checksum: nothing vouches for the TOC/ },
  { name: 'bad TOC digest (zstd:chunked, compressed TOC)', make: editAnnotations(wzc, (a) => (a[SUM] = sha256(Buffer.from('other')))), error: /compressed TOC: digest mismatch: expected sha256:[0-9a-f]{64}, got sha256:/ },
  { name: 'bad TOC digest (eStargz, TOC JSON)', make: editAnnotations(wesgz, (a) => (a['containerd.io/snapshot/stargz/toc.digest'] = sha256(Buffer.from('other')))), error: /TOC JSON: digest mismatch/ },
  { name: 'oversized compressed TOC (zstd)', make: async () => wzc(), opts: { limits: { maxCompressedTocBytes: 100 } }, error: /compressed TOC of \d+ bytes exceeds the limit of 100/ },
  { name: 'oversized uncompressed TOC (zstd)', make: async () => wzc(), opts: { limits: { maxUncompressedTocBytes: 500 } }, error: /uncompressed TOC of \d+ bytes exceeds the limit of 500/ },
  { name: 'oversized compressed TOC (eStargz)', make: async () => wesgz(), opts: { limits: { maxCompressedTocBytes: 100 } }, error: /compressed TOC of \d+ bytes exceeds the limit of 100/ },
  { name: 'oversized uncompressed TOC (eStargz)', make: async () => wesgz(), opts: { limits: { maxUncompressedTocBytes: 500 } }, error: /decompresses to more than the limit of 500 bytes/ },
  { name: 'too many entries', make: async () => wzc(), opts: { limits: { maxEntries: 3 } }, error: /TOC has \d+ entries, more than the limit of 3/ },
  { name: 'declared uncompressed length is wrong', make: async () => { const l = await repack(wzc(), () => {}); const [o, c, u] = l.desc.annotations![POS]!.split(':'); l.desc.annotations![POS] = `${o}:${c}:${Number(u) + 1}:1`; return l; }, error: /TOC decompresses to \d+ bytes, the position says \d+/ },
  {
    name: 'decompression bomb (zstd TOC far larger than declared)',
    make: async () => {
      const json = Buffer.from(await tocText(wzc()));
      const { compress } = await import('@mongodb-js/zstd');
      return repackRaw(wzc(), json, await compress(Buffer.concat([json, Buffer.alloc(64 << 20, 0x20)]), 3));
    },
    error: /cannot decompress TOC: may decompress to up to \d+ bytes, more than the limit of \d+/,
  },
  { name: 'decompression bomb (eStargz member)', make: edit(wesgz, (d) => JSON.stringify(d) + ' '.repeat(8 << 20)), opts: { limits: { maxUncompressedTocBytes: 1 << 20 } }, error: /decompresses to more than the limit of 1048576 bytes/ },
  // JSON
  { name: 'malformed JSON', make: edit(wzc, () => '{"version":1,"entries":['), error: /TOC is not valid JSON/ },
  { name: 'trailing garbage after the JSON', make: edit(wesgz, (d) => JSON.stringify(d) + ' {}'), error: /TOC is not valid JSON/ },
  { name: 'unsupported TOC version', make: edit(wzc, (d) => void (d.version = 2)), error: /unsupported TOC version 2 \(expected 1\)/ },
  { name: 'deeply nested JSON entries', make: edit(wzc, () => `{"version":1,"entries":${'['.repeat(500_000)}${']'.repeat(500_000)}}`), error: /TOC entry #0: not a JSON object/ },
  { name: 'deeply nested JSON document', make: edit(wesgz, () => `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`), error: /TOC is not a JSON object/ },
  // Names
  { name: 'name escaping the root', make: addEntries(wzc, { ...reg, name: '../../etc/passwd' }), error: /climbs out of the root/, entry: '../../etc/passwd' },
  { name: 'name escaping the root after cleaning', make: addEntries(wesgz, { ...reg, name: 'etc/../../x' }), error: /climbs out of the root/, entry: 'etc/../../x' },
  { name: 'absolute name', make: addEntries(wzc, { ...reg, name: '/etc/shadow' }), error: /absolute name/, entry: '/etc/shadow' },
  { name: 'NUL in a name', make: addEntries(wesgz, { ...reg, name: 'etc/a\u0000b' }), error: /name contains a NUL byte/ },
  { name: 'root entry that is not a directory', make: addEntries(wzc, { ...reg, name: './' }), error: /the root is a reg, not a directory/ },
  { name: 'duplicate regular file with different content', make: edit(wzc, (d) => void d.entries.push({ ...firstReg(d), digest: sha256(Buffer.from('evil')) })), error: /duplicate regular file with different content/, entry: 'etc/app.conf' },
  { name: 'duplicate path (symlink over a file)', make: edit(wesgz, (d) => void d.entries.push({ type: 'symlink', name: firstReg(d).name, linkName: '/etc/shadow', modtime: '2023-11-14T22:13:20Z' })), error: /duplicate path \(first stated as a reg\)/ },
  // Hard links
  { name: 'hard link to a missing target', make: addEntries(wzc, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/nope' }), error: /hard link to "etc\/nope": target does not exist/, entry: 'etc/hl' },
  { name: 'hard link to a later entry', make: addEntries(wesgz, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/later' }, { ...reg, name: 'etc/later' }), error: /target comes later in the archive/ },
  { name: 'hard link cycle', make: addEntries(wzc, { type: 'hardlink', name: 'etc/a', linkName: 'etc/b' }, { type: 'hardlink', name: 'etc/b', linkName: './etc/a' }), error: /hard link cycle/ },
  { name: 'hard link to itself', make: addEntries(wzc, { type: 'hardlink', name: 'etc/self', linkName: 'etc/self' }), error: /links to itself/ },
  { name: 'hard link to a directory', make: addEntries(wesgz, { type: 'hardlink', name: 'etc/hl', linkName: 'etc/' }), error: /target is a directory/ },
  { name: 'hard link escaping the root', make: addEntries(wzc, { type: 'hardlink', name: 'etc/hl', linkName: '../x' }), error: /hard link target "..\/x": name climbs out of the root/ },
  // Numbers, chunks, ranges
  { name: 'chunk range reaching into the TOC', make: edit(wzc, (d) => { const r = d.entries.filter((e: Entry) => e.endOffset).at(-1); r.endOffset = Number(wzc().desc.annotations![POS]!.split(':')[0]); }), error: /reaches into the TOC region/ },
  { name: 'chunk range outside the blob', make: edit(wzc, (d) => { const r = firstReg(d); r.offset = 1e12; r.endOffset = 1e12 + 5; }), error: /reaches into the TOC region/, entry: 'etc/app.conf' },
  { name: 'eStargz chunk starting inside the TOC member', make: edit(wesgz, (d) => void (firstReg(d).offset = wesgz().bytes.length - 60)), error: /reaches into the TOC region|empty or reversed compressed range/ },
  { name: 'negative offset', make: edit(wzc, (d) => void (firstReg(d).offset = -5)), error: /offset is not an integer in \[0, \d+\]: -5/ },
  { name: 'fractional size', make: edit(wesgz, (d) => void (firstReg(d).size = 1.5)), error: /size is not an integer/ },
  { name: 'mode as a string', make: edit(wzc, (d) => void (firstReg(d).mode = '420')), error: /mode is not an integer/ },
  { name: 'reversed compressed range', make: edit(wzc, (d) => { const r = firstReg(d); [r.offset, r.endOffset] = [r.endOffset, r.offset]; }), error: /empty or reversed compressed range/ },
  { name: 'chunks with a gap (zstd:chunked)', make: edit(wzc, (d) => void (chunked(d).chunks[0].chunkOffset += 1)), error: /chunks do not cover the file contiguously: chunk 1 starts at \d+, expected \d+/ },
  { name: 'chunks with a gap (eStargz)', make: edit(wesgz, (d) => void (chunked(d).chunks[0].chunkOffset += 1)), error: /chunks do not cover the file contiguously: chunk 1 starts at \d+, expected \d+/ },
  { name: 'chunks shorter than the file', make: edit(wzc, (d) => void (chunked(d).reg.size += 10)), error: /chunks cover \d+ of \d+ bytes/ },
  { name: 'chunk without a digest', make: edit(wzc, (d) => void delete chunked(d).chunks[0].chunkDigest), error: /chunk 1 \(file offset \d+\) has no digest/ },
  { name: 'eStargz file without any digest', make: edit(wesgz, (d) => { const r = firstReg(d); delete r.digest; delete r.chunkDigest; }), error: /chunk 0 \(file offset 0\) has no digest/, entry: 'etc/app.conf' },
  { name: 'chunk entry without its file', make: edit(wzc, (d) => void d.entries.unshift({ type: 'chunk', name: 'etc/app.conf', offset: 112, chunkOffset: 0, chunkSize: 10 })), error: /chunk entry does not follow the regular file it belongs to/ },
  { name: 'unknown entry type', make: addEntries(wzc, { ...reg, type: 'sparse', name: 'x' }), error: /unknown entry type "sparse"/ },
  { name: 'unknown chunkType', make: edit(wzc, (d) => void (chunked(d).chunks[0].chunkType = 'holes')), error: /unknown chunkType "holes"/ },
  { name: 'malformed modtime', make: edit(wesgz, (d) => void (firstReg(d).modtime = 'yesterday')), error: /modtime is not an RFC 3339 time/ },
  { name: 'xattr value that is not base64', make: edit(wzc, (d) => void (firstReg(d).xattrs = { 'user.x': '!!!' })), error: /xattr "user.x" is not base64/ },
  { name: 'tar-split digest mismatch', make: edit(wzc, (d) => void (d.tarSplitDigest = sha256(Buffer.from('other')))), error: /tar-split: digest mismatch/ },
  { name: 'empty file claiming content', make: addEntries(wesgz, { ...reg, name: 'etc/empty', digest: sha256(Buffer.from('x')) }), error: /empty file with digest/ },
];

/** The layers and cases a run of the suite takes. */
interface HostileSet {
  label: string;
  skip: string | false;
  prepare(): Promise<void>;
  /** Layers the re-packing helper is checked on. */
  bases: Array<() => TestLayer>;
  /** What is known of the base layers, checked first. */
  checkBases?(): Promise<void>;
  cases: Case[];
  /** [kind of compressed unit, layer, a file whose first chunk gets a flipped byte]. */
  flips: Array<[string, () => TestLayer, string]>;
}

const SETS: HostileSet[] = [
  {
    label: 'layers written by tocfs (no corpus needed)',
    skip: false,
    prepare: async () => {
      written.zc = await writerLayer('zstd:chunked', WRITER_FILES);
      written.zc1 = await asV1Footer(written.zc);
      written.esgz = await writerLayer('estargz', WRITER_FILES, { chunkSize: 64 * 1024 });
    },
    bases: [wzc, wzc1, wesgz],
    checkBases: async () => {
      const zc = await readLayerToc(written.zc!.desc, memoryBlob(written.zc!));
      const zc1 = await readLayerToc(written.zc1!.desc, memoryBlob(written.zc1!));
      assert.deepEqual([zc.formatVersion, zc1.formatVersion], ['c/storage v3 footer (64 B)', 'c/storage v1 footer (40 B)']);
      assert.ok(zc.tarSplit && !zc1.tarSplit, 'v3 with tar-split, v1 without');
      assert.deepEqual(zc1.entries, zc.entries);
      for (const base of [wzc, wzc1, wesgz]) {
        const a = await readLayerToc(base().desc, memoryBlob(base()));
        assert.deepEqual(a.entries.map((e) => e.path), ['etc', 'etc/app.conf', 'data', 'data/multi.bin', 'data/shared.txt']);
        assert.ok(a.entries.find((e) => e.path === 'data/multi.bin')!.chunks.length > 1, 'data/multi.bin has several chunks');
      }
    },
    cases: writerCases,
    // A member's tail may decode to the next tar header, which no read uses: flip a byte of incompressible content.
    flips: [['zstd frame', wzc, 'data/shared.txt'], ['gzip member', wesgz, 'data/multi.bin']],
  },
  {
    label: 'corpus layers',
    skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
    prepare: async () => {},
    bases: [zc, zcNew, esgz],
    cases,
    flips: [['zstd frame', zc, 'data/shared.txt'], ['gzip member', esgz, 'etc/motd']],
  },
];

for (const set of SETS) {
  describe(`formats: hostile ${set.label}`, { skip: set.skip }, () => {
    before(() => set.prepare());

    it('the base layers read whole; re-packing alone changes nothing a reader cares about', async () => {
      await set.checkBases?.();
      for (const base of set.bases) {
        const orig = base();
        const copy = await repack(orig, () => {});
        const a = await readLayerToc(orig.desc, memoryBlob(orig));
        const b = await readLayerToc(copy.desc, memoryBlob(copy));
        assert.deepEqual(b.entries, a.entries);
      }
    });

    for (const c of set.cases) {
      it(c.name, async () => {
        const layer = await c.make();
        // Daemons read a TOC straight into its parsed form: the same refusal either way.
        for (const read of [readLayerToc, readParsed]) {
          await assert.rejects(read(layer.desc, memoryBlob(layer), c.opts), (e: Error) => {
            assert.ok(e instanceof TocfsError, `${read.name}: ${e.name}: ${e.message}`);
            assert.match(e.message, c.error);
            assert.ok(e.message.includes(layer.desc.digest), `names the layer: ${e.message}`);
            if (c.entry) assert.ok(e.message.includes(JSON.stringify(c.entry)), `names the entry: ${e.message}`);
            return true;
          });
        }
      });
    }

    for (const [name, base, file] of set.flips) {
      it(`a flipped byte in a ${name} fails the chunk, never serves it`, async () => {
        const orig = base();
        const toc = await readLayerToc(orig.desc, memoryBlob(orig));
        const chunk = toc.entries.find((e) => e.path === file)!.chunks[0]!;
        const good = await extractChunk(toc.compression, chunk, orig.bytes.subarray(chunk.compressedOffset, chunk.compressedEnd), file);
        assert.equal(sha256(good), chunk.digest, 'the unflipped chunk reads');
        const bytes = Buffer.from(orig.bytes);
        bytes[Math.floor((chunk.compressedOffset + chunk.compressedEnd) / 2)] ^= 0x40;
        await assert.rejects(extractChunk(toc.compression, chunk, bytes.subarray(chunk.compressedOffset, chunk.compressedEnd), `layer ${orig.desc.digest} ${file}`), (e: Error) => {
          assert.ok(e instanceof TocfsError);
          assert.match(e.message, new RegExp(`${file}.*(digest mismatch|cannot decompress)`));
          return true;
        });
      });
    }
  });
}
