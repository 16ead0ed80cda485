/**
 * `tocfs convert`: re-encodes every layer of an image as zstd:chunked or eStargz into a new
 * OCI layout, with a config whose DiffIDs match the new layers. Source layers of any codec
 * are read whole (digest-checked) and decompressed by sniffing their bytes; stargz tool
 * entries of eStargz sources are dropped. `--profile` and `--prioritize` put files first in
 * every layer that has them (formats/writer/front-order.ts).
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { TocfsError } from '../errors.js';
import { openLayerStream, withoutStargzMetadata } from '../formats/plain.js';
import { writeEstargzLayer } from '../formats/writer/estargz.js';
import type { LayerWriterOptions, TarInput, WrittenLayer } from '../formats/writer/types.js';
import { writeZstdChunkedLayer } from '../formats/writer/zstd-chunked.js';
import { openImageSource, type SourceOptions } from '../image/open.js';
import { logger } from '../log.js';
import { parseReference } from '../reference.js';
import type { Descriptor } from '../source/types.js';
import { OciLayoutWriter } from './layout.js';
import { loadConvertProfile, profileFiles } from './profile.js';
import type { TargetFormat } from './targets.js';

export interface LayerProgress {
  index: number;
  count: number;
  source: Descriptor;
  /** Uncompressed source bytes processed so far. */
  bytes: number;
  /** Set once the layer is written. */
  written?: WrittenLayer;
  seconds: number;
}

export interface ConvertOptions {
  format: TargetFormat;
  /** eStargz chunk size. */
  chunkSize?: number;
  /** Files to put first (eStargz: before `.prefetch.landmark`), after the profile's. */
  prioritize?: string[];
  /** A start-up profile whose files go first: a profile file, a manifest digest, or an image whose profile is stored under `cacheDir`. */
  profile?: string;
  /** Where stored profiles are (`<cacheDir>/profiles`); needed to name a profile by image. */
  cacheDir?: string;
  /** Warnings (profile paths the image lacks) and notes; default the process logger. */
  log?: Logger;
  /** zstd:chunked: also write the annotation keys containers/storage ≤ 1.43 reads. */
  legacyAnnotations?: boolean;
  source?: SourceOptions;
  onProgress?: (p: LayerProgress) => void;
}

export interface ConvertResult {
  destination: string;
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ source: Descriptor; written: WrittenLayer; seconds: number }>;
  /** With `profile`: where it came from, its files, how many went first somewhere, and the ones skipped. */
  profile?: { source: string; files: number; placed: number; skipped: string[] };
}

const WRITERS: Record<TargetFormat, (tar: TarInput, out: string, opts: LayerWriterOptions) => Promise<WrittenLayer>> = {
  'zstd:chunked': writeZstdChunkedLayer,
  estargz: writeEstargzLayer,
};

export async function convertImage(sourceRef: string, destinationRef: string, opts: ConvertOptions): Promise<ConvertResult> {
  const dst = parseReference(destinationRef);
  if (dst.transport !== 'oci') throw new TocfsError(`convert writes OCI layouts only: give the destination as oci:DIR[:tag], not ${JSON.stringify(destinationRef)}`);
  if (await stat(dst.dir).then((s) => s.isDirectory() && true, () => false)) {
    const exists = await stat(`${dst.dir}/index.json`).then(() => true, () => false);
    if (exists) throw new TocfsError(`${dst.dir} already holds an OCI layout; convert writes a fresh one (remove it or choose another directory)`);
  }
  if (opts.chunkSize !== undefined && (!Number.isSafeInteger(opts.chunkSize) || opts.chunkSize <= 0)) throw new TocfsError(`--chunk-size must be a positive number of bytes, got ${opts.chunkSize}`);
  if (opts.chunkSize && opts.format !== 'estargz') throw new TocfsError('--chunk-size applies to eStargz only (zstd:chunked chunks by content)');
  if (opts.legacyAnnotations && opts.format !== 'zstd:chunked') throw new TocfsError('--legacy-annotations applies to zstd:chunked only');
  const log = opts.log ?? logger();
  const source = await openImageSource(sourceRef, opts.source);
  try {
    const image = await source.resolve();
    // The profile's files first (first read first), then --prioritize's; each layer places those it has.
    let profile: { source: string; paths: string[]; unusable: string[] } | undefined;
    if (opts.profile !== undefined) {
      const found = await loadConvertProfile(opts.profile, {
        sourceRef,
        sourceManifestDigest: image.manifestDigest,
        cacheDir: opts.cacheDir,
        ...(opts.source ? { sourceOptions: opts.source } : {}),
        log,
      });
      profile = { source: found.source, ...profileFiles(found.profile) };
    }
    const prioritize = [...(profile?.paths ?? []), ...(opts.prioritize ?? [])];
    const layout = new OciLayoutWriter(dst.dir);
    await layout.init();
    const layers: ConvertResult['layers'] = [];
    for (const [index, desc] of image.layers.entries()) {
      const blob = source.blob(desc);
      const started = Date.now();
      const progress = (bytes: number, written?: WrittenLayer): void =>
        opts.onProgress?.({ index, count: image.layers.length, source: desc, bytes, seconds: (Date.now() - started) / 1000, ...(written ? { written } : {}) });
      const input: TarInput = () => (async function* () {
        yield* withoutStargzMetadata((await openLayerStream(desc, blob)).tar);
      })();
      const tmp = layout.tempPath();
      try {
        const written = await WRITERS[opts.format](input, tmp, {
          ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
          ...(prioritize.length ? { prioritize } : {}),
          ...(opts.legacyAnnotations ? { legacyAnnotations: true } : {}),
          onProgress: (n) => progress(n),
        });
        await layout.adoptBlob(tmp, written.digest);
        progress(written.uncompressedSize, written);
        layers.push({ source: desc, written, seconds: (Date.now() - started) / 1000 });
      } catch (e) {
        await layout.discard(tmp);
        throw e instanceof TocfsError ? e : new TocfsError(`layer ${index + 1} (${desc.digest}): ${(e as Error).message}`, 'ECONVERT', { cause: e });
      }
    }
    let profileResult: ConvertResult['profile'];
    if (profile) {
      const placed = new Set(layers.flatMap((l) => l.written.front ?? []));
      const skipped = [...profile.unusable, ...profile.paths.filter((p) => !placed.has(p))];
      const files = profile.paths.length + profile.unusable.length;
      profileResult = { source: profile.source, files, placed: files - skipped.length, skipped };
      if (skipped.length) {
        log.warn(
          { profile: profile.source, skipped: skipped.length, files, examples: skipped.slice(0, 5) },
          `start-up profile ${profile.source}: ${skipped.length} of its ${files} files are not in ${sourceRef} (skipped)`,
        );
      }
    }
    const config = { ...image.config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.written.diffId) } };
    const out = await layout.writeImage({
      config,
      layers: layers.map((l) => ({ mediaType: l.written.mediaType, digest: l.written.digest, size: l.written.size, annotations: l.written.annotations })),
      ...(dst.tag ? { tag: dst.tag } : {}),
      platform: image.platform,
    });
    return { destination: destinationRef, manifestDigest: out.manifestDigest, configDigest: out.configDigest, layers, ...(profileResult ? { profile: profileResult } : {}) };
  } finally {
    await source.close();
  }
}
