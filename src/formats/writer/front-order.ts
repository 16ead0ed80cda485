/**
 * Which members of a layer's tar a writer puts first, and those members themselves
 * (docs/formats.md §7): the files asked for (`--prioritize`, a start-up profile) in the order
 * asked, each preceded by the parent directories the layer has for it and, for a hard link,
 * by its target — stargz-snapshotter's rule — so the tar stays valid: a directory before what
 * it holds, a hard link after what it names. Used by the eStargz writer (then
 * `.prefetch.landmark`) and the zstd:chunked writer.
 *
 * Whiteouts are never moved (no one reads them, and where a whiteout sits in its layer can
 * change what it deletes); paths the layer does not have are left out. The members that go
 * first are read in one pass over the tar (a second only when a hard-link target or its
 * parents were not asked for) and kept until written: in memory up to `memoryBytes`, past
 * that in a spool file beside the layer being written.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { normaliseName } from '../path.js';
import { tarPadding } from '../tar/header.js';
import { scanTar, type TarHeader } from '../tar/read.js';
import type { TarInput } from './types.js';

/** Past this many bytes of content held, the front members go to the spool file. */
export const FRONT_MEMORY_BYTES = 32 * 1024 * 1024;
const READ_PIECE = 1024 * 1024;
/** Hard links to hard links are followed this deep. */
const MAX_LINK_DEPTH = 64;

/** One member that goes first. */
export interface FrontMember {
  path: string;
  header: TarHeader;
  /** Its header blocks (PAX and GNU long-name blocks included), without the previous member's padding. */
  headerBytes: Buffer;
  /** Its content, read back from where it was kept. */
  content(): AsyncIterable<Buffer>;
  /** The bytes that followed its content in the source (its padding to the next 512-byte block). */
  padding: Buffer;
}

export interface FrontPlan {
  /** Normalised paths of the members that go first, in order (parents and hard-link targets included). */
  readonly paths: readonly string[];
  /** Paths that go first and that several members of the tar share (the last one is kept). */
  readonly duplicates: readonly string[];
  /** Whether the member with this (raw tar) name goes first, so the main pass leaves it out. */
  has(name: string): boolean;
  /** The members, in `paths` order. */
  members(): AsyncGenerator<FrontMember>;
  /** Removes the spool file. */
  close(): Promise<void>;
}

export interface FrontOptions {
  /** Spool file for large front members (created only when needed). */
  spoolPath: string;
  memoryBytes?: number;
}

/** A tar member name as a path, or undefined for one no layer can hold. */
export function frontPath(name: string): string | undefined {
  const n = normaliseName(name);
  return 'path' in n ? n.path : undefined;
}

function isWhiteout(path: string): boolean {
  return path.slice(path.lastIndexOf('/') + 1).startsWith('.wh.');
}

/** '' (the root, when the tar has a `./` member), then each parent directory, outermost first. */
function ancestors(path: string): string[] {
  const out = [''];
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) out.push(path.slice(0, i));
  return out;
}

/**
 * The asked-for paths, to tell whether a member is one of them or a directory on the way to
 * one, in memory and time linear in the list: a profile may hold 100,000 paths of up to 4 KiB,
 * whose every prefix as a string (or as a trie node) would not fit in memory. Sorted, the
 * paths under `dir/` are a contiguous run starting at the first one >= `dir/`.
 */
class AskedPaths {
  private readonly sorted: string[];
  private readonly exact: Set<string>;

  constructor(paths: readonly string[]) {
    this.exact = new Set(paths);
    this.sorted = [...this.exact].sort();
  }

  /** Whether `path` is asked for, or is a parent directory of one that is ('' included). */
  covers(path: string): boolean {
    if (path === '' || this.exact.has(path)) return true;
    const dir = path + '/';
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid]! < dir) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.sorted.length && this.sorted[lo]!.startsWith(dir);
  }
}

const EMPTY_PLAN: FrontPlan = {
  paths: [],
  duplicates: [],
  has: () => false,
  members: async function* () {},
  close: async () => undefined,
};

/** Where a held member's content is: in memory, or a range of the spool file. */
interface Held {
  header: TarHeader;
  headerBytes: Buffer;
  parts: Buffer[] | undefined;
  spoolOffset: number;
  size: number;
  padding: Buffer | undefined;
}

class Spool {
  private fh: FileHandle | undefined;
  private end = 0;
  private inMemory = 0;
  private readonly held = new Map<string, Held>();

  constructor(private readonly path: string, private readonly memoryBytes: number) {}

  get(path: string): Held | undefined {
    return this.held.get(path);
  }

  async add(path: string, header: TarHeader, headerBytes: Buffer, content: AsyncIterable<Buffer>): Promise<Held> {
    const h: Held = { header, headerBytes: Buffer.from(headerBytes), parts: this.fh ? undefined : [], spoolOffset: this.end, size: 0, padding: undefined };
    // Last in the map, so a spill in the middle of it keeps its bytes contiguous in the file.
    this.held.delete(path);
    this.held.set(path, h);
    for await (const piece of content) {
      const b = Buffer.from(piece);
      h.size += b.length;
      if (!h.parts) await this.append(b);
      else {
        h.parts!.push(b);
        this.inMemory += b.length;
        if (this.inMemory > this.memoryBytes) await this.spill();
      }
    }
    return h;
  }

  private async append(b: Buffer): Promise<void> {
    let at = 0;
    while (at < b.length) at += (await this.fh!.write(b, at, b.length - at, this.end + at)).bytesWritten;
    this.end += b.length;
  }

  private async moveToFile(h: Held): Promise<void> {
    h.spoolOffset = this.end;
    for (const b of h.parts!) await this.append(b);
    h.parts = undefined;
  }

  /** Everything held in memory goes to the spool file, and everything after it. */
  private async spill(): Promise<void> {
    this.fh = await open(this.path, 'w+', 0o600);
    for (const h of this.held.values()) if (h.parts) await this.moveToFile(h);
    this.inMemory = 0;
  }

  async *read(h: Held): AsyncGenerator<Buffer> {
    if (h.parts) {
      yield* h.parts;
      return;
    }
    for (let done = 0; done < h.size; ) {
      const n = Math.min(READ_PIECE, h.size - done);
      const b = Buffer.alloc(n);
      let got = 0;
      while (got < n) {
        const r = await this.fh!.read(b, got, n - got, h.spoolOffset + done + got);
        if (r.bytesRead === 0) throw new Error(`front-member spool ${this.path} ended early`);
        got += r.bytesRead;
      }
      done += n;
      yield b;
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    this.held.clear();
    if (fh) {
      await fh.close().catch(() => undefined);
      await rm(this.path, { force: true });
    }
  }
}

/**
 * Reads the tar and plans its front: `wanted` paths (with or without a leading `/`), in order,
 * each with its parents and hard-link target. Nothing wanted: no pass over the tar at all.
 */
export async function planFront(tar: TarInput, wanted: readonly string[], opts: FrontOptions): Promise<FrontPlan> {
  const asked: string[] = [];
  for (const w of wanted) {
    const p = frontPath(w.replace(/^\/+/, ''));
    if (p !== undefined && p !== '' && !isWhiteout(p)) asked.push(p);
  }
  if (asked.length === 0) return EMPTY_PLAN;
  const candidates = new AskedPaths(asked);
  const spool = new Spool(opts.spoolPath, opts.memoryBytes ?? FRONT_MEMORY_BYTES);
  try {
    const kinds = new Map<string, { type: string; link?: string }>();
    const seen = new Map<string, number>();
    const hold = async (want: (p: string) => boolean, record: boolean): Promise<void> => {
      // The padding after a held member's content arrives with the next event.
      let waitingForPadding: Held | undefined;
      for await (const ev of scanTar(tar())) {
        if (ev.kind === 'trailing') continue;
        if (waitingForPadding) waitingForPadding.padding = ev.raw.subarray(0, ev.padding);
        waitingForPadding = undefined;
        if (ev.kind !== 'entry') continue;
        const p = frontPath(ev.header.name);
        if (p === undefined) continue;
        if (record) {
          kinds.set(p, { type: ev.header.type, ...(ev.header.type === 'hardlink' ? { link: frontPath(ev.header.linkName) ?? '' } : {}) });
          seen.set(p, (seen.get(p) ?? 0) + 1);
        }
        if (want(p)) waitingForPadding = await spool.add(p, ev.header, ev.raw.subarray(ev.padding), ev.content);
      }
    };
    await hold((p) => candidates.covers(p), true);

    const order: string[] = [];
    const added = new Set<string>();
    const visiting = new Set<string>();
    const place = (p: string, depth: number): void => {
      // `visiting`: a hard-link cycle (only a crafted tar has one) ends here, each member placed once.
      if (added.has(p) || visiting.has(p) || !kinds.has(p) || isWhiteout(p) || depth > MAX_LINK_DEPTH) return;
      visiting.add(p);
      for (const a of ancestors(p)) {
        if (kinds.has(a) && !added.has(a)) {
          added.add(a);
          order.push(a);
        }
      }
      const link = kinds.get(p)!.link;
      if (link !== undefined) place(link, depth + 1);
      visiting.delete(p);
      if (added.has(p)) return;
      added.add(p);
      order.push(p);
    };
    for (const p of asked) place(p, 0);
    if (order.length === 0) {
      await spool.close();
      return EMPTY_PLAN;
    }
    // Hard-link targets (and their parents) nobody asked for: one more pass.
    if (order.some((p) => !spool.get(p))) {
      const missing = new Set(order.filter((p) => !spool.get(p)));
      await hold((p) => missing.has(p), false);
    }
    const front = new Set(order);
    return {
      paths: order,
      duplicates: order.filter((p) => (seen.get(p) ?? 0) > 1),
      has: (name) => {
        const p = frontPath(name);
        return p !== undefined && front.has(p);
      },
      members: async function* () {
        for (const path of order) {
          const h = spool.get(path)!;
          yield { path, header: h.header, headerBytes: h.headerBytes, content: () => spool.read(h), padding: h.padding ?? Buffer.alloc(tarPadding(h.size)) };
        }
      },
      close: () => spool.close(),
    };
  } catch (e) {
    await spool.close();
    throw e;
  }
}
