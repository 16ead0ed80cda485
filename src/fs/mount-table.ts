/** tocfs mounts as the kernel's mount table shows them (no FUSE binding needed to ask). */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';

export const FS_SUBTYPE = 'tocfs';
/** `fuse.tocfs` in /proc/self/mountinfo. */
export const FS_TYPE = `fuse.${FS_SUBTYPE}`;

/** Octal escapes of /proc/self/mountinfo (`\040` for a space). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mounts at `mountpoint` with their filesystem types, innermost last. */
export async function mountsAt(mountpoint: string): Promise<string[]> {
  const mnt = resolve(mountpoint);
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const types: string[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 10 || unescapeMountPath(fields[4]!) !== mnt) continue;
    const sep = fields.indexOf('-', 6);
    if (sep > 0) types.push(fields[sep + 1]!);
  }
  return types;
}

/** Is there a tocfs mount at `mountpoint` (live or stale)? */
export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountsAt(mountpoint)).includes(FS_TYPE);
}
