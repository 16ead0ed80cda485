/**
 * `tocfs inspect IMAGE`: what each layer is (format, footer generation, codec, TOC position
 * and size, entry count) and whether it can be mounted lazily and verified — reading only
 * footers and TOCs, never file contents.
 */
import type { Argv, CommandModule } from 'yargs';
import { TocfsError } from '../../errors.js';
import type { LayerProbe, LayerToc } from '../../formats/index.js';
import { formatPlatform } from '../../source/manifest.js';
import { ReadCounter } from '../../source/counting.js';
import type { BlobReader, Descriptor, ResolvedImage } from '../../source/types.js';
import { sourceOptions, withImageOptions } from '../options.js';

interface InspectArgs {
  image: string;
  json: boolean;
  stats: boolean;
  'tls-verify'?: boolean;
  platform?: string;
}

/** One layer in `--json` output. Fields are always present (null when unknown). */
export interface LayerReport {
  index: number;
  digest: string;
  mediaType: string;
  /** Compressed size (the blob). */
  size: number;
  format: LayerProbe['format'];
  formatVersion: string;
  /** Codec sniffed from the blob's first bytes (not the media type). */
  compression: LayerProbe['codec'];
  lazy: boolean;
  /** The TOC is vouched for by a digest in the layer annotations (manifest digest → TOC → chunks). */
  verifiable: boolean;
  /** Why the layer is not lazy or not verifiable. */
  reason: string | null;
  toc: { offset: number; compressedLength: number; uncompressedLength: number; digest: string | null; entries: number } | null;
  uncompressedSize: number | null;
  tarSplit: { offset: number; compressedLength: number; uncompressedLength: number; digest: string | null } | null;
  prefetchEnd: number | null;
}

export interface InspectReport {
  reference: string;
  indexDigest: string | null;
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  platform: string;
  layers: LayerReport[];
  stats?: { bytesRead: number; requests: number; blobBytes: number };
}

async function inspectLayer(index: number, desc: Descriptor, blob: BlobReader): Promise<LayerReport> {
  const { probeLayer, readLayerToc } = await import('../../formats/index.js');
  const probe = await probeLayer(desc, blob);
  let toc: LayerToc | undefined;
  let reason = probe.reason ?? null;
  if (probe.lazy) {
    try {
      toc = await readLayerToc(desc, blob, { allowUnverified: true });
    } catch (e) {
      if (!(e instanceof TocfsError)) throw e;
      reason = e.message;
    }
  }
  const lazy = toc !== undefined && toc.verified;
  return {
    index,
    digest: desc.digest,
    mediaType: desc.mediaType,
    size: desc.size,
    format: toc?.format ?? probe.format,
    formatVersion: toc?.formatVersion ?? probe.formatVersion,
    compression: probe.codec,
    lazy,
    verifiable: toc?.verified ?? probe.verifiable,
    reason: lazy ? null : reason,
    toc: toc
      ? { offset: toc.tocOffset, compressedLength: toc.tocCompressedLength, uncompressedLength: toc.tocUncompressedLength, digest: toc.tocDigest ?? null, entries: toc.entries.length }
      : null,
    uncompressedSize: toc?.uncompressedSize ?? null,
    tarSplit: toc?.tarSplit ? { ...toc.tarSplit, digest: toc.tarSplit.digest ?? null } : null,
    prefetchEnd: toc?.prefetchEnd ?? null,
  };
}

export async function inspectImage(reference: string, argv: Pick<InspectArgs, 'tls-verify' | 'platform'>, counter?: ReadCounter): Promise<InspectReport> {
  const opts = sourceOptions(argv);
  const { openImageSource } = await import('../../image/open.js');
  const source = await openImageSource(reference, opts);
  try {
    const img: ResolvedImage = await source.resolve();
    const layers: LayerReport[] = [];
    for (const [i, desc] of img.layers.entries()) {
      const blob = source.blob(desc);
      layers.push(await inspectLayer(i, desc, counter ? counter.wrap(blob) : blob));
    }
    return {
      reference: img.reference,
      indexDigest: img.indexDigest ?? null,
      manifestDigest: img.manifestDigest,
      manifestMediaType: img.manifestMediaType,
      configDigest: img.configDigest,
      platform: formatPlatform(img.platform),
      layers,
    };
  } finally {
    await source.close();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

export function formatReport(r: InspectReport): string {
  let out = `Image:     ${r.reference}\n`;
  if (r.indexDigest) out += `Index:     ${r.indexDigest}\n`;
  out += `Manifest:  ${r.manifestDigest} (${r.manifestMediaType})\nConfig:    ${r.configDigest}\nPlatform:  ${r.platform}\n\n`;
  const rows = [['#', 'LAYER', 'FORMAT', 'CODEC', 'SIZE', 'TOC AT', 'TOC C/U', 'ENTRIES', 'VERIFIABLE', 'LAZY']];
  for (const l of r.layers) {
    rows.push([
      String(l.index),
      l.digest.slice(7, 19),
      l.format,
      l.compression,
      String(l.size),
      l.toc ? String(l.toc.offset) : '-',
      l.toc ? `${l.toc.compressedLength}/${l.toc.uncompressedLength}` : '-',
      l.toc ? String(l.toc.entries) : '-',
      l.verifiable ? 'yes' : 'no',
      l.lazy ? 'yes' : 'no',
    ]);
  }
  out += table(rows);
  for (const l of r.layers) {
    out += `\n#${l.index} ${l.digest}\n  ${l.mediaType}; ${l.formatVersion}`;
    if (l.uncompressedSize !== null) out += `; uncompressed ${l.uncompressedSize} B`;
    if (l.tarSplit) out += `; tar-split at ${l.tarSplit.offset} (${l.tarSplit.compressedLength}/${l.tarSplit.uncompressedLength} B)`;
    if (l.prefetchEnd !== null) out += `; prefetch [0, ${l.prefetchEnd})`;
    out += '\n';
    if (l.reason) out += `  not lazy: ${l.reason}\n`;
  }
  if (r.stats) out += `\nRead ${r.stats.bytesRead} of ${r.stats.blobBytes} layer bytes (${((100 * r.stats.bytesRead) / Math.max(1, r.stats.blobBytes)).toFixed(2)}%) in ${r.stats.requests} requests\n`;
  return out;
}

export const inspectCommand: CommandModule<object, InspectArgs> = {
  command: 'inspect <image>',
  describe: 'Show each layer\'s format, TOC and whether it can be mounted lazily (reads only footers and TOCs)',
  builder: (y: Argv) =>
    withImageOptions(y)
      .positional('image', { type: 'string', demandOption: true, describe: 'oci:DIR[:TAG] or [docker://]HOST/REPO[:TAG][@DIGEST]' })
      .option('json', { type: 'boolean', default: false, describe: 'Machine-readable output' })
      .option('stats', { type: 'boolean', default: false, describe: 'Also report the bytes and requests read from layer blobs' })
      .example('$0 inspect docker://quay.io/podman/hello', 'Which layers can be mounted lazily, and why not')
      .example('$0 inspect oci:/srv/images/app:v1 --json', 'The same as JSON, for scripts')
      .example('$0 inspect docker://registry.example/app:v1 --platform linux/arm64 --stats', 'Another platform, with the bytes read') as unknown as Argv<InspectArgs>,
  handler: async (argv) => {
    const counter = new ReadCounter();
    const report = await inspectImage(argv.image, argv, counter);
    if (argv.stats) report.stats = { bytesRead: counter.bytes, requests: counter.requests, blobBytes: report.layers.reduce((n, l) => n + l.size, 0) };
    process.stdout.write(argv.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  },
};
