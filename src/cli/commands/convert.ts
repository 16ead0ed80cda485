/**
 * `tocfs convert SOURCE oci:DIR[:tag] --format zstd:chunked|estargz`: writes a lazily
 * pullable copy of an image as a fresh OCI layout (push it with skopeo).
 */
import type { Argv, CommandModule } from 'yargs';
import type { LayerProgress } from '../../convert/convert.js';
import { TARGET_FORMATS, type TargetFormat } from '../../convert/targets.js';
import { createProgress, type Progress } from '../../progress.js';
import { sourceOptions, withImageOptions } from '../options.js';

interface ConvertArgs {
  source: string;
  destination: string;
  format: TargetFormat;
  'chunk-size'?: number;
  prioritize?: string[];
  'legacy-annotations'?: boolean;
  'tls-verify'?: boolean;
  platform?: string;
}

const MB = 1e6;

const layerName = (p: LayerProgress): string => `layer ${p.index + 1}/${p.count} ${p.source.digest.slice(7, 19)}`;

/** The line that reports a converted layer. */
function progressLine(p: LayerProgress): string {
  const name = layerName(p);
  if (!p.written) return `${name}: ${(p.bytes / MB).toFixed(1)} MB read\n`;
  const rate = p.seconds > 0 ? p.written.uncompressedSize / MB / p.seconds : 0;
  return `${name}: ${(p.source.size / MB).toFixed(1)} MB -> ${p.written.digest.slice(7, 19)} ${(p.written.size / MB).toFixed(1)} MB ` +
    `(${(p.written.uncompressedSize / MB).toFixed(1)} MB uncompressed) in ${p.seconds.toFixed(1)} s, ${rate.toFixed(1)} MB/s\n`;
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <source> <destination>',
  describe: 'Convert an image to zstd:chunked or eStargz, written as a new OCI layout (oci:DIR[:tag])',
  builder: (y: Argv) =>
    withImageOptions(y)
      .positional('source', { type: 'string', demandOption: true, describe: 'Image to convert: oci:DIR[:tag] or [docker://]host/repo[:tag]' })
      .positional('destination', { type: 'string', demandOption: true, describe: 'New OCI layout: oci:DIR[:tag] (tag default latest)' })
      .option('format', { type: 'string', choices: TARGET_FORMATS as string[], demandOption: true, describe: 'Layer format to write' })
      .option('chunk-size', { type: 'number', describe: 'eStargz chunk size in bytes (default 4 MiB)' })
      .option('prioritize', { type: 'array', string: true, describe: 'eStargz: files to place first, before .prefetch.landmark (prefetched at mount)' })
      .option('legacy-annotations', { type: 'boolean', default: false, describe: 'zstd:chunked: also write the io.containers.zstd-chunked.* keys, so podman 4.x / containers/storage <= 1.43 pulls partially too' })
      .example('$0 convert docker://registry.example/app:v1 oci:/tmp/app:v1 --format zstd:chunked', 'A zstd:chunked copy, to push with skopeo copy oci:/tmp/app:v1 docker://…')
      .example('$0 convert oci:/srv/app:v1 oci:/srv/app-esgz:v1 --format estargz --prioritize /usr/bin/app', 'eStargz with /usr/bin/app first (prefetched at mount)') as unknown as Argv<ConvertArgs>,
  handler: async (argv) => {
    // A bar per layer on a terminal, log lines (every 10 s) otherwise; then the layer's result line.
    let bar: { index: number; progress: Progress } | undefined;
    const { convertImage } = await import('../../convert/convert.js');
    const result = await convertImage(argv.source, argv.destination, {
      format: argv.format,
      ...(argv['chunk-size'] !== undefined ? { chunkSize: argv['chunk-size'] } : {}),
      ...(argv.prioritize?.length ? { prioritize: argv.prioritize } : {}),
      ...(argv['legacy-annotations'] ? { legacyAnnotations: true } : {}),
      source: sourceOptions(argv),
      onProgress: (p) => {
        if (bar?.index !== p.index) bar = { index: p.index, progress: createProgress({ label: `${layerName(p)} (uncompressed)` }) };
        if (!p.written) return bar.progress.update(p.bytes);
        bar.progress.done();
        process.stderr.write(progressLine(p));
      },
    });
    process.stdout.write(`${result.destination} ${result.manifestDigest}\n`);
  },
};
