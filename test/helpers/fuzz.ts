/**
 * A seeded mutation fuzzer for every parser that reads untrusted bytes: layer footers, TOCs
 * (the JSON, and the zstd frame / gzip member around it), layer annotations, chunk frames,
 * manifests, indexes and configs, and plain (TOC-less) layers. Shared by test/fuzz.test.ts
 * (a fixed seed, a few thousand cases) and scripts/fuzz (long runs).
 *
 * Inputs are real: layers, manifests and indexes from the corpus and images made by the
 * project's own writers. Each case is derived from (seed, index) alone, so any case can be
 * re-run with `scripts/fuzz --seed S --case I`.
 *
 * The oracle: a parser either succeeds with a result that is consistent (paths normalised
 * inside the root, links resolvable, chunks inside the data region and covering the file,
 * sizes within the limits; extracted bytes match their digest) or throws one of the project's
 * errors (TocfsError) with a short message. A TypeError, RangeError, plain Error or anything
 * else is a failure, as is an error message too long to read.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { isDigest, sha256 } from '../../src/digest.js';
import { TocfsError } from '../../src/errors.js';
import { extractChunk, probeLayer, readLayerToc } from '../../src/formats/index.js';
import { indexPlainLayer } from '../../src/formats/plain.js';
import { decodePlainIndex, encodePlainIndex } from '../../src/formats/plain-index.js';
import { DEFAULT_TOC_LIMITS, type Chunk, type LayerToc, type TocLimits } from '../../src/formats/toc.js';
import { hostPlatform, parseConfig, parseManifestDocument, selectPlatform } from '../../src/source/manifest.js';
import { buildLayerTree, mergeLayers, type FsTree } from '../../src/image/tree.js';
import type { Descriptor } from '../../src/source/types.js';
import { CORPUS_DIR, corpusImages, HAVE_CORPUS, loadExpected } from './corpus.js';
import { buildImage, seededBytes, type FileSpec } from './images.js';
import { memoryBlob, repackRaw, tocText, type TestLayer } from './toc-repack.js';
import { skippableFrame } from '../../src/formats/writer/common.js';

// ---------------------------------------------------------------------------------------
// Randomness

/** xorshift32 over a seed mixed with sha256, so neighbouring seeds give unrelated streams. */
export class Rng {
  private s: number;
  constructor(seed: number | string) {
    const h = createHash('sha256').update(String(seed)).digest();
    this.s = h.readUInt32LE(0) || 1;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  /** Small sizes are far more likely than large ones (log-uniform up to `max`). */
  size(max: number): number {
    return Math.floor(Math.exp(Math.log(max + 1) * (this.u32() / 0x1_0000_0000)));
  }
}

export function caseRng(seed: number, index: number): Rng {
  return new Rng(`${seed}/${index}`);
}

// ---------------------------------------------------------------------------------------
// Byte mutations

const INTERESTING_U64 = [0n, 1n, 7n, 8n, 0x7fn, 0xffn, 0xffffn, 0x7fffffffn, 0xffffffffn, 0x1_0000_0000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

export function mutateBytes(rng: Rng, input: Buffer, region?: { start: number; end: number }): Buffer {
  let b = Buffer.from(input);
  const rounds = 1 + rng.size(7);
  for (let r = 0; r < rounds; r++) {
    const start = region ? Math.min(region.start, b.length) : 0;
    const end = region ? Math.min(region.end, b.length) : b.length;
    const at = start + rng.int(Math.max(1, end - start));
    switch (rng.int(9)) {
      case 0: // bit flip
        if (at < b.length) b[at] ^= 1 << rng.int(8);
        break;
      case 1: // interesting byte
        if (at < b.length) b[at] = rng.pick([0, 1, 0x7f, 0x80, 0xff, 0x20, 0x30, 0x39, 0x22, 0x5c]);
        break;
      case 2: // random bytes over a range
        for (let i = 0, n = rng.size(64); i < n && at + i < b.length; i++) b[at + i] = rng.int(256);
        break;
      case 3: {
        // interesting little-endian u64 (footer fields, frame sizes)
        if (at + 8 <= b.length) b.writeBigUInt64LE(BigInt.asUintN(64, rng.pick(INTERESTING_U64) + BigInt(rng.int(3)) - 1n), at);
        break;
      }
      case 4: // insert
        b = Buffer.concat([b.subarray(0, at), rng.chance(0.5) ? Buffer.alloc(rng.size(256), rng.int(256)) : seededBytes(rng.u32(), rng.size(256)), b.subarray(at)]);
        break;
      case 5: // delete
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.size(256)))]);
        break;
      case 6: // truncate
        b = rng.chance(0.5) ? b.subarray(0, at) : b.subarray(Math.min(at, b.length));
        break;
      case 7: {
        // duplicate a range elsewhere
        const len = rng.size(512);
        const from = rng.int(Math.max(1, b.length - len));
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
        break;
      }
      default: {
        // interesting u32 (zstd block headers, skippable frame lengths)
        if (at + 4 <= b.length) b.writeUInt32LE(rng.pick([0, 1, 0x7fffffff, 0xffffffff, 0x184d2a50, 0xfd2fb528, b.length, 0x20000]) >>> 0, at);
      }
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------
// JSON mutations

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Container = Json[] | { [k: string]: Json };
type Slot = { parent: Container; key: string | number };

const HUGE_NUMBERS = [-1, -0.5, 0.5, 1.5, 1e21, -1e21, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 2 ** 32, 2 ** 31 - 1, -(2 ** 53), 4e9, Number.MIN_VALUE];
const PATHS = [
  '../etc/passwd', '../../../../etc/shadow', '/etc/passwd', '/', '//x', 'a/../../b', './../x', '.', './', '', '..', 'a/./b//c/', 'a\u0000b',
  'link/passwd', 'link/../../x', 'link/../etc/passwd', '.wh..wh..opq', 'etc/.wh.passwd', '.wh.etc', '.wh.', '.wh..', 'a/.wh..wh..opq',
  '\u00e9t\u00e9/caf\u00e9', '\ud800', 'x'.repeat(300), ('d/'.repeat(2000)) + 'f', 'stargz.index.json', '.prefetch.landmark', '.no.prefetch.landmark',
];
const LINKS = ['/etc', '/', '../../..', '..', 'link', '/etc/passwd', 'a/../../../b', '', '.', 'x'.repeat(5000), '/proc/self/root'];

/** Largest mutated document (characters). */
const MAX_DOC = 12 << 20;

/** Every container slot in `root` (breadth first, capped) for picking a mutation site. */
function slots(root: Json, cap = 5000): Slot[] {
  const out: Slot[] = [];
  const queue: Container[] = [];
  if (root !== null && typeof root === 'object') queue.push(root);
  while (queue.length > 0 && out.length < cap) {
    const c = queue.shift()!;
    const keys: Array<string | number> = Array.isArray(c) ? c.map((_, i) => i) : Object.keys(c);
    for (const k of keys) {
      out.push({ parent: c, key: k });
      const v = (c as Record<string | number, Json>)[k];
      if (v !== null && typeof v === 'object') queue.push(v);
    }
  }
  return out;
}

function get(s: Slot): Json {
  return (s.parent as Record<string | number, Json>)[s.key]!;
}
function set(s: Slot, v: Json): void {
  (s.parent as Record<string | number, Json>)[s.key] = v;
}

function deepValue(rng: Rng): { placeholder: string; text: string } {
  const depth = 1 + rng.size(200_000);
  const arr = rng.chance(0.5);
  const text = arr ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
  return { placeholder: `__FUZZ_DEEP_${rng.u32()}__`, text };
}

/** A mutated copy of a JSON document (as text: duplicate keys and deep nesting need text). */
export function mutateJsonText(rng: Rng, text: string, opts: { nameKeys?: string[] } = {}): string {
  try {
    return mutateParsed(rng, text, opts);
  } catch (e) {
    // A document nested too deeply for the mutator's own recursion (structuredClone,
    // JSON.stringify): mutate its bytes instead.
    if (!(e instanceof RangeError)) throw e;
    return mutateBytes(rng, Buffer.from(text)).toString('utf8');
  }
}

function mutateParsed(rng: Rng, text: string, opts: { nameKeys?: string[] }): string {
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch {
    return mutateBytes(rng, Buffer.from(text)).toString('utf8');
  }
  const textPatches: Array<{ placeholder: string; text: string }> = [];
  const rounds = 1 + rng.size(5);
  let bulky = false;
  for (let r = 0; r < rounds; r++) {
    const all = slots(doc);
    if (all.length === 0) break;
    const s = rng.pick(all);
    const v = get(s);
    const nameKey = typeof s.key === 'string' && (opts.nameKeys ?? ['name', 'linkName']).includes(s.key);
    let op = nameKey && rng.chance(0.6) ? 100 : rng.int(14);
    // One bulky mutation per document: a giant string inside many shared copies would make
    // a document of gigabytes (the mutator, not the parser, would hang).
    if (op === 5 || op === 9) {
      if (bulky) op = 8;
      bulky = true;
    }
    switch (op) {
      case 0:
        set(s, typeof v === 'number' ? rng.pick(HUGE_NUMBERS) : rng.pick(HUGE_NUMBERS));
        break;
      case 1: // swap type
        set(s, rng.pick<Json>([null, true, 0, '', '1', [], {}, [v], { v }, String(v)]));
        break;
      case 2: // delete
        if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
        else delete s.parent[s.key as string];
        break;
      case 3: {
        // duplicate key (the later one differs)
        if (!Array.isArray(s.parent)) {
          const placeholder = `__FUZZ_DUP_${rng.u32()}__`;
          const other = JSON.stringify(typeof v === 'number' ? v + 1 : typeof v === 'string' ? v + 'x' : null);
          textPatches.push({ placeholder, text: `${JSON.stringify(v)},${JSON.stringify(s.key)}:${other}` });
          set(s, placeholder);
        }
        break;
      }
      case 4: {
        const p = deepValue(rng);
        textPatches.push(p);
        set(s, p.placeholder);
        break;
      }
      case 5: // giant string
        set(s, rng.pick(['A', '/', '../', '\u00e9', '\\u0000']).repeat(rng.size(4 << 20)));
        break;
      case 6: // duplicate an array element (entries: the same name twice)
        if (Array.isArray(s.parent)) s.parent.splice(rng.int(s.parent.length + 1), 0, structuredClone(v));
        break;
      case 7: // swap two array elements (order: hard links before targets, chunks away from files)
        if (Array.isArray(s.parent) && s.parent.length > 1) {
          const j = rng.int(s.parent.length);
          const k = s.key as number;
          [s.parent[k], s.parent[j]] = [s.parent[j]!, s.parent[k]!];
        }
        break;
      case 8: // numbers near the original
        if (typeof v === 'number') set(s, v + rng.pick([-1, 1, -v - 1, v, 4096, 1 << 20, 2 ** 40]));
        break;
      case 9: // many copies (absurd counts)
        if (Array.isArray(s.parent)) {
          const unit = (JSON.stringify(v) ?? '').length + 1;
          const n = Math.min(rng.size(50_000), Math.floor(MAX_DOC / 2 / unit));
          for (let i = 0; i < n; i++) s.parent.push(v);
        }
        break;
      case 10: // rename a key
        if (!Array.isArray(s.parent)) {
          delete s.parent[s.key as string];
          s.parent[rng.pick(['Name', 'entries ', 'type', 'digest', 'size', '__proto__', 'constructor', 'version'])] = v;
        }
        break;
      case 11: // hostile entry next to this one (entries arrays: objects with "name")
        if (Array.isArray(s.parent) && v !== null && typeof v === 'object' && !Array.isArray(v) && 'name' in v) {
          const base = String(v.name);
          const extra: Json[] = rng.pick<Json[]>([
            [{ type: 'symlink', name: 'link', linkName: rng.pick(LINKS) }, { type: 'reg', name: 'link/passwd', size: 0 }],
            [{ type: 'hardlink', name: `${base}.hl`, linkName: base }, { type: 'hardlink', name: `${base}.hl2`, linkName: `${base}.hl` }],
            [{ type: 'hardlink', name: 'cyc-a', linkName: 'cyc-b' }, { type: 'hardlink', name: 'cyc-b', linkName: 'cyc-a' }],
            [{ type: 'reg', name: '.wh.' + base.split('/').pop(), size: 0 }, { type: 'hardlink', name: 'after-wh', linkName: base }],
            [{ type: 'dir', name: base }],
            [{ type: 'char', name: 'dev/evil', devMajor: 2 ** 40, devMinor: -1 }],
            [{ type: 'reg', name: rng.pick(PATHS), size: 1, offset: 0, endOffset: 1, digest: sha256(Buffer.from('x')) }],
          ]);
          s.parent.splice((s.key as number) + 1, 0, ...extra);
        }
        break;
      case 12: // type swap between entry kinds
        set(s, rng.pick(['reg', 'dir', 'symlink', 'hardlink', 'chunk', 'char', 'block', 'fifo', 'sparse', '']));
        break;
      case 100:
        set(s, s.key === 'linkName' && rng.chance(0.5) ? rng.pick(LINKS) : rng.pick(PATHS));
        break;
      default: // prototype-ish keys and odd values
        if (!Array.isArray(s.parent)) s.parent[rng.pick(['__proto__', 'xattrs', 'chunkType', 'endOffset', 'innerOffset'])] = rng.pick<Json>([{ 'user.x': 'AAAA' }, 'zeros', 1e300, -5, { __proto__: 1 } as unknown as Json]);
    }
  }
  // Keep documents within what a case may cost (giant strings copied many times).
  let out: string;
  try {
    out = JSON.stringify(doc) ?? 'null';
  } catch {
    out = '';
  }
  if (out.length === 0 || out.length > MAX_DOC) return mutateBytes(rng, Buffer.from(text)).toString('utf8');
  for (const p of textPatches) out = out.replace(JSON.stringify(p.placeholder), () => p.text);
  return out;
}

// ---------------------------------------------------------------------------------------
// Seeds

export interface LayerSeed {
  /** Where it came from, for reports. */
  origin: string;
  layer: TestLayer;
  json: string;
  toc: LayerToc;
  /** The other layers of its image (below it), for merged trees. */
  below: LayerToc[];
  kind: 'zstd' | 'gzip';
}

export interface DocSeed {
  origin: string;
  bytes: Buffer;
  mediaType?: string;
  kind: 'index' | 'manifest' | 'config';
}

export interface PlainSeed {
  origin: string;
  layer: TestLayer;
}

export interface Seeds {
  layers: LayerSeed[];
  docs: DocSeed[];
  plain: PlainSeed[];
  bombs: { zstdFrame: Buffer; gzipMember: Buffer };
  cleanup(): Promise<void>;
}

/** Corpus layers small enough to re-pack quickly (the TOC of the large ones is fuzzed too, less often). */
const MAX_SEED_LAYER = 4 << 20;

/** A zstd frame of `blocks` RLE blocks of 128 KiB each: 4 bytes of input per 128 KiB of output. */
export function zstdRleBomb(blocks: number, declaredSize?: bigint): Buffer {
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd])];
  if (declaredSize !== undefined) {
    parts.push(Buffer.from([0xc0]), Buffer.from([0x58])); // 8-byte content size, window descriptor 2^21 ... no single segment
    const fcs = Buffer.alloc(8);
    fcs.writeBigUInt64LE(declaredSize);
    parts.push(fcs);
  } else parts.push(Buffer.from([0x00, 0x38])); // no content size, window 128 KiB
  for (let i = 0; i < blocks; i++) {
    const last = i === blocks - 1 ? 1 : 0;
    const h = ((128 * 1024) << 3) | (1 << 1) | last;
    parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0x41]));
  }
  return Buffer.concat(parts);
}

async function writerImages(dir: string, docs: DocSeed[]): Promise<Array<{ origin: string; layers: TestLayer[] }>> {
  const lower: FileSpec[] = [
    { path: 'etc', type: 'dir' },
    { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
    { path: 'etc/big.bin', content: seededBytes('fuzz-big', 200_000) },
    { path: 'etc/hl', type: 'hardlink', linkName: 'etc/passwd' },
    { path: 'etc/hl2', type: 'hardlink', linkName: 'etc/hl' },
    { path: 'link', type: 'symlink', linkName: '/etc' },
    { path: 'up', type: 'symlink', linkName: '../../..' },
    { path: 'opq', type: 'dir' },
    { path: 'opq/a', content: 'a' },
    { path: 'dev', type: 'dir' },
    { path: 'dev/null', type: 'char', devMajor: 1, devMinor: 3 },
    { path: 'x', content: 'x', xattrs: { 'user.k': Buffer.from([0, 1, 2]) } },
  ];
  const upper: FileSpec[] = [
    { path: 'etc', type: 'dir' },
    { path: 'etc/.wh.passwd', content: '' },
    { path: 'opq', type: 'dir' },
    { path: 'opq/.wh..wh..opq', content: '' },
    { path: 'opq/b', content: 'b' },
    { path: 'link', type: 'dir' },
    { path: 'link/passwd', content: 'not the host passwd\n' },
  ];
  const out: Array<{ origin: string; layers: TestLayer[] }> = [];
  for (const format of ['zstd:chunked', 'estargz'] as const) {
    const img = await buildImage(join(dir, format.replace(':', '-')), { format, layers: [lower, upper], ...(format === 'estargz' ? { chunkSize: 16384 } : {}) });
    const layers: TestLayer[] = [];
    const blob = (digest: string): Promise<Buffer> => readFile(join(img.dir, 'blobs', 'sha256', digest.slice(7)));
    for (const d of img.layers) layers.push({ desc: d, bytes: await blob(d.digest) });
    out.push({ origin: `writer ${format}`, layers });
    docs.push({ origin: `writer ${format} index.json`, bytes: await readFile(join(img.dir, 'index.json')), kind: 'index' });
    docs.push({ origin: `writer ${format} manifest`, bytes: await blob(img.manifestDigest), kind: 'manifest' });
    docs.push({ origin: `writer ${format} config`, bytes: await blob(img.configDigest), kind: 'config' });
  }
  for (const format of ['zstd', 'gzip'] as const) {
    const plain = await buildImage(join(dir, format), { format, layers: [lower.filter((f) => f.path !== 'etc/big.bin')] });
    const d = plain.layers[0]!;
    out.push({ origin: `writer ${format} (plain)`, layers: [{ desc: d, bytes: await readFile(join(plain.dir, 'blobs', 'sha256', d.digest.slice(7))) }] });
  }
  return out;
}

function corpusLayers(): Array<{ origin: string; layers: TestLayer[] }> {
  const out: Array<{ origin: string; layers: TestLayer[] }> = [];
  for (const image of corpusImages()) {
    const expected = loadExpected(image);
    for (const [i, img] of expected.images.entries()) {
      const layers: TestLayer[] = [];
      for (const digest of img.layers) {
        const l = expected.layers[digest]!;
        if (l.size > MAX_SEED_LAYER) continue;
        layers.push({ desc: { mediaType: l.mediaType, digest, size: l.size, ...(l.annotations ? { annotations: { ...l.annotations } } : {}) }, bytes: Buffer.alloc(0) });
      }
      out.push({ origin: `${image}[${i}]`, layers });
    }
  }
  return out;
}

async function loadBlob(image: string, digest: string): Promise<Buffer> {
  return readFile(join(CORPUS_DIR, image, 'blobs', 'sha256', digest.slice(7)));
}

export async function loadSeeds(): Promise<Seeds> {
  const dir = await mkdtemp(join(tmpdir(), 'tocfs-fuzz-'));
  const layers: LayerSeed[] = [];
  const plain: PlainSeed[] = [];
  const docs: DocSeed[] = [];
  const seen = new Set<string>();
  const addImage = async (origin: string, imgLayers: TestLayer[]): Promise<void> => {
    const tocs: LayerToc[] = [];
    for (const layer of imgLayers) {
      let toc: LayerToc;
      try {
        toc = await readLayerToc(layer.desc, memoryBlob(layer));
      } catch {
        if (layer.bytes.length < 200_000 && !seen.has(layer.desc.digest)) plain.push({ origin, layer });
        seen.add(layer.desc.digest);
        continue;
      }
      if (!seen.has(layer.desc.digest)) {
        const kind = toc.compression;
        layers.push({ origin, layer, json: await tocText(layer), toc, below: [...tocs], kind });
      }
      seen.add(layer.desc.digest);
      tocs.push(toc);
    }
  };
  if (HAVE_CORPUS) {
    for (const { origin, layers: ls } of corpusLayers()) {
      const image = origin.slice(0, origin.lastIndexOf('['));
      for (const l of ls) l.bytes = await loadBlob(image, l.desc.digest);
      await addImage(origin, ls);
    }
    for (const image of corpusImages()) {
      const index = await readFile(join(CORPUS_DIR, image, 'index.json'));
      docs.push({ origin: `${image}/index.json`, bytes: index, kind: 'index' });
      const expected = loadExpected(image);
      for (const img of expected.images) {
        docs.push({ origin: `${image} manifest`, bytes: await loadBlob(image, img.manifest_digest), kind: 'manifest' });
        docs.push({ origin: `${image} config`, bytes: await loadBlob(image, img.config_digest), kind: 'config' });
      }
      // Multi-platform images: the index the layout's index.json points at.
      for (const m of JSON.parse(index.toString()).manifests as Descriptor[]) {
        if (m.mediaType.includes('index') || m.mediaType.includes('list')) docs.push({ origin: `${image} image index`, bytes: await loadBlob(image, m.digest), kind: 'index', mediaType: m.mediaType });
      }
    }
  }
  for (const { origin, layers: ls } of await writerImages(dir, docs)) await addImage(origin, ls);
  return {
    layers,
    docs,
    plain,
    bombs: { zstdFrame: zstdRleBomb(8192), gzipMember: gzipSync(Buffer.alloc(64 << 20), { level: 9 }) },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

// ---------------------------------------------------------------------------------------
// The oracle

export class OracleFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OracleFailure';
  }
}

function check(ok: boolean, msg: () => string): void {
  if (!ok) throw new OracleFailure(msg());
}

const MAX_MESSAGE = 4096;

/** A thrown error is acceptable when it is one of the project's own, with a message a user can read. */
export function checkError(e: unknown, mustName?: string): string {
  if (e instanceof OracleFailure) throw e;
  check(e instanceof TocfsError, () => `not a TocfsError: ${(e as Error)?.name}: ${String((e as Error)?.message).slice(0, 500)}\n${String((e as Error)?.stack).slice(0, 1500)}`);
  const m = (e as Error).message;
  check(m.length > 0 && m.length <= MAX_MESSAGE, () => `error message of ${m.length} characters: ${m.slice(0, 300)}…`);
  if (mustName) check(m.includes(mustName), () => `error does not name ${mustName}: ${m.slice(0, 300)}`);
  return m;
}

function normalisedPath(p: string): boolean {
  if (p === '') return true;
  if (p.includes('\0') || p.startsWith('/') || p.endsWith('/')) return false;
  return p.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

/** What a successfully read TOC must satisfy, whatever the input was. */
export function checkToc(toc: LayerToc, limits: TocLimits, blobSize: number): void {
  check(toc.entries.length <= limits.maxEntries, () => `${toc.entries.length} entries`);
  check(toc.tocUncompressedLength <= limits.maxUncompressedTocBytes, () => `TOC of ${toc.tocUncompressedLength} bytes`);
  const dataEnd = toc.compression === 'zstd' ? toc.tocOffset - 8 : toc.tocOffset;
  check(Number.isSafeInteger(toc.tocOffset) && toc.tocOffset >= 0 && toc.tocOffset <= blobSize, () => `tocOffset ${toc.tocOffset}`);
  const seen = new Map<string, number>();
  Array.from(toc.entries).forEach((e, i) => {
    check(normalisedPath(e.path), () => `entry path ${JSON.stringify(e.path.slice(0, 200))} is not normalised inside the root`);
    check(!seen.has(e.path) || e.type === 'dir', () => `duplicate ${e.path}`);
    seen.set(e.path, i);
    check(e.mode >= 0 && e.mode <= 0o7777, () => `mode ${e.mode}`);
    for (const id of [e.uid, e.gid]) check(Number.isSafeInteger(id) && id >= 0 && id <= 0xffffffff, () => `id ${id}`);
    if (e.path === '') check(e.type === 'dir', () => 'root not a dir');
    if (e.type === 'hardlink') {
      const t = seen.get(e.linkName ?? '\0');
      check(normalisedPath(e.linkName ?? '\0') && t !== undefined && t < i && toc.entries.at(t)!.type !== 'dir', () => `hard link ${e.path} -> ${e.linkName}`);
    }
    if (e.type === 'symlink') check(typeof e.linkName === 'string' && e.linkName.length > 0 && !e.linkName.includes('\0'), () => `symlink ${e.path}`);
    if (e.type === 'reg') {
      check(Number.isSafeInteger(e.size) && e.size >= 0, () => `size ${e.size}`);
      let covered = 0;
      for (const c of e.chunks) {
        check(c.offset === covered && c.size > 0 && isDigest(c.digest), () => `chunk of ${e.path} at ${c.offset}`);
        check(c.compressedOffset >= 0 && c.compressedOffset < c.compressedEnd && c.compressedEnd <= dataEnd, () => `chunk range [${c.compressedOffset}, ${c.compressedEnd}) of ${e.path}, data ends at ${dataEnd}`);
        check(Number.isSafeInteger(c.innerOffset) && c.innerOffset >= 0, () => `innerOffset ${c.innerOffset}`);
        covered += c.size;
      }
      check(covered === e.size, () => `chunks of ${e.path} cover ${covered} of ${e.size}`);
    } else check(e.chunks.length === 0 && e.size === 0, () => `${e.type} ${e.path} with content`);
  });
}

/** The most names a tree of `toc` can have: one per path component (implicit directories included). */
function namesIn(toc: LayerToc): number {
  let n = 0;
  for (const e of toc.entries) n += e.path.split('/').length;
  return n;
}

/** A built tree: every name normalised, symlinks resolve inside the root, inodes bounded. */
export function checkTree(tree: FsTree, maxNodes: number): void {
  let names = 0;
  for (const { path, node } of tree.walk()) {
    check(normalisedPath(path), () => `tree path ${JSON.stringify(path.slice(0, 200))}`);
    check(++names <= maxNodes, () => `tree has more than ${maxNodes} names`);
    if (node.entry.type === 'symlink') {
      const r = tree.resolve(path);
      if ('node' in r) check(normalisedPath(r.path) && tree.lookup(r.path) === r.node, () => `symlink ${path} resolves to ${r.path}`);
      for (const probe of ['passwd', '../../../../etc/passwd', '..']) {
        const q = tree.resolve(`${path}/${probe}`);
        if ('node' in q) check(normalisedPath(q.path) && tree.lookup(q.path) === q.node, () => `${path}/${probe} resolves to ${q.path}`);
      }
    }
  }
  check(tree.inodeCount <= names, () => `${tree.inodeCount} inodes for ${names} names`);
}

// ---------------------------------------------------------------------------------------
// Targets

export interface CaseOutcome {
  target: string;
  origin: string;
  /** 'ok' (consistent result) or 'error' (a clear error); the oracle throws otherwise. */
  outcome: 'ok' | 'error';
  message?: string;
}

/** What a failing case fed to the parser, written out for reproduction. */
export interface CaseInput {
  files: Record<string, Buffer | string>;
  /** When the parser was handed the input (the mutation before it is not what is measured). */
  parseStart?: { ms: number; rss: number };
}

function parsing(input: CaseInput): void {
  input.parseStart = { ms: performance.now(), rss: process.memoryUsage.rss() };
}

const zstdAnn = (a: Record<string, string>): { pos?: string; sum?: string } => {
  const pk = Object.keys(a).find((k) => k.endsWith('zstd-chunked.manifest-position'));
  const sk = Object.keys(a).find((k) => k.endsWith('zstd-chunked.manifest-checksum'));
  return { ...(pk ? { pos: pk } : {}), ...(sk ? { sum: sk } : {}) };
};

/** Reads the TOC the way mounts do, then (for a share of the successes) builds trees and extracts chunks. */
async function readAndCheck(rng: Rng, seed: LayerSeed, layer: TestLayer, input: CaseInput, opts: { allowUnverified?: boolean; limits?: Partial<TocLimits> } = {}): Promise<CaseOutcome> {
  const target = 'readLayerToc';
  input.files['layer.bin'] = layer.bytes;
  input.files['descriptor.json'] = JSON.stringify(layer.desc, null, 1);
  const limits = { ...DEFAULT_TOC_LIMITS, ...opts.limits };
  parsing(input);
  let toc: LayerToc;
  try {
    toc = await readLayerToc(layer.desc, memoryBlob(layer), { ...opts, limits });
  } catch (e) {
    return { target, origin: seed.origin, outcome: 'error', message: checkError(e, layer.desc.digest) };
  }
  checkToc(toc, limits, layer.bytes.length);
  // Trees: the layer's own (both whiteout forms) and merged over the layers below it.
  try {
    const maxNodes = [toc, ...seed.below].reduce((n, t) => n + namesIn(t), 16);
    checkTree(mergeLayers([...seed.below, toc]), maxNodes);
    checkTree(buildLayerTree(toc, 0, { whiteouts: rng.chance(0.5) ? 'overlay' : 'files' }), maxNodes);
  } catch (e) {
    return { target: 'tree', origin: seed.origin, outcome: 'error', message: checkError(e) };
  }
  // Chunks: extract a few from the (possibly mutated) blob; bytes must match their digest.
  const files = Array.from(toc.entries).filter((e) => e.chunks.length > 0);
  for (let i = 0; i < 3 && files.length > 0; i++) {
    const f = rng.pick(files);
    const c = rng.pick(f.chunks);
    const what = `layer ${layer.desc.digest} ${f.path}`;
    try {
      const data = await extractChunk(toc.compression, c, layer.bytes.subarray(c.compressedOffset, c.compressedEnd), what);
      check(data.length === c.size && sha256(data) === c.digest, () => `extractChunk returned unverified bytes for ${f.path}`);
    } catch (e) {
      return { target: 'extractChunk', origin: seed.origin, outcome: 'error', message: checkError(e, f.path) };
    }
  }
  return { target, origin: seed.origin, outcome: 'ok' };
}

async function fuzzTocJson(rng: Rng, seed: LayerSeed, input: CaseInput): Promise<CaseOutcome> {
  const json = mutateJsonText(rng, seed.json);
  input.files['toc.json'] = json;
  const layer = await repackRaw(seed.layer, Buffer.from(json));
  return readAndCheck(rng, seed, layer, input);
}

async function fuzzTocFrame(rng: Rng, seed: LayerSeed, input: CaseInput, bombs: Seeds['bombs']): Promise<CaseOutcome> {
  const l = seed.layer;
  const a = l.desc.annotations ?? {};
  if (seed.kind === 'zstd' && zstdAnn(a).pos) {
    const [o, c] = a[zstdAnn(a).pos!]!.split(':').map(Number) as [number, number];
    const original = l.bytes.subarray(o, o + c);
    // Either mutate the compressed bytes, or compress mutated JSON with a frame that lies.
    let compressed: Buffer;
    const choice = rng.int(4);
    if (choice === 0) compressed = rng.chance(0.5) ? zstdRleBomb(1 + rng.size(4096)) : zstdRleBomb(1 + rng.size(64), BigInt(rng.pick([1 << 30, 2 ** 40, 150 << 20])));
    else if (choice === 1) compressed = await zstdCompress(Buffer.from(mutateJsonText(rng, seed.json)), 1);
    else compressed = mutateBytes(rng, original);
    if (compressed.length === 0) compressed = Buffer.from([0]);
    input.files['toc.zst'] = compressed;
    const layer = await repackRaw(l, Buffer.from(seed.json), compressed);
    if (rng.chance(0.3)) {
      // The declared uncompressed length lies too.
      const k = zstdAnn(layer.desc.annotations!).pos!;
      const [po, pc] = layer.desc.annotations![k]!.split(':');
      layer.desc.annotations![k] = `${po}:${pc}:${rng.pick([0, 1, 150 << 20, (150 << 20) + 1, seed.json.length * 2, 2 ** 40])}:1`;
    }
    return readAndCheck(rng, seed, layer, input);
  }
  // eStargz: the member is gzip(tar(stargz.index.json)). Mutate the gzip bytes, or the tar
  // inside, and read with the annotation (digest mismatch) or without (footer probing).
  const off = parseInt(l.bytes.toString('latin1', l.bytes.length - 35, l.bytes.length - 19), 16);
  const member = l.bytes.subarray(off, l.bytes.length - 51);
  let newMember: Buffer;
  const choice = rng.int(3);
  if (choice === 0) newMember = mutateBytes(rng, member);
  else if (choice === 1) newMember = rng.chance(0.5) ? bombs.gzipMember : gzipSync(Buffer.alloc(1 << 20));
  else {
    const tar = gunzipSync(member);
    newMember = gzipSync(mutateBytes(rng, tar, { start: 0, end: 512 }));
  }
  input.files['toc-member.gz'] = newMember;
  const bytes = Buffer.concat([l.bytes.subarray(0, off), newMember, l.bytes.subarray(l.bytes.length - 51)]);
  const desc: Descriptor = { ...l.desc, size: bytes.length, digest: sha256(bytes) };
  const unverified = rng.chance(0.5);
  if (unverified) desc.annotations = {};
  return readAndCheck(rng, seed, { desc, bytes }, input, { allowUnverified: unverified });
}

async function fuzzTail(rng: Rng, seed: LayerSeed, input: CaseInput): Promise<CaseOutcome> {
  const l = seed.layer;
  const span = 1 + rng.size(Math.min(l.bytes.length, 8192));
  const bytes = mutateBytes(rng, l.bytes, { start: l.bytes.length - span, end: l.bytes.length });
  const desc: Descriptor = { ...l.desc, size: bytes.length, digest: sha256(bytes) };
  const mode = rng.int(3);
  if (mode === 2) {
    input.files['layer.bin'] = bytes;
    parsing(input);
    try {
      const probe = await probeLayer(desc, memoryBlob({ desc, bytes }));
      check(typeof probe.format === 'string' && typeof probe.lazy === 'boolean', () => 'probe result');
      return { target: 'probeLayer', origin: seed.origin, outcome: 'ok' };
    } catch (e) {
      return { target: 'probeLayer', origin: seed.origin, outcome: 'error', message: checkError(e) };
    }
  }
  if (mode === 1) desc.annotations = {};
  return readAndCheck(rng, seed, { desc, bytes }, input, { allowUnverified: mode === 1 });
}

async function fuzzAnnotations(rng: Rng, seed: LayerSeed, input: CaseInput): Promise<CaseOutcome> {
  const a = { ...(seed.layer.desc.annotations ?? {}) };
  const keys = Object.keys(a);
  const rounds = 1 + rng.size(3);
  for (let r = 0; r < rounds; r++) {
    const k = keys.length && rng.chance(0.8) ? rng.pick(keys) : rng.pick(['io.github.containers.zstd-chunked.manifest-position', 'io.containers.zstd-chunked.manifest-checksum', 'containerd.io/snapshot/stargz/toc.digest', 'io.github.containers.zstd-chunked.tarsplit-position', 'io.containers.estargz.uncompressed-size']);
    const v = a[k] ?? '';
    switch (rng.int(6)) {
      case 0:
        delete a[k];
        break;
      case 1:
        a[k] = v.replace(/[0-9]+/g, (m) => (rng.chance(0.5) ? m : String(rng.pick([0, 1, Number(m) + 1, Number(m) - 1, 2 ** 53, 1e16, 99999999999999999]))));
        break;
      case 2:
        a[k] = rng.pick([':', '1:2:3', '1:2:3:4:5', '-1:2:3:1', '', 'sha256:', 'sha512:' + 'a'.repeat(128), 'sha256:' + 'A'.repeat(64), ' '.repeat(10), 'x'.repeat(1 << 20)]);
        break;
      case 3:
        a[k] = mutateBytes(rng, Buffer.from(v)).toString('latin1');
        break;
      case 4: // move the key to the other annotation family
        delete a[k];
        a[k.startsWith('io.github.') ? k.replace('io.github.', 'io.') : k.replace(/^io\./, 'io.github.')] = v;
        break;
      default:
        a[k] = v === '' ? sha256(Buffer.from('x')) : v;
    }
  }
  const layer: TestLayer = { desc: { ...seed.layer.desc, annotations: a }, bytes: seed.layer.bytes };
  return readAndCheck(rng, seed, layer, input);
}

/** A chunk's compressed range mutated, or the chunk record changed: bytes come back verified or not at all. */
async function fuzzChunk(rng: Rng, seed: LayerSeed, input: CaseInput, bombs: Seeds['bombs']): Promise<CaseOutcome> {
  const files = Array.from(seed.toc.entries).filter((e) => e.chunks.length > 0);
  if (files.length === 0) return fuzzTocJson(rng, seed, input);
  const f = rng.pick(files);
  const c0 = rng.pick(f.chunks);
  const c: Chunk = { ...c0 };
  let compressed: Buffer = seed.layer.bytes.subarray(c.compressedOffset, c.compressedEnd);
  switch (rng.int(5)) {
    case 0:
      compressed = seed.kind === 'zstd' ? bombs.zstdFrame : bombs.gzipMember;
      break;
    case 1:
      c.size = rng.pick([c.size + 1, c.size * 1000, 2 ** 40, 150 << 20]);
      break;
    case 2:
      c.innerOffset = rng.pick([c.innerOffset + 1, 1 << 30, 2 ** 40]);
      break;
    default:
      compressed = mutateBytes(rng, compressed);
  }
  input.files['chunk.bin'] = compressed;
  input.files['chunk.json'] = JSON.stringify(c);
  const what = `layer ${seed.layer.desc.digest} ${f.path}`;
  parsing(input);
  try {
    const data = await extractChunk(seed.toc.compression, c, compressed, what);
    check(data.length === c.size && sha256(data) === c.digest, () => `extractChunk returned unverified bytes for ${f.path}`);
    return { target: 'extractChunk', origin: seed.origin, outcome: 'ok' };
  } catch (e) {
    return { target: 'extractChunk', origin: seed.origin, outcome: 'error', message: checkError(e, f.path) };
  }
}

const TS_POS = 'io.github.containers.zstd-chunked.tarsplit-position';
const TS_SUM = 'io.github.containers.zstd-chunked.tarsplit-checksum';

/**
 * tar-split (c/storage ≥ 1.44 layers): its JSON lines mutated and the layer re-packed with
 * every digest and position right again (TOC `tarSplitDigest`, annotations, v3 footer), so
 * the tar-split parser sees the mutation.
 */
async function fuzzTarSplit(rng: Rng, seed: LayerSeed, input: CaseInput): Promise<CaseOutcome> {
  const l = seed.layer;
  const a = l.desc.annotations ?? {};
  if (!a[TS_POS] || !a['io.github.containers.zstd-chunked.manifest-position']) return fuzzTocJson(rng, seed, input);
  const [tsOff, tsLen] = a[TS_POS]!.split(':').map(Number) as [number, number];
  const lines = (await zstdDecompress(l.bytes.subarray(tsOff, tsOff + tsLen))).toString('utf8').split('\n');
  for (let r = 0, n = 1 + rng.size(4); r < n; r++) {
    const i = rng.int(lines.length);
    lines[i] = rng.chance(0.3)
      ? rng.pick(['null', '[]', '5', '"x"', '{}', '{"type":2}', '{"type":1,"size":-1}', '{"type":1,"size":1e300}', '{"type":2,"payload":"QQ="}', '{"type":[[[[1]]]]}', '['.repeat(100_000) + ']'.repeat(100_000), 'x'.repeat(rng.size(1 << 20))])
      : mutateJsonText(rng, lines[i]!, { nameKeys: ['name', 'payload'] });
  }
  const tsJson = Buffer.from(lines.join('\n'));
  const ts = await zstdCompress(tsJson, 1);
  const doc = JSON.parse(seed.json) as { tarSplitDigest?: string };
  if (doc.tarSplitDigest !== undefined) doc.tarSplitDigest = sha256(ts);
  const json = Buffer.from(JSON.stringify(doc));
  const toc = await zstdCompress(json, 1);
  const [tocOff] = a['io.github.containers.zstd-chunked.manifest-position']!.split(':').map(Number) as [number];
  const prefix = l.bytes.subarray(0, tocOff - 8);
  const newTocOff = prefix.length + 8;
  const newTsOff = newTocOff + toc.length + 8;
  const footer = Buffer.alloc(64);
  [newTocOff, toc.length, json.length, 1, newTsOff, ts.length, tsJson.length].forEach((v, k) => footer.writeBigUInt64LE(BigInt(v), k * 8));
  footer.write('GNUlInUx', 56, 'latin1');
  const bytes = Buffer.concat([prefix, skippableFrame(toc), skippableFrame(ts), skippableFrame(footer)]);
  const annotations: Record<string, string> = { ...a, 'io.github.containers.zstd-chunked.manifest-position': `${newTocOff}:${toc.length}:${json.length}:1`, 'io.github.containers.zstd-chunked.manifest-checksum': sha256(toc), [TS_POS]: `${newTsOff}:${ts.length}:${tsJson.length}` };
  if (annotations[TS_SUM]) annotations[TS_SUM] = sha256(ts);
  input.files['tar-split.json'] = tsJson;
  return readAndCheck(rng, seed, { desc: { ...l.desc, size: bytes.length, digest: sha256(bytes), annotations }, bytes }, input);
}

/** A TocStore in memory. */
class MemoryTocStore {
  readonly map = new Map<string, Buffer>();
  async get(key: string): Promise<Buffer | undefined> {
    return this.map.get(key);
  }
  async put(key: string, raw: Buffer): Promise<void> {
    this.map.set(key, raw);
  }
}

/** What readLayerToc returns, comparable with deepEqual (Buffers as hex). */
function tocView(t: LayerToc): string {
  return JSON.stringify(t, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v));
}

/**
 * The disk TOC store is outside the chain of trust: whatever a tampered or torn entry holds,
 * reading through it must give exactly what a fresh read gives (the entry is re-verified and
 * refused when it does not fit), or a clear error.
 */
async function fuzzTocStore(rng: Rng, seed: LayerSeed, input: CaseInput): Promise<CaseOutcome> {
  const target = 'tocStore';
  const layer = seed.layer;
  const store = new MemoryTocStore();
  const fresh = await readLayerToc(layer.desc, memoryBlob(layer), { tocStore: store });
  const [key, stored] = [...store.map][0] ?? [];
  if (!key || !stored) return fuzzTocJson(rng, seed, input);
  const nl = stored.indexOf(0x0a, stored.indexOf(0x0a) + 1);
  let bytes: Buffer;
  if (rng.chance(0.6)) {
    // The header line: JSON-aware (positions, format, flags, sizes, tar-split).
    const meta = mutateJsonText(rng, stored.toString('utf8', stored.indexOf(0x0a) + 1, nl), { nameKeys: ['format', 'compression', 'layer'] });
    bytes = Buffer.concat([stored.subarray(0, stored.indexOf(0x0a) + 1), Buffer.from(meta.replace(/\n/g, ' ')), stored.subarray(nl)]);
  } else bytes = mutateBytes(rng, stored);
  store.map.set(key, bytes);
  input.files['stored-toc.bin'] = bytes;
  input.files['descriptor.json'] = JSON.stringify(layer.desc, null, 1);
  parsing(input);
  let again: LayerToc;
  try {
    again = await readLayerToc(layer.desc, memoryBlob(layer), { tocStore: store });
  } catch (e) {
    return { target, origin: seed.origin, outcome: 'error', message: checkError(e, layer.desc.digest) };
  }
  // Known limit (docs/security.md): a length derived from the tar-split is kept as stored
  // (the store keeps no tar-split to derive it again); it is only checked to be a count.
  const derived = layer.desc.annotations?.['io.containers.estargz.uncompressed-size'] === undefined && fresh.tarSplit?.digest !== undefined;
  const a = tocView(derived ? { ...again, uncompressedSize: fresh.uncompressedSize } : again);
  const f = tocView(fresh);
  if (a !== f) {
    const keys = (Object.keys(fresh) as Array<keyof LayerToc>).filter((k) => JSON.stringify(fresh[k]) !== JSON.stringify(again[k]));
    throw new OracleFailure(`a tampered TOC store entry changed the result: ${keys.map((k) => `${k}: ${JSON.stringify(fresh[k])?.slice(0, 80)} -> ${JSON.stringify(again[k])?.slice(0, 80)}`).join('; ')}`);
  }
  return { target, origin: seed.origin, outcome: 'ok' };
}

function checkDescriptor(d: Descriptor): void {
  check(typeof d.mediaType === 'string' && isDigest(d.digest) && Number.isSafeInteger(d.size) && d.size >= 0, () => `descriptor ${JSON.stringify(d).slice(0, 300)}`);
  for (const v of Object.values(d.annotations ?? {})) check(typeof v === 'string', () => 'annotation value is not a string');
  for (const u of d.urls ?? []) check(typeof u === 'string', () => 'url is not a string');
}

async function fuzzDoc(rng: Rng, seed: DocSeed, input: CaseInput): Promise<CaseOutcome> {
  const text = seed.bytes.toString('utf8');
  const bytes = rng.chance(0.8) ? Buffer.from(mutateJsonText(rng, text, { nameKeys: ['digest', 'mediaType', 'architecture', 'os'] })) : mutateBytes(rng, seed.bytes);
  input.files['document.json'] = bytes;
  const what = 'fuzz-ref sha256:0000';
  parsing(input);
  try {
    if (seed.kind === 'config') {
      const c = parseConfig(bytes, what);
      check(c !== null && typeof c === 'object', () => 'config is not an object');
      return { target: 'parseConfig', origin: seed.origin, outcome: 'ok' };
    }
    const doc = parseManifestDocument(bytes, rng.chance(0.3) ? rng.pick([undefined, 'application/vnd.oci.image.index.v1+json; charset=x', '']) : seed.mediaType, what);
    if (doc.kind === 'index') {
      doc.manifests.forEach(checkDescriptor);
      for (const want of [hostPlatform(), { os: 'linux', architecture: 'arm64' }, { os: rng.pick(['linux', 'unknown', '']), architecture: rng.pick(['amd64', 'arm', '']), variant: 'v7' }]) {
        try {
          checkDescriptor(selectPlatform(doc, want, what));
        } catch (e) {
          checkError(e, what);
        }
      }
    } else {
      doc.layers.forEach(checkDescriptor);
      checkDescriptor(doc.config);
      for (const v of Object.values(doc.annotations ?? {})) check(typeof v === 'string', () => 'manifest annotation value is not a string');
    }
    return { target: 'parseManifestDocument', origin: seed.origin, outcome: 'ok' };
  } catch (e) {
    return { target: seed.kind === 'config' ? 'parseConfig' : 'parseManifestDocument', origin: seed.origin, outcome: 'error', message: checkError(e, what) };
  }
}

/** The tar inside a plain layer mutated and compressed again (so the tar reader sees it), or the compressed bytes mutated. */
async function mutatePlain(rng: Rng, layer: TestLayer): Promise<Buffer> {
  if (rng.chance(0.3)) return mutateBytes(rng, layer.bytes);
  const gzip = layer.bytes[0] === 0x1f;
  const tar = gzip ? gunzipSync(layer.bytes) : await zstdDecompress(layer.bytes);
  // Mostly headers: the first blocks, or any 512-byte boundary.
  const block = 512 * rng.int(Math.max(1, Math.floor(tar.length / 512)));
  const mutated = mutateBytes(rng, tar, rng.chance(0.7) ? { start: block, end: block + 512 } : { start: 0, end: tar.length });
  return gzip ? gzipSync(mutated, { level: 1 }) : zstdCompress(mutated, 1);
}

async function fuzzPlain(rng: Rng, seed: PlainSeed, input: CaseInput): Promise<CaseOutcome> {
  const bytes = await mutatePlain(rng, seed.layer);
  const desc: Descriptor = { mediaType: seed.layer.desc.mediaType, size: bytes.length, digest: sha256(bytes) };
  input.files['layer.bin'] = bytes;
  let pieces = 0;
  parsing(input);
  try {
    const toc = await indexPlainLayer(desc, memoryBlob({ desc, bytes }), async () => {
      // A hostile sparse map can claim terabytes: bound the work a case may do.
      if (++pieces > 4096) throw new OracleFailure('plain layer produced more than 4096 MiB of pieces');
    });
    for (const e of toc.entries) check(normalisedPath(e.path), () => `plain entry ${e.path}`);
    try {
      checkTree(mergeLayers([toc]), namesIn(toc) + 16);
    } catch (e) {
      return { target: 'tree', origin: seed.origin, outcome: 'error', message: checkError(e) };
    }
    return { target: 'indexPlainLayer', origin: seed.origin, outcome: 'ok' };
  } catch (e) {
    return { target: 'indexPlainLayer', origin: seed.origin, outcome: 'error', message: checkError(e, desc.digest) };
  }
}

/** Indexes of the plain gzip seeds (built once per seed: the fuzzing is of the index, not of the indexer). */
const seekableIndexes = new Map<PlainSeed, { desc: Descriptor; bytes: Buffer }>();

/**
 * A published seekable index is anyone-with-push-rights' input: the honest index of a plain
 * gzip layer, its JSON mutated and its checksum made to match again, must decode to a TOC
 * whose pieces either decompress from the real blob to bytes matching their digests or fail
 * with a clear error — or be refused with one.
 */
async function fuzzSeekableIndex(rng: Rng, seed: PlainSeed, input: CaseInput): Promise<CaseOutcome> {
  const desc = seed.layer.desc;
  let honest = seekableIndexes.get(seed);
  if (!honest) {
    const toc = await indexPlainLayer(desc, memoryBlob({ desc, bytes: seed.layer.bytes }), async () => undefined, undefined, 64 * 1024);
    honest = { desc, bytes: encodePlainIndex(desc, toc) };
    seekableIndexes.set(seed, honest);
  }
  const header = honest.bytes.indexOf(0x0a, honest.bytes.indexOf(0x0a) + 1);
  const body = mutateJsonText(rng, honest.bytes.subarray(header + 1).toString(), { nameKeys: ['path', 'linkName'] });
  const meta = JSON.parse(honest.bytes.subarray(honest.bytes.indexOf(0x0a) + 1, header).toString());
  meta.body = sha256(Buffer.from(body));
  const bytes = Buffer.concat([honest.bytes.subarray(0, honest.bytes.indexOf(0x0a) + 1), Buffer.from(JSON.stringify(meta) + '\n' + body)]);
  input.files['index.bin'] = bytes;
  const what = `seekable index of ${desc.digest}`;
  parsing(input);
  let toc: LayerToc;
  try {
    toc = decodePlainIndex(desc, bytes);
  } catch (e) {
    return { target: 'decodePlainIndex', origin: seed.origin, outcome: 'error', message: checkError(e) };
  }
  let read = 0;
  for (const e of toc.entries) {
    check(normalisedPath(e.path), () => `index entry ${e.path}`);
    for (const c of e.chunks) {
      if (c.compressedOffset < 0 || c.zeros || read >= 8) continue;
      check(c.compressedOffset < c.compressedEnd && c.compressedEnd <= desc.size, () => `piece range [${c.compressedOffset}, ${c.compressedEnd}) outside the blob`);
      read++;
      try {
        const data = await extractChunk('gzip', c, seed.layer.bytes.subarray(c.compressedOffset, c.compressedEnd), what);
        check(sha256(data) === c.digest && data.length === c.size, () => 'a piece came back without matching its digest');
      } catch (err) {
        checkError(err);
      }
    }
  }
  return { target: 'decodePlainIndex', origin: seed.origin, outcome: 'ok' };
}

export const TARGETS = ['toc-json', 'toc-frame', 'tail', 'annotations', 'chunk', 'manifest', 'plain', 'toc-store', 'tar-split', 'seekable-index'] as const;
export type Target = (typeof TARGETS)[number];
const WEIGHTS: Record<Target, number> = { 'toc-json': 26, 'toc-frame': 12, tail: 12, annotations: 8, chunk: 9, manifest: 13, plain: 6, 'toc-store': 5, 'tar-split': 5, 'seekable-index': 4 };

/** Small layers are picked far more often: re-packing costs grow with the blob. */
function pickLayer(rng: Rng, seeds: Seeds): LayerSeed {
  const small = seeds.layers.filter((s) => s.layer.bytes.length < 400_000 && s.json.length < 200_000);
  return rng.chance(0.85) && small.length > 0 ? rng.pick(small) : rng.pick(seeds.layers);
}

/** Runs case `index` of `seed`; throws OracleFailure when the outcome is not acceptable. */
export async function runCase(seeds: Seeds, seed: number, index: number, input: CaseInput = { files: {} }, only?: Target): Promise<CaseOutcome> {
  const rng = caseRng(seed, index);
  let target: Target = only ?? 'toc-json';
  if (!only) {
    let r = rng.int(100);
    for (const t of TARGETS) {
      if ((r -= WEIGHTS[t]) < 0) {
        target = t;
        break;
      }
    }
  }
  switch (target) {
    case 'toc-json':
      return fuzzTocJson(rng, pickLayer(rng, seeds), input);
    case 'toc-frame':
      return fuzzTocFrame(rng, pickLayer(rng, seeds), input, seeds.bombs);
    case 'tail':
      return fuzzTail(rng, pickLayer(rng, seeds), input);
    case 'annotations':
      return fuzzAnnotations(rng, pickLayer(rng, seeds), input);
    case 'chunk':
      return fuzzChunk(rng, pickLayer(rng, seeds), input, seeds.bombs);
    case 'manifest':
      return fuzzDoc(rng, rng.pick(seeds.docs.length ? seeds.docs : [{ origin: 'none', bytes: Buffer.from('{}'), kind: 'manifest' as const }]), input);
    case 'plain':
      return seeds.plain.length ? fuzzPlain(rng, rng.pick(seeds.plain), input) : fuzzTocJson(rng, pickLayer(rng, seeds), input);
    case 'toc-store':
      return fuzzTocStore(rng, pickLayer(rng, seeds), input);
    case 'seekable-index': {
      const gzip = seeds.plain.filter((p) => p.layer.bytes[0] === 0x1f && p.layer.bytes.length < 4 << 20);
      return gzip.length ? fuzzSeekableIndex(rng, rng.pick(gzip), input) : fuzzTocJson(rng, pickLayer(rng, seeds), input);
    }
    case 'tar-split': {
      const withTarSplit = seeds.layers.filter((s) => s.layer.desc.annotations?.[TS_POS] !== undefined && s.layer.bytes.length < 400_000);
      return fuzzTarSplit(rng, withTarSplit.length ? rng.pick(withTarSplit) : pickLayer(rng, seeds), input);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Running many cases with measurements

export interface RunStats {
  cases: number;
  ok: number;
  errors: number;
  failures: Array<{ index: number; message: string; target?: string }>;
  byTarget: Record<string, { ok: number; error: number }>;
  worstMs: number;
  worstCase: number;
  worstTarget: string;
  /** Largest RSS growth across one case (MB). */
  worstRssGrowthMb: number;
  /** Peak RSS of the process (MB), from getrusage. */
  peakRssMb: number;
  /** A sample of distinct error messages (first words), to see what the parsers refused. */
  errorKinds: Map<string, number>;
  /** Time spent per target (ms). */
  msByTarget: Record<string, number>;
}

export function newStats(): RunStats {
  return { cases: 0, ok: 0, errors: 0, failures: [], byTarget: {}, worstMs: 0, worstCase: -1, worstTarget: '', worstRssGrowthMb: 0, peakRssMb: 0, errorKinds: new Map(), msByTarget: {} };
}

/** The kind of an error message with digests, numbers and quoted names blanked. */
export function errorKind(message: string): string {
  return message
    .replace(/sha256:[0-9a-f]{64}/g, 'D')
    .replace(/"(?:[^"\\]|\\.)*"/g, 'S')
    .replace(/\d+/g, 'N')
    .replace(/^layer D: /, '')
    .replace(/TOC entry (S|#N): /, 'TOC entry: ')
    .slice(0, 90);
}

export async function measuredCase(seeds: Seeds, seed: number, index: number, stats: RunStats, onFailure?: (index: number, input: CaseInput, message: string) => Promise<void>): Promise<void> {
  const input: CaseInput = { files: {} };
  const rss0 = process.memoryUsage.rss();
  const t0 = performance.now();
  let outcome: CaseOutcome | undefined;
  let failure: string | undefined;
  try {
    outcome = await runCase(seeds, seed, index, input);
  } catch (e) {
    failure = e instanceof OracleFailure ? e.message : `runner: ${(e as Error)?.stack ?? String(e)}`;
  }
  const start = input.parseStart ?? { ms: t0, rss: rss0 };
  const ms = performance.now() - start.ms;
  const grow = (process.memoryUsage.rss() - start.rss) / 1e6;
  stats.cases++;
  if (ms > stats.worstMs) {
    stats.worstMs = ms;
    stats.worstCase = index;
    stats.worstTarget = outcome?.target ?? 'failure';
  }
  stats.worstRssGrowthMb = Math.max(stats.worstRssGrowthMb, grow);
  stats.peakRssMb = process.resourceUsage().maxRSS / 1024;
  if (failure !== undefined || !outcome) {
    stats.failures.push({ index, message: failure ?? 'no outcome' });
    await onFailure?.(index, input, failure ?? 'no outcome');
    return;
  }
  stats.msByTarget[outcome.target] = (stats.msByTarget[outcome.target] ?? 0) + ms;
  const t = (stats.byTarget[outcome.target] ??= { ok: 0, error: 0 });
  if (outcome.outcome === 'ok') {
    stats.ok++;
    t.ok++;
  } else {
    stats.errors++;
    t.error++;
    const k = errorKind(outcome.message ?? '');
    stats.errorKinds.set(k, (stats.errorKinds.get(k) ?? 0) + 1);
  }
}

export function summary(stats: RunStats): string {
  return `${stats.cases} cases, ${stats.errors} clear errors, ${stats.ok} consistent successes, ${stats.failures.length} failures, worst ${stats.worstMs.toFixed(0)} ms (case ${stats.worstCase}, ${stats.worstTarget}), worst RSS growth in one case ${stats.worstRssGrowthMb.toFixed(0)} MB, peak RSS ${stats.peakRssMb.toFixed(0)} MB`;
}

export async function listFiles(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}
