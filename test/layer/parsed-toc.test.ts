/**
 * Parsed TOCs in the cache (formats/toc-binary.ts, cache/toc-store.ts, layer/open.ts): a layer
 * opened again reads its TOC from the parsed form the first open kept, and never from one that
 * is tampered with, forged under another key, made for another descriptor, or authenticated by
 * a key file that is not private — those open as if there were none, and serve the right bytes.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, chmod, mkdtemp, rename, symlink, writeFile } from 'node:fs/promises';
import { createHmac, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DiskTocStore } from '../../src/cache/toc-store.js';
import { encodeParsedToc, isCurrentParsedToc, PARSED_TOC_VERSION } from '../../src/formats/toc-binary.js';
import { plainEntry, type LayerToc } from '../../src/formats/toc.js';
import { LayerOpener, type OpenedLayer } from '../../src/layer/open.js';
import type { Descriptor, ImageSource } from '../../src/source/types.js';
import { seededBytes, type FileSpec } from '../helpers/images.js';
import { captureLogger } from '../helpers/log-capture.js';
import { memoryBlob, type TestLayer } from '../helpers/toc-repack.js';
import { writerLayer } from '../helpers/writer-layers.js';

const BIG = seededBytes('parsed-toc-big', 300_000);
const SMALL = Buffer.from('small file\n');
const FILES: FileSpec[] = [
  { path: 'data', type: 'dir' },
  { path: 'data/big.bin', content: BIG },
  { path: 'data/small.txt', content: SMALL },
  { path: 'data/link', type: 'symlink', linkName: 'big.bin' },
];

interface Opened {
  layer: OpenedLayer;
  opener: LayerOpener;
  /** The messages logged so far. */
  readonly msgs: string[];
}

describe('parsed TOCs kept in the cache', () => {
  let tmp: string;
  const layers: Record<string, TestLayer> = {};
  /** Every opener made, so that their caches' writes end before the directory is removed. */
  const openers: LayerOpener[] = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-parsed-toc-'));
    for (const format of ['zstd:chunked', 'estargz'] as const) layers[format] = await writerLayer(format, FILES, { chunkSize: 64 * 1024 });
  });
  after(async () => {
    await Promise.all(openers.map((o) => o.cache.flush()));
    await rm(tmp, { recursive: true, force: true });
  });

  /** Opens the layer with a fresh opener (a new process, as far as the cache is concerned). */
  async function open(cacheDir: string, layer: TestLayer, desc: Descriptor = layer.desc): Promise<Opened> {
    const { logger, records } = captureLogger();
    const opener = await LayerOpener.create({ cacheDir }, logger);
    openers.push(opener);
    const source = { blob: () => memoryBlob({ desc, bytes: layer.bytes }) } as unknown as ImageSource;
    const opened = await opener.open(source, desc, { withoutToc: 'index' });
    return {
      layer: opened,
      opener,
      get msgs() {
        return records.map((r) => r.msg);
      },
    };
  }

  async function assertServes(o: Opened): Promise<void> {
    const entry = (path: string) => Array.from(o.layer.toc.entries).find((e) => e.path === path)!;
    assert.deepEqual(await o.layer.reader.readAt(entry('data/big.bin'), 0, BIG.length), BIG);
    assert.deepEqual(await o.layer.reader.readAt(entry('data/small.txt'), 0, SMALL.length), SMALL);
    assert.equal(entry('data/link').linkName, 'big.bin');
  }

  const fromParsed = (o: Opened): boolean => o.msgs.includes('TOC read from its parsed form');
  const parsedFiles = async (cacheDir: string): Promise<string[]> => (await readdir(join(cacheDir, 'tocs', 'parsed')).catch(() => [])).map((n) => join(cacheDir, 'tocs', 'parsed', n));

  for (const format of ['zstd:chunked', 'estargz']) {
    it(`a second open reads the TOC from the parsed form the first kept (${format})`, async () => {
      const cacheDir = join(tmp, `cache-${format.replace(':', '-')}`);
      const first = await open(cacheDir, layers[format]!);
      assert.ok(first.msgs.includes('TOC read and parsed') && !fromParsed(first));
      await first.opener.keepParsedTocs();
      assert.ok(first.msgs.includes('kept the parsed TOC'));
      assert.equal((await parsedFiles(cacheDir)).length, 1);

      const second = await open(cacheDir, layers[format]!);
      assert.ok(fromParsed(second), second.msgs.join(' / '));
      assert.deepStrictEqual(second.layer.toc, first.layer.toc);
      await assertServes(second);
      // Nothing to keep again.
      await second.opener.keepParsedTocs();
      assert.ok(!second.msgs.includes('kept the parsed TOC'));
    });
  }

  it('keeping the parsed TOCs before the process ends waits for one whose write has begun', async () => {
    const cacheDir = join(tmp, 'cache-writing');
    const first = await open(cacheDir, layers['zstd:chunked']!);
    // A slow disk: the write the timer starts (1 s after the parse) is still under way when the process ends.
    const store = (first.opener as unknown as { opts: { parsedTocs: DiskTocStore } }).opts.parsedTocs;
    const put = store.putParsed.bind(store);
    let started = false;
    store.putParsed = async (context, bytes) => {
      started = true;
      await new Promise((r) => setTimeout(r, 400));
      return put(context, bytes);
    };
    await new Promise((r) => setTimeout(r, 1200));
    assert.ok(started && !first.msgs.includes('kept the parsed TOC'), 'the write began on its timer and has not ended');
    await first.opener.keepParsedTocs();
    assert.ok(first.msgs.includes('kept the parsed TOC'), first.msgs.join(' / '));
    assert.equal((await parsedFiles(cacheDir)).length, 1);
    const second = await open(cacheDir, layers['zstd:chunked']!);
    assert.ok(fromParsed(second), second.msgs.join(' / '));
  });

  it('a tampered parsed TOC is not used: the TOC is read afresh, the right bytes are served, and the parsed form is made again', async () => {
    const cacheDir = join(tmp, 'cache-tamper');
    const layer = layers['zstd:chunked']!;
    await (await open(cacheDir, layer)).opener.keepParsedTocs();
    const [file] = await parsedFiles(cacheDir);
    const good = await readFile(file!);
    // Point big.bin's first chunk at the bytes of another offset: flip one byte of the f64 section.
    for (const at of [40, good.length - 1, Math.floor(good.length / 2)]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x01;
      await writeFile(file!, bad);
      const o = await open(cacheDir, layer);
      assert.ok(!fromParsed(o) && o.msgs.includes('parsed TOC fails its MAC: not used'), `byte ${at}: ${o.msgs.join(' / ')}`);
      await assertServes(o);
      await o.opener.keepParsedTocs();
      assert.deepEqual(await readFile(file!), good, 'made again, the same');
    }
  });

  it('a parsed TOC forged under another key is not used, even for the right descriptor', async () => {
    const cacheDir = join(tmp, 'cache-forged');
    const layer = layers['zstd:chunked']!;
    const first = await open(cacheDir, layer);
    await first.opener.keepParsedTocs();
    const [file] = await parsedFiles(cacheDir);
    // What an attacker without the key can write: a well-formed parsed TOC whose big.bin is
    // small.txt's chunks, MAC'd under a key of their own.
    const toc = first.layer.toc;
    const entries = Array.from(toc.entries, plainEntry);
    const small = entries.find((e) => e.path === 'data/small.txt')!;
    const forged: LayerToc = { ...toc, entries: entries.map((e) => (e.path === 'data/big.bin' ? { ...e, size: small.size, digest: small.digest!, chunks: small.chunks } : e)) };
    const stored = await readFile(file!);
    const context = JSON.parse(stored.toString('utf8', 32 + 16, 32 + 16 + stored.readUInt32LE(32 + 12))).context as string;
    const payload = encodeParsedToc(forged, context)!;
    await writeFile(file!, Buffer.concat([createHmac('sha256', randomBytes(32)).update(payload).digest(), payload]));
    const o = await open(cacheDir, layer);
    assert.ok(!fromParsed(o) && o.msgs.includes('parsed TOC fails its MAC: not used'));
    await assertServes(o);
  });

  it('a parsed TOC made for another descriptor of the same layer is not used', async () => {
    const cacheDir = join(tmp, 'cache-context');
    const layer = layers['estargz']!;
    await (await open(cacheDir, layer)).opener.keepParsedTocs();
    const other = { ...layer.desc, annotations: { ...layer.desc.annotations, 'org.example.note': 'another manifest' } };
    const o = await open(cacheDir, layer, other);
    assert.ok(!fromParsed(o) && o.msgs.includes('TOC read and parsed'));
    await assertServes(o);
    // A file of one context renamed to the other's name still names its own context inside.
    await o.opener.keepParsedTocs();
    const files = await parsedFiles(cacheDir);
    assert.equal(files.length, 2);
    const [a, b] = files as [string, string];
    const tmpName = `${a}.swap`;
    await rename(a, tmpName);
    await rename(b, a);
    await rename(tmpName, b);
    for (const desc of [layer.desc, other]) {
      const swapped = await open(cacheDir, layer, desc);
      assert.ok(!fromParsed(swapped), 'a parsed TOC of another context is not used');
      await assertServes(swapped);
    }
  });

  it('parsed TOCs are off while their key file is not private to this user', async () => {
    const cacheDir = join(tmp, 'cache-key');
    const layer = layers['zstd:chunked']!;
    await (await open(cacheDir, layer)).opener.keepParsedTocs();
    const key = join(cacheDir, 'tocs', 'parsed.key');
    await chmod(key, 0o640);
    const loose = await open(cacheDir, layer);
    assert.ok(!fromParsed(loose) && loose.msgs.includes('parsed TOCs off: their key file is not private to this user'));
    await assertServes(loose);
    await chmod(key, 0o600);
    assert.ok(fromParsed(await open(cacheDir, layer)));

    // A symlink to a file the attacker knows is refused too.
    const known = join(tmp, 'known-key');
    await writeFile(known, Buffer.alloc(32), { mode: 0o600 });
    await rename(key, `${key}.real`);
    await symlink(known, key);
    const linked = await open(cacheDir, layer);
    assert.ok(!fromParsed(linked) && linked.msgs.includes('parsed TOCs off: their key file is not private to this user'));
    await assertServes(linked);
  });

  it('parsed TOCs of an older form are removed, once per form, and those of this form kept', async () => {
    const cacheDir = join(tmp, 'cache-old-form');
    const layer = layers['estargz']!;
    await (await open(cacheDir, layer)).opener.keepParsedTocs();
    const [current] = await parsedFiles(cacheDir);
    const payload = (await readFile(current!)).subarray(32);
    // What an older tocfs left: its MAC, then a payload of form version 1.
    const older = Buffer.from(payload);
    older.writeUInt32LE(PARSED_TOC_VERSION - 1, 8);
    const stale = join(cacheDir, 'tocs', 'parsed', 'a'.repeat(64));
    const form = join(cacheDir, 'tocs', 'parsed.form');
    await writeFile(stale, Buffer.concat([randomBytes(32), older]));
    await rm(form, { force: true });

    // Before the opener is made.
    const o = await open(cacheDir, layer);
    assert.deepEqual(await parsedFiles(cacheDir), [current], 'the older form removed, this one kept');
    assert.ok(o.msgs.includes('removed parsed TOCs of an older form from the cache'), o.msgs.join(' / '));
    assert.equal(await readFile(form, 'utf8'), `tocfsPTC ${PARSED_TOC_VERSION}`);
    assert.ok(fromParsed(o), 'the current one is still used');

    // The cache remembers the pass: a later one does not look again.
    await writeFile(stale, Buffer.concat([randomBytes(32), older]));
    assert.equal(await new DiskTocStore(cacheDir).dropStaleParsed(`tocfsPTC ${PARSED_TOC_VERSION}`, (head) => !isCurrentParsedToc(head)), 0);
    assert.ok((await parsedFiles(cacheDir)).includes(stale));
  });

  it('the cache counts parsed TOCs in the TOC bytes and clears them with the TOCs', async () => {
    const cacheDir = join(tmp, 'cache-clear');
    await (await open(cacheDir, layers['zstd:chunked']!)).opener.keepParsedTocs();
    const store = new DiskTocStore(cacheDir);
    const [parsed] = await parsedFiles(cacheDir);
    const usage = await store.usage();
    assert.equal(usage.files, 1);
    assert.ok(usage.bytes > (await readFile(parsed!)).length);
    await store.clear();
    assert.deepEqual(await parsedFiles(cacheDir), []);
    assert.deepEqual(await store.usage(), { files: 0, bytes: 0 });
  });
});
