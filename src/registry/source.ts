import type { DockerReference } from '../reference.js';
import type { SourceOptions } from '../image/open.js';
import type { ImageSource } from '../source/types.js';
import { TocfsError } from '../errors.js';

// Replaced by the registry client (issue #3).
export function createRegistrySource(_ref: DockerReference, _options: SourceOptions): ImageSource {
  throw new TocfsError('docker:// references are not supported yet');
}
