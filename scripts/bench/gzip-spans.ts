/**
 * What a lazy start through a plain gzip layer's seekable index must fetch, by checkpoint
 * spacing: indexes the runtime image's gzip layer here (no network) at each spacing and, for the
 * files the container command opens (strace, as the benchmark finds them), adds up the blob
 * ranges tocfs reads them by — each 1 MiB piece from the last checkpoint before it to where its
 * compressed bytes end — against the union of those ranges and the index's own size.
 *
 *   node --import tsx scripts/bench/gzip-spans.ts [--work /var/tmp/tocfs-bench] [--image rt] [SPACING ...]   (default 4M 1M 256K)
 *
 * Run after the benchmark has built its images (root: strace + chroot).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openImageSource } from '../../src/image/open.js';
import { indexPlainLayer } from '../../src/formats/plain.js';
import { encodePlainIndex } from '../../src/formats/plain-index.js';
import type { LayerToc } from '../../src/formats/toc.js';
import type { Descriptor } from '../../src/source/types.js';
import { parseSize } from '../../src/units.js';
import { filesOpenedBy, realPathsIn } from './lib/frames.js';
import { READY_COMMAND } from './lib/images.js';

interface Ranges {
  pieces: number;
  plainBytes: number;
  /** One GET per distinct piece range, as the reader fetches them. */
  requestBytes: number;
  requests: number;
  /** Bytes decompressed that way: each range from its checkpoint to the end of its piece. */
  inflatedBytes: number;
  /** The union of those ranges: what a reader keeping every piece it decompresses on the way would fetch. */
  unionBytes: number;
  spans: number;
}

/** The ranges the pieces of `paths` are read by. */
function rangesOf(toc: LayerToc, paths: string[]): Ranges {
  const byPath = new Map(Array.from(toc.entries, (e) => [e.path, e]));
  const ranges = new Map<string, [number, number, number]>();
  const spans = new Set<number>();
  let pieces = 0;
  let plainBytes = 0;
  for (const p of new Set(paths)) {
    let e = byPath.get(p);
    if (e?.type === 'hardlink' && e.linkName) e = byPath.get(e.linkName);
    if (!e || e.type !== 'reg') continue;
    for (const c of e.chunks) {
      if (c.zeros || c.compressedOffset < 0) continue;
      pieces++;
      plainBytes += c.size;
      ranges.set(`${c.compressedOffset}-${c.compressedEnd}`, [c.compressedOffset, c.compressedEnd, c.innerOffset + c.size]);
      spans.add(c.compressedOffset);
    }
  }
  const sorted = [...ranges.values()].sort((a, b) => a[0] - b[0]);
  let unionBytes = 0;
  let end = -1;
  for (const [a, b] of sorted) {
    if (b <= end) continue;
    unionBytes += b - Math.max(a, end);
    end = b;
  }
  return { pieces, plainBytes, requestBytes: sorted.reduce((n, [a, b]) => n + b - a, 0), requests: sorted.length, inflatedBytes: sorted.reduce((n, r) => n + r[2], 0), unionBytes, spans: spans.size };
}

async function indexAt(layout: string, spacing: number): Promise<{ desc: Descriptor; toc: LayerToc }> {
  const source = await openImageSource(`oci:${layout}:latest`);
  try {
    const desc = (await source.resolve()).layers[0]!;
    return { desc, toc: await indexPlainLayer(desc, source.blob(desc), async () => undefined, undefined, spacing) };
  } finally {
    await source.close();
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { work: { type: 'string', default: '/var/tmp/tocfs-bench' }, image: { type: 'string', default: 'rt' } } });
  const root = join(values.work!, 'images');
  const stage = join(root, 'stage', values.image!);
  const paths = await realPathsIn(stage, await filesOpenedBy(stage, READY_COMMAND, join(values.work!, 'gzip-spans.strace')));
  const MB = (n: number): string => (n / 1e6).toFixed(1);
  console.log(`${paths.length} files opened by the container command; image ${values.image} (gzip)`);
  console.log('| checkpoint spacing | checkpoints | index MB | pieces read | their MB uncompressed | GETs (one per piece range) | MB fetched that way | MB inflated that way | union of the ranges MB | spans touched |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of positionals.length ? positionals : ['4M', '1M', '256K']) {
    const { desc, toc } = await indexAt(join(root, 'oci', `${values.image}-gzip`), parseSize(s)!);
    const r = rangesOf(toc, paths);
    console.log(`| ${s} | ${toc.checkpoints?.length ?? 0} | ${MB(encodePlainIndex(desc, toc).length)} | ${r.pieces} | ${MB(r.plainBytes)} | ${r.requests} | ${MB(r.requestBytes)} | ${MB(r.inflatedBytes)} | ${MB(r.unionBytes)} | ${r.spans} |`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
