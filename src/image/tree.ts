/**
 * Inode trees built from layer TOCs: the merged root filesystem of an image (overlay
 * rules) and the own tree of one layer.
 *
 * A node points at the TocEntry it came from instead of copying its fields, so a tree
 * costs one small object per name plus a Map per directory; the tree of a parsed TOC's plain
 * layer (lazyLayerTree) makes those only for the directories looked into.
 */
import { FormatError, preview } from '../errors.js';
import { isColumnar } from '../formats/toc-binary.js';
import { plainEntry, type LayerToc, type TocEntry } from '../formats/toc.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

/**
 * Directories that no layer states but a deeper path needs get this metadata: 0755,
 * owned by root, mtime at the epoch — deterministic, independent of which child came
 * first, and recognisably synthetic. (The `implicit` flag says so too.)
 */
const IMPLICIT_DIR_MODE = 0o755;

export class FsNode {
  /** Stable inode number: nodes are numbered in creation order (root = 1), so the same TOCs give the same numbers. */
  readonly ino: number;
  /** Metadata, and for regular files the content; for hard links the target's entry. */
  entry: TocEntry;
  /** Index (bottom = 0) of the layer that provided the entry, i.e. whose blob holds the content. */
  layer: number;
  /** Names that refer to this node (files); 2 + subdirectories (directories). Set by the builder's last pass (0 until then). */
  nlink = 0;
  protected kids: Map<string, FsNode> | undefined;
  /** A directory synthesised for a deeper path, with no entry of its own. */
  implicit: boolean;

  constructor(ino: number, entry: TocEntry, layer: number, implicit = false) {
    this.ino = ino;
    this.entry = entry;
    this.layer = layer;
    this.kids = entry.type === 'dir' ? new Map() : undefined;
    this.implicit = implicit;
  }

  /** Children by name (directories only). */
  get children(): Map<string, FsNode> | undefined {
    return this.kids;
  }

  get isDir(): boolean {
    return this.kids !== undefined;
  }
}

/** A directory of a lazily built layer tree (lazyLayerTree): its children are made on first use. */
class LazyDir extends FsNode {
  constructor(
    ino: number,
    entry: TocEntry,
    layer: number,
    implicit: boolean,
    private index: LayerIndex | undefined,
    /** Its slot in the index: 0 the root, row + 1 a directory entry. */
    private readonly slot: number,
  ) {
    super(ino, entry, layer, implicit);
    this.kids = undefined;
  }

  override get children(): Map<string, FsNode> {
    if (this.index) {
      this.kids = this.index.children(this.slot);
      this.index = undefined;
    }
    return this.kids!;
  }

  override get isDir(): boolean {
    return true;
  }
}

export interface TreeEntry {
  /** Normalised path ('' = root). */
  path: string;
  node: FsNode;
}

export class FsTree {
  constructor(
    readonly root: FsNode,
    /** Number of distinct inodes (hard links counted once). */
    readonly inodeCount: number,
    private knownContentBytes?: number,
  ) {}

  /** The bytes of every regular file, hard links counted once (what statfs reports as used). */
  get contentBytes(): number {
    if (this.knownContentBytes === undefined) {
      let n = 0;
      const seen = new Set<FsNode>();
      const stack = [this.root];
      while (stack.length > 0) {
        for (const child of stack.pop()!.children!.values()) {
          if (child.isDir) stack.push(child);
          else if (child.entry.type === 'reg' && !seen.has(child)) {
            seen.add(child);
            n += child.entry.size;
          }
        }
      }
      this.knownContentBytes = n;
    }
    return this.knownContentBytes;
  }

  /** The node at a normalised path (`''` or `/` is the root; a leading `/` is accepted), following no symlinks. */
  lookup(path: string): FsNode | undefined {
    let node: FsNode | undefined = this.root;
    let start = path.charCodeAt(0) === 0x2f ? 1 : 0;
    const end = path.length > start && path.charCodeAt(path.length - 1) === 0x2f ? path.length - 1 : path.length;
    while (start < end) {
      let slash = path.indexOf('/', start);
      if (slash < 0 || slash > end) slash = end;
      const children: Map<string, FsNode> | undefined = node.children;
      if (!children) return undefined;
      node = children.get(path.slice(start, slash));
      if (!node) return undefined;
      start = slash + 1;
    }
    return node;
  }

  /**
   * The node a path names inside the image, following symlinks as the kernel would in a
   * chroot (absolute targets start at the image root, `..` stops at it); the last component
   * is followed only when `followLast`. Returns an errno-like reason when it cannot.
   */
  resolve(path: string, followLast = true): { node: FsNode; path: string } | { error: 'ENOENT' | 'ENOTDIR' | 'ELOOP' } {
    const MAX_SYMLINKS = 40;
    let hops = 0;
    const stack: Array<{ name: string; node: FsNode }> = [];
    const pending = path.split('/').filter((p) => p !== '' && p !== '.').reverse();
    while (pending.length > 0) {
      const part = pending.pop()!;
      const dir = stack.length > 0 ? stack[stack.length - 1]!.node : this.root;
      if (part === '..') {
        stack.pop();
        continue;
      }
      if (!dir.children) return { error: 'ENOTDIR' };
      const child = dir.children.get(part);
      if (!child) return { error: 'ENOENT' };
      if (child.entry.type === 'symlink' && (pending.length > 0 || followLast)) {
        if (++hops > MAX_SYMLINKS) return { error: 'ELOOP' };
        const target = child.entry.linkName ?? '';
        if (target.startsWith('/')) stack.length = 0;
        pending.push(...target.split('/').filter((p) => p !== '' && p !== '.').reverse());
        continue;
      }
      stack.push({ name: part, node: child });
    }
    const last = stack[stack.length - 1];
    return { node: last ? last.node : this.root, path: stack.map((s) => s.name).join('/') };
  }

  /** Every name in the tree, depth first, children in byte order of their names; the root first. */
  *walk(from = ''): Generator<TreeEntry> {
    const start = this.lookup(from);
    if (!start) return;
    const stack: TreeEntry[] = [{ path: from.replace(/^\/+|\/+$/g, ''), node: start }];
    while (stack.length > 0) {
      const item = stack.pop()!;
      yield item;
      const children = item.node.children;
      if (!children) continue;
      const names = sortedNames(children);
      for (let i = names.length - 1; i >= 0; i--) {
        const name = names[i]!;
        stack.push({ path: item.path === '' ? name : `${item.path}/${name}`, node: children.get(name)! });
      }
    }
  }
}

/** Names of a directory in byte order of their UTF-8 (what `ls` and readdir show, and what tests compare). */
export function sortedNames(children: Map<string, FsNode>): string[] {
  const names = [...children.keys()];
  // UTF-16 code-unit order is UTF-8 byte order unless surrogates meet U+E000..U+FFFF.
  if (!names.some((n) => /[\uD800-\uFFFF]/.test(n))) return names.sort();
  const keyed = names.map((name) => ({ name, bytes: Buffer.from(name) }));
  keyed.sort((a, b) => Buffer.compare(a.bytes, b.bytes));
  return keyed.map((k) => k.name);
}

/** How whiteouts (`.wh.NAME`, `.wh..wh..opq`) appear in a single layer's tree. */
export type WhiteoutForm =
  /** As the empty regular files they are in the tar (what `tocfs ls --layer` shows). */
  | 'files'
  /** Overlayfs-native: `.wh.NAME` becomes a char device 0:0 named NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory. */
  | 'overlay';

export interface LayerTreeOptions {
  whiteouts?: WhiteoutForm;
}

/**
 * Trees of bottom layers without whiteouts. Such a layer's own tree (either whiteout form)
 * is the same as the merged tree of it alone, so the store's diff and chain views of it, or
 * a mount and `--layer` of it, share one. (Trees never change once built.)
 */
const bottomTrees = new WeakMap<LayerToc, FsTree>();

function sharedBottomTree(toc: LayerToc, build: () => TreeBuilder): FsTree {
  const known = bottomTrees.get(toc);
  if (known) return known;
  const lazy = lazyLayerTree(toc, 0);
  if (lazy) {
    bottomTrees.set(toc, lazy);
    return lazy;
  }
  const b = build();
  const tree = b.finish();
  if (!b.sawWhiteout) bottomTrees.set(toc, tree);
  return tree;
}

/** The tree of one layer on its own. */
export function buildLayerTree(toc: LayerToc, layerIndex: number, options: LayerTreeOptions = {}): FsTree {
  const build = (): TreeBuilder => {
    const b = new TreeBuilder();
    if (options.whiteouts === 'overlay') b.addLayerOverlayForm(toc, layerIndex);
    else b.addLayer(toc, layerIndex, false);
    return b;
  };
  return layerIndex === 0 ? sharedBottomTree(toc, build) : (lazyLayerTree(toc, layerIndex) ?? build().finish());
}

/** The merged root filesystem of an image: layers bottom first, overlay rules, whiteouts hidden. */
export function mergeLayers(tocs: readonly LayerToc[]): FsTree {
  const build = (): TreeBuilder => {
    const b = new TreeBuilder();
    tocs.forEach((toc, i) => b.addLayer(toc, i, true));
    return b;
  };
  return tocs.length === 1 ? sharedBottomTree(tocs[0]!, build) : build().finish();
}

/**
 * Where each entry of a layer sits, for a tree whose directories are filled on first use:
 * children by parent slot (0 the root, row + 1 a directory entry), in TOC order.
 */
class LayerIndex {
  constructor(
    private readonly toc: LayerToc,
    private readonly layer: number,
    private readonly rootRow: number,
    /** childRows[childStart[slot] .. childStart[slot + 1]) are the rows of slot's children. */
    private readonly childStart: Int32Array,
    private readonly childRows: Int32Array,
    /** Subdirectories per slot (for nlink). */
    private readonly subdirs: Int32Array,
  ) {}

  /** The eager builder's numbering: the root 1, then one per entry in TOC order (the root's entry makes none). */
  private ino(row: number): number {
    return 2 + row - (this.rootRow >= 0 && this.rootRow < row ? 1 : 0);
  }

  root(): FsNode {
    const entry = this.rootRow >= 0 ? this.toc.entries.at(this.rootRow)! : implicitDirEntry('');
    const root = new LazyDir(1, entry, this.rootRow >= 0 ? this.layer : 0, this.rootRow < 0, this, 0);
    root.nlink = 2 + this.subdirs[0]!;
    return root;
  }

  children(slot: number): Map<string, FsNode> {
    const map = new Map<string, FsNode>();
    const entries = this.toc.entries;
    for (let k = this.childStart[slot]!, end = this.childStart[slot + 1]!; k < end; k++) {
      const row = this.childRows[k]!;
      const e = entries.at(row)!;
      const path = e.path;
      let node: FsNode;
      if (e.type === 'dir') {
        node = new LazyDir(this.ino(row), e, this.layer, false, this, row + 1);
        node.nlink = 2 + this.subdirs[row + 1]!;
      } else {
        node = new FsNode(this.ino(row), e, this.layer);
        node.nlink = 1;
      }
      map.set(path.slice(path.lastIndexOf('/') + 1), node);
    }
    return map;
  }
}

/**
 * The tree of one layer with its directories filled on first lookup (a 100k-entry TOC is
 * mounted without a node per entry), for the layers where that tree is plainly the TOC's: a
 * parsed TOC (the normaliser let no path in twice) without whiteouts or hard links, each
 * entry's directory stated before it. It is the tree TreeBuilder makes of such a layer, node
 * for node and inode for inode. Undefined for any other layer, which TreeBuilder builds.
 */
function lazyLayerTree(toc: LayerToc, layer: number): FsTree | undefined {
  if (!isColumnar(toc)) return undefined;
  const n = toc.entries.length;
  const parentSlot = new Int32Array(n);
  const isDir = new Uint8Array(n);
  const dirSlots = new Map<string, number>();
  let rootRow = -1;
  let lastDir = '';
  let lastSlot = 0;
  let bytes = 0;
  let row = 0;
  for (const e of toc.entries) {
    const r = row++;
    const type = e.type;
    const path = e.path;
    if (type === 'hardlink') return undefined;
    if (path === '') {
      if (type !== 'dir') return undefined;
      rootRow = r;
      parentSlot[r] = -1;
      continue;
    }
    const slash = path.lastIndexOf('/');
    if (path.startsWith(WHITEOUT_PREFIX, slash + 1)) return undefined;
    let slot = 0;
    if (slash >= 0) {
      if (slash === lastDir.length && lastDir !== '' && path.startsWith(lastDir)) slot = lastSlot;
      else {
        lastDir = path.slice(0, slash);
        const known = dirSlots.get(lastDir);
        if (known === undefined) return undefined;
        slot = lastSlot = known;
      }
    }
    parentSlot[r] = slot;
    if (type === 'dir') {
      isDir[r] = 1;
      dirSlots.set(path, r + 1);
    } else if (type === 'reg') bytes += e.size;
  }
  const childStart = new Int32Array(n + 2);
  const subdirs = new Int32Array(n + 1);
  for (let r = 0; r < n; r++) {
    const p = parentSlot[r]!;
    if (p < 0) continue;
    childStart[p + 1]!++;
    if (isDir[r]) subdirs[p]!++;
  }
  for (let s = 0; s <= n; s++) childStart[s + 1]! += childStart[s]!;
  const fill = childStart.slice(0, n + 1);
  const childRows = new Int32Array(childStart[n + 1]!);
  for (let r = 0; r < n; r++) {
    const p = parentSlot[r]!;
    if (p >= 0) childRows[fill[p]!++] = r;
  }
  const index = new LayerIndex(toc, layer, rootRow, childStart, childRows, subdirs);
  return new FsTree(index.root(), 1 + n - (rootRow >= 0 ? 1 : 0), bytes);
}

function splitPath(path: string): { dir: string; name: string } {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? { dir: '', name: path } : { dir: path.slice(0, slash), name: path.slice(slash + 1) };
}

/** `.wh..` and `.wh...` would hide (or, as overlay whiteout devices, create) `.` and `..`. */
function checkWhiteout(name: string, path: string, layer: number): void {
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === '.' || hidden === '..') throw new FormatError(`layer ${layer}: whiteout ${preview(path, 200)} names ${JSON.stringify(hidden)}, which is not a file`);
}

const EPOCH = Object.freeze({ sec: 0, nsec: 0 });
const NO_CHUNKS: TocEntry['chunks'] = Object.freeze([]) as unknown as TocEntry['chunks'];

function implicitDirEntry(path: string): TocEntry {
  return { path, type: 'dir', mode: IMPLICIT_DIR_MODE, uid: 0, gid: 0, size: 0, mtime: EPOCH, chunks: NO_CHUNKS };
}

/** A map for a layer's hard-link targets, or none when it has no hard links (a path -> node map of every file costs a big layer dearly). */
function linkTargets(toc: LayerToc): Map<string, FsNode> | undefined {
  for (const e of toc.entries) if (e.type === 'hardlink') return new Map();
  return undefined;
}

class TreeBuilder {
  /** A layer added had a whiteout (`.wh.*`), which the forms of a layer tree show differently. */
  sawWhiteout = false;
  private nextIno = 1;
  /** The directory the previous entry went into (valid while no directory leaves the tree). */
  private lastDir: { path: string; node: FsNode } | undefined;
  readonly root: FsNode;

  constructor() {
    this.root = this.node(implicitDirEntry(''), 0, true);
  }

  private node(entry: TocEntry, layer: number, implicit = false): FsNode {
    return new FsNode(this.nextIno++, entry, layer, implicit);
  }

  /** The directory at `path`, if the tree has one there now (no creation). */
  private findDir(path: string): FsNode | undefined {
    let node = this.root;
    if (path === '') return node;
    for (const part of path.split('/')) {
      const child = node.children!.get(part);
      if (!child || !child.isDir) return undefined;
      node = child;
    }
    return node;
  }

  /** The directory at `path`, synthesising missing ones; a non-directory in the way is replaced (a directory replaces a non-directory). */
  private ensureDir(path: string, layer: number): FsNode {
    let node = this.root;
    if (path === '') return node;
    let at = 0;
    for (;;) {
      const slash = path.indexOf('/', at);
      const end = slash < 0 ? path.length : slash;
      const part = path.slice(at, end);
      let child = node.children!.get(part);
      if (!child || !child.isDir) {
        child = this.node(implicitDirEntry(path.slice(0, end)), layer, true);
        node.children!.set(part, child);
      }
      node = child;
      if (slash < 0) return node;
      at = slash + 1;
    }
  }

  /** Applies a layer's whiteouts (when `merge`) to what is below, then adds its entries. */
  addLayer(toc: LayerToc, layer: number, merge: boolean): void {
    if (merge) {
      for (const e of toc.entries) {
        const path = e.path;
        if (!path.includes(WHITEOUT_PREFIX)) continue;
        const { dir, name } = splitPath(path);
        if (!name.startsWith(WHITEOUT_PREFIX)) continue;
        this.sawWhiteout = true;
        checkWhiteout(name, path, layer);
        const parent = this.findDir(dir);
        if (!parent) continue;
        this.lastDir = undefined;
        if (name === OPAQUE_WHITEOUT) parent.children!.clear();
        else parent.children!.delete(name.slice(WHITEOUT_PREFIX.length));
      }
    }
    const inodes = linkTargets(toc);
    for (const e of toc.entries) {
      const path = e.path;
      if (path.includes(WHITEOUT_PREFIX) && splitPath(path).name.startsWith(WHITEOUT_PREFIX)) {
        this.sawWhiteout = true;
        if (merge) continue;
      }
      this.add(e, layer, inodes, path);
    }
  }

  /** A layer as overlayfs wants it on disk: whiteout devices first (the layer's own entries may replace them), opaque markers last. */
  addLayerOverlayForm(toc: LayerToc, layer: number): void {
    const opaque: string[] = [];
    const rest: TocEntry[] = [];
    const inodes = linkTargets(toc);
    for (const e of toc.entries) {
      const { dir, name } = splitPath(e.path);
      if (name.startsWith(WHITEOUT_PREFIX)) this.sawWhiteout = true;
      if (name === OPAQUE_WHITEOUT) opaque.push(dir);
      else if (name.startsWith(WHITEOUT_PREFIX) && name.length > WHITEOUT_PREFIX.length) {
        checkWhiteout(name, e.path, layer);
        const target = dir === '' ? name.slice(WHITEOUT_PREFIX.length) : `${dir}/${name.slice(WHITEOUT_PREFIX.length)}`;
        const device: TocEntry = { path: target, type: 'char', mode: e.mode, uid: e.uid, gid: e.gid, size: 0, mtime: e.mtime, devMajor: 0, devMinor: 0, chunks: NO_CHUNKS };
        this.add(device, layer, inodes);
      } else rest.push(e);
    }
    for (const e of rest) this.add(e, layer, inodes);
    for (const dir of opaque) {
      const node = this.ensureDir(dir, layer);
      node.entry = { ...plainEntry(node.entry), xattrs: { ...node.entry.xattrs, [OVERLAY_OPAQUE_XATTR]: Buffer.from('y') } };
    }
  }

  /**
   * Adds one entry at `path` (its own, read once: an entry of a parsed TOC makes it anew on
   * each read); `inodes` maps this layer's non-directory paths to their nodes, for its hard
   * links (none: no map).
   */
  private add(e: TocEntry, layer: number, inodes: Map<string, FsNode> | undefined, path = e.path): void {
    const type = e.type;
    if (path === '') {
      if (type !== 'dir') throw new FormatError(`layer ${layer}: the root entry is a ${type}, not a directory`);
      this.root.entry = e;
      this.root.layer = layer;
      this.root.implicit = false;
      return;
    }
    const { dir, name } = splitPath(path);
    // Archives list a directory's entries together: remember the last parent.
    let parent: FsNode;
    if (this.lastDir !== undefined && this.lastDir.path === dir) parent = this.lastDir.node;
    else {
      parent = this.ensureDir(dir, layer);
      this.lastDir = { path: dir, node: parent };
    }
    const existing = parent.children!.get(name);
    if (existing?.isDir && type !== 'dir') this.lastDir = undefined; // a directory leaves the tree
    if (type === 'dir') {
      if (existing?.isDir) {
        // Directories merge: the upper entry's metadata, the union of children.
        existing.entry = e;
        existing.layer = layer;
        existing.implicit = false;
      } else {
        parent.children!.set(name, this.node(e, layer));
      }
      return;
    }
    let node: FsNode;
    if (type === 'hardlink') {
      const target = inodes?.get(e.linkName ?? '');
      if (!target) throw new FormatError(`layer ${layer}: hard link ${preview(path, 200)} to ${preview(e.linkName, 200)}: no earlier non-directory of that name in the layer`);
      node = target;
    } else {
      node = this.node(e, layer);
    }
    inodes?.set(path, node);
    parent.children!.set(name, node);
  }

  /** Counts links (names per inode, 2 + subdirectories per directory) and inodes; nodes start at nlink 0. */
  finish(): FsTree {
    let inodes = 1;
    const stack: FsNode[] = [this.root];
    this.root.nlink = 2;
    while (stack.length > 0) {
      const dir = stack.pop()!;
      for (const child of dir.children!.values()) {
        if (child.isDir) {
          dir.nlink++;
          child.nlink = 2;
          inodes++;
          stack.push(child);
        } else if (child.nlink++ === 0) {
          inodes++;
        }
      }
    }
    return new FsTree(this.root, inodes);
  }
}
