/**
 * Throughput of LayerReader.readAt over a real docker-registry on loopback.
 *
 *   node --import tsx scripts/bench-fetch.ts [--format zstd:chunked|estargz] [--size-mb 128] [--content binaries|random]
 *     [--read-kb 128] [--read-ahead-mb 8] [--in-flight 8]
 *
 * Builds a one-file image (content: the machine's own /usr binaries and libraries, or random
 * bytes), serves it from docker-registry, then reads the file sequentially the way FUSE does
 * (one read of --read-kb at a time): cold (empty cache), warm (memory tier) and warm from
 * disk (a new cache over the same directory). Prints MB/s of file content and requests made.
 */
import { readdir, readFile, rm, mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ChunkCache } from '../src/cache/chunk-cache.js';
import { sha256 } from '../src/digest.js';
import { LayerReader } from '../src/fetch/layer-reader.js';
import { readLayerToc } from '../src/formats/index.js';
import type { TocEntry } from '../src/formats/toc.js';
import { openImageSource } from '../src/image/open.js';
import { ReadCounter } from '../src/source/counting.js';
import { buildImage, seededContent, type ContentSource } from '../test/helpers/images.js';
import { startRegistry } from '../test/helpers/registry.js';
import { isolatedRegistryOptions } from '../test/helpers/registry-env.js';

const { values: args } = parseArgs({
  options: {
    format: { type: 'string', default: 'zstd:chunked' },
    'size-mb': { type: 'string', default: '128' },
    content: { type: 'string', default: 'binaries' },
    'read-kb': { type: 'string', default: '128' },
    'read-ahead-mb': { type: 'string', default: '8' },
    'in-flight': { type: 'string', default: '8' },
  },
});
const size = Number(args['size-mb']) * 1024 * 1024;
const readSize = Number(args['read-kb']) * 1024;

/** Real executables and libraries from this machine, concatenated to `size` bytes. */
async function binaries(total: number): Promise<ContentSource> {
  const files: string[] = [];
  for (const dir of ['/usr/bin', '/usr/lib/x86_64-linux-gnu', '/usr/lib']) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name);
      const st = await stat(p).catch(() => undefined);
      if (st?.isFile() && st.size > 4096) files.push(p);
    }
  }
  return {
    size: total,
    async *chunks() {
      let left = total;
      for (let i = 0; left > 0; i = (i + 1) % files.length) {
        const b = await readFile(files[i]!).catch(() => undefined);
        if (!b) continue;
        const piece = b.subarray(0, Math.min(b.length, left));
        left -= piece.length;
        yield piece;
      }
    },
  };
}

async function timeRead(reader: LayerReader, entry: TocEntry): Promise<{ mbps: number; digest: string }> {
  const t0 = process.hrtime.bigint();
  const parts: Buffer[] = [];
  for (let off = 0; off < entry.size; off += readSize) parts.push(await reader.readAt(entry, off, readSize));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { mbps: entry.size / 1e6 / secs, digest: sha256(parts) };
}

const tmp = await mkdtemp(join(tmpdir(), 'tocfs-bench-fetch-'));
const reg = await startRegistry();
try {
  const content = args.content === 'random' ? seededContent('bench', size) : await binaries(size);
  const format = args.format as 'zstd:chunked' | 'estargz';
  const img = await buildImage(join(tmp, 'img'), { format, layers: [[{ path: 'big.bin', content }]] });
  await reg.load(img.dir, 'bench');
  const src = await openImageSource(`docker://${reg.host}/bench:latest`, { tlsVerify: false, registry: await isolatedRegistryOptions(join(tmp, 'conf')) });
  const desc = (await src.resolve()).layers[0]!;
  const toc = await readLayerToc(desc, src.blob(desc));
  const entry = toc.entries.find((e) => e.path === 'big.bin')!;
  const dir = join(tmp, 'cache');
  const run = async (label: string, cache: ChunkCache) => {
    const counter = new ReadCounter();
    const reader = new LayerReader({
      layerDigest: desc.digest,
      toc,
      blob: counter.wrap(src.blob(desc)),
      cache,
      readAhead: Number(args['read-ahead-mb']) * 1024 * 1024,
      maxInFlight: Number(args['in-flight']),
    });
    const r = await timeRead(reader, entry);
    if (r.digest !== entry.digest) throw new Error(`${label}: wrong content`);
    console.log(`${label.padEnd(10)} ${r.mbps.toFixed(0).padStart(6)} MB/s  ${counter.requests} requests, ${(counter.bytes / 1e6).toFixed(1)} MB fetched`);
    return reader;
  };
  console.log(`${format}, ${(size / 1e6).toFixed(0)} MB of ${args.content}, layer ${(desc.size / 1e6).toFixed(1)} MB, ${entry.chunks.length} chunks, reads of ${readSize / 1024} KiB`);
  const cache = await ChunkCache.open({ dir, memoryBytes: 2 * size });
  await run('cold', cache);
  await run('warm', cache);
  await cache.flush();
  await run('warm-disk', await ChunkCache.open({ dir, memoryBytes: 2 * size }));
  await src.close();
} finally {
  await reg.stop();
  await rm(tmp, { recursive: true, force: true });
}
