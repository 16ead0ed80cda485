/**
 * Real Podman (4.3.1, containers/storage 1.43) accepts what `tocfs convert` writes: the
 * converted layout is pushed with skopeo to a real registry, pulled by podman with partial
 * pulls enabled, and `podman export` of a container must equal the source image's tree
 * (paths, types, modes, owners, sizes, content, link targets, xattrs): the spec of an image
 * tocfs builds (never skipped for want of the corpus), or expected.json `merged`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { convertImage, type ConvertOptions } from '../src/convert/convert.js';
import { normaliseName } from '../src/formats/path.js';
import { scanTar } from '../src/formats/tar/read.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected, type ExpectedEntry } from './helpers/corpus.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';
import { buildImage } from './helpers/images.js';
import { OVERLAY_LAYERS, OVERLAY_MERGED } from './helpers/overlay-image.js';
import { expectedEntries, KINDS_LAYER } from './helpers/spec-expected.js';

const run = promisify(execFile);

async function have(cmd: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
}
const TOOLS = ['podman', 'skopeo', 'docker-registry', 'runc'];
const missing = (await Promise.all(TOOLS.map(async (t) => ((await have(t)) ? undefined : t)))).filter(Boolean);
const noTools = missing.length ? `not installed: ${missing.join(', ')}` : false;
const skip = !HAVE_CORPUS ? 'corpus not present' : noTools;

/** A podman with its own storage (so no blob is reused from an earlier pull) and partial pulls on. */
class Podman {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'root'), { recursive: true });
    await mkdir(join(this.dir, 'run'), { recursive: true });
    await writeFile(join(this.dir, 'storage.conf'), `[storage]
driver = "overlay"
graphroot = "${this.dir}/root"
runroot = "${this.dir}/run"
[storage.options.pull_options]
enable_partial_images = "true"
`);
  }

  async run(...args: string[]): Promise<string> {
    const { stdout } = await run('podman', ['--root', join(this.dir, 'root'), '--runroot', join(this.dir, 'run'), '--storage-driver', 'overlay', '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', ...args], {
      env: { ...process.env, CONTAINERS_STORAGE_CONF: join(this.dir, 'storage.conf') },
      maxBuffer: 16 << 20,
      timeout: 60_000,
    });
    return stdout;
  }

  /** Removes its containers (unmounting their layers) and then its whole storage directory. */
  async reset(): Promise<void> {
    await this.run('rm', '--all', '--force').catch(() => undefined);
    await this.run('rmi', '--all', '--force').catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

interface ExportEntry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  link?: string;
  dev?: [number, number];
  xattrs: Record<string, string>;
}

async function readExport(path: string): Promise<Map<string, ExportEntry>> {
  const out = new Map<string, ExportEntry>();
  for await (const ev of scanTar(createReadStream(path))) {
    if (ev.kind !== 'entry') continue;
    const h = ev.header;
    const n = normaliseName(h.name);
    if (!('path' in n) || n.path === '') continue;
    const e: ExportEntry = { type: h.type, mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, size: h.size, xattrs: Object.fromEntries(Object.entries(h.xattrs).map(([k, v]) => [k, v.toString('base64')])) };
    if (h.type === 'reg') {
      const hash = createHash('sha256');
      for await (const b of ev.content) hash.update(b);
      e.sha256 = hash.digest('hex');
    }
    if (h.type === 'symlink') e.link = h.linkName;
    if (h.type === 'hardlink') {
      const t = normaliseName(h.linkName);
      e.link = 'path' in t ? t.path : h.linkName;
    }
    if (h.type === 'char' || h.type === 'block') e.dev = [h.devMajor, h.devMinor];
    out.set(n.path, e);
  }
  // A hard link carries its target's content.
  for (const e of out.values()) {
    if (e.type === 'hardlink') {
      const t = out.get(e.link!);
      if (t) Object.assign(e, { sha256: t.sha256, size: t.size });
    }
  }
  return out;
}

/**
 * Differences between the export and the expected tree (mtimes are not compared: podman
 * export rounds them, and partial pulls do not set them).
 */
function compareTree(got: Map<string, ExportEntry>, want: ExpectedEntry[]): string[] {
  const problems: string[] = [];
  const wantPaths = new Set(want.map((x) => x.path));
  for (const p of got.keys()) if (!wantPaths.has(p)) problems.push(`${p}: unexpected in the export`);
  for (const x of want) {
    const e = got.get(x.path);
    if (!e) {
      problems.push(`${x.path}: missing from the export`);
      continue;
    }
    const kind = (t: string): string => (t === 'hardlink' ? 'reg' : t);
    const diff = (field: string, a: unknown, b: unknown): void => {
      if (JSON.stringify(a) !== JSON.stringify(b)) problems.push(`${x.path}: ${field}: export ${JSON.stringify(a)}, expected ${JSON.stringify(b)}`);
    };
    diff('type', kind(e.type), kind(x.type));
    diff('mode', e.mode, x.mode);
    diff('owner', [e.uid, e.gid], [x.uid, x.gid]);
    if (x.type === 'reg' || x.type === 'hardlink') {
      diff('size', e.size, x.size);
      diff('sha256', e.sha256, x.sha256);
    }
    if (x.type === 'symlink') diff('link', e.link, x.linkname);
    if (x.type === 'char' || x.type === 'block') diff('device', e.dev, [x.devmajor, x.devminor]);
    diff('xattrs', e.xattrs, x.xattrs ?? {});
  }
  return problems;
}

interface Pulled {
  tree: Map<string, ExportEntry>;
  /** The registry's answers to the GETs of the image's layers (206: a partial pull). */
  layerRequests: Array<{ status: number; bytes: number }>;
}

/** Pulls `name`:latest from `registry` with a fresh Podman in `podmanDir`, exports a container's tree into `tmp`, and reads the registry's log for the GETs of `layerDigests`. */
async function pullExport(registry: TestRegistry, tmp: string, podmanDir: string, name: string, layerDigests: string[]): Promise<Pulled> {
  const podman = new Podman(podmanDir);
  await podman.init();
  try {
    await podman.run('pull', '-q', '--tls-verify=false', `${registry.host}/${name}:latest`);
    const id = (await podman.run('create', `${registry.host}/${name}:latest`, '/bin/true')).trim();
    const exported = join(tmp, `${name}-export.tar`);
    await podman.run('export', '-o', exported, id);
    const layers = new Set(layerDigests);
    const layerRequests: Array<{ status: number; bytes: number }> = [];
    for (const line of registry.log) {
      const m = /"GET \/v2\/([^/]+)\/blobs\/(sha256:[0-9a-f]{64})[^"]*" (\d{3}) (\d+)/.exec(line);
      if (m && m[1] === name && layers.has(m[2]!)) layerRequests.push({ status: Number(m[3]), bytes: Number(m[4]) });
    }
    return { tree: await readExport(exported), layerRequests };
  } finally {
    await podman.reset();
  }
}

/** Converts the OCI layout `source` with `opts`, pushes it to `registry` as `name`:latest (skopeo), then pulls and exports it (pullExport). */
async function convertPullExport(registry: TestRegistry, tmp: string, podmanDir: string, source: string, name: string, opts: ConvertOptions): Promise<Pulled> {
  const layout = join(tmp, name);
  const result = await convertImage(`oci:${source}`, `oci:${layout}`, opts);
  await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://${registry.host}/${name}:latest`], { timeout: 60_000 });
  return pullExport(registry, tmp, podmanDir, name, result.layers.map((l) => l.written.digest));
}

describe('podman pulls converted images', { skip, timeout: 180_000 }, () => {
  let tmp: string;
  let registry: TestRegistry;
  let n = 0;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-convert-podman-'));
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  // podman refuses a runroot path longer than 50 characters: keep the directory names short.
  const podmanDir = (): string => join(tmp, `p${++n}`);
  const convertPullExportHere = (image: string, opts: ConvertOptions): Promise<Pulled> => convertPullExport(registry, tmp, podmanDir(), join(CORPUS_DIR, image), `conv${++n}`, opts);

  /** The same tree as zstd:chunked written by podman 4.3.1 / skopeo 1.9.3 themselves (corpus), pulled the same way. */
  async function controlPull(image: string): Promise<Pulled> {
    const name = await registry.load(join(CORPUS_DIR, image));
    return pullExport(registry, tmp, podmanDir(), name, loadExpected(image).images[0]!.layers);
  }

  it('zstd:chunked (io.github annotations, which podman 4.3.1 predates): full pull, identical tree', async () => {
    const x = loadExpected('gzip-plain-basic');
    const { tree, layerRequests } = await convertPullExportHere('gzip-plain-basic', { format: 'zstd:chunked' });
    assert.ok(layerRequests.some((r) => r.status === 200), 'podman 4.3.1 fetched the whole blob');
    assert.deepEqual(compareTree(tree, x.images[0]!.merged), []);
  });

  // containers/storage 1.43's partial pull itself drops device nodes and FIFOs and leaves
  // owners at 0:0; the control (a layer podman 4.3.1 wrote) shows exactly which differences
  // that makes, and a converted layer must end up with the same tree as the control.
  it('zstd:chunked (legacy annotations) and eStargz: podman pulls them partially, tree as with its own zstd:chunked layer', async () => {
    const x = loadExpected('gzip-plain-basic');
    const control = await controlPull('zstdchunked-podman4-basic');
    assert.ok(control.layerRequests.every((r) => r.status === 206), 'control pulled partially');
    const expectedDeviations = compareTree(control.tree, x.images[0]!.merged);
    const devices = x.images[0]!.merged.filter((e) => ['char', 'block', 'fifo'].includes(e.type)).map((e) => `${e.path}: missing from the export`);
    assert.deepEqual(expectedDeviations.filter((d) => !/: owner: export \[0,0\]/.test(d)), devices, 'the control differs only by owners and device nodes');
    for (const opts of [{ format: 'zstd:chunked', legacyAnnotations: true }, { format: 'estargz' }] as ConvertOptions[]) {
      const { tree, layerRequests } = await convertPullExportHere('gzip-plain-basic', opts);
      assert.ok(layerRequests.length >= 2 && layerRequests.every((r) => r.status === 206), `${opts.format}: partial pull: ${JSON.stringify(layerRequests)}`);
      assert.deepEqual(compareTree(tree, x.images[0]!.merged), expectedDeviations, opts.format);
    }
  });

  it('three layers with whiteouts, as zstd:chunked (legacy annotations) and eStargz: podman applies them', async () => {
    const x = loadExpected('gzip-plain-layers');
    const control = await controlPull('zstdchunked-skopeo19-layers');
    const expectedDeviations = compareTree(control.tree, x.images[0]!.merged);
    for (const opts of [{ format: 'zstd:chunked', legacyAnnotations: true }, { format: 'estargz' }] as ConvertOptions[]) {
      const { tree, layerRequests } = await convertPullExportHere('gzip-plain-layers', opts);
      assert.ok(layerRequests.every((r) => r.status === 206), `${opts.format}: partial pull`);
      assert.deepEqual(compareTree(tree, x.images[0]!.merged), expectedDeviations, opts.format);
    }
  });
});

describe('podman pulls converted images tocfs builds', { skip: noTools, timeout: 180_000 }, () => {
  let tmp: string;
  let registry: TestRegistry;
  let kinds: string;
  let overlay: string;
  let n = 0;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'tocfs-convert-podman-built-'));
    registry = await startRegistry();
    kinds = (await buildImage(join(tmp, 'src-kinds'), { format: 'gzip', layers: [KINDS_LAYER] })).dir;
    overlay = (await buildImage(join(tmp, 'src-overlay'), { format: 'gzip', layers: OVERLAY_LAYERS })).dir;
  });
  after(async () => {
    await registry?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const convertPullExportHere = (source: string, opts: ConvertOptions): Promise<Pulled> => convertPullExport(registry, tmp, join(tmp, `p${++n}`), source, `built${++n}`, opts);

  /** containers/storage 1.43's partial pull leaves owners at 0:0 and drops device nodes and FIFOs (its own zstd:chunked layers show the same). */
  function partialPullDeviations(want: ExpectedEntry[]): string[] {
    const byPath = new Map(want.map((x) => [x.path, x]));
    const out: string[] = [];
    for (const x of want) {
      if (['char', 'block', 'fifo'].includes(x.type)) out.push(`${x.path}: missing from the export`);
      else {
        const src = x.type === 'hardlink' ? byPath.get(x.link_path!)! : x;
        if (src.uid !== 0 || src.gid !== 0) out.push(`${x.path}: owner: export [0,0], expected ${JSON.stringify([x.uid, x.gid])}`);
      }
    }
    return out;
  }

  it('zstd:chunked (io.github annotations, which podman 4.3.1 predates): full pull, the spec\'s tree exactly', async () => {
    const { tree, layerRequests } = await convertPullExportHere(kinds, { format: 'zstd:chunked' });
    assert.ok(layerRequests.some((r) => r.status === 200), 'podman 4.3.1 fetched the whole blob');
    assert.deepEqual(compareTree(tree, await expectedEntries(KINDS_LAYER)), []);
  });

  it('zstd:chunked (legacy annotations) and eStargz: podman pulls them partially; contents, modes, links and xattrs as the spec says', async () => {
    const want = await expectedEntries(KINDS_LAYER);
    for (const opts of [{ format: 'zstd:chunked', legacyAnnotations: true }, { format: 'estargz' }] as ConvertOptions[]) {
      const { tree, layerRequests } = await convertPullExportHere(kinds, opts);
      assert.ok(layerRequests.length >= 2 && layerRequests.every((r) => r.status === 206), `${opts.format}: partial pull: ${JSON.stringify(layerRequests)}`);
      assert.deepEqual(compareTree(tree, want), partialPullDeviations(want), opts.format);
    }
  });

  it('two layers with whiteouts, an opaque directory and replaced types, as zstd:chunked (legacy annotations) and eStargz: podman applies them', async () => {
    for (const opts of [{ format: 'zstd:chunked', legacyAnnotations: true }, { format: 'estargz' }] as ConvertOptions[]) {
      const { tree, layerRequests } = await convertPullExportHere(overlay, opts);
      assert.ok(layerRequests.every((r) => r.status === 206), `${opts.format}: partial pull`);
      const got = Object.fromEntries([...tree].map(([p, e]) => [p, e.type === 'dir' ? 'dir' : e.type === 'symlink' ? `-> ${e.link}` : e.sha256!]));
      const want = Object.fromEntries(Object.entries(OVERLAY_MERGED).map(([p, v]) => [p, v === 'dir' || v.startsWith('-> ') ? v : createHash('sha256').update(v).digest('hex')]));
      assert.deepEqual(got, want, opts.format);
    }
  });
});
