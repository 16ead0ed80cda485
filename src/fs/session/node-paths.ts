/**
 * The path of each node id the kernel holds (fs/session/session.ts). Ids come in runs (a tree
 * numbers its inodes from 1 in creation order; the store moves each tree into a range of its
 * own, above 2^31), so they are kept in pages of PAGE_SIZE slots: an array element per id
 * instead of a Map entry, whose keys above 2^31 are each a heap number besides. A find over ten
 * 10k-entry images in one store left 200k ids; the store held 142-147 MB after it against 148
 * with a Map. Scattered ids cost no more than a Map: V8 keeps a sparse page as a dictionary.
 */
const PAGE_SIZE = 4096;

interface Page {
  slots: Array<string | undefined>;
  count: number;
}

export class NodePaths implements Iterable<[number, string]> {
  private readonly pages = new Map<number, Page>();

  get(id: number): string | undefined {
    const key = Math.floor(id / PAGE_SIZE);
    return this.pages.get(key)?.slots[id - key * PAGE_SIZE];
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  set(id: number, path: string): void {
    const key = Math.floor(id / PAGE_SIZE);
    let page = this.pages.get(key);
    if (!page) {
      page = { slots: [], count: 0 };
      this.pages.set(key, page);
    }
    const at = id - key * PAGE_SIZE;
    if (page.slots[at] === undefined) page.count++;
    page.slots[at] = path;
  }

  delete(id: number): void {
    const key = Math.floor(id / PAGE_SIZE);
    const page = this.pages.get(key);
    const at = id - key * PAGE_SIZE;
    if (!page || page.slots[at] === undefined) return;
    page.slots[at] = undefined;
    if (--page.count === 0) this.pages.delete(key);
  }

  *[Symbol.iterator](): Iterator<[number, string]> {
    for (const [key, page] of this.pages) {
      for (let at = 0; at < page.slots.length; at++) {
        const path = page.slots[at];
        if (path !== undefined) yield [key * PAGE_SIZE + at, path];
      }
    }
  }
}
