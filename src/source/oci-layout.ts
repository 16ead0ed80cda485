import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, isDigest } from '../digest.js';
import { SourceError } from '../errors.js';
import { parseManifestDocument, selectPlatform } from './manifest.js';
import { resolveManifest, verifyDescribed, wantedPlatform } from './resolve.js';
import type { OciLayoutReference } from '../reference.js';
import { formatReference } from '../reference.js';
import { checkBlobRead, type BlobReader, type Descriptor, type ImageSource, type Platform, type ResolvedImage, type ResolveOptions } from './types.js';

const REF_NAME = 'org.opencontainers.image.ref.name';

/** An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`). */
export class OciLayoutSource implements ImageSource {
  constructor(
    readonly ref: OciLayoutReference,
    private readonly options: { platform?: Platform } = {},
  ) {}

  private blobPath(digest: string): string {
    if (!isDigest(digest)) throw new SourceError(`oci layout ${this.ref.dir}: bad digest ${JSON.stringify(digest)}`);
    return join(this.ref.dir, 'blobs', 'sha256', digestHex(digest));
  }

  private async readBlob(desc: Descriptor, what: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(desc.digest));
    } catch (e) {
      throw new SourceError(`${what}: cannot read blob ${desc.digest} in ${this.ref.dir}: ${(e as Error).message}`, undefined, { cause: e });
    }
  }

  async resolve(options: ResolveOptions = {}): Promise<ResolvedImage> {
    const what = formatReference(this.ref);
    let indexBytes: Buffer;
    try {
      indexBytes = await readFile(join(this.ref.dir, 'index.json'));
    } catch (e) {
      throw new SourceError(`${what}: not an OCI image layout (no index.json in ${this.ref.dir})`, undefined, { cause: e });
    }
    const top = parseManifestDocument(indexBytes, undefined, `${what} index.json`);
    if (top.kind !== 'index') throw new SourceError(`${what}: index.json is not an image index`);
    let entries = top.manifests;
    if (this.ref.tag !== undefined) {
      entries = entries.filter((m) => m.annotations?.[REF_NAME] === this.ref.tag);
      if (entries.length === 0) throw new SourceError(`${what}: no image tagged ${JSON.stringify(this.ref.tag)} in ${this.ref.dir}/index.json`);
    } else if (entries.length !== 1) {
      const tags = top.manifests.map((m) => m.annotations?.[REF_NAME]).filter(Boolean);
      throw new SourceError(`${what}: the layout holds ${entries.length} images; name one as oci:DIR:TAG (tags: ${tags.join(', ') || 'none'})`);
    }
    const platform = wantedPlatform(options, this.options.platform);
    // Several entries under one tag: index.json itself lists the platforms.
    const desc = entries.length === 1 ? entries[0]! : selectPlatform({ kind: 'index', mediaType: top.mediaType, manifests: entries }, platform, what);
    const bytes = await this.readBlob(desc, `${what} manifest`);
    verifyDescribed(bytes, desc, `${what}: manifest in ${this.ref.dir}`);
    return resolveManifest(
      what,
      { digest: desc.digest, bytes, mediaType: desc.mediaType },
      platform,
      {
        where: `in ${this.ref.dir}`,
        manifest: async (d) => ({ bytes: await this.readBlob(d, `${what} manifest`) }),
        config: (d) => this.readBlob(d, `${what} config`),
      },
      desc,
    );
  }

  blob(descriptor: Descriptor): BlobReader {
    const path = this.blobPath(descriptor.digest);
    const size = descriptor.size;
    return {
      digest: descriptor.digest,
      size,
      async read(offset, length) {
        checkBlobRead(descriptor, offset, length);
        const fh = await open(path, 'r');
        try {
          const st = await fh.stat();
          if (st.size !== size) throw new SourceError(`blob ${descriptor.digest} in the layout has ${st.size} bytes, the descriptor says ${size}`);
          const buf = Buffer.allocUnsafe(length);
          let done = 0;
          while (done < length) {
            const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
            if (bytesRead === 0) throw new SourceError(`short read of blob ${descriptor.digest} at ${offset + done}`);
            done += bytesRead;
          }
          return buf;
        } finally {
          await fh.close();
        }
      },
      async stream() {
        await stat(path);
        return createReadStream(path);
      },
    };
  }

  async close(): Promise<void> {}
}
