import { TocfsError } from '../errors.js';
import type { TocEntry } from '../formats/toc.js';

/** A read that could not be served (the FUSE layer answers EIO); `cause` says why. */
export class LayerReadError extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'EIO', options);
    this.name = 'LayerReadError';
  }
}

/** A fetch given up at its deadline (fetch.timeout). */
export class FetchTimeoutError extends LayerReadError {}

/** A read still waiting for its content when fetch.timeout ran out. */
export class ReadTimeoutError extends LayerReadError {}

/** How errors and logs name a file of a layer. */
export function describeEntry(layerDigest: string, entry: TocEntry): string {
  return `layer ${layerDigest} entry ${entry.path}`;
}
