/**
 * Start-up profiles: which files of an image, and which byte ranges of them, a container
 * read after the image's first use, in order, with the time since first use. A profile
 * only decides what tocfs fetches ahead and when, never the bytes served (those are still
 * verified against the TOC), so a profile from anywhere — a registry anybody with push
 * rights can write to — is parsed as hostile input: bounded, checked field by field, and
 * rejected whole with a message naming what is wrong. Schema: docs/profiles.md.
 */
import { isDigest } from '../digest.js';
import { ArtifactError, preview } from '../errors.js';

export const PROFILE_MEDIA_TYPE = 'application/vnd.tocfs.profile.v1+json';
export const PROFILE_SCHEMA_VERSION = 1;
/** A larger profile is refused before it is parsed. */
export const MAX_PROFILE_BYTES = 8 * 1024 * 1024;
export const MAX_PROFILE_READS = 100_000;
export const MAX_PROFILE_LAYERS = 256;
const MAX_PATH_BYTES = 4096;

/** A layer the profile was recorded on. */
export interface ProfileLayer {
  /** The compressed blob's digest (what the manifest lists). */
  digest: string;
  /** The TOC digest of its annotations, when it has one. */
  tocDigest?: string;
}

/** One read: `length` bytes at `offset` of the regular file `path` of layer `layer`, `atMs` after first use. */
export interface ProfileRead {
  /** Index into `layers`. */
  layer: number;
  path: string;
  offset: number;
  length: number;
  atMs: number;
  /** sha256 of the whole file, as the TOC gave it when recorded. */
  digest?: string;
}

export interface Profile {
  schemaVersion: 1;
  mediaType: typeof PROFILE_MEDIA_TYPE;
  /** ISO 8601 time the recording ended. */
  created: string;
  image: {
    /** The reference the image was used by (for people reading the profile). */
    reference: string;
    /** registry/repository, the key a later version of the image finds this profile by. */
    repository?: string;
    manifestDigest: string;
  };
  /** How the recording ended. */
  recording: { idleMs: number; windowMs: number; endedBy: 'idle' | 'window' | 'stop' };
  layers: ProfileLayer[];
  reads: ProfileRead[];
}

export class ProfileError extends ArtifactError {
  constructor(message: string) {
    super(message);
    this.name = 'ProfileError';
  }
}

function fail(what: string, message: string): never {
  throw new ProfileError(`${what}: ${message}`);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(what, `not an object: ${preview(JSON.stringify(v) ?? String(v), 80)}`);
  return v as Record<string, unknown>;
}

function str(v: unknown, what: string, max = 1024): string {
  if (typeof v !== 'string' || v.length > max) fail(what, typeof v === 'string' ? `longer than ${max} characters` : 'not a string');
  return v;
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(what, `not a whole number ≥ 0: ${preview(String(v), 40)}`);
  return v;
}

function digest(v: unknown, what: string): string {
  const s = str(v, what, 100);
  if (!isDigest(s)) fail(what, `not a sha256 digest: ${preview(s, 80)}`);
  return s;
}

/**
 * A profile from bytes (a file, an import, a registry). `source` names it in errors. Paths are
 * kept as written; whether they exist in an image is decided where the profile is used.
 */
export function parseProfile(bytes: Buffer | string, source: string): Profile {
  const size = typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
  if (size > MAX_PROFILE_BYTES) fail(`profile ${source}`, `${size} bytes, over the ${MAX_PROFILE_BYTES}-byte limit`);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (e) {
    fail(`profile ${source}`, `not JSON: ${(e as Error).message}`);
  }
  const what = `profile ${source}`;
  const o = obj(doc, what);
  if (o.schemaVersion !== PROFILE_SCHEMA_VERSION) fail(what, `schemaVersion ${preview(String(o.schemaVersion), 20)} is not ${PROFILE_SCHEMA_VERSION} (written by a newer tocfs?)`);
  if (o.mediaType !== PROFILE_MEDIA_TYPE) fail(what, `mediaType is not ${PROFILE_MEDIA_TYPE}`);
  const image = obj(o.image, `${what} image`);
  const rec = obj(o.recording, `${what} recording`);
  const endedBy = rec.endedBy;
  if (endedBy !== 'idle' && endedBy !== 'window' && endedBy !== 'stop') fail(`${what} recording.endedBy`, 'not idle, window or stop');
  if (!Array.isArray(o.layers) || o.layers.length > MAX_PROFILE_LAYERS) fail(`${what} layers`, `not a list of at most ${MAX_PROFILE_LAYERS}`);
  if (!Array.isArray(o.reads) || o.reads.length > MAX_PROFILE_READS) fail(`${what} reads`, `not a list of at most ${MAX_PROFILE_READS}`);
  const layers = o.layers.map((l, i): ProfileLayer => {
    const lo = obj(l, `${what} layers[${i}]`);
    return { digest: digest(lo.digest, `${what} layers[${i}].digest`), ...(lo.tocDigest !== undefined ? { tocDigest: digest(lo.tocDigest, `${what} layers[${i}].tocDigest`) } : {}) };
  });
  const reads = o.reads.map((r, i): ProfileRead => {
    const w = `${what} reads[${i}]`;
    const ro = obj(r, w);
    const layer = count(ro.layer, `${w}.layer`);
    if (layer >= layers.length) fail(`${w}.layer`, `${layer} names no layer (the profile lists ${layers.length})`);
    const path = str(ro.path, `${w}.path`, MAX_PATH_BYTES);
    return {
      layer,
      path,
      offset: count(ro.offset, `${w}.offset`),
      length: count(ro.length, `${w}.length`),
      atMs: count(ro.atMs, `${w}.atMs`),
      ...(ro.digest !== undefined ? { digest: digest(ro.digest, `${w}.digest`) } : {}),
    };
  });
  return {
    schemaVersion: PROFILE_SCHEMA_VERSION,
    mediaType: PROFILE_MEDIA_TYPE,
    created: str(o.created, `${what} created`, 64),
    image: {
      reference: str(image.reference, `${what} image.reference`),
      ...(image.repository !== undefined ? { repository: str(image.repository, `${what} image.repository`) } : {}),
      manifestDigest: digest(image.manifestDigest, `${what} image.manifestDigest`),
    },
    recording: { idleMs: count(rec.idleMs, `${what} recording.idleMs`), windowMs: count(rec.windowMs, `${what} recording.windowMs`), endedBy },
    layers,
    reads,
  };
}

export function serializeProfile(p: Profile): Buffer {
  return Buffer.from(JSON.stringify(p, null, 1) + '\n');
}

/** Bytes the profile's reads cover (uncompressed, ranges of one file counted once). */
export function profileReadBytes(p: Profile): number {
  const byFile = new Map<string, Array<[number, number]>>();
  for (const r of p.reads) {
    const k = `${r.layer}\n${r.path}`;
    byFile.set(k, [...(byFile.get(k) ?? []), [r.offset, r.offset + r.length]]);
  }
  let total = 0;
  for (const ranges of byFile.values()) {
    ranges.sort((a, b) => a[0] - b[0]);
    let end = -1;
    for (const [s, e] of ranges) {
      const from = Math.max(s, end);
      if (e > from) total += e - from;
      end = Math.max(end, e);
    }
  }
  return total;
}
