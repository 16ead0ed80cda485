/**
 * `tocfs convert --profile FILE|IMAGE`: the start-up profile whose files a converted layer
 * puts first (docs/profiles.md, "Convert"). The argument is a profile file, a manifest digest
 * or an image reference whose profile is in the local profile store; the source image itself
 * needs no second resolution. A profile is hostile input: read at most one byte past the
 * parser's limit, parsed by parseProfile, and its paths used only as names to look up in the
 * layers' tars.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { isDigest } from '../digest.js';
import { TocfsError } from '../errors.js';
import { frontPath } from '../formats/writer/front-order.js';
import { openImageSource, type SourceOptions } from '../image/open.js';
import type { Profile } from '../profile/profile.js';
import { ProfileStore, readProfileFile } from '../profile/store.js';
import { formatReference, parseReference } from '../reference.js';

export interface ConvertProfile {
  profile: Profile;
  /** Where it came from (a file, or the stored profile's file), for messages. */
  source: string;
}

export interface ProfileLookup {
  /** The image being converted, as given, and its resolved manifest digest. */
  sourceRef: string;
  sourceManifestDigest: string;
  /** Cache directory whose `profiles/` holds stored profiles (without one, only a file will do). */
  cacheDir?: string | undefined;
  sourceOptions?: SourceOptions;
  log: Logger;
}

function sameImage(a: string, b: string): boolean {
  try {
    return formatReference(parseReference(a)) === formatReference(parseReference(b));
  } catch {
    return false;
  }
}

/** The profile `arg` names: a profile file; else the stored profile of a manifest digest or an image (the source itself included). */
export async function loadConvertProfile(arg: string, ctx: ProfileLookup): Promise<ConvertProfile> {
  const what = `--profile ${arg}`;
  if (arg === '') throw new TocfsError('--profile needs a profile file or an image whose profile is stored', 'EUSAGE');
  const st = await stat(arg).catch(() => undefined);
  if (st?.isFile()) return { profile: await readProfileFile(arg), source: arg };
  if (st) throw new TocfsError(`${what}: not a file (give a profile file, or an image whose profile is stored)`, 'EINVAL');
  if (arg.endsWith('.json')) throw new TocfsError(`${what}: no such profile file`, 'ENOENT');
  if (ctx.cacheDir === undefined) throw new TocfsError(`${what}: no such file, and no cache directory to look for a stored profile in`, 'ENOENT');
  let digest: string;
  if (isDigest(arg)) digest = arg;
  else if (sameImage(arg, ctx.sourceRef)) digest = ctx.sourceManifestDigest;
  else {
    let source;
    try {
      source = await openImageSource(arg, ctx.sourceOptions);
      digest = (await source.resolve()).manifestDigest;
    } catch (e) {
      throw new TocfsError(`${what}: no such file, and not an image tocfs can resolve: ${(e as Error).message}`, 'ENOENT', { cause: e });
    } finally {
      await source?.close().catch(() => undefined);
    }
  }
  const store = new ProfileStore(ctx.cacheDir, ctx.log);
  const profile = await store.load(digest);
  if (!profile) {
    throw new TocfsError(
      `${what}: no start-up profile of ${arg === digest ? digest : `${arg} (${digest})`} in ${store.dir}: record one (tocfs profile record, or run the image once through tocfs mount or tocfs store), import one (tocfs profile import), or give a profile file`,
      'ENOENT',
    );
  }
  return { profile, source: `${store.dir}/${digest.slice('sha256:'.length)}.json` };
}

export interface ProfileFiles {
  /** Paths to put first, normalised, first read first. */
  paths: string[];
  /** Paths no image can hold (absolute, `..`, NUL, whiteouts). */
  unusable: string[];
}

/** The profile's files in the order first read, each once (paths are matched, not layer indices: the profile may be another image's). */
export function profileFiles(profile: Profile): ProfileFiles {
  const seen = new Set<string>();
  const paths: string[] = [];
  const unusable: string[] = [];
  for (const r of profile.reads) {
    if (seen.has(r.path)) continue;
    seen.add(r.path);
    const p = r.path.startsWith('/') ? undefined : frontPath(r.path);
    if (p === undefined || p === '' || p.slice(p.lastIndexOf('/') + 1).startsWith('.wh.')) unusable.push(r.path);
    else if (!seen.has(`\0${p}`)) {
      seen.add(`\0${p}`);
      paths.push(p);
    }
  }
  return { paths, unusable };
}
