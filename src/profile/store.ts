/**
 * Profiles kept beside the chunk cache: `<cache dir>/profiles/<manifest hex>.json`, one per
 * image. `tocfs cache clear` leaves them (they are small and what makes the next cold start
 * fast); `tocfs cache clear --profiles` and `tocfs profile rm` remove them.
 */
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DIR_MODE, isNotFound, writeAtomic } from '../cache/files.js';
import { digestHex, isDigest } from '../digest.js';
import { MAX_PROFILE_BYTES, parseProfile, serializeProfile, type Profile } from './profile.js';

/** Profiles looked at when searching by layer or repository; past it the oldest are not considered. */
const MAX_SCANNED = 1000;

/** How a profile was found for an image: its own, one sharing a layer, or one of the same repository. */
export type ProfileMatch = 'manifest' | 'layer' | 'repository';

export interface ImageKey {
  manifestDigest: string;
  repository?: string | undefined;
  layerDigests: readonly string[];
}

export interface FoundProfile {
  profile: Profile;
  match: ProfileMatch;
  /** Where it came from, for logs and warnings. */
  source: string;
}

/** At most MAX_PROFILE_BYTES + 1 bytes of a file, so parseProfile refuses a larger one without it being read whole. */
async function readBounded(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(MAX_PROFILE_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

/** A profile file (a file name, or anything handed over): read bounded, parsed as hostile input. */
export async function readProfileFile(path: string): Promise<Profile> {
  return parseProfile(await readBounded(path), path);
}

export class ProfileStore {
  readonly dir: string;

  constructor(
    cacheDir: string,
    private readonly log: Logger,
  ) {
    this.dir = join(cacheDir, 'profiles');
  }

  private path(manifestDigest: string): string {
    return join(this.dir, `${digestHex(manifestDigest)}.json`);
  }

  async save(profile: Profile): Promise<string> {
    await mkdir(join(this.dir, 'tmp'), { recursive: true, mode: DIR_MODE });
    const path = this.path(profile.image.manifestDigest);
    await writeAtomic(join(this.dir, 'tmp'), path, serializeProfile(profile));
    return path;
  }

  /** The profile of one image, or undefined; a damaged file is a warning and a miss. */
  async load(manifestDigest: string): Promise<Profile | undefined> {
    return this.read(this.path(manifestDigest));
  }

  private async read(path: string): Promise<Profile | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readBounded(path);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    try {
      return parseProfile(bytes, path);
    } catch (e) {
      this.log.warn({ profile: path, reason: (e as Error).message }, 'profile not used');
      return undefined;
    }
  }

  /** Every stored profile, newest first. */
  async list(): Promise<Array<{ path: string; profile: Profile }>> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => /^[0-9a-f]{64}\.json$/.test(n));
    } catch (e) {
      if (isNotFound(e)) return [];
      throw e;
    }
    const out: Array<{ path: string; profile: Profile }> = [];
    for (const n of names.slice(0, MAX_SCANNED)) {
      const path = join(this.dir, n);
      const profile = await this.read(path);
      if (profile) out.push({ path, profile });
    }
    return out.sort((a, b) => b.profile.created.localeCompare(a.profile.created));
  }

  /**
   * The best profile for an image: its own; else the newest one recorded on an image that
   * shares a layer with it; else the newest one of the same repository (app:v1's for app:v2).
   */
  async find(image: ImageKey): Promise<FoundProfile | undefined> {
    const own = await this.load(image.manifestDigest);
    if (own) return { profile: own, match: 'manifest', source: this.path(image.manifestDigest) };
    const all = await this.list();
    const layers = new Set(image.layerDigests);
    const byLayer = all.find(({ profile }) => profile.layers.some((l) => layers.has(l.digest)));
    if (byLayer) return { profile: byLayer.profile, match: 'layer', source: byLayer.path };
    const byRepo = image.repository ? all.find(({ profile }) => profile.image.repository === image.repository) : undefined;
    if (byRepo) return { profile: byRepo.profile, match: 'repository', source: byRepo.path };
    return undefined;
  }

  async remove(manifestDigest: string): Promise<boolean> {
    if (!isDigest(manifestDigest)) return false;
    try {
      await rm(this.path(manifestDigest));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async clear(): Promise<number> {
    const n = (await this.list()).length;
    await rm(this.dir, { recursive: true, force: true });
    return n;
  }
}
