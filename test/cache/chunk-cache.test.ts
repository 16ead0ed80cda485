/**
 * ChunkCache and DiskTocStore on real directories (and a real tiny tmpfs for a full disk).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test, type TestContext } from 'node:test';
import { ChunkCache, defaultCacheDir } from '../../src/cache/chunk-cache.js';
import { DiskTocStore } from '../../src/cache/toc-store.js';
import { digestHex, sha256 } from '../../src/digest.js';
import { captureLogger } from '../helpers/log-capture.js';

const run = promisify(execFile);

function chunk(n: number): { digest: string; data: Buffer } {
  const data = randomBytes(n);
  return { digest: sha256(data), data };
}

function chunkPath(dir: string, digest: string): string {
  const hex = digestHex(digest);
  return join(dir, 'chunks', 'sha256', hex.slice(0, 2), hex);
}

/** Every file under `dir`, recursively (relative paths). */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (d.isDirectory()) out.push(...(await walk(join(dir, d.name), join(prefix, d.name))));
    else out.push(join(prefix, d.name));
  }
  return out;
}

describe('ChunkCache', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'tocfs-cache-test-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  let n = 0;
  const freshDir = (): string => join(root, `c${n++}`);

  test('put then get returns the bytes from memory, then from disk in a new instance; private modes', async () => {
    const dir = freshDir();
    const cache = await ChunkCache.open({ dir });
    const c = chunk(5000);
    assert.equal(await cache.get(c.digest), undefined);
    await cache.put(c.digest, c.data);
    assert.deepEqual(await cache.get(c.digest), c.data);
    assert.equal(await cache.has(c.digest), true);
    assert.deepEqual(await readFile(chunkPath(dir, c.digest)), c.data);
    assert.equal((await stat(chunkPath(dir, c.digest))).mode & 0o777, 0o600);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.match(await readFile(join(dir, 'CACHEDIR.TAG'), 'utf8'), /^Signature: 8a477f597d28d172789f06886806bc55/);

    const again = await ChunkCache.open({ dir });
    assert.deepEqual(await again.get(c.digest), c.data);
    const s = await again.stats();
    assert.deepEqual({ files: s.files, bytes: s.bytes, hits: s.hits, misses: s.misses }, { files: 1, bytes: 5000, hits: { memory: 0, disk: 1 }, misses: 0 });
    const s1 = await cache.stats();
    assert.deepEqual(s1.hits, { memory: 1, disk: 0 });
    assert.equal(s1.misses, 1);
    assert.equal(s1.memoryBytes, 5000);
  });

  test('a temp file left by a crashed writer is ignored and cleaned on open; a live writer’s is kept', async () => {
    const dir = freshDir();
    await ChunkCache.open({ dir });
    const c = chunk(3000);
    // A real process that has exited: its pid is (for now) dead.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout);
    assert.ok(deadPid > 0);
    const leftover = join(dir, 'tmp', `${digestHex(c.digest)}.${deadPid}.0badc0de`);
    await writeFile(leftover, c.data.subarray(0, 1000));
    const live = join(dir, 'tmp', `${digestHex(c.digest)}.${process.pid}.00000001`);
    await writeFile(live, c.data.subarray(0, 10));

    const cache = await ChunkCache.open({ dir });
    assert.equal(await cache.get(c.digest), undefined, 'a partial temp file is never a cached chunk');
    assert.deepEqual(await readdir(join(dir, 'tmp')), [live.slice(live.lastIndexOf('/') + 1)]);
    assert.equal((await cache.stats()).files, 0);
    await cache.put(c.digest, c.data);
    assert.deepEqual(await readFile(chunkPath(dir, c.digest)), c.data);
  });

  test('a temp file of a killed writer that is still a zombie (its parent never reaps it) is cleaned on open', async () => {
    const dir = freshDir();
    await ChunkCache.open({ dir });
    // `sleep 0 &` exits at once; the shell then execs `sleep`, which never waits for it.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
      const zombie = Number(line.toString().trim());
      const state = async () => (await readFile(`/proc/${zombie}/stat`, 'utf8')).replace(/^.*\) /s, '').charAt(0);
      for (let i = 0; i < 200 && (await state()) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await state(), 'Z', 'the writer is a zombie');
      const c = chunk(2000);
      await writeFile(join(dir, 'tmp', `${digestHex(c.digest)}.${zombie}.0badc0de`), c.data.subarray(0, 500));
      await ChunkCache.open({ dir });
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    } finally {
      parent.kill();
    }
  });

  test('concurrent puts of one digest from two caches over one directory leave one whole file', async () => {
    const dir = freshDir();
    const a = await ChunkCache.open({ dir, memoryBytes: 1 });
    const b = await ChunkCache.open({ dir, memoryBytes: 1 });
    const c = chunk(256 * 1024);
    await Promise.all(Array.from({ length: 32 }, (_, i) => (i % 2 ? a : b).put(c.digest, c.data)));
    assert.deepEqual(await walk(join(dir, 'chunks')), [join('sha256', digestHex(c.digest).slice(0, 2), digestHex(c.digest))]);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(await readFile(chunkPath(dir, c.digest)), c.data);
    const fresh = await ChunkCache.open({ dir });
    assert.deepEqual(await fresh.get(c.digest), c.data);
  });

  test('gc evicts the least recently used files first, down to the budget', async () => {
    const dir = freshDir();
    // No memory tier: every get is a disk hit that marks the file as used.
    const cache = await ChunkCache.open({ dir, memoryBytes: 1 });
    const [a, b, c, d] = [chunk(1000), chunk(1000), chunk(1000), chunk(1000)];
    for (const x of [a, b, c, d]) await cache.put(x.digest, x.data);
    assert.deepEqual(await cache.get(a.digest), a.data); // a is now the most recently used
    const res = await cache.gc(2000);
    assert.deepEqual(res, { removedFiles: 2, removedBytes: 2000 });
    assert.equal(await cache.has(b.digest), false);
    assert.equal(await cache.has(c.digest), false);
    assert.deepEqual(await cache.get(a.digest), a.data);
    assert.deepEqual(await cache.get(d.digest), d.data);
    const s = await cache.stats();
    assert.equal(s.files, 2);
    assert.equal(s.bytes, 2000);
    assert.deepEqual(await cache.gc(2000), { removedFiles: 0, removedBytes: 0 });
  });

  test('disk hits mark files as used for the next process too (recency is written at flush)', async () => {
    const dir = freshDir();
    const writer = await ChunkCache.open({ dir, memoryBytes: 1 });
    const [a, b, c] = [chunk(1000), chunk(1000), chunk(1000)];
    for (const x of [a, b, c]) await writer.put(x.digest, x.data);
    const mtime = async (x: { digest: string }): Promise<number> => (await stat(chunkPath(dir, x.digest))).mtimeMs;
    // Recency has millisecond stamps, a little ahead of the clock during a burst of puts; the
    // next process reads later than that, as a later process would.
    while (Date.now() <= (await mtime(c)) + 1) await new Promise((r) => setTimeout(r, 2));
    const reader = await ChunkCache.open({ dir, memoryBytes: 1 });
    assert.deepEqual(await reader.get(a.digest), a.data);
    await reader.flush();
    assert.ok((await mtime(a)) > (await mtime(c)), 'the file read last is the most recently used on disk');
    const next = await ChunkCache.open({ dir, memoryBytes: 1 });
    assert.deepEqual(await next.gc(1000), { removedFiles: 2, removedBytes: 2000 });
    assert.deepEqual(await next.get(a.digest), a.data);
  });

  test('the size budget is enforced on put, keeping the newest chunks', async () => {
    const dir = freshDir();
    const cache = await ChunkCache.open({ dir, maxBytes: 10_000, memoryBytes: 1 });
    const chunks = Array.from({ length: 30 }, () => chunk(1000));
    for (const x of chunks) await cache.put(x.digest, x.data);
    await cache.flush();
    const files = await walk(join(dir, 'chunks'));
    const bytes = (await Promise.all(files.map((f) => stat(join(dir, 'chunks', f))))).reduce((n, s) => n + s.size, 0);
    assert.ok(bytes <= 10_000, `disk tier holds ${bytes} bytes, budget 10000`);
    assert.equal(await cache.has(chunks.at(-1)!.digest), true, 'the newest chunk is kept');
    assert.equal(await cache.has(chunks[0]!.digest), false, 'the oldest chunk is evicted');
    assert.equal((await cache.stats()).bytes, bytes);
  });

  test('verify finds and removes a corrupted file; get never returns corrupt bytes', async () => {
    const dir = freshDir();
    const cache = await ChunkCache.open({ dir });
    const good = chunk(4000);
    const bad = chunk(4000);
    const torn = chunk(4000);
    for (const x of [good, bad, torn]) await cache.put(x.digest, x.data);
    const flipped = Buffer.from(bad.data);
    flipped[1234]! ^= 0x01;
    await writeFile(chunkPath(dir, bad.digest), flipped);
    await writeFile(chunkPath(dir, torn.digest), torn.data.subarray(0, 100));

    const lines: Array<{ done: number; total: number }> = [];
    const res = await cache.verify((p) => lines.push(p));
    assert.equal(res.checked, 3);
    assert.deepEqual(res.bad.sort(), [bad.digest, torn.digest].sort());
    assert.equal(await cache.has(bad.digest), false);
    assert.equal(lines.at(-1)!.done, lines.at(-1)!.total);

    // A file corrupted after verify: a fresh instance (no memory copy) must not serve it.
    const c2 = chunk(2000);
    await cache.put(c2.digest, c2.data);
    await writeFile(chunkPath(dir, c2.digest), randomBytes(2000));
    const fresh = await ChunkCache.open({ dir });
    assert.equal(await fresh.get(c2.digest), undefined);
    assert.equal(await fresh.has(c2.digest), false, 'the corrupt file was removed on read');
    assert.deepEqual(await fresh.get(good.digest), good.data);
  });

  test('clear empties chunks and TOCs', async () => {
    const dir = freshDir();
    const cache = await ChunkCache.open({ dir });
    const c = chunk(100);
    await cache.put(c.digest, c.data);
    const tocs = new DiskTocStore(dir);
    await tocs.put(c.digest, Buffer.from('toc'));
    await cache.clear();
    assert.equal(await cache.get(c.digest), undefined);
    assert.equal(await tocs.get(c.digest), undefined);
    assert.equal((await cache.stats()).files, 0);
  });

  /** Runs `fn` over a fresh tmpfs of `size`, or skips when this machine cannot mount one. */
  async function withTmpfs(t: TestContext, name: string, size: string, fn: (mnt: string) => Promise<void>): Promise<void> {
    const mnt = join(root, name);
    await mkdir(mnt);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tocfs-test', mnt]);
    } catch (e) {
      t.skip(`cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): ${(e as Error).message.split('\n')[0]}`);
      return;
    }
    try {
      await fn(mnt);
    } finally {
      await run('umount', [mnt]);
    }
  }

  test('an existing directory the user names: its mode and any file tocfs did not name are left alone', async () => {
    const dir = freshDir();
    await mkdir(join(dir, 'chunks'), { recursive: true, mode: 0o755 });
    await mkdir(join(dir, 'tmp'), { mode: 0o755 });
    await chmod(dir, 0o755);
    const foreign = ['notes.txt', 'chunks/notes.txt', 'tmp/build.log', 'tmp/deadbeef.1.00000000'];
    for (const f of foreign) await writeFile(join(dir, f), 'keep me');
    const cache = await ChunkCache.open({ dir });
    const c = chunk(100);
    await cache.put(c.digest, c.data);
    await cache.gc(0);
    await cache.put(c.digest, c.data);
    await cache.clear();
    assert.equal(await cache.has(c.digest), false);
    for (const f of foreign) assert.equal(await readFile(join(dir, f), 'utf8'), 'keep me', f);
    assert.equal((await stat(dir)).mode & 0o777, 0o755);
    await assert.rejects(stat(join(dir, 'CACHEDIR.TAG')), /ENOENT/);
  });

  test('a put that does not fit on a full disk (real 1 MiB tmpfs) degrades to memory-only, with one warning', (t) =>
    withTmpfs(t, 'tiny', '1m', async (mnt) => {
      const { logger, records } = captureLogger();
      const cache = await ChunkCache.open({ dir: join(mnt, 'cache'), logger, memoryBytes: 64 * 1024 * 1024 });
      const chunks = Array.from({ length: 6 }, () => chunk(300 * 1024));
      for (const x of chunks) await cache.put(x.digest, x.data);
      const s = await cache.stats();
      assert.equal(s.diskWritable, false);
      const warnings = records.filter((r) => r.level === 40 && /memory cache only/.test(r.msg));
      assert.equal(warnings.length, 1, JSON.stringify(records));
      for (const x of chunks) assert.deepEqual(await cache.get(x.digest), x.data);
      // Whatever reached the disk is whole; no temp file is left behind.
      const files = await walk(join(mnt, 'cache', 'chunks'));
      assert.ok(files.length >= 1 && files.length < chunks.length, `${files.length} files on disk`);
      for (const f of files) assert.equal(sha256(await readFile(join(mnt, 'cache', 'chunks', f))), `sha256:${f.split('/').at(-1)}`);
      assert.deepEqual(await readdir(join(mnt, 'cache', 'tmp')), []);
      // The disk tier still serves what it holds to a new instance.
      const again = await ChunkCache.open({ dir: join(mnt, 'cache'), logger });
      assert.deepEqual(await again.get(chunks[0]!.digest), chunks[0]!.data);
    }));

  test('a read-only cache directory serves what it holds and keeps new chunks in memory', (t) =>
    withTmpfs(t, 'ro', '4m', async (mnt) => {
      const dir = join(mnt, 'cache');
      const old = chunk(1000);
      await (await ChunkCache.open({ dir })).put(old.digest, old.data);
      await run('mount', ['-o', 'remount,ro', mnt]);
      const { logger, records } = captureLogger();
      const cache = await ChunkCache.open({ dir, logger });
      assert.deepEqual(await cache.get(old.digest), old.data);
      const fresh = chunk(1000);
      await cache.put(fresh.digest, fresh.data);
      assert.deepEqual(await cache.get(fresh.digest), fresh.data);
      assert.equal((await cache.stats()).diskWritable, false);
      assert.equal(records.filter((r) => r.level === 40).length, 1);
    }));
});

describe('DiskTocStore', () => {
  test('round trip, atomic files, any key kept inside the store', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tocfs-tocstore-'));
    try {
      const store = new DiskTocStore(dir);
      const raw = randomBytes(10_000);
      const key = sha256(raw);
      assert.equal(await store.get(key), undefined);
      await store.put(key, raw);
      assert.deepEqual(await store.get(key), raw);
      assert.deepEqual(await new DiskTocStore(dir).get(key), raw);
      await store.put('../../etc/passwd', Buffer.from('x'));
      assert.deepEqual(await store.get('../../etc/passwd'), Buffer.from('x'));
      assert.deepEqual((await walk(dir)).filter((f) => !f.startsWith('tocs/sha256/')), []);
      assert.equal((await stat(join(dir, 'tocs', 'sha256', digestHex(key)))).mode & 0o777, 0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cache settings', () => {
  test('default directory', () => {
    if (process.getuid?.() === 0) assert.equal(defaultCacheDir(), '/var/lib/tocfs');
    else assert.match(defaultCacheDir(), /\/tocfs$/);
  });
});
