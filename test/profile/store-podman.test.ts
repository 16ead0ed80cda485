/**
 * Start-up profiles through `tocfs store` with Debian's Podman 4.3.1 and a real
 * docker-registry on loopback, on an image tocfs builds: the first `podman run` records what
 * the container read; after `tocfs cache clear` and with fresh Podman storage, the store
 * replays the profile when Podman first looks the layer up, and the container's reads then
 * cause no request to the registry (its access log says so).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256 } from '../../src/digest.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, seededBytes, type FileSpec } from '../helpers/images.js';
import { Podman, podmanSkipReason } from '../helpers/podman.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { registryLogSettled, startStore, type RunningStore } from '../helpers/store.js';

const FILES: FileSpec[] = [
  { path: 'etc', type: 'dir' },
  { path: 'opt', type: 'dir' },
  { path: 'opt/app', type: 'dir' },
  ...Array.from({ length: 30 }, (_, i) => ({ path: `opt/app/m${i}.py`, content: seededBytes(`store-m${i}`, 4000 + 200 * i) })),
  { path: 'opt/app/core.so', content: seededBytes('store-core', 2 * 1024 * 1024) },
  { path: 'opt/app/never.bin', content: seededBytes('store-never', 2 * 1024 * 1024) },
];
const START_UP = ['opt/app/m5.py', 'opt/app/core.so', 'opt/app/m1.py', 'opt/app/m17.py'];
const content = (p: string): Buffer => FILES.find((f) => f.path === p)!.content as Buffer;
const blobGets = (log: string[]): number => log.filter((l) => /"GET \/v2\/\S+\/blobs\/sha256:/.test(l)).length;

async function logLine(store: RunningStore, text: string, ms = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const line = store.log.find((l) => l.includes(text));
    if (line) return JSON.parse(line);
    if (Date.now() > deadline) throw new Error(`no "${text}" in the store's log within ${ms} ms:\n${store.log.slice(-40).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('start-up profiles through tocfs store and Podman', { skip: podmanSkipReason(), timeout: 300_000 }, () => {
  let work: string;
  let registry: TestRegistry;
  const stores: RunningStore[] = [];
  const podmen: Podman[] = [];
  let ref: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'tocfs-profile-store-'));
    const img = await buildImage(join(work, 'image'), { format: 'zstd:chunked', layers: [FILES] });
    registry = await startRegistry();
    await registry.load(img.dir, 'profiled');
    ref = `${registry.host}/profiled:latest`;
  });
  after(async () => {
    for (const p of podmen) await p.cleanup().catch(() => undefined);
    for (const s of stores) await s.stop();
    await registry?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const node = async (name: string, cache: string): Promise<{ store: RunningStore; podman: Podman }> => {
    const store = await startStore(join(work, name, 'store'), cache, [], { TOCFS_PROFILE_IDLE: '1s' });
    stores.push(store);
    const podman = await Podman.create(join(work, name), store.dir, registry.host);
    podmen.push(podman);
    return { store, podman };
  };
  const startUp = async (podman: Podman): Promise<void> => {
    const out = await podman.exec(ref, '/usr/bin/cat', ...START_UP.map((p) => `/${p}`));
    assert.equal(sha256(out), sha256(Buffer.concat(START_UP.map(content))), 'the container read the right bytes');
  };

  it('records at the first run, and after cache clear replays on first lookup: the container then reads without asking the registry', async () => {
    const cache = join(work, 'cache');
    const first = await node('first', cache);
    await first.podman.ok(['pull', ref]);
    await startUp(first.podman);
    const recorded = await logLine(first.store, 'recorded a start-up profile');
    assert.ok(Number(recorded.reads) >= START_UP.length, JSON.stringify(recorded));
    await first.podman.cleanup();
    await first.store.stop();

    const shown = JSON.parse((await runCli(['profile', 'export', '--cache-dir', cache, '--tls-verify=false', `docker://${ref}`])).stdout.toString());
    for (const p of START_UP) assert.ok(shown.reads.some((r: { path: string }) => r.path === p), `${p} is in the profile`);
    assert.ok(!shown.reads.some((r: { path: string }) => r.path === 'opt/app/never.bin'));
    assert.equal((await runCli(['cache', 'clear', '--cache-dir', cache])).code, 0);

    const second = await node('second', cache);
    await second.podman.ok(['pull', ref]);
    const replayed = await logLine(second.store, 'replayed the start-up profile');
    assert.ok(Number(replayed.requests) >= 1 && Number(replayed.requests) <= 3, JSON.stringify(replayed));
    await registryLogSettled(registry);
    const before = blobGets(registry.log);
    await startUp(second.podman);
    await registryLogSettled(registry);
    assert.equal(blobGets(registry.log), before, 'no blob request after the replay');
  });
});
