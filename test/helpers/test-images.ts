/**
 * The images a registry-client suite runs on: one tocfs builds (never skipped) and, when the
 * corpus is present, a corpus image. A suite is written once and run on each:
 *
 *   for (const image of [builtTestImage('regauth', LAYERS), corpusTestImage('zstdchunked-skopeo118-layers')]) {
 *     describe(`htpasswd authentication, ${image.label}`, { skip: image.skip }, () => { … await image.dir() … });
 *   }
 *
 * Only the corpus variant skips without the corpus; the built one needs nothing but Node.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { ResolveOptions } from '../../src/source/types.js';
import { CORPUS_DIR, HAVE_CORPUS, loadExpected } from './corpus.js';
import { buildImage, type BuiltImage, type FileSpec, type ImageFormat } from './images.js';
import type { BuiltMultiArchImage } from './multiarch.js';

export interface TestImage {
  /** For suite names: "image built by tocfs" or "corpus image NAME". */
  label: string;
  /** The corpus image's name, for loadExpected; undefined for a built image. */
  corpusName?: string;
  /** False, or why suites on this image skip (no corpus). */
  skip: string | false;
  /** The oci: layout directory (a built image is made on first use). */
  dir(): Promise<string>;
  /** What to pass to resolve(): the corpus images are resolved for linux/amd64, a built one for this host. */
  resolveOptions: ResolveOptions;
  /** The same for the CLI: --platform linux/amd64 for a corpus image, nothing for a built one. */
  platformArgs: string[];
  /** How many layers the image has, when the suite may check it. */
  layerCount?: number;
  /** The manifest digest it should resolve to: from the build, or from the corpus's expected.json. */
  manifestDigest(): Promise<string>;
}

/** An image tocfs builds from `layers` in a temporary directory removed after the file's tests. */
export function builtTestImage(prefix: string, layers: FileSpec[][], format: ImageFormat = 'zstd:chunked'): TestImage {
  let made: Promise<BuiltImage> | undefined;
  let tmp: string | undefined;
  after(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });
  const build = (): Promise<BuiltImage> =>
    (made ??= (async () => {
      tmp = await mkdtemp(join(tmpdir(), `tocfs-${prefix}-img-`));
      return buildImage(join(tmp, 'img'), { format, layers });
    })());
  return {
    label: 'image built by tocfs',
    skip: false,
    resolveOptions: {},
    platformArgs: [],
    layerCount: layers.length,
    dir: async () => (await build()).dir,
    manifestDigest: async () => (await build()).manifestDigest,
  };
}

/** A corpus image (skipped when the corpus is absent). */
export function corpusTestImage(name: string): TestImage {
  return {
    label: `corpus image ${name}`,
    corpusName: name,
    skip: HAVE_CORPUS ? false : `no corpus at ${CORPUS_DIR}`,
    resolveOptions: { platform: { os: 'linux', architecture: 'amd64' } },
    platformArgs: ['--platform', 'linux/amd64'],
    dir: async () => join(CORPUS_DIR, name),
    manifestDigest: async () => loadExpected(name).images[0]!.manifest_digest,
  };
}

/** What a suite expects of one platform's image of a multi-platform image. */
export interface PlatformWant {
  manifestDigest: string;
  configDigest: string;
  /** Layer digests. */
  layers: string[];
}

/** The `arch` image of a multi-platform corpus image, from its expected.json. */
export function corpusPlatformWant(name: string, arch: string): PlatformWant {
  const want = loadExpected(name).images.find((i) => i.platform.architecture === arch)!;
  return { manifestDigest: want.manifest_digest, configDigest: want.config_digest, layers: want.layers };
}

/** The `arch` image of a multi-platform image tocfs built. */
export function builtPlatformWant(image: BuiltMultiArchImage, arch: string): PlatformWant {
  const want = image.images.find((i) => i.platform.architecture === arch)!;
  return { manifestDigest: want.manifestDigest, configDigest: want.configDigest, layers: want.layers.map((l) => l.digest) };
}
