/**
 * `tocfs mount --takeover` with tocfs's own FUSE session: a successor takes the mount over
 * from the running daemon while a reader in another process reads, stats and lists without
 * pause; the reader sees no error and the right bytes, and the mount ends cleanly after.
 * Also what a user is told when there is nothing to take over, or the running daemon serves
 * through fuse-native.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readMountState } from '../../src/daemon/state.js';
import { isAlive as isAliveish } from '../../src/process-alive.js';
import { loadFuseDev } from '../../src/fs/session/native.js';
import { runCli } from '../helpers/cli.js';
import { buildImage, seededBytes, type FileSpec } from '../helpers/images.js';
import { loopReader, type ReaderSummary } from '../helpers/loop-reader.js';
import { fuseSkipReason, isTocfsMount, Mounts } from '../helpers/mounts.js';

const dev = loadFuseDev();
const skip = (await fuseSkipReason()) || ('unavailable' in dev ? `own FUSE session unavailable: ${dev.unavailable}` : false);
const SESSION = { TOCFS_DAEMON_FUSE_SESSION: 'tocfs' };
const FILES = 200;

const READER = loopReader(FILES);

describe('tocfs mount --takeover (own FUSE session)', { skip, timeout: 180_000 }, () => {
  let tmp: string;
  let mounts: Mounts;
  let image: string;
  const want: Record<string, string> = {};

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-takeover-'));
    mounts = new Mounts(tmp, SESSION);
    const files: FileSpec[] = [{ path: 'data', type: 'dir' }];
    for (let i = 0; i < FILES; i++) {
      const content = seededBytes(`t${i}`, 1000 + i * 997);
      files.push({ path: `data/f${i}`, content });
      want[`data/f${i}`] = createHash('sha256').update(content).digest('hex');
    }
    image = `oci:${(await buildImage(join(tmp, 'img'), { format: 'zstd:chunked', layers: [files] })).dir}`;
  });
  after(async () => {
    await mounts?.cleanup();
    await rm(tmp, { recursive: true, force: true });
  });

  it('a reader in another process sees no error and the right bytes across two takeovers; each predecessor exits and the mount ends cleanly', async () => {
    const mnt = await mounts.mount(image);
    const reader = spawn(process.execPath, ['-e', READER, mnt, JSON.stringify(want)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    reader.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    const readerDone = new Promise<void>((res) => reader.once('exit', () => res()));
    await new Promise((r) => setTimeout(r, 500));
    for (let round = 1; round <= 2; round++) {
      const before = await readMountState(mnt);
      assert.ok(before, 'the running daemon wrote its state');
      const r = await runCli(['mount', '--takeover', image, mnt, '--cache-dir', join(tmp, `cache-${round}`)], { env: SESSION, timeoutMs: 120_000 });
      assert.equal(r.code, 0, `takeover ${round}: ${r.stderr}`);
      const after = await readMountState(mnt);
      assert.ok(after && after.pid !== before.pid, `takeover ${round}: a new daemon serves the mount`);
      for (let i = 0; i < 50 && isAliveish(before.pid); i++) await new Promise((res) => setTimeout(res, 100));
      assert.equal(isAliveish(before.pid), false, `takeover ${round}: the predecessor exited`);
      assert.equal(await isTocfsMount(mnt), true, 'still mounted');
      await new Promise((res) => setTimeout(res, 500));
    }
    reader.stdin!.end();
    await readerDone;
    const summary = JSON.parse(output) as ReaderSummary;
    process.stdout.write(`# reader: ${summary.rounds} rounds, ${summary.reads} reads across two takeovers, ${summary.errorCount} errors\n`);
    assert.ok(summary.rounds >= 3, `the reader kept reading (${summary.rounds} rounds)`);
    assert.deepEqual(summary.errors, [], 'no read, stat or listing failed');
    const u = await mounts.unmount(mnt);
    assert.equal(u.code, 0, `unmount after takeovers: ${u.stderr}`);
    assert.equal(await isTocfsMount(mnt), false);
  });

  it('--takeover with nothing serving the mountpoint fails with a clear error', async () => {
    const mnt = await mkdtemp(join(tmp, 'empty-'));
    const r = await runCli(['mount', '--takeover', image, mnt, '--cache-dir', join(tmp, 'cache-x')], { env: SESSION, timeoutMs: 60_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no running tocfs serves .*start it without --takeover/);
  });

  it('a daemon serving through fuse-native refuses to hand over, names the setting, and keeps serving', async () => {
    const plain = new Mounts(tmp, { TOCFS_DAEMON_FUSE_SESSION: 'fuse-native' });
    try {
      const mnt = await plain.mount(image);
      const r = await runCli(['mount', '--takeover', image, mnt, '--cache-dir', join(tmp, 'cache-y')], { env: SESSION, timeoutMs: 120_000 });
      assert.notEqual(r.code, 0, 'the takeover fails');
      assert.match(r.stderr, /refused to hand over: .*fuse-native.*daemon\.fuse_session = tocfs/);
      const state = await readMountState(mnt);
      assert.ok(state && isAliveish(state.pid), 'the fuse-native daemon still serves');
      assert.equal(createHash('sha256').update(await import('node:fs/promises').then((f) => f.readFile(join(mnt, 'data/f7')))).digest('hex'), want['data/f7']);
    } finally {
      await plain.cleanup();
    }
  });
});

