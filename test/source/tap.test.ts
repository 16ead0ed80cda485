/**
 * The BlobReader wrappers (ReadCounter for --stats, meteredBlob for the metrics) keep every
 * way the source reads — readParts included, which streams a long range as it arrives —
 * and count what each delivers; an image opened from a registry keeps readParts on its
 * layers' blobs. Each check runs on an image tocfs builds (never skipped) and on a corpus image
 * (skipped without the corpus).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openImage } from '../../src/image/image.js';
import { openImageSource } from '../../src/image/open.js';
import { meteredBlob, registry as metricsRegistry } from '../../src/metrics/index.js';
import { ReadCounter } from '../../src/source/counting.js';
import { seededContent } from '../helpers/images.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { builtTestImage, corpusTestImage } from '../helpers/test-images.js';

const IMAGES = [
  builtTestImage('tap', [[{ path: 'data', type: 'dir' }, { path: 'data/big.bin', content: seededContent('blob-tap-big', 300_000) }]]),
  corpusTestImage('zstdchunked-skopeo118-basic'),
];

async function fetchedMetric(layer: string): Promise<number> {
  const m = await metricsRegistry.getSingleMetric('tocfs_fetched_bytes_total')!.get();
  return m.values.find((v) => v.labels.layer === layer)?.value ?? 0;
}

for (const testImage of IMAGES) {
  describe(`blob wrappers, ${testImage.label}`, { skip: testImage.skip }, () => {
    let tmp: string;
    let reg: TestRegistry;

    before(async () => {
      tmp = await mkdtemp(join(tmpdir(), 'tocfs-tap-'));
      reg = await startRegistry();
      await reg.load(await testImage.dir(), 'app');
    });
    after(async () => {
      await reg?.stop();
      await rm(tmp, { recursive: true, force: true });
    });

    test('counted and metered blobs stream readParts and count every part', async () => {
      const source = await openImageSource(`docker://${reg.host}/app:latest`, { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'a')) });
      try {
        const layer = (await source.resolve(testImage.resolveOptions)).layers[0]!;
        const counter = new ReadCounter();
        const blob = counter.wrap(meteredBlob(source.blob(layer)));
        assert.equal(typeof blob.readParts, 'function', 'readParts survives both wrappers');
        const length = Math.min(layer.size, 200_000);
        const metricBefore = await fetchedMetric(layer.digest);
        const parts: Buffer[] = [];
        for await (const p of blob.readParts!(0, length)) parts.push(p);
        assert.ok(Buffer.concat(parts).equals(await source.blob(layer).read(0, length)), 'same bytes as read()');
        assert.equal(counter.bytes, length);
        assert.equal(counter.requests, 1);
        assert.deepEqual(counter.perBlob.get(layer.digest), { bytes: length, requests: 1 });
        assert.equal((await fetchedMetric(layer.digest)) - metricBefore, length);

        await blob.read(0, 100);
        let streamed = 0;
        for await (const c of await blob.stream()) streamed += (c as Buffer).length;
        assert.equal(streamed, layer.size);
        assert.deepEqual(counter.perBlob.get(layer.digest), { bytes: length + 100 + layer.size, requests: 3 });
        assert.equal((await fetchedMetric(layer.digest)) - metricBefore, length + 100 + layer.size);
      } finally {
        await source.close();
      }
    });

    test('an image opened from a registry keeps readParts on its layers (with and without --stats)', async () => {
      for (const counter of [undefined, new ReadCounter()]) {
        const image = await openImage(`docker://${reg.host}/app:latest`, {
          tlsVerify: false,
          ...testImage.resolveOptions,
          cacheDir: join(tmp, 'cache'),
          registry: await isolatedRegistryOptions(join(tmp, 'b')),
          ...(counter ? { counter } : {}),
        });
        try {
          for (const l of image.layers) assert.equal(typeof l.blob.readParts, 'function', l.descriptor.digest);
        } finally {
          await image.close();
        }
      }
    });
  });
}
