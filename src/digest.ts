import { createHash } from 'node:crypto';
import { DigestMismatchError, FormatError, preview } from './errors.js';

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function sha256(data: Uint8Array | Uint8Array[]): string {
  const h = createHash('sha256');
  if (Array.isArray(data)) for (const d of data) h.update(d);
  else h.update(data);
  return 'sha256:' + h.digest('hex');
}

export function isDigest(s: unknown): s is string {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

/** Throws unless `s` is a well-formed sha256 digest; `what` names the field for the error. */
export function parseDigest(s: unknown, what: string): string {
  if (!isDigest(s)) throw new FormatError(`${what}: not a sha256 digest: ${preview(s, 100)}`);
  return s;
}

export function verifyDigest(data: Uint8Array | Uint8Array[], expected: string, what: string): void {
  const actual = sha256(data);
  if (actual !== expected) throw new DigestMismatchError(what, expected, actual);
}

/** The hex part of a digest, for file names. */
export function digestHex(d: string): string {
  return d.slice(d.indexOf(':') + 1);
}

export const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
