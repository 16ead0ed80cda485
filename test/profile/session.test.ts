/**
 * Start-up profiles end to end in one process, over images tocfs's own writers make: the
 * first use records what is read; a later use of the same image (or a v2 of it, or another
 * image sharing a layer) replays it into an empty cache in a few requests, after which the
 * same reads make no request. Hostile profiles change nothing but a warning.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { sha256 } from '../../src/digest.js';
import { LayerReader } from '../../src/fetch/layer-reader.js';
import { readLayerToc } from '../../src/formats/index.js';
import type { LayerToc } from '../../src/formats/toc.js';
import { openImageSource } from '../../src/image/open.js';
import { parseProfile, serializeProfile, type Profile } from '../../src/profile/profile.js';
import { StartupProfiles, type ProfileSettings } from '../../src/profile/session.js';
import { ProfileStore } from '../../src/profile/store.js';
import type { BlobReader, ResolvedImage } from '../../src/source/types.js';
import { buildImage, seededBytes, type FileSpec } from '../helpers/images.js';
import { MemoryChunkStore } from '../helpers/memory-chunk-store.js';

const SETTINGS: ProfileSettings = { record: true, replay: true, idleMs: 200, windowMs: 10_000, maxBytes: 64 * 1024 * 1024, maxRequests: 64 };

/** Many small files, some big ones: what a runtime's start looks like. */
function appFiles(version: string): FileSpec[] {
  return [
    { path: 'usr', type: 'dir' },
    { path: 'usr/lib', type: 'dir' },
    ...Array.from({ length: 60 }, (_, i) => ({ path: `usr/lib/mod-${i}.py`, content: seededBytes(`mod-${i}`, 3000 + i * 50) })),
    { path: 'usr/lib/big.so', content: seededBytes('big', 2 * 1024 * 1024) },
    { path: 'usr/lib/unused.bin', content: seededBytes('unused', 1024 * 1024) },
    { path: 'app', type: 'dir' },
    { path: 'app/main.py', content: `print("app ${version}")\n` },
  ];
}

interface Opened {
  image: ResolvedImage;
  layers: Array<{ index: number; descriptor: ResolvedImage['layers'][number]; toc: LayerToc; reader: LayerReader; blob: BlobReader & { requests: number; bytes: number } }>;
}

/** A warn-level log whose lines a test can read. */
function capturingLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

describe('start-up profiles: record, then replay', () => {
  let tmp: string;
  let v1Dir: string;
  let v2Dir: string;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-profile-session-'));
    v1Dir = (await buildImage(join(tmp, 'app'), { format: 'zstd:chunked', tag: 'v1', layers: [appFiles('1')] })).dir;
    // v2: same repository (same layout directory), the app file changed.
    v2Dir = (await buildImage(join(tmp, 'app'), { format: 'zstd:chunked', tag: 'v2', layers: [appFiles('2')] })).dir;
    assert.equal(v1Dir, v2Dir);
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  const open = async (tag: string, store = new MemoryChunkStore()): Promise<Opened> => {
    const source = await openImageSource(`oci:${v1Dir}:${tag}`);
    const image = await source.resolve();
    const layers = await Promise.all(
      image.layers.map(async (descriptor, index) => {
        const raw = source.blob(descriptor);
        const blob = Object.assign(
          { requests: 0, bytes: 0 },
          { digest: raw.digest, size: raw.size, stream: (s?: AbortSignal) => raw.stream(s) },
        ) as BlobReader & { requests: number; bytes: number };
        const toc = await readLayerToc(descriptor, raw);
        blob.read = async (o, l, s) => {
          blob.requests++;
          blob.bytes += l;
          return raw.read(o, l, s);
        };
        return { index, descriptor, toc, reader: new LayerReader({ layerDigest: descriptor.digest, toc, blob, cache: store, readAhead: 0 }), blob };
      }),
    );
    return { image, layers };
  };

  /** What a start reads: the app, its modules in import order, the first MiB of the big library. */
  const startUp = async (o: Opened): Promise<void> => {
    const l = o.layers[0]!;
    const entry = (p: string) => Array.from(l.toc.entries).find((e) => e.path === p)!;
    await l.reader.readAt(entry('app/main.py'), 0, 4096);
    for (let i = 0; i < 60; i += 2) await l.reader.readAt(entry(`usr/lib/mod-${i}.py`), 0, 128 * 1024);
    for (let off = 0; off < 1024 * 1024; off += 128 * 1024) await l.reader.readAt(entry('usr/lib/big.so'), off, 128 * 1024);
  };

  const begin = (profiles: StartupProfiles, o: Opened, tag: string) =>
    profiles.begin({ reference: `oci:${v1Dir}:${tag}`, repository: `oci:${v1Dir}`, manifestDigest: o.image.manifestDigest, layers: o.image.layers });

  test('the first use records the reads in order; the next use replays them in a few requests and the reads then fetch nothing', async () => {
    const cacheDir = join(tmp, 'cache-1');
    const { log } = capturingLog();
    const profiles = new StartupProfiles(new ProfileStore(cacheDir, log), SETTINGS, log);

    const first = await open('v1');
    const session = begin(profiles, first, 'v1');
    assert.equal(await session.found, undefined);
    first.layers.forEach((l) => session.layerOpened(l));
    await startUp(first);
    const coldRequests = first.layers[0]!.blob.requests;
    await new Promise((r) => setTimeout(r, SETTINGS.idleMs + 300)); // idle: the recording ends and is saved
    await session.stop();
    const saved = await new ProfileStore(cacheDir, log).load(first.image.manifestDigest);
    assert.ok(saved, 'a profile was saved');
    assert.equal(saved.reads[0]!.path, 'app/main.py', 'in read order');
    assert.deepEqual(saved.reads.filter((r) => r.path === 'usr/lib/big.so').map((r) => [r.offset, r.length]), [[0, 1024 * 1024]], 'sequential reads of one file are one range');
    assert.equal(saved.reads.length, 1 + 30 + 1);
    assert.ok(!saved.reads.some((r) => r.path === 'usr/lib/unused.bin'));
    assert.equal(saved.recording.endedBy, 'idle');

    // Same image, empty cache: the replay fetches what the start reads, in few requests.
    const second = await open('v1');
    const s2 = begin(profiles, second, 'v1');
    assert.equal((await s2.found)?.match, 'manifest');
    second.layers.forEach((l) => s2.layerOpened(l));
    await waitFor(() => s2.status().replay?.done === true);
    const replayRequests = second.layers[0]!.blob.requests;
    assert.ok(replayRequests <= 3, `replay made ${replayRequests} requests (the cold start made ${coldRequests})`);
    assert.ok(replayRequests < coldRequests);
    const unused = Array.from(second.layers[0]!.toc.entries).find((e) => e.path === 'usr/lib/unused.bin')!;
    assert.ok(second.layers[0]!.blob.bytes < 2 * 1024 * 1024 + 1024 * 1024 + unused.size / 2, `replay fetched ${second.layers[0]!.blob.bytes} bytes`);
    await startUp(second);
    assert.equal(second.layers[0]!.blob.requests, replayRequests, 'the start-up reads needed no request of their own');
    assert.equal(s2.status().recording, false, 'an image with a profile of its own records no new one');
    await s2.stop();
  });

  test('v2 of the image replays v1\'s profile (matched by repository and path); its changed file is fetched by its own TOC', async () => {
    const cacheDir = join(tmp, 'cache-2');
    const { log } = capturingLog();
    const store = new ProfileStore(cacheDir, log);
    const v1 = await open('v1');
    const s1 = new StartupProfiles(store, SETTINGS, log).begin({ reference: 'v1', repository: `oci:${v1Dir}`, manifestDigest: v1.image.manifestDigest, layers: v1.image.layers });
    v1.layers.forEach((l) => s1.layerOpened(l));
    await startUp(v1);
    await s1.stop();

    const v2 = await open('v2');
    assert.notEqual(v2.image.layers[0]!.digest, v1.image.layers[0]!.digest);
    const s2 = begin(new StartupProfiles(store, { ...SETTINGS, record: false }, log), v2, 'v2');
    assert.equal((await s2.found)?.match, 'repository');
    v2.layers.forEach((l) => s2.layerOpened(l));
    await waitFor(() => s2.status().replay?.done === true);
    const afterReplay = v2.layers[0]!.blob.requests;
    await startUp(v2);
    assert.equal(v2.layers[0]!.blob.requests, afterReplay, 'v2\'s start-up reads were all replayed');
    const main = Array.from(v2.layers[0]!.toc.entries).find((e) => e.path === 'app/main.py')!;
    assert.equal((await v2.layers[0]!.reader.readAt(main, 0, 100)).toString(), 'print("app 2")\n');
  });

  test('hostile profiles: unknown paths, paths outside the image, wrong digests and over-budget parts are skipped with one warning; bytes served stay right', async () => {
    const cacheDir = join(tmp, 'cache-3');
    const o = await open('v1');
    const layer = o.image.layers[0]!;
    const mod = Array.from(o.layers[0]!.toc.entries).find((e) => e.path === 'usr/lib/mod-0.py')!;
    const hostile: Profile = {
      schemaVersion: 1,
      mediaType: 'application/vnd.tocfs.profile.v1+json',
      created: new Date().toISOString(),
      image: { reference: 'evil', manifestDigest: o.image.manifestDigest },
      recording: { idleMs: 1, windowMs: 1, endedBy: 'idle' },
      layers: [{ digest: layer.digest }],
      reads: [
        { layer: 0, path: 'no/such/file', offset: 0, length: 100, atMs: 0 },
        { layer: 0, path: '../../etc/shadow', offset: 0, length: 100, atMs: 1 },
        { layer: 0, path: '/etc/passwd', offset: 0, length: 100, atMs: 2 },
        { layer: 0, path: 'usr/lib/mod-0.py', offset: 0, length: 100, atMs: 3, digest: `sha256:${'0'.repeat(64)}` },
        { layer: 0, path: 'usr/lib/mod-1.py', offset: 0, length: 1 << 30, atMs: 4 },
      ],
    };
    const { log, lines } = capturingLog();
    const store = new ProfileStore(cacheDir, log);
    await store.save(parseProfile(serializeProfile(hostile), 'test'));
    const s = new StartupProfiles(store, { ...SETTINGS, record: false }, log).begin({ reference: 'x', manifestDigest: o.image.manifestDigest, layers: o.image.layers });
    o.layers.forEach((l) => s.layerOpened(l));
    await waitFor(() => s.status().replay?.done === true);
    const warning = lines.find((l) => String(l.msg).includes('do not fit the image'));
    assert.ok(warning, 'one warning');
    assert.deepEqual([warning.unknownPaths, warning.outsidePaths, warning.digestMismatches], [1, 2, 1]);
    assert.equal(lines.filter((l) => String(l.msg).includes('do not fit the image')).length, 1);
    assert.equal(sha256(await o.layers[0]!.reader.readAt(mod, 0, mod.size)), mod.digest);

    // Malformed and oversized profiles on disk: a warning naming the file, and no profile.
    const file = join(store.dir, `${o.image.manifestDigest.slice(7)}.json`);
    for (const bad of ['{"schemaVersion": 1, "mediaType"', JSON.stringify({ ...hostile, reads: [{ ...hostile.reads[0], layer: 7 }] }), Buffer.alloc(9 * 1024 * 1024, 0x20).toString()]) {
      await writeFile(file, bad);
      const before = lines.length;
      assert.equal(await store.load(o.image.manifestDigest), undefined);
      const w = lines.slice(before).find((l) => l.msg === 'profile not used');
      assert.ok(w && String(w.profile) === file && typeof w.reason === 'string', JSON.stringify(lines.slice(before)));
    }
    assert.ok((await readFile(file)).length > 0);
  });

  test('replay stays within its budget of requests', async () => {
    const cacheDir = join(tmp, 'cache-4');
    const { log, lines } = capturingLog();
    const store = new ProfileStore(cacheDir, log);
    const o = await open('v1');
    const s1 = new StartupProfiles(store, SETTINGS, log).begin({ reference: 'v1', manifestDigest: o.image.manifestDigest, layers: o.image.layers });
    o.layers.forEach((l) => s1.layerOpened(l));
    await startUp(o);
    await s1.stop();
    const fresh = await open('v1');
    const s2 = new StartupProfiles(store, { ...SETTINGS, maxRequests: 1, maxBytes: 64 * 1024 }, log).begin({ reference: 'v1', manifestDigest: o.image.manifestDigest, layers: o.image.layers });
    fresh.layers.forEach((l) => s2.layerOpened(l));
    await waitFor(() => s2.status().replay?.done === true);
    assert.ok(fresh.layers[0]!.blob.requests <= 1);
    assert.ok(fresh.layers[0]!.blob.bytes <= 64 * 1024);
    assert.ok(lines.some((l) => Number(l.overBudget) > 0));
  });
});

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), 'condition not reached');
}
