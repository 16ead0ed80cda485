import { arch as hostArch } from 'node:os';
import { isDigest } from '../digest.js';
import { preview, SourceError } from '../errors.js';
import type { Descriptor, ImageConfig, Platform } from './types.js';

export const MediaTypes = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** What to send as `Accept` for manifests: every kind Podman pulls. */
export const MANIFEST_ACCEPT = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerList,
  MediaTypes.dockerManifest,
].join(', ');

export interface ParsedIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

export interface ParsedManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** Annotations are string to string: other values (which no writer produces) are dropped. */
function stringValues(raw: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') out[k] = v;
  return out;
}

function descriptor(raw: unknown, what: string): Descriptor {
  const d = raw as Record<string, unknown> | null;
  if (!d || typeof d !== 'object') throw new SourceError(`${what}: not a descriptor object`);
  if (typeof d.mediaType !== 'string') throw new SourceError(`${what}: missing mediaType`);
  if (!isDigest(d.digest)) throw new SourceError(`${what}: bad digest ${preview(d.digest, 100)}`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0)
    throw new SourceError(`${what}: bad size ${preview(d.size)}`);
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.annotations && typeof d.annotations === 'object') out.annotations = stringValues(d.annotations as Record<string, unknown>);
  if (Array.isArray(d.urls)) out.urls = d.urls.filter((u): u is string => typeof u === 'string');
  if (d.platform && typeof d.platform === 'object') {
    const p = d.platform as Record<string, unknown>;
    if (typeof p.os === 'string' && typeof p.architecture === 'string')
      out.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) };
  }
  return out;
}

/**
 * Parses a manifest or index. `headerMediaType` (Content-Type, or the descriptor that
 * pointed at it) wins when the document has no `mediaType` of its own.
 */
export function parseManifestDocument(bytes: Buffer, headerMediaType: string | undefined, what: string): ParsedIndex | ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new SourceError(`${what}: manifest is not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!doc || typeof doc !== 'object') throw new SourceError(`${what}: manifest is not a JSON object`);
  const mediaType = (typeof doc.mediaType === 'string' ? doc.mediaType : undefined) ?? headerMediaType?.split(';')[0]?.trim() ?? '';
  if (doc.schemaVersion === 1) throw new SourceError(`${what}: Docker schema 1 manifests are not supported; push the image again with a current tool`);
  if (Array.isArray(doc.manifests)) {
    return { kind: 'index', mediaType: mediaType || MediaTypes.ociIndex, manifests: doc.manifests.map((m, i) => descriptor(m, `${what}: manifests[${i}]`)) };
  }
  if (Array.isArray(doc.layers) && doc.config) {
    const layers = doc.layers.map((l, i) => descriptor(l, `${what}: layers[${i}]`));
    const m: ParsedManifest = { kind: 'manifest', mediaType: mediaType || MediaTypes.ociManifest, config: descriptor(doc.config, `${what}: config`), layers };
    if (doc.annotations && typeof doc.annotations === 'object') m.annotations = stringValues(doc.annotations as Record<string, unknown>);
    return m;
  }
  throw new SourceError(`${what}: unsupported manifest (media type ${preview(mediaType, 100)}): neither an index nor an image manifest`);
}

const ARCH_MAP: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

export function hostPlatform(): Platform {
  const architecture = ARCH_MAP[hostArch()] ?? hostArch();
  return architecture === 'arm64' ? { os: 'linux', architecture, variant: 'v8' } : { os: 'linux', architecture };
}

/** `os/arch[/variant]` as Podman's `--platform` takes it. */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !p))
    throw new SourceError(`invalid platform ${JSON.stringify(s)}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`);
  return parts.length === 3 ? { os: parts[0]!, architecture: parts[1]!, variant: parts[2]! } : { os: parts[0]!, architecture: parts[1]! };
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

function normVariant(p: Platform): string | undefined {
  // arm64 images often omit "v8"; treat it as the default variant.
  if (p.architecture === 'arm64' && (p.variant === undefined || p.variant === 'v8')) return 'v8';
  return p.variant;
}

/** Picks the manifest for `want` from an index the way containers/image does (exact variant first, then any variant). */
export function selectPlatform(index: ParsedIndex, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter((m) => !m.platform || m.platform.os !== 'unknown');
  const matches = candidates.filter((m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture);
  const exact = matches.find((m) => normVariant(m.platform!) === normVariant(want));
  const pick = exact ?? (want.variant === undefined ? matches[0] : undefined);
  if (!pick) {
    const platforms = [...new Set(candidates.map((m) => (m.platform ? formatPlatform(m.platform) : '?')))];
    const have = platforms.slice(0, 20).map((p) => preview(p, 60).slice(1, -1)).join(', ') + (platforms.length > 20 ? `, … (${platforms.length} in all)` : '');
    throw new SourceError(`${what}: no manifest for platform ${formatPlatform(want)} (the index has: ${have || 'none'}); choose one with --platform`);
  }
  return pick;
}

export function parseConfig(bytes: Buffer, what: string): ImageConfig {
  try {
    const c = JSON.parse(bytes.toString('utf8'));
    if (!c || typeof c !== 'object') throw new Error('not an object');
    return c as ImageConfig;
  } catch (e) {
    throw new SourceError(`${what}: image config is not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
}
