/**
 * LayerStore lookups while the registry is down and once it is back: a lookup that failed
 * because the registry was down is not remembered as "not here", so Podman's next lookup
 * after the registry answers again is served at once (not after the negative TTL).
 * Real docker-registry on loopback, frozen with SIGSTOP.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { LayerOpener } from '../../src/layer/open.js';
import { logger } from '../../src/log.js';
import { DEFAULT_PROFILE_SETTINGS, StartupProfiles } from '../../src/profile/session.js';
import { ProfileStore } from '../../src/profile/store.js';
import { LayerStore, StoreMiss } from '../../src/store/layers.js';
import { buildImage, seededBytes, type BuiltImage } from '../helpers/images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';
import { readContent } from '../helpers/store.js';

let tmp: string;
let registry: TestRegistry;
let img: BuiltImage;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tocfs-store-layers-'));
  img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'a', content: seededBytes('a', 1000) }]] });
  registry = await startRegistry();
  await registry.load(img.dir, 'down');
});
after(async () => {
  await registry?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('a lookup that failed while the registry was down is served as soon as it answers again, within the negative TTL', { timeout: 60_000 }, async () => {
  const log = logger().child({ test: 'store-layers' });
  const source = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env'), { timeouts: { connectMs: 1000, stallMs: 1000 } }) };
  const negativeTtlMs = 60_000;
  const store = new LayerStore({ opener: await LayerOpener.create({ cacheDir: join(tmp, 'cache') }, log), source, logger: log, negativeTtlMs, lookupTimeoutMs: 30_000, prefetch: 'none' });
  const ref = `${registry.host}/down:latest`;
  const key = img.layers[0]!.digest;
  registry.signal('SIGSTOP');
  try {
    await assert.rejects(store.lookup(ref, key), (e: unknown) => e instanceof StoreMiss && /is not answering/.test(e.message));
  } finally {
    registry.signal('SIGCONT');
  }
  const started = Date.now();
  for (;;) {
    const found = await store.lookup(ref, key).catch(() => undefined);
    if (found) {
      assert.equal(found.content.descriptor.digest, key);
      break;
    }
    assert.ok(Date.now() - started < 10_000, 'served again within 10 s of the registry answering');
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(Date.now() - started < negativeTtlMs / 2);
  await store.close();
});

test('closing the store ends the recording of a start-up profile and saves what was read', { timeout: 60_000 }, async () => {
  const log = logger().child({ test: 'store-layers' });
  const cacheDir = join(tmp, 'cache-close');
  const profiles = new StartupProfiles(new ProfileStore(cacheDir, log), { ...DEFAULT_PROFILE_SETTINGS, idleMs: 600_000 }, log);
  const source = { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'env-close')) };
  const store = new LayerStore({ opener: await LayerOpener.create({ cacheDir }, log), source, logger: log, profiles, prefetch: 'none' });
  const layer = await store.lookup(`${registry.host}/down:latest`, img.layers[0]!.digest);
  const entry = Array.from(layer.content.toc.entries).find((e) => e.path === 'a')!;
  assert.deepEqual(await readContent(layer.content, entry, 0, 1000), seededBytes('a', 1000));
  await store.close();
  const saved = await new ProfileStore(cacheDir, log).load(img.manifestDigest);
  assert.ok(saved, 'the profile was saved at close');
  assert.deepEqual(saved.reads.map((r) => [r.path, r.offset, r.length]), [['a', 0, 1000]]);
  assert.equal(saved.recording.endedBy, 'stop');
});
