/**
 * LayerReader and prefetch over real images: corpus layouts written by podman, skopeo and
 * ctr-remote (read from the OCI layout and from a real docker-registry on loopback), TOCs
 * read by the real readers, chunks fetched by range, verified and cached on disk.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ChunkCache } from '../../src/cache/chunk-cache.js';
import { DiskTocStore } from '../../src/cache/toc-store.js';
import { sha256 } from '../../src/digest.js';
import { LayerReader, LayerReadError, type LayerReaderOptions } from '../../src/fetch/layer-reader.js';
import type { ChunkStore } from '../../src/fetch/chunk-store.js';
import { inFlightFor } from '../../src/fetch/in-flight.js';
import { chunksCovering, extentBytes } from '../../src/fetch/plan.js';
import { fetchAll, prefetchLandmark } from '../../src/fetch/prefetch.js';
import { NoTocError, readLayerToc } from '../../src/formats/index.js';
import { indexPlainLayer } from '../../src/formats/plain.js';
import type { LayerToc, TocEntry } from '../../src/formats/toc.js';
import { openImageSource, type SourceOptions } from '../../src/image/open.js';
import { ReadCounter } from '../../src/source/counting.js';
import type { BlobReader, Descriptor, ImageSource } from '../../src/source/types.js';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected } from '../helpers/corpus.js';
import { buildImage, seededBytes, seededContent } from '../helpers/images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';

const FUSE_READ = 128 * 1024;

interface OpenLayer {
  desc: Descriptor;
  toc: LayerToc;
  blob: BlobReader;
}

/** Deterministic pseudo-random numbers in [0, 1) from a seed, so a failure can be reproduced. */
function seededRandom(seed: string, count: number): () => number {
  const bytes = seededBytes(seed, 4 * count);
  let i = 0;
  return () => bytes.readUInt32LE(4 * (i++ % count)) / 2 ** 32;
}

/** Reads a whole file the way the kernel does through FUSE: 128 KiB at a time, in order. */
async function readWhole(reader: LayerReader, entry: TocEntry, step = FUSE_READ): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < entry.size; off += step) parts.push(await reader.readAt(entry, off, step));
  assert.equal((await reader.readAt(entry, entry.size, step)).length, 0, 'a read at EOF is empty');
  return Buffer.concat(parts);
}

async function inParallel<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** `blob` with its range reads replaced (to inject faults a real registry cannot produce). */
function withRead(blob: BlobReader, read: BlobReader['read']): BlobReader {
  return { digest: blob.digest, size: blob.size, read, stream: (s) => blob.stream(s) };
}

/** Corpus images whose layers have no TOC (plain tar+gzip / tar+zstd). */
const PLAIN = new Set(corpusImages().filter((i) => Object.values(loadExpected(i).layers).every((l) => ['gzip', 'zstd'].includes(String(l.format.format)))));

const regular = (toc: LayerToc): TocEntry[] => Array.from(toc.entries).filter((e) => e.type === 'reg');

describe('LayerReader over real images', { skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}` }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let regOpts: SourceOptions;
  const sources: ImageSource[] = [];
  let n = 0;

  const caches: ChunkCache[] = [];
  const newCache = async (extra: Partial<Parameters<typeof ChunkCache.open>[0]> = {}): Promise<ChunkCache> => {
    const cache = await ChunkCache.open({ dir: join(tmp, `cache${n++}`), ...extra });
    caches.push(cache);
    return cache;
  };

  /** The lazily readable layers of an image, TOCs read by the real readers. */
  async function openLayers(ref: string, opts: SourceOptions = {}): Promise<OpenLayer[]> {
    const src = await openImageSource(ref, opts);
    sources.push(src);
    const img = await src.resolve();
    const out: OpenLayer[] = [];
    for (const desc of img.layers) {
      const blob = src.blob(desc);
      try {
        out.push({ desc, toc: await readLayerToc(desc, blob), blob });
      } catch (e) {
        if (!(e instanceof NoTocError)) throw e;
      }
    }
    return out;
  }
  const corpusLayers = (image: string): Promise<OpenLayer[]> => openLayers(`oci:${join(CORPUS_DIR, image)}`);
  const registryLayers = (image: string): Promise<OpenLayer[]> => openLayers(`docker://${reg.host}/${image}:latest`, regOpts);

  const readerFor = (l: OpenLayer, cache: ChunkStore, blob: BlobReader = l.blob, extra: Partial<LayerReaderOptions> = {}): LayerReader =>
    new LayerReader({ layerDigest: l.desc.digest, toc: l.toc, blob, cache, ...extra });

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-fetch-test-'));
    regOpts = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'registry-conf')) };
    reg = await startRegistry();
    for (const image of corpusImages()) await reg.load(join(CORPUS_DIR, image));
  });
  after(async () => {
    await Promise.all(sources.map((s) => s.close()));
    await reg?.stop();
    // Fetches started by aborted reads finish in the background; let their cache writes land first.
    await Promise.all(caches.map((c) => c.flush()));
    if (tmp) await rm(tmp, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  });

  for (const image of corpusImages().filter((i) => !PLAIN.has(i))) {
    for (const via of ['oci', 'registry'] as const) {
      test(`${image} (${via}): every file read through readAt has the expected content`, async () => {
        const expected = loadExpected(image);
        const layers = via === 'oci' ? await corpusLayers(image) : await registryLayers(image);
        assert.ok(layers.length > 0);
        const cache = await newCache();
        for (const l of layers) {
          const counter = new ReadCounter();
          const reader = readerFor(l, cache, counter.wrap(l.blob));
          const layerTruth = expected.layers[l.desc.digest]!;
          const want = new Map(Array.from(layerTruth.entries).filter((e) => e.type === 'reg' && !e.meta).map((e) => [e.path, e]));
          // Over the registry, read 16 files at a time as a busy mount would.
          await inParallel(regular(l.toc), via === 'oci' ? 1 : 16, async (entry) => {
            const data = await readWhole(reader, entry);
            if (!layerTruth.tar_valid) {
              // The producer wrote a tar no tool can read (corpus README: GNU sparse); only its TOC describes the files.
              assert.equal(sha256(data), entry.digest, `${image} ${entry.path}`);
              return;
            }
            const exp = want.get(entry.path);
            assert.ok(exp, `${entry.path} is a regular file in expected.json`);
            assert.equal(data.length, exp.size, entry.path);
            assert.equal(sha256(data), `sha256:${exp.sha256}`, `${image} ${entry.path}`);
            want.delete(entry.path);
          });
          assert.deepEqual([...want.keys()], [], 'every regular file of the layer was read');
          // Nothing was fetched twice: at most the layer's chunk data and the small gaps bridged between chunks.
          const bound = extentBytes(reader.chunksInBlobOrder()) + counter.requests * reader.maxGapBytes;
          assert.ok(counter.bytes <= bound, `${counter.bytes} bytes fetched in ${counter.requests} requests, bound ${bound}`);
          assert.equal(reader.stats.fetchedBytes, counter.bytes);
          assert.equal(reader.stats.verifyFailures, 0);
        }
      });
    }
  }

  for (const image of PLAIN) {
    test(`${image}: a layer without a TOC is served from the cache; evicted, gzip pieces come from checkpoints by range, the rest by one re-index`, async () => {
      const expected = loadExpected(image);
      const src = await openImageSource(`docker://${reg.host}/${image}:latest`, regOpts);
      sources.push(src);
      const img = await src.resolve();
      const cache = await newCache();
      for (const desc of img.layers) {
        const counter = new ReadCounter();
        const blob = counter.wrap(src.blob(desc));
        const toc = await indexPlainLayer(desc, blob, (d, b) => cache.put(d, b));
        assert.equal(toc.format, 'none');
        await cache.clear();
        let reindexed = 0;
        const reader = new LayerReader({
          layerDigest: desc.digest,
          toc,
          blob,
          cache,
          reindex: async () => {
            reindexed++;
            await indexPlainLayer(desc, blob, (d, b) => cache.put(d, b));
          },
        });
        const want = new Map(Array.from(expected.layers[desc.digest]!.entries).filter((e) => e.type === 'reg').map((e) => [e.path, e.sha256]));
        await inParallel(regular(toc), 16, async (entry) => {
          assert.equal(sha256(await readWhole(reader, entry)), `sha256:${want.get(entry.path)}`, entry.path);
        });
        await reader.settled();
        const unreachable = regular(toc).some((e) => e.chunks.some((c) => !c.zeros && c.compressedOffset < 0));
        const reachable = regular(toc).some((e) => e.chunks.some((c) => !c.zeros && c.compressedOffset >= 0));
        assert.equal(reachable, expected.layers[desc.digest]!.format.format === 'gzip', 'gzip layers (and only they) have pieces reachable from checkpoints');
        assert.equal(reindexed, unreachable ? 1 : 0, 'one re-index for every concurrent miss of a piece no checkpoint reaches');
        if (!reachable) assert.equal(counter.requests, reindexed + 1, 'the blob was streamed once to index and once to re-index');
        else assert.ok(counter.requests > reindexed + 1 && reader.stats.verifyFailures === 0, `pieces were fetched by range from checkpoints and verified (${counter.requests} requests, ${reindexed} re-indexes, ${reader.stats.verifyFailures} verify failures)`);
      }
    });
  }

  test('a layer without a TOC and no way to re-index: a clear error', async () => {
    // zstd: no checkpoints, so evicted pieces can only come back by indexing again.
    const image = [...PLAIN].find((i) => Object.values(loadExpected(i).layers).every((l) => l.format.format === 'zstd'))!;
    const src = await openImageSource(`oci:${join(CORPUS_DIR, image)}`);
    sources.push(src);
    const [desc] = (await src.resolve()).layers;
    const cache = await newCache();
    const toc = await indexPlainLayer(desc!, src.blob(desc!), (d, b) => cache.put(d, b));
    await cache.clear();
    const entry = regular(toc).find((e) => e.chunks.some((c) => !c.zeros))!;
    const reader = new LayerReader({ layerDigest: desc!.digest, toc, blob: src.blob(desc!), cache });
    await assert.rejects(reader.readAt(entry, 0, entry.size), (e: Error) => e instanceof LayerReadError && e.message.includes(`entry ${entry.path}`) && /not in the cache and the layer has no TOC/.test(e.message));
  });

  test('coalescing: a whole multi-chunk file in ~one request per MiB of compressed data', async () => {
    const [l] = await corpusLayers('estargz-ctrremote-chunk64k');
    const entry = regular(l!.toc)
      .filter((e) => e.chunks.filter((c) => !c.zeros).length >= 8)
      .sort((a, b) => b.size - a.size)[0]!;
    const counter = new ReadCounter();
    const reader = readerFor(l!, await newCache(), counter.wrap(l!.blob), { readAhead: 0 });
    const data = await reader.readAt(entry, 0, entry.size);
    assert.equal(sha256(data), entry.digest);
    const extent = extentBytes(entry.chunks.filter((c) => !c.zeros).map((chunk) => ({ chunk, entry })));
    const chunks = entry.chunks.filter((c) => !c.zeros).length;
    assert.ok(counter.requests <= Math.ceil(extent / (1024 * 1024)) + 1, `${counter.requests} requests for ${chunks} chunks (${extent} compressed bytes)`);
    assert.ok(counter.requests < chunks / 4, `${counter.requests} requests for ${chunks} chunks`);
  });

  test('single flight: 32 concurrent reads of one range make one request', async () => {
    const layers = await corpusLayers('zstdchunked-podman54-app-v1');
    const found = layers.flatMap((l) => regular(l.toc).map((entry) => ({ l, entry }))).find(({ entry }) => entry.chunks.length >= 2 && extentBytes(entry.chunks.map((chunk) => ({ chunk, entry }))) < 1024 * 1024)!;
    assert.ok(found, 'a multi-chunk file under 1 MiB compressed');
    const counter = new ReadCounter();
    const reader = readerFor(found.l, await newCache(), counter.wrap(found.l.blob), { readAhead: 0 });
    const reads = await Promise.all(Array.from({ length: 32 }, () => reader.readAt(found.entry, 0, found.entry.size)));
    for (const r of reads) assert.equal(sha256(r), found.entry.digest);
    assert.equal(counter.requests, 1);
  });

  test('dedupe: after app-v1, reading app-v2 fetches only the chunks v1 did not have', async () => {
    const cache = await newCache();
    const v1 = await registryLayers('zstdchunked-podman54-app-v1');
    const v2 = await registryLayers('zstdchunked-podman54-app-v2');
    assert.equal(v1[0]!.desc.digest, v2[0]!.desc.digest, 'the two images share their base layer');
    const seen = new Set<string>();
    for (const l of v1) {
      const reader = readerFor(l, cache);
      for (const entry of regular(l.toc)) {
        await readWhole(reader, entry);
        for (const c of entry.chunks) seen.add(c.digest);
      }
    }
    const counter = new ReadCounter();
    // Without gap bridging, the bytes fetched are exactly the new chunks' frames.
    let expectedBytes = 0;
    let v2Bytes = 0;
    const planned = new Set<string>();
    for (const l of v2) {
      const reader = readerFor(l, cache, counter.wrap(l.blob), { maxGapBytes: 0 });
      for (const entry of regular(l.toc)) {
        assert.equal(sha256(await readWhole(reader, entry)), entry.digest, entry.path);
        for (const c of entry.chunks) {
          if (c.zeros) continue;
          v2Bytes += c.compressedEnd - c.compressedOffset;
          if (seen.has(c.digest) || planned.has(c.digest)) continue;
          planned.add(c.digest);
          expectedBytes += c.compressedEnd - c.compressedOffset;
        }
      }
    }
    assert.ok(expectedBytes > 0 && expectedBytes < v2Bytes / 2, `${expectedBytes} of ${v2Bytes} bytes are new in v2`);
    assert.equal(counter.bytes, expectedBytes);
  });

  test('a flipped byte in a frame: error naming layer, entry and digest, nothing cached; a good blob then works', async () => {
    const [l] = await corpusLayers('zstdchunked-skopeo118-basic');
    const entry = regular(l!.toc).find((e) => e.size > 1000 && e.chunks.every((c) => !c.zeros))!;
    const target = entry.chunks[0]!;
    const flipAt = target.compressedOffset + Math.floor((target.compressedEnd - target.compressedOffset) / 2);
    const corrupt = withRead(l!.blob, async (offset, length, signal) => {
      const b = Buffer.from(await l!.blob.read(offset, length, signal));
      if (flipAt >= offset && flipAt < offset + length) b[flipAt - offset]! ^= 0x40;
      return b;
    });
    const cache = await newCache();
    const bad = readerFor(l!, cache, corrupt);
    await assert.rejects(bad.readAt(entry, 0, entry.size), (e: Error) => {
      assert.ok(e instanceof LayerReadError);
      assert.match(e.message, new RegExp(`layer ${l!.desc.digest} entry ${entry.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      assert.match(e.message, /digest mismatch|cannot decompress/);
      assert.ok(e.cause, 'the cause is kept');
      return true;
    });
    assert.equal(bad.stats.verifyFailures >= 1, true);
    assert.equal(await cache.has(target.digest), false, 'nothing unverified is cached');
    assert.equal(inFlightFor(cache).size, 0);
    // The same reader retries (the corrupt blob fails again), a good blob succeeds.
    await assert.rejects(bad.readAt(entry, 0, entry.size), LayerReadError);
    const good = readerFor(l!, cache);
    assert.equal(sha256(await good.readAt(entry, 0, entry.size)), entry.digest);
  });

  test('a failing blob fails the read with its cause; a later read retries', async () => {
    const [l] = await corpusLayers('zstdchunked-podman4-basic');
    const entry = regular(l!.toc).find((e) => e.size > 0 && e.chunks.some((c) => !c.zeros))!;
    let failing = true;
    const flaky = withRead(l!.blob, async (offset, length, signal) => {
      if (failing) throw new Error('connection reset by test');
      return l!.blob.read(offset, length, signal);
    });
    const reader = readerFor(l!, await newCache(), flaky);
    await assert.rejects(reader.readAt(entry, 0, entry.size), (e: Error) => e instanceof LayerReadError && /connection reset by test/.test(e.message) && e.cause instanceof Error);
    failing = false;
    assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest);
  });

  test('an aborted read rejects at once; the fetch it started still completes and is cached', async () => {
    const [l] = await corpusLayers('zstdchunked-podman4-basic');
    const entry = regular(l!.toc).find((e) => e.size > 0 && e.chunks.some((c) => !c.zeros))!;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const counter = new ReadCounter();
    const slow = withRead(counter.wrap(l!.blob), async (offset, length, signal) => {
      await gate;
      return counter.wrap(l!.blob).read(offset, length, signal);
    });
    const reader = readerFor(l!, await newCache(), slow, { readAhead: 0 });
    const ac = new AbortController();
    const read = reader.readAt(entry, 0, entry.size, ac.signal);
    ac.abort(new Error('interrupted by the test'));
    await assert.rejects(read, /interrupted by the test/);
    release();
    assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest);
    assert.equal(counter.requests, 1, 'the second read joined the first fetch');
  });

  test('restart: a new cache over the same directory serves everything without fetching', async () => {
    const dir = join(tmp, 'restart');
    const layers = await registryLayers('estargz-ctrremote-app-v1');
    const first = await ChunkCache.open({ dir });
    for (const l of layers) {
      const reader = readerFor(l, first);
      for (const entry of regular(l.toc)) await readWhole(reader, entry);
    }
    await first.flush();
    const second = await ChunkCache.open({ dir });
    const counter = new ReadCounter();
    for (const l of layers) {
      const reader = readerFor(l, second, counter.wrap(l.blob));
      for (const entry of regular(l.toc)) assert.equal(sha256(await readWhole(reader, entry)), entry.digest);
    }
    assert.equal(counter.bytes, 0);
    assert.equal(counter.requests, 0);
    assert.ok((await second.stats()).hits.disk > 0);
  });

  test('gc to a small budget, then reads refetch what was evicted, correctly', async () => {
    const dir = join(tmp, 'gc');
    const layers = await registryLayers('zstdchunked-podman54-app-v1');
    const cache = await ChunkCache.open({ dir });
    for (const l of layers) {
      const reader = readerFor(l, cache);
      for (const entry of regular(l.toc)) await readWhole(reader, entry);
    }
    await cache.flush();
    const before = await cache.stats();
    const res = await cache.gc(Math.floor(before.bytes / 4));
    assert.ok(res.removedFiles > 0);
    assert.ok((await cache.stats()).bytes <= before.bytes / 4);
    const after = await ChunkCache.open({ dir, memoryBytes: 1 });
    const counter = new ReadCounter();
    for (const l of layers) {
      const reader = readerFor(l, after, counter.wrap(l.blob));
      for (const entry of regular(l.toc)) assert.equal(sha256(await readWhole(reader, entry)), entry.digest, entry.path);
    }
    assert.ok(counter.bytes > 0, 'evicted chunks were fetched again');
  });

  test('eStargz prefetch landmark: one request for exactly the bytes before it, then those files need no fetch', async () => {
    const layers = await registryLayers('estargz-ctrremote-prefetch');
    const withLandmark = layers.filter((l) => l.toc.prefetchEnd);
    assert.ok(withLandmark.length > 0, 'the image has a prefetch landmark');
    const cache = await newCache();
    for (const l of withLandmark) {
      const counter = new ReadCounter();
      const reader = readerFor(l, cache, counter.wrap(l.blob));
      const progress: number[] = [];
      const fetched = await prefetchLandmark(reader, (p) => progress.push(p.done / p.total));
      assert.equal(counter.requests, 1);
      assert.equal(counter.bytes, l.toc.prefetchEnd);
      assert.equal(fetched, l.toc.prefetchEnd);
      assert.equal(progress.at(-1), 1);
      const before = regular(l.toc).filter((e) => e.chunks.every((c) => c.zeros || c.compressedEnd <= l.toc.prefetchEnd!));
      assert.ok(before.length > 0);
      for (const entry of before) assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest);
      assert.equal(counter.requests, 1, 'prefetched files were served from the cache');
      assert.equal(await prefetchLandmark(reader), 0, 'a second prefetch fetches nothing');
    }
  });

  test('reads of landmark files while the prefetch is in flight wait for it: one request in all', async () => {
    const layers = await registryLayers('estargz-ctrremote-prefetch');
    const withLandmark = layers.filter((l) => l.toc.prefetchEnd);
    assert.ok(withLandmark.length > 0, 'the image has a prefetch landmark');
    for (const l of withLandmark) {
      const counter = new ReadCounter();
      const reader = readerFor(l, await newCache(), counter.wrap(l.blob));
      const before = regular(l.toc).filter((e) => e.size > 0 && e.chunks.every((c) => c.zeros || c.compressedEnd <= l.toc.prefetchEnd!));
      assert.ok(before.length > 0);
      const prefetch = prefetchLandmark(reader);
      // Reads arrive while the prefetch is under way (as a container starts right after the mount).
      const reads = before.map(async (entry) => assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest));
      await Promise.all([prefetch, ...reads]);
      assert.equal(counter.requests, 1, 'the reads joined the prefetch request');
      assert.equal(counter.bytes, l.toc.prefetchEnd);
    }
  });

  test('the landmark span is handed out as it arrives: a file at its start is served before the request ends', async () => {
    const layers = await registryLayers('estargz-ctrremote-prefetch');
    const l = layers.find((x) => x.toc.prefetchEnd && regular(x.toc).some((e) => e.size > 0 && e.chunks[0]!.compressedEnd < x.toc.prefetchEnd!))!;
    assert.ok(l, 'a layer with a file before its landmark');
    const first = regular(l.toc).filter((e) => e.size > 0).sort((a, b) => a.chunks[0]!.compressedOffset - b.chunks[0]!.compressedOffset)[0]!;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let servedWhileHeld = false;
    let gaveUpWaiting = false;
    // The registry's bytes, re-cut into small parts; the request stalls after the first file's bytes until the read is served.
    const stalling: BlobReader = {
      ...l.blob,
      async read(offset, length, signal) {
        const parts: Buffer[] = [];
        for await (const p of stalling.readParts!(offset, length, signal)) parts.push(p);
        return Buffer.concat(parts);
      },
      async *readParts(offset, length, signal) {
        const all = await l.blob.read(offset, length, signal);
        const stallAt = first.chunks.at(-1)!.compressedEnd - offset;
        for (let i = 0; i < all.length; i += 64) {
          if (i >= stallAt && !servedWhileHeld) {
            // Bounded, so a reader that waits for the whole request fails the test instead of hanging.
            await Promise.race([held, new Promise<void>((r) => setTimeout(() => r(void (gaveUpWaiting = true)), 10_000).unref())]);
          }
          yield all.subarray(i, Math.min(all.length, i + 64));
        }
      },
    };
    const reader = readerFor(l, await newCache(), stalling);
    const prefetch = prefetchLandmark(reader);
    const data = await reader.readAt(first, 0, first.size);
    servedWhileHeld = !gaveUpWaiting;
    release();
    await prefetch;
    assert.equal(sha256(data), first.digest);
    assert.ok(servedWhileHeld, 'the read was served while the rest of the span was still coming');
  });

  test('fetchAll caches the whole layer in the background, user reads still served meanwhile', async () => {
    const layers = await registryLayers('zstdchunked-skopeo118-many');
    const cache = await newCache();
    for (const l of layers) {
      const counter = new ReadCounter();
      const reader = readerFor(l, cache, counter.wrap(l.blob));
      const files = regular(l.toc);
      let last = { done: 0, total: -1 };
      const background = fetchAll(reader, { onProgress: (p) => (last = p) });
      const some = files.filter((_, i) => i % 97 === 0);
      for (const entry of some) assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest);
      await background;
      assert.equal(last.done, last.total);
      const fetched = counter.bytes;
      for (const entry of files) assert.equal(sha256(await reader.readAt(entry, 0, entry.size)), entry.digest);
      assert.equal(counter.bytes, fetched, 'after fetchAll every read is a cache hit');
      assert.ok(counter.requests < files.length / 4, `${counter.requests} requests for ${files.length} files`);
    }
  });

  test('fetchAll stops when aborted', async () => {
    const [l] = await registryLayers('zstdchunked-skopeo118-many');
    const reader = readerFor(l!, await newCache());
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await assert.rejects(fetchAll(reader, { signal: ac.signal }), /stop/);
  });

  describe('big files', () => {
    const images: Record<string, OpenLayer[]> = {};
    const SIZE = 24 * 1024 * 1024 + 12345;
    before(async () => {
      for (const format of ['zstd:chunked', 'estargz'] as const) {
        const out = join(tmp, `big-${format.replace(':', '-')}`);
        await buildImage(out, {
          format,
          layers: [[{ path: 'big/a.bin', content: seededContent('a', SIZE) }, { path: 'small.txt', content: 'small\n' }, { path: 'big/b.bin', content: seededContent('b', Math.floor(SIZE / 2)) }]],
        });
        const repo = await reg.load(out, `big-${format.replace(':', '-')}`);
        images[format] = await registryLayers(repo);
      }
    });

    for (const format of ['zstd:chunked', 'estargz'] as const) {
      test(`${format}: 32 concurrent readers of random ranges of big files all get the right bytes`, async () => {
        const [l] = images[format]!;
        const files = regular(l!.toc).filter((e) => e.size > 1024 * 1024);
        assert.equal(files.length, 2);
        // Ground truth: each whole file read once, checked against its TOC digest.
        const truth = new Map<TocEntry, Buffer>();
        const warm = readerFor(l!, await newCache());
        for (const e of files) {
          const data = await readWhole(warm, e, 4 * 1024 * 1024);
          assert.equal(sha256(data), e.digest);
          truth.set(e, data);
        }
        const counter = new ReadCounter();
        const reader = readerFor(l!, await newCache({ memoryBytes: 4 * 1024 * 1024 }), counter.wrap(l!.blob));
        const rnd = seededRandom(format, 32 * 12 * 3);
        await Promise.all(
          Array.from({ length: 32 }, async () => {
            for (let i = 0; i < 12; i++) {
              const e = files[Math.floor(rnd() * files.length)]!;
              const off = Math.floor(rnd() * (e.size + 100));
              const len = 1 + Math.floor(rnd() * 512 * 1024);
              const got = await reader.readAt(e, off, len);
              const want = truth.get(e)!.subarray(Math.min(off, e.size), Math.min(e.size, off + len));
              assert.ok(got.equals(want), `${e.path} [${off}, +${len})`);
            }
          }),
        );
        assert.ok(counter.requests > 0);
      });
    }

    for (const format of ['zstd:chunked', 'estargz'] as const) {
      test(`${format}: readInto answers at once (no promise) when the range is in memory, the same bytes as readAt, and fetches again what was evicted`, async () => {
        const [l] = images[format]!;
        const e = regular(l!.toc).find((x) => x.path === 'big/a.bin')!;
        assert.ok(e.chunks.length > 4, `big/a.bin has ${e.chunks.length} chunks`);
        const counter = new ReadCounter();
        // Ranges that start inside one chunk and end inside the next, as the kernel's reads do.
        const second = e.chunks[1]!;
        const range = { offset: second.offset - 4096, length: 8192 + 1000 };
        // A memory tier that holds exactly the range's chunks: any other chunk evicts one of them.
        const covering = chunksCovering(e, range.offset, range.offset + range.length);
        const reader = readerFor(l!, await newCache({ memoryBytes: covering.reduce((n, c) => n + c.size, 0) }), counter.wrap(l!.blob), { readAhead: 0 });
        const truth = seededBytes('a', SIZE);
        const into = Buffer.alloc(range.length + 16, 0xee);
        const first = reader.readInto(e, range.offset, range.length, into);
        assert.ok(first instanceof Promise, 'a range not in memory is fetched');
        assert.equal(await first, range.length);
        assert.ok(into.subarray(0, range.length).equals(truth.subarray(range.offset, range.offset + range.length)), 'fetched bytes');
        assert.ok(into.subarray(range.length).equals(Buffer.alloc(16, 0xee)), 'nothing written past the count');
        const requests = counter.requests;
        into.fill(0);
        const again = reader.readInto(e, range.offset, range.length, into);
        assert.equal(again, range.length, 'a range in memory is answered synchronously');
        assert.ok(into.subarray(0, range.length).equals(truth.subarray(range.offset, range.offset + range.length)), 'bytes from memory');
        assert.ok(reader.readInto(e, e.size, 10, into) === 0, 'a read at EOF is 0 at once');
        const tail = reader.readInto(e, e.size - 100, 4096, into);
        assert.equal(await tail, 100, 'a read past EOF is clamped');
        assert.ok(into.subarray(0, 100).equals(truth.subarray(e.size - 100)), 'the last bytes');
        assert.ok(counter.requests > requests, 'the tail was fetched');
        // The tail's chunk pushed one of the range's out of memory.
        const evicted = reader.readInto(e, range.offset, range.length, into);
        assert.ok(evicted instanceof Promise, 'an evicted range is read again, from disk or registry');
        assert.equal(await evicted, range.length);
        assert.ok(into.subarray(0, range.length).equals(truth.subarray(range.offset, range.offset + range.length)), 'bytes after eviction');
        assert.ok((await reader.readAt(e, range.offset, range.length)).equals(truth.subarray(range.offset, range.offset + range.length)), 'readAt agrees');
      });
    }

    test('fetchAll yields to user reads: no background request starts while a read is in progress', async () => {
      const [l] = images['zstd:chunked']!;
      const user = regular(l!.toc).find((e) => e.path === 'big/b.bin')!;
      const userExtent = { start: Math.min(...user.chunks.map((c) => c.compressedOffset)), end: Math.max(...user.chunks.map((c) => c.compressedEnd)) };
      const started: Array<{ offset: number; end: number; duringUserRead: boolean }> = [];
      let reader!: LayerReader;
      const blob = withRead(l!.blob, (offset, length, signal) => {
        started.push({ offset, end: offset + length, duringUserRead: reader.userReadsInFlight > 0 });
        return l!.blob.read(offset, length, signal);
      });
      reader = readerFor(l!, await newCache(), blob);
      const background = fetchAll(reader);
      assert.equal(sha256(await readWhole(reader, user)), user.digest);
      await background;
      const duringUser = started.filter((r) => r.duringUserRead);
      assert.ok(duringUser.length > 0 && started.length > duringUser.length);
      for (const r of duringUser) assert.ok(r.offset < userExtent.end && r.end > userExtent.start, `request [${r.offset}, ${r.end}) during a user read is not for ${user.path}`);
      // Everything is cached now.
      const counter = new ReadCounter();
      const after = readerFor(l!, reader.cache, counter.wrap(l!.blob));
      for (const e of regular(l!.toc)) assert.equal(sha256(await after.readAt(e, 0, e.size)), e.digest);
      assert.equal(counter.requests, 0);
    });

    test('a user read that joins a waiting background fetch is not held up by other user reads', { timeout: 60_000 }, async () => {
      const [l] = images['zstd:chunked']!;
      const a = regular(l!.toc).find((e) => e.path === 'big/a.bin')!;
      const b = regular(l!.toc).find((e) => e.path === 'big/b.bin')!;
      // A user read of b's last chunk stays in progress until the end of the test.
      const held = b.chunks.at(-1)!;
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const blob = withRead(l!.blob, async (offset, length, signal) => {
        if (offset < held.compressedEnd && offset + length > held.compressedOffset) await gate;
        return l!.blob.read(offset, length, signal);
      });
      const reader = readerFor(l!, await newCache(), blob, { readAhead: 0 });
      const heldRead = reader.readAt(b, held.offset, held.size);
      const background = fetchAll(reader);
      while (!inFlightFor(reader.cache).has(a.chunks[0]!.digest)) await new Promise((r) => setImmediate(r));
      // a's first chunk is now a background fetch waiting for user reads to end; this read joins it.
      const first = await reader.readAt(a, 0, 1000);
      const truth = await readerFor(l!, await newCache()).readAt(a, 0, 1000);
      assert.ok(first.equals(truth));
      release();
      await heldRead;
      await background;
      assert.equal(sha256(await reader.readAt(b, 0, b.size)), b.digest);
    });

    test('sequential read of a big file streams with read-ahead in requests of ~1 MiB', async () => {
      const [l] = images['zstd:chunked']!;
      const entry = regular(l!.toc).find((e) => e.path === 'big/a.bin')!;
      const counter = new ReadCounter();
      const reader = readerFor(l!, await newCache(), counter.wrap(l!.blob));
      assert.equal(sha256(await readWhole(reader, entry)), entry.digest);
      const extent = extentBytes(entry.chunks.map((chunk) => ({ chunk, entry })));
      assert.ok(counter.requests <= Math.ceil(extent / (1024 * 1024)) + entry.size / (8 * 1024 * 1024) + 2, `${counter.requests} requests for ${extent} bytes`);
      assert.ok(counter.bytes <= extent);
    });
  });

  test('a TOC stored on disk is used by the next open', async () => {
    const [l] = await corpusLayers('zstdchunked-skopeo118-basic');
    const store = new DiskTocStore(join(tmp, 'tocs'));
    const counter = new ReadCounter();
    const first = await readLayerToc(l!.desc, counter.wrap(l!.blob), { tocStore: store });
    const fetched = counter.requests;
    assert.ok(fetched > 0);
    const second = await readLayerToc(l!.desc, counter.wrap(l!.blob), { tocStore: new DiskTocStore(join(tmp, 'tocs')) });
    assert.equal(counter.requests, fetched, 'no TOC fetch the second time');
    assert.deepEqual(Array.from(second.entries).map((e) => e.path), Array.from(first.entries).map((e) => e.path));
  });
});
