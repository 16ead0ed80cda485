/**
 * Names in the additional layer store: `<root>/<base64(image ref)>/<key>/{diff,info,blob,use}`
 * (README.md, "Podman additional layer store"). The ref is standard base64 with padding (Go's
 * base64.StdEncoding); the key is a digest, either the layer's compressed blob digest
 * (Podman ≤ 5.0) or its TOC digest (Podman ≥ 5.1).
 */

const BASE64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DIGEST = /^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$/;

/** The directory name containers/storage uses for an image reference. */
export function encodeRef(ref: string): string {
  return Buffer.from(ref, 'utf8').toString('base64');
}

/**
 * The image reference a directory name stands for, or undefined when the name is not
 * strict standard base64 of a UTF-8 string (Node's decoder would accept junk and the
 * URL-safe alphabet; a name must re-encode to itself).
 */
export function decodeRef(name: string): string | undefined {
  if (name.length === 0 || !BASE64_STD.test(name)) return undefined;
  const ref = Buffer.from(name, 'base64').toString('utf8');
  if (ref.length === 0 || ref.includes('\uFFFD') || encodeRef(ref) !== name) return undefined;
  return ref;
}

/** `algorithm:hex` as c/storage spells a layer key; undefined for anything else. */
export function parseKey(name: string): string | undefined {
  return DIGEST.test(name) ? name : undefined;
}

/** Files a layer directory answers (besides `diff/` and `chain/`). */
export type LayerFile = 'info' | 'blob';
/** Files an image directory answers. */
export type ImageFile = 'manifest' | 'config';

/** A path inside the store mount, by what it names. */
export type StorePath =
  | { kind: 'root' }
  | { kind: 'image'; ref: string; name: string }
  | { kind: 'imageFile'; ref: string; name: string; file: ImageFile }
  | { kind: 'layer'; ref: string; name: string; key: string }
  | { kind: 'layerFile'; ref: string; name: string; key: string; file: LayerFile }
  | { kind: 'use'; ref: string; name: string; key: string }
  /** Inside a layer's `diff/` or `chain/` tree; `sub` is the path in that tree (`/` = its root). */
  | { kind: 'tree'; ref: string; name: string; key: string; tree: 'diff' | 'chain'; sub: string }
  | { kind: 'invalid' };

const LAYER_FILES = new Set<string>(['info', 'blob']);
const IMAGE_FILES = new Set<string>(['manifest', 'config']);

/** Classifies a FUSE path (absolute, `/`-separated, as libfuse hands it over). */
export function parseStorePath(path: string): StorePath {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.length === 0) return { kind: 'root' };
  const [first, second, third] = parts as [string, string | undefined, string | undefined];
  const ref = decodeRef(first);
  if (ref === undefined) return { kind: 'invalid' };
  if (second === undefined) return { kind: 'image', ref, name: first };
  if (IMAGE_FILES.has(second)) return parts.length === 2 ? { kind: 'imageFile', ref, name: first, file: second as ImageFile } : { kind: 'invalid' };
  const key = parseKey(second);
  if (key === undefined) return { kind: 'invalid' };
  if (third === undefined) return { kind: 'layer', ref, name: first, key };
  if (third === 'diff' || third === 'chain') return { kind: 'tree', ref, name: first, key, tree: third, sub: '/' + parts.slice(3).join('/') };
  if (parts.length > 3) return { kind: 'invalid' };
  if (third === 'use') return { kind: 'use', ref, name: first, key };
  if (LAYER_FILES.has(third)) return { kind: 'layerFile', ref, name: first, key, file: third as LayerFile };
  return { kind: 'invalid' };
}
