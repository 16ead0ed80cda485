/**
 * Where image bytes come from. Everything above this interface (formats, fetch, cache,
 * filesystem) reads blobs only through `BlobReader`, so an OCI layout on disk and a
 * registry are interchangeable.
 */
import { SourceError } from '../errors.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: Platform;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Throws unless [offset, offset+length) lies inside the blob `desc` names (every BlobReader.read checks this first). */
export function checkBlobRead(desc: Pick<Descriptor, 'digest' | 'size'>, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > desc.size)
    throw new SourceError(`read [${offset}, ${offset + length}) is outside blob ${desc.digest} of ${desc.size} bytes`);
}

/** Random access to one blob. Reads are exact: they return `length` bytes or throw. */
export interface BlobReader {
  readonly digest: string;
  readonly size: number;
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  /**
   * The same bytes as `read`, handed out as they arrive (one request), for a long range whose
   * first parts are wanted before its end. Sources whose reads are quick may leave it out.
   */
  readParts?(offset: number, length: number, signal?: AbortSignal): AsyncIterable<Buffer>;
  /** The whole blob as a stream (for layers without a TOC). The caller verifies the digest. */
  stream(signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs?: { type: string; diff_ids: string[] };
  config?: Record<string, unknown>;
  [key: string]: unknown;
}

/** One platform's image, with its manifest and config verified against their digests. */
export interface ResolvedImage {
  /** The reference as the user gave it, canonicalised (`docker://docker.io/library/alpine:latest`, `oci:/abs/dir:tag`). */
  reference: string;
  /** Digest of the manifest list / index the reference named, if it named one. */
  indexDigest?: string;
  /** That index's manifest descriptors (every platform), to resolve another platform of the same image. */
  indexManifests?: Descriptor[];
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  config: ImageConfig;
  /** Layer descriptors, bottom first. */
  layers: Descriptor[];
  platform: Platform;
}

export interface ResolveOptions {
  platform?: Platform;
  signal?: AbortSignal;
}

export interface ImageSource {
  resolve(options?: ResolveOptions): Promise<ResolvedImage>;
  blob(descriptor: Descriptor): BlobReader;
  close(): Promise<void>;
}
