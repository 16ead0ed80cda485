/**
 * File owners as the layer store presents them when it runs as a user other than root, for
 * rootless Podman.
 *
 * Rootless Podman runs in a user namespace that newuidmap/newgidmap set up from the user's
 * /etc/subuid and /etc/subgid ranges: container ID 0 is the user's own ID, container IDs
 * 1, 2, … are the subordinate ranges one after another (sorted by their start, as
 * containers/storage's idtools.createIDMap does). When it unpacks a layer itself, the files
 * land on disk owned by those host IDs. The store must present its layers the same way: an
 * owner the namespace does not map reads as 65534 (the kernel's overflow ID) inside the
 * container, and the kernel (default_permissions) checks modes against the host IDs.
 *
 * The ranges are found as containers/storage finds them (pkg/idtools parseSubidFile): every
 * line whose first field is the user's name or numeric ID, in /etc/subuid for users and in
 * /etc/subgid for groups, both looked up by the user's name (Podman's GetConfiguredMappings
 * passes the user name for both).
 */
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';

/** What an ID outside every range is shown as: the kernel's default overflowuid/overflowgid. */
export const OVERFLOW_ID = 65534;

/** Container IDs [inside, inside + count) are host IDs [outside, outside + count). */
export interface IdRange {
  inside: number;
  outside: number;
  count: number;
}

/** How the store presents owners: container IDs to host IDs. */
export interface IdMap {
  uids: IdRange[];
  gids: IdRange[];
}

export const SUBUID_FILE = '/etc/subuid';
export const SUBGID_FILE = '/etc/subgid';

/** The `start:count` ranges of `/etc/subuid`-style text for `user` (its name or its numeric ID), sorted by start. */
export function parseSubIds(text: string, user: { name: string; id: number }): Array<{ start: number; count: number }> {
  const out: Array<{ start: number; count: number }> = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const parts = line.split(':');
    if (parts.length !== 3) continue;
    if (parts[0] !== user.name && parts[0] !== String(user.id)) continue;
    const start = Number(parts[1]);
    const count = Number(parts[2]);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count <= 0) continue;
    out.push({ start, count });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** Container 0 → `own`, then the subordinate ranges from container ID 1 on (what rootless Podman hands newuidmap). */
export function rangesOf(own: number, sub: Array<{ start: number; count: number }>): IdRange[] {
  const out: IdRange[] = [{ inside: 0, outside: own, count: 1 }];
  let inside = 1;
  for (const r of sub) {
    out.push({ inside, outside: r.start, count: r.count });
    inside += r.count;
  }
  return out;
}

/** The host ID a container ID is presented as; OVERFLOW_ID when no range holds it. */
export function toHost(ranges: readonly IdRange[], id: number): number {
  for (const r of ranges) if (id >= r.inside && id < r.inside + r.count) return r.outside + (id - r.inside);
  return OVERFLOW_ID;
}

/** How many container IDs the ranges cover (for logs). */
export function mappedCount(ranges: readonly IdRange[]): number {
  return ranges.reduce((n, r) => n + r.count, 0);
}

export interface RootlessIdentity {
  uid: number;
  gid: number;
  name: string;
}

/** The identity this process runs as (its real user and group). */
export function currentIdentity(): RootlessIdentity {
  return { uid: process.getuid!(), gid: process.getgid!(), name: userInfo().username };
}

/**
 * The map rootless Podman of `who` uses, read from the subordinate ID files (a missing file
 * is no ranges: Podman then maps container root alone, and so does the store).
 */
export async function rootlessIdMap(who: RootlessIdentity = currentIdentity(), files = { subuid: SUBUID_FILE, subgid: SUBGID_FILE }): Promise<IdMap> {
  const read = (file: string): Promise<string> => readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? '' : Promise.reject(e)));
  const user = { name: who.name, id: who.uid };
  return {
    uids: rangesOf(who.uid, parseSubIds(await read(files.subuid), user)),
    gids: rangesOf(who.gid, parseSubIds(await read(files.subgid), user)),
  };
}
