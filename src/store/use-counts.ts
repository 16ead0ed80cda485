/**
 * The layer store's use counts (`<key>/use` +1, `rmdir <key>` −1), kept across restarts of
 * the store in an append-only journal, one per store directory:
 *
 *   <cache dir>/stores/<sha256(store dir)[0..16]>.uses     (directory 0700, file 0600)
 *
 * Each line is `<checksum> <JSON>\n`, the checksum being the first 16 hex digits of the
 * sha256 of the JSON text. The first line is a header ({"journal":"tocfs-store-uses",
 * "version":1,"store":…}); every other line gives one (ref, key)'s count as an absolute
 * value, with what is known of the layer for `tocfs store status`. The last line of a
 * (ref, key) wins; a count of 0 removes it.
 *
 * Why this is crash-safe:
 * - a change is acknowledged (the promise of change() resolves, and only then does FUSE
 *   answer Podman) after its line was written and fdatasync'ed;
 * - appending never rewrites earlier lines, so a crash can only leave the unacknowledged
 *   tail torn (a partial line, or garbage where the size grew before the data landed);
 * - every line checks itself, so a torn or damaged line is skipped on loading, alone: each
 *   count is then the last intact line of its (ref, key) — the last acknowledged one — and
 *   no other count is touched (counts are absolute, not deltas, so nothing sums over a
 *   missing line);
 * - compaction (when the store starts, and when the journal has grown to several times its
 *   live lines) writes the counts to `<file>.tmp`, fsyncs it, renames it over the journal
 *   and fsyncs the directory: the journal is either the old one or the new one.
 * One process writes a journal: the store opens it read-only before mounting and writes
 * only once mounted (a second store on the same directory fails to mount first).
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { isDigest } from '../digest.js';
import { TocfsError } from '../errors.js';
import { parseKey } from './names.js';

export const USE_JOURNAL_VERSION = 1;
const JOURNAL_NAME = 'tocfs-store-uses';
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** Compact while running once the journal holds more than this many lines plus 4 per live count. */
const COMPACT_SLACK = 1000;

/** What status shows of a layer the store served, remembered with its count. */
export interface RememberedLayer {
  digest: string;
  size: number;
  format: string;
  platform: string;
}

export interface UseRecord {
  ref: string;
  key: string;
  uses: number;
  layer?: RememberedLayer;
}

/** `<cache dir>/stores/<hash of the store dir>.uses` */
export function useJournalFile(cacheDir: string, storeDir: string): string {
  const key = createHash('sha256').update(resolve(storeDir)).digest('hex').slice(0, 16);
  return join(cacheDir, 'stores', `${key}.uses`);
}

function checksum(json: string): string {
  return createHash('sha256').update(json).digest('hex').slice(0, 16);
}

/** One journal line for a JSON value. */
export function journalLine(value: unknown): string {
  const json = JSON.stringify(value);
  return `${checksum(json)} ${json}\n`;
}

const id = (ref: string, key: string): string => `${ref}\n${key}`;

function isRememberedLayer(v: unknown): v is RememberedLayer {
  const l = v as RememberedLayer;
  return typeof v === 'object' && v !== null && isDigest(l.digest) && Number.isSafeInteger(l.size) && l.size >= 0 && typeof l.format === 'string' && typeof l.platform === 'string';
}

/** A journal line's record, or undefined when the line is torn, damaged or not a record. */
function parseRecord(value: Record<string, unknown>): UseRecord | undefined {
  const { ref, key, uses, layer } = value;
  if (typeof ref !== 'string' || ref === '' || typeof key !== 'string' || parseKey(key) === undefined) return undefined;
  if (typeof uses !== 'number' || !Number.isSafeInteger(uses) || uses < 0) return undefined;
  if (layer !== undefined && !isRememberedLayer(layer)) return undefined;
  return { ref, key, uses, ...(layer ? { layer } : {}) };
}

export interface LoadedJournal {
  records: Map<string, UseRecord>;
  /** Lines skipped: torn by a crash, or damaged. */
  damaged: number;
  /** Lines read (header included), intact or not. */
  lines: number;
}

/** Reads a journal's text: the last intact line of each (ref, key), counts of 0 dropped. */
export function parseJournal(text: string, file: string): LoadedJournal {
  const records = new Map<string, UseRecord>();
  const lines = text.split('\n');
  // A file that does not end in a newline ends in a torn line (split leaves '' after a final '\n').
  const last = lines.pop();
  let damaged = last === undefined || last === '' ? 0 : 1;
  let n = damaged;
  for (const line of lines) {
    n++;
    const space = line.indexOf(' ');
    const json = line.slice(space + 1);
    let value: Record<string, unknown>;
    try {
      if (space !== 16 || checksum(json) !== line.slice(0, 16)) throw new Error('checksum');
      value = JSON.parse(json) as Record<string, unknown>;
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    } catch {
      damaged++;
      continue;
    }
    if (value.journal === JOURNAL_NAME) {
      if (typeof value.version === 'number' && value.version > USE_JOURNAL_VERSION)
        throw new TocfsError(`${file} holds use counts in format ${value.version}, written by a newer tocfs (this one reads format ${USE_JOURNAL_VERSION}): run that tocfs, or move the file away to start with no use counts`, 'EUSEJOURNAL');
      continue;
    }
    const record = parseRecord(value);
    if (!record) {
      damaged++;
      continue;
    }
    if (record.uses === 0) records.delete(id(record.ref, record.key));
    else records.set(id(record.ref, record.key), record);
  }
  return { records, damaged, lines: n };
}

export interface UseCountsOptions {
  /** The journal; undefined keeps counts in memory only (nothing survives the process). */
  file?: string;
  /** The store directory the counts belong to (written into the journal's header). */
  storeDir?: string;
  logger: Logger;
}

/** Use counts by (image reference, layer key), durable when a journal file is given. */
export class UseCounts {
  private readonly records: Map<string, UseRecord>;
  private readonly log: Logger;
  private fd: FileHandle | undefined;
  /** Lines in the journal file since it was last compacted (header included). */
  private lines: number;
  /** The journal must be rewritten before anything is appended (torn tail, failed append, or not compacted since opening). */
  private mustCompact = true;
  private queue: Array<{ line: string; settle: (err?: unknown) => void }> = [];
  private writing: Promise<void> | undefined;
  private draining = false;
  private closed = false;

  private constructor(
    private readonly opts: UseCountsOptions,
    loaded: LoadedJournal,
  ) {
    this.records = loaded.records;
    this.lines = loaded.lines;
    this.log = opts.logger;
  }

  /** Counts kept in memory only. */
  static inMemory(logger: Logger): UseCounts {
    return new UseCounts({ logger }, { records: new Map(), damaged: 0, lines: 0 });
  }

  /**
   * Reads the journal (a missing one is empty). Writes nothing: the first change, or
   * compact(), rewrites it. Damaged lines are skipped with a warning.
   */
  static async open(opts: UseCountsOptions & { file: string }): Promise<UseCounts> {
    let text = '';
    try {
      text = await readFile(opts.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new TocfsError(`cannot read the store's use counts from ${opts.file}: ${(e as Error).message} (check that the cache directory is readable by tocfs)`, 'EUSEJOURNAL', { cause: e });
    }
    const loaded = parseJournal(text, opts.file);
    const counts = new UseCounts(opts, loaded);
    const total = [...loaded.records.values()].reduce((s, r) => s + r.uses, 0);
    if (loaded.damaged > 0)
      opts.logger.warn({ file: opts.file, damaged: loaded.damaged, layers: loaded.records.size }, 'skipped damaged lines of the use-count journal (a write cut short by a crash, or a damaged disk); the counts of every other layer are intact');
    opts.logger.info({ file: opts.file, layers: loaded.records.size, uses: total }, 'use counts loaded');
    return counts;
  }

  get file(): string | undefined {
    return this.opts.file;
  }

  get(ref: string, key: string): number {
    return this.records.get(id(ref, key))?.uses ?? 0;
  }

  has(ref: string, key: string): boolean {
    return this.records.has(id(ref, key));
  }

  /** Every (ref, key) with a count above 0. */
  entries(): UseRecord[] {
    return [...this.records.values()];
  }

  /**
   * Adds `delta` to the count (never below 0) at once; the promise resolves when the new
   * count is durable. `layer` replaces what is remembered of the layer when given.
   */
  change(ref: string, key: string, delta: number, layer?: RememberedLayer): { uses: number; durable: Promise<void> } {
    const k = id(ref, key);
    const prev = this.records.get(k);
    const uses = Math.max(0, (prev?.uses ?? 0) + delta);
    const remembered = layer ?? prev?.layer;
    const record: UseRecord = { ref, key, uses, ...(remembered ? { layer: remembered } : {}) };
    if (uses === 0) this.records.delete(k);
    else this.records.set(k, record);
    if (!this.opts.file || (prev?.uses ?? 0) === uses) return { uses, durable: Promise.resolve() };
    return { uses, durable: this.enqueue(journalLine(record)) };
  }

  /** Rewrites the journal with the live counts only (at start; later when it has grown). */
  async compact(): Promise<void> {
    if (!this.opts.file) return;
    this.mustCompact = true;
    await this.enqueue(undefined);
  }

  /** Waits for pending writes and closes the journal. */
  async close(): Promise<void> {
    this.closed = true;
    await this.writing;
    await this.fd?.close().catch(() => undefined);
    this.fd = undefined;
  }

  /** Queues a line (or, with undefined, only a compaction) and resolves when it is on disk. */
  private enqueue(line: string | undefined): Promise<void> {
    if (this.closed) return Promise.reject(new TocfsError(`use counts of ${this.opts.storeDir ?? 'the store'} are closed (the store is stopping)`, 'EUSEJOURNAL'));
    const done = new Promise<void>((res, rej) => this.queue.push({ line: line ?? '', settle: (err) => (err ? rej(err) : res()) }));
    if (!this.draining) {
      this.draining = true;
      this.writing = this.drain();
    }
    return done;
  }

  /** Writes queued lines in batches, one fdatasync per batch. */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0);
        const text = batch.map((b) => b.line).join('');
        try {
          if (this.mustCompact || this.lines + batch.length > COMPACT_SLACK + 4 * this.records.size) await this.rewrite();
          else if (text !== '') await this.append(text, batch.length);
          for (const b of batch) b.settle();
        } catch (e) {
          const err = new TocfsError(`cannot write the store's use counts to ${this.opts.file}: ${(e as Error).message} (free space or fix the permissions of ${dirname(this.opts.file!)}; the next change writes every count again)`, 'EUSEJOURNAL', { cause: e });
          for (const b of batch) b.settle(err);
        }
      }
    } finally {
      // In the same turn as the last look at the queue (no await in between): a line queued after it starts a new drain.
      this.draining = false;
    }
  }

  private async append(text: string, count: number): Promise<void> {
    try {
      this.fd ??= await open(this.opts.file!, 'a', FILE_MODE);
      await this.fd.write(text);
      await this.fd.datasync();
      this.lines += count;
    } catch (e) {
      // Part of the text may have landed: the next write rewrites the journal from memory.
      this.mustCompact = true;
      await this.fd?.close().catch(() => undefined);
      this.fd = undefined;
      throw e;
    }
  }

  private async rewrite(): Promise<void> {
    const file = this.opts.file!;
    const dir = dirname(file);
    const tmp = `${file}.tmp`;
    const header = { journal: JOURNAL_NAME, version: USE_JOURNAL_VERSION, ...(this.opts.storeDir ? { store: this.opts.storeDir } : {}) };
    const text = [journalLine(header), ...[...this.records.values()].map(journalLine)].join('');
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    await this.fd?.close().catch(() => undefined);
    this.fd = undefined;
    let t: FileHandle | undefined;
    try {
      // 'w' truncates a temp file left by a compaction cut short.
      t = await open(tmp, 'w', FILE_MODE);
      await t.write(text);
      await t.sync();
      await t.close();
      t = undefined;
      await rename(tmp, file);
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch (e) {
      await t?.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    this.lines = 1 + this.records.size;
    this.mustCompact = false;
    this.log.debug({ file, layers: this.records.size }, 'use-count journal compacted');
  }
}
