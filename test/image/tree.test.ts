/**
 * Inode trees: the merged view of every corpus image (overlay rules applied by tocfs to the
 * TOCs read from the real blobs) must equal expected.json `merged`, computed independently
 * from the tars; each layer's own tree must equal that layer's entries. Images tocfs builds
 * are held to the same comparison against their specs, so the check never needs the corpus.
 * A parsed TOC's own layer tree, filled as it is looked into, is TreeBuilder's node for node.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256 } from '../../src/digest.js';
import { readLayerToc, type LayerToc, type TocEntry } from '../../src/formats/index.js';
import { indexPlainLayer } from '../../src/formats/plain.js';
import { buildLayerTree, mergeLayers, OVERLAY_OPAQUE_XATTR, type FsTree } from '../../src/image/tree.js';
import { decodeParsedToc, encodeParsedToc } from '../../src/formats/toc-binary.js';
import { plainEntry } from '../../src/formats/toc.js';
import { OciLayoutSource } from '../../src/source/oci-layout.js';
import type { Descriptor } from '../../src/source/types.js';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected, type Expected } from '../helpers/corpus.js';
import { compareView, treeView } from '../helpers/fs-expected.js';
import { buildImage } from '../helpers/images.js';
import { OVERLAY_LAYERS, OVERLAY_MERGED } from '../helpers/overlay-image.js';
import { expectedEntries, KINDS_LAYER } from '../helpers/spec-expected.js';

async function corpusToc(image: string, expected: Expected, digest: string): Promise<LayerToc> {
  const layer = expected.layers[digest]!;
  const desc: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size, ...(layer.annotations ? { annotations: layer.annotations } : {}) };
  const source = new OciLayoutSource({ transport: 'oci', dir: join(CORPUS_DIR, image) });
  const format = String(layer.format.format);
  // Plain layers have no TOC: H2's indexer reads the tar itself (contents are not kept here).
  if (format === 'gzip' || format === 'zstd') return indexPlainLayer(desc, source.blob(desc), async () => undefined);
  return readLayerToc(desc, source.blob(desc));
}

/** stargz-snapshotter's TOCs (eStargz and its zstd variant) keep whole-second times only. */
function wholeSeconds(toc: LayerToc): boolean {
  return toc.format === 'estargz' || toc.format === 'stargz-zstd';
}

function xattrsOf(tree: ReturnType<typeof mergeLayers>) {
  return (path: string): Record<string, string> =>
    Object.fromEntries(Object.entries(tree.lookup(path)?.entry.xattrs ?? {}).map(([k, v]) => [k, v.toString('base64')]));
}

describe('tree: corpus images', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  for (const image of corpusImages()) {
    const expected = loadExpected(image);
    expected.images.forEach((img, i) => {
      if (!img.merged) return; // zstdchunked-skopeo118-gnusparse: no tar reader can list it, so there is no ground truth
      it(`${image}${expected.images.length > 1 ? ` [${img.platform.architecture}]` : ''}: merged view and each layer's own tree`, async () => {
        const tocs = await Promise.all(img.layers.map((d) => corpusToc(image, expected, d)));
        const wholeSecondTimes = tocs.some(wholeSeconds);
        const merged = mergeLayers(tocs);
        assert.deepEqual(await compareView(treeView(merged), img.merged, { wholeSecondTimes, layers: true, xattrs: xattrsOf(merged) }), [], `merged view of image ${i}`);
        for (const [li, toc] of tocs.entries()) {
          const own = buildLayerTree(toc, li);
          const want = expected.layers[img.layers[li]!]!.entries;
          assert.deepEqual(await compareView(treeView(own), want, { wholeSecondTimes: wholeSeconds(toc), xattrs: xattrsOf(own) }), [], `layer ${li}`);
        }
      });
    });
  }
});

let mtime = 1_700_000_000;
function entry(path: string, type: TocEntry['type'], extra: Partial<TocEntry> = {}): TocEntry {
  return { path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, size: 0, mtime: { sec: mtime++, nsec: 0 }, chunks: [], ...extra };
}
function toc(entries: TocEntry[]): LayerToc {
  return { format: 'zstd:chunked', formatVersion: 'test', compression: 'zstd', entries, tocOffset: 0, tocCompressedLength: 0, tocUncompressedLength: 0, verified: true };
}
function paths(tree: ReturnType<typeof mergeLayers>): string[] {
  return [...tree.walk()].map((e) => e.path);
}

describe('tree: overlay rules', () => {
  it('whiteouts remove lower names and their subtrees, but not names the same layer adds', () => {
    const l0 = toc([entry('a', 'dir'), entry('a/x', 'reg'), entry('a/sub', 'dir'), entry('a/sub/deep', 'reg'), entry('b', 'reg')]);
    const l1 = toc([entry('a', 'dir'), entry('a/.wh.sub', 'reg'), entry('.wh.b', 'reg'), entry('b', 'dir'), entry('b/new', 'reg')]);
    const tree = mergeLayers([l0, l1]);
    assert.deepEqual(paths(tree), ['', 'a', 'a/x', 'b', 'b/new']);
    assert.equal(tree.lookup('a')!.layer, 1);
    assert.equal(tree.lookup('a/x')!.layer, 0);
  });

  it('an opaque directory hides every lower child; the layer\'s own children stay', () => {
    const l0 = toc([entry('d', 'dir'), entry('d/old1', 'reg'), entry('d/old2', 'dir'), entry('d/old2/f', 'reg')]);
    const l1 = toc([entry('d', 'dir'), entry('d/.wh..wh..opq', 'reg'), entry('d/new', 'reg')]);
    const tree = mergeLayers([l0, l1]);
    assert.deepEqual(paths(tree), ['', 'd', 'd/new']);
    assert.equal(tree.lookup('d')!.nlink, 2);
  });

  it('type replacements: a file replaces a directory tree, a directory replaces a file and merges with a directory', () => {
    const l0 = toc([entry('x', 'dir'), entry('x/in', 'reg'), entry('y', 'reg'), entry('z', 'dir'), entry('z/keep', 'reg')]);
    const l1 = toc([entry('x', 'symlink', { linkName: '/elsewhere' }), entry('y', 'dir'), entry('y/in', 'reg'), entry('z', 'dir', { mode: 0o700 }), entry('z/add', 'reg')]);
    const tree = mergeLayers([l0, l1]);
    assert.deepEqual(paths(tree), ['', 'x', 'y', 'y/in', 'z', 'z/add', 'z/keep']);
    assert.equal(tree.lookup('x')!.entry.linkName, '/elsewhere');
    assert.equal(tree.lookup('z')!.entry.mode, 0o700);
    assert.equal(tree.lookup('/z/keep')!.layer, 0);
  });

  it('missing parents are synthesised as implicit 0755 root-owned directories at the epoch, and a later entry for them clears the flag', () => {
    const tree = mergeLayers([toc([entry('p/q/r', 'reg'), entry('p', 'dir', { mode: 0o711, uid: 5 })])]);
    const q = tree.lookup('p/q')!;
    assert.equal(q.implicit, true);
    assert.deepEqual([q.entry.mode, q.entry.uid, q.entry.gid, q.entry.mtime.sec], [0o755, 0, 0, 0]);
    const p = tree.lookup('p')!;
    assert.equal(p.implicit, false);
    assert.equal(p.entry.mode, 0o711);
  });

  it('hard links share one inode with the target\'s metadata; nlink counts the names left after whiteouts', () => {
    const target = entry('f', 'reg', { size: 3, mode: 0o600 });
    const l0 = toc([target, entry('g', 'hardlink', { linkName: 'f' }), entry('h', 'hardlink', { linkName: 'g' })]);
    let tree = mergeLayers([l0]);
    assert.equal(tree.lookup('g'), tree.lookup('f'));
    assert.equal(tree.lookup('h'), tree.lookup('f'));
    assert.equal(tree.lookup('h')!.nlink, 3);
    assert.equal(tree.lookup('h')!.entry.mode, 0o600);
    assert.equal(tree.inodeCount, 2);
    tree = mergeLayers([l0, toc([entry('.wh.g', 'reg')])]);
    assert.equal(tree.lookup('f')!.nlink, 2);
    assert.throws(() => mergeLayers([toc([entry('x', 'hardlink', { linkName: 'nope' })])]), /hard link "x" to "nope"/);
  });

  it('inode numbers are the same for the same layers', () => {
    const layers = () => [toc([entry('a', 'dir'), entry('a/b', 'reg'), entry('c', 'reg')]), toc([entry('a/d', 'reg'), entry('.wh.c', 'reg')])];
    const inos = (t: ReturnType<typeof mergeLayers>) => [...t.walk()].map((e) => `${e.path}=${e.node.ino}`);
    assert.deepEqual(inos(mergeLayers(layers())), inos(mergeLayers(layers())));
    assert.equal(mergeLayers(layers()).root.ino, 1);
  });

  it('a layer\'s own tree shows whiteouts as files, or in overlay form as 0:0 devices and an opaque xattr', () => {
    const l = toc([entry('d', 'dir'), entry('d/.wh..wh..opq', 'reg'), entry('d/.wh.gone', 'reg', { mode: 0o600 }), entry('d/kept', 'reg')]);
    assert.deepEqual(paths(buildLayerTree(l, 3)), ['', 'd', 'd/.wh..wh..opq', 'd/.wh.gone', 'd/kept']);
    const overlay = buildLayerTree(l, 3, { whiteouts: 'overlay' });
    assert.deepEqual(paths(overlay), ['', 'd', 'd/gone', 'd/kept']);
    const gone = overlay.lookup('d/gone')!;
    assert.deepEqual([gone.entry.type, gone.entry.devMajor, gone.entry.devMinor, gone.layer], ['char', 0, 0, 3]);
    assert.equal(overlay.lookup('d')!.entry.xattrs?.[OVERLAY_OPAQUE_XATTR]?.toString(), 'y');
  });

  it('a bottom layer without whiteouts has one tree for its own forms and its merge alone (the store\'s diff and chain views); one with whiteouts has one per form', () => {
    const plain = toc([entry('d', 'dir'), entry('d/f', 'reg'), entry('d/g', 'hardlink', { linkName: 'd/f' })]);
    const tree = buildLayerTree(plain, 0, { whiteouts: 'overlay' });
    assert.equal(mergeLayers([plain]), tree);
    assert.equal(buildLayerTree(plain, 0), tree);
    assert.deepEqual(paths(tree), ['', 'd', 'd/f', 'd/g']);
    assert.equal(tree.lookup('d/g'), tree.lookup('d/f'));
    // Above the bottom, nodes name their layer: a tree of its own.
    assert.notEqual(buildLayerTree(plain, 1), tree);
    assert.equal(buildLayerTree(plain, 1).lookup('d/f')!.layer, 1);

    const wh = toc([entry('d', 'dir'), entry('d/.wh.x', 'reg'), entry('d/f', 'reg')]);
    const overlay = buildLayerTree(wh, 0, { whiteouts: 'overlay' });
    const merged = mergeLayers([wh]);
    assert.notEqual(merged, overlay);
    assert.deepEqual(paths(overlay), ['', 'd', 'd/f', 'd/x']);
    assert.deepEqual(paths(merged), ['', 'd', 'd/f']);
    assert.deepEqual(paths(buildLayerTree(wh, 0)), ['', 'd', 'd/.wh.x', 'd/f']);
  });

  it('builds a 100k-entry tree quickly enough to mount big images', () => {
    const entries: TocEntry[] = [];
    for (let d = 0; d < 500; d++) {
      entries.push(entry(`usr/lib/pkg${d}`, 'dir'));
      for (let f = 0; f < 200; f++) entries.push(entry(`usr/lib/pkg${d}/file-${f}.so`, 'reg', { size: 10 }));
    }
    const tree = mergeLayers([toc(entries)]);
    assert.equal(tree.inodeCount, entries.length + 3); // + root, usr, usr/lib (implicit)
    assert.equal(tree.lookup('usr/lib/pkg499/file-199.so')!.entry.size, 10);
  });
});

describe('tree: images built with whiteouts, opaque dirs and replaced types', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-tree-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  for (const format of ['zstd:chunked', 'estargz', 'gzip'] as const) {
    it(`${format}: merged and per-layer trees`, async () => {
      const img = await buildImage(join(tmp, format.replace(':', '-')), { format, layers: OVERLAY_LAYERS });
      const source = new OciLayoutSource({ transport: 'oci', dir: img.dir });
      const tocs = await Promise.all(img.layers.map((d) => (format === 'gzip' ? indexPlainLayer(d, source.blob(d), async () => undefined) : readLayerToc(d, source.blob(d)))));
      const tree = mergeLayers(tocs);
      const view = new Map([...tree.walk()].filter((e) => e.path !== '').map((e) => [e.path, e.node]));
      assert.deepEqual([...view.keys()].sort(), Object.keys(OVERLAY_MERGED).sort());
      for (const [path, want] of Object.entries(OVERLAY_MERGED)) {
        const node = view.get(path)!;
        if (want === 'dir') assert.equal(node.entry.type, 'dir', path);
        else if (want.startsWith('-> ')) assert.deepEqual([node.entry.type, node.entry.linkName], ['symlink', want.slice(3)], path);
        else assert.equal(node.entry.digest, sha256(Buffer.from(want)), `${path}: content digest`);
      }
      assert.deepEqual(['deep', 'deep/er'].map((p) => view.get(p)!.implicit), [true, true]);
      assert.equal(view.get('a')!.implicit, false);
      const keep = view.get('a/keep')!;
      const hl = view.get('a/hl')!;
      assert.notEqual(keep.ino, hl.ino, 'the replaced target and the old hard link are different inodes now');
      assert.deepEqual([keep.nlink, hl.nlink, keep.layer, hl.layer], [1, 1, 1, 0]);
      assert.deepEqual([keep.entry.mode, keep.entry.uid, keep.entry.gid], [0o600, 1000, 1000]);
      assert.equal(view.get('a')!.entry.mode, 0o750);
      if (format !== 'estargz') assert.deepEqual(keep.entry.mtime, { sec: -1, nsec: 250_000_000 });

      const top = [...buildLayerTree(tocs[1]!, 1).walk()].map((e) => e.path);
      assert.ok(top.includes('a/.wh.gone') && top.includes('d/.wh..wh..opq'), 'a layer on its own shows its whiteouts');
      const overlay = buildLayerTree(tocs[1]!, 1, { whiteouts: 'overlay' });
      assert.equal(overlay.lookup('a/gone')!.entry.type, 'char');
      assert.equal(overlay.lookup('d')!.entry.xattrs?.[OVERLAY_OPAQUE_XATTR]?.toString(), 'y');
    });
  }
});

describe('tree: images tocfs builds, compared field by field with their specs', () => {
  /** A second layer under a directory no layer states (an implicit parent). */
  const UPPER = OVERLAY_LAYERS[0]!.map((f) => ({ ...f, path: `overlay/${f.path}`, ...(f.type === 'hardlink' ? { linkName: `overlay/${f.linkName}` } : {}) }));
  const implicitOverlay = { path: 'overlay', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, implicit: true };
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-tree-kinds-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  for (const format of ['zstd:chunked', 'estargz', 'gzip', 'zstd'] as const) {
    it(`${format}: every kind of entry (modes, owners, times, links, devices, xattrs, hard links) in the merged view and the layer's own tree`, async () => {
      const img = await buildImage(join(tmp, format.replace(':', '-')), { format, layers: [KINDS_LAYER, UPPER] });
      const source = new OciLayoutSource({ transport: 'oci', dir: img.dir });
      const plain = format === 'gzip' || format === 'zstd';
      const tocs = await Promise.all(img.layers.map((d) => (plain ? indexPlainLayer(d, source.blob(d), async () => undefined) : readLayerToc(d, source.blob(d)))));
      const wholeSecondTimes = format === 'estargz';
      const kinds = await expectedEntries(KINDS_LAYER);
      const upper = await expectedEntries(UPPER);
      const merged = mergeLayers(tocs);
      const mergedWant = [...kinds.map((x) => ({ ...x, layer_index: 0 })), { ...implicitOverlay, layer_index: 1 }, ...upper.map((x) => ({ ...x, layer_index: 1 }))];
      assert.deepEqual(await compareView(treeView(merged), mergedWant, { wholeSecondTimes, layers: true, xattrs: xattrsOf(merged) }), []);
      const own = buildLayerTree(tocs[0]!, 0);
      assert.deepEqual(await compareView(treeView(own), kinds, { wholeSecondTimes, xattrs: xattrsOf(own) }), []);
      const top = buildLayerTree(tocs[1]!, 1);
      assert.deepEqual(await compareView(treeView(top), [implicitOverlay, ...upper], { wholeSecondTimes, xattrs: xattrsOf(top) }), []);
      // The comparison itself catches a difference: a tree missing a name, or with another mode.
      const wrong = kinds.map((x) => (x.path === 'usr/bin/tool' ? { ...x, mode: 0o755 } : x));
      assert.deepEqual(await compareView(treeView(own), wrong, { wholeSecondTimes }), ['usr/bin/tool: mode: got 2541, expected 493', 'usr/bin/tool-hardlink: mode: got 2541, expected 493']);
    });
  }
});

describe('tree: a parsed TOC\'s own layer tree, its directories filled on first lookup', () => {
  /** Every node the walk meets, with what a reader sees of it. */
  const nodes = (tree: FsTree) =>
    [...tree.walk()].map(({ path, node }) => ({ path, ino: node.ino, nlink: node.nlink, layer: node.layer, implicit: node.implicit, isDir: node.isDir, entry: plainEntry(node.entry) }));
  const columnar = (t: LayerToc): LayerToc => decodeParsedToc(encodeParsedToc(t, 'ctx')!, 'ctx')!;
  /** The tree of the columnar TOC (lazy where it can be) against TreeBuilder's of the same entries as objects. */
  function sameAsBuilder(objects: LayerToc, layer: number): void {
    for (const form of [{}, { whiteouts: 'overlay' as const }]) {
      const want = buildLayerTree(objects, layer, form);
      const got = buildLayerTree(columnar(objects), layer, form);
      assert.equal(got.contentBytes, want.contentBytes, 'statfs sizes');
      assert.equal(got.inodeCount, want.inodeCount);
      assert.deepStrictEqual(nodes(got), nodes(want));
    }
    if (layer === 0) assert.deepStrictEqual(nodes(mergeLayers([columnar(objects)])), nodes(mergeLayers([objects])));
  }

  it('is the tree TreeBuilder makes, inode for inode: 20k entries, the root stated midway, a directory listed after others', () => {
    const entries: TocEntry[] = [entry('usr', 'dir'), entry('usr/lib', 'dir')];
    for (let d = 0; d < 100; d++) {
      entries.push(entry(`usr/lib/pkg${d}`, 'dir', { uid: d }));
      for (let f = 0; f < 200; f++) entries.push(entry(`usr/lib/pkg${d}/file-${f}.so`, 'reg', { size: f, digest: sha256(Buffer.from(`f${f}`)), chunks: [] }));
      if (d === 50) entries.push(entry('', 'dir', { mode: 0o700 }), entry('etc', 'dir'), entry('etc/passwd', 'reg', { size: 7 }), entry('usr/lib/pkg3/late', 'symlink', { linkName: '../pkg4' }));
    }
    sameAsBuilder(toc(entries), 0);
    sameAsBuilder(toc(entries), 2);
    const tree = buildLayerTree(columnar(toc(entries)), 0);
    assert.equal(tree.lookup('usr/lib/pkg99/file-199.so')!.entry.size, 199);
    assert.equal(tree.lookup('usr/lib/pkg3/late')!.entry.linkName, '../pkg4');
    assert.equal(tree.root.entry.mode, 0o700);
    assert.equal(tree.lookup('usr/lib')!.nlink, 102);
  });

  it('falls back to TreeBuilder, with the same result, for whiteouts, hard links, implicit parents and children before their directory', () => {
    sameAsBuilder(toc([entry('d', 'dir'), entry('d/.wh.x', 'reg'), entry('d/f', 'reg')]), 0);
    sameAsBuilder(toc([entry('d', 'dir'), entry('d/f', 'reg', { size: 3 }), entry('d/g', 'hardlink', { linkName: 'd/f' })]), 1);
    sameAsBuilder(toc([entry('p/q/r', 'reg'), entry('p', 'dir', { mode: 0o711 })]), 0);
    sameAsBuilder(toc([entry('a/b', 'reg'), entry('a', 'dir')]), 0);
  });

  it('is the tree TreeBuilder makes for every layer of images tocfs builds', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tocfs-tree-lazy-'));
    try {
      for (const format of ['zstd:chunked', 'estargz'] as const) {
        const img = await buildImage(join(tmp, format.replace(':', '-')), { format, layers: [KINDS_LAYER, ...OVERLAY_LAYERS] });
        const source = new OciLayoutSource({ transport: 'oci', dir: img.dir });
        for (const [i, d] of img.layers.entries()) sameAsBuilder(await readLayerToc(d, source.blob(d)), i);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('is the tree TreeBuilder makes for every corpus layer with a TOC', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, async () => {
    let layers = 0;
    for (const image of corpusImages()) {
      const expected = loadExpected(image);
      for (const [digest, layer] of Object.entries(expected.layers)) {
        const format = String(layer.format.format);
        if (format === 'gzip' || format === 'zstd') continue;
        sameAsBuilder(await corpusToc(image, expected, digest), 0);
        layers++;
      }
    }
    assert.ok(layers >= 10, `${layers} layers`);
  });
});
