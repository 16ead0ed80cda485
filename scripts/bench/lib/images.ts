/**
 * The benchmark's images, built from files already on this machine: a language-runtime image
 * (Python with its standard library and packages, plus a JDK), a pair of images sharing ~95 %
 * of their files, and synthetic images with 1k…100k entries for mount-time measurements.
 * Each is tarred by GNU tar into a plain OCI layout, then compressed by the real tools:
 * skopeo for gzip, zstd and zstd:chunked, and `tocfs convert` for eStargz (when available).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, stat, symlink, appendFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { OciLayoutWriter } from '../../../src/convert/layout.js';
import { hostPlatform } from '../../../src/source/manifest.js';
import { LayerMediaTypes } from '../../../src/formats/writer/types.js';
import { run } from './proc.js';

/** `estargz-opt`: eStargz with the files the container command opens placed first (prefetched at mount). */
export type LayerFormat = 'gzip' | 'zstd' | 'zstd:chunked' | 'estargz' | 'estargz-opt';
export const LAYER_FORMATS: LayerFormat[] = ['gzip', 'zstd', 'zstd:chunked', 'estargz'];

export interface BuiltImage {
  name: string;
  /** Uncompressed layer tar size. */
  tarBytes: number;
  files: number;
  /** OCI layout per format; a format missing here is unavailable, with the reason in `unavailable`. */
  layouts: Partial<Record<LayerFormat, string>>;
  /** Compressed layer size per format. */
  layerBytes: Partial<Record<LayerFormat, number>>;
  unavailable: Partial<Record<LayerFormat, string>>;
  /** Formats not written by skopeo / the usual tool. */
  writtenBy?: Partial<Record<LayerFormat, string>>;
}

/** The Python interpreter the runtime image carries, with every library it and its extension modules link. */
const PYTHON = '/usr/bin/python3.11';
const PY_STDLIB = '/usr/lib/python3.11';
const PY_PACKAGES = '/usr/lib/python3/dist-packages';
const JDK = '/usr/lib/jvm/java-17-openjdk-amd64';

/** What `podman run` executes in the runtime images: a Python start-up importing common modules. */
export const READY_COMMAND = [
  '/usr/bin/python3',
  '-c',
  'import json, email.parser, http.client, asyncio, decimal, logging, argparse, xml.etree.ElementTree, urllib.request, unittest; print("ready")',
];

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return 'sha256:' + h.digest('hex');
}

async function sharedLibraries(paths: string[]): Promise<string[]> {
  const libs = new Set<string>();
  for (const p of paths) {
    const r = await run(['ldd', p], { check: false });
    for (const m of r.stdout.matchAll(/(?:=>\s*)?(\/\S+\.so[^\s]*)\s+\(0x/g)) libs.add(m[1]!);
  }
  return [...libs];
}

async function listFiles(dir: string, pred: (name: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && pred(e.name)) out.push(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
  }
  return out;
}

/** Copies host directories into `stage` at the same place, keeping modes and symlinks. */
async function copyIn(stage: string, paths: string[]): Promise<void> {
  if (!paths.length) return;
  const rel = paths.map((p) => p.replace(/^\//, ''));
  await run(['sh', '-c', 'tar -C / -cf - "$@" | tar -C "$0" -xf -', stage, ...rel]);
}

/** A Python runtime tree; with `withJdk`, also a JDK and the Python packages (the ≥ 200 MB image). */
export async function stageRuntime(stage: string, withJdk: boolean): Promise<void> {
  await rm(stage, { recursive: true, force: true });
  await mkdir(join(stage, 'usr', 'bin'), { recursive: true });
  // merged /usr, as on the host
  await symlink('usr/lib', join(stage, 'lib'));
  await symlink('usr/lib64', join(stage, 'lib64'));
  await copyIn(stage, [PY_STDLIB, ...(withJdk ? [PY_PACKAGES, JDK] : [])]);
  await copyFile(PYTHON, join(stage, 'usr', 'bin', 'python3.11'));
  await symlink('python3.11', join(stage, 'usr', 'bin', 'python3'));
  const dynload = await listFiles(join(PY_STDLIB, 'lib-dynload'), (n) => n.endsWith('.so'));
  const libs = await sharedLibraries([PYTHON, ...dynload]);
  const real = libs.map((l) => l.replace(/^\/lib64\//, '/usr/lib/x86_64-linux-gnu/').replace(/^\/lib\//, '/usr/lib/'));
  for (const l of real) {
    const dst = join(stage, l);
    await mkdir(dirname(dst), { recursive: true });
    await copyFile(l, dst).catch(() => undefined);
  }
  await mkdir(join(stage, 'usr', 'lib64'), { recursive: true });
  await symlink('../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', join(stage, 'usr', 'lib64', 'ld-linux-x86-64.so.2'));
  for (const d of ['etc', 'tmp', 'proc', 'sys', 'dev']) await mkdir(join(stage, d), { recursive: true });
  await writeFile(join(stage, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
}

/**
 * Makes `copy` differ from its source in about one file in `every`: every (every/2)-th Python
 * source file (sorted by path) gets a trailing comment, so the image still runs. (Appending to
 * ELF or .pyc files instead makes skopeo 1.9.3's zstd:chunked writer fail with "short write".)
 */
export async function changeEveryNth(copy: string, every: number): Promise<number> {
  const files = (await listFiles(copy, (n) => n.endsWith('.py'))).sort();
  const all = (await listFiles(copy, () => true)).length;
  const step = Math.max(1, Math.ceil(files.length / (all / every)));
  let changed = 0;
  for (let i = 0; i < files.length; i += step) {
    await appendFile(files[i]!, '\n# changed in v2\n');
    changed++;
  }
  return changed;
}

/** `count` small files (distinct contents) in directories of 1000, for TOC-size measurements. */
export async function stageSynthetic(stage: string, count: number, salt: string): Promise<void> {
  await rm(stage, { recursive: true, force: true });
  for (let d = 0; d * 1000 < count; d++) {
    const dir = join(stage, 'data', `d${String(d).padStart(4, '0')}`);
    await mkdir(dir, { recursive: true });
    const writes: Promise<void>[] = [];
    for (let i = d * 1000; i < Math.min(count, (d + 1) * 1000); i++) {
      writes.push(writeFile(join(dir, `f${i}.txt`), `${salt} file ${i}\n`));
    }
    await Promise.all(writes);
  }
}

async function countFiles(tar: string): Promise<number> {
  const r = await run(['sh', '-c', `tar -tvf '${tar}' | grep -c '^-'`], { check: false });
  return Number(r.stdout.trim()) || 0;
}

/**
 * Tars `stage` and writes a one-layer OCI layout with the uncompressed tar as its layer. File
 * mtimes are kept as staged, as a real image build keeps them: clamping them (tar --mtime)
 * leaves every .pyc older than the recorded source mtime, and Python then reads and
 * recompiles each module's .py on every start, which no real image makes it do.
 */
export async function plainLayout(stage: string, dir: string, tarPath: string): Promise<{ tarBytes: number; files: number }> {
  await mkdir(dirname(tarPath), { recursive: true });
  await run(['tar', '--sort=name', '--numeric-owner', '--owner=0', '--group=0', '-C', stage, '-cf', tarPath, '.']);
  await rm(dir, { recursive: true, force: true });
  const layout = new OciLayoutWriter(dir);
  await layout.init();
  const digest = await sha256File(tarPath);
  const tmp = layout.tempPath();
  await copyFile(tarPath, tmp);
  await layout.adoptBlob(tmp, digest);
  const size = (await stat(tarPath)).size;
  const p = hostPlatform();
  await layout.writeImage({
    config: {
      architecture: p.architecture,
      os: p.os,
      rootfs: { type: 'layers', diff_ids: [digest] },
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: READY_COMMAND },
    },
    layers: [{ mediaType: LayerMediaTypes.tar, digest, size }],
    tag: 'latest',
  });
  return { tarBytes: size, files: await countFiles(tarPath) };
}

async function layerSize(layoutDir: string): Promise<number> {
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8'));
  const m = JSON.parse(await readFile(join(layoutDir, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  return m.layers.reduce((n: number, l: { size: number }) => n + l.size, 0);
}

/** How eStargz layouts are made: `tocfs convert`, if this checkout has it. */
export type Converter = ((src: string, dst: string, format: 'estargz' | 'zstd:chunked', prioritize?: string[]) => Promise<void>) | undefined;

/** Compresses the plain layout into each format. */
export async function buildFormats(
  name: string,
  plain: string,
  outRoot: string,
  base: { tarBytes: number; files: number },
  convert: Converter,
  unavailableReason: string,
  formats: LayerFormat[] = LAYER_FORMATS,
  previous?: BuiltImage,
  prioritize?: string[],
): Promise<BuiltImage> {
  const img: BuiltImage = { name, ...base, layouts: {}, layerBytes: {}, unavailable: {} };
  await mkdir(outRoot, { recursive: true });
  for (const f of formats) {
    if (previous?.layouts[f]) {
      img.layouts[f] = previous.layouts[f];
      img.layerBytes[f] = previous.layerBytes[f];
      continue;
    }
    const dst = join(outRoot, `${name}-${f.replace(':', '-')}`);
    await rm(dst, { recursive: true, force: true });
    try {
      if (f === 'estargz' || f === 'estargz-opt') {
        if (!convert) throw new Error(unavailableReason);
        await convert(plain, dst, 'estargz', f === 'estargz-opt' ? prioritize : undefined);
      } else {
        const skopeo = await run(['skopeo', 'copy', '-q', '--dest-compress', '--dest-compress-format', f, `oci:${plain}:latest`, `oci:${dst}:latest`], { check: false, label: 'skopeo copy' });
        if (skopeo.code !== 0) {
          // skopeo 1.9.3's zstd:chunked writer fails on some trees ("short write"); tocfs's writer does not.
          if (f !== 'zstd:chunked' || !convert) throw new Error(`skopeo copy: ${skopeo.stderr.trim()}`);
          await rm(dst, { recursive: true, force: true });
          await convert(plain, dst, 'zstd:chunked');
          img.writtenBy = { ...img.writtenBy, [f]: 'tocfs convert (skopeo failed)' };
        }
      }
      img.layouts[f] = dst;
      img.layerBytes[f] = await layerSize(dst);
    } catch (e) {
      img.unavailable[f] = (e as Error).message.split('\n')[0]!;
    }
  }
  return img;
}
