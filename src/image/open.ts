import { OciLayoutSource } from '../source/oci-layout.js';
import type { ImageSource } from '../source/types.js';
import { parseReference, type ImageReference } from '../reference.js';
import { TocfsError } from '../errors.js';
import type { SourceOptions } from '../registry/options.js';

export type { SourceOptions };

/** The ImageSource for a reference string: `oci:DIR[:tag]` or `[docker://]host/repo[:tag][@digest]`. */
export async function openImageSource(reference: string | ImageReference, options: SourceOptions = {}): Promise<ImageSource> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  if (ref.transport === 'oci') return new OciLayoutSource(ref, options.platform ? { platform: options.platform } : {});
  // The registry client lives in src/registry (loaded lazily: oci: users need none of it).
  const mod = await import('../registry/source.js').catch((e: unknown) => {
    throw new TocfsError(`registry support is not available: ${(e as Error).message}`);
  });
  return mod.createRegistrySource(ref, options);
}

/** Loads the registry client ahead of its first use (an early mount daemon, while its parent parses). */
export async function preloadRegistrySource(): Promise<void> {
  await import('../registry/source.js');
}
