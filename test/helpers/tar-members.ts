/**
 * A tar stream as its members in order, each with its own bytes, and the order rules an
 * extractor relies on: for tests of writers that reorder members (front-order.ts).
 */
import { frontPath } from '../../src/formats/writer/front-order.js';
import { scanTar } from '../../src/formats/tar/read.js';

export interface TarMember {
  path: string;
  type: string;
  /** A hard link's target. */
  link?: string;
  /** Its header blocks, content and the padding after it. */
  bytes: Buffer;
}

/** The members of a tar stream in order. */
export async function tarMembers(tar: Buffer): Promise<TarMember[]> {
  const out: TarMember[] = [];
  let last: { m: TarMember; parts: Buffer[] } | undefined;
  for await (const ev of scanTar([tar])) {
    if (ev.kind === 'trailing') continue;
    if (last) last.m.bytes = Buffer.concat([...last.parts, ev.raw.subarray(0, ev.padding)]);
    last = undefined;
    if (ev.kind !== 'entry') continue;
    const parts = [ev.raw.subarray(ev.padding)];
    for await (const b of ev.content) parts.push(Buffer.from(b));
    const m: TarMember = { path: frontPath(ev.header.name)!, type: ev.header.type, ...(ev.header.type === 'hardlink' ? { link: frontPath(ev.header.linkName)! } : {}), bytes: Buffer.alloc(0) };
    out.push(m);
    last = { m, parts };
  }
  return out;
}

/** What makes a tar extractable in order: a member's parent directories (those the tar has) before it, a hard link after its target. */
export function tarOrderProblems(members: readonly TarMember[]): string[] {
  const all = new Set(members.map((m) => m.path));
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const m of members) {
    const parts = m.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (all.has(dir) && !seen.has(dir)) problems.push(`${m.path} before its directory ${dir}`);
    }
    if (m.link !== undefined && all.has(m.link) && !seen.has(m.link)) problems.push(`hard link ${m.path} before its target ${m.link}`);
    seen.add(m.path);
  }
  return problems;
}
