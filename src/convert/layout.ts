/**
 * Writes OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): the destination of
 * `tocfs convert`, and of the test-image builder.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex } from '../digest.js';
import { MediaTypes } from '../source/manifest.js';
import type { Descriptor, ImageConfig, Platform } from '../source/types.js';

const REF_NAME = 'org.opencontainers.image.ref.name';

export interface WrittenImage {
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
}

export class OciLayoutWriter {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  }

  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digestHex(digest));
  }

  /** A temporary file inside the layout (same filesystem, so adoptBlob can rename it). */
  tempPath(): string {
    return join(this.dir, 'blobs', `.tmp-${randomBytes(6).toString('hex')}`);
  }

  /** Moves a finished temporary file into place under its digest. */
  async adoptBlob(tempPath: string, digest: string): Promise<void> {
    await rename(tempPath, this.blobPath(digest));
  }

  async discard(tempPath: string): Promise<void> {
    await rm(tempPath, { force: true });
  }

  async putBlob(data: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const path = this.blobPath(digest);
    const exists = await stat(path).then((s) => s.size === data.length, () => false);
    if (!exists) await writeFile(path, data);
    return { mediaType, digest, size: data.length };
  }

  /**
   * Writes config and manifest and records the manifest in index.json under `tag`
   * (replacing an image of the same tag, keeping others).
   */
  async writeImage(opts: { config: ImageConfig; layers: Descriptor[]; tag?: string; annotations?: Record<string, string>; platform?: Platform }): Promise<WrittenImage> {
    const config = await this.putBlob(Buffer.from(JSON.stringify(opts.config)), MediaTypes.ociConfig);
    const manifest = {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config,
      layers: opts.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, ...(l.annotations && Object.keys(l.annotations).length ? { annotations: l.annotations } : {}) })),
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
    };
    const m = await this.putBlob(Buffer.from(JSON.stringify(manifest)), MediaTypes.ociManifest);
    const indexPath = join(this.dir, 'index.json');
    let manifests: Array<Descriptor & { annotations?: Record<string, string> }> = [];
    try {
      manifests = JSON.parse(await readFile(indexPath, 'utf8')).manifests ?? [];
    } catch {
      // fresh layout
    }
    const tag = opts.tag ?? 'latest';
    manifests = manifests.filter((d) => d.annotations?.[REF_NAME] !== tag);
    manifests.push({ ...m, ...(opts.platform ? { platform: opts.platform } : {}), annotations: { [REF_NAME]: tag } });
    await writeFile(indexPath, JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
    return { manifestDigest: m.digest, manifestSize: m.size, configDigest: config.digest };
  }
}
