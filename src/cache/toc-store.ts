/**
 * Verified raw TOCs kept on disk between runs (`<dir>/tocs/sha256/<hex>`), keyed by the
 * digest that vouched for them. The reader re-checks what it gets back, so this store is
 * outside the chain of trust; writes are atomic like the chunk files.
 *
 * Beside them, parsed TOCs (`<dir>/tocs/parsed/<hex>`, formats/toc-binary.ts): derived data no
 * digest covers, so each carries an HMAC-SHA256 under a key only this cache's owner holds
 * (`<dir>/tocs/parsed.key`); one that does not authenticate is never returned
 * (docs/security.md, "Parsed TOCs").
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { digestHex, isDigest, sha256 } from '../digest.js';
import type { TocStore } from '../formats/toc.js';
import { logger as rootLogger } from '../log.js';
import { DIR_MODE, FILE_MODE, isDiskUnusable, isNotFound, OWN_FILE_NAME, writeAtomic } from './files.js';

/** Where parsed TOCs are kept; only authenticated bytes come back from `getParsed`. */
export interface ParsedTocStore {
  /** The payload stored under `name`, if it is there and its MAC checks out. */
  getParsed(name: string): Promise<Buffer | undefined>;
  putParsed(name: string, payload: Buffer): Promise<void>;
}

const MAC_LENGTH = 32;
const KEY_LENGTH = 32;

export class DiskTocStore implements TocStore, ParsedTocStore {
  private readonly tocDir: string;
  private readonly parsedDir: string;
  private readonly keyPath: string;
  /** The form of parsed TOCs dropStaleParsed last removed the others for. */
  private readonly formPath: string;
  private readonly tmpDir: string;
  private readonly log: Logger;
  private writable = true;
  private key: Promise<Buffer | undefined> | undefined;

  /** `dir` is the cache directory (the one ChunkCache uses). */
  constructor(dir: string, logger?: Logger) {
    this.tocDir = join(dir, 'tocs', 'sha256');
    this.parsedDir = join(dir, 'tocs', 'parsed');
    this.keyPath = join(dir, 'tocs', 'parsed.key');
    this.formPath = join(dir, 'tocs', 'parsed.form');
    this.tmpDir = join(dir, 'tmp');
    this.log = logger ?? rootLogger();
  }

  private path(key: string): string {
    // Keys are digests; anything else is hashed so it can never name a path outside the store.
    const hex = isDigest(key) ? digestHex(key) : digestHex(sha256(Buffer.from(key)));
    return join(this.tocDir, hex);
  }

  private parsedPath(name: string): string {
    return join(this.parsedDir, digestHex(sha256(Buffer.from(name))));
  }

  private async names(dir = this.tocDir): Promise<string[]> {
    return (await readdir(dir).catch(() => [] as string[])).filter((n) => OWN_FILE_NAME.test(n));
  }

  /**
   * Removes the parsed TOCs that `stale` says no reader uses any more (a form of another
   * version: formats/toc-binary.ts), judged by the first `headBytes` of their payload; how many
   * it removed. The cache remembers the `form` it last did this for
   * (`<dir>/tocs/parsed.form`), so that each new form costs one pass over the directory, not
   * one per process.
   */
  async dropStaleParsed(form: string, stale: (head: Buffer) => boolean, headBytes = 16): Promise<number> {
    if ((await readFile(this.formPath, 'utf8').catch(() => '')) === form) return 0;
    let dropped = 0;
    for (const n of await this.names(this.parsedDir)) {
      const path = join(this.parsedDir, n);
      const head = Buffer.alloc(MAC_LENGTH + headBytes);
      const got = await open(path, 'r').then(
        (fh) => fh.read(head, 0, head.length, 0).then((r) => r.bytesRead, () => 0).finally(() => fh.close()),
        () => 0,
      );
      if (got < MAC_LENGTH || !stale(head.subarray(MAC_LENGTH, got))) continue;
      if (await unlink(path).then(() => true, () => false)) dropped++;
    }
    await this.write(dirname(this.formPath), this.formPath, Buffer.from(form), this.formPath);
    return dropped;
  }

  /** Removes every stored TOC and parsed TOC (the key stays). */
  async clear(): Promise<void> {
    for (const dir of [this.tocDir, this.parsedDir]) for (const n of await this.names(dir)) await unlink(join(dir, n)).catch(() => undefined);
  }

  /** How many TOCs are stored, and the bytes they and their parsed forms take. */
  async usage(): Promise<{ files: number; bytes: number }> {
    const sizes = async (dir: string): Promise<number[]> => Promise.all((await this.names(dir)).map((n) => stat(join(dir, n)).then((s) => s.size, () => 0)));
    const raw = await sizes(this.tocDir);
    const parsed = await sizes(this.parsedDir);
    return { files: raw.length, bytes: [...raw, ...parsed].reduce((a, b) => a + b, 0) };
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
    await this.write(this.tocDir, this.path(key), raw, key);
  }

  private async write(dir: string, path: string, data: Uint8Array, key: string): Promise<void> {
    if (!this.writable) return;
    try {
      await mkdir(dir, { recursive: true, mode: DIR_MODE });
      await mkdir(this.tmpDir, { recursive: true, mode: DIR_MODE });
      await writeAtomic(this.tmpDir, path, data);
    } catch (e) {
      if (isDiskUnusable(e)) {
        this.writable = false;
        this.log.warn({ code: (e as NodeJS.ErrnoException).code }, `cannot store TOCs in ${dir}: ${(e as Error).message}`);
      } else this.log.warn({ err: e, key }, 'cannot store TOC');
    }
  }

  async getParsed(name: string): Promise<Buffer | undefined> {
    let data: Buffer;
    try {
      data = await readFile(this.parsedPath(name));
    } catch (e) {
      if (!isNotFound(e)) this.log.warn({ err: e }, 'cannot read parsed TOC');
      return undefined;
    }
    const key = await this.macKey();
    if (!key || data.length < MAC_LENGTH) return undefined;
    const payload = data.subarray(MAC_LENGTH);
    if (!timingSafeEqual(data.subarray(0, MAC_LENGTH), mac(key, payload))) {
      this.log.warn({ file: this.parsedPath(name) }, 'parsed TOC fails its MAC: not used');
      return undefined;
    }
    return payload;
  }

  async putParsed(name: string, payload: Buffer): Promise<void> {
    const key = await this.macKey();
    if (key) await this.write(this.parsedDir, this.parsedPath(name), Buffer.concat([mac(key, payload), payload]), name);
  }

  /** The MAC key, made on first use; undefined (parsed TOCs off) when it cannot be made or is not private to this user. */
  private macKey(): Promise<Buffer | undefined> {
    this.key ??= this.loadKey().catch((e: unknown) => {
      this.log.warn({ err: e, file: this.keyPath }, 'parsed TOCs off: cannot make their key');
      return undefined;
    });
    return this.key;
  }

  private async loadKey(): Promise<Buffer | undefined> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const found = await readPrivateKey(this.keyPath);
      if (typeof found === 'string') {
        this.log.warn({ file: this.keyPath, reason: found }, 'parsed TOCs off: their key file is not private to this user');
        return undefined;
      }
      if (found) return found;
      if (!this.writable) return undefined;
      // A new key: written whole under a temp name (one writeAtomic's cleanup knows), then
      // linked into place, so that of two daemons starting at once both end up with the winner's.
      await mkdir(this.tmpDir, { recursive: true, mode: DIR_MODE });
      await mkdir(join(this.keyPath, '..'), { recursive: true, mode: DIR_MODE });
      const tmp = join(this.tmpDir, `${randomBytes(32).toString('hex')}.${process.pid}.${randomBytes(4).toString('hex')}`);
      await writeFile(tmp, randomBytes(KEY_LENGTH), { mode: FILE_MODE, flag: 'wx' });
      try {
        await link(tmp, this.keyPath);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
    }
    return undefined;
  }
}

function mac(key: Buffer, payload: Buffer): Buffer {
  return createHmac('sha256', key).update(payload).digest();
}

/**
 * The key in `path`: undefined when there is none, a reason when the file is there but is not a
 * regular file of this user's, unreadable to everyone else, of the right length.
 */
async function readPrivateKey(path: string): Promise<Buffer | string | undefined> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if (isNotFound(e)) return undefined;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') return 'it is a symbolic link';
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return 'not a regular file';
    if (process.getuid && st.uid !== process.getuid()) return `owned by uid ${st.uid}`;
    if ((st.mode & 0o077) !== 0) return `mode ${(st.mode & 0o777).toString(8)} lets others in`;
    if (st.size !== KEY_LENGTH) return st.size === 0 ? 'empty' : `${st.size} bytes, not ${KEY_LENGTH}`;
    const key = Buffer.alloc(KEY_LENGTH);
    const { bytesRead } = await fh.read(key, 0, KEY_LENGTH, 0);
    return bytesRead === KEY_LENGTH ? key : 'short read';
  } finally {
    await fh.close();
  }
}
