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
import { digestHex, isDigest, sha256 } from '../digest.js';
import { DigestMismatchError, preview, SourceError, TocfsError } from '../errors.js';
import { parseReference, repositoryOf, type DockerReference } from '../reference.js';
import type { RegistryEndpoint } from '../registry/endpoint.js';
import type { SourceOptions } from '../registry/options.js';
import type { RegistrySource } from '../registry/source.js';
import { MANIFEST_ACCEPT, MediaTypes, parseManifestDocument } from '../source/manifest.js';
import type { Descriptor } from '../source/types.js';
import { MAX_PROFILE_BYTES, parseProfile, PROFILE_MEDIA_TYPE, ProfileError, serializeProfile, type Profile } from './profile.js';
import type { FoundProfile, ImageKey } from './store.js';

const EMPTY_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
const EMPTY_BYTES = Buffer.from('{}');
const CREATED = 'org.opencontainers.image.created';
/** How long a lookup that found nothing (and a registry without the referrers API) is remembered. */
export const PUBLISHED_MISS_TTL_MS = 10 * 60 * 1000;
/** Remembered misses at most (the oldest are forgotten first). */
const MAX_REMEMBERED = 10_000;

/** The referrers tag of a subject (the OCI distribution 1.1 fallback). */
export function referrersTag(subjectDigest: string): string {
  return `sha256-${digestHex(subjectDigest)}`;
}

async function registrySource(ref: DockerReference, options: SourceOptions): Promise<RegistrySource> {
  const { RegistrySource } = await import('../registry/source.js');
  return new RegistrySource(ref, options);
}

function dockerReference(reference: string): DockerReference | undefined {
  const ref = parseReference(reference);
  return ref.transport === 'docker' ? ref : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseJson(bytes: Buffer, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new ProfileError(`${what}: not JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!isObject(doc)) throw new ProfileError(`${what}: not a JSON object`);
  return doc;
}

/** A profile referrer as an index lists it; `position` orders those with the same (or no) creation time. */
interface ProfileReferrer {
  digest: string;
  size: number;
  created: number;
  position: number;
}

/** The profile manifests an index (referrers API or referrers tag) lists, newest last. */
function profileReferrers(bytes: Buffer, what: string): ProfileReferrer[] {
  const doc = parseJson(bytes, what);
  if (!Array.isArray(doc.manifests)) throw new ProfileError(`${what}: not an image index (no manifests list)`);
  const out: ProfileReferrer[] = [];
  doc.manifests.forEach((m: unknown, position) => {
    // Other tools' referrers (signatures, SBOMs) share the index: only ours count, and only well-formed.
    if (!isObject(m) || m.artifactType !== PROFILE_MEDIA_TYPE || m.mediaType !== MediaTypes.ociManifest || !isDigest(m.digest) || !isSize(m.size)) return;
    const created = isObject(m.annotations) && typeof m.annotations[CREATED] === 'string' ? Date.parse(m.annotations[CREATED]) : NaN;
    out.push({ digest: m.digest, size: m.size, created: Number.isNaN(created) ? -Infinity : created, position });
  });
  return out.sort((a, b) => a.created - b.created || a.position - b.position);
}

/** The profile blob a profile manifest names, after checking it is ours and is about `subject`. */
function profileBlob(bytes: Buffer, subject: string, what: string): Descriptor {
  const doc = parseJson(bytes, what);
  if (doc.artifactType !== PROFILE_MEDIA_TYPE) throw new ProfileError(`${what}: artifactType ${preview(doc.artifactType, 80)} is not ${PROFILE_MEDIA_TYPE}`);
  if (!isObject(doc.subject) || doc.subject.digest !== subject) throw new ProfileError(`${what}: its subject is not the image ${subject}`);
  const layer = Array.isArray(doc.layers) ? doc.layers.find((l: unknown) => isObject(l) && l.mediaType === PROFILE_MEDIA_TYPE) : undefined;
  if (!isObject(layer) || !isDigest(layer.digest) || !isSize(layer.size)) throw new ProfileError(`${what}: no ${PROFILE_MEDIA_TYPE} layer with a digest and size`);
  if (layer.size > MAX_PROFILE_BYTES) throw new ProfileError(`${what}: profile of ${layer.size} bytes, over the ${MAX_PROFILE_BYTES}-byte limit`);
  return { mediaType: PROFILE_MEDIA_TYPE, digest: layer.digest, size: layer.size };
}

async function readBlob(ep: RegistryEndpoint, desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of ep.blobRange(desc, 0, desc.size, signal)) parts.push(p);
  return Buffer.concat(parts);
}

function isNotFound(e: unknown): boolean {
  return e instanceof SourceError && e.status === 404;
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
  findable: { by: 'referrers-api' } | { by: 'tag'; tag: string; indexDigest: string; referrers: number };
}

/** The subject descriptor: the image manifest's real media type and size, from the registry it is pushed to. */
async function subjectOf(ep: RegistryEndpoint, manifestDigest: string, signal?: AbortSignal): Promise<Descriptor> {
  let m;
  try {
    m = await ep.manifest(manifestDigest, MANIFEST_ACCEPT, signal);
  } catch (e) {
    if (isNotFound(e)) throw new SourceError(`the image the profile was recorded on (${manifestDigest}) is not in ${ep.name}: push the image there first, or push the profile to the repository the image is in`, 404);
    throw e;
  }
  const actual = sha256(m.bytes);
  if (actual !== manifestDigest) throw new DigestMismatchError(`manifest ${manifestDigest} from ${ep.name}`, manifestDigest, actual);
  const doc = parseManifestDocument(m.bytes, m.mediaType, `manifest ${manifestDigest} of ${ep.name}`);
  return { mediaType: doc.mediaType, digest: manifestDigest, size: m.bytes.length };
}

/** Adds (or replaces) `entry` in the index under the referrers tag of `subject`; returns the tag, the index's digest and how many referrers it lists. */
async function updateReferrersTag(ep: RegistryEndpoint, subject: string, entry: Record<string, unknown>, signal?: AbortSignal): Promise<{ tag: string; digest: string; referrers: number }> {
  const { pushManifest } = await import('../registry/distribution.js');
  const tag = referrersTag(subject);
  let manifests: unknown[] = [];
  try {
    const existing = await ep.manifest(tag, MediaTypes.ociIndex, signal);
    const doc = parseJson(existing.bytes, `referrers tag ${ep.name}:${tag}`);
    if (!Array.isArray(doc.manifests)) throw new SourceError(`${ep.name}:${tag} holds something that is not an image index; not replacing it (remove the tag if it is stale)`);
    manifests = doc.manifests;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  // Other referrers are kept as they are; ours replaces an entry with the same digest.
  manifests = [...manifests.filter((m) => !(isObject(m) && m.digest === entry.digest)), entry];
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
  const pushed = await pushManifest(ep, tag, MediaTypes.ociIndex, index, signal);
  return { tag, digest: pushed.digest, referrers: manifests.length };
}

/** Whether the registry's referrers API lists `digest` among the referrers of `subject`. */
async function listedByReferrersApi(ep: RegistryEndpoint, subject: string, digest: string, signal?: AbortSignal): Promise<boolean> {
  const { fetchReferrers } = await import('../registry/distribution.js');
  const bytes = await fetchReferrers(ep, subject, PROFILE_MEDIA_TYPE, signal);
  if (!bytes) return false;
  try {
    return profileReferrers(bytes, `referrers of ${ep.name}@${subject}`).some((r) => r.digest === digest);
  } catch {
    return false;
  }
}

function pushError(e: unknown, ep: RegistryEndpoint): unknown {
  const status = e instanceof SourceError ? e.status : undefined;
  if (status !== 401 && status !== 403) return e;
  return new SourceError(`no push rights to ${ep.name}: log in with "podman login ${ep.registry}" as a user who may push to ${ep.repository} (${(e as Error).message})`, status, { cause: e });
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
  const { pushBlob, pushManifest } = await import('../registry/distribution.js');
  const source = await registrySource(ref, sourceOptions);
  try {
    // Pull mirrors are not written to: the image's own registry, as registries.conf locates it.
    const ep = (await source.endpoints()).find((e) => !e.mirror)!;
    try {
      const subject = await subjectOf(ep, profile.image.manifestDigest, signal);
      const emptyDigest = await pushBlob(ep, EMPTY_BYTES, signal);
      const profileDigest = await pushBlob(ep, profileBytes, signal);
      const created = new Date().toISOString();
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaTypes.ociManifest,
          artifactType: PROFILE_MEDIA_TYPE,
          config: { mediaType: EMPTY_MEDIA_TYPE, digest: emptyDigest, size: EMPTY_BYTES.length },
          layers: [{ mediaType: PROFILE_MEDIA_TYPE, digest: profileDigest, size: profileBytes.length }],
          subject,
          annotations: { [CREATED]: created },
        }),
      );
      const manifestDigest = sha256(manifest);
      const pushed = await pushManifest(ep, manifestDigest, MediaTypes.ociManifest, manifest, signal);
      misses.delete(missKey(ref, subject.digest));
      const base = { repository: ep.name, manifestDigest, profileDigest, subject };
      if (pushed.subject === subject.digest || (await listedByReferrersApi(ep, subject.digest, manifestDigest, signal))) return { ...base, findable: { by: 'referrers-api' } };
      const entry = { mediaType: MediaTypes.ociManifest, digest: manifestDigest, size: manifest.length, artifactType: PROFILE_MEDIA_TYPE, annotations: { [CREATED]: created } };
      const tag = await updateReferrersTag(ep, subject.digest, entry, signal);
      return { ...base, findable: { by: 'tag', tag: tag.tag, indexDigest: tag.digest, referrers: tag.referrers } };
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
  const { fetchReferrers } = await import('../registry/distribution.js');
  const subject = image.manifestDigest;
  let index: { bytes: Buffer; what: string } | undefined;
  if (!remembered(noReferrersApi, ep.registry)) {
    const bytes = await fetchReferrers(ep, subject, PROFILE_MEDIA_TYPE);
    if (bytes) index = { bytes, what: `referrers of ${ep.name}@${subject}` };
    else remember(noReferrersApi, ep.registry);
  }
  if (!index) {
    const tag = referrersTag(subject);
    try {
      index = { bytes: (await ep.manifest(tag, MediaTypes.ociIndex)).bytes, what: `referrers tag ${ep.name}:${tag}` };
    } catch (e) {
      if (isNotFound(e)) return { miss: 'no profile published' };
      throw e;
    }
  }
  const newest = profileReferrers(index.bytes, index.what).at(-1);
  if (!newest) return { miss: 'no profile among the referrers' };
  const what = `profile manifest ${ep.name}@${newest.digest}`;
  let m;
  try {
    m = await ep.manifest(newest.digest, MediaTypes.ociManifest);
  } catch (e) {
    if (isNotFound(e)) throw new ProfileError(`${what}: listed by ${index.what}, but not in the registry`);
    throw e;
  }
  const actual = sha256(m.bytes);
  if (actual !== newest.digest) throw new DigestMismatchError(what, newest.digest, actual);
  if (m.bytes.length !== newest.size) throw new ProfileError(`${what}: ${m.bytes.length} bytes, the index says ${newest.size}`);
  const blob = profileBlob(m.bytes, subject, what);
  const bytes = await readBlob(ep, blob);
  const blobDigest = sha256(bytes);
  if (blobDigest !== blob.digest) throw new DigestMismatchError(`profile blob ${ep.name}@${blob.digest}`, blob.digest, blobDigest);
  const source = `registry ${ep.name}@${newest.digest}`;
  const profile = parseProfile(bytes, source);
  if (profile.image.manifestDigest !== subject) throw new ProfileError(`profile ${source}: recorded on ${profile.image.manifestDigest}, published for ${subject}`);
  log.info({ image: image.reference, profile: source, reads: profile.reads.length, via: index.what.startsWith('referrers tag') ? 'tag' : 'referrers-api' }, 'found a published start-up profile');
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
      if (e instanceof ProfileError || e instanceof DigestMismatchError) {
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
