/**
 * registry/health.ts with real docker-registries on loopback: a stall is measured as time
 * without bytes (a trickle that keeps moving completes, one stuck connection on a registry
 * that answers is retried), a frozen or killed registry is found down — the request that
 * found it fails within the stall timeout plus one quick check, every later one at once —,
 * a mirror takes over without an error, and a background check brings the registry back
 * within seconds of it answering again. A fault proxy only for what a real registry cannot
 * do (trickle, stall mid-body).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openImageSource } from '../../src/image/open.js';
import { registry as metricsRegistry } from '../../src/metrics/index.js';
import { PROBE_DELAYS_MS, RegistryDownError, registryHealth, registryStates } from '../../src/registry/health.js';
import type { RegistryClientOptions } from '../../src/registry/options.js';
import type { Descriptor, ImageSource } from '../../src/source/types.js';
import { buildImage, seededContent, type BuiltImage } from '../helpers/images.js';
import { parseExposition } from '../helpers/metrics.js';
import { isolatedRegistryOptions } from '../helpers/registry-env.js';
import { startFaultProxy } from '../helpers/registry-fault-proxy.js';
import { freePort, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { registryLogSettled } from '../helpers/store.js';

const STALL_MS = 1000;
/** The stall, then the quick check of the same length (at most 5 s), then scheduling slack. */
const FIRST_FAILURE_BOUND_MS = 2 * STALL_MS + 1500;
/** The background check runs at most this far apart, plus the request that then succeeds. */
const RECOVERY_BOUND_MS = PROBE_DELAYS_MS.at(-1)! + 1500;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function metric(series: string): Promise<number> {
  return parseExposition(await metricsRegistry.metrics()).get(series) ?? 0;
}

/** Retries `read` until it succeeds; resolves with how long that took. */
async function untilReadable(read: () => Promise<unknown>, boundMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    try {
      await read();
      return Date.now() - started;
    } catch (e) {
      if (Date.now() - started > boundMs) throw e;
      await sleep(50);
    }
  }
}

describe('registry health: stalls, a registry that is down, recovery', { timeout: 120_000 }, () => {
  let tmp: string;
  let img: BuiltImage;
  let layer: Descriptor;
  let blob: Buffer;
  const sources: ImageSource[] = [];
  const registries: TestRegistry[] = [];

  const options = async (name: string, conf = ''): Promise<RegistryClientOptions> => {
    const opts = await isolatedRegistryOptions(join(tmp, name), { timeouts: { connectMs: STALL_MS, stallMs: STALL_MS } });
    await writeFile(opts.registriesConf!, conf);
    return opts;
  };
  const open = async (host: string, opts: RegistryClientOptions): Promise<ImageSource> => {
    const s = await openImageSource(`docker://${host}/app:latest`, { tlsVerify: false, registry: opts });
    sources.push(s);
    await s.resolve();
    return s;
  };
  const registryWithImage = async (opts: { port?: number; root?: string } = {}): Promise<TestRegistry> => {
    const r = await startRegistry(opts);
    registries.push(r);
    if (!opts.root) await r.load(img.dir, 'app');
    return r;
  };
  /** Reads [offset, +length) of the layer and checks every byte. */
  const readChecked = async (s: ImageSource, offset: number, length: number): Promise<void> => {
    const got = await s.blob(layer).read(offset, length);
    assert.ok(got.equals(blob.subarray(offset, offset + length)), `bytes [${offset}, +${length}) of the layer`);
  };
  const timed = async (p: Promise<unknown>): Promise<{ ms: number; error?: Error }> => {
    const started = Date.now();
    try {
      await p;
      return { ms: Date.now() - started };
    } catch (e) {
      return { ms: Date.now() - started, error: e as Error };
    }
  };

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-health-'));
    img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'data', type: 'dir' }, { path: 'data/blob.bin', content: seededContent('health', 2 * 1024 * 1024) }]] });
    layer = img.layers[0]!;
    blob = await readFile(join(img.dir, 'blobs', 'sha256', layer.digest.slice('sha256:'.length)));
  });
  after(async () => {
    for (const s of sources) await s.close().catch(() => undefined);
    for (const r of registries) await r.stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  });

  test('a trickle of 20 KB/s that outlasts the stall timeout many times completes in one request', async () => {
    const reg = await registryWithImage();
    const proxy = await startFaultProxy(reg.host);
    try {
      const s = await open(proxy.host, await options('trickle'));
      proxy.inject({ kind: 'trickle', bytesPerSecond: 20_000 });
      const { ms, error } = await timed(readChecked(s, 4096, 60_000));
      assert.equal(error, undefined);
      assert.ok(ms > 2.5 * STALL_MS, `the transfer took ${ms} ms, longer than the stall timeout (${STALL_MS} ms)`);
      const blobs = proxy.requests.filter((r) => r.path.includes(`/blobs/${layer.digest}`));
      assert.deepEqual(blobs.map((r) => r.fault), ['trickle'], 'one request, never cut and resumed');
      assert.equal(registryHealth(proxy.host).down, false);
    } finally {
      await proxy.close();
    }
  });

  test('one stalled connection on a registry that answers is retried, and the registry stays up', async () => {
    const reg = await registryWithImage();
    const proxy = await startFaultProxy(reg.host);
    try {
      const s = await open(proxy.host, await options('stall'));
      proxy.inject({ kind: 'stall', afterBytes: 10_000 });
      const { ms, error } = await timed(readChecked(s, 0, 100_000));
      assert.equal(error, undefined);
      assert.ok(ms >= STALL_MS - 100 && ms < FIRST_FAILURE_BOUND_MS, `stalled, then resumed after ${ms} ms`);
      const blobs = proxy.requests.filter((r) => r.path.includes(`/blobs/${layer.digest}`));
      assert.deepEqual(blobs.map((r) => r.fault), ['stall', undefined]);
      assert.match(blobs[1]!.headers.range!, /^bytes=10000-99999$/, 'the retry resumed where the stall began');
      assert.equal(registryHealth(proxy.host).down, false, 'the check after the stall got an answer');
    } finally {
      await proxy.close();
    }
  });

  test('a frozen registry: the first read fails within the stall timeout and one check, later ones at once; reads work within seconds of it resuming', async () => {
    const reg = await registryWithImage();
    const s = await open(reg.host, await options('frozen'));
    await readChecked(s, 0, 1000);
    const series = `tocfs_registry_failed_fast_total{registry="${reg.host}"}`;
    const failedFastBefore = await metric(series);
    reg.signal('SIGSTOP');
    let resumedAt = 0;
    try {
      const first = await timed(s.blob(layer).read(100_000, 50_000));
      assert.ok(first.error instanceof RegistryDownError, `the first read fails as "registry down": ${first.error?.message}`);
      assert.ok(first.ms >= STALL_MS - 100 && first.ms < FIRST_FAILURE_BOUND_MS, `first failure after ${first.ms} ms`);
      assert.match(first.error.message, new RegExp(`^registry ${reg.host} is not answering \\(since \\d\\d:\\d\\d:\\d\\d UTC: .*no data for 1s \\(registry\\.stall_timeout\\)\\): reads of data not in the cache fail until it answers again.*; check the registry and the network to it, or add a mirror for it in registries\\.conf$`));
      for (const offset of [300_000, 600_000, 900_000]) {
        const later = await timed(s.blob(layer).read(offset, 50_000));
        assert.ok(later.error instanceof RegistryDownError, later.error?.message);
        assert.ok(later.ms < 100, `a later read failed after ${later.ms} ms`);
      }
      // A new source for the same registry (another image of the store) knows it too.
      const other = await openImageSource(`docker://${reg.host}/app:latest`, { tlsVerify: false, registry: await options('frozen-2') });
      sources.push(other);
      const resolve = await timed(other.resolve());
      assert.ok(resolve.error instanceof RegistryDownError && resolve.ms < 100, `resolving fails at once: ${resolve.ms} ms, ${resolve.error?.message}`);
      assert.equal((await metric(series)) - failedFastBefore, 4);
      assert.equal(await metric(`tocfs_registry_up{registry="${reg.host}"}`), 0);
      const state = registryStates().find((r) => r.registry === reg.host)!;
      assert.equal(state.state, 'down');
      assert.match(state.lastError!, /no data for 1s/);
      assert.equal(state.failedFast, 4);
    } finally {
      reg.signal('SIGCONT');
      resumedAt = Date.now();
    }
    const recovery = await untilReadable(() => readChecked(s, 1_000_000, 50_000), RECOVERY_BOUND_MS);
    process.stdout.write(`# frozen registry: reads work again ${Date.now() - resumedAt} ms after it resumed\n`);
    assert.ok(recovery <= RECOVERY_BOUND_MS);
    assert.equal(await metric(`tocfs_registry_up{registry="${reg.host}"}`), 1);
    assert.equal(registryStates().find((r) => r.registry === reg.host)!.state, 'healthy');
  });

  test('a killed registry (connection refused) is down at once; reads work within seconds of its restart', async () => {
    const port = await freePort();
    const root = await mkdtemp(join(tmp, 'killed-'));
    let reg = await startRegistry({ port, root });
    registries.push(reg);
    await reg.load(img.dir, 'app');
    const s = await open(reg.host, await options('killed'));
    await readChecked(s, 0, 1000);
    await reg.stop('SIGKILL');
    const first = await timed(s.blob(layer).read(200_000, 10_000));
    assert.ok(first.error instanceof RegistryDownError, first.error?.message);
    assert.match(first.error.message, /ECONNREFUSED/);
    assert.ok(first.ms < 1000, `refused and found down after ${first.ms} ms`);
    const later = await timed(s.blob(layer).read(400_000, 10_000));
    assert.ok(later.error instanceof RegistryDownError && later.ms < 100, `${later.ms} ms`);
    reg = await registryWithImage({ port, root });
    const upAt = Date.now();
    await untilReadable(() => readChecked(s, 400_000, 10_000), RECOVERY_BOUND_MS);
    process.stdout.write(`# killed registry: reads work again ${Date.now() - upAt} ms after it answers\n`);
  });

  test('a frozen registry with a mirror: the read goes to the mirror without an error, and later ones go there at once', async () => {
    const first = await registryWithImage();
    const second = await registryWithImage();
    const conf = `[[registry]]\nlocation = "${second.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${first.host}"\ninsecure = true\n`;
    const s = await openImageSource(`docker://${second.host}/app:latest`, { tlsVerify: false, registry: await options('mirror', conf) });
    sources.push(s);
    await s.resolve();
    const servedBy = async (r: TestRegistry): Promise<number> => {
      await registryLogSettled(r);
      return r.log.filter((l) => l.includes(`"GET /v2/app/blobs/${layer.digest} `)).length;
    };
    await readChecked(s, 0, 1000);
    assert.equal(await servedBy(first), 1, 'the mirror serves first');
    first.signal('SIGSTOP');
    try {
      const { ms, error } = await timed(readChecked(s, 500_000, 100_000));
      assert.equal(error, undefined, 'no error: the registry itself served the read');
      assert.ok(ms < FIRST_FAILURE_BOUND_MS, `${ms} ms`);
      const { ms: next } = await timed(readChecked(s, 800_000, 100_000));
      assert.ok(next < 500, `the next read went to the registry at once: ${next} ms`);
    } finally {
      first.signal('SIGCONT');
    }
    assert.equal(await servedBy(second), 2, 'the registry itself served both reads');
  });
});
