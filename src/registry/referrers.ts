/**
 * tocfs's artifacts beside an image (start-up profiles, seekable indexes): an OCI manifest with
 * an `artifactType` whose `subject` is the image's manifest, found by the referrers API of OCI
 * distribution 1.1 or, on registries without it, the referrers tag schema (tag
 * `sha256-<hex of the subject digest>` holding an index of the referrers).
 *
 * What a registry lists is anyone-with-push-rights' input: every document is bounded, its
 * digest and size checked; what does not check out is an ArtifactError naming it.
 */
import { digestHex, isDigest, sha256 } from '../digest.js';
import { ArtifactError, DigestMismatchError, preview, SourceError } from '../errors.js';
import { MANIFEST_ACCEPT, MediaTypes, parseManifestDocument } from '../source/manifest.js';
import type { Descriptor } from '../source/types.js';
import type { RegistryEndpoint } from './endpoint.js';

const EMPTY_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
const EMPTY_BYTES = Buffer.from('{}');
export const CREATED_ANNOTATION = 'org.opencontainers.image.created';

/** The referrers tag of a subject (the OCI distribution 1.1 fallback). */
export function referrersTag(subjectDigest: string): string {
  return `sha256-${digestHex(subjectDigest)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function isNotFound(e: unknown): boolean {
  return e instanceof SourceError && e.status === 404;
}

function parseJson(bytes: Buffer, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new ArtifactError(`${what}: not JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!isObject(doc)) throw new ArtifactError(`${what}: not a JSON object`);
  return doc;
}

/** An artifact as a referrers index lists it; `position` orders those with the same (or no) creation time. */
export interface Referrer {
  digest: string;
  size: number;
  created: number;
  position: number;
}

/** The artifacts of `artifactType` an index (referrers API or referrers tag) lists, newest last. */
export function referrersOfType(bytes: Buffer, artifactType: string, what: string): Referrer[] {
  const doc = parseJson(bytes, what);
  if (!Array.isArray(doc.manifests)) throw new ArtifactError(`${what}: not an image index (no manifests list)`);
  const out: Referrer[] = [];
  doc.manifests.forEach((m: unknown, position) => {
    // Other tools' referrers (signatures, SBOMs) share the index: only ours count, and only well-formed.
    if (!isObject(m) || m.artifactType !== artifactType || m.mediaType !== MediaTypes.ociManifest || !isDigest(m.digest) || !isSize(m.size)) return;
    const created = isObject(m.annotations) && typeof m.annotations[CREATED_ANNOTATION] === 'string' ? Date.parse(m.annotations[CREATED_ANNOTATION]) : NaN;
    out.push({ digest: m.digest, size: m.size, created: Number.isNaN(created) ? -Infinity : created, position });
  });
  return out.sort((a, b) => a.created - b.created || a.position - b.position);
}

/** A blob an artifact manifest lists, with its annotations (untrusted strings). */
export interface ArtifactBlob extends Descriptor {
  annotations: Record<string, string>;
}

/**
 * The blobs of `mediaType` an artifact manifest lists, after checking the manifest is of
 * `artifactType` and about `subject`, and that no blob is over `maxBytes`.
 */
export function artifactBlobs(bytes: Buffer, artifactType: string, subject: string, mediaType: string, maxBytes: number, what: string): ArtifactBlob[] {
  const doc = parseJson(bytes, what);
  if (doc.artifactType !== artifactType) throw new ArtifactError(`${what}: artifactType ${preview(doc.artifactType, 80)} is not ${artifactType}`);
  if (!isObject(doc.subject) || doc.subject.digest !== subject) throw new ArtifactError(`${what}: its subject is not the image ${subject}`);
  const out: ArtifactBlob[] = [];
  for (const l of Array.isArray(doc.layers) ? doc.layers : []) {
    if (!isObject(l) || l.mediaType !== mediaType) continue;
    if (!isDigest(l.digest) || !isSize(l.size)) throw new ArtifactError(`${what}: a ${mediaType} layer without a digest and size`);
    if (l.size > maxBytes) throw new ArtifactError(`${what}: a ${mediaType} blob of ${l.size} bytes, over the ${maxBytes}-byte limit`);
    const annotations: Record<string, string> = {};
    if (isObject(l.annotations)) for (const [k, v] of Object.entries(l.annotations)) if (typeof v === 'string') annotations[k] = v;
    out.push({ mediaType, digest: l.digest, size: l.size, annotations });
  }
  if (out.length === 0) throw new ArtifactError(`${what}: no ${mediaType} layer`);
  return out;
}

/** A blob of `ep`, read whole and checked against its digest. */
export async function readVerifiedBlob(ep: RegistryEndpoint, desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of ep.blobRange(desc, 0, desc.size, signal)) parts.push(p);
  const bytes = Buffer.concat(parts);
  const actual = sha256(bytes);
  if (actual !== desc.digest) throw new DigestMismatchError(`blob ${ep.name}@${desc.digest}`, desc.digest, actual);
  return bytes;
}

/**
 * The index listing the referrers of `subject`: from the referrers API unless `useApi` says the
 * registry has none, else the referrers tag. `api` tells whether the registry answered the
 * referrers API (false: it has none, or was not asked).
 */
export async function referrersIndex(ep: RegistryEndpoint, subject: string, artifactType: string, useApi: boolean): Promise<{ index?: { bytes: Buffer; what: string }; api: boolean }> {
  const { fetchReferrers } = await import('./distribution.js');
  if (useApi) {
    const bytes = await fetchReferrers(ep, subject, artifactType);
    if (bytes) return { index: { bytes, what: `referrers of ${ep.name}@${subject}` }, api: true };
  }
  const tag = referrersTag(subject);
  try {
    return { index: { bytes: (await ep.manifest(tag, MediaTypes.ociIndex)).bytes, what: `referrers tag ${ep.name}:${tag}` }, api: false };
  } catch (e) {
    if (isNotFound(e)) return { api: false };
    throw e;
  }
}

/** The newest artifact of `artifactType` among the referrers of `subject`: its manifest, checked against the digest and size the index gives. */
export async function newestArtifact(ep: RegistryEndpoint, index: { bytes: Buffer; what: string }, artifactType: string): Promise<{ digest: string; manifest: Buffer } | undefined> {
  const newest = referrersOfType(index.bytes, artifactType, index.what).at(-1);
  if (!newest) return undefined;
  const what = `artifact manifest ${ep.name}@${newest.digest}`;
  let m;
  try {
    m = await ep.manifest(newest.digest, MediaTypes.ociManifest);
  } catch (e) {
    if (isNotFound(e)) throw new ArtifactError(`${what}: listed by ${index.what}, but not in the registry`);
    throw e;
  }
  const actual = sha256(m.bytes);
  if (actual !== newest.digest) throw new DigestMismatchError(what, newest.digest, actual);
  if (m.bytes.length !== newest.size) throw new ArtifactError(`${what}: ${m.bytes.length} bytes, the index says ${newest.size}`);
  return { digest: newest.digest, manifest: m.bytes };
}

// ---------------------------------------------------------------------------------------------
// Publishing

/** The subject descriptor: the image manifest's real media type and size, from the registry it is pushed to. */
export async function subjectOf(ep: RegistryEndpoint, manifestDigest: string, what: string, signal?: AbortSignal): Promise<Descriptor> {
  let m;
  try {
    m = await ep.manifest(manifestDigest, MANIFEST_ACCEPT, signal);
  } catch (e) {
    if (isNotFound(e)) throw new SourceError(`the image ${what} (${manifestDigest}) is not in ${ep.name}: push the image there first, or push to the repository the image is in`, 404);
    throw e;
  }
  const actual = sha256(m.bytes);
  if (actual !== manifestDigest) throw new DigestMismatchError(`manifest ${manifestDigest} from ${ep.name}`, manifestDigest, actual);
  const doc = parseManifestDocument(m.bytes, m.mediaType, `manifest ${manifestDigest} of ${ep.name}`);
  return { mediaType: doc.mediaType, digest: manifestDigest, size: m.bytes.length };
}

/** Adds (or replaces) `entry` in the index under the referrers tag of `subject`; returns the tag, the index's digest and how many referrers it lists. */
async function updateReferrersTag(ep: RegistryEndpoint, subject: string, entry: Record<string, unknown>, signal?: AbortSignal): Promise<{ tag: string; digest: string; referrers: number }> {
  const { pushManifest } = await import('./distribution.js');
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
async function listedByReferrersApi(ep: RegistryEndpoint, subject: string, digest: string, artifactType: string, signal?: AbortSignal): Promise<boolean> {
  const { fetchReferrers } = await import('./distribution.js');
  const bytes = await fetchReferrers(ep, subject, artifactType, signal);
  if (!bytes) return false;
  try {
    return referrersOfType(bytes, artifactType, `referrers of ${ep.name}@${subject}`).some((r) => r.digest === digest);
  } catch {
    return false;
  }
}

export function pushError(e: unknown, ep: RegistryEndpoint): unknown {
  const status = e instanceof SourceError ? e.status : undefined;
  if (status !== 401 && status !== 403) return e;
  return new SourceError(`no push rights to ${ep.name}: log in with "podman login ${ep.registry}" as a user who may push to ${ep.repository} (${(e as Error).message})`, status, { cause: e });
}

export interface PushedArtifact {
  /** Digest of the artifact manifest. */
  manifestDigest: string;
  /** Digests of its blobs, in the order given. */
  blobDigests: string[];
  /** How readers find it: the registry's referrers API, or the referrers tag this push updated. */
  findable: { by: 'referrers-api' } | { by: 'tag'; tag: string; indexDigest: string; referrers: number };
}

/**
 * Pushes an artifact of `artifactType` holding `blobs` whose subject is `subject` (an image
 * manifest in `ep`'s repository), and makes it findable: by the registry's referrers API when it
 * has one, else by the referrers tag.
 */
export async function pushArtifact(
  ep: RegistryEndpoint,
  subject: Descriptor,
  artifactType: string,
  blobs: Array<{ mediaType: string; bytes: Buffer; annotations?: Record<string, string> }>,
  signal?: AbortSignal,
): Promise<PushedArtifact> {
  const { pushBlob, pushManifest } = await import('./distribution.js');
  const emptyDigest = await pushBlob(ep, EMPTY_BYTES, signal);
  const layers = [];
  for (const b of blobs) layers.push({ mediaType: b.mediaType, digest: await pushBlob(ep, b.bytes, signal), size: b.bytes.length, ...(b.annotations ? { annotations: b.annotations } : {}) });
  const created = new Date().toISOString();
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      artifactType,
      config: { mediaType: EMPTY_MEDIA_TYPE, digest: emptyDigest, size: EMPTY_BYTES.length },
      layers,
      subject,
      annotations: { [CREATED_ANNOTATION]: created },
    }),
  );
  const manifestDigest = sha256(manifest);
  const pushed = await pushManifest(ep, manifestDigest, MediaTypes.ociManifest, manifest, signal);
  const base = { manifestDigest, blobDigests: layers.map((l) => l.digest) };
  if (pushed.subject === subject.digest || (await listedByReferrersApi(ep, subject.digest, manifestDigest, artifactType, signal))) return { ...base, findable: { by: 'referrers-api' } };
  const entry = { mediaType: MediaTypes.ociManifest, digest: manifestDigest, size: manifest.length, artifactType, annotations: { [CREATED_ANNOTATION]: created } };
  const tag = await updateReferrersTag(ep, subject.digest, entry, signal);
  return { ...base, findable: { by: 'tag', tag: tag.tag, indexDigest: tag.digest, referrers: tag.referrers } };
}
