/**
 * The metrics of a real mount: `tocfs mount --metrics-address` over an image in a real
 * registry, a file read through FUSE, and /metrics scraped over HTTP after each step. The
 * counters must move by what the read cost: the file's size served, the registry's own
 * access-log byte count fetched, one memory and one disk miss per chunk on the cold read,
 * memory hits and no fetch on a re-read past the page cache, disk hits in a new mount over
 * the same cache directory. Then the same for a file read through `tocfs store`; and a chunk
 * that fails verification and a registry error: EIO, the counters, and log lines that name
 * image, layer and path.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { readLayerToc, type TocEntry } from '../src/formats/index.js';
import { openImageSource } from '../src/image/open.js';
import { buildImage, seededBytes, seededContent, type BuiltImage } from './helpers/images.js';
import { fuseSkipReason, Mounts } from './helpers/mounts.js';
import { startFaultProxy } from './helpers/registry-fault-proxy.js';
import { blobBytesServed, freePort, startRegistry, type TestRegistry } from './helpers/registry.js';
import { parseExposition } from './helpers/metrics.js';
import { isolatedCliEnv } from './helpers/registry-env.js';
import { mountFiles } from '../src/daemon/state.js';
import { encodeRef } from '../src/store/names.js';
import { registryLogSettled, startStore } from './helpers/store.js';

const run = promisify(execFile);
const FILE = 'usr/lib/data.bin';
const FILE_SIZE = 3 * 1024 * 1024 + 12345;

async function scrape(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

/** What moved between two scrapes (absent series count as 0). */
function delta(before: Map<string, number>, after: Map<string, number>) {
  return (series: string): number => (after.get(series) ?? 0) - (before.get(series) ?? 0);
}

/** Reads a file with the page cache dropped for it first (POSIX_FADV_DONTNEED), so every byte goes through FUSE. */
async function readUncached(path: string): Promise<Buffer> {
  const script = 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)\nos.close(fd)';
  await run('python3', ['-c', script, path]);
  return readFile(path);
}

describe('metrics of a mounted image', { skip: await fuseSkipReason() }, () => {
  let tmp: string;
  let reg: TestRegistry;
  let img: BuiltImage;
  let mounts: Mounts;
  let entry: TocEntry;
  let layer: string;
  let layerSize: number;
  let env: NodeJS.ProcessEnv;
  const expected = seededBytes('metrics-data', FILE_SIZE);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-metrics-mount-'));
    img = await buildImage(join(tmp, 'image'), {
      format: 'zstd:chunked',
      layers: [
        [
          { path: 'etc', type: 'dir', mode: 0o755 },
          { path: 'etc/motd', content: 'hello\n' },
          { path: 'usr/lib', type: 'dir', mode: 0o755 },
          { path: FILE, content: seededContent('metrics-data', FILE_SIZE) },
          ...Array.from({ length: 8 }, (_, i) => ({ path: `usr/share/other-${i}`, content: seededBytes(`other-${i}`, 256 * 1024) })),
        ],
      ],
    });
    layer = img.layers[0]!.digest;
    layerSize = img.layers[0]!.size;
    const source = await openImageSource(`oci:${img.dir}`);
    try {
      const resolved = await source.resolve();
      const toc = await readLayerToc(resolved.layers[0]!, source.blob(resolved.layers[0]!));
      entry = toc.entries.find((e) => e.path === FILE)!;
      assert.ok(entry, `${FILE} is in the TOC`);
    } finally {
      await source.close();
    }
    reg = await startRegistry();
    await reg.load(img.dir, 'metrics');
    // Every re-read here must reach tocfs to move the read-path counters: no passthrough
    // (test/fs/session.test.ts counts passthrough opens).
    env = { ...isolatedCliEnv(tmp), TOCFS_DAEMON_PASSTHROUGH: 'false' };
    mounts = new Mounts(tmp, env);
  });
  after(async () => {
    await mounts?.cleanup();
    await reg?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  test('a cold read, a re-read and a read in a new mount move the counters by what they cost', async (t) => {
    const chunks = entry.chunks.filter((c) => !c.zeros);
    const distinct = new Set(chunks.map((c) => c.digest)).size;
    assert.ok(distinct >= 2, `the file has ${distinct} chunks`);
    const extentBytes = chunks.reduce((n, c) => n + (c.compressedEnd - c.compressedOffset), 0);
    const image = `docker://${reg.host}/metrics:latest`;
    const cache = await mkdtemp(join(tmp, 'cache-'));
    const fetched = `tocfs_fetched_bytes_total{layer="${layer}"}`;

    const port = await freePort();
    const mnt = await mounts.mount(image, ['--tls-verify=false', '--prefetch', 'none', '--metrics-address', `127.0.0.1:${port}`], cache);
    await registryLogSettled(reg);
    const m0 = await scrape(port);
    // Mounting read the layer's footer and TOC: exactly what the registry sent for the layer.
    assert.equal(m0.get(fetched), blobBytesServed(reg.log, layer), 'bytes fetched at mount = registry bytes for the layer');

    const registryBefore = blobBytesServed(reg.log, layer);
    assert.deepEqual(await readFile(join(mnt, FILE)), expected);
    await registryLogSettled(reg);
    const m1 = await scrape(port);
    const d1 = delta(m0, m1);
    const registryBytes = blobBytesServed(reg.log, layer) - registryBefore;
    t.diagnostic(`cold read: ${d1(fetched)} bytes fetched for ${extentBytes} bytes of the file's ${distinct} chunks; layer ${layerSize} bytes`);
    assert.equal(d1('tocfs_served_bytes_total'), FILE_SIZE, 'served = the file size');
    assert.equal(d1(fetched), registryBytes, 'fetched = what the registry sent');
    assert.ok(d1(fetched) >= extentBytes && d1(fetched) < layerSize, `fetched ${d1(fetched)}: at least the file's chunks (${extentBytes}), less than the layer (${layerSize})`);
    assert.equal(d1('tocfs_cache_misses_total{tier="memory"}'), distinct, 'one memory miss per chunk');
    assert.equal(d1('tocfs_cache_misses_total{tier="disk"}'), distinct, 'one disk miss per chunk');
    assert.equal(d1('tocfs_cache_hits_total{tier="disk"}'), 0);
    const requests = reg.log.filter((l) => l.includes(`/blobs/${layer} HTTP/1.1" 206`)).length;
    assert.ok(d1('tocfs_chunk_fetch_duration_seconds_count') >= 1);
    assert.ok(d1('tocfs_chunk_fetch_duration_seconds_count') <= requests, 'one latency observation per range request');
    // The kernel asks for up to 1 MiB a read from tocfs's own FUSE session (128 KiB from fuse-native).
    assert.ok(d1('tocfs_fuse_operation_duration_seconds_count{op="read"}') >= Math.ceil(FILE_SIZE / (1024 * 1024)), 'FUSE reads counted');
    assert.ok(d1('tocfs_fuse_operation_duration_seconds_count{op="open"}') >= 1, 'FUSE open counted');
    assert.ok(d1('tocfs_fuse_operation_duration_seconds_count{op="getattr"}') + (m0.get('tocfs_fuse_operation_duration_seconds_count{op="getattr"}') ?? 0) >= 1);
    assert.equal(m1.get('tocfs_registry_requests_in_flight'), 0, 'no request left in flight');
    assert.equal(m1.get(`tocfs_verification_failures_total{layer="${layer}",kind="chunk"}`) ?? 0, 0);
    const ratio = m1.get(`tocfs_layer_fetched_ratio{layer="${layer}"}`) ?? 0;
    assert.ok(ratio > 0 && ratio < 1, `layer fetched ratio ${ratio}`);

    // Past the page cache, the chunks come from the memory tier: nothing fetched, every byte served again.
    assert.deepEqual(await readUncached(join(mnt, FILE)), expected);
    const m2 = await scrape(port);
    const d2 = delta(m1, m2);
    assert.equal(d2('tocfs_served_bytes_total'), FILE_SIZE, 'the re-read went through FUSE');
    assert.equal(d2(fetched), 0, 're-read fetched nothing');
    assert.ok(d2('tocfs_cache_hits_total{tier="memory"}') >= distinct, `memory hits ${d2('tocfs_cache_hits_total{tier="memory"}')} for ${distinct} chunks`);
    assert.equal(d2('tocfs_cache_misses_total{tier="memory"}'), 0);
    assert.equal(d2('tocfs_cache_misses_total{tier="disk"}'), 0);
    // The tier's gauges are sampled four times a second (cache/memory-budget.ts).
    let tier = 0;
    let tierLimit = 0;
    for (let i = 0; i < 20 && tier < FILE_SIZE; i++) {
      const m = i === 0 ? m2 : await scrape(port);
      tier = m.get('tocfs_memory_tier_bytes') ?? 0;
      tierLimit = m.get('tocfs_memory_tier_limit_bytes') ?? 0;
      if (tier < FILE_SIZE) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(tier >= FILE_SIZE && tier <= tierLimit, `memory tier ${tier} bytes (limit ${tierLimit}) holds the ${FILE_SIZE}-byte file`);
    assert.equal((await mounts.unmount(mnt)).code, 0);

    // A new mount (a new process, empty memory tier) over the same cache directory reads from disk.
    const port2 = await freePort();
    const mnt2 = await mounts.mount(image, ['--tls-verify=false', '--prefetch', 'none', '--metrics-address', `127.0.0.1:${port2}`], cache);
    await registryLogSettled(reg);
    const registryAtMount2 = blobBytesServed(reg.log, layer);
    const n0 = await scrape(port2);
    assert.deepEqual(await readFile(join(mnt2, FILE)), expected);
    await registryLogSettled(reg);
    const n1 = await scrape(port2);
    const dn = delta(n0, n1);
    assert.equal(dn('tocfs_served_bytes_total'), FILE_SIZE);
    assert.equal(dn('tocfs_cache_hits_total{tier="disk"}'), distinct, 'one disk hit per chunk');
    assert.equal(dn('tocfs_cache_misses_total{tier="memory"}'), distinct, 'one memory miss per chunk');
    assert.equal(dn('tocfs_cache_misses_total{tier="disk"}'), 0);
    assert.equal(dn(fetched), 0, 'nothing fetched');
    assert.equal(blobBytesServed(reg.log, layer), registryAtMount2, 'the registry sent nothing for the read');
    assert.equal((await mounts.unmount(mnt2)).code, 0);
  });

  test('tocfs store: a read through a layer\'s diff/ tree moves served, fetched and cache counters', async () => {
    const chunks = entry.chunks.filter((c) => !c.zeros);
    const distinct = new Set(chunks.map((c) => c.digest)).size;
    await registryLogSettled(reg);
    const registryBefore = blobBytesServed(reg.log, layer);
    const port = await freePort();
    const store = await startStore(join(tmp, 'store'), await mkdtemp(join(tmp, 'store-cache-')), ['--metrics-address', `127.0.0.1:${port}`]);
    try {
      const s0 = await scrape(port);
      const file = join(store.dir, encodeRef(`${reg.host}/metrics:latest`), layer, 'diff', FILE);
      assert.deepEqual(await readFile(file), expected);
      await registryLogSettled(reg);
      const s1 = await scrape(port);
      const d = delta(s0, s1);
      const fetched = `tocfs_fetched_bytes_total{layer="${layer}"}`;
      assert.equal(d('tocfs_served_bytes_total'), FILE_SIZE);
      assert.equal(s1.get(fetched), blobBytesServed(reg.log, layer) - registryBefore, 'fetched (TOC and chunks) = what the registry sent');
      assert.equal(d('tocfs_cache_misses_total{tier="disk"}'), distinct);
      assert.ok(d('tocfs_fuse_operation_duration_seconds_count{op="read"}') > 0);
      assert.equal(s1.get('tocfs_registry_requests_in_flight'), 0);
    } finally {
      assert.equal(await store.stop(), 0);
    }
  });

  test('a chunk that fails verification, and a 503: EIO, their counters, log lines naming image, layer and path', async () => {
    const path = 'usr/share/other-3';
    const proxy = await startFaultProxy(reg.host);
    // No read-ahead: the corrupted request is the one the read waits for.
    const faultMounts = new Mounts(tmp, { ...env, TOCFS_FETCH_READ_AHEAD: '0', TOCFS_FETCH_MAX_GAP: '0', TOCFS_REGISTRY_RETRIES: '0' });
    try {
      const port = await freePort();
      const mnt = await faultMounts.mount(`docker://${proxy.host}/metrics:latest`, ['--tls-verify=false', '--prefetch', 'none', '--metrics-address', `127.0.0.1:${port}`]);
      const s0 = await scrape(port);
      proxy.inject({ kind: 'flip', at: 17 }, { times: 1000 });
      await assert.rejects(readFile(join(mnt, path)), { code: 'EIO' });
      proxy.clear();
      const s1 = await scrape(port);
      const failures = delta(s0, s1)(`tocfs_verification_failures_total{layer="${layer}",kind="chunk"}`);
      assert.ok(failures >= 1, `verification failures counted: ${failures}`);
      assert.ok(delta(s0, s1)('tocfs_fuse_errors_total{op="read",errno="EIO"}') >= 1);
      // The fault is gone: the same read now gets the right bytes.
      assert.deepEqual(await readFile(join(mnt, path)), seededBytes('other-3', 256 * 1024));

      // 503s fail the read, each answer counted under its status.
      const faultedBefore = proxy.faulted();
      proxy.inject({ kind: 'status', status: 503 }, { times: 1000 });
      await assert.rejects(readFile(join(mnt, 'usr/share/other-5')), { code: 'EIO' });
      proxy.clear();
      const s2 = await scrape(port);
      const answered503 = proxy.faulted() - faultedBefore;
      assert.ok(answered503 >= 1);
      assert.equal(delta(s1, s2)('tocfs_registry_errors_total{code="503"}'), answered503);
      assert.equal(s2.get('tocfs_registry_requests_in_flight'), 0);
      assert.deepEqual(await readFile(join(mnt, 'usr/share/other-5')), seededBytes('other-5', 256 * 1024));

      const lines = (await readFile(mountFiles(mnt).log, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
      for (const msg of ['chunk failed verification', 'read failed: answering EIO']) {
        const line = lines.find((l) => String(l.msg).startsWith(msg));
        assert.ok(line, `a "${msg}" line in the log`);
        assert.match(String(line.image), /\/metrics:latest$/, `${msg}: image`);
        assert.equal(line.layer, layer, `${msg}: layer`);
        assert.match(String(line.path), new RegExp(`^/?${path}$`), `${msg}: path`);
      }
      assert.equal((await faultMounts.unmount(mnt)).code, 0);
    } finally {
      await faultMounts.cleanup();
      await proxy.close();
    }
  });
});
