/**
 * `tocfs index IMAGE [--push]`: builds the seekable index of every plain gzip layer of an image
 * (one whole, verified read per layer; docs/formats.md §5.2), keeps it in the cache so this
 * machine reads those layers lazily from then on, and with --push publishes the indexes beside
 * the image for machines that trust its repository (index.trust).
 */
import { gzipSync } from 'node:zlib';
import type { Argv, CommandModule } from 'yargs';
import { TocfsError } from '../../errors.js';
import { formatSize } from '../../units.js';
import { logger } from '../../log.js';
import { createProgress } from '../../progress.js';
import { withExamples } from '../help.js';
import { openImageOptions, sourceOptions, withCacheOptions, withImageOptions } from '../options.js';

interface IndexArgs {
  image: string;
  push: boolean;
  json: boolean;
  'cache-dir'?: string;
  'tls-verify'?: boolean;
  platform?: string;
}

interface LayerReport {
  layer: string;
  size: number;
  result: 'indexed' | 'kept' | 'has a TOC' | 'not gzip';
  entries?: number;
  checkpoints?: number;
  indexBytes?: number;
  /** Size of the index as published (gzip). */
  publishedBytes?: number;
  diffId?: string;
}

export const indexCommand: CommandModule<object, IndexArgs> = {
  command: 'index <image>',
  describe: 'Build (and with --push publish) seekable indexes of the plain gzip layers of an image, so they are pulled lazily',
  builder: (y) =>
    withExamples(
      withCacheOptions(withImageOptions(y.positional('image', { type: 'string', demandOption: true, describe: 'The image whose plain gzip layers to index' })))
        .option('push', { type: 'boolean', default: false, describe: "Publish the indexes beside the image in its registry (needs push rights; readers must trust the repository with index.trust)" })
        .option('json', { type: 'boolean', default: false, describe: 'Print what was done as JSON' }) as unknown as Argv<IndexArgs>,
      [
        ['$0 index registry.example/app:v1', 'Index the gzip layers once; mounts on this machine then read them lazily'],
        ['$0 index --push registry.example/app:v1', 'Also publish the indexes for other machines (their index.trust must name registry.example/app)'],
      ],
      'Each plain gzip layer is read once, whole, checked against its digest, and indexed: every entry, the uncompressed offset of each 1 MiB piece of every file with its sha256, and a checkpoint (bit position and 32 KiB window) every index.checkpoint_spacing of uncompressed data. Layers with a TOC (zstd:chunked, eStargz) need no index; plain zstd and tar layers get none yet. The image is not changed.',
    ),
  handler: async (argv) => {
    const { openImageSource } = await import('../../image/open.js');
    const { LayerOpener } = await import('../../layer/open.js');
    const open = openImageOptions(argv);
    const source = await openImageSource(argv.image, sourceOptions(argv));
    const reports: LayerReport[] = [];
    const indexes: Array<{ layer: string; bytes: Buffer }> = [];
    try {
      const image = await source.resolve();
      const opener = await LayerOpener.create({ ...open, cacheDir: open.cacheDir! }, logger());
      const { tocDigestsOf } = await import('../../layer/open.js');
      for (const desc of image.layers) {
        const report: LayerReport = { layer: desc.digest, size: desc.size, result: 'has a TOC' };
        reports.push(report);
        if (tocDigestsOf(desc).length > 0) continue;
        const bar = createProgress({ label: `indexing ${desc.digest.slice(7, 19)}`, total: desc.size, logger: logger() });
        const indexed = await opener.seekableIndex(source, desc, (n) => bar.update(n));
        bar.done();
        if (!indexed) {
          report.result = 'not gzip';
          continue;
        }
        const { toc, bytes, built } = indexed;
        Object.assign(report, { result: built ? 'indexed' : 'kept', entries: toc.entries.length, checkpoints: toc.checkpoints?.length ?? 0, indexBytes: bytes.length, publishedBytes: gzipSync(bytes, { level: 9 }).length, diffId: toc.uncompressedDigest });
        if (toc.checkpoints) indexes.push({ layer: desc.digest, bytes });
      }
      let pushed;
      if (argv.push) {
        if (indexes.length === 0) throw new TocfsError(`${argv.image} has no plain gzip layer to publish an index of`, 'EUSAGE');
        const { pushIndexes } = await import('../../layer/published-index.js');
        pushed = await pushIndexes({ reference: image.reference, manifestDigest: image.manifestDigest }, indexes, sourceOptions(argv));
      }
      if (argv.json) return void process.stdout.write(`${JSON.stringify({ image: image.reference, manifestDigest: image.manifestDigest, layers: reports, ...(pushed ? { pushed } : {}) }, null, 2)}\n`);
      for (const r of reports) {
        const what = r.result === 'indexed' || r.result === 'kept' ? `${r.result === 'indexed' ? 'indexed' : 'index kept from before'}: ${r.entries} entries, ${r.checkpoints} checkpoints, index ${formatSize(r.indexBytes!)} (${formatSize(r.publishedBytes!)} published, ${((100 * r.publishedBytes!) / r.size).toFixed(1)} % of the layer), DiffID ${r.diffId}` : r.result === 'has a TOC' ? 'has a TOC (lazy without an index)' : 'not gzip (no index for plain zstd or tar layers yet)';
        process.stdout.write(`${r.layer} (${formatSize(r.size)}): ${what}\n`);
      }
      if (pushed) {
        const how = pushed.findable.by === 'tag' ? `the referrers tag ${pushed.findable.tag}` : "the registry's referrers API";
        process.stdout.write(`published ${indexes.length} index${indexes.length === 1 ? '' : 'es'} to ${pushed.repository} as ${pushed.manifestDigest}, found through ${how}\n`);
      }
    } finally {
      await source.close();
    }
  },
};
