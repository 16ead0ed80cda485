/**
 * `tocfs convert SOURCE oci:DIR[:tag] --format zstd:chunked|estargz`: writes a lazily
 * pullable copy of an image as a fresh OCI layout (push it with skopeo); `--profile` and
 * `--prioritize` put the files a container reads at start first.
 */
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { currentConfig } from '../../config/index.js';
import type { LayerProgress } from '../../convert/convert.js';
import { TARGET_FORMATS, type TargetFormat } from '../../convert/targets.js';
import { logger } from '../../log.js';
import { createProgress, type Progress } from '../../progress.js';
import { withExamples } from '../help.js';
import { sourceOptions, withCacheOptions, withImageOptions } from '../options.js';

interface ConvertArgs {
  source: string;
  destination: string;
  format: TargetFormat;
  'chunk-size'?: number;
  prioritize?: string[];
  profile?: string;
  'cache-dir'?: string;
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
    withExamples(
      withCacheOptions(withImageOptions(y))
        .positional('source', { type: 'string', demandOption: true, describe: 'Image to convert: oci:DIR[:tag] or [docker://]host/repo[:tag]' })
        .positional('destination', { type: 'string', demandOption: true, describe: 'New OCI layout: oci:DIR[:tag] (tag default latest)' })
        .option('format', { type: 'string', choices: TARGET_FORMATS as string[], demandOption: true, describe: 'Layer format to write' })
        .option('chunk-size', { type: 'number', describe: 'eStargz chunk size in bytes (default 4 MiB)' })
        .option('profile', {
          type: 'string',
          describe: 'Put the files of a start-up profile first, first read first (eStargz: before .prefetch.landmark, prefetched at mount): a profile file, or an image (the source itself, any reference, or sha256:…) whose profile is in the profile store under --cache-dir',
        })
        .option('prioritize', { type: 'array', string: true, describe: 'Files to put first (eStargz: before .prefetch.landmark, prefetched at mount); with --profile, after the profile\'s files' })
        .option('legacy-annotations', { type: 'boolean', default: false, describe: 'zstd:chunked: also write the io.containers.zstd-chunked.* keys, so podman 4.x / containers/storage <= 1.43 pulls partially too' }) as unknown as Argv<ConvertArgs>,
      [
        ['$0 convert docker://registry.example/app:v1 oci:/tmp/app:v1 --format zstd:chunked', 'A zstd:chunked copy, to push with skopeo copy oci:/tmp/app:v1 docker://…'],
        ['$0 convert docker://registry.example/app:v1 oci:/tmp/app:v1 --format estargz --profile docker://registry.example/app:v1', 'eStargz with what app:v1 read at start (its stored profile) first, prefetched at mount'],
        ['$0 convert oci:/srv/app:v2 oci:/srv/app-zc:v2 --format zstd:chunked --profile app-v1.profile.json', 'zstd:chunked with a profile file\'s files laid out together at the front (paths v2 lacks are skipped)'],
        ['$0 convert oci:/srv/app:v1 oci:/srv/app-esgz:v1 --format estargz --prioritize /usr/bin/app', 'eStargz with /usr/bin/app first (prefetched at mount)'],
      ],
      'Profiles: tocfs profile record/show/import, docs/profiles.md. A file is put first in every layer that holds it, after its parent directories (and a hard link after its target); paths no layer holds are skipped with one warning.',
    ),
  handler: async (argv) => {
    // A bar per layer on a terminal, log lines (every 10 s) otherwise; then the layer's result line.
    let bar: { index: number; progress: Progress } | undefined;
    const { convertImage } = await import('../../convert/convert.js');
    const result = await convertImage(argv.source, argv.destination, {
      format: argv.format,
      ...(argv['chunk-size'] !== undefined ? { chunkSize: argv['chunk-size'] } : {}),
      ...(argv.prioritize?.length ? { prioritize: argv.prioritize } : {}),
      ...(argv.profile !== undefined ? { profile: argv.profile, cacheDir: resolve(currentConfig().values['cache.dir']), log: logger() } : {}),
      ...(argv['legacy-annotations'] ? { legacyAnnotations: true } : {}),
      source: sourceOptions(argv),
      onProgress: (p) => {
        if (bar?.index !== p.index) bar = { index: p.index, progress: createProgress({ label: `${layerName(p)} (uncompressed)` }) };
        if (!p.written) return bar.progress.update(p.bytes);
        bar.progress.done();
        process.stderr.write(progressLine(p));
      },
    });
    if (result.profile) {
      const p = result.profile;
      process.stderr.write(`start-up profile ${p.source}: ${p.placed} of ${p.files} files placed first${p.skipped.length ? ` (${p.skipped.length} not in the image)` : ''}\n`);
    }
    process.stdout.write(`${result.destination} ${result.manifestDigest}\n`);
  },
};
