/**
 * Start-up profiles through a real `tocfs mount` of an image in a real docker-registry on
 * loopback: the first mount records what is read; `tocfs cache clear` keeps the profile; the
 * next mount on the emptied cache replays it, after which the same reads make no request to
 * the registry (its access log says so), and every byte read is right.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sha256 } from '../../src/digest.js';
import { mountFiles } from '../../src/daemon/state.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, seededBytes, type BuiltImage, type FileSpec } from '../helpers/images.js';
import { fuseSkipReason, Mounts } from '../helpers/mounts.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { isolatedCliEnv } from '../helpers/registry-env.js';

const FILES: FileSpec[] = [
  { path: 'lib', type: 'dir' },
  ...Array.from({ length: 40 }, (_, i) => ({ path: `lib/m${i}.py`, content: seededBytes(`m${i}`, 5000 + 100 * i) })),
  { path: 'lib/core.so', content: seededBytes('core', 3 * 1024 * 1024) },
  { path: 'lib/never.bin', content: seededBytes('never', 2 * 1024 * 1024) },
];
const START_UP = ['lib/m3.py', 'lib/m1.py', 'lib/core.so', ...Array.from({ length: 10 }, (_, i) => `lib/m${20 + i}.py`)];

const blobGets = (log: string[]): number => log.filter((l) => /"GET \/v2\/\S+\/blobs\/sha256:/.test(l)).length;

async function waitForLog(file: string, text: string, ms = 30_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const log = await readFile(file, 'utf8').catch(() => '');
    if (log.includes(text)) return log;
    if (Date.now() > deadline) throw new Error(`no "${text}" in ${file} within ${ms} ms:\n${log.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('start-up profiles through tocfs mount', { timeout: 180_000 }, async () => {
  const skip = await fuseSkipReason();
  let tmp: string;
  let registry: TestRegistry;
  let img: BuiltImage;
  let mounts: Mounts;
  let env: NodeJS.ProcessEnv;
  let ref: string;

  before(async () => {
    if (skip) return;
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-profile-mount-'));
    img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [FILES] });
    registry = await startRegistry();
    await registry.load(img.dir, 'app');
    env = { ...isolatedCliEnv(tmp), TOCFS_PROFILE_IDLE: '1s', TOCFS_REGISTRY_TLS_VERIFY: 'false' };
    mounts = new Mounts(tmp, env);
    ref = `docker://${registry.host}/app:latest`;
  });
  after(async () => {
    await mounts?.cleanup();
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const readStartUp = async (mnt: string): Promise<void> => {
    for (const p of START_UP) {
      const want = FILES.find((f) => f.path === p)!.content as Buffer;
      assert.equal(sha256(await readFile(join(mnt, p))), sha256(want), p);
    }
  };

  test('recorded at first use, kept by cache clear, replayed on the next mount: the start-up reads then make no request', { skip }, async () => {
    const cache = join(tmp, 'cache');
    const first = await mounts.mount(ref, [], cache);
    await readStartUp(first);
    await waitForLog(mountFiles(first).log, 'recorded a start-up profile');
    assert.equal((await mounts.unmount(first)).code, 0);

    const shown = await runCli(['profile', 'show', '--json', '--cache-dir', cache, ref], { env });
    assert.equal(shown.code, 0, shown.stderr.toString());
    const profile = JSON.parse(shown.stdout.toString());
    assert.equal(profile.image.manifestDigest, img.manifestDigest);
    assert.deepEqual([...new Set(profile.reads.map((r: { path: string }) => r.path))], START_UP, 'the files, in the order read');

    const cleared = await runCli(['cache', 'clear', '--cache-dir', cache], { env });
    assert.equal(cleared.code, 0, cleared.stderr.toString());
    assert.equal((await runCli(['profile', 'show', '--cache-dir', cache, ref], { env })).code, 0, 'cache clear keeps profiles');

    const second = await mounts.mount(ref, [], cache);
    const log = await waitForLog(mountFiles(second).log, 'replayed the start-up profile');
    const replay = JSON.parse(log.split('\n').find((l) => l.includes('replayed the start-up profile'))!);
    assert.ok(replay.requests >= 1 && replay.requests <= 3, `replay: ${replay.requests} requests`);
    const coreAndModules = START_UP.reduce((n, p) => n + (FILES.find((f) => f.path === p)!.content as Buffer).length, 0);
    assert.ok(replay.bytes <= 1.3 * coreAndModules, `replay fetched ${replay.bytes} bytes for ${coreAndModules} bytes read`);
    const before = blobGets(registry.log);
    await readStartUp(second);
    assert.equal(blobGets(registry.log), before, 'the start-up reads after the replay asked the registry for nothing');
    // A file outside the profile is still read on demand, right.
    assert.equal(sha256(await readFile(join(second, 'lib/never.bin'))), sha256(FILES.at(-1)!.content as Buffer));
    assert.ok(blobGets(registry.log) > before);
    assert.equal((await mounts.unmount(second)).code, 0);

    const removed = await runCli(['cache', 'clear', '--profiles', '--cache-dir', cache], { env });
    assert.match(removed.stdout.toString(), /and 1 start-up profiles/);
    assert.notEqual((await runCli(['profile', 'show', '--cache-dir', cache, ref], { env })).code, 0);
  });

  test('tocfs profile record runs a command against a fresh mount and keeps what it read', { skip }, async () => {
    const cache = join(tmp, 'cache-record');
    const r = await runCli(['profile', 'record', '--cache-dir', cache, ref, '--', 'sh', '-c', 'cat "$TOCFS_ROOTFS/lib/m7.py" "$TOCFS_ROOTFS/lib/m2.py" > /dev/null'], { env, timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr.toString());
    const shown = JSON.parse((await runCli(['profile', 'export', '--cache-dir', cache, ref], { env })).stdout.toString());
    assert.deepEqual(shown.reads.map((x: { path: string }) => x.path), ['lib/m7.py', 'lib/m2.py']);
    assert.equal(shown.recording.endedBy, 'stop');
    const failing = await runCli(['profile', 'record', '--cache-dir', join(tmp, 'cache-none'), ref, '--', 'true'], { env, timeoutMs: 120_000 });
    assert.notEqual(failing.code, 0);
    assert.match(failing.stderr.toString(), /read nothing/);
  });
});
