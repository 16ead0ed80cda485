import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
/** ../shared/corpus next to the repository, or $TOCFS_CORPUS. */
export const CORPUS_DIR = resolve(process.env.TOCFS_CORPUS ?? join(here, '..', '..', '..', 'shared', 'corpus'));
export const HAVE_CORPUS = existsSync(join(CORPUS_DIR, 'README.md'));

export function corpusImages(): string[] {
  if (!HAVE_CORPUS) return [];
  return readdirSync(CORPUS_DIR)
    .filter((d) => existsSync(join(CORPUS_DIR, d, 'expected.json')))
    .sort();
}

export interface ExpectedEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  size: number;
  mtime: number;
  mtime_pax?: string;
  linkname?: string;
  link_path?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string>;
  sha256?: string;
  meta?: boolean;
  whiteout?: 'file' | 'opaque';
  hardlink_to?: string;
  hardlink_group?: number | string;
  layer_index?: number;
  implicit?: boolean;
  pax_other?: Record<string, string>;
}

export interface Expected {
  image: string;
  images: Array<{ manifest_digest: string; platform: { os: string; architecture: string; variant?: string }; config_digest: string; diff_ids: string[]; layers: string[]; merged: ExpectedEntry[] }>;
  layers: Record<string, { digest: string; size: number; mediaType: string; annotations?: Record<string, string>; format: Record<string, unknown>; entries: ExpectedEntry[]; tar_valid: boolean; diff_id_matches: boolean; uncompressed_size: number; uncompressed_digest: string }>;
}

export function loadExpected(image: string): Expected {
  return JSON.parse(readFileSync(join(CORPUS_DIR, image, 'expected.json'), 'utf8'));
}
