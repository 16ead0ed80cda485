/**
 * A multi-platform OCI layout (an image index under the tag `latest`) whose per-platform
 * images are built by buildImage, so platform selection needs no corpus.
 *
 *   const img = await buildMultiArchImage(dir, 'zstd:chunked', [
 *     { platform: { os: 'linux', architecture: 'amd64' }, layers: [[{ path: 'arch', content: 'amd64\n' }]] },
 *     { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [[{ path: 'arch', content: 'arm64\n' }]] },
 *   ]);
 */
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Descriptor } from '../../src/source/types.js';
import { buildImage, type FileSpec, type ImageFormat } from './images.js';

export interface PlatformSpec {
  platform: { os: string; architecture: string; variant?: string };
  layers: FileSpec[][];
}

export interface BuiltPlatformImage {
  platform: PlatformSpec['platform'];
  manifestDigest: string;
  configDigest: string;
  layers: Descriptor[];
  diffIds: string[];
}

export interface BuiltMultiArchImage {
  dir: string;
  indexDigest: string;
  images: BuiltPlatformImage[];
}

const INDEX = 'application/vnd.oci.image.index.v1+json';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const CONFIG = 'application/vnd.oci.image.config.v1+json';

async function putBlob(dir: string, data: Buffer, mediaType: string): Promise<Descriptor> {
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  return { mediaType, digest, size: data.length };
}

/** `platforms` built in `format` into one layout at `dir`, indexed under `latest`. */
export async function buildMultiArchImage(dir: string, format: ImageFormat, platforms: PlatformSpec[]): Promise<BuiltMultiArchImage> {
  const images: BuiltPlatformImage[] = [];
  for (const [i, p] of platforms.entries()) {
    const built = await buildImage(dir, { format, layers: p.layers, tag: `platform-${i}` });
    // buildImage writes a config for this host; each platform gets its own.
    const hostConfig = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', built.configDigest.slice(7)), 'utf8'));
    const config = await putBlob(dir, Buffer.from(JSON.stringify({ ...hostConfig, os: p.platform.os, architecture: p.platform.architecture, ...(p.platform.variant ? { variant: p.platform.variant } : {}) })), CONFIG);
    const layers = built.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, ...(l.annotations ? { annotations: l.annotations } : {}) }));
    const manifest = await putBlob(dir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config, layers })), MANIFEST);
    images.push({ platform: p.platform, manifestDigest: manifest.digest, configDigest: config.digest, layers: built.layers, diffIds: built.diffIds });
  }
  const manifests = await Promise.all(
    images.map(async (img) => ({ mediaType: MANIFEST, digest: img.manifestDigest, size: (await readFile(join(dir, 'blobs', 'sha256', img.manifestDigest.slice(7)))).length, platform: img.platform })),
  );
  const index = await putBlob(dir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests })), INDEX);
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: [{ ...index, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  await rm(join(dir, '.source'), { recursive: true, force: true });
  return { dir, indexDigest: index.digest, images };
}
