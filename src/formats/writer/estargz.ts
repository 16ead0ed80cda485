/**
 * eStargz writer (docs/formats.md §3, §7): a concatenation of gzip members with a new member at
 * every fixed-size chunk of every regular file, a landmark file, the TOC as tar entry
 * `stargz.index.json` (with the end-of-archive blocks) in its own member, and the 51-byte
 * footer. Source header blocks are kept as they are; the source's end-of-archive and record
 * padding are replaced by the TOC entry, so the DiffID is the sha256 of the new stream.
 */
import { createHash, type Hash } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip as gzipCb } from 'node:zlib';
import { Annotations } from '../annotations.js';
import { tarPadding, TAR_EOA } from '../tar/header.js';
import { scanTar, type TarHeader } from '../tar/read.js';
import { encodeTarHeader } from '../tar/write.js';
import { checkWritable, formatRfc3339, xattrsBase64 } from './common.js';
import { frontPath, planFront, type FrontPlan } from './front-order.js';
import { OrderedFrames } from './ordered.js';
import { BlobSink } from './sink.js';
import { LayerMediaTypes, type LayerWriterOptions, type TarInput, type WrittenLayer } from './types.js';

const gzip = promisify(gzipCb);

export const DEFAULT_ESTARGZ_CHUNK_SIZE = 4 * 1024 * 1024;
export const TOC_TAR_NAME = 'stargz.index.json';
export const PREFETCH_LANDMARK = '.prefetch.landmark';
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
const LANDMARK_CONTENT = Buffer.from([0x0f]);
const STARGZ_METADATA = new Set([TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK]);

/** eStargz / stargz-snapshotter tool entries at the root of a layer. */
export function isStargzMetadata(path: string): boolean {
  return STARGZ_METADATA.has(path);
}

type TocJsonEntry = Record<string, string | number | Record<string, string>>;

/** The uncompressed stream, cut into gzip members on demand (compressed concurrently, written in order). */
class Members {
  private parts: Buffer[] = [];
  private length = 0;
  readonly diffHash: Hash = createHash('sha256');
  readonly frames: OrderedFrames;
  uncompressed = 0;

  constructor(sink: BlobSink) {
    this.frames = new OrderedFrames(sink, 4);
  }

  add(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
    this.diffHash.update(b);
    this.uncompressed += b.length;
  }

  /** Ends the current member; returns the index the next member will have. */
  async close(): Promise<number> {
    if (this.length > 0) {
      const data = Buffer.concat(this.parts);
      this.parts = [];
      this.length = 0;
      await this.frames.add(gzip(data));
    }
    return this.frames.count;
  }
}

function footer(tocOffset: number): Buffer {
  return Buffer.concat([
    Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 0x1a, 0x00, 0x53, 0x47, 0x16, 0x00]),
    Buffer.from(tocOffset.toString(16).padStart(16, '0') + 'STARGZ', 'latin1'),
    Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]),
  ]);
}

/** Go's time.Round(time.Second) (halves up), then RFC 3339; omitted for Unix 0. */
function stargzModtime(h: TarHeader): string | undefined {
  const sec = h.mtime.sec + (h.mtime.nsec >= 500_000_000 ? 1 : 0);
  return sec === 0 ? undefined : formatRfc3339({ sec, nsec: 0 });
}

/** One source member: its header blocks (without the previous member's padding) and content. */
interface Member {
  header: TarHeader;
  headerBytes: Buffer;
  content: AsyncIterable<Buffer>;
}

class EstargzWriter {
  readonly entries: TocJsonEntry[] = [];
  /** Entries whose `offset` is the start of member k, filled in by resolveOffsets(). */
  private offsetFixups: Array<[TocJsonEntry, number]> = [];
  private names = new Map<number, string>();
  /** File content bytes read so far (for progress). */
  private sourceBytes = 0;
  private groups = new Map<number, string>();
  readonly members: Members;

  constructor(sink: BlobSink, private chunkSize: number, private onProgress?: (n: number) => void) {
    this.members = new Members(sink);
  }

  /** userName/groupName only when they change for an id, as stargz-snapshotter writes them. */
  private nameIfChanged(map: Map<number, string>, id: number, name: string): string | undefined {
    if (!name || map.get(id) === name) return undefined;
    map.set(id, name);
    return name;
  }

  async add(m: Member): Promise<void> {
    const h = m.header;
    checkWritable(h);
    this.members.add(m.headerBytes);
    const e: TocJsonEntry = { name: h.name, type: h.type };
    if (h.type === 'reg') e.size = h.size;
    const mt = stargzModtime(h);
    if (mt) e.modtime = mt;
    if (h.linkName && (h.type === 'symlink' || h.type === 'hardlink')) e.linkName = h.linkName;
    if (h.mode) e.mode = h.mode;
    if (h.uid) e.uid = h.uid;
    if (h.gid) e.gid = h.gid;
    const un = this.nameIfChanged(this.names, h.uid, h.uname);
    if (un) e.userName = un;
    const gn = this.nameIfChanged(this.groups, h.gid, h.gname);
    if (gn) e.groupName = gn;
    if (h.type === 'char' || h.type === 'block') {
      if (h.devMajor) e.devMajor = h.devMajor;
      if (h.devMinor) e.devMinor = h.devMinor;
    }
    const x = xattrsBase64(h.xattrs);
    if (x) e.xattrs = x;
    if (h.type === 'reg') e.digest = ''; // filled in below; set now for stargz-snapshotter's field order
    if (h.type !== 'reg') {
      this.entries.push(e);
      for await (const _ of m.content) void _;
      return;
    }
    const fileHash = createHash('sha256');
    if (h.size === 0) {
      e.digest = 'sha256:' + fileHash.digest('hex');
      this.entries.push(e);
      return;
    }
    const first = e;
    let entry = e;
    let written = 0;
    let chunkHash: Hash | undefined;
    let chunkLeft = 0;
    const startChunk = async (): Promise<void> => {
      const member = await this.members.close();
      const remain = h.size - written;
      chunkLeft = Math.min(this.chunkSize, remain);
      entry.offset = -1;
      this.offsetFixups.push([entry, member]);
      if (written) entry.chunkOffset = written;
      if (remain >= this.chunkSize) entry.chunkSize = this.chunkSize;
      chunkHash = createHash('sha256');
    };
    const endChunk = (): void => {
      entry.chunkDigest = 'sha256:' + chunkHash!.digest('hex');
      this.entries.push(entry);
      entry = { name: h.name, type: 'chunk' };
      chunkHash = undefined;
    };
    for await (let piece of m.content) {
      this.sourceBytes += piece.length;
      fileHash.update(piece);
      while (piece.length > 0) {
        if (!chunkHash) await startChunk();
        const take = piece.subarray(0, chunkLeft);
        piece = piece.subarray(take.length);
        chunkHash!.update(take);
        this.members.add(take);
        written += take.length;
        chunkLeft -= take.length;
        if (chunkLeft === 0) endChunk();
      }
      this.onProgress?.(this.sourceBytes);
    }
    first.digest = 'sha256:' + fileHash.digest('hex');
    this.members.add(Buffer.alloc(tarPadding(h.size)));
  }

  async addLandmark(name: string): Promise<void> {
    const headerBytes = encodeTarHeader({ path: name, mode: 0, mtime: 0, size: LANDMARK_CONTENT.length });
    const header: TarHeader = { name, type: 'reg', typeflag: '0', mode: 0, uid: 0, gid: 0, uname: '', gname: '', size: 1, mtime: { sec: 0, nsec: 0 }, linkName: '', devMajor: 0, devMinor: 0, xattrs: {}, pax: {} };
    await this.add({ header, headerBytes, content: (async function* () { yield LANDMARK_CONTENT; })() });
  }

  /** After every member is written: the real offsets. */
  resolveOffsets(): void {
    for (const [e, k] of this.offsetFixups) e.offset = this.members.frames.start(k);
  }

}

export async function writeEstargzLayer(tar: TarInput, outPath: string, opts: LayerWriterOptions = {}): Promise<WrittenLayer> {
  const chunkSize = opts.chunkSize ?? DEFAULT_ESTARGZ_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`eStargz chunk size must be a positive integer, got ${chunkSize}`);
  const sink = await BlobSink.create(outPath);
  let front: FrontPlan | undefined;
  try {
    const w = new EstargzWriter(sink, chunkSize, opts.onProgress);
    // The prioritized files, with their parents and hard-link targets, then the landmark (§3.4).
    front = await planFront(tar, opts.prioritize ?? [], { spoolPath: `${outPath}.front` });
    if (front.paths.length) {
      for await (const m of front.members()) await w.add({ header: m.header, headerBytes: m.headerBytes, content: m.content() });
      await w.addLandmark(PREFETCH_LANDMARK);
    } else {
      await w.addLandmark(NO_PREFETCH_LANDMARK);
    }
    for await (const ev of scanTar(tar())) {
      if (ev.kind === 'entry') {
        const p = frontPath(ev.header.name);
        // A source that is itself eStargz: its own TOC entry and landmark are replaced.
        if (front.has(ev.header.name) || (p !== undefined && STARGZ_METADATA.has(p))) continue;
        await w.add({ header: ev.header, headerBytes: ev.raw.subarray(ev.padding), content: ev.content });
      }
    }
    await w.members.close();
    await w.members.frames.drain();
    w.resolveOffsets();
    const toc = Buffer.from(JSON.stringify({ version: 1, entries: w.entries }, null, '\t'));
    const tocOffset = sink.offset;
    w.members.add(encodeTarHeader({ path: TOC_TAR_NAME, mode: 0o644, mtime: 0, size: toc.length }));
    w.members.add(toc);
    w.members.add(Buffer.alloc(tarPadding(toc.length)));
    w.members.add(TAR_EOA);
    await w.members.close();
    await w.members.frames.drain();
    await sink.write(footer(tocOffset));
    const { digest, size } = await sink.finish();
    return {
      mediaType: LayerMediaTypes.gzip,
      digest,
      size,
      diffId: 'sha256:' + w.members.diffHash.digest('hex'),
      uncompressedSize: w.members.uncompressed,
      annotations: {
        [Annotations.stargzTocDigest]: 'sha256:' + createHash('sha256').update(toc).digest('hex'),
        [Annotations.uncompressedSize]: String(w.members.uncompressed),
      },
      ...(opts.prioritize ? { front: [...front.paths] } : {}),
    };
  } catch (e) {
    await sink.abort();
    throw e;
  } finally {
    await front?.close();
  }
}
