/**
 * Content-addressed store of verified chunk contents: a memory tier (LRU by bytes) over a
 * disk tier of files `<dir>/chunks/sha256/ab/<hex>` named by the sha256 of their content.
 *
 * - Only verified bytes go in (the caller checked them). A file read back from disk is
 *   checked against its name the first time this process reads it, so a corrupt or torn
 *   file is a miss, never wrong data. Files this process wrote (from bytes it verified) or
 *   already checked are not hashed again on later disk hits: the directory is private
 *   (0700, files 0600) and files only enter it by rename after verification, so whoever
 *   could change them could as well change tocfs itself; `tocfs cache verify` re-hashes all.
 * - Recency for eviction is the file's mtime (atime is useless under noatime/relatime): set
 *   (strictly increasing) on the temp file before its rename; hits are noted in memory and
 *   written out in batches (every TOUCH_FLUSH_MS, before a gc and at flush) — memory hits
 *   at most once a minute.
 * - A full or read-only disk turns the cache memory-only with one warning.
 */
import { mkdir, readdir, readFile, rmdir, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Sema } from 'async-sema';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { digestHex, isDigest, sha256 } from '../digest.js';
import { logger as rootLogger } from '../log.js';
import { metrics } from '../metrics/index.js';
import { cleanStaleTemps, DIR_MODE, isDiskUnusable, isNotFound, OWN_FILE_NAME } from './files.js';
import { ProcessMemoryBudget } from './memory-budget.js';
import { WriterThread } from './writer-thread.js';
import { defaultMemoryBytes } from './paths.js';
import { DiskTocStore } from './toc-store.js';

export { defaultCacheDir } from './paths.js';

export const DEFAULT_MAX_BYTES = 10 * 1024 ** 3;
/** Memory tier budget when none is given (1/16 of RAM, 128 MiB to 1 GiB). */
export const DEFAULT_MEMORY_BYTES = defaultMemoryBytes();
/** Background eviction brings the disk tier down to this fraction of the budget. */
const EVICT_TO = 0.9;
const TOUCH_INTERVAL_MS = 60_000;
/** How often recency noted in memory is written to the files' mtimes. */
const TOUCH_FLUSH_MS = 30_000;
/** Digests remembered as checked (or as absent) at most; past it the set starts over (they are checked again). */
const MAX_REMEMBERED = 256 * 1024;
/** https://bford.info/cachedir/: backup tools skip a directory holding this file. */
const CACHEDIR_TAG = 'Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by tocfs.\n';
/**
 * Disk writes handed to the writer thread at once (writer-thread.ts): one being written while
 * the next is on its way.
 */
const WRITE_CONCURRENCY = 2;
/** Bytes waiting for the disk beyond which new chunks stay in memory only (bounds memory when the network outruns the disk). */
const MAX_QUEUED_WRITE_BYTES = 256 * 1024 ** 2;
/** With a process memory budget, chunks waiting for the disk may hold at most this share of it. */
const QUEUED_WRITE_SHARE = 1 / 8;

export interface ChunkCacheOptions {
  dir: string;
  maxBytes?: number;
  memoryBytes?: number;
  /**
   * The resident memory the whole process should keep within (daemon.memory): the memory
   * tier shrinks below `memoryBytes` as the rest of the process grows (memory-budget.ts).
   */
  processMemoryBudget?: number;
  logger?: Logger;
}

/** What wholeFile needs of a file's chunks (formats' Chunk has these). */
export interface WholeFileChunk {
  digest: string;
  size: number;
  zeros: boolean;
}

export interface CacheStats {
  files: number;
  bytes: number;
  memoryBytes: number;
  hits: { memory: number; disk: number };
  misses: number;
  /** false once the disk tier was given up (full or read-only). */
  diskWritable: boolean;
}

export interface CacheProgress {
  done: number;
  total: number;
}

export interface GcResult {
  removedFiles: number;
  removedBytes: number;
}

export interface VerifyResult {
  checked: number;
  bad: string[];
}

interface MemoryEntry {
  data: Buffer;
  /** When the disk file's mtime was last set (ms). */
  touched: number;
}

interface CachedFile {
  digest: string;
  path: string;
  size: number;
  mtimeMs: number;
}

export class ChunkCache {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly chunksDir: string;
  readonly tmpDir: string;
  private readonly log: Logger;
  private readonly memory: LRUCache<string, MemoryEntry>;
  private diskWritable = true;
  private files = 0;
  private bytes = 0;
  private hits = { memory: 0, disk: 0 };
  private misses = 0;
  private lastStamp = 0;
  /** Digests whose file this process wrote from verified bytes or has hashed since (see the header). */
  private readonly checked = new Set<string>();
  /** Digests a get() just found missing on disk: their write need not stat first. */
  private readonly absent = new Set<string>();
  /** Recency not yet written to the files' mtimes (digest -> seconds). */
  private readonly pendingTouches = new Map<string, number>();
  private touchTimer: NodeJS.Timeout | undefined;
  private readonly writes = new Map<string, Promise<void>>();
  /** Whole files being joined from their chunks (wholeFile), by digest. */
  private readonly joins = new Map<string, Promise<boolean>>();
  private readonly writeSlots = new Sema(WRITE_CONCURRENCY);
  private readonly writer = new WriterThread();
  private queuedWriteBytes = 0;
  private readonly maxQueuedWriteBytes: number;
  /** What the memory tier may hold now (memoryBytes, or less under a process memory budget). */
  private memoryLimit: number;
  private readonly budget: ProcessMemoryBudget | undefined;
  private writeWaiters: Array<() => void> = [];
  /** Writes past the gc gate (their files may be on disk but not counted yet). */
  private readonly activeWrites = new Set<Promise<void>>();
  /** A gc in progress: new writes wait for it, so the byte count stays exact. */
  private gcGate: Promise<unknown> | undefined;
  private eviction: Promise<unknown> | undefined;
  private scanned: Promise<void>;

  private constructor(opts: ChunkCacheOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.chunksDir = join(opts.dir, 'chunks', 'sha256');
    this.tmpDir = join(opts.dir, 'tmp');
    this.log = opts.logger ?? rootLogger();
    this.memory = new LRUCache<string, MemoryEntry>({
      maxSize: Math.max(1, opts.memoryBytes ?? DEFAULT_MEMORY_BYTES),
      sizeCalculation: (e) => Math.max(1, e.data.length),
    });
    this.memoryLimit = this.memory.maxSize;
    this.maxQueuedWriteBytes = opts.processMemoryBudget ? Math.min(MAX_QUEUED_WRITE_BYTES, Math.floor(opts.processMemoryBudget * QUEUED_WRITE_SHARE)) : MAX_QUEUED_WRITE_BYTES;
    const memory = this.memory;
    const tier = { get bytes() { return memory.calculatedSize; }, limit: (bytes: number) => this.limitMemory(bytes) };
    this.budget = opts.processMemoryBudget ? new ProcessMemoryBudget(opts.processMemoryBudget, tier, memory.maxSize, this.log) : undefined;
    this.scanned = Promise.resolve();
  }

  static async open(opts: ChunkCacheOptions): Promise<ChunkCache> {
    const cache = new ChunkCache(opts);
    try {
      // An existing directory the user named keeps its mode; what tocfs creates is private.
      if ((await mkdir(opts.dir, { recursive: true, mode: DIR_MODE })) !== undefined) await writeFile(join(opts.dir, 'CACHEDIR.TAG'), CACHEDIR_TAG, { mode: 0o644 });
      for (const d of [cache.chunksDir, cache.tmpDir, join(opts.dir, 'tocs')]) await mkdir(d, { recursive: true, mode: DIR_MODE });
      await cleanStaleTemps(cache.tmpDir);
    } catch (e) {
      if (!isDiskUnusable(e) && (e as NodeJS.ErrnoException).code !== 'EACCES') throw e;
      cache.degrade(e);
    }
    // Counting what is on disk can take a while for a big cache: do not hold up the mount.
    cache.scanned = cache.listFiles().then(
      (list) => {
        cache.files = list.length;
        cache.bytes = list.reduce((n, f) => n + f.size, 0);
      },
      () => undefined,
    );
    return cache;
  }

  private path(digest: string): string {
    const hex = digestHex(digest);
    return join(this.chunksDir, hex.slice(0, 2), hex);
  }

  /** Strictly increasing mtimes (seconds), so recency order survives coarse clocks. */
  private stamp(): number {
    // +1: never older than a file the kernel stamped (sub-millisecond) within this millisecond.
    this.lastStamp = Math.max(Date.now() + 1, this.lastStamp + 1);
    return this.lastStamp / 1000;
  }

  private touch(digest: string, entry?: MemoryEntry): void {
    if (entry) {
      if (Date.now() - entry.touched < TOUCH_INTERVAL_MS) return;
      entry.touched = Date.now();
    }
    this.pendingTouches.set(digest, this.stamp());
    this.touchTimer ??= setTimeout(() => {
      this.touchTimer = undefined;
      void this.flushTouches();
    }, TOUCH_FLUSH_MS).unref();
  }

  /** Writes the recency noted in memory to the files' mtimes (a file gone since is skipped). */
  private async flushTouches(): Promise<void> {
    if (this.pendingTouches.size === 0) return;
    const batch = [...this.pendingTouches];
    this.pendingTouches.clear();
    for (let i = 0; i < batch.length; i += 16) {
      await Promise.all(batch.slice(i, i + 16).map(([digest, t]) => utimes(this.path(digest), t, t).catch(() => undefined)));
    }
  }

  private remembered(set: Set<string>, digest: string): void {
    if (set.size >= MAX_REMEMBERED) set.clear();
    set.add(digest);
  }

  private degrade(e: unknown): void {
    if (!this.diskWritable) return;
    this.diskWritable = false;
    this.log.warn({ dir: this.dir, code: (e as NodeJS.ErrnoException).code }, `cache directory ${this.dir} is not writable (${(e as Error).message}): continuing with the memory cache only`);
  }

  private remember(digest: string, data: Buffer): void {
    // A chunk sliced out of a bigger decompressed buffer would pin all of it: keep a copy.
    const owned = data.buffer.byteLength > 2 * data.length + 8192 ? Buffer.from(data) : data;
    this.memory.set(digest, { data: owned, touched: Date.now() });
    this.trimMemory();
  }

  /** The memory tier now: what it holds, what it may hold (cache.memory_size, or less to keep within daemon.memory), and daemon.memory when the cache keeps to one. */
  get memoryUse(): { tierBytes: number; tierLimitBytes: number; budgetBytes?: number } {
    return { tierBytes: this.memory.calculatedSize, tierLimitBytes: this.memoryLimit, ...(this.budget ? { budgetBytes: this.budget.budget } : {}) };
  }

  /** Caps the memory tier at `bytes` (never above its configured size), evicting the least recently used chunks beyond it. */
  limitMemory(bytes: number): void {
    this.memoryLimit = Math.min(this.memory.maxSize, Math.max(0, bytes));
    this.trimMemory();
  }

  private trimMemory(): void {
    while (this.memory.calculatedSize > this.memoryLimit && this.memory.size > 0) this.memory.pop();
  }

  /** Whether the chunk is in the memory tier (no recency update, no I/O). */
  inMemory(digest: string): boolean {
    return this.memory.has(digest);
  }

  /** The chunk if it is in memory, without touching the disk. */
  peek(digest: string): Buffer | undefined {
    const e = this.memory.get(digest);
    if (e) {
      this.hits.memory++;
      metrics.cacheHit('memory');
      this.touch(digest, e);
    }
    return e?.data;
  }

  async get(digest: string): Promise<Buffer | undefined> {
    const inMemory = this.peek(digest);
    if (inMemory) return inMemory;
    if (!isDigest(digest)) return undefined;
    // A memory miss counts here, not in peek(): readers peek first, then get() the misses.
    metrics.cacheMiss('memory');
    let data: Buffer;
    try {
      data = await readFile(this.path(digest));
    } catch (e) {
      if (!isNotFound(e)) this.log.warn({ err: e, digest }, 'cannot read cached chunk');
      else this.remembered(this.absent, digest);
      this.misses++;
      metrics.cacheMiss('disk');
      return undefined;
    }
    if (!this.checked.has(digest) && sha256(data) !== digest) {
      this.log.warn({ digest, path: this.path(digest) }, 'cached chunk is corrupt: removing it');
      await this.removeFile(this.path(digest), data.length);
      this.misses++;
      metrics.cacheMiss('disk');
      return undefined;
    }
    this.remembered(this.checked, digest);
    this.hits.disk++;
    metrics.cacheHit('disk');
    this.touch(digest);
    this.remember(digest, data);
    return data;
  }

  async has(digest: string): Promise<boolean> {
    if (this.memory.has(digest)) return true;
    if (!isDigest(digest)) return false;
    return stat(this.path(digest)).then(
      () => true,
      () => false,
    );
  }

  /**
   * Stores verified bytes. Never throws for disk trouble: a full or read-only disk makes
   * the cache memory-only. Concurrent puts of one digest share one write.
   */
  async put(digest: string, data: Buffer): Promise<void> {
    if (!isDigest(digest)) throw new TypeError(`not a sha256 digest: ${digest}`);
    this.remember(digest, data);
    if (!this.diskWritable) return;
    const pending = this.writes.get(digest);
    if (pending) return pending;
    if (this.queuedWriteBytes + data.length > this.maxQueuedWriteBytes) {
      this.log.debug({ digest, queued: this.queuedWriteBytes }, 'disk writes backed up: chunk kept in memory only');
      return;
    }
    this.queuedWriteBytes += data.length;
    const write = this.writeFile(digest, data).finally(() => {
      this.writes.delete(digest);
      this.queuedWriteBytes -= data.length;
      const waiters = this.writeWaiters;
      this.writeWaiters = [];
      for (const w of waiters) w();
    });
    this.writes.set(digest, write);
    return write;
  }

  /**
   * One file holding a regular file's whole content, named by its digest like a chunk (so gc,
   * stats and verify count it, and every layer and image holding that content shares it): the
   * single chunk's own file, or the chunks joined once every one is cached, checked against
   * the file's digest before it is kept. Undefined while a chunk is missing, or without a disk.
   */
  async wholeFile(digest: string, chunks: readonly WholeFileChunk[]): Promise<string | undefined> {
    if (!this.diskWritable || !isDigest(digest)) return undefined;
    const path = this.path(digest);
    const present = async (): Promise<boolean> => {
      await this.writes.get(digest);
      return stat(path).then(
        () => true,
        () => false,
      );
    };
    if (await present()) {
      this.touch(digest);
      return path;
    }
    let joining = this.joins.get(digest);
    if (!joining) {
      joining = this.join(digest, chunks).finally(() => this.joins.delete(digest));
      this.joins.set(digest, joining);
    }
    return (await joining) && (await present()) ? path : undefined;
  }

  private async join(digest: string, chunks: readonly WholeFileChunk[]): Promise<boolean> {
    // Cheap checks first: an incomplete file costs a stat or two, not a read of what is there.
    for (const c of chunks) if (!c.zeros && !(await this.has(c.digest))) return false;
    const parts: Buffer[] = [];
    for (const c of chunks) {
      const data = c.zeros ? Buffer.alloc(c.size) : this.memory.get(c.digest)?.data ?? (await this.get(c.digest));
      if (!data) return false;
      parts.push(data);
    }
    const whole = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (sha256(whole) !== digest) {
      this.log.warn({ digest, chunks: chunks.length }, 'the cached chunks of a file do not join to its digest: it is served chunk by chunk');
      return false;
    }
    if (this.writes.has(digest)) await this.writes.get(digest);
    else await this.writeFile(digest, whole);
    return true;
  }

  /** Resolves once at most `bytes` wait to be written (background fetches pace themselves on it). */
  async writesBelow(bytes: number): Promise<void> {
    while (this.queuedWriteBytes > bytes) await new Promise<void>((r) => this.writeWaiters.push(r));
  }

  private async writeFile(digest: string, data: Buffer): Promise<void> {
    await this.writeSlots.acquire();
    try {
      while (this.gcGate) await this.gcGate;
      if (!this.diskWritable) return;
      const write = this.writeCounted(digest, data);
      this.activeWrites.add(write);
      await write.finally(() => this.activeWrites.delete(write));
    } finally {
      this.writeSlots.release();
    }
    this.evictIfOver();
  }

  private async writeCounted(digest: string, data: Buffer): Promise<void> {
    const path = this.path(digest);
    // A chunk fetched because get() found no file needs no stat (another process may have
    // written it since: the rename then replaces identical bytes, and gc recounts).
    if (!this.absent.delete(digest) && (await stat(path).then(() => true, () => false))) {
      this.touch(digest);
      return;
    }
    try {
      // An explicit, strictly increasing mtime: files written within one tick of the kernel's
      // coarse clock would otherwise tie, and gc would evict among them in no particular order.
      await this.writer.write(this.tmpDir, path, data, this.stamp());
    } catch (e) {
      if (isDiskUnusable(e)) this.degrade(e);
      else this.log.warn({ err: e, digest }, 'cannot write chunk to the cache');
      return;
    }
    this.remembered(this.checked, digest);
    this.files++;
    this.bytes += data.length;
  }

  private evictIfOver(): void {
    if (this.bytes <= this.maxBytes || this.eviction) return;
    this.eviction = this.gc(Math.floor(this.maxBytes * EVICT_TO))
      .catch((e) => this.log.warn({ err: e }, 'cache eviction failed'))
      .finally(() => {
        this.eviction = undefined;
        this.evictIfOver();
      });
  }

  /** Waits for writes and eviction in progress (before exit, or to observe the disk tier). */
  async flush(): Promise<void> {
    while (this.writes.size > 0 || this.eviction) {
      await Promise.all([...this.writes.values(), this.eviction]);
    }
    await this.flushTouches();
  }

  async stats(): Promise<CacheStats> {
    await this.scanned;
    return {
      files: this.files,
      bytes: this.bytes,
      memoryBytes: this.memory.calculatedSize,
      hits: { ...this.hits },
      misses: this.misses,
      diskWritable: this.diskWritable,
    };
  }

  private async listFiles(): Promise<CachedFile[]> {
    const out: CachedFile[] = [];
    let prefixes: string[];
    try {
      prefixes = await readdir(this.chunksDir);
    } catch {
      return out;
    }
    for (const p of prefixes) {
      if (!/^[0-9a-f]{2}$/.test(p)) continue;
      const names = await readdir(join(this.chunksDir, p)).catch(() => [] as string[]);
      for (const name of names) {
        if (!OWN_FILE_NAME.test(name) || !name.startsWith(p)) continue;
        const path = join(this.chunksDir, p, name);
        const st = await stat(path).catch(() => undefined);
        if (st?.isFile()) out.push({ digest: `sha256:${name}`, path, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
    return out;
  }

  private async removeFile(path: string, size: number): Promise<boolean> {
    try {
      await unlink(path);
    } catch {
      return false;
    }
    this.files = Math.max(0, this.files - 1);
    this.bytes = Math.max(0, this.bytes - size);
    return true;
  }

  /**
   * Removes least recently used files until the disk tier holds at most `budgetBytes`
   * (default: the cache's budget), and temp files left by crashed writers.
   */
  async gc(budgetBytes = this.maxBytes, onProgress?: (p: CacheProgress) => void): Promise<GcResult> {
    while (this.gcGate) await this.gcGate;
    const run = this.collect(budgetBytes, onProgress);
    this.gcGate = run;
    try {
      return await run;
    } finally {
      this.gcGate = undefined;
    }
  }

  private async collect(budgetBytes: number, onProgress?: (p: CacheProgress) => void): Promise<GcResult> {
    await this.scanned;
    await Promise.all(this.activeWrites);
    await this.flushTouches();
    await cleanStaleTemps(this.tmpDir);
    const list = await this.listFiles();
    this.files = list.length;
    this.bytes = list.reduce((n, f) => n + f.size, 0);
    const excess = this.bytes - budgetBytes;
    const result: GcResult = { removedFiles: 0, removedBytes: 0 };
    if (excess <= 0) return result;
    list.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of list) {
      if (result.removedBytes >= excess) break;
      if (await this.removeFile(f.path, f.size)) {
        this.checked.delete(f.digest);
        result.removedFiles++;
        result.removedBytes += f.size;
      }
      onProgress?.({ done: result.removedBytes, total: excess });
    }
    this.log.debug({ dir: this.dir, ...result }, 'cache gc');
    return result;
  }

  /** Re-hashes every file on disk and removes those whose content does not match their name. */
  async verify(onProgress?: (p: CacheProgress) => void): Promise<VerifyResult> {
    await this.scanned;
    const list = await this.listFiles();
    const total = list.reduce((n, f) => n + f.size, 0);
    const result: VerifyResult = { checked: 0, bad: [] };
    let done = 0;
    for (const f of list) {
      const data = await readFile(f.path).catch(() => undefined);
      if (data === undefined) continue;
      result.checked++;
      if (sha256(data) !== f.digest) {
        result.bad.push(f.digest);
        this.memory.delete(f.digest);
        this.checked.delete(f.digest);
        await this.removeFile(f.path, f.size);
      }
      done += f.size;
      onProgress?.({ done, total });
    }
    return result;
  }

  /** Empties both tiers and the TOC store (removing only files tocfs named, never a whole tree). */
  async clear(): Promise<void> {
    await this.flush();
    this.memory.clear();
    this.checked.clear();
    for (const f of await this.listFiles()) await this.removeFile(f.path, f.size);
    for (const p of await readdir(this.chunksDir).catch(() => [] as string[])) await rmdir(join(this.chunksDir, p)).catch(() => undefined);
    await new DiskTocStore(this.dir, this.log).clear();
    this.files = 0;
    this.bytes = 0;
  }
}
