/**
 * layer/open.ts is the one place a layer is opened, for the mount (openImage) and for the
 * layer store (LayerStore): every fetch.* setting reaches the readers of both, and when the
 * registry stops answering, a read of uncached data through either fails within the stall
 * timeout and one check (the registry is then known to be down), later ones — the kernel's
 * retries of the same read too — at once, cached data is served throughout, and reads
 * succeed within seconds of the registry answering again. Real docker-registry on loopback.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sha256 } from '../../src/digest.js';
import { ReadTimeoutError } from '../../src/fetch/errors.js';
import { PROBE_DELAYS_MS, registryDownCause } from '../../src/registry/health.js';
import { DEFAULT_MAX_GAP_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_NEIGHBOUR_BYTES, DEFAULT_READ_AHEAD, FETCH_SETTING_KEYS, type LayerFetchSettings } from '../../src/fetch/layer-reader.js';
import type { TocEntry } from '../../src/formats/toc.js';
import { openImage, type OpenedImage } from '../../src/image/image.js';
import { LayerOpener } from '../../src/layer/open.js';
import { logger } from '../../src/log.js';
import type { SourceOptions } from '../../src/registry/options.js';
import { LayerStore, type StoreLayer } from '../../src/store/layers.js';
import { buildImage, seededBytes, type BuiltImage } from '../helpers/images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';
import { readContent } from '../helpers/store.js';

const TIMEOUT_MS = 1500;
/** registry.stall_timeout of the frozen-registry test. */
const STALL_MS = 1000;
/** Every setting differs from its default, so a setting that is dropped on the way shows. */
const SETTINGS = { maxRequestBytes: 3 * 1024 * 1024 + 1, maxGapBytes: 12_345, readAhead: 777_777, maxInFlight: 3, neighbourBytes: 54_321, fetchTimeoutMs: TIMEOUT_MS } satisfies Required<LayerFetchSettings>;
const DEFAULTS: Record<keyof LayerFetchSettings, number | undefined> = { maxRequestBytes: DEFAULT_MAX_REQUEST_BYTES, maxGapBytes: DEFAULT_MAX_GAP_BYTES, readAhead: DEFAULT_READ_AHEAD, maxInFlight: DEFAULT_MAX_IN_FLIGHT, neighbourBytes: DEFAULT_NEIGHBOUR_BYTES, fetchTimeoutMs: undefined };
const FILES = Array.from({ length: 6 }, (_, i) => ({ path: `data/file-${i}`, content: seededBytes(`open-${i}`, 200 * 1024) }));

describe('one layer opener: the mount and the store alike', { timeout: 120_000 }, () => {
  let tmp: string;
  let registry: TestRegistry;
  let img: BuiltImage;
  let ref: string;
  let source: SourceOptions;
  const opened: OpenedImage[] = [];
  const stores: LayerStore[] = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-layer-open-'));
    img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'data', type: 'dir' }, ...FILES]] });
    registry = await startRegistry();
    await registry.load(img.dir, 'app');
    ref = `${registry.host}/app:latest`;
    source = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env')) };
  });
  after(async () => {
    for (const o of opened) await o.close().catch(() => undefined);
    for (const s of stores) await s.close().catch(() => undefined);
    await registry?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  const mountPath = async (cacheDir: string, fetch: LayerFetchSettings, src = source): Promise<OpenedImage> => {
    const image = await openImage(ref, { ...src, cacheDir, fetch, logger: logger().child({ test: 'mount' }) });
    opened.push(image);
    return image;
  };
  const storePath = async (cacheDir: string, fetch: LayerFetchSettings, src = source): Promise<StoreLayer> => {
    const log = logger().child({ test: 'store' });
    const store = new LayerStore({ opener: await LayerOpener.create({ cacheDir, fetch }, log), source: src, logger: log, prefetch: 'none' });
    stores.push(store);
    return store.lookup(ref, img.layers[0]!.digest);
  };

  test('every fetch.* setting reaches the readers of the mount and of the store', async () => {
    assert.deepEqual([...FETCH_SETTING_KEYS].sort(), Object.keys(SETTINGS).sort(), 'the test sets every setting there is');
    for (const key of FETCH_SETTING_KEYS) assert.notEqual(SETTINGS[key], DEFAULTS[key], `${key} differs from its default`);
    const image = await mountPath(join(tmp, 'cache-mount'), SETTINGS);
    for (const layer of image.layers) assert.deepEqual(layer.reader.settings, SETTINGS, 'mount reader');
    const layer = await storePath(join(tmp, 'cache-store'), SETTINGS);
    assert.deepEqual(layer.content.reader.settings, SETTINGS, 'store reader');
    // And with none given, both get the same defaults.
    const plain = await mountPath(join(tmp, 'cache-mount-defaults'), {});
    const plainStore = await storePath(join(tmp, 'cache-store-defaults'), {});
    assert.deepEqual(plain.layers[0]!.reader.settings, DEFAULTS);
    assert.deepEqual(plainStore.content.reader.settings, DEFAULTS);
  });

  test('fetch.timeout bounds a read on both paths when nothing else does (the registry stalls for less than registry.stall_timeout)', async () => {
    const fetch = { fetchTimeoutMs: TIMEOUT_MS, readAhead: 0 };
    const image = await mountPath(join(tmp, 'cache-mount-backstop'), fetch);
    const layer = await storePath(join(tmp, 'cache-store-backstop'), fetch);
    const entry = (path: string): TocEntry => Array.from(layer.content.toc.entries).find((e) => e.path === path)!;
    const node = (path: string) => image.tree().lookup(`/${path}`)!;
    registry.signal('SIGSTOP');
    try {
      const cases: Array<[string, () => Promise<Buffer>]> = [
        ['mount', () => image.readFile(node(FILES[0]!.path), 0, 4096)],
        ['store', () => readContent(layer.content, entry(FILES[1]!.path), 0, 4096)],
      ];
      for (const [path, read] of cases) {
        const started = Date.now();
        await assert.rejects(read(), (e: unknown) => {
          assert.ok(e instanceof ReadTimeoutError, `${path}: ${(e as Error).message}`);
          assert.match((e as Error).message, /no data within fetch\.timeout \(1500ms\)/);
          return true;
        });
        const ms = Date.now() - started;
        assert.ok(ms >= TIMEOUT_MS - 50 && ms < TIMEOUT_MS + 5000, `${path}: failed after ${ms} ms`);
      }
    } finally {
      registry.signal('SIGCONT');
    }
    const mountBytes = await image.readFile(node(FILES[0]!.path), 0, FILES[0]!.content.length);
    assert.equal(sha256(mountBytes), sha256(FILES[0]!.content));
    const storeBytes = await readContent(layer.content, entry(FILES[1]!.path), 0, FILES[1]!.content.length);
    assert.equal(sha256(storeBytes), sha256(FILES[1]!.content));
  });

  test('a frozen registry, once through each path: the first read of uncached data fails within the stall timeout and one check, later ones and their retries at once, cached files are served, and reads work within seconds of it resuming', async () => {
    const stalling = { ...source, registry: { ...source.registry, timeouts: { connectMs: STALL_MS, stallMs: STALL_MS } } };
    const fetch = { readAhead: 0 };
    const image = await mountPath(join(tmp, 'cache-mount-frozen'), fetch, stalling);
    const layer = await storePath(join(tmp, 'cache-store-frozen'), fetch, stalling);
    const entry = (path: string): TocEntry => Array.from(layer.content.toc.entries).find((e) => e.path === path)!;
    const node = (path: string) => image.tree().lookup(`/${path}`)!;
    const paths: Array<[string, (file: number, offset: number, length: number) => Promise<Buffer>]> = [
      ['mount', (f, o, l) => image.readFile(node(FILES[f]!.path), o, l)],
      ['store', (f, o, l) => readContent(layer.content, entry(FILES[f]!.path), o, l)],
    ];
    const timedFailure = async (what: string, read: Promise<Buffer>): Promise<number> => {
      const started = Date.now();
      await assert.rejects(read, (e: unknown) => {
        assert.ok(registryDownCause(e), `${what}: fails as "registry down": ${(e as Error).message}`);
        return true;
      });
      return Date.now() - started;
    };
    const right = async (what: string, read: Promise<Buffer>, f: number, offset: number, length: number): Promise<void> =>
      assert.equal(sha256(await read), sha256(FILES[f]!.content.subarray(offset, offset + length)), what);
    // Each path caches a file of its own, then meets the registry frozen with nothing known about it.
    for (const [i, [path, read]] of paths.entries()) await right(`${path}: cached before`, read(2 + i, 0, FILES[2 + i]!.content.length), 2 + i, 0, FILES[2 + i]!.content.length);
    for (const [i, [path, read]] of paths.entries()) {
      registry.signal('SIGSTOP');
      let resumed = 0;
      try {
        const first = await timedFailure(`${path} first read`, read(i, 0, 4096));
        assert.ok(first >= STALL_MS - 100 && first < 2 * STALL_MS + 2000, `${path}: the first read failed after ${first} ms`);
        const retry = await timedFailure(`${path} the same read again`, read(i, 0, 4096));
        const other = await timedFailure(`${path} another file`, read(4, 8192, 4096));
        assert.ok(retry < 100 && other < 100, `${path}: later reads failed after ${retry} and ${other} ms`);
        for (const [j, [p2, read2]] of paths.entries()) await right(`${path} frozen: ${p2} serves its cached file`, read2(2 + j, 1000, 50_000), 2 + j, 1000, 50_000);
      } finally {
        registry.signal('SIGCONT');
        resumed = Date.now();
      }
      for (;;) {
        try {
          await right(`${path} after the registry resumed`, read(i, 0, FILES[i]!.content.length), i, 0, FILES[i]!.content.length);
          break;
        } catch (e) {
          assert.ok(Date.now() - resumed < PROBE_DELAYS_MS.at(-1)! + 2000, `${path}: reads still fail ${Date.now() - resumed} ms after the registry resumed: ${(e as Error).message}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
  });
});
