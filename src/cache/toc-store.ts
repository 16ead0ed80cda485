/**
 * Verified raw TOCs kept on disk between runs (`<dir>/tocs/sha256/<hex>`), keyed by the
 * digest that vouched for them. The reader re-checks what it gets back, so this store is
 * outside the chain of trust; writes are atomic like the chunk files.
 */
import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { digestHex, isDigest, sha256 } from '../digest.js';
import type { TocStore } from '../formats/toc.js';
import { logger as rootLogger } from '../log.js';
import { DIR_MODE, isDiskUnusable, isNotFound, OWN_FILE_NAME, writeAtomic } from './files.js';

export class DiskTocStore implements TocStore {
  private readonly tocDir: string;
  private readonly tmpDir: string;
  private readonly log: Logger;
  private writable = true;

  /** `dir` is the cache directory (the one ChunkCache uses). */
  constructor(dir: string, logger?: Logger) {
    this.tocDir = join(dir, 'tocs', 'sha256');
    this.tmpDir = join(dir, 'tmp');
    this.log = logger ?? rootLogger();
  }

  private path(key: string): string {
    // Keys are digests; anything else is hashed so it can never name a path outside the store.
    const hex = isDigest(key) ? digestHex(key) : digestHex(sha256(Buffer.from(key)));
    return join(this.tocDir, hex);
  }

  private async names(): Promise<string[]> {
    return (await readdir(this.tocDir).catch(() => [] as string[])).filter((n) => OWN_FILE_NAME.test(n));
  }

  /** Removes every stored TOC. */
  async clear(): Promise<void> {
    for (const n of await this.names()) await unlink(join(this.tocDir, n)).catch(() => undefined);
  }

  /** How many TOCs are stored and their bytes. */
  async usage(): Promise<{ files: number; bytes: number }> {
    const names = await this.names();
    const sizes = await Promise.all(names.map((n) => stat(join(this.tocDir, n)).then((s) => s.size, () => 0)));
    return { files: names.length, bytes: sizes.reduce((a, b) => a + b, 0) };
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (e) {
      if (!isNotFound(e)) this.log.warn({ err: e, key }, 'cannot read stored TOC');
      return undefined;
    }
  }

  async put(key: string, raw: Buffer): Promise<void> {
    if (!this.writable) return;
    try {
      await mkdir(this.tocDir, { recursive: true, mode: DIR_MODE });
      await mkdir(this.tmpDir, { recursive: true, mode: DIR_MODE });
      await writeAtomic(this.tmpDir, this.path(key), raw);
    } catch (e) {
      if (isDiskUnusable(e)) {
        this.writable = false;
        this.log.warn({ code: (e as NodeJS.ErrnoException).code }, `cannot store TOCs in ${this.tocDir}: ${(e as Error).message}`);
      } else this.log.warn({ err: e, key }, 'cannot store TOC');
    }
  }
}
