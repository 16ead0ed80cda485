/**
 * Errors a user can act on. Every error tocfs raises about input names what was wrong
 * (layer, entry, digest) so it can be reported as-is.
 */
export class TocfsError extends Error {
  constructor(message: string, readonly code: string = 'ETOCFS', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TocfsError';
  }
}

/** A table of contents, footer or frame that is malformed or hostile. */
export class FormatError extends TocfsError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'EFORMAT', options);
    this.name = 'FormatError';
  }
}

/** Bytes whose digest does not match the digest that vouches for them. */
export class DigestMismatchError extends TocfsError {
  constructor(what: string, readonly expected: string, readonly actual: string) {
    super(`${what}: digest mismatch: expected ${expected}, got ${actual}`, 'EDIGEST');
    this.name = 'DigestMismatchError';
  }
}

/** Anything that went wrong talking to a registry or reading an image source. */
/** Something tocfs publishes beside images (a profile, an index), found malformed or not matching what it claims. */
export class ArtifactError extends TocfsError {
  constructor(message: string) {
    super(message, 'EINVAL');
    this.name = 'ArtifactError';
  }
}

export class SourceError extends TocfsError {
  constructor(message: string, readonly status?: number, options?: { cause?: unknown }) {
    super(message, 'ESOURCE', options);
    this.name = 'SourceError';
  }
}

/**
 * An untrusted JSON value as an error message may quote it: short, and never walked (a
 * deeply nested array would overflow the stack in JSON.stringify, a huge string would
 * drown the message).
 */
export function preview(v: unknown, max = 60): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v !== null && typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > max ? v.slice(0, max) + '…' : v);
  return String(v);
}
