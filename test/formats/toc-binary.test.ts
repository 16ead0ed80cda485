/**
 * The parsed form of a TOC (formats/toc-binary.ts): decoding what was encoded gives back the
 * very LayerToc readLayerToc made — every entry type, xattrs, names outside Latin-1, times,
 * files of many chunks and zero chunks, in both formats — and nothing for another context,
 * another version or a TOC the form cannot hold. A TOC normalised straight into the form
 * (readLayerTocParsed) is the one readLayerToc makes as objects.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { readLayerToc, readLayerTocParsed, type LayerToc } from '../../src/formats/index.js';
import { decodeParsedToc, encodeParsedToc, isColumnar, PARSED_TOC_VERSION } from '../../src/formats/toc-binary.js';
import { plainEntry } from '../../src/formats/toc.js';
import { seededContent, zeroContent, type FileSpec } from '../helpers/images.js';
import { memoryBlob, repack, type TestLayer } from '../helpers/toc-repack.js';
import { writerLayer } from '../helpers/writer-layers.js';

const FILES: FileSpec[] = [
  { path: 'etc', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1_600_000_000.25 },
  { path: 'etc/app.conf', content: 'version=3\n', uname: 'root', gname: 'wheel', xattrs: { 'user.note': 'hello', 'security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]) } },
  { path: 'etc/empty', content: '' },
  { path: 'etc/grüße ☃ 𝄞', content: 'non-Latin-1 name\n', mtime: -86_400 },
  { path: 'etc/link', type: 'symlink', linkName: '../data/big.bin' },
  { path: 'etc/hard', type: 'hardlink', linkName: 'etc/app.conf' },
  { path: 'dev', type: 'dir' },
  { path: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
  { path: 'dev/sda', type: 'block', devMajor: 8, devMinor: 0 },
  { path: 'dev/pipe', type: 'fifo' },
  { path: 'data', type: 'dir', uid: 1000, gid: 1000 },
  { path: 'data/big.bin', content: seededContent('toc-binary-big', 700_000), mode: 0o4755 },
  { path: 'data/zeros.bin', content: zeroContent(300_000) },
  { path: 'data/.wh.gone', content: '' },
];

/** The TOC with its entry views copied into plain objects, to compare with what readLayerToc made. */
function plainToc(toc: LayerToc): LayerToc {
  return { ...toc, entries: Array.from(toc.entries, plainEntry) };
}

describe('parsed TOC form', () => {
  const tocs: Record<string, LayerToc> = {};
  before(async () => {
    for (const format of ['zstd:chunked', 'estargz'] as const) {
      const layer = await writerLayer(format, FILES, { chunkSize: 64 * 1024 });
      tocs[format] = await readLayerToc(layer.desc, memoryBlob(layer));
    }
  });

  for (const format of ['zstd:chunked', 'estargz']) {
    it(`gives back the very TOC readLayerToc made (${format})`, () => {
      const toc = tocs[format]!;
      assert.ok(Array.from(toc.entries).some((e) => e.chunks.length > 1), 'some file has several chunks');
      assert.ok(Array.from(toc.entries).some((e) => e.xattrs), 'some file has xattrs');
      const bytes = encodeParsedToc(toc, 'ctx');
      assert.ok(bytes);
      const back = decodeParsedToc(bytes, 'ctx')!;
      assert.ok(isColumnar(back));
      assert.deepStrictEqual(plainToc(back), toc);
      assert.deepStrictEqual(JSON.parse(JSON.stringify(back)), JSON.parse(JSON.stringify(toc)), 'an entry view serialises as its fields');
      // Entries without chunks share one frozen list, as readLayerToc's do.
      const noChunks = Array.from(back.entries).filter((e) => e.chunks.length === 0);
      assert.ok(noChunks.length > 1 && noChunks.every((e) => e.chunks === noChunks[0]!.chunks && Object.isFrozen(e.chunks)));
      // A view keeps its chunk list (reads ask for it again and again); another view of the entry makes its own.
      const file = Array.from(back.entries).find((e) => e.chunks.length > 1)!;
      assert.equal(file.chunks, file.chunks);
      assert.deepStrictEqual(back.entries.at(toc.entries.length - 1)!.path, toc.entries.at(-1)!.path);
      assert.equal(back.entries.at(toc.entries.length), undefined);
    });
  }

  it('is refused for another context or version, and throws when cut short', () => {
    const toc = tocs['zstd:chunked']!;
    const bytes = encodeParsedToc(toc, 'layer A')!;
    assert.equal(decodeParsedToc(bytes, 'layer B'), undefined);
    const other = Buffer.from(bytes);
    other.writeUInt32LE(PARSED_TOC_VERSION + 1, 8);
    assert.equal(decodeParsedToc(other, 'layer A'), undefined);
    assert.equal(decodeParsedToc(Buffer.from('not a parsed TOC at all'), 'layer A'), undefined);
    assert.throws(() => decodeParsedToc(bytes.subarray(0, bytes.length - 1), 'layer A'), RangeError);
    assert.throws(() => decodeParsedToc(Buffer.concat([bytes, Buffer.alloc(8)]), 'layer A'), RangeError);
  });

  it('decodes from a buffer at any alignment', () => {
    const toc = tocs['estargz']!;
    const bytes = encodeParsedToc(toc, 'ctx')!;
    const shifted = Buffer.alloc(bytes.length + 3);
    bytes.copy(shifted, 3);
    assert.deepStrictEqual(plainToc(decodeParsedToc(shifted.subarray(3), 'ctx')!), toc);
  });

  it('throws on an index out of its table rather than making up a field', () => {
    const toc = tocs['zstd:chunked']!;
    const bytes = encodeParsedToc(toc, 'ctx')!;
    const metaLength = bytes.readUInt32LE(12);
    const meta = JSON.parse(bytes.toString('utf8', 16, 16 + metaLength)) as { counts: { entries: number; chunks: number; times: number; strings: number } };
    const f64Bytes = (meta.counts.entries + meta.counts.chunks * 5 + meta.counts.times) * 8;
    const firstWord = ((16 + metaLength + 7) & ~7) + f64Bytes;
    const bad = Buffer.from(bytes);
    bad.writeUInt32LE(meta.counts.strings + 5, firstWord); // the first entry's path
    assert.throws(() => decodeParsedToc(bad, 'ctx'), /string index out of range/);
  });

  it('holds no TOC it cannot give back: gzip checkpoints, resume points, unknown fields, digests of another size than sha256', () => {
    const toc = tocs['zstd:chunked']!;
    assert.equal(encodeParsedToc({ ...toc, checkpoints: [] }, 'ctx'), undefined);
    assert.equal(encodeParsedToc({ ...toc, format: 'none' }, 'ctx'), undefined);
    assert.equal(encodeParsedToc({ ...toc, extra: 1 } as LayerToc, 'ctx'), undefined);
    const all = Array.from(toc.entries);
    const file = all.findIndex((e) => e.chunks.length > 0);
    const entries = [...all];
    entries[file] = { ...entries[file]!, chunks: [{ ...entries[file]!.chunks[0]!, resume: { skipBits: 0, window: Buffer.alloc(0), out: 0 } }] };
    assert.equal(encodeParsedToc({ ...toc, entries }, 'ctx'), undefined);
    const shortDigest = [...all];
    shortDigest[file] = { ...all[file]!, digest: 'sha256:abcd' };
    assert.equal(encodeParsedToc({ ...toc, entries: shortDigest }, 'ctx'), undefined, 'a digest that is not 32 bytes of hex');
    const dir = all.findIndex((e) => e.type === 'dir');
    const withLink = [...all];
    withLink[dir] = { ...withLink[dir]!, linkName: 'x' };
    assert.equal(encodeParsedToc({ ...toc, entries: withLink }, 'ctx'), undefined);
  });
});

describe('a TOC read straight into its parsed form (readLayerTocParsed, what daemons open layers with)', () => {
  const layers: Record<string, TestLayer> = {};
  before(async () => {
    for (const format of ['zstd:chunked', 'estargz'] as const) layers[format] = await writerLayer(format, FILES, { chunkSize: 64 * 1024 });
  });
  const nameIs = (e: { name: string }, path: string): boolean => e.name.replace(/^\.?\//, '').replace(/\/$/, '') === path;

  /** The parsed reader's TOC, checked against readLayerToc's objects; returns its bytes. */
  async function sameAsObjects(layer: TestLayer): Promise<Buffer> {
    const objects = await readLayerToc(layer.desc, memoryBlob(layer));
    const { toc, parsed } = await readLayerTocParsed(layer.desc, memoryBlob(layer), 'ctx');
    assert.ok(isColumnar(toc));
    assert.deepStrictEqual(plainToc(toc), objects);
    assert.deepStrictEqual(plainToc(decodeParsedToc(parsed, 'ctx')!), objects);
    return parsed;
  }

  for (const format of ['zstd:chunked', 'estargz']) {
    it(`is the TOC readLayerToc makes (${format})`, async () => {
      const parsed = await sameAsObjects(layers[format]!);
      if (format === 'zstd:chunked') {
        const objects = await readLayerToc(layers[format]!.desc, memoryBlob(layers[format]!));
        assert.ok(parsed.equals(encodeParsedToc(objects, 'ctx')!), 'byte for byte what encodeParsedToc makes of the objects');
      }
    });
  }

  it('with a directory stated three times, with and without xattrs (the later statement wins, no stale xattr is kept)', async () => {
    const layer = await repack(layers['zstd:chunked']!, (d) => {
      const etc = d.entries.find((e: { type: string; name: string }) => e.type === 'dir' && nameIs(e, 'etc'));
      const data = d.entries.find((e: { type: string; name: string }) => e.type === 'dir' && nameIs(e, 'data'));
      d.entries.push({ ...etc, xattrs: { 'user.first': Buffer.from('one').toString('base64') } });
      d.entries.push({ ...data, mode: 0o700, xattrs: { 'user.kept': Buffer.from('two').toString('base64') } });
      d.entries.push({ ...etc, mode: 0o711 });
    });
    await sameAsObjects(layer);
    const { toc } = await readLayerTocParsed(layer.desc, memoryBlob(layer), 'ctx');
    const byPath = new Map(Array.from(toc.entries, (e) => [e.path, e]));
    assert.equal(byPath.get('etc')!.mode, 0o711);
    assert.equal(byPath.get('etc')!.xattrs, undefined);
    assert.deepStrictEqual({ ...byPath.get('data')!.xattrs }, { 'user.kept': Buffer.from('two') });
  });

  it('with a file whose chunks end the stargz way among files that state their end (its chunks come after the others\')', async () => {
    const layer = await repack(layers['zstd:chunked']!, (d) => {
      const first = d.entries.find((e: { type: string; size?: number; endOffset?: number }) => e.type === 'reg' && (e.size ?? 0) > 0 && e.endOffset !== undefined);
      delete first.endOffset;
    });
    await sameAsObjects(layer);
  });
});
