/**
 * The metrics endpoint over real HTTP: counters moved through the `metrics` API show up in a
 * scrape of /metrics, each by exactly the amount moved; /healthz answers; bad addresses and
 * busy ports give errors that say so.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { defaultMemoryBytes } from '../../src/cache/paths.js';
import { memoryTierFor, STORE_MEMORY_TIER_BYTES } from '../../src/config/memory-tier.js';
import { metricsAddressFor, STORE_METRICS_ADDRESS } from '../../src/config/metrics-address.js';
import { metrics, type MetricsServer, startMetricsServer } from '../../src/metrics/index.js';
import { freePort } from '../helpers/registry.js';
import { parseExposition } from '../helpers/metrics.js';

describe('metrics endpoint', () => {
  let server: MetricsServer;
  let base: string;

  before(async () => {
    const port = await freePort();
    server = await startMetricsServer(`127.0.0.1:${port}`);
    assert.equal(server.port, port);
    base = `http://127.0.0.1:${port}`;
  });
  after(() => server?.close());

  async function scrape(): Promise<Map<string, number>> {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return parseExposition(await res.text());
  }
  const delta = (a: Map<string, number>, b: Map<string, number>, series: string) => (b.get(series) ?? 0) - (a.get(series) ?? 0);

  it('shows each counter, gauge and histogram moved by exactly what the API added', async () => {
    const A = 'sha256:aaaa';
    const B = 'sha256:bbbb';
    const before = await scrape();

    metrics.fetched(A, 1000);
    metrics.fetched(A, 1000);
    metrics.fetched(B, 5);
    metrics.served(4096);
    metrics.served(100);
    for (let i = 0; i < 3; i++) metrics.cacheHit('memory');
    metrics.cacheMiss('memory');
    metrics.cacheMiss('disk');
    metrics.cacheHit('disk');
    metrics.startChunkFetch()();
    metrics.startChunkFetch()();
    metrics.verificationFailed(A, 'chunk');
    const endFirst = metrics.requestStarted();
    const endSecond = metrics.requestStarted();
    endFirst();
    endFirst(); // ending twice must not count twice
    metrics.registryError(503);
    metrics.registryError(503);
    metrics.registryError('network');
    metrics.startFuseOp('read')();
    metrics.startFuseOp('read')();
    metrics.startFuseOp('lookup')('ENOENT');
    metrics.layerProgress(A, 25, 100);

    const after = await scrape();
    const moved = (s: string) => delta(before, after, s);
    assert.equal(moved(`tocfs_fetched_bytes_total{layer="${A}"}`), 2000);
    assert.equal(moved(`tocfs_fetched_bytes_total{layer="${B}"}`), 5);
    assert.equal(moved('tocfs_served_bytes_total'), 4196);
    assert.equal(moved('tocfs_cache_hits_total{tier="memory"}'), 3);
    assert.equal(moved('tocfs_cache_hits_total{tier="disk"}'), 1);
    assert.equal(moved('tocfs_cache_misses_total{tier="memory"}'), 1);
    assert.equal(moved('tocfs_cache_misses_total{tier="disk"}'), 1);
    assert.equal(moved('tocfs_chunk_fetch_duration_seconds_count'), 2);
    assert.equal(moved('tocfs_chunk_fetch_duration_seconds_bucket{le="+Inf"}'), 2);
    assert.equal(moved(`tocfs_verification_failures_total{layer="${A}",kind="chunk"}`), 1);
    assert.equal(moved('tocfs_registry_requests_in_flight'), 1);
    assert.equal(moved('tocfs_registry_errors_total{code="503"}'), 2);
    assert.equal(moved('tocfs_registry_errors_total{code="network"}'), 1);
    assert.equal(moved('tocfs_fuse_operation_duration_seconds_count{op="read"}'), 2);
    assert.equal(moved('tocfs_fuse_operation_duration_seconds_count{op="lookup"}'), 1);
    assert.equal(moved('tocfs_fuse_errors_total{op="lookup",errno="ENOENT"}'), 1);
    assert.equal(moved('tocfs_fuse_errors_total{op="read",errno="ENOENT"}'), 0);
    assert.equal(after.get(`tocfs_layer_fetched_ratio{layer="${A}"}`), 0.25);

    endSecond();
    const last = await scrape();
    assert.equal(delta(before, last, 'tocfs_registry_requests_in_flight'), 0);
  });

  it('includes the default process metrics', async () => {
    const m = await scrape();
    assert.ok(m.has('process_cpu_user_seconds_total'));
    assert.ok(m.has('nodejs_heap_size_used_bytes'));
    assert.ok((m.get('process_resident_memory_bytes') ?? 0) > 0);
  });

  it('drops a layer\'s series when the layer is forgotten', async () => {
    metrics.fetched('sha256:gone', 1);
    metrics.layerProgress('sha256:gone', 1, 1);
    assert.equal((await scrape()).get('tocfs_layer_fetched_ratio{layer="sha256:gone"}'), 1);
    metrics.forgetLayer('sha256:gone');
    const m = await scrape();
    assert.equal(m.has('tocfs_layer_fetched_ratio{layer="sha256:gone"}'), false);
    assert.equal(m.has('tocfs_fetched_bytes_total{layer="sha256:gone"}'), false);
    metrics.fetched('sha256:gone', 7); // a layer used again starts counting afresh
    assert.equal((await scrape()).get('tocfs_fetched_bytes_total{layer="sha256:gone"}'), 7);
  });

  it('answers /healthz, 404 elsewhere and 405 for other methods', async () => {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), 'ok\n');
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
  });
});

describe('startMetricsServer errors', () => {
  it('rejects a malformed address, naming it', async () => {
    await assert.rejects(startMetricsServer('localhost'), /invalid metrics address "localhost": expected HOST:PORT/);
  });
  it('says which address is busy', async () => {
    const port = await freePort();
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      await assert.rejects(startMetricsServer(`127.0.0.1:${port}`), new RegExp(`cannot serve metrics on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      blocker.close();
    }
  });
  it('picks a free port for port 0 and listens on IPv6 loopback', async (t) => {
    let s: MetricsServer;
    try {
      s = await startMetricsServer('[::1]:0');
    } catch (e) {
      t.skip(`no IPv6 loopback here: ${(e as Error).message}`);
      return;
    }
    try {
      assert.ok(s.port > 0);
      assert.equal((await fetch(`http://[::1]:${s.port}/healthz`)).status, 200);
    } finally {
      await s.close();
    }
  });
});

describe('memoryTierFor', () => {
  const cfg = (env: NodeJS.ProcessEnv) => loadConfig({ env: { HOME: '/nonexistent', TOCFS_CONFIG: '/dev/null', ...env }, root: false });
  it('is cache.memory_size for mounts, and 16M for the store unless cache.memory_size is set', () => {
    assert.equal(memoryTierFor('mount', cfg({})), defaultMemoryBytes());
    assert.equal(memoryTierFor('store', cfg({})), STORE_MEMORY_TIER_BYTES);
    assert.equal(STORE_MEMORY_TIER_BYTES, 16 * 1024 ** 2);
    assert.equal(memoryTierFor('store', cfg({ TOCFS_CACHE_MEMORY_SIZE: '512M' })), 512 * 1024 ** 2);
    assert.equal(memoryTierFor('mount', cfg({ TOCFS_CACHE_MEMORY_SIZE: '8M' })), 8 * 1024 ** 2);
  });
});

describe('metricsAddressFor', () => {
  const cfg = (env: NodeJS.ProcessEnv) => loadConfig({ env: { HOME: '/nonexistent', TOCFS_CONFIG: '/dev/null', ...env }, root: false });
  it('is off for mounts and on for the store unless metrics.address is set', () => {
    assert.equal(metricsAddressFor('mount', cfg({})), undefined);
    assert.equal(metricsAddressFor('store', cfg({})), STORE_METRICS_ADDRESS);
    assert.equal(metricsAddressFor('mount', cfg({ TOCFS_METRICS_ADDRESS: '127.0.0.1:9999' })), '127.0.0.1:9999');
    assert.equal(metricsAddressFor('store', cfg({ TOCFS_METRICS_ADDRESS: '127.0.0.1:9999' })), '127.0.0.1:9999');
    assert.equal(metricsAddressFor('store', cfg({ TOCFS_METRICS_ADDRESS: '' })), undefined);
  });
});
