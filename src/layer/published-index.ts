/**
 * Seekable indexes of plain gzip layers (formats/plain-index.ts, docs/formats.md §5.2)
 * published beside an image: one OCI artifact per image, of type SEEKABLE_INDEX_MEDIA_TYPE,
 * whose subject is the image manifest and whose blobs are the indexes of its gzip layers, each
 * annotated with the layer digest. Found through the referrers API or the referrers tag
 * (registry/referrers.ts), like start-up profiles.
 *
 * Trust: an index says what the layer holds, and anyone with push rights to the repository can
 * publish one. Indexes are looked up only for repositories that `index.trust` names; every
 * layer served from one is also checked whole in the background (layer/open.ts).
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Logger } from 'pino';
import { ArtifactError, DigestMismatchError, TocfsError } from '../errors.js';
import { dockerReference, repositoryOf } from '../reference.js';
import type { SourceOptions } from '../registry/options.js';
import { artifactBlobs, newestArtifact, pushArtifact, pushError, readVerifiedBlob, referrersIndex, subjectOf, type PushedArtifact } from '../registry/referrers.js';
import type { Descriptor } from '../source/types.js';

export const SEEKABLE_INDEX_MEDIA_TYPE = 'application/vnd.tocfs.seekable-index.v2';
/** An index blob is published gzip-compressed: windows and digests in base64 and hex compress well. */
export const SEEKABLE_INDEX_BLOB_MEDIA_TYPE = `${SEEKABLE_INDEX_MEDIA_TYPE}+gzip`;
/** The annotation of an index blob naming the layer it indexes. */
export const INDEXED_LAYER_ANNOTATION = 'io.github.tocfs.layer.digest';
/** The most an index may hold, compressed and decompressed (a 10 GiB layer with 4 MiB checkpoints needs about 110 MiB). */
export const MAX_SEEKABLE_INDEX_BYTES = 256 * 1024 * 1024;

/** Whether `repository` (`registry/path`) matches one of `patterns` (`*` within a path element, `**` across them). */
export function trustedRepository(repository: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => {
    const re = new RegExp(`^${p.split('**').map((part) => part.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')).join('.*')}$`);
    return re.test(repository);
  });
}

export interface IndexedImage {
  /** The image reference as the user named it (`docker://…`, or a bare name). */
  reference: string;
  /** Digest of the image manifest (the artifact's subject). */
  manifestDigest: string;
}

/**
 * The indexes published for one image, looked up once (at the first layer that asks) when the
 * image's repository is trusted. A lookup that fails or finds something malformed is a warning
 * and no index: the layer is then fetched whole, as without one.
 */
export class PublishedIndexes {
  private lookup: Promise<Map<string, Buffer>> | undefined;

  constructor(
    private readonly image: IndexedImage,
    private readonly trust: readonly string[],
    private readonly sourceOptions: SourceOptions,
    private readonly log: Logger,
  ) {}

  /** The repository (`registry/path`) the image's indexes are looked up in, or undefined for images not in a registry. */
  get repository(): string | undefined {
    const ref = dockerReference(this.image.reference);
    return ref ? repositoryOf(ref) : undefined;
  }

  /** The published index of `layer`, its bytes unparsed (the caller checks them against the layer). */
  async forLayer(layer: Descriptor): Promise<Buffer | undefined> {
    const repository = this.repository;
    if (!repository) return undefined;
    if (!trustedRepository(repository, this.trust)) {
      this.log.debug({ layer: layer.digest, repository }, 'published indexes not looked up: the repository is not in index.trust');
      return undefined;
    }
    this.lookup ??= this.find(repository).catch((e: unknown) => {
      this.log.warn({ image: this.image.reference, err: (e as Error).message }, 'published seekable index not used');
      return new Map<string, Buffer>();
    });
    return (await this.lookup).get(layer.digest);
  }

  private async find(repository: string): Promise<Map<string, Buffer>> {
    const ref = dockerReference(this.image.reference)!;
    const { RegistrySource } = await import('../registry/source.js');
    const source = new RegistrySource({ transport: 'docker', registry: ref.registry, repository: ref.repository }, this.sourceOptions);
    const found = new Map<string, Buffer>();
    try {
      for (const ep of await source.endpoints()) {
        const { index } = await referrersIndex(ep, this.image.manifestDigest, SEEKABLE_INDEX_MEDIA_TYPE, true).catch((e: unknown) => {
          if (e instanceof ArtifactError || e instanceof DigestMismatchError) throw e;
          this.log.debug({ source: ep.name, err: (e as Error).message }, 'cannot look for published indexes here; trying the next source');
          return { index: undefined };
        });
        const newest = index && (await newestArtifact(ep, index, SEEKABLE_INDEX_MEDIA_TYPE));
        if (!newest) continue;
        const what = `seekable index manifest ${ep.name}@${newest.digest}`;
        for (const blob of artifactBlobs(newest.manifest, SEEKABLE_INDEX_MEDIA_TYPE, this.image.manifestDigest, SEEKABLE_INDEX_BLOB_MEDIA_TYPE, MAX_SEEKABLE_INDEX_BYTES, what)) {
          const layer = blob.annotations[INDEXED_LAYER_ANNOTATION];
          if (!layer) continue;
          try {
            found.set(layer, gunzipSync(await readVerifiedBlob(ep, blob), { maxOutputLength: MAX_SEEKABLE_INDEX_BYTES }));
          } catch (e) {
            if (e instanceof DigestMismatchError) throw e;
            throw new ArtifactError(`${what}: the index of ${layer} does not decompress (${(e as Error).message})`);
          }
        }
        this.log.info({ image: this.image.reference, repository, artifact: `${ep.name}@${newest.digest}`, layers: found.size }, 'found published seekable indexes');
        return found;
      }
      return found;
    } finally {
      await source.close();
    }
  }
}

export interface PushedIndexes extends PushedArtifact {
  repository: string;
}

/** Publishes the indexes of some of an image's layers as one artifact beside the image (its own registry, never a mirror). */
export async function pushIndexes(image: IndexedImage, indexes: Array<{ layer: string; bytes: Buffer }>, sourceOptions: SourceOptions, signal?: AbortSignal): Promise<PushedIndexes> {
  const ref = dockerReference(image.reference);
  if (!ref) throw new TocfsError(`${image.reference}: only an image in a registry can have indexes published beside it`, 'EUSAGE');
  const { RegistrySource } = await import('../registry/source.js');
  const source = new RegistrySource({ transport: 'docker', registry: ref.registry, repository: ref.repository }, sourceOptions);
  try {
    const ep = (await source.endpoints()).find((e) => !e.mirror)!;
    try {
      const subject = await subjectOf(ep, image.manifestDigest, 'the indexes were built for', signal);
      const blobs = indexes.map((i) => ({ mediaType: SEEKABLE_INDEX_BLOB_MEDIA_TYPE, bytes: gzipSync(i.bytes, { level: 9 }), annotations: { [INDEXED_LAYER_ANNOTATION]: i.layer } }));
      return { repository: ep.name, ...(await pushArtifact(ep, subject, SEEKABLE_INDEX_MEDIA_TYPE, blobs, signal)) };
    } catch (e) {
      throw pushError(e, ep);
    }
  } finally {
    await source.close();
  }
}
