/**
 * Scheduling of range requests (src/fetch/range-fetcher.ts) and in-flight joining
 * (src/fetch/in-flight.ts), with blobs and chunk stores in memory: what is coalesced into
 * one request, how many run at once, who waits for whom, and when a request is given up.
 * The end-to-end behaviour over real registries is in test/fetch/layer-reader.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sha256 } from '../../src/digest.js';
import { FetchTimeoutError, type LayerReadError } from '../../src/fetch/errors.js';
import { InFlightChunks, inFlightFor } from '../../src/fetch/in-flight.js';
import { LayerReader } from '../../src/fetch/layer-reader.js';
import { RangeFetcher, type RangeItem } from '../../src/fetch/range-fetcher.js';
import { readLayerToc } from '../../src/formats/index.js';
import type { Chunk, LayerToc, TocEntry } from '../../src/formats/toc.js';
import { openImageSource } from '../../src/image/open.js';
import type { BlobReader } from '../../src/source/types.js';
import { buildImage, seededBytes } from '../helpers/images.js';
import { MemoryChunkStore } from '../helpers/memory-chunk-store.js';

interface Request {
  offset: number;
  length: number;
}

/** A blob of `size` zero bytes that records its range requests and holds each until `gate` opens. */
function recordingBlob(size: number, gate?: Promise<void>): BlobReader & { requests: Request[]; inFlight: number; maxInFlight: number } {
  const blob = {
    digest: 'sha256:' + '0'.repeat(64),
    size,
    requests: [] as Request[],
    inFlight: 0,
    maxInFlight: 0,
    async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
      blob.requests.push({ offset, length });
      blob.inFlight++;
      blob.maxInFlight = Math.max(blob.maxInFlight, blob.inFlight);
      try {
        if (gate) await Promise.race([gate, new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }))]);
        await new Promise((r) => setImmediate(r));
        return Buffer.alloc(length);
      } finally {
        blob.inFlight--;
      }
    },
    stream: () => Promise.reject(new Error('not used')),
  };
  return blob;
}

const ENTRY = { path: 'f', type: 'reg' } as TocEntry;

/** A chunk at compressed [start, end). */
function item(start: number, end: number, urgent = true): RangeItem {
  const chunk: Chunk = { offset: 0, size: end - start, compressedOffset: start, compressedEnd: end, innerOffset: 0, digest: `sha256:${start}`, zeros: false };
  return { chunk, entry: ENTRY, urgent };
}

/** A fetcher whose sink records arrivals and failures. */
function fetcherOver(blob: BlobReader, settings: Partial<ConstructorParameters<typeof RangeFetcher>[2]> = {}) {
  const arrived: RangeItem[] = [];
  const failed: Array<{ item: RangeItem; error: LayerReadError }> = [];
  const fetcher = new RangeFetcher<RangeItem>('sha256:layer', blob, { maxRequestBytes: 1024 * 1024, maxGapBytes: 0, maxInFlight: 8, ...settings }, {
    arrived: async (it, bytes, answered) => {
      assert.equal(bytes.length, it.chunk.compressedEnd - it.chunk.compressedOffset);
      arrived.push(it);
      answered();
    },
    failed: (it, error) => failed.push({ item: it, error }),
  });
  return { fetcher, arrived, failed };
}

/** Waits (up to 5 s) until `until()` holds. */
const settle = async (until: () => boolean): Promise<void> => {
  const deadline = Date.now() + 5000;
  while (!until() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
  assert.ok(until(), 'condition not reached within 5 s');
};

describe('RangeFetcher', () => {
  test('chunks asked for in one turn are coalesced: touching or within maxGapBytes, up to maxRequestBytes', async () => {
    const blob = recordingBlob(10_000);
    const { fetcher, arrived } = fetcherOver(blob, { maxRequestBytes: 4000, maxGapBytes: 100 });
    // [0,1000)+[1000,2000) touch; [2050,3000) is 50 bytes away; [3500,4500) is 500 away; [4500,9000) alone is over the cap.
    const items = [item(0, 1000), item(1000, 2000), item(2050, 3000), item(3500, 4500), item(4500, 9000)];
    fetcher.enqueue(items.slice(0, 3), 'user');
    fetcher.enqueue(items.slice(3), 'user');
    await settle(() => arrived.length === items.length);
    assert.deepEqual(blob.requests.sort((a, b) => a.offset - b.offset), [
      { offset: 0, length: 3000 },
      { offset: 3500, length: 1000 },
      { offset: 4500, length: 4500 },
    ]);
  });

  test('never more than maxInFlight requests at once', async () => {
    let open!: () => void;
    const blob = recordingBlob(100_000, new Promise<void>((r) => (open = r)));
    const { fetcher, arrived } = fetcherOver(blob, { maxInFlight: 3, maxRequestBytes: 1000 });
    fetcher.enqueue(Array.from({ length: 10 }, (_, i) => item(i * 2000, i * 2000 + 1000)), 'user');
    await settle(() => blob.inFlight === 3);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(blob.inFlight, 3);
    open();
    await settle(() => arrived.length === 10);
    assert.equal(blob.maxInFlight, 3);
    assert.equal(blob.requests.length, 10);
  });

  test('background ranges wait while a user read is in progress; a user read joining one lets it go', async () => {
    const blob = recordingBlob(100_000);
    const { fetcher, arrived } = fetcherOver(blob);
    fetcher.beginUserRead();
    const background = item(50_000, 51_000, false);
    fetcher.enqueue([background], 'background');
    fetcher.enqueue([item(0, 1000)], 'user');
    await settle(() => arrived.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(blob.requests, [{ offset: 0, length: 1000 }], 'only the user range went out');
    // A user read now waits for the background chunk: it is promoted and goes out.
    background.urgent = true;
    fetcher.wakeBackground();
    await settle(() => arrived.length === 2);
    fetcher.endUserRead();
    assert.deepEqual(blob.requests[1], { offset: 50_000, length: 1000 });
  });

  test('background ranges go once the user reads end', async () => {
    const blob = recordingBlob(100_000);
    const { fetcher, arrived } = fetcherOver(blob);
    fetcher.beginUserRead();
    fetcher.enqueue([item(0, 1000, false)], 'background');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(blob.requests.length, 0);
    fetcher.endUserRead();
    await settle(() => arrived.length === 1);
  });

  test('a request that brings nothing is given up at fetchTimeoutMs; every chunk in it fails with FetchTimeoutError', async () => {
    const blob = recordingBlob(10_000, new Promise<void>(() => undefined));
    const { fetcher, failed, arrived } = fetcherOver(blob, { fetchTimeoutMs: 100 });
    const started = Date.now();
    fetcher.enqueue([item(0, 100), item(100, 200)], 'user');
    await settle(() => failed.length === 2);
    assert.ok(Date.now() - started >= 95);
    assert.equal(arrived.length, 0);
    for (const f of failed) {
      assert.ok(f.error instanceof FetchTimeoutError);
      assert.match(f.error.message, /layer sha256:layer entry f: cannot fetch bytes \[0, 200\) of the layer: no data within fetch\.timeout \(100ms\)/);
    }
  });

  test('a failing request fails its chunks with the cause, and counts nothing fetched', async () => {
    const blob = { ...recordingBlob(10_000), read: () => Promise.reject(new Error('registry said 500')) };
    const { fetcher, failed } = fetcherOver(blob);
    fetcher.enqueue([item(0, 100)], 'user');
    await settle(() => failed.length === 1);
    assert.match(failed[0]!.error.message, /registry said 500/);
    assert.equal(fetcher.counters.fetchedRequests, 0);
  });
});

describe('InFlightChunks', () => {
  test('a claim is joined until it settles, then forgotten; promote reaches the claimer', async () => {
    const table = new InFlightChunks();
    let promoted = 0;
    const claim = table.claim('sha256:a', () => promoted++);
    assert.equal(table.join('sha256:a')?.promise, claim.promise);
    table.join('sha256:a')!.promote();
    assert.equal(promoted, 1);
    claim.resolve(Buffer.from('x'));
    await claim.promise;
    await new Promise((r) => setImmediate(r));
    assert.equal(table.size, 0);
    const failing = table.claim('sha256:b', () => undefined);
    failing.reject(new Error('no'));
    await assert.rejects(failing.promise, /no/);
    await new Promise((r) => setImmediate(r));
    assert.equal(table.has('sha256:b'), false);
  });

  test('one table per chunk store', () => {
    const a = new MemoryChunkStore();
    assert.equal(inFlightFor(a), inFlightFor(a));
    assert.notEqual(inFlightFor(a), inFlightFor(new MemoryChunkStore()));
  });
});

describe('LayerReader over a chunk store in memory', () => {
  let tmp: string;
  let toc: LayerToc;
  let blob: BlobReader;
  const content = seededBytes('in-memory', 3 * 1024 * 1024 + 123);
  const small = Buffer.from('small file\n');

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-range-fetcher-'));
    const img = await buildImage(join(tmp, 'img'), { format: 'zstd:chunked', layers: [[{ path: 'big', content }, { path: 'small', content: small }]] });
    const source = await openImageSource(`oci:${img.dir}:latest`);
    const layer = img.layers[0]!;
    blob = source.blob(layer);
    toc = await readLayerToc(layer, blob);
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  const counting = (): BlobReader & { requests: number } => {
    const b = { digest: blob.digest, size: blob.size, requests: 0, read: (o: number, l: number, s?: AbortSignal) => (b.requests++, blob.read(o, l, s)), stream: (s?: AbortSignal) => blob.stream(s) };
    return b;
  };
  const entry = (path: string): TocEntry => Array.from(toc.entries).find((e) => e.path === path)!;

  test('two readers over one store (two layers with the same content) fetch a chunk once; over two stores, twice', async () => {
    const store = new MemoryChunkStore();
    const [b1, b2] = [counting(), counting()];
    const r1 = new LayerReader({ layerDigest: 'sha256:one', toc, blob: b1, cache: store, readAhead: 0 });
    const r2 = new LayerReader({ layerDigest: 'sha256:two', toc, blob: b2, cache: store, readAhead: 0 });
    const [x, y] = await Promise.all([r1.readAt(entry('small'), 0, 100), r2.readAt(entry('small'), 0, 100)]);
    assert.deepEqual([x, y], [small, small]);
    assert.equal(b1.requests + b2.requests, 1);
    assert.equal(store.chunks.size, 1);

    const b3 = counting();
    const r3 = new LayerReader({ layerDigest: 'sha256:three', toc, blob: b3, cache: new MemoryChunkStore(), readAhead: 0 });
    assert.deepEqual(await r3.readAt(entry('small'), 0, 100), small);
    assert.equal(b3.requests, 1);
  });

  test('a sequential read is fetched ahead: later reads of the file need no request of their own', async () => {
    const b = counting();
    const reader = new LayerReader({ layerDigest: 'sha256:seq', toc, blob: b, cache: new MemoryChunkStore(), readAhead: 8 * 1024 * 1024 });
    const big = entry('big');
    const parts: Buffer[] = [];
    for (let off = 0; off < big.size; off += 128 * 1024) parts.push(await reader.readAt(big, off, 128 * 1024));
    assert.equal(sha256(Buffer.concat(parts)), sha256(content));
    assert.ok(b.requests <= Math.ceil(big.size / (1024 * 1024)) + 1, `${b.requests} requests for ${big.chunks.length} chunks`);
    assert.ok(b.requests < big.chunks.length || big.chunks.length <= 2);
  });
});

describe('neighbouring small files', () => {
  let tmp: string;
  let toc: LayerToc;
  let blob: BlobReader;
  const smalls = Array.from({ length: 12 }, (_, i) => ({ path: `lib/s${String(i).padStart(2, '0')}.py`, content: seededBytes(`small-${i}`, 6000) }));

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-neighbours-'));
    const img = await buildImage(join(tmp, 'img'), {
      format: 'zstd:chunked',
      layers: [[{ path: 'lib', type: 'dir' }, ...smalls, { path: 'lib/zz-big.so', content: seededBytes('nb-big', 600 * 1024) }]],
    });
    const source = await openImageSource(`oci:${img.dir}:latest`);
    blob = source.blob(img.layers[0]!);
    toc = await readLayerToc(img.layers[0]!, blob);
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  const reader = (neighbourBytes: number) => {
    const b = { digest: blob.digest, size: blob.size, requests: [] as Array<[number, number]>, read: (o: number, l: number, s?: AbortSignal) => (b.requests.push([o, l]), blob.read(o, l, s)), stream: (s?: AbortSignal) => blob.stream(s) };
    return { b, r: new LayerReader({ layerDigest: 'sha256:nb', toc, blob: b, cache: new MemoryChunkStore(), readAhead: 0, neighbourBytes }) };
  };
  const entry = (path: string): TocEntry => Array.from(toc.entries).find((e) => e.path === path)!;

  test('a read of a small file brings the small files after it in the same request, within neighbourBytes; never a big file', async () => {
    const { b, r } = reader(32 * 1024);
    assert.deepEqual(await r.readAt(entry(smalls[0]!.path), 0, 6000), smalls[0]!.content);
    assert.equal(b.requests.length, 1);
    const [start, length] = b.requests[0]!;
    assert.ok(length <= 32 * 1024, `the request spans ${length} bytes`);
    const fetched = smalls.filter((f) => entry(f.path).chunks[0]!.compressedEnd <= start + length);
    assert.ok(fetched.length >= 3, `${fetched.length} files in the request`);
    for (const f of fetched) assert.deepEqual(await r.readAt(entry(f.path), 0, 6000), f.content);
    assert.equal(b.requests.length, 1, 'the neighbours were read without a request of their own');
    assert.equal(r.stats.neighbourChunks, fetched.length - 1);
    // The last small file's neighbour is the big one: it is not fetched along.
    const last = smalls.at(-1)!;
    await r.readAt(entry(last.path), 0, 6000);
    const [s2, l2] = b.requests.at(-1)!;
    assert.ok(s2 + l2 <= entry('lib/zz-big.so').chunks[0]!.compressedOffset + 1024, 'the big file was not fetched');
  });

  test('neighbourBytes 0: each small file is a request of its own', async () => {
    const { b, r } = reader(0);
    await r.readAt(entry(smalls[0]!.path), 0, 6000);
    await r.readAt(entry(smalls[1]!.path), 0, 6000);
    assert.equal(b.requests.length, 2);
    assert.equal(r.stats.neighbourChunks, 0);
  });
});
