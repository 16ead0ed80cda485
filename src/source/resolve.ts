/**
 * From a manifest document to one platform's verified image: index -> platform -> manifest
 * -> config. Every ImageSource resolves through here, so `--platform`, the digest and size
 * checks and the limits behave alike whether the bytes come from a registry or a layout.
 */
import { verifyDigest } from '../digest.js';
import { SourceError } from '../errors.js';
import type { Descriptor, ImageConfig, Platform, ResolvedImage, ResolveOptions } from './types.js';
import { hostPlatform, parseConfig, parseManifestDocument, selectPlatform } from './manifest.js';

/** Largest image config read (real ones are a few KiB). */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** A manifest or index as fetched. */
export interface ManifestBytes {
  digest: string;
  bytes: Buffer;
  /** Content-Type or the pointing descriptor's media type, for documents without their own. */
  mediaType?: string;
}

/** How a source fetches what a descriptor names; the caller verifies digest and size. */
export interface ResolveFetch {
  /** Where the bytes came from, for errors (`from 127.0.0.1:5000`, `in /srv/layout`). */
  where: string;
  manifest(desc: Descriptor): Promise<{ bytes: Buffer; mediaType?: string }>;
  config(desc: Descriptor): Promise<Buffer>;
}

/** The platform to pick: asked for at resolve, else the source's default, else this host's. */
export function wantedPlatform(options: ResolveOptions, sourceDefault?: Platform): Platform {
  return options.platform ?? sourceDefault ?? hostPlatform();
}

/** Throws unless `bytes` are exactly what `desc` names. */
export function verifyDescribed(bytes: Buffer, desc: Descriptor, what: string): void {
  verifyDigest(bytes, desc.digest, what);
  if (bytes.length !== desc.size) throw new SourceError(`${what} ${desc.digest} has ${bytes.length} bytes, its descriptor says ${desc.size}`);
}

function platformOf(config: ImageConfig, fallback: Platform): Platform {
  return {
    os: config.os ?? fallback.os,
    architecture: config.architecture ?? fallback.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
  };
}

/**
 * Resolves `top` (already verified by the caller) to one image: an index picks `platform`'s
 * manifest (one level; nested indexes are refused), then the config is fetched and verified.
 * `topDescriptor` is the descriptor that pointed at `top`, if any (its platform is used).
 */
export async function resolveManifest(
  reference: string,
  top: ManifestBytes,
  platform: Platform,
  fetch: ResolveFetch,
  topDescriptor?: Descriptor,
): Promise<ResolvedImage> {
  let m = top;
  let doc = parseManifestDocument(m.bytes, m.mediaType, `${reference} ${m.digest}`);
  let chosen = topDescriptor;
  let index: Pick<ResolvedImage, 'indexDigest' | 'indexManifests'> = {};
  if (doc.kind === 'index') {
    index = { indexDigest: m.digest, indexManifests: doc.manifests };
    chosen = selectPlatform(doc, platform, reference);
    const got = await fetch.manifest(chosen);
    verifyDescribed(got.bytes, chosen, `${reference}: manifest ${fetch.where}`);
    m = { digest: chosen.digest, bytes: got.bytes, mediaType: got.mediaType ?? chosen.mediaType };
    doc = parseManifestDocument(m.bytes, m.mediaType, `${reference} ${m.digest}`);
    if (doc.kind !== 'manifest') throw new SourceError(`${reference}: nested index at ${chosen.digest} is not supported`);
  }
  const cfg = doc.config;
  if (cfg.size > MAX_CONFIG_BYTES) throw new SourceError(`${reference}: config ${cfg.digest} of ${cfg.size} bytes is larger than the ${MAX_CONFIG_BYTES} allowed`);
  const configBytes = await fetch.config(cfg);
  verifyDescribed(configBytes, cfg, `${reference}: config ${fetch.where}`);
  const config = parseConfig(configBytes, reference);
  return {
    reference,
    ...index,
    manifestDigest: m.digest,
    manifestMediaType: doc.mediaType,
    manifestBytes: m.bytes,
    configDigest: cfg.digest,
    configBytes,
    config,
    layers: doc.layers,
    platform: chosen?.platform ?? platformOf(config, platform),
  };
}
