/**
 * Start-up profiles shared through the registry, as OCI artifacts beside the image: a manifest
 * with `artifactType` PROFILE_MEDIA_TYPE whose `subject` is the image's manifest, found by the
 * referrers API of OCI distribution 1.1 or, on registries without it, the referrers tag schema
 * (tag `sha256-<hex of the subject digest>` holding an index of the referrers).
 *
 * A published profile is anyone-with-push-rights' input: every document is bounded, its
 * digest and size checked, and the profile parsed by parseProfile; what fails is one warning
 * and no profile. Lookups that find nothing are remembered for a while, so an image's later
 * uses ask the registry nothing.
 */
import type { Logger } from 'pino';
import { isDigest } from '../digest.js';
import { ArtifactError, DigestMismatchError, TocfsError } from '../errors.js';
import { dockerReference, repositoryOf, type DockerReference } from '../reference.js';
import type { RegistryEndpoint } from '../registry/endpoint.js';
import type { SourceOptions } from '../registry/options.js';
import { artifactBlobs, newestArtifact, pushArtifact, pushError, readVerifiedBlob, referrersIndex, subjectOf, type PushedArtifact } from '../registry/referrers.js';
import type { RegistrySource } from '../registry/source.js';
import type { Descriptor } from '../source/types.js';
import { MAX_PROFILE_BYTES, parseProfile, PROFILE_MEDIA_TYPE, ProfileError, serializeProfile, type Profile } from './profile.js';
import type { FoundProfile, ImageKey } from './store.js';

/** How long a lookup that found nothing (and a registry without the referrers API) is remembered. */
export const PUBLISHED_MISS_TTL_MS = 10 * 60 * 1000;
/** Remembered misses at most (the oldest are forgotten first). */
const MAX_REMEMBERED = 10_000;

async function registrySource(ref: DockerReference, options: SourceOptions): Promise<RegistrySource> {
  const { RegistrySource } = await import('../registry/source.js');
  return new RegistrySource(ref, options);
}

// ---------------------------------------------------------------------------------------------
// Publishing

export interface PushedProfile {
  /** `registry/repository` the profile went to. */
  repository: string;
  /** Digest of the profile's artifact manifest. */
  manifestDigest: string;
  profileDigest: string;
  /** The image manifest it refers to. */
  subject: Descriptor;
  /** How readers find it: the registry's referrers API, or the referrers tag this push updated. */
  findable: PushedArtifact['findable'];
}

/**
 * Publishes `profile` to the repository of `reference` (its own registry, never a mirror) as an
 * artifact referring to the image manifest the profile was recorded on, and makes it findable:
 * by the registry's referrers API when it has one, else by the referrers tag.
 */
export async function pushProfile(reference: string, profile: Profile, sourceOptions: SourceOptions, signal?: AbortSignal): Promise<PushedProfile> {
  const ref = dockerReference(reference);
  if (!ref) throw new TocfsError(`${reference}: an OCI layout has no registry to publish a profile to; name the image by its registry reference`, 'EUSAGE');
  const profileBytes = serializeProfile(profile);
  if (profileBytes.length > MAX_PROFILE_BYTES) throw new ProfileError(`the profile is ${profileBytes.length} bytes, over the ${MAX_PROFILE_BYTES}-byte limit readers accept`);
  const source = await registrySource(ref, sourceOptions);
  try {
    // Pull mirrors are not written to: the image's own registry, as registries.conf locates it.
    const ep = (await source.endpoints()).find((e) => !e.mirror)!;
    try {
      const subject = await subjectOf(ep, profile.image.manifestDigest, 'the profile was recorded on', signal);
      const pushed = await pushArtifact(ep, subject, PROFILE_MEDIA_TYPE, [{ mediaType: PROFILE_MEDIA_TYPE, bytes: profileBytes }], signal);
      misses.delete(missKey(ref, subject.digest));
      return { repository: ep.name, manifestDigest: pushed.manifestDigest, profileDigest: pushed.blobDigests[0]!, subject, findable: pushed.findable };
    } catch (e) {
      throw pushError(e, ep);
    }
  } finally {
    await source.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Finding

/** What the finder needs of an image (PublishedProfileFinder's argument). */
export type PublishedImage = ImageKey & { reference: string };

/** Lookups that found nothing (`repository@manifest digest`), and registries without the referrers API, until when. */
const misses = new Map<string, number>();
const noReferrersApi = new Map<string, number>();
const inFlight = new Map<string, Promise<FoundProfile | undefined>>();

function missKey(ref: DockerReference, manifestDigest: string): string {
  return `${repositoryOf(ref)}@${manifestDigest}`;
}

function remembered(map: Map<string, number>, key: string): boolean {
  const until = map.get(key);
  if (until === undefined) return false;
  if (until > Date.now()) return true;
  map.delete(key);
  return false;
}

function remember(map: Map<string, number>, key: string): void {
  map.delete(key);
  map.set(key, Date.now() + PUBLISHED_MISS_TTL_MS);
  // Maps iterate in insertion order: the first key is the oldest.
  if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value!);
}

type Lookup = { found: FoundProfile } | { miss: string };

/** One endpoint's answer: the newest profile referrer, fetched, verified and parsed; or why there is none. */
async function lookupOn(ep: RegistryEndpoint, image: PublishedImage, log: Logger): Promise<Lookup> {
  const subject = image.manifestDigest;
  const askApi = !remembered(noReferrersApi, ep.registry);
  const { index, api } = await referrersIndex(ep, subject, PROFILE_MEDIA_TYPE, askApi);
  if (askApi && !api) remember(noReferrersApi, ep.registry);
  if (!index) return { miss: 'no profile published' };
  const newest = await newestArtifact(ep, index, PROFILE_MEDIA_TYPE);
  if (!newest) return { miss: 'no profile among the referrers' };
  const [blob] = artifactBlobs(newest.manifest, PROFILE_MEDIA_TYPE, subject, PROFILE_MEDIA_TYPE, MAX_PROFILE_BYTES, `profile manifest ${ep.name}@${newest.digest}`);
  const bytes = await readVerifiedBlob(ep, blob!);
  const source = `registry ${ep.name}@${newest.digest}`;
  const profile = parseProfile(bytes, source);
  if (profile.image.manifestDigest !== subject) throw new ProfileError(`profile ${source}: recorded on ${profile.image.manifestDigest}, published for ${subject}`);
  log.info({ image: image.reference, profile: source, reads: profile.reads.length, via: api ? 'referrers-api' : 'tag' }, 'found a published start-up profile');
  return { found: { profile, match: 'manifest', source } };
}

/**
 * The profile published for an image in its registry (the newest, when there are several),
 * or undefined. Registry errors are thrown (nothing is remembered); a hostile or malformed
 * profile is a warning naming it, and undefined. Only for registry references.
 */
export function findPublishedProfile(image: PublishedImage, sourceOptions: SourceOptions, log: Logger): Promise<FoundProfile | undefined> {
  let ref: DockerReference | undefined;
  try {
    ref = dockerReference(image.reference);
  } catch {
    return Promise.resolve(undefined);
  }
  if (!ref || !isDigest(image.manifestDigest)) return Promise.resolve(undefined);
  const key = missKey(ref, image.manifestDigest);
  if (remembered(misses, key)) return Promise.resolve(undefined);
  let p = inFlight.get(key);
  if (!p) {
    p = findOnce(ref, image, sourceOptions, log, key).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

/**
 * Registry clients for lookups, kept between lookups so that a repository's later lookups
 * reuse what the first one learned (plain HTTP or TLS, tokens, connections): per source
 * options (one object per daemon) and repository, the least recently used closed past MAX_CLIENTS.
 */
const clients = new WeakMap<SourceOptions, Map<string, Promise<RegistrySource>>>();
const MAX_CLIENTS = 32;

function lookupClient(ref: DockerReference, options: SourceOptions): Promise<RegistrySource> {
  let byRepository = clients.get(options);
  if (!byRepository) clients.set(options, (byRepository = new Map()));
  const key = `${ref.registry}/${ref.repository}`;
  let client = byRepository.get(key);
  byRepository.delete(key);
  // No tag or digest: the source list of a tag pull (digest-only mirrors are skipped), as fits the mutable referrers.
  client ??= registrySource({ transport: 'docker', registry: ref.registry, repository: ref.repository }, options);
  client.catch(() => byRepository.delete(key));
  byRepository.set(key, client);
  if (byRepository.size > MAX_CLIENTS) {
    const [oldest, evicted] = byRepository.entries().next().value!;
    byRepository.delete(oldest);
    void evicted.then((c) => c.close()).catch(() => undefined);
  }
  return client;
}

async function findOnce(ref: DockerReference, image: PublishedImage, sourceOptions: SourceOptions, log: Logger, key: string): Promise<FoundProfile | undefined> {
  const eps = await (await lookupClient(ref, sourceOptions)).endpoints();
  for (let i = 0; i < eps.length; i++) {
    const ep = eps[i]!;
    let result: Lookup;
    try {
      result = await lookupOn(ep, image, log);
    } catch (e) {
      if (e instanceof ArtifactError || e instanceof DigestMismatchError) {
        log.warn({ image: image.reference, registry: ep.name, reason: (e as Error).message }, 'published start-up profile not used');
        remember(misses, key);
        return undefined;
      }
      if (i === eps.length - 1) throw e;
      log.debug({ mirror: ep.name, err: (e as Error).message }, 'cannot look for a published profile on the mirror; trying the next source');
      continue;
    }
    if ('found' in result) return result.found;
    log.debug({ image: image.reference, registry: ep.name, why: result.miss }, 'no published start-up profile');
  }
  // Like a pull by tag, a source without it sends the lookup on to the next one (mirrors first).
  remember(misses, key);
  return undefined;
}
